"""The mail transaction: MAIL, RCPT, DATA and the payload, pipelined or one by one.

Once the session is set up (:mod:`.connection`), :func:`transactions` runs the
MAIL/RCPT/DATA exchange over :class:`.pipeline.ReplyStream`, which writes MAIL, every RCPT
and DATA in one write when the server offers PIPELINING (RFC 2920) and reads the replies in
order. The classification is the same either way: a failure before the final "." was
written is transient, one after it is uncertain, and a connection whose reply stream is in
doubt is discarded.

One message may take several transactions: a server that answers RCPT with "452 4.5.3
too many recipients" (RFC 5321 section 4.5.3.1.10) wants the rest in another transaction,
and gets them, on the same connection, in batches of the size it took. The first
transaction's end of data is the commit point; once a transaction has delivered, a later
one's failure is reported per recipient in the result (``rejected``) instead of raised,
because raising would fail the whole message over and send it twice to the recipients
that already have it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import islice

from ..._attempt import current_attempt
from ..._errors import DeliveryError, DeliveryUncertain, MessageError, TransientError
from ._session import COURTESY_TIMEOUT, ConnectionStale, Session
from .classify import Phase, classify_recipients, classify_reply, too_many_recipients
from .pipeline import CHUNK, Reply, ReplyStream
from .wire import Piece, command_line, payload_size, rcpt_command

__all__ = ["Delivery", "rset", "transactions"]


@dataclass(slots=True)
class Delivery:
    """What the server said about the message (one transaction or several) it accepted."""

    accepted: list[str]
    rejected: dict[str, str] = field(default_factory=dict)
    response: str = ""


@dataclass(slots=True)
class _Recipients:
    """The RCPT replies of one transaction, sorted."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: "too many recipients": to be sent in the next transaction, with the reply given
    deferred: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: RCPTs answered before the first deferral: how many the server takes per transaction
    taken: int | None = None

    def all_refused(self) -> dict[str, tuple[int, str]]:
        return {**self.refused, **self.deferred}


def _reply_text(code: int, text: str) -> str:
    return f"{code} {text}".strip()


