"""The SMTP provider against Nodemailer's smtp-server (3.21), a server nobody here wrote.

Every case asserts on the server's ledger (what smtp-server itself saw and answered: see
smtp_server.js), not on what our library reports. Our side runs with its DEFAULT timeouts
(PeerServer.config sets none). Four server processes serve the whole module:

* ``plain``: no STARTTLS, PIPELINING, SMTPUTF8, SIZE 8 MiB, 452 after 3 recipients per
  transaction, 550 for ``reject*@``, drops the connection after the data for ``drop*@``.
* ``strict``: the same without PIPELINING and SMTPUTF8, SIZE 100,000 octets, and AUTH
  offered in plaintext (which the client must not use).
* ``tls``: STARTTLS (trustme certificate), AUTH PLAIN, LOGIN and XOAUTH2 (a refused
  token gets the 334 error challenge, as Gmail does).
* ``implicit``: implicit TLS (the port-465 kind), the same AUTH, but a refused token
  gets a plain 535.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from tests.smtp.kit import Keys

from mailer import (
    AuthError,
    DeliveryUncertain,
    Mailer,
    Message,
    PermanentError,
    TransientError,
    UnsupportedFeature,
)
from mailer.providers._memory import MemoryProvider
from mailer.providers._smtp import SMTPProvider
from mailer.testing import TokenEndpoint

from .kit import TLS_NAME, PeerServer, header, raw

pytestmark = pytest.mark.anyio

USERS = {"alice": "s3cret-pass"}
GOOD_TOKEN = "ya29.good-token"
AUTH = ["PLAIN", "LOGIN", "XOAUTH2"]
PLAIN = {"starttls": False, "size": 8 * 1024 * 1024, "max_rcpt": 3, "reject": "reject",
         "drop": "drop", "chunks": True}  # fmt: skip
STRICT = {"starttls": False, "size": 100_000, "max_rcpt": 3, "reject": "reject",
          "hide": ["PIPELINING", "SMTPUTF8"], "chunks": True, "auth": ["PLAIN", "LOGIN"],
          "users": {"alice": "s3cret-pass"}}  # fmt: skip
TLS = {"auth": AUTH, "users": USERS, "tokens": [GOOD_TOKEN]}


@pytest.fixture
def plain(peer: Callable[..., PeerServer]) -> PeerServer:
    return peer(**PLAIN)


@pytest.fixture
def strict(peer: Callable[..., PeerServer]) -> PeerServer:
    return peer(**STRICT)


@pytest.fixture
def tls(peer: Callable[..., PeerServer]) -> PeerServer:
    return peer(**TLS)


@pytest.fixture
def implicit(peer: Callable[..., PeerServer]) -> PeerServer:
    return peer(secure=True, oauth_535=True, **TLS)


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS_NAME resolves to 127.0.0.1, so a config can name the server as a client
    would (SNI and the certificate check use the host) and the non-loopback defaults
    apply (require_tls)."""
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == TLS_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def message(to: list[str] | None = None, **kw: Any) -> Message:
    fields: dict[str, Any] = {"sender": "app@example.com", "to": to or ["u@example.org"],
                              "subject": "peer", "text": "hello from the peer tests\n"}  # fmt: skip
    fields.update(kw)
    return Message(**fields)


async def send(server: PeerServer, msg: Message, **config: Any) -> Any:
    async with SMTPProvider.from_config("peer", server.config(**config)) as provider:
        return await provider.send(msg)


def stale_token(endpoint: TokenEndpoint) -> dict[str, Any]:
    """XOAUTH2 options: a token the server refuses, and how to get a fresh one."""
    return {"access_token": "ya29.stale-token", "token_url": endpoint.url,
            "client_id": "cid", "client_secret": "cs-SECRET",
            "refresh_token": "rt-SECRET"}  # fmt: skip


