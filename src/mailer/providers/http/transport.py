"""The one httpx boundary: the client (TLS, proxy, pool), and the one place where an httpx
exception becomes an error of ours.

Every request of an HTTP provider goes through :meth:`Transport.send`, and every foreign
exception it can raise is mapped by :func:`transport_error`, by one question: could the
request body have reached the API?

* Nothing left the process (connect error or timeout, waiting for a pooled connection, a
  proxy refusing): :class:`TransientError`, fail over, no duplicate is possible.
* The body may have left and no answer came back (read or write timeout, a dropped
  connection): :class:`DeliveryUncertain`. Failing over may deliver twice; the Mailer's
  ``on_uncertain`` decides, and idempotent adapters (Resend) are retried instead.

This is also the only module of the package that talks to the attempt layer (the commit
point, the deadline, the connection slots and their queueing): re-point it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from ... import _clock
from ..._attempt import Tries, current_attempt
from ..._errors import DeliveryError, DeliveryUncertain, TransientError
from ..._provider import deadline_remaining
from ..._redact import redact, register_secret
from .._slots import Slots
from .body import StreamedBody
from .responses import Answer

if TYPE_CHECKING:
    from .config import HTTPConfig
    from .provider import HTTPProvider

__all__ = ["HTTPRequest", "Transport", "transport_error"]

logger = logging.getLogger("mailer.providers.http")

_USER_AGENT = "mailer-failover (+https://pypi.org/project/mailer-failover/)"
#: httpcore's trace event for the start of a request body: our commit point
_BODY_STARTED = ".send_request_body.started"
#: the mark on a step of an HTTPS proxy's set-up (its CONNECT, the TLS handshake through
#: the tunnel): such a step never ends as ``_BODY_STARTED``, so it is never taken for ours
_PROXY_SETUP = "(proxy set-up)"


@dataclass(slots=True)
class HTTPRequest:
    """One API call, as an adapter describes it; the transport sends it.

    ``path`` is relative to the provider's base URL. ``files`` holds multipart parts as
    httpx takes them (``(field, (filename or None, content, content_type?))``). ``body``
    is a streamed body instead of ``json`` or ``files`` (raw MIME of a large message),
    and ``digest_header`` names a header to carry its SHA-256 (SigV4's
    ``x-amz-content-sha256``), computed before the request (one encoding pass).
    """

    method: str
    path: str
    json: Any = None
    files: list[tuple[str, tuple[Any, ...]]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: StreamedBody | None = None
    digest_header: str | None = None


def register_auth(auth: httpx.Auth | None) -> None:
    """A Basic ``Authorization`` header carries ``user:password`` base64-encoded: an API
    that echoes the header it was sent must not print it."""
    if isinstance(auth, httpx.BasicAuth):
        register_secret(auth._auth_header.split(" ", 1)[-1])


class Transport:
    """One provider's client, made on first use so building a Mailer costs no network
    I/O. What making it imports (httpcore, h11, and trio when installed: 150-300 ms) and
    its TLS context (the CA bundle read and parsed) are done here, when the provider is
    built, rather than inside the first send, where every task on the loop waited for
    them (issue 21, item 20). The context is shared by the clients of every loop."""

    def __init__(self, provider: HTTPProvider[Any]) -> None:
        import httpcore  # noqa: F401 - httpx imports it only when a client is made

        self._provider = provider
        self._context = self._ssl_context()
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: requests in flight, at most max_connections: waiting for one is queueing, not
        #: a hang (routing/slots.py). With the client, per loop; None off asyncio
        self._slots: Slots | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca_file = self._provider.config.ca_file
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        return context

    def client(self) -> httpx.AsyncClient:
        """The client of the running loop. A client's pooled connections belong to the
        loop that opened them; from a new loop (a test, a restarted SyncMailer) the old
        client is dropped rather than reused across loops."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._http is not None and not self._http.is_closed and self._loop is loop:
            return self._http
        config, provider = self._provider.config, self._provider
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=30.0,
        )
        self._http = httpx.AsyncClient(
            base_url=provider.base_url,
            limits=limits,
            verify=self._context,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            proxy=proxy.get_secret_value() if (proxy := config.proxy) else None,
        )
        self._loop = loop
        self._slots = (
            Slots(config.max_connections, f"connection to {provider.name!r}")
            if loop is not None
            else None
        )
        return self._http

    async def aclose(self) -> None:
        client, self._http = self._http, None
        if client is not None and not client.is_closed:
            # a client opened on a loop that is gone has nothing left to close
            with contextlib.suppress(RuntimeError):
                await client.aclose()

    async def send(
        self, request: HTTPRequest, *, commit: bool = True, tries: Tries | None = None
    ) -> Answer:
        """Send one request; its answer, or an error of ours (never an httpx one).

        With ``commit``, the attempt's commit point is awaited right before the request
        body is written (httpcore's ``send_request_body.started`` trace event): a failure
        before it left nothing at the API (TransientError, safe to abandon or fail over);
        from it on, only an answer is certain. At the commit point the pre-commit budget
        stops bounding the read: the send's own deadline does.

        ``tries``: this request is one of several tries that share the provider's
        ``timeout`` outside routing (an idempotent batch request and its re-send:
        batch.py); it starts its share once it holds a connection slot, and its timeouts
        end there too (never later than the attempt's).
        """
        body = request.body
        if body is not None and request.digest_header is not None:
            # one hashing pass over the encoded body, in slices, before a slot is held
            digest = await body.digest()
            request.headers = {**request.headers, request.digest_header: digest}
        client = self.client()
        slots = self._slots
        if slots is None:
            return await self._send(client, request, commit, tries)
        await slots.acquire()  # TransientError when nothing was freed for a whole budget
        try:
            return await self._send(client, request, commit, tries)
        finally:
            slots.release()

    async def _send(
        self, client: httpx.AsyncClient, request: HTTPRequest, commit: bool, tries: Tries | None
    ) -> Answer:
        """:meth:`send` holding a slot: its timeouts start now, after any queueing.

        A try whose timeout, cut short by the pre-commit budget, fired before any of the
        request body started only because this process's event loop was held up (the
        budget's end has moved on since: :meth:`~mailer._attempt.AttemptContext.extend`)
        is made again from the start, in the time left: nothing of the request reached the
        API, and it is not the provider's failure. Each new try needs new lag, so a hung
        API is still left at the budget (or the send's deadline, which counts wall time).
        """
        provider = self._provider
        deadline = None if tries is None else tries.start(_clock.now())
        headers = {**request.headers, **provider.auth_headers()}
        body = request.body
        if body is not None:  # streamed: its length known, never chunked
            headers.update(body.headers())
        auth = provider.auth()
        # a path is relative to the base URL, unless the API has a second host (Mailtrap)
        url = request.path if "://" in request.path else provider.base_url + request.path
        where = f"{request.method} {url}"
        # httpcore reports each step through the trace extension; the stubbed transports
        # of tests report none, and then the exception's type is all we know
        steps: list[str] = []
        tunnel = False  # in an HTTPS proxy's set-up: the steps are not our request's

        async def trace(event: str, info: dict[str, Any]) -> None:
            nonlocal tunnel
            # httpcore hands our trace to the proxy's CONNECT request too (and to the TLS
            # handshake through the tunnel): that body is not ours, and the commit point
            # fired there made every later failure uncertain (a proxy that never answers
            # the CONNECT) and hid a starved loop's timeouts from the lag rule. A step
            # carries its request from the start of its headers: ours is never a CONNECT.
            step_request = info.get("request")
            if step_request is not None:
                tunnel = step_request.method == b"CONNECT"
            if tunnel:
                steps.append(f"{event} {_PROXY_SETUP}")
                return
            steps.append(event)
            if commit and event.endswith(_BODY_STARTED):
                await provider.commit_point()
                steps.append("committed")
                timeouts = info["request"].extensions.get("timeout")
                if isinstance(timeouts, dict):
                    left = _left(provider.config.timeout, deadline)
                    timeouts["read"] = timeouts["write"] = left

        while True:
            timeout, cut = _timeouts(provider.config, deadline)
            steps.clear()
            tunnel = False
            try:
                response = await client.request(
                    request.method,
                    request.path,
                    json=request.json,
                    files=request.files,
                    content=body,
                    headers=headers,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                    timeout=timeout,
                    extensions={"trace": trace},
                )
            except httpx.HTTPError as exc:
                if _loop_lagged(exc, steps, cut):
                    logger.debug(
                        "provider %r: %s: %s while the event loop was held up; trying again",
                        provider.name,
                        where,
                        type(exc).__name__,
                    )
                    continue
                sent = not steps or "committed" in steps
                raise transport_error(where, exc, sent=sent, provider=provider.name) from exc
            logger.debug("provider %r: %s -> %s", provider.name, where, response.status_code)
            return Answer.of(response)