class _Early:
    """A payload written by the reply reader the moment its 354 is parsed.

    Armed (:meth:`ReplyStream.arm`) when a pipelined group is written for a message in
    one transaction with a small payload. When the group's replies have all come, in the
    read that brings them and before any coroutine is woken, this writes the payload
    (and the hand-off lets the next send's group join it in the same write) *if* they
    let it go: RSET (when sent) and MAIL 250, every RCPT accepted, DATA 354; the send
    still wants it (its task not cancelled, the connection not discarded); and its
    attempt crosses the commit point without awaiting (``commit_now``: every commit
    hook ready, the budget not spent). Otherwise it does nothing and the send's
    coroutine reads the replies and writes the payload as it always has.

    Why: when one read brings message N's verdict and N+1's 250/250/354, N's coroutine
    ran first and settled N (the result, routing's record, events: ~400 us) before N+1
    could write, on the critical path of every round trip (docs/benchmarks.md, "The 10
    ms round trip with margin"). The bytes, their order and the replies each send reads
    are unchanged: only the payload leaves before N's verdict is *settled*, never before
    it has *come* (it precedes N+1's 354 on the wire), and what a lost or refused
    verdict does to the send behind is decided by replies this never sees.
    """

    __slots__ = ("attempt", "conn", "fired", "pieces", "rset", "stream", "task")

    def __init__(
        self, conn: Session, stream: ReplyStream, pieces: tuple[bytes, ...], rset: bool
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.pieces = pieces
        self.rset = rset
        self.attempt = current_attempt()
        self.task = asyncio.current_task()
        #: the payload was written by the reader: the send's coroutine only reads
        self.fired = False

    def __call__(self, replies: list[Reply]) -> None:
        first = 1 if self.rset else 0
        if first and replies[0].code != 250:
            return
        if replies[first].code != 250 or replies[-1].code != 354:
            return
        for reply in islice(replies, first + 1, len(replies) - 1):
            if reply.code != 250 and reply.code != 251:
                return  # a refusal is sorted by the coroutine (partial, deferred...)
        task = self.task
        conn = self.conn
        stream = self.stream
        if task is None or task.done() or task.cancelling() or conn.broken or stream.holding:
            return
        if not self.attempt.commit_now():
            return  # a hook to await, or abandoned: the coroutine commits (or raises)
        self.fired = True
        conn.messages += 1  # _mail_reply's count, which the hand-off's max_messages reads
        pieces = self.pieces
        stream.hold(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        handoff, conn.on_handoff = conn.on_handoff, None
        try:
            if handoff is not None:
                handoff()  # the next send's group joins the payload in this write
        finally:
            stream.flush_soon()


def _small(pieces: tuple[Piece, ...]) -> tuple[bytes, ...] | None:
    """The payload, when it leaves in one write (bytes only, one chunk at most)."""
    for piece in pieces:
        if not isinstance(piece, bytes):
            return None
    small: tuple[bytes, ...] = pieces  # type: ignore[assignment]
    return small if payload_size(pieces) <= CHUNK else None


async def transactions(
    conn: Session,
    stream: ReplyStream,
    previous: asyncio.Future[None] | None,
    recipients: list[str],
    mail: bytes,
    pieces: tuple[Piece, ...],
    *,
    smtputf8: bool = False,
) -> Delivery:
    """As many transactions as the server's recipient limit asks for.

    Each batch after the first is as large as the server took before its first
    "too many recipients", and must get at least one recipient accepted (a
    transaction that accepts none raises), so the loop ends.
    """
    delivered: Delivery | None = None
    remaining = recipients
    limit: int | None = None
    while True:
        batch = remaining if limit is None else remaining[:limit]
        rest = remaining[len(batch) :]
        try:
            if delivered is not None:
                stream = conn.ready()
            rcpts = [command_line(rcpt_command(r, smtputf8=smtputf8)) for r in batch]
            if conn.pipelining:
                part, deferred = await _pipelined(
                    conn, stream, previous, batch, mail, rcpts, pieces, more=bool(rest)
                )
            else:
                part, deferred = await _one_by_one(
                    conn, stream, batch, mail, rcpts, pieces, more=bool(rest)
                )
        except DeliveryError as exc:
            if delivered is None:
                raise  # nothing delivered yet: the message's outcome is this error
            _report_unsent(delivered, batch, rest, exc)
            return delivered
        previous = None  # our own replies are all read from here on
        if delivered is None:
            delivered = part
        else:
            delivered.accepted.extend(part.accepted)
            delivered.rejected.update(part.rejected)
        if deferred.taken is not None:
            taken = max(deferred.taken, 1)
            limit = taken if limit is None else min(limit, taken)
        remaining = [*deferred.deferred, *rest]
        if not remaining:
            return delivered


async def _after(conn: Session, previous: asyncio.Future[None] | None) -> None:
    """Wait until the transaction before this one on the connection has its replies.

    Our group was written behind its payload; our replies come after its verdict.
    If we are cancelled meanwhile, our replies will never be read: the connection is
    discarded, but only once the previous transaction has its verdict (discarding it
    now would make a delivered message look uncertain).

    ``previous`` is awaited directly, not through ``asyncio.shield``: its owner only
    ever sets it (``if not done()``) and we are its one waiter, so our cancellation
    cancelling it harms nobody, and the shield's extra future and callback cost a loop
    turn in every pipelined hand-off.
    """
    if previous is None or previous.done():
        return
    try:
        await previous
    except asyncio.CancelledError:
        conn.discard()
        raise


async def _mail_reply(conn: Session, stream: ReplyStream, early: _Early | None = None) -> Reply:
    """The reply to MAIL; a session that died before it is ConnectionStale."""
    reply = await _before_mail(conn, stream, Phase.MAIL)
    if reply.code == 421:
        conn.abort()
        error = classify_reply(Phase.MAIL, reply.code, reply.message, conn.endpoint)
        raise ConnectionStale(str(error.args[0]), code=reply.code, response=reply.message)
    if early is None or not early.fired:  # (counted by the reader's early write)
        conn.messages += 1
    return reply


async def _before_mail(conn: Session, stream: ReplyStream, phase: Phase) -> Reply:
    """A reply before MAIL was accepted; a dropped session is ConnectionStale."""
    try:
        return await conn.read(stream, phase)
    except TransientError as exc:
        timed_out = isinstance(exc.__cause__, TimeoutError)
        if exc.code == 421 or (exc.code is None and not timed_out):
            # dropped or closing: the session failed, not this message
            raise ConnectionStale(str(exc.args[0]), code=exc.code, response=exc.response) from exc
        raise


async def _pipelined(
    conn: Session,
    stream: ReplyStream,
    previous: asyncio.Future[None] | None,
    recipients: list[str],
    mail: bytes,
    rcpts: list[bytes],
    pieces: tuple[Piece, ...],
    *,
    more: bool,
) -> tuple[Delivery, _Recipients]:
    endpoint = conn.endpoint
    rset = conn.needs_rset
    conn.needs_rset = False
    batch = b"".join([b"RSET\r\n" if rset else b"", mail, *rcpts, b"DATA\r\n"])
    replies = len(rcpts) + 2 + rset
    try:
        stream.send(batch, replies=replies)
    except Exception as exc:  # closed between the pool's check and now
        conn.abort()
        raise ConnectionStale(f"connection to {endpoint.where} lost before MAIL") from exc
    early = None
    if not more and stream.early_writes:
        small = _small(pieces)
        if small is not None:
            early = _Early(conn, stream, small, rset)
            stream.arm(early, replies)
    await _after(conn, previous)
    if rset:
        reply = await _before_mail(conn, stream, Phase.RSET)
        if reply.code != 250:  # the server's state is unknown: start afresh
            conn.abort()
            raise ConnectionStale(
                f"RSET refused by {endpoint.where}: {reply.code} {reply.message}",
                code=reply.code,
                response=reply.message,
            )
    mail_reply = await _mail_reply(conn, stream, early)
    if mail_reply.code != 250:
        error = classify_reply(Phase.MAIL, mail_reply.code, mail_reply.message, endpoint)
        # Every RCPT and DATA is answered too (503 "need MAIL"): read them all.
        await _wind_up(conn, stream, rcpts=len(rcpts))
        raise error
    rcpt = _Recipients()
    for address in recipients:
        _sort_rcpt(conn, rcpt, address, await conn.read(stream, Phase.RCPT))
    if not rcpt.accepted:
        none_accepted = classify_recipients(rcpt.accepted, rcpt.all_refused())
        assert none_accepted is not None
        await _wind_up(conn, stream, rcpts=0)
        raise none_accepted
    data_reply = await conn.read(stream, Phase.DATA)
    if data_reply.code != 354:
        if data_reply.code == 421:
            conn.abort()
        else:
            conn.needs_rset = True
        raise classify_reply(Phase.DATA, data_reply.code, data_reply.message, endpoint)
    last = not more and not rcpt.deferred
    return await _message(conn, stream, rcpt, pieces, last=last, early=early), rcpt


def _sort_rcpt(conn: Session, rcpt: _Recipients, address: str, reply: Reply) -> None:
    """File one RCPT reply: accepted, deferred to the next transaction, or refused."""
    if reply.code in (250, 251):
        rcpt.accepted.append(address)
    elif reply.code == 421:  # the server hangs up: nothing more will come
        conn.abort()
        raise classify_reply(Phase.RCPT, reply.code, reply.message, conn.endpoint)
    elif too_many_recipients(reply.code, reply.message):
        if rcpt.taken is None:
            rcpt.taken = len(rcpt.accepted) + len(rcpt.refused)
        rcpt.deferred[address] = (reply.code, reply.message)
    else:
        rcpt.refused[address] = (reply.code, reply.message)


async def _wind_up(conn: Session, stream: ReplyStream, *, rcpts: int) -> None:
    """After a refusal in a pipelined group: read what is still owed, then RSET.

    ``rcpts`` RCPT replies and the DATA reply are still owed. RFC 2920: the DATA
    reply must be checked even when nothing was accepted; if it is 354 anyway, a
    lone "." ends the (empty, recipient-less) data, and its reply is read too. The
    RSET goes in front of the next MAIL. The caller's error is what counts: a
    failure here only means the connection is discarded.
    """
    try:
        for _ in range(rcpts):
            reply = await conn.read(stream, Phase.RCPT)
            if reply.code == 421:
                conn.abort()
                return
        reply = await conn.read(stream, Phase.DATA)
        if reply.code == 354:
            with conn.guard(Phase.DATA, None, "socket_timeout"):
                stream.send(b".\r\n", replies=1)
            reply = await conn.read(stream, Phase.DATA)
        if reply.code == 421:
            conn.abort()
            return
        conn.needs_rset = True
    except DeliveryError:
        pass  # the guard has discarded the connection


async def _one_by_one(
    conn: Session,
    stream: ReplyStream,
    recipients: list[str],
    mail: bytes,
    rcpts: list[bytes],
    pieces: tuple[Piece, ...],
    *,
    more: bool,
) -> tuple[Delivery, _Recipients]:
    endpoint = conn.endpoint
    try:
        stream.send(mail, replies=1)
    except Exception as exc:
        conn.abort()
        raise ConnectionStale(f"connection to {endpoint.where} lost before MAIL") from exc
    reply = await _mail_reply(conn, stream)
    if reply.code != 250:
        raise classify_reply(Phase.MAIL, reply.code, reply.message, endpoint)
    try:
        rcpt = _Recipients()
        for index, (address, line) in enumerate(zip(recipients, rcpts, strict=True)):
            with conn.guard(Phase.RCPT, None, "socket_timeout"):
                stream.send(line, replies=1)
            reply = await conn.read(stream, Phase.RCPT)
            _sort_rcpt(conn, rcpt, address, reply)
            if rcpt.deferred:
                # The server takes no more in this transaction: the rest wait for the
                # next one, without asking (each would get the same answer).
                for later in recipients[index + 1 :]:
                    rcpt.deferred[later] = (reply.code, reply.message)
                break
        error = classify_recipients(rcpt.accepted, rcpt.all_refused())
        if error is not None:
            raise error
        with conn.guard(Phase.DATA, None, "socket_timeout"):
            stream.send(b"DATA\r\n", replies=1)
        reply = await conn.read(stream, Phase.DATA)
        if reply.code != 354:
            if reply.code == 421:
                conn.abort()
            raise classify_reply(Phase.DATA, reply.code, reply.message, endpoint)
        last = not more and not rcpt.deferred
        return await _message(conn, stream, rcpt, pieces, last=last), rcpt
    except DeliveryError:
        if conn.usable:
            await rset(conn)
        raise


async def _message(
    conn: Session,
    stream: ReplyStream,
    rcpt: _Recipients,
    pieces: tuple[Piece, ...],
    *,
    last: bool,
    early: _Early | None = None,
) -> Delivery:
    """The payload after 354, then the verdict.

    ``last``: no transaction of this message follows, so the next send may be
    pipelined behind our payload (a hand-off); before a further transaction of our
    own, the connection stays ours. ``early``: the reader may have written the payload
    already (:class:`_Early`); then only the verdict is left.
    """
    if early is None or not early.fired:
        if early is not None:
            stream.disarm()  # ours (nobody else arms before our hand-off): we write
        await _payload(conn, stream, pieces, last=last)
    reply = await conn.read(stream, Phase.MESSAGE)
    if reply.code != 250:
        if reply.code == 421:
            conn.abort()
        raise classify_reply(Phase.MESSAGE, reply.code, reply.message, conn.endpoint)
    rejected = {a: _reply_text(code, text) for a, (code, text) in rcpt.refused.items()}
    return Delivery(accepted=list(rcpt.accepted), rejected=rejected, response=reply.message)


async def _payload(
    conn: Session, stream: ReplyStream, pieces: tuple[Piece, ...], *, last: bool
) -> None:
    """The commit point, the payload, and (``last``) the hand-off behind it."""
    # The commit point: from the end of the data on, the server may have the message.
    # Marked before the payload (not just before its last chunk) so that the budget
    # never cuts a payload short that is already on its way.
    await current_attempt().commit()
    timeout, label = conn.timeout("socket_timeout")
    handoff = conn.on_handoff if last and conn.pipelining else None
    # Until the final "." is written nothing can be delivered: a failure is transient.
    # Session.guard written out (it runs once a message, and a generator-based context
    # manager costs 1.5-3 us): the same mapping, the same aborts.
    try:
        # With a hand-off, a small payload is held for the rest of this loop turn so
        # that the next message's group, written in it, leaves in one write.
        await stream.send_payload(pieces, timeout=timeout, hold=handoff is not None)
    except MessageError:
        # an attachment file changed mid-payload: the data cannot be ended (that would
        # deliver a truncated message), so the session goes
        conn.abort()
        raise
    except DeliveryError:
        raise
    except Exception as exc:
        raise conn.mapped(exc, Phase.DATA, timeout, label) from exc
    except BaseException:  # cancellation mid-payload: the stream is in doubt
        conn.abort()
        raise
    if last:
        conn.on_handoff = None
        try:
            if handoff is not None:
                handoff()  # the next message's group may follow our "." now
        finally:
            stream.flush_soon()  # after the next send's wake-up, which comes first


async def rset(conn: Session) -> None:
    """End a failed transaction so the connection can carry the next one."""
    stream = conn.stream
    timeout = min(conn.settings.config.socket_timeout, COURTESY_TIMEOUT)
    try:
        assert stream is not None
        with conn.guard(Phase.RSET, timeout, "socket_timeout"):
            stream.send(b"RSET\r\n", replies=1)
            reply = await stream.read(timeout)
        if reply.code != 250:
            conn.abort()
    except DeliveryError:
        conn.abort()


def _report_unsent(
    delivered: Delivery, batch: list[str], rest: list[str], error: DeliveryError
) -> None:
    """A later transaction failed after an earlier one delivered: say so per recipient.

    The message is not failed (it reached ``delivered.accepted``), so each recipient of
    the failed transaction (``batch``) and of those not tried (``rest``) is put in
    ``rejected`` with what happened to it: its own RCPT reply when the server refused
    it, "it may have been delivered" when the transaction ended without a verdict, else
    why it was not sent.
    """
    replies: dict[str, str] = getattr(error, "refused", {})
    detail = error.args[0] if error.args else type(error).__name__
    count = len(delivered.accepted)
    if isinstance(error, DeliveryUncertain):
        reason = (
            f"uncertain, it may have been delivered: {detail} (in a later transaction of "
            f"a message delivered to {count} other recipient(s))"
        )
    else:
        reason = (
            f"not sent: {detail} (in a later transaction, after the message was "
            f"delivered to {count} other recipient(s))"
        )
    for address in batch:
        delivered.rejected[address] = replies.get(address, reason)
    for address in rest:
        delivered.rejected[address] = (
            f"not sent: not tried after a later transaction failed ({detail}); the "
            f"message was delivered to {count} other recipient(s)"
        )