def by_message_id(events: list[dict[str, Any]]) -> Counter[str | None]:
    return Counter(header(raw(e), "Message-ID") for e in events)


def cids(events: list[dict[str, Any]]) -> set[str]:
    return {e["cid"] for e in events}


# ------------------------------------------------------------------------------- plain


async def test_plain_send_arrives_byte_for_byte(plain: PeerServer) -> None:
    mark = plain.ledger.mark()
    msg = message(cc=["c@example.org"], html="<p>hi</p>")
    result = await send(plain, msg)
    [got] = plain.ledger.messages(mark)
    assert raw(got) == msg.as_bytes()
    assert got["from"] == "app@example.com"
    assert got["to"] == ["u@example.org", "c@example.org"]
    assert (got["secure"], got["user"]) == (False, None)
    assert result.accepted == ["u@example.org", "c@example.org"]
    assert result.response == f"Message queued as {got['cid']}.1"


async def test_dot_stuffing_round_trips_exactly(plain: PeerServer) -> None:
    text = ".\n..x\n.leading dot\nmiddle\n.\n...\n. \nlast line .\n."
    msg = message(text=text, html="<p>\n.\n..</p>")
    mark = plain.ledger.mark()
    await send(plain, msg)
    [got] = plain.ledger.messages(mark)
    assert raw(got) == msg.as_bytes()
    assert b"\r\n.\r\n..x\r\n" in raw(got)  # the lines themselves, not encoded away


async def test_large_attachment_by_path_is_streamed_and_arrives_byte_for_byte(
    plain: PeerServer, tmp_path: Path
) -> None:
    path = tmp_path / "report.bin"
    path.write_bytes(os.urandom(5 * 1024 * 1024))
    msg = message(attachments=[{"path": path}])
    mark = plain.ledger.mark()
    await send(plain, msg)
    [got] = plain.ledger.messages(mark)
    expected = msg.as_bytes()
    assert got["size"] == len(expected) > 5 * 1024 * 1024
    assert raw(got) == expected
    # SIZE= announced the exact size, computed without reading the file
    [mail] = plain.ledger.events(mark, "mail")
    assert int(mail["args"]["SIZE"]) == len(expected)


@pytest.mark.parametrize("name", ["plain", "strict"], ids=["pipelining", "no-pipelining"])
async def test_pipelining_on_and_off(name: str, request: pytest.FixtureRequest) -> None:
    """With PIPELINING, MAIL, the RCPTs and DATA reach the server in one read; without
    it, every command arrives alone (each after the reply to the one before)."""
    server: PeerServer = request.getfixturevalue(name)
    to = ["p1@example.org", "p2@example.org", "p3@example.org"]
    mark = server.ledger.mark()
    result = await send(server, message(to))
    assert result.accepted == to
    [got] = server.ledger.messages(mark)
    assert got["to"] == to
    heads = [e["head"] for e in server.ledger.events(mark, "chunk")]
    grouped = [h for h in heads if "MAIL FROM" in h and "RCPT TO" in h]
    if name == "plain":
        assert "PIPELINING" in "".join(server.ledger.await_reply(mark, "PIPELINING"))
        assert any(h.count("RCPT TO") == 3 and "DATA\r\n" in h for h in grouped), heads
    else:
        assert "PIPELINING" not in "".join(server.ledger.replies(mark))
        assert grouped == []
        assert all(h.count("\r\n") == 1 for h in heads), heads
    assert server.ledger.commands(mark)[-6:-1] == [
        "MAIL FROM:<app@example.com>" + (" SIZE=" + str(got["size"])),
        *[f"RCPT TO:<{r}>" for r in to],
        "DATA",
    ]


