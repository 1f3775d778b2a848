"""The kit's optional dependencies, imported when a server that needs them is built.

aiosmtpd and trustme are not dependencies of the library (sending mail never needs them),
so ``import mailer.testing`` must work without them: the servers that do need them import
them here, and a missing one fails with the extra to install rather than a bare
ModuleNotFoundError deep inside a fixture.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "mailer-failover[testing]"


def require(module: str) -> ModuleType:
    """``module``, or ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".", 1)[0]
        raise ImportError(
            f"mailer.testing needs {top} for this server: pip install '{EXTRA}'"
        ) from exc
