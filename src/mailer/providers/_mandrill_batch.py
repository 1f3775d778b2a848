"""Mandrill's batch form: one ``messages/send`` of one content to many recipients.

Mandrill has no endpoint for different messages, but ``messages/send`` with several
``to`` entries and ``preserve_recipients: false`` sends each recipient a copy of its own
(no one sees the others), and answers one item per recipient. So messages that differ
only in their single To recipient (the same sender, subject, bodies, attachments,
headers, tags, metadata and options) travel in one request. What each message has of its
own goes per recipient:

- the correlation key, in ``recipient_metadata`` (``{"rcpt", "values"}``), which Mandrill
  merges over ``metadata`` in its events, so each event still names its message;
- our Message-ID is not sent: one ``headers`` object serves every copy, so Mandrill sets
  a Message-ID on each (the SendResult keeps ours, as for ESPs that set their own).

A message with Cc or Bcc, or more than one To, is sent alone (each copy would otherwise
show only its own recipient). Each answer item is read by its ``email`` exactly as a
single send's one-item answer is (:meth:`MandrillProvider.parse_success`); a message
whose recipient the answer does not name is DeliveryUncertain. No ``merge_vars``: a
message's content is already rendered (templates included), so only identical content
is merged; it is never rewritten into merge tags.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from .._errors import DeliveryError, DeliveryUncertain, MessageError
from .._message import Message
from .http import Answer, HTTPRequest, Payload
from .http.batch import BatchOutcome
from .http.correlation import CORRELATION_KEY

if TYPE_CHECKING:
    from ._mandrill import MandrillProvider

__all__ = ["batchable", "groups", "merged_request", "outcomes"]


def batchable(message: Message) -> bool:
    """One To recipient, no Cc or Bcc: the only shape a per-recipient copy keeps."""
    return len(message.to) == 1 and not message.cc and not message.bcc


def _content_key(payload: Payload[Any]) -> str:
    """The request without what each message has of its own (recipient, Message-ID,
    correlation key): equal keys mean the same content."""
    data = copy.deepcopy(payload.data)
    data.pop("key", None)  # added by request(): the same for all
    msg = data.get("message", {})
    msg.pop("to", None)
    msg.pop("preserve_recipients", None)
    headers = {k: v for k, v in (msg.get("headers") or {}).items() if k.lower() != "message-id"}
    msg["headers"] = headers
    metadata = dict(msg.get("metadata") or {})
    metadata.pop(CORRELATION_KEY, None)
    msg["metadata"] = metadata
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def groups(payloads: list[Payload[Any]]) -> list[list[int]]:
    """Positions of payloads with the same content, no recipient twice in a group (a
    second message to one address goes in a group of its own), in order."""
    out: list[list[int]] = []
    open_groups: dict[str, list[tuple[set[str], list[int]]]] = {}
    for index, payload in enumerate(payloads):
        key = _content_key(payload)
        email = payload.message.to[0].email.lower() if payload.message.to else ""
        for seen, members in open_groups.setdefault(key, []):
            if email not in seen:
                seen.add(email)
                members.append(index)
                break
        else:
            members = [index]
            open_groups[key].append(({email}, members))
            out.append(members)
    return out


def merged_request(payloads: list[Payload[Any]]) -> HTTPRequest:
    """One ``messages/send`` for payloads of one group (a group of one: its own request)."""
    first = payloads[0].request()
    if len(payloads) == 1:
        return first
    body = copy.deepcopy(first.json)
    msg = body["message"]
    msg["to"] = [p.data["message"]["to"][0] for p in payloads]
    msg["preserve_recipients"] = False
    headers = {k: v for k, v in (msg.get("headers") or {}).items() if k.lower() != "message-id"}
    if headers:
        msg["headers"] = headers
    else:
        msg.pop("headers", None)
    metadata = dict(msg.get("metadata") or {})
    if metadata.pop(CORRELATION_KEY, None) is not None:
        msg["recipient_metadata"] = [
            {
                "rcpt": p.data["message"]["to"][0]["email"],
                "values": {CORRELATION_KEY: p.data["message"]["metadata"][CORRELATION_KEY]},
            }
            for p in payloads
        ]
    if metadata:
        msg["metadata"] = metadata
    else:
        msg.pop("metadata", None)
    return HTTPRequest(first.method, first.path, json=body, headers=dict(first.headers))


def outcomes(
    provider: MandrillProvider, messages: list[Message], answer: Answer
) -> list[BatchOutcome]:
    """Each message's outcome from the per-recipient answer, matched by address."""
    items = answer.data if isinstance(answer.data, list) else []
    by_email = {
        str(item.get("email", "")).lower(): item for item in items if isinstance(item, dict)
    }
    out: list[BatchOutcome] = []
    for message in messages:
        item = by_email.get(message.to[0].email.lower()) if message.to else None
        if item is None:
            out.append(
                DeliveryUncertain(
                    "Mandrill's answer names no item for this recipient; it may have been sent",
                    provider=provider.name,
                )
            )
            continue
        one = Answer(answer.status, [item], json.dumps([item], default=str))
        try:
            out.append(provider.parse_success(message, one))
        except (DeliveryError, MessageError) as exc:
            out.append(exc)
    return out