async def test_rejected_recipient_is_reported_and_the_rest_delivered(plain: PeerServer) -> None:
    to = ["a@example.org", "reject-me@example.org", "b@example.org"]
    mark = plain.ledger.mark()
    result = await send(plain, message(to))
    [got] = plain.ledger.messages(mark)
    assert got["to"] == ["a@example.org", "b@example.org"]
    assert [(e["to"], e["code"]) for e in plain.ledger.events(mark, "rcpt")] == [
        ("a@example.org", 250), ("reject-me@example.org", 550), ("b@example.org", 250),
    ]  # fmt: skip
    assert result.accepted == ["a@example.org", "b@example.org"]
    assert list(result.rejected) == ["reject-me@example.org"]
    assert result.rejected["reject-me@example.org"].startswith("550")


@pytest.mark.parametrize("name", ["plain", "strict"], ids=["pipelining", "no-pipelining"])
async def test_452_too_many_recipients_sends_the_rest_in_more_transactions(
    name: str, request: pytest.FixtureRequest
) -> None:
    server: PeerServer = request.getfixturevalue(name)
    to = [f"r{i}@example.org" for i in range(8)]
    mark = server.ledger.mark()
    msg = message(to[:1], bcc=to[1:])
    result = await send(server, msg)
    got = server.ledger.messages(mark)
    assert [e["to"] for e in got] == [to[0:3], to[3:6], to[6:8]]
    assert len(cids(got)) == 1  # new transactions on the same connection
    assert [e["transaction"] for e in got] == [1, 2, 3]
    assert all(raw(e) == msg.as_bytes() for e in got)
    assert 452 in [e["code"] for e in server.ledger.events(mark, "rcpt")]
    assert result.accepted == to and result.rejected == {}


