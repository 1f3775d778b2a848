"""AUTH: PLAIN, LOGIN and XOAUTH2, with one token refresh when the server refuses one.

Mechanisms are chosen by us, not by aiosmtplib's ``login()``, which tries every method
the server lists in turn: after a refusal that is one more failed login per mechanism,
which is how accounts get locked. We try one mechanism (PLAIN, else LOGIN, or the one
configured) once, and XOAUTH2 at most twice: with the cached token, then, if the server
refused it (535, or the 334 error challenge aiosmtplib answers for us), with a fresh
one from the shared :class:`.oauth.TokenSource`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._errors import AuthError
from .classify import Phase
from .config import AuthOptions
from .oauth import TokenSource

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["authenticate", "choose_mechanism"]

_PREFERENCE = ("PLAIN", "LOGIN")


def choose_mechanism(auth: AuthOptions, offered: list[str]) -> str:
    """The one mechanism to use, given what the server lists after EHLO."""
    available = {m.upper() for m in offered}
    shown = " ".join(sorted(available)) or "none"
    if auth.oauth2 is not None:
        wanted = "XOAUTH2"
    elif auth.method is not None:
        wanted = auth.method
    else:
        for mechanism in _PREFERENCE:
            if mechanism in available:
                return mechanism
        raise AuthError(
            f"the server offers no AUTH mechanism we can use with a password "
            f"(offered: {shown}; supported: PLAIN, LOGIN)"
        )
    if wanted not in available:
        raise AuthError(f"the server does not offer AUTH {wanted} (offered: {shown})")
    return wanted


async def authenticate(conn: Session, auth: AuthOptions, tokens: TokenSource | None) -> None:
    smtp = conn.smtp
    if not smtp.supports_extension("auth"):
        raise AuthError("auth is configured but the server does not offer AUTH on this connection")
    mechanism = choose_mechanism(auth, smtp.server_auth_methods)
    user = auth.user
    if mechanism == "XOAUTH2":
        if tokens is None:  # pragma: no cover - the provider builds one with oauth2
            raise AuthError("XOAUTH2 needs oauth2 settings")
        token = await tokens.get()
        try:
            await conn.command(
                Phase.AUTH, lambda t: smtp.auth_xoauth2(user, token.get_secret_value(), timeout=t)
            )
        except AuthError as exc:
            if not conn.usable:
                raise
            if not tokens.can_refresh:
                raise AuthError(
                    f"{exc.args[0]}; the access token was refused and no refresh is configured "
                    "(set oauth2.token_url or preset with client_id, client_secret, "
                    "refresh_token, or oauth2.callback)",
                    code=exc.code,
                    response=exc.response,
                ) from exc
            fresh = await tokens.refresh(stale=token)
            await conn.command(
                Phase.AUTH, lambda t: smtp.auth_xoauth2(user, fresh.get_secret_value(), timeout=t)
            )
        return
    assert auth.password is not None
    password = auth.password
    if mechanism == "PLAIN":
        await conn.command(
            Phase.AUTH, lambda t: smtp.auth_plain(user, password.get_secret_value(), timeout=t)
        )
    else:
        await conn.command(
            Phase.AUTH, lambda t: smtp.auth_login(user, password.get_secret_value(), timeout=t)
        )
