"""Installing npm packages on first use, for the benchmarks (Nodemailer) and the peer tests
(Nodemailer's smtp-server): one rule in one place.

Packages go into a folder under ``.bench/`` (git-ignored), one folder per purpose, with
its own ``package.json``. Nothing here has side effects at import (the peer tests import
it from pytest), and a failure is a reason in words, never an exception: the callers
skip (tests) or leave a case out (benchmarks) and say why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"


@contextlib.contextmanager
def _locked(where: Path) -> Iterator[None]:
    """Two processes installing into one folder (a benchmark and a test run) take turns."""
    with open(where / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def installed_version(where: Path, package: str) -> str | None:
    """The version of ``package`` installed in ``where``, or None."""
    try:
        data = json.loads((where / "node_modules" / package / "package.json").read_text())
        return str(data["version"])
    except (OSError, ValueError, KeyError):
        return None


def npm_install(where: Path, package: str, spec: str | None = None, timeout: float = 300) -> str:
    """Make sure ``package`` (npm ``spec``, e.g. ``smtp-server@3.21``) is installed in
    ``where``; install it on first use. Returns its version; raises RuntimeError with the
    reason when node or npm is missing or the install fails."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    where.mkdir(parents=True, exist_ok=True)
    with _locked(where):
        version = installed_version(where, package)
        if version is not None:
            return version
        if not (where / "package.json").exists():
            (where / "package.json").write_text('{"private": true}\n')
        try:
            proc = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent", spec or package],
                cwd=where,
                capture_output=True,
                timeout=timeout,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"npm install {spec or package} failed: {exc}") from None
        version = installed_version(where, package)
        if proc.returncode != 0 or version is None:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-2:]
            raise RuntimeError(
                f"npm install {spec or package} failed (exit {proc.returncode}): "
                + " | ".join(tail)
            )
        return version
