"""XOAUTH2 access tokens: fetched, cached, refreshed once for every pooled connection.

When a token expires (or the server refuses it), every connection of a busy pool finds
out at about the same moment. A naive client then asks the token endpoint once per
connection, and identity providers rate-limit exactly that. Here one lock serialises
refreshes, and a caller that was refused token T refreshes only if T is still current:
whoever comes second finds a fresh token already waiting (single flight, no stampede).

Tokens are SecretStr from end to end. Errors name the endpoint and its OAuth error code
(``invalid_grant``...), never a token or secret.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ..._attempt import current_attempt
from ..._errors import AuthError, DeliveryError, TransientError
from ..._redact import redact, redact_url, register_config, register_secret
from .config import OAuth2Options

if TYPE_CHECKING:
    import httpx

__all__ = ["TokenSource"]


class TokenSource:
    """The current access token for one provider, shared by all its connections."""

    def __init__(
        self,
        options: OAuth2Options,
        *,
        client: Callable[[], Awaitable[httpx.AsyncClient]] | None = None,
    ) -> None:
        self._options = options
        register_config(options)
        self._token: SecretStr | None = options.access_token
        # expires_at is wall-clock (epoch) time; we keep monotonic time
        self._expires_at: float | None = (
            time.monotonic() + (options.expires_at - time.time())
            if options.expires_at is not None and options.access_token is not None
            else None
        )
        self._lock = asyncio.Lock()
        self._client_factory = client
        #: how many times a new token was obtained (for metrics and tests)
        self.refreshes = 0
        #: when the last refresh failed, and how (shared with the connections queued on it)
        self._failure: tuple[float, DeliveryError] | None = None

    @property
    def can_refresh(self) -> bool:
        return self._options.endpoint is not None or self._options.callback is not None

    def _fresh(self, token: SecretStr | None) -> bool:
        if token is None:
            return False
        if self._expires_at is None:
            return True
        return time.monotonic() < self._expires_at - self._options.refresh_margin

    async def get(self) -> SecretStr:
        """A token to use now, refreshed first when it is missing or about to expire."""
        token = self._token
        if self._fresh(token):
            assert token is not None
            return token
        if not self.can_refresh:
            if token is not None:
                return token  # static token: the server will tell us if it expired
            raise AuthError("no OAuth2 access token is configured")
        return await self._refresh(stale=token)

    async def refresh(self, stale: SecretStr) -> SecretStr:
        """A token other than ``stale``, which the server refused."""
        if not self.can_refresh:
            raise AuthError(
                "the server refused the OAuth2 access token and no refresh is configured "
                "(set oauth2.token_url or preset with client_id, client_secret, "
                "refresh_token, or oauth2.callback)"
            )
        return await self._refresh(stale=stale)

    async def _refresh(self, stale: SecretStr | None) -> SecretStr:
        asked = time.monotonic()
        wait = current_attempt().timeout(None)
        try:
            await asyncio.wait_for(self._lock.acquire(), wait)
        except TimeoutError:
            raise TransientError(
                "the send deadline passed while waiting for another connection's OAuth2 "
                "token refresh (nothing was sent)"
            ) from None
        try:
            current = self._token
            if current is not None and current is not stale and self._fresh(current):
                return current  # another connection refreshed while we waited
            failed = self._failure
            if failed is not None and failed[0] >= asked:
                # The refresh we queued behind has just failed: share its verdict rather
                # than ask a failing endpoint again, once per waiting connection.
                error = failed[1]
                raise type(error)(str(error.args[0]), code=error.code, response=error.response)
            try:
                token, expires_in = await self._obtain()
            except DeliveryError as exc:
                self._failure = (time.monotonic(), exc)
                raise
            self._failure = None
            register_secret(token)  # redacted wherever a server or a trace echoes it
            self._token = token
            self._expires_at = time.monotonic() + expires_in if expires_in else None
            self.refreshes += 1
            return token
        finally:
            self._lock.release()

    async def _obtain(self) -> tuple[SecretStr, float | None]:
        callback = self._options.callback
        if callback is not None:
            try:
                result = await callback()
            except Exception as exc:
                raise AuthError(f"the OAuth2 token callback failed: {type(exc).__name__}") from exc
            token, expires_in = result if isinstance(result, tuple) else (result, None)
            if not isinstance(token, str) or not token:
                raise AuthError("the OAuth2 token callback returned no token")
            return SecretStr(token), expires_in
        return await self._grant()

    async def _grant(self) -> tuple[SecretStr, float | None]:
        opts = self._options
        url = opts.endpoint
        assert url is not None and opts.refresh_token is not None
        assert opts.client_secret is not None and opts.client_id is not None
        form = {
            "grant_type": "refresh_token",
            "refresh_token": opts.refresh_token.get_secret_value(),
            "client_id": opts.client_id,
            "client_secret": opts.client_secret.get_secret_value(),
        }
        if opts.effective_scope:
            form["scope"] = opts.effective_scope
        where = redact_url(url)
        import httpx  # loaded when the provider is built (SMTPProvider): free by now

        try:
            if self._client_factory is not None:
                client = await self._client_factory()
                reply = await client.post(url, data=form, timeout=opts.token_timeout)
            else:
                async with httpx.AsyncClient(timeout=opts.token_timeout) as client:
                    reply = await client.post(url, data=form)
        except httpx.TimeoutException:
            raise TransientError(
                f"OAuth2 token endpoint {where} did not answer within "
                f"{opts.token_timeout:g}s (oauth2.token_timeout)"
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(
                f"OAuth2 token endpoint {where} unreachable: {type(exc).__name__}"
            ) from None
        body = _json(reply)
        if reply.status_code >= 500:
            raise TransientError(
                f"OAuth2 token endpoint {where} failed with HTTP {reply.status_code}",
                code=reply.status_code,
                response=self._scrub(str(body.get("error", "")) or None),
            )
        if reply.status_code >= 400 or "access_token" not in body:
            error = self._scrub(str(body.get("error") or f"HTTP {reply.status_code}"))
            description = self._scrub(str(body.get("error_description") or ""))[:200]
            detail = f"{error}: {description}" if description else error
            raise AuthError(
                f"OAuth2 token endpoint {where} refused the refresh: {detail}",
                code=reply.status_code,
                response=error,
            )
        token = body["access_token"]
        if not isinstance(token, str) or not token:
            raise AuthError(f"OAuth2 token endpoint {where} returned an empty access_token")
        expires_in = body.get("expires_in")
        try:
            lifetime = float(expires_in) if expires_in is not None else None
        except (TypeError, ValueError):
            lifetime = None
        return SecretStr(token), lifetime

    def _scrub(self, text: str | None) -> str:
        """Endpoint text with any of our secrets blanked, in case a server echoes them."""
        return redact(text) if text else ""

    def __repr__(self) -> str:
        endpoint = self._options.endpoint
        shown = redact_url(endpoint) if endpoint is not None else None
        return f"<TokenSource endpoint={shown!r} refreshes={self.refreshes}>"


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
