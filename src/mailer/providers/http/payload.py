"""One message's request: a walk over the Message that calls one hook per feature.

As django-anymail's ``BasePayload``: each adapter subclasses :class:`Payload`, and a
payload is made per message (:meth:`HTTPProvider.payload`). The base walks the message
once and calls ``set_from``, ``set_subject``, ``set_to``/``set_cc``/``set_bcc`` (all three
through ``add_recipients``), ``set_reply_to``, ``set_body``, ``set_headers``,
``add_attachment``, ``add_inline``, ``set_tags``, ``set_metadata``, ``set_dkim``,
``set_envelope`` and ``set_provider_options``; :meth:`Payload.request` then makes the one
:class:`HTTPRequest`. A hook the adapter neither maps (``json_fields``,
``attachment_fields``) nor overrides refuses its feature (:meth:`Payload.unsupported`:
UnsupportedFeature before any I/O, unless ``ignore_unsupported``), so no adapter drops cc,
bcc or headers silently. The rules every API shares live here once: recipients
de-duplicated across To/Cc/Bcc, the body rule (a text part, possibly empty, when there is
no HTML), custom header values RFC 2047-encoded, the Message-ID header, tag and reply-to
limits.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ..._message import Address, Attachment, Envelope, Message
from ..._message.dkim import DKIMOptions
from ..._message.mime import encode_header_value
from ..._provider import deep_merge
from .correlation import CORRELATION_KEY, plain
from .transport import HTTPRequest

if TYPE_CHECKING:
    from .provider import HTTPProvider

__all__ = ["Payload", "address_dict", "addresses_text", "b64", "unique_recipients"]

ProviderT = TypeVar("ProviderT", bound="HTTPProvider[Any]")
T = TypeVar("T")


def b64(data: bytes) -> str:
    """Base64 text, as every JSON mail API wants attachment content."""
    return base64.b64encode(data).decode("ascii")


def address_dict(address: Address, keys: tuple[str, str] = ("email", "name")) -> dict[str, str]:
    """``{"email": ..., "name": ...}``: the address object most JSON mail APIs take."""
    out = {keys[0]: address.email}
    if address.name:
        out[keys[1]] = address.name
    return out


def addresses_text(addresses: Sequence[Address]) -> str:
    """A header-form list (``Name <a@x>, b@y``), for APIs that take one string."""
    return ", ".join(str(a) for a in addresses)


def unique_recipients(message: Message) -> tuple[list[Address], list[Address], list[Address]]:
    """to, cc and bcc with each mailbox only in its first list.

    Several APIs (SendGrid, Mailjet) refuse a request naming an address twice, and no
    recipient should get two copies anyway.
    """
    seen: set[str] = set()
    out: list[list[Address]] = []
    for group in (message.to, message.cc, message.bcc):
        kept = []
        for addr in group:
            key = addr.email.lower()
            if key not in seen:
                seen.add(key)
                kept.append(addr)
        out.append(kept)
    return out[0], out[1], out[2]


class Payload(Generic[ProviderT]):
    """The request for one message, filled by :meth:`walk`.

    ``data`` is the JSON body (or the per-message object a batch wraps), ``parts`` the
    multipart form fields (:meth:`add_field` adds one), ``headers`` extra HTTP request
    headers, ``dkim`` the signing options :meth:`set_dkim` accepted (the signature is made
    off the event loop before :meth:`request`, and read back with
    :func:`mailer._message.dkim.signature`), ``size`` the message's size as the API counts
    it (measured once, by the walk; batches are cut by it).
    """

    #: feature -> top-level JSON field the default hooks fill: ``from``, ``subject``,
    #: ``to``, ``cc``, ``bcc``, ``reply_to``, ``text``, ``html``, ``headers``, ``tags``,
    #: ``metadata``. A feature with no field (and no overriding hook) is refused.
    json_fields: ClassVar[Mapping[str, str]] = {}
    #: the attachment object's field names: ``list``, ``filename``, ``content`` (base64),
    #: optional ``type``, ``disposition``, ``content_id`` (inline parts are refused
    #: without it) and ``inline_list`` (when inline parts go in their own list)
    attachment_fields: ClassVar[Mapping[str, str]] = {}
    #: the keys of an address object (``("email", "name")``); None: ``Name <a@x>`` text
    address_fields: ClassVar[tuple[str, str] | None] = None
    #: at most this many tags / reply-to addresses (None: no limit)
    max_tags: ClassVar[int | None] = None
    max_reply_to: ClassVar[int | None] = None
    #: True when :meth:`set_dkim` carries a signature (the payload sends the message's
    #: own MIME bytes, as SES Raw): the provider then signs before the walk
    signs_dkim: ClassVar[bool] = False

    def __init__(self, provider: ProviderT, message: Message) -> None:
        self.provider = provider
        self.message = message
        self.data: dict[str, Any] = {}
        self.parts: list[tuple[str, tuple[Any, ...]]] = []
        self.headers: dict[str, str] = {}
        self.dkim: DKIMOptions | None = None
        self.size = 0
        #: the request's path when it is not the provider's send target (Postmark sends
        #: a stored template to ``/email/withTemplate``)
        self.target: str | None = None

    def add_field(self, name: str, value: str) -> None:
        """A plain multipart form field (a part without a filename)."""
        self.parts.append((name, (None, value)))

    def add_file(self, name: str, filename: str | None, attachment: Attachment) -> None:
        """A multipart file part holding ``attachment``'s content."""
        self.parts.append((name, (filename, attachment.data(), attachment.mime_type())))

    def unsupported(self, feature: str) -> None:
        """Refuse the message for ``feature``, or drop it under ``ignore_unsupported``."""
        self.provider.unsupported(feature)

    def refuse(self, rule: str) -> None:
        """Refuse a message that breaks an API rule no option can work around."""
        self.provider.refuse(rule)

    # -- the walk ------------------------------------------------------------------------

    def walk(self) -> Payload[ProviderT]:
        """Fill the payload from the message, refusing before any I/O; returns self."""
        message = self.message
        self.size = self.provider.check(message)
        assert message.sender is not None  # the check refused the message otherwise
        to, cc, bcc = unique_recipients(message)
        self.set_from(message.sender)
        # a message reaching a walk with a template is one this API has a stored one for
        # (Provider.send swapped in the local rendering otherwise)
        template_id = (
            None if message.template is None else (self.provider.template_id(message.template))
        )
        if template_id is None:
            self.set_subject(message.subject)
        if to:
            self.set_to(to)
        if cc:
            self.set_cc(cc)
        if bcc:
            self.set_bcc(bcc)
        if message.reply_to:
            reply_to = self._limited(
                list(message.reply_to), self.max_reply_to, "reply-to address", "reply-to addresses"
            )
            self.set_reply_to(reply_to)
        if template_id is not None:
            self.check_template_data(template_id, message.template_data)
            self.set_template(template_id, dict(message.template_data))
        elif self.body_in_mime():
            # the bodies go inside the rendering, streamed: not read as strings (a loaded
            # outbox row's large text stays in its file, see mailer._message.spooled)
            self.set_body(None, None)
        else:
            # the body rule: HTML alone, or a text part (possibly empty) with or without it
            text = "" if message.text is None and message.html is None else message.text
            self.set_body(text, message.html)
        headers = {name: encode_header_value(value) for name, value in message.headers.items()}
        if self.provider.sends_message_id and message.message_id is not None:
            headers["Message-ID"] = message.message_id
        if headers:
            self.set_headers(headers)
        for att in message.attachments:
            if att.inline:
                self.add_inline(att)
            else:
                self.add_attachment(att)
        if message.tags:
            self.set_tags(self._limited(list(message.tags), self.max_tags, "tag", "tags"))
        metadata = dict(message.metadata)
        if message.message_id is not None and self.correlates():
            if CORRELATION_KEY in metadata:
                self.refuse(
                    f"metadata key {CORRELATION_KEY!r} is the library's own (it carries the "
                    "Message-ID to the provider's events): rename it"
                )
            metadata[CORRELATION_KEY] = self.correlation_value(message.message_id)
        if metadata:
            self.set_metadata(metadata)
        dkim = self.provider.dkim_options(message)
        if dkim is not None:
            self.set_dkim(dkim)
        if message.envelope is not None:
            self.set_envelope(message.envelope)
        options = self.provider.options_for(message)
        if options:  # last, so that they win over what the walk put there
            self.set_provider_options(options)
        return self

    def correlates(self) -> bool:
        """True when the API echoes metadata in its events, so the correlation key
        (:data:`CORRELATION_KEY`) goes into every attempt's metadata; an adapter with no
        metadata field says False rather than refuse every message."""
        return "metadata" in self.json_fields or type(self).set_metadata is not Payload.set_metadata

    def correlation_value(self, message_id: str) -> str:
        """The key's value: the Message-ID as is; tag-only APIs encode it
        (:func:`~mailer.providers.http.correlation.tag_safe`)."""
        return plain(message_id)

    def _limited(self, items: list[T], limit: int | None, one: str, many: str) -> list[T]:
        if limit is not None and len(items) > limit:
            self.unsupported(f"more than one {one}" if limit == 1 else f"more than {limit} {many}")
            return items[:limit]
        return items

    def request(self) -> HTTPRequest:
        """The send request from the filled payload; adapters add config-level options."""
        return HTTPRequest(
            "POST",
            self.target or self.provider.send_target(),
            json=self.data if not self.parts else None,
            files=self.parts or None,
            headers=self.headers,
        )

    # -- the hooks. By default each puts its value in the JSON field ``json_fields`` names
    # for it (most JSON APIs need nothing more); with no field and no override, from,
    # subject, to and the body are a programming error and the rest refuse the feature.

    def json_address(self, address: Address) -> Any:
        """One address as the API's JSON takes it: an object (``address_fields``), else
        ``Name <a@x>``."""
        if self.address_fields is None:
            return str(address)
        return address_dict(address, self.address_fields)

    def json_addresses(self, addresses: list[Address]) -> Any:
        """A recipient list as the API's JSON takes it (default: a list of addresses)."""
        return [self.json_address(a) for a in addresses]

    def _put(self, feature: str, value: Any, refusal: str | None) -> None:
        key = self.json_fields.get(feature)
        if key is not None:
            self.data[key] = value
        elif refusal is None:
            raise NotImplementedError(f"{type(self).__name__} does not map {feature}")
        else:
            self.unsupported(refusal)

    def set_from(self, sender: Address) -> None:
        self._put("from", self.json_address(sender), None)

    def set_subject(self, subject: str) -> None:
        self._put("subject", subject, None)

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        """One recipient list; ``kind`` is ``to``, ``cc`` or ``bcc``."""
        self._put(
            kind, self.json_addresses(addresses), None if kind == "to" else f"{kind} recipients"
        )

    def set_to(self, to: list[Address]) -> None:
        self.add_recipients("to", to)

    def set_cc(self, cc: list[Address]) -> None:
        self.add_recipients("cc", cc)

    def set_bcc(self, bcc: list[Address]) -> None:
        self.add_recipients("bcc", bcc)

    def body_in_mime(self) -> bool:
        """Whether this request carries the bodies inside the rendered MIME (SES raw,
        Mailgun MIME for a large message): then :meth:`set_body` gets None for both."""
        return False

    def set_body(self, text: str | None, html: str | None) -> None:
        """``text`` is None only when there is ``html`` (or when :meth:`body_in_mime`);
        either may be empty."""
        if text is not None:
            self._put("text", text, None)
        if html is not None:
            self._put("html", html, None)

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        """Send through the API's stored template ``template_id`` with ``data`` instead
        of a subject and body. Refused by default: an adapter whose API has templates
        overrides it (and the message is then sent rendered locally by another provider)."""
        self.unsupported("stored templates")

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        """Refuse, before any I/O, template data the API's rules reject (a size limit, a
        shape) with :meth:`refuse`: UnsupportedFeature, so the Mailer moves the message on
        to a provider that renders the template locally instead."""

    def set_reply_to(self, reply_to: list[Address]) -> None:
        """A single value when the API takes one (``max_reply_to = 1``), else a list."""
        one = self.max_reply_to == 1
        value = self.json_address(reply_to[0]) if one else self.json_addresses(reply_to)
        self._put("reply_to", value, "reply-to addresses")

    def set_headers(self, headers: dict[str, str]) -> None:
        """Custom headers (values RFC 2047-encoded), with Message-ID if it is sent."""
        key = self.json_fields.get("headers")
        if key is None:
            self.unsupported("custom headers")
        else:
            self.data.setdefault(key, {}).update(headers)

    def set_tags(self, tags: list[str]) -> None:
        """A single value when the API takes one (``max_tags = 1``), else a list."""
        self._put("tags", tags[0] if self.max_tags == 1 else tags, "tags")

    def set_metadata(self, metadata: dict[str, str]) -> None:
        self._put("metadata", metadata, "metadata")

    def set_dkim(self, options: DKIMOptions) -> None:
        """A DKIM-signed message (the message's ``dkim``, else the config's).

        A signature covers the bytes it was made over; only a payload that sends the
        message's own MIME (SES Raw, ``signs_dkim``) can carry one: it sets ``self.dkim``
        and sends :func:`mailer._message.dkim.signature` before those bytes. An API that
        builds the MIME from JSON fields cannot, so by default the feature is refused.
        """
        self.unsupported(
            "dkim (its API builds the MIME from JSON fields, so a signature made here "
            "cannot survive; use the provider's own domain signing, or an SMTP or SES "
            "provider)"
        )

    def set_envelope(self, envelope: Envelope) -> None:
        """An SMTP envelope other than the headers (a bounce address, other recipients).
        The APIs deliver to To/Cc/Bcc and bounce to their own address, so by default it
        is refused: sent anyway, the mail would go to the header recipients."""
        self.unsupported(
            "an envelope different from the headers (its API delivers to To/Cc/Bcc and "
            "sets its own bounce address; use an SMTP provider)"
        )

    def set_provider_options(self, options: dict[str, Any]) -> None:
        """This provider's ``provider_options`` (django-anymail's ``esp_extra``): deep-merged
        into the JSON body; on a form API (``parts``) each one is a field, a list one field
        per item, other values as JSON (``true``, ``3``)."""
        if not self.parts:
            self.data = deep_merge(self.data, options)
            return
        for key, value in options.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Mapping | list):
                    self.refuse(f"takes form fields: provider_options {key!r} must be a value")
                self.add_field(key, item if isinstance(item, str) else json.dumps(item))

    def add_attachment(self, attachment: Attachment) -> None:
        if not self._attach(attachment, inline=False):
            self.unsupported("attachments")

    def add_inline(self, attachment: Attachment) -> None:
        if not self._attach(attachment, inline=True):
            self.unsupported("inline attachments (content-id images)")

    def content_id(self, attachment: Attachment) -> str:
        """An inline part's content id as the API wants it (Postmark: ``cid:...``)."""
        return attachment.content_id or ""

    def _attach(self, att: Attachment, *, inline: bool) -> bool:
        """One attachment object from ``attachment_fields``; False if the API has none."""
        names = self.attachment_fields
        if "list" not in names or (inline and "content_id" not in names):
            return False
        item = {names["filename"]: att.filename or "", names["content"]: b64(att.data())}
        if "type" in names:
            item[names["type"]] = att.mime_type()
        if "disposition" in names:
            item[names["disposition"]] = "inline" if inline else "attachment"
        if inline:
            item[names["content_id"]] = self.content_id(att)
        key = names.get("inline_list", names["list"]) if inline else names["list"]
        self.data.setdefault(key, []).append(item)
        return True
