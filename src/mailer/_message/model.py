"""The Message model: validated on construction, rendered once, one Message-ID for life.

The rendered bytes are cached on the (frozen) message, so every attempt, on every
provider, sends the same bytes and the same id; the id is made when first read (see
:mod:`mailer._message.message_id`), and a copy made by ``with_defaults`` shares it.

Here: the fields and their validation, the copies made on the send path
(``with_defaults``, ``without_recipients``) and the private state they start from, the
derived values, and the rendering methods' hot path. Rendering itself is in
:mod:`mailer._message.render`, the spooled bodies' descriptor in
:mod:`mailer._message.spooled`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    FieldSerializationInfo,
    PrivateAttr,
    field_serializer,
    field_validator,
    model_validator,
)

from .._errors import MessageError
from . import mime as _mime
from ._checks import (
    FROM_JSON,
    MAX_HEADERS,
    PATH_FROM_JSON,
    Strict,
    check_length,
    check_text,
    describe,
)
from .address import Address
from .attachment import Attachment
from .dkim import DKIMOptions
from .headers import check_headers
from .message_id import IdCell, MessageId, check_message_id, id_cell
from .render import render_8bit, render_once
from .spooled import (
    BODIES,
    SPOOLED,
    Body,
    SpooledText,
    body_of,
    field_values,
    is_set,
    read_body,
)
from .template import (
    TEMPLATE_NAME,
    check_template_data,
    check_template_message,
    check_template_name,
)


def _as_list(value: Any) -> Any:
    if type(value) is list:  # the common case, before the isinstance of an ABC (Mapping)
        return value
    if value is None:
        return []
    if isinstance(value, str | Address | Mapping | tuple) and not (
        isinstance(value, tuple) and value and not isinstance(value[0], str | None)
    ):
        return [value]
    return value


class Envelope(Strict):
    """The SMTP envelope when it differs from the headers (Nodemailer's ``envelope``):
    a bounce address (VERP), or recipients other than To/Cc/Bcc. Either may be left
    out: the message's own sender or recipients are used for it."""

    sender: Address | None = Field(default=None, alias="from")
    recipients: list[Address] | None = Field(default=None, alias="to")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("recipients", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return None if value is None else _as_list(value)

    @model_validator(mode="after")
    def _not_empty(self) -> Envelope:
        if self.recipients is not None and not self.recipients:
            raise MessageError("envelope.recipients is empty: leave it out to use to/cc/bcc")
        return self


class Message(Strict):
    """An email to send. Frozen: what was validated is what is sent.

    ``sender`` also accepts the alias ``from`` (``Message(**{"from": ...})``). The sender may
    be left out when the Mailer has ``defaults.sender``.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    sender: Address | None = Field(default=None, alias="from")
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    bcc: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    message_id: str | None = None
    #: DKIM signing for this message; wins over the provider's ``dkim``
    dkim: DKIMOptions | None = Field(default=None, repr=False)
    #: the SMTP envelope, when it differs from the headers (providers that cannot send
    #: one refuse the message rather than ignore it)
    envelope: Envelope | None = None
    #: per-provider options for this message, keyed by provider name or type: deep-merged
    #: into an HTTP provider's request body; for SMTP, overrides of its config for a
    #: one-off connection (see docs/configuration.md)
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    #: a template named once: a provider with a stored template of that name (its
    #: ``templates`` mapping) sends through its template API, any other the same template
    #: rendered locally with the same data (see docs/templates.md)
    template: str | None = None
    #: the template's variables (JSON values)
    template_data: dict[str, Any] = Field(default_factory=dict, repr=False)
    #: one-click unsubscribe (RFC 8058): True, or the list's name; False: none even when
    #: the Mailer's ``defaults.unsubscribe`` says so (see docs/deliverability.md)
    unsubscribe: bool | str | None = None

    #: the rendering, made once: bytes, or with large attachments a streamed Rendering
    _rendered: bytes | _mime.Rendering | None = PrivateAttr(default=None)
    #: its Date, which the 8-bit rendering (see render_8bit) shares
    _date: str | None = PrivateAttr(default=None)
    #: the rendering with 8-bit attached messages as they are; False when there is none
    _rendered_8bit: bytes | _mime.Rendering | bool | None = PrivateAttr(default=None)
    #: the Message-ID to be, shared with the copies with_defaults makes (see IdCell)
    _id_cell: IdCell | None = PrivateAttr(default=None)
    #: DKIM-Signature headers made for this message, by signing options (see _dkim)
    _signatures: dict[DKIMOptions, bytes] | None = PrivateAttr(default=None)
    #: with a template: the copy rendered locally, for providers without a stored one
    _variant: Message | None = PrivateAttr(default=None)
    #: bodies kept in temporary files (a loaded outbox row's large text or html), by
    #: field; the field holds ``SPOOLED`` meanwhile (see mailer._message.spooled)
    _spooled: dict[str, SpooledText] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Field values only: whether one copy has been rendered yet does not matter.
        if not isinstance(other, Message):
            return NotImplemented
        if self.message_id != other.message_id:
            return False
        return field_values(self) == field_values(other)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def build(cls, data: Mapping[str, Any]) -> Message:
        """Construct from a mapping (as from JSON), raising MessageError on bad input."""
        return cls(**dict(data))

    # -- field validation ------------------------------------------------------------

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("attachments", mode="before")
    @classmethod
    def _attachments(cls, value: Any) -> Any:
        items = _as_list(value) if not isinstance(value, list) else value
        out = []
        for item in items:
            if isinstance(item, str | Path):
                if FROM_JSON.get():
                    raise MessageError(PATH_FROM_JSON)
                out.append(Attachment(path=Path(item)))
            else:
                out.append(item)
        return out

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return check_length(check_text(value, "subject"), "subject")

    @field_validator("text", "html")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        # NUL is the one character no SMTP body may carry (RFC 5321 4.1.1.4, RFC 2045 2.7).
        if value is not None and "\x00" in value:
            raise MessageError("the body contains a NUL character")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            check_text(tag, "tag")
            if not tag or len(tag) > 128:
                raise MessageError(f"tags must be 1 to 128 characters: {describe(tag)}")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            check_text(key, "metadata key")
            check_text(text, f"metadata {key!r}")
        return value

    @field_validator("provider_options")
    @classmethod
    def _provider_options(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, options in value.items():
            check_text(key, "provider_options key")
            if not isinstance(options, dict):
                raise MessageError(f"provider_options[{key!r}] must be a mapping of options")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return check_template_name(value)

    @field_validator("unsubscribe")
    @classmethod
    def _unsubscribe(cls, value: bool | str | None) -> bool | str | None:
        if isinstance(value, str) and not TEMPLATE_NAME.fullmatch(value):
            raise MessageError(f"invalid unsubscribe list name {describe(value)}")
        return value

    @field_validator("template_data")
    @classmethod
    def _template_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_template_data(value)

    @field_validator("message_id")
    @classmethod
    def _message_id(cls, value: str | None) -> str | None:
        return check_message_id(value)

    @model_validator(mode="after")
    def _complete(self) -> Message:
        if not (self.to or self.cc or self.bcc):
            raise MessageError("a message needs at least one recipient (to, cc or bcc)")
        if any(a.inline for a in self.attachments) and self.html is None:
            raise MessageError("inline attachments need an html body that refers to them")
        check_template_message(self)
        return self

    # -- derived values --------------------------------------------------------------

    def with_defaults(self, defaults: Mapping[str, Any] | MessageDefaults) -> Message:
        """Fill fields the caller left empty from the Mailer's defaults.

        Runs on every send, so it validates nothing itself: the defaults were validated
        once (``MessageDefaults``) and each field of this message when it was built, and
        filling an empty field cannot break a rule that spans fields (a default cc or bcc
        only adds recipients). What can, the merged headers' count, is checked here.
        Revalidating the whole copy cost about 20 us a send.
        """
        if not isinstance(defaults, MessageDefaults):
            defaults = MessageDefaults(defaults)
        updates: dict[str, Any] = {}
        for key, value in defaults.values.items():
            if key == "headers":
                merged = {**value, **self.headers}
                if merged != self.headers:
                    if len(merged) > MAX_HEADERS:
                        raise MessageError(
                            f"{len(merged)} headers with the Mailer's defaults; "
                            f"the limit is {MAX_HEADERS}"
                        )
                    updates["headers"] = merged
            elif key == "unsubscribe":  # False on the message says no, and wins
                if self.unsubscribe is None and value is not None:
                    updates[key] = value
            elif not is_set(self, key) and value:
                updates[key] = list(value) if isinstance(value, list) else value  # unshared
        if not updates:
            return self  # the common case, on every send: no copy, the rendering is kept
        # model_copy keeps __dict__'s message_id as it is: None while nobody has read it
        # (reading self.message_id here would fix the id before the sender is known).
        # A fresh private state: the original's rendering or signatures are not the copy's
        # (its spooled bodies are: they are field values).
        filled = _copy(self, updates)
        if filled.__dict__["message_id"] is None:
            # One id for both: whichever is read first fixes it, with the filled-in
            # sender's domain unless the caller already read the original's.
            cell = id_cell(self)
            if cell.domain is None and filled.sender is not None:
                cell.domain = filled.sender.domain
            filled.__pydantic_private__["_id_cell"] = cell  # type: ignore[index]
        return filled

    def without_recipients(self, drop: set[str] | frozenset[str]) -> Message:
        """This message without the envelope recipients in ``drop`` (their ``email``):
        taken out of to, cc and bcc (or of the envelope's recipients, when it has its
        own), with the same Message-ID. The suppression check sends the rest this way;
        like :meth:`with_defaults` it copies without revalidating, and the copy renders
        anew. At least one recipient must remain (the caller checks)."""
        updates: dict[str, Any] = {}
        if self.envelope is not None and self.envelope.recipients is not None:
            kept = [a for a in self.envelope.recipients if a.email not in drop]
            updates["envelope"] = self.envelope.model_copy(update={"recipients": kept})
        else:
            for key in ("to", "cc", "bcc"):
                current: list[Address] = getattr(self, key)
                kept = [a for a in current if a.email not in drop]
                if len(kept) != len(current):
                    updates[key] = kept
        if not updates:
            return self
        copy = _copy(self, updates)
        if copy.__dict__["message_id"] is None:
            copy.__pydantic_private__["_id_cell"] = id_cell(self)  # type: ignore[index]
        return copy

    @field_serializer("message_id")
    def _dump_message_id(self, value: str | None) -> str:
        return self.message_id  # type: ignore[return-value]  # made when first read

    @field_serializer("text", "html")
    def _dump_body(self, value: str | None, info: FieldSerializationInfo) -> str | None:
        # a spooled body is read for a dump (the dump holds it whole anyway)
        return value if value is not SPOOLED else getattr(self, info.field_name)

    def __getstate__(self) -> dict[Any, Any]:
        # a spooled body is pickled as its text: the field's placeholder is matched by
        # identity, which unpickling does not keep
        state: dict[Any, Any] = super().__getstate__()
        texts = {n: read_body(self, n) for n in BODIES if self.__dict__[n] is SPOOLED}
        if texts:
            state["__dict__"] = {**state["__dict__"], **texts}
        return state

    def __repr_args__(self) -> Any:
        # a spooled body shows as its file's summary, not read for a repr
        for name, value in super().__repr_args__():
            yield name, (body_of(self, name) if value is SPOOLED and name in BODIES else value)

    def with_content(self) -> Message:
        """A copy whose attachments hold their bytes: files given by path are read now.

        For storing a message (the outbox): what is sent later must not depend on a file
        that may change or vanish meanwhile. Returns the message itself when no attachment
        is given by path.
        """
        if all(a.path is None for a in self.attachments):
            return self
        attachments = [a.with_content() for a in self.attachments]
        data = self.model_dump(by_alias=False, exclude_defaults=True)
        data.update(attachments=attachments, message_id=self.message_id)
        return Message(**data)

    @property
    def envelope_sender(self) -> str:
        if self.envelope is not None and self.envelope.sender is not None:
            return self.envelope.sender.email
        if self.sender is None:
            raise MessageError("the message has no sender and the Mailer no default sender")
        return self.sender.email

    @property
    def smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part (EAI): SMTP needs SMTPUTF8.

        Such an address cannot be encoded (RFC 2047 covers display names, not addresses),
        so the headers carry it as UTF-8 (RFC 6532) and the server must offer SMTPUTF8.
        """
        if self.sender is not None and not self.sender.email.isascii():
            return True
        # plain loops: read on every send (the SMTP provider), where a tuple of all the
        # addresses and a generator over it cost twice as much (branch pool5)
        for addresses in (self.to, self.cc, self.bcc, self.reply_to):
            for a in addresses:
                if not a.email.isascii():
                    return True
        envelope = self.envelope
        if envelope is None:
            return False
        chosen = [*([envelope.sender] if envelope.sender else []), *(envelope.recipients or [])]
        return any(not a.email.isascii() for a in chosen)

    @property
    def envelope_recipients(self) -> list[str]:
        """Every recipient once, in order: to, then cc, then bcc (or the envelope's)."""
        seen: dict[str, None] = {}
        envelope = self.envelope
        chosen = envelope.recipients if envelope is not None else None
        for addr in chosen if chosen is not None else (*self.to, *self.cc, *self.bcc):
            seen.setdefault(addr.email, None)
        return list(seen)

    # -- rendering -------------------------------------------------------------------

    def as_bytes(self) -> bytes:
        """The RFC 5322 message (CRLF line endings, no Bcc header), rendered once.

        A message with large attachments (see :meth:`render`) is joined anew on every
        call and not kept: providers that can stream use :meth:`render` instead.
        """
        private = self.__pydantic_private__
        assert private is not None
        data = private["_rendered"]  # the hot path: one dict look-up once rendered
        if type(data) is bytes:
            return data
        rendered = self.render()
        return rendered if isinstance(rendered, bytes) else rendered.join()

    @property
    def rendered_size(self) -> int:
        """Length of :meth:`as_bytes` in bytes, without joining a streamed rendering."""
        rendered = self.render()
        return len(rendered) if isinstance(rendered, bytes) else rendered.size

    def render(self) -> bytes | _mime.Rendering:
        """Render and check once; the bytes, or a :class:`Rendering` to stream.

        Attachments of at least ``_mime.STREAM_THRESHOLD`` bytes (1 MiB) make a
        Rendering: the headers and small parts rendered and checked now, the large
        attachments base64-encoded chunk by chunk as they are sent (a file by path is
        read again on each attempt and must not have changed). Everything else, i.e.
        nearly every message, is plain bytes, as fast as before.
        """
        # The private-attribute dict directly: pydantic's __getattr__ for private
        # attributes costs more than the rest of this method, and it runs on every send.
        private = self.__pydantic_private__
        assert private is not None
        data: bytes | _mime.Rendering | None = private["_rendered"]
        return data if data is not None else render_once(self, [])

    async def render_async(self) -> bytes | _mime.Rendering:
        """:meth:`render`, without holding the event loop for a large text or HTML part.

        Such a part is streamed, but its transfer encoding and encoded size are found
        when the rendering is made: a pass over the text (two for quoted-printable),
        about 0.6 s for 50 MiB. Here that pass runs on the loop a slice at a time
        (:meth:`TextSource.made`), the loop's turn after each slice, and the rendering
        then takes the sources made. Not in a worker thread: the pass holds the GIL, and
        under load the loop then waits for the GIL and the CPU in turn (longer stalls:
        docs/design-notes.md). Every other message renders here, at once.
        """
        private = self.__pydantic_private__
        assert private is not None
        data: bytes | _mime.Rendering | None = private["_rendered"]
        if data is not None:
            return data
        limit = _mime.STREAM_THRESHOLD
        bodies = (body_of(self, "text"), body_of(self, "html"))
        large = [t for t in bodies if t is not None and len(t) >= limit]
        if not large or self.sender is None:  # (without a sender: the error, at once)
            return self.render()
        scanned = [await _mime.TextSource.made(text) for text in large]
        return render_once(self, scanned)

    def render_8bit(self) -> bytes | _mime.Rendering | None:
        """The rendering for a server that takes 8-bit data (8BITMIME, or SMTPUTF8): an
        attached message with 8-bit content as it is, not re-encoded; None when the
        message has none (then :meth:`render` is the only rendering).

        Made once, after :meth:`render` and with its Date and Message-ID, so both
        renderings are the same message. Re-encoding an attached message changes its
        bytes (and breaks its own DKIM signature); a server that offers 8BITMIME gets
        it untouched. Only the SMTP provider asks for it.
        """
        return render_8bit(self)


#: a Message's private state as built (every private attribute's default is None, so a
#: shallow copy is a fresh state: tests/core/test_message.py holds that). Copied rather
#: than asking pydantic for each default: with_defaults does it on every send, and the
#: six ``get_default()`` calls cost several microseconds there.
_PRIVATE_DEFAULTS: dict[str, Any] = {
    name: attr.get_default() for name, attr in Message.__private_attributes__.items()
}


def _init_private(self: Message, context: Any, /) -> None:
    """``Message.model_post_init``: the private state as pydantic's own
    ``init_private_attributes`` makes it (a state already there is kept), from
    ``_PRIVATE_DEFAULTS`` rather than a ``get_default()`` per attribute: seven calls, ~2.5 us
    of every ``Message(...)``. Installed below, after the class is made: defined in the
    class, pydantic would wrap it with its own initializer, which would run first.
    pydantic-core calls the post-init method by name, so the attribute set here is the one
    validation runs (tests/core/test_message.py holds that)."""
    if self.__pydantic_private__ is None:
        object.__setattr__(self, "__pydantic_private__", _PRIVATE_DEFAULTS.copy())


def is_rendered(message: Message) -> bool:
    """Whether ``message`` has been rendered: then its ``render_async()`` has nothing to
    do. The send path renders once in the Mailer, and a group and its leaf each check
    again before any I/O; asking here spares them a coroutine made and awaited for
    nothing (twice a send)."""
    private = message.__pydantic_private__
    assert private is not None
    return private["_rendered"] is not None


def fresh_private() -> dict[str, Any]:
    """A new Message private state (``__pydantic_private__``), as a new Message has."""
    return _PRIVATE_DEFAULTS.copy()


def _copy(message: Message, updates: dict[str, Any]) -> Message:
    """``message.model_copy(update=updates)`` with a new private state (nothing rendered,
    ``message``'s spooled bodies kept), made directly: the same four attributes pydantic's
    ``__copy__`` sets, without its copy of the private state that would be replaced at once
    and without ``BaseModel.__setattr__`` to replace it (~1.5 us of every ``with_defaults``
    that fills a field). ``extra="forbid"``: no extra values to copy (None)."""
    own = message.__pydantic_private__
    assert own is not None
    private = _PRIVATE_DEFAULTS.copy()
    private["_spooled"] = own["_spooled"]
    cls = type(message)
    copy = cls.__new__(cls)
    setattr_ = object.__setattr__
    setattr_(copy, "__dict__", {**message.__dict__, **updates})
    setattr_(copy, "__pydantic_extra__", message.__pydantic_extra__)
    setattr_(copy, "__pydantic_fields_set__", message.__pydantic_fields_set__ | updates.keys())
    setattr_(copy, "__pydantic_private__", private)
    return copy


class MessageDefaults:
    """A Mailer's ``defaults``, validated once when the Mailer is made.

    Validated as a message would validate them (a probe message carries them), so a bad
    default is a ConfigError at start-up, not a MessageError on every send, and
    ``Message.with_defaults`` can fill fields without validating again.
    """

    __slots__ = ("values",)

    _PROBE_RECIPIENT = "probe@example.invalid"

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        raw = dict(defaults)
        if "from" in raw:
            raw["sender"] = raw.pop("from")
        probe = Message(**{"to": [self._PROBE_RECIPIENT], **raw})
        #: field name -> validated value (Address, list[Address], dict, list)
        self.values: dict[str, Any] = {key: getattr(probe, key) for key in raw}

    @classmethod
    def made(cls, values: dict[str, Any]) -> MessageDefaults:
        """Values the library made from checked parts (the unsubscribe headers), used
        without the probe message: validating them again on every send cost ~0.3 ms."""
        made = cls.__new__(cls)
        made.values = values
        return made


# Data descriptors that take precedence over pydantic's instance ``__dict__`` (see their
# modules): the Message-ID made on first read, and the bodies that may be spooled.
type.__setattr__(Message, "message_id", MessageId())
type.__setattr__(Message, "model_post_init", _init_private)
for _name in BODIES:
    type.__setattr__(Message, _name, Body(_name))
