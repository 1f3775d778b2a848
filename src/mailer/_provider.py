"""The one interface every provider implements, built-in or plugin.

A template method, as in Symfony Mailer's transports: :meth:`Provider.send` does the
shared work (refuse an unsendable message before I/O, stamp the provider name on errors,
map anything unexpected to :class:`DeliveryUncertain`) and a subclass fills in one step,
:meth:`Provider._send`.

Why an unexpected exception becomes *uncertain* rather than transient: we cannot know
whether the provider had already accepted the message when its code blew up, and failing
over on a guess is how mail gets sent twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, Self, cast
from urllib.parse import SplitResult

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import TypeVar

from . import _entry_points
from ._attempt import commit_point, deadline_remaining
from ._errors import (
    AllProvidersFailed,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MailerError,
)
from ._message import Message
from ._message.model import is_rendered
from ._message.template import local_variant
from ._options import validation_text
from ._result import SendResult

__all__ = ["ConfigT", "Provider", "ProviderConfig", "RateLimit", "deadline_remaining"]


class RateLimit(BaseModel):
    """``rate_limit`` on a provider. Seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: int = Field(ge=1)
    per: float = Field(default=1.0, gt=0)
    #: slots that may be taken at once (default: ``messages``)
    burst: int | None = Field(default=None, ge=1)
    #: how long a send waits for its slot before going to the next provider
    max_wait: float | Literal["budget", "deadline"] = "budget"
    #: with a shared (Redis) store: at most this many free slots taken per round trip
    #: and spent locally (never more than a tenth of ``messages``; see :attr:`batch`)
    lease: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RateLimit:
        if isinstance(self.max_wait, float) and not (
            math.isfinite(self.max_wait) and self.max_wait >= 0
        ):
            raise ValueError("rate_limit.max_wait is 'budget', 'deadline' or seconds >= 0")
        return self

    @property
    def interval(self) -> float:
        """Seconds between two slots."""
        return self.per / self.messages

    @property
    def slots(self) -> int:
        return self.burst if self.burst is not None else self.messages

    @property
    def batch(self) -> int:
        """Slots one process takes from the shared store at once: ``lease``, at most a
        tenth of ``messages`` (1 under 20). Each process holds at most ``batch - 1``
        unspent, which bounds how far past the limit the slots' late use can go."""
        return max(1, min(self.lease, self.messages // 10))


class ProviderConfig(BaseModel):
    """Base for provider config models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: at most ``messages`` per ``per`` seconds through this provider (across processes
    #: with a shared health store); see mailer._routing.ratelimit
    rate_limit: RateLimit | None = None


class AsyncClosing:
    """``async with x:`` closes ``x`` on the way out (Mailer and Provider share this)."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


#: a provider's config model. Defaults to Any, so that ``class P(Provider)`` without a
#: parameter (a plugin written before configs were typed) still reads ``self.config.x``.
ConfigT = TypeVar("ConfigT", bound=BaseModel, default=Any)


class Provider(AsyncClosing, Generic[ConfigT]):
    """Base class for providers. Subclasses set ``Config`` and implement ``_send``.

    Generic over the config model, so that ``class SMTP(Provider[SMTPConfig])`` reads
    ``self.config`` as an SMTPConfig; ``Config`` names the same class at run time (a
    ClassVar cannot use the type parameter).

    Providers are async context managers; ``aclose()`` releases pooled connections.
    """

    Config: ClassVar[type[BaseModel]] = ProviderConfig
    #: True when a re-send after an uncertain outcome cannot duplicate (idempotency keys)
    idempotent: ClassVar[bool] = False
    #: how long the provider recognises a re-send as the same request (seconds; Resend's
    #: keys last 24 h). The outbox re-sends an uncertain message to an idempotent
    #: provider only within it; 0 with ``idempotent``: no limit is known, so it never does
    idempotency_window: ClassVar[float] = 0.0
    #: True when ``_send`` awaits :meth:`commit_point` before the step after which the
    #: message may have been accepted. Left False, the attempt counts as committed from
    #: its start: never abandoned for speed, and any interruption is DeliveryUncertain.
    reports_commit_point: ClassVar[bool] = False
    #: False for a group: its children pick a message's template variant, each for itself
    resolves_templates: ClassVar[bool] = True

    def __init__(self, name: str, config: ConfigT | None = None) -> None:
        self.name = name
        self.config: ConfigT = config if config is not None else cast(ConfigT, self.Config())

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any] | BaseModel | None = None) -> Self:
        """Validate ``config`` against ``cls.Config`` and build the provider.

        Validation errors become ConfigError without echoing input values, which may be
        secrets.
        """
        if isinstance(config, BaseModel):
            return cls(name, cast(ConfigT, config))
        try:
            validated = cast(ConfigT, cls.Config.model_validate(dict(config or {})))
        except ValidationError as exc:
            error = ConfigError(validation_text(f"config for provider {name!r}", exc, cls.Config))
        else:
            return cls(name, validated)
        # Raised outside the except block so that the pydantic error, which holds the
        # input values (secrets among them), is not kept as __context__.
        raise error

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """Turn a DSN (``type://...``) into this provider's config mapping.

        ``params`` holds the query parameters that are not Mailer routing options
        (priority, weight, name). Providers that accept URLs override this.
        """
        raise ConfigError(f"provider type {url.scheme!r} cannot be configured from a URL")

    # -- the interface -----------------------------------------------------------------

    async def send(self, message: Message) -> SendResult:
        """Send one message; raise a DeliveryError subclass when it was not delivered."""
        if (
            message.template is not None
            and self.resolves_templates
            and self.template_id(message.template) is None
        ):
            message = local_variant(message, self.name)  # rendered once, by the Mailer
        if (message.template is None or self.resolves_templates) and not is_rendered(message):
            # render (and check) before any I/O; cached on the message. A group leaves a
            # template message to its leaves: each renders what it sends (a large text
            # or HTML part a slice at a time, the loop's turn between slices)
            await message.render_async()
        message.envelope_sender  # noqa: B018 - raises MessageError when there is none
        try:
            result = await self._send(message)
        except AllProvidersFailed:
            raise  # a group's: about several providers, not this one
        except DeliveryError as exc:
            if exc.provider is None:
                exc.provider = self.name
            raise
        except MailerError:
            raise
        except Exception as exc:
            raise DeliveryUncertain(
                f"unexpected {type(exc).__name__} in provider: {exc}", provider=self.name
            ) from exc
        return result

    async def _send(self, message: Message) -> SendResult:
        raise NotImplementedError

    # -- templates ------------------------------------------------------------------------

    def template_id(self, name: str) -> str | None:
        """This provider's stored template for ``name``, None when it has none (then the
        message's locally rendered variant is sent). Only API providers have any."""
        return None

    # -- per-message options ------------------------------------------------------------

    def options_for(self, message: Message) -> dict[str, Any] | None:
        """This provider's share of ``message.provider_options``: the entry for its type,
        then the entry for its name deep-merged over it (the name is more specific).
        None when the message has none for it."""
        found: dict[str, Any] | None = None
        for key, options in message.provider_options.items():
            if key != self.name and not _is_type_of(key, type(self)):
                continue
            if key == self.name:
                found = deep_merge(found or {}, options)
            else:
                found = deep_merge(options, found or {})
        return found

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse per-message options this provider cannot apply, with a MessageError,
        before any I/O (the Mailer calls it for every provider a message names). The
        default takes any: HTTP providers merge them into the request body."""

    async def commit_point(self) -> None:
        """Await right before crossing the commit point (see ``reports_commit_point``).

        SMTP: before the end of the data is written; HTTP: before the request body is
        sent. Raises TransientError if the attempt was abandoned meanwhile (out of its
        pre-commit budget, or released because another send found this provider down):
        then do not cross.
        """
        await commit_point()

    @property
    def attempts_timeout(self) -> float | None:
        """Seconds that one send's tries on this provider share: the first try and its
        same-provider retries (``retry.attempts``) together, after which the send moves
        on (or, uncertain, ends). None: only the send's own deadline bounds them.

        Without it an idempotent provider's retry after a timeout waited the whole
        timeout again: a Resend API that took the body and never answered cost one send
        20.2 s with the defaults, two 10 s waits (issue 21, item 19). HTTP providers
        return their ``timeout``: "10 s at this API", whatever the retries.
        """
        return None

    @property
    def concurrency(self) -> int | None:
        """How many sends this provider carries at once (its connection slots), or None
        when it does not bound them. The Mailer sizes its admission gate from it
        (mailer/_routing/admission.py): sends past a few per slot wait there, cheaply,
        rather than each building its attempt only to queue for a slot."""
        return None

    def time_left(self, timeout: float | None) -> float | None:
        """``timeout`` (one step's own) cut to what is left of the attempt: its pre-commit
        budget before :meth:`commit_point`, the send's deadline after it. Unchanged when
        the provider is used on its own."""
        return deadline_remaining(timeout)

    async def verify(self) -> None:
        """Check connectivity and credentials without sending; raise DeliveryError if not."""

    async def aclose(self) -> None:
        """Release connections. Safe to call more than once."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


def _is_type_of(key: str, cls: type[Provider]) -> bool:
    """Whether ``key`` is a provider type name (an entry point) that loads ``cls`` or a base
    of it. Asked of the entry points, not of ``_plugins``, which builds on this module."""
    try:
        target = _entry_points.load(key)
    except Exception:  # not a type name, or one that fails to load: not ours either way
        return False
    return isinstance(target, type) and issubclass(target, Provider) and issubclass(cls, target)
