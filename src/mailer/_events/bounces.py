"""SMTP bounces and complaints as DeliveryEvents: RFC 3464 DSNs and RFC 5965 ARF reports.

A DSN (``multipart/report; report-type=delivery-status``, as Postfix, Exim and Gmail
send them) gives one event per recipient block of its ``message/delivery-status`` part:

* ``Action: failed`` -> ``bounced``, hard when ``Status`` is 5.x.x, soft when 4.x.x;
* ``Action: delayed`` -> ``deferred``; ``delivered``, ``relayed``, ``expanded`` ->
  ``delivered``.

An ARF report (``report-type=feedback-report``) gives ``complained`` for its
``Original-Rcpt-To`` (or, without one, the returned message's To), unless its
``Feedback-Type`` is ``not-spam``.

Our Message-ID comes from the returned message (``message/rfc822``) or its headers
(``text/rfc822-headers``). The event id is the report's own Message-ID with the
recipient, so the same report ingested twice is one event. Anything else (an
auto-reply, a plain message) gives no events: a bounce mailbox receives all sorts.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import Message as EmailMessage
from email.utils import getaddresses, parsedate_to_datetime

from .model import DeliveryEvent, EventType, normalize_recipient

__all__ = ["MAX_REPORT_BYTES", "parse"]

#: a report larger than this is refused (a bounce quoting a huge attachment: the
#: report's own parts are small; ask the MTA to return headers only)
MAX_REPORT_BYTES = 25 * 1024 * 1024

_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})")
_ACTIONS: dict[str, EventType] = {
    "failed": "bounced",
    "delayed": "deferred",
    "delivered": "delivered",
    "relayed": "delivered",
    "expanded": "delivered",
}


def parse(raw: bytes, *, provider: str = "smtp") -> list[DeliveryEvent]:
    """The delivery events a bounce or complaint report holds (see the module's doc).

    ``provider`` names the provider the events are recorded for (the SMTP provider's
    name in your config, when bounces come back to it). Raises ValueError for input
    that is not bytes or is over :data:`MAX_REPORT_BYTES`; a message that is no report
    gives an empty list.
    """
    if not isinstance(raw, bytes | bytearray):
        raise ValueError("bounces.parse takes the raw message as bytes")
    if len(raw) > MAX_REPORT_BYTES:
        raise ValueError(f"a bounce report over {MAX_REPORT_BYTES} bytes is refused")
    msg = email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        return []
    param = msg.get_param("report-type")
    kind = param.lower() if isinstance(param, str) else ""
    report_id = (msg.get("Message-ID") or "").strip()
    when = _date(msg.get("Date")) or datetime.now(UTC)
    original = _original_headers(msg)
    message_id = (original.get("Message-ID") or "").strip() or None if original else None
    if kind == "delivery-status":
        return _dsn(msg, provider, report_id, when, message_id)
    if kind == "feedback-report":
        return _arf(msg, provider, report_id, when, message_id, original)
    return []


def _dsn(
    msg: EmailMessage, provider: str, report_id: str, when: datetime, message_id: str | None
) -> list[DeliveryEvent]:
    part = _part(msg, "message/delivery-status")
    if part is None:
        return []
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    blocks: list[EmailMessage] = [b for b in payload if isinstance(b, EmailMessage)]
    if len(blocks) < 2:
        return []
    per_message, recipients = blocks[0], blocks[1:]
    arrival = _date(per_message.get("Arrival-Date"))
    events = []
    for block in recipients:
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = (block.get("Action") or "").strip().lower()
        kind = _ACTIONS.get(action)
        if recipient is None or kind is None:
            continue
        status = (block.get("Status") or "").strip()
        bounce = None
        if kind == "bounced":
            m = _STATUS.match(status)
            bounce = "hard" if m is None or m.group(1) == "5" else "soft"
        diagnostic = " ".join((block.get("Diagnostic-Code") or "").split())
        reason = diagnostic.partition(";")[2].strip() or diagnostic or status or None
        events.append(
            _event(
                kind,
                provider,
                recipient,
                _date(block.get("Last-Attempt-Date")) or arrival or when,
                message_id,
                report_id,
                bounce,
                reason,
                status,
                action,
            )
        )
    return events


def _arf(
    msg: EmailMessage,
    provider: str,
    report_id: str,
    when: datetime,
    message_id: str | None,
    original: EmailMessage | None,
) -> list[DeliveryEvent]:
    part = _part(msg, "message/feedback-report")
    if part is None:
        return []
    fields = _fields(part)
    feedback = (fields.get("Feedback-Type") or "abuse").strip().lower()
    if feedback == "not-spam":
        return []
    rcpts = [a for a in (_address(v) for v in fields.get_all("Original-Rcpt-To") or []) if a]
    if not rcpts and original is not None:
        rcpts = [a for _, a in getaddresses(original.get_all("To") or []) if "@" in a]
    arrival = _date(fields.get("Arrival-Date")) or when
    return [
        _event(
            "complained",
            provider,
            r,
            arrival,
            message_id,
            report_id,
            None,
            f"feedback report: {feedback}",
            None,
            feedback,
        )
        for r in dict.fromkeys(rcpts)
    ]


def _event(
    kind: EventType,
    provider: str,
    recipient: str,
    when: datetime,
    message_id: str | None,
    report_id: str,
    bounce: str | None,
    reason: str | None,
    status: str | None,
    action: str,
) -> DeliveryEvent:
    return DeliveryEvent(
        type=kind,
        provider=provider,
        recipient=recipient,
        timestamp=when,
        message_id=message_id,
        bounce=bounce,  # type: ignore[arg-type]  # "hard" | "soft" | None by construction
        reason=reason,
        event_id=f"{report_id}/{normalize_recipient(recipient)}" if report_id else None,
        raw={"report_id": report_id or None, "action": action, "status": status},
    )


def _part(msg: EmailMessage, content_type: str) -> EmailMessage | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _fields(part: EmailMessage) -> EmailMessage:
    """The header block a ``message/feedback-report`` part holds."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        first = payload[0]
        assert isinstance(first, EmailMessage)
        return first
    text = payload if isinstance(payload, str) else ""
    return email.message_from_string(text.lstrip("\r\n"), policy=email.policy.compat32)


def _original_headers(msg: EmailMessage) -> EmailMessage | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                first = payload[0]
                return first if isinstance(first, EmailMessage) else None
        elif ctype == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text.lstrip(b"\r\n"), policy=email.policy.compat32)
    return None


def _address(value: str | None) -> str | None:
    """``rfc822; a@b`` (an address type, then the address) -> ``a@b``."""
    if not value:
        return None
    kind, sep, address = value.partition(";")
    if not sep:
        address = kind
    elif kind.strip().lower() not in ("rfc822", "utf-8"):
        return None
    address = address.strip().strip("<>").strip()
    return address if "@" in address else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(re.sub(r"\s*\([^)]*\)\s*$", "", value.strip()))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