@dataclass(frozen=True, slots=True)
class _Cut:
    """Which of a try's timeouts the attempt (its pre-commit budget) cut short."""

    connect: bool
    total: bool


def _timeouts(config: HTTPConfig, deadline: float | None) -> tuple[httpx.Timeout, _Cut]:
    """One try's httpx timeouts (the provider's, cut to the attempt's and ``deadline``),
    and which of them the attempt cut: only those may be waited out again
    (:func:`_loop_lagged`); a provider's own shorter timeout counts wall time."""
    attempt_left = current_attempt().timeout(None)  # None: the attempt sets no limit
    total = config.timeout if attempt_left is None else min(config.timeout, attempt_left)
    if deadline is not None:  # as _left, from the same reading of the attempt
        total = min(total, max(deadline - _clock.now(), 0.001))
    connect = min(total, config.connect_timeout)
    timeout = httpx.Timeout(total, connect=connect)
    if attempt_left is None:
        return timeout, _Cut(connect=False, total=False)
    return timeout, _Cut(
        connect=connect == attempt_left and attempt_left < config.connect_timeout,
        total=total == attempt_left and attempt_left < config.timeout,
    )


def _loop_lagged(exc: httpx.HTTPError, steps: list[str], cut: _Cut) -> bool:
    """Whether ``exc`` is a timeout that only this process's event loop's lag made, on a
    try that sent nothing: cut short by the attempt, before any of the request body
    started (httpcore's trace; without one nothing is known), and the attempt's budget
    has moved on by the lag since (:meth:`~mailer._attempt.AttemptContext.extend`).
    After the body started the API may have the request: the uncertain rules apply."""
    if not steps or any(step.endswith(_BODY_STARTED) for step in steps):
        return False
    if isinstance(exc, httpx.ConnectTimeout):
        lagged = cut.connect
    elif isinstance(exc, (httpx.WriteTimeout, httpx.ReadTimeout)):
        lagged = cut.total
    else:  # PoolTimeout (our own pool: the slots wait on) and every non-timeout
        return False
    return lagged and current_attempt().extend()


