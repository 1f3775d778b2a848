"""The SMTP provider against Postfix's smtp-sink (3.7), Postfix's own C test server.

smtp-sink discards mail after writing each transaction to a dump file (the ledger here:
kit.SinkServer). It offers PIPELINING (or not, ``-p``) but neither SIZE nor AUTH nor TLS,
so the cases are the ones it can judge: the envelope and the bytes as received, pipelined
and not, dot-stuffing, many messages over a pool, and a connection dropped after the
final "." (``-q .``). Our side runs with its DEFAULT timeouts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mailer import DeliveryUncertain, Mailer, Message
from mailer.providers._memory import MemoryProvider
from mailer.providers._smtp import SMTPProvider

from .kit import SinkServer, header

pytestmark = pytest.mark.anyio


def config(server: SinkServer, **overrides: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "name": "client.test", **overrides}


def message(to: list[str], **kw: Any) -> Message:
    fields: dict[str, Any] = {"sender": "app@example.com", "to": to, "subject": "sink",
                              "text": "hello\n.\n..x\n.leading\nend\n"}  # fmt: skip
    fields.update(kw)
    return Message(**fields)


def as_received(msg: Message) -> bytes:
    """What smtp-sink writes for ``msg``: the same lines, ending in LF."""
    return msg.as_bytes().replace(b"\r\n", b"\n")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
async def test_envelope_and_bytes_arrive_pipelined_or_not(
    sink: Callable[..., SinkServer], pipelining: bool
) -> None:
    server = sink(pipelining=pipelining)
    to = ["a@example.org", "b@example.org", "c@example.org"]
    msg = message(to[:1], cc=to[1:2], bcc=to[2:])
    mark = server.mark()
    async with SMTPProvider.from_config("sink", config(server)) as provider:
        result = await provider.send(msg)
    [got] = server.messages(mark)
    assert got["mail"] == "<app@example.com>"
    assert got["rcpt"] == [f"<{r}>" for r in to]
    assert got["data"] == as_received(msg)  # dot-stuffing undone exactly
    assert b"\n.\n..x\n.leading\n" in got["data"]
    assert result.accepted == to


async def test_pool_sends_200_messages_each_once(sink: Callable[..., SinkServer]) -> None:
    server = sink()
    msgs = [message([f"pool{i}@example.org"], subject=f"pool {i}") for i in range(200)]
    mark = server.mark()
    async with SMTPProvider.from_config(
        "sink", config(server, pool=True, max_connections=4)
    ) as provider:
        await asyncio.wait_for(asyncio.gather(*(provider.send(m) for m in msgs)), 60)
    got = server.messages(mark)
    ids = Counter(header(g["data"].replace(b"\n", b"\r\n"), "Message-ID") for g in got)
    assert sorted(ids.elements()) == sorted(m.message_id for m in msgs)  # each once
    by_id = {m.message_id: m for m in msgs}
    for g in got:
        sent = by_id[header(g["data"].replace(b"\n", b"\r\n"), "Message-ID")]
        assert g["data"] == as_received(sent)
        assert g["rcpt"] == [f"<{sent.to[0].email}>"]


async def test_connection_dropped_after_the_final_dot_is_uncertain_never_resent(
    sink: Callable[..., SinkServer],
) -> None:
    server = sink(quit_after_dot=True)
    backup = MemoryProvider("backup")
    mailer = Mailer(
        [SMTPProvider.from_config("sink", config(server)), backup],
        retry={"attempts": 3, "backoff": 0},
    )
    msg = message(["u@example.org"])
    mark = server.mark()
    async with mailer:
        with pytest.raises(DeliveryUncertain):
            await mailer.send(msg)
    await asyncio.sleep(0.3)  # anything re-sent would have arrived by now
    got = server.messages(mark)
    assert [g["data"] for g in got] == [as_received(msg)]  # it did arrive, once
    assert backup.messages == []
