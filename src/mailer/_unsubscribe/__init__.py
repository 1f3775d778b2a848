"""One-click unsubscribe (RFC 8058): the signed token, the headers, and the endpoint.

``token`` signs and reads the token a ``List-Unsubscribe`` URL carries; ``headers`` makes
the two headers from the Mailer's ``unsubscribe`` config. The endpoint that answers
``POST /u/{token}`` is the web app's (see docs/deliverability.md).
"""

from .headers import unsubscribe_headers
from .token import Claim, InvalidToken, UnsubscribeConfig, make_token, read_token

__all__ = [
    "Claim",
    "InvalidToken",
    "UnsubscribeConfig",
    "make_token",
    "read_token",
    "unsubscribe_headers",
]