def _left(timeout: float, deadline: float | None) -> float:
    """``timeout`` cut to the attempt's deadline and to ``deadline`` (never below a
    millisecond, as :meth:`~mailer._attempt.AttemptContext.timeout`)."""
    left = deadline_remaining(timeout)
    assert left is not None
    if deadline is None:
        return left
    return min(left, max(deadline - _clock.now(), 0.001))


def transport_error(
    where: str, exc: httpx.HTTPError, *, sent: bool, provider: str
) -> DeliveryError:
    """The one mapping from an httpx exception to the error tree.

    ``sent``: the body may have left (or we cannot tell). Before that, nothing reached
    the API and any failure is a TransientError.
    """
    text = redact(f"{type(exc).__name__}: {str(exc) or 'no detail'}")
    timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.PoolTimeout)
    # these do not heal in seconds: a same-provider retry only spends the deadline
    slow_to_heal = isinstance(exc, httpx.TimeoutException) or _caused_by(
        exc, (ssl.SSLError, ssl.CertificateError, socket.gaierror)
    )
    # waiting for our own pool says nothing about the provider's health
    no_verdict = isinstance(exc, httpx.PoolTimeout)
    if (
        isinstance(
            exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
        )
        or not sent
    ):
        # nothing reached the API: the next provider cannot cause a duplicate; a hang
        # before the commit point is a slow call (the breaker opens at once), as for SMTP
        return TransientError(
            f"{where}: {text} (nothing was sent)",
            provider=provider,
            retry_here=not slow_to_heal,
            timed_out=timed_out,
            no_verdict=no_verdict,
        )
    # a missing answer after the commit point is DeliveryUncertain, judged on its own
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        # read/write timeout, reset or dropped reply: the API may have the message
        text = f"{text} after the request was sent; the message may have been accepted"
    # A timeout after the body is a slow call too (timed_out): the breaker opens on the
    # first one, so the sends after it go to the next provider at once instead of each
    # waiting the whole timeout (issue 21, item 19)
    return DeliveryUncertain(
        f"{where}: {text}",
        provider=provider,
        retry_here=not slow_to_heal,
        no_verdict=no_verdict,
        timed_out=timed_out,
    )


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or an exception it was raised from is one of ``kinds``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