@pytest.mark.parametrize("name", ["plain", "strict"], ids=["pipelining", "no-pipelining"])
async def test_over_size_message_is_refused_before_data(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: PeerServer = request.getfixturevalue(name)
    limit = int(server.options["size"])
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(limit)  # base64 makes it a third bigger than the limit
    mark = server.ledger.mark()
    with pytest.raises(PermanentError) as info:
        await send(server, message(attachments=[{"path": path}]))
    assert info.value.code == 552
    assert "exceeds fixed maximum message size" in str(info.value)
    replies = server.ledger.await_reply(mark, "552")
    assert any(r.startswith("552") for r in replies), replies
    assert not any(r.startswith("354") for r in replies)  # the server never took data
    assert server.ledger.messages(mark) == []


@pytest.mark.parametrize("name", ["plain", "strict"], ids=["pipelining", "no-pipelining"])
async def test_message_of_exactly_the_size_limit_is_accepted(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIZE= is the message's size as RFC 1870 defines it (no terminating ".", no dots
    added by dot-stuffing): smtp-server refuses ``SIZE > limit`` exactly, so a message
    of the limit, with dot-stuffed lines, must be taken. Before the peer tests found it,
    our SIZE= counted the wire bytes, and this message was refused with 552."""
    server: PeerServer = request.getfixturevalue(name)
    limit = int(server.options["size"])
    lines = ["." * 70, "..x"] * 10
    if limit > 1_000_000:  # the bulk as an attachment by path (streamed), the rest text
        path = tmp_path / "fill.bin"
        path.write_bytes(os.urandom((limit - 60_000) * 57 // 78))  # base64: 57 -> 78
        fields: dict[str, Any] = {"attachments": [{"path": path}]}
    else:
        fields = {}
    missing = limit - len(message(text="\n".join(lines), **fields).as_bytes())
    lines += ["y" * 70] * (missing // 72 - 1)
    for _ in range(10):  # then line by line until the message is the limit exactly
        msg = message(text="\n".join(lines), **fields)
        missing = limit - len(msg.as_bytes())
        if missing == 0:
            break
        assert missing > 0
        lines.append("y" * min(70, max(1, missing - 2)))
    assert len(msg.as_bytes()) == limit
    mark = server.ledger.mark()
    await send(server, msg)
    [got] = server.ledger.messages(mark)
    assert got["size"] == limit and raw(got) == msg.as_bytes()
    [mail] = server.ledger.events(mark, "mail")
    assert mail["args"]["SIZE"] == str(limit)


async def test_pool_sends_200_messages_over_few_connections_each_once(
    plain: PeerServer,
) -> None:
    msgs = [message([f"pool{i}@example.org"], subject=f"pool {i}") for i in range(200)]
    mark = plain.ledger.mark()
    async with SMTPProvider.from_config(
        "peer", plain.config(pool=True, max_connections=4)
    ) as provider:
        results = await asyncio.wait_for(asyncio.gather(*(provider.send(m) for m in msgs)), 60)
    got = plain.ledger.messages(mark)
    sent_ids = [m.message_id for m in msgs]
    assert sorted(by_message_id(got).elements()) == sorted(sent_ids)  # each exactly once
    assert [r.message_id for r in results] == sent_ids
    assert len(cids(got)) <= 4
    assert len(plain.ledger.events(mark, "connect")) <= 4


async def test_connection_dropped_after_data_is_uncertain_never_resent(
    plain: PeerServer,
) -> None:
    """smtp-server takes the whole message, then the socket goes away before any reply:
    DeliveryUncertain, and the Mailer sends it nowhere else (not to the backup, not to
    the same server again)."""
    backup = MemoryProvider("backup")
    mailer = Mailer(
        [SMTPProvider.from_config("peer", plain.config()), backup],
        retry={"attempts": 3, "backoff": 0},
    )
    msg = message(["drop-me@example.org"])
    mark = plain.ledger.mark()
    started = time.monotonic()
    async with mailer:
        with pytest.raises(DeliveryUncertain) as info:
            await mailer.send(msg)
    assert time.monotonic() - started < 10  # an EOF, not a timeout
    assert info.value.provider == "peer"
    await asyncio.sleep(0.3)  # anything re-sent would have arrived by now
    got = plain.ledger.messages(mark)
    assert by_message_id(got) == Counter({msg.message_id: 1})
    assert got[0]["dropped"] is True
    assert backup.messages == []
    assert plain.ledger.commands(mark).count("DATA") == 1


# --------------------------------------------------------------------------- SMTPUTF8


async def test_smtputf8_address_is_delivered_when_offered(plain: PeerServer) -> None:
    msg = message(["josé@example.org"], cc=["用户@example.org"])
    mark = plain.ledger.mark()
    result = await send(plain, msg)
    [got] = plain.ledger.messages(mark)
    assert got["utf8"] is True
    assert got["to"] == ["josé@example.org", "用户@example.org"]
    assert raw(got) == msg.as_bytes()
    assert header(raw(got), "To") == "josé@example.org"  # raw UTF-8, RFC 6532
    assert any(c.endswith(" SMTPUTF8") for c in plain.ledger.commands(mark) if "MAIL" in c)
    assert result.accepted == ["josé@example.org", "用户@example.org"]


async def test_smtputf8_address_is_refused_when_the_server_hides_it(strict: PeerServer) -> None:
    mark = strict.ledger.mark()
    with pytest.raises(UnsupportedFeature) as info:
        await send(strict, message(["josé@example.org"]))
    assert "SMTPUTF8" in str(info.value)
    assert "nothing was sent" in str(info.value)
    assert "SMTPUTF8" not in "".join(strict.ledger.replies(mark))
    assert not any(c.startswith("MAIL") for c in strict.ledger.commands(mark))


# ------------------------------------------------------------------------------- DKIM


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.mark.parametrize("algorithm", ["rsa", "ed"])
async def test_dkim_signature_verifies_on_what_the_server_received(
    plain: PeerServer, keys: Keys, algorithm: str
) -> None:
    options = keys.rsa() if algorithm == "rsa" else keys.ed()
    msg = message(dkim=options, text="signed\r\n.\r\n..x\n", html="<p>signed</p>")
    mark = plain.ledger.mark()
    await send(plain, msg)
    [got] = plain.ledger.messages(mark)
    tags = keys.verify(raw(got))
    assert tags[b"d"] == b"example.com"
    assert tags[b"s"] == (b"rsa" if algorithm == "rsa" else b"ed")
    tampered = raw(got).replace(b"signed", b"SIGNED", 1)
    assert not dkim.verify(tampered, dnsfunc=keys.dns)


# -------------------------------------------------------------------------------- TLS


async def test_starttls_sends_the_host_name_as_sni(tls: PeerServer, resolve: None) -> None:
    """Named as a client would name it: STARTTLS is required by default (not loopback),
    the certificate is checked against the name, and the name is the SNI."""
    assert tls.certs is not None
    config = tls.config(host=TLS_NAME, tls={"ca_file": str(tls.certs.ca_file)})
    mark = tls.ledger.mark()
    await send(tls, message(), **config)
    [got] = tls.ledger.messages(mark)
    assert (got["secure"], got["servername"]) == (True, TLS_NAME)
    [secure] = tls.ledger.events(mark, "secure")
    assert secure["servername"] == TLS_NAME
    commands = tls.ledger.commands(mark)
    assert commands.index("STARTTLS") < next(
        i for i, c in enumerate(commands) if c.startswith("MAIL")
    )


async def test_implicit_tls(implicit: PeerServer) -> None:
    mark = implicit.ledger.mark()
    auth = {"user": "alice", "password": USERS["alice"]}
    await send(implicit, message(), auth=auth)
    [got] = implicit.ledger.messages(mark)
    assert (got["secure"], got["servername"], got["user"]) == (True, TLS_NAME, "alice")
    assert "STARTTLS" not in implicit.ledger.commands(mark)


async def test_require_tls_refused_when_the_server_has_no_starttls(plain: PeerServer) -> None:
    mark = plain.ledger.mark()
    with pytest.raises(TransientError) as info:
        await send(plain, message(), require_tls=True)
    assert "require_tls" in str(info.value)
    assert not any(c.startswith(("MAIL", "AUTH")) for c in plain.ledger.commands(mark))
    assert plain.ledger.messages(mark) == []


async def test_require_tls_is_the_default_for_a_named_host(
    plain: PeerServer, resolve: None
) -> None:
    mark = plain.ledger.mark()
    with pytest.raises(TransientError) as info:
        await send(plain, message(), host=TLS_NAME)
    assert "require_tls" in str(info.value)
    assert plain.ledger.events(mark, "connect")  # it did reach the server...
    assert not any(c.startswith("MAIL") for c in plain.ledger.commands(mark))  # ...no mail


# ------------------------------------------------------------------------------- AUTH


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_password_auth_accepted(tls: PeerServer, method: str) -> None:
    mark = tls.ledger.mark()
    await send(tls, message(), auth={"user": "alice", "password": USERS["alice"],
                                     "method": method})  # fmt: skip
    [auth] = tls.ledger.events(mark, "auth")
    assert (auth["method"], auth["user"], auth["ok"]) == (method, "alice", True)
    [got] = tls.ledger.messages(mark)
    assert got["user"] == "alice" and got["secure"] is True


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_password_auth_refused_is_an_auth_error(tls: PeerServer, method: str) -> None:
    mark = tls.ledger.mark()
    with pytest.raises(AuthError) as info:
        await send(tls, message(), auth={"user": "alice", "password": "wrong-SECRET",
                                         "method": method})  # fmt: skip
    assert info.value.code == 535
    assert "SECRET" not in str(info.value)
    [auth] = tls.ledger.events(mark, "auth")  # one try, not one per mechanism
    assert (auth["method"], auth["ok"]) == (method, False)
    assert not any(c.startswith("MAIL") for c in tls.ledger.commands(mark))


async def test_xoauth2_token_accepted(tls: PeerServer) -> None:
    mark = tls.ledger.mark()
    await send(tls, message(), auth={"user": "alice", "oauth2": {"access_token": GOOD_TOKEN}})
    [auth] = tls.ledger.events(mark, "auth")
    assert (auth["method"], auth["user"], auth["token"], auth["ok"]) == (
        "XOAUTH2", "alice", GOOD_TOKEN, True,
    )  # fmt: skip
    assert tls.ledger.messages(mark)[0]["user"] == "alice"


@pytest.mark.parametrize("name", ["tls", "implicit"], ids=["334-challenge", "plain-535"])
async def test_xoauth2_refused_token_is_refreshed_then_accepted(
    name: str, request: pytest.FixtureRequest, token_endpoint: TokenEndpoint
) -> None:
    """The stale token is refused the way Gmail does (``tls``: a 334 error challenge,
    answered, then 535) or at once with 535 (``implicit``); then one refresh at the
    token endpoint and the fresh token is taken."""
    server: PeerServer = request.getfixturevalue(name)
    token_endpoint.tokens = [GOOD_TOKEN]
    mark = server.ledger.mark()
    await send(server, message(), auth={"user": "alice", "oauth2": stale_token(token_endpoint)})
    attempts = [(a["method"], a["token"], a["ok"]) for a in server.ledger.events(mark, "auth")]
    assert attempts == [("XOAUTH2", "ya29.stale-token", False), ("XOAUTH2", GOOD_TOKEN, True)]
    assert [r["grant_type"] for r in token_endpoint.requests] == ["refresh_token"]
    assert token_endpoint.requests[0]["refresh_token"] == "rt-SECRET"
    [got] = server.ledger.messages(mark)
    assert got["user"] == "alice"
    replies = server.ledger.await_reply(mark, "535")
    assert any(r.startswith("535") for r in replies)
    assert any(r.startswith("334 ") for r in replies) == (name == "tls")


async def test_one_refresh_for_a_whole_pool(tls: PeerServer, token_endpoint: TokenEndpoint) -> None:
    token_endpoint.tokens = [GOOD_TOKEN]
    token_endpoint.delay = 0.2  # the refresh is in flight while other connections are refused
    msgs = [message([f"oauth{i}@example.org"]) for i in range(40)]
    mark = tls.ledger.mark()
    auth = {"user": "alice", "oauth2": stale_token(token_endpoint)}
    config = tls.config(auth=auth, pool=True, max_connections=4)
    async with SMTPProvider.from_config("peer", config) as provider:
        await asyncio.wait_for(asyncio.gather(*(provider.send(m) for m in msgs)), 60)
    assert len(token_endpoint.requests) == 1
    connections = tls.ledger.events(mark, "connect")
    accepted = [a for a in tls.ledger.events(mark, "auth") if a["ok"]]
    assert len(connections) <= 4
    assert [a["token"] for a in accepted] == [GOOD_TOKEN] * len(connections)
    got = tls.ledger.messages(mark)
    assert sorted(by_message_id(got).elements()) == sorted(m.message_id for m in msgs)
    assert {e["user"] for e in got} == {"alice"}


async def test_no_auth_in_plaintext(strict: PeerServer) -> None:
    """The server offers AUTH without TLS (and would take it): the password stays home."""
    mark = strict.ledger.mark()
    with pytest.raises(AuthError, match="refusing to send AUTH over a plaintext") as info:
        await send(strict, message(), auth={"user": "alice", "password": "s3cret-pass"})
    offered = strict.ledger.await_reply(mark, "AUTH PLAIN LOGIN")
    assert "AUTH PLAIN LOGIN" in "".join(offered)  # offered in clear
    assert "s3cret-pass" not in str(info.value)
    assert not any(c.startswith("AUTH") for c in strict.ledger.commands(mark))
    assert strict.ledger.events(mark, "auth") == []
    assert strict.ledger.messages(mark) == []
