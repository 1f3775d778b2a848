"""Every error class of ours round-trips through pickle with its fields (issue 24): a
Celery or RQ result, a multiprocessing pool or a process pool carries it to another
process. Exception's own pickling calls ``cls(*args)``, which the classes with
keyword-only fields (``refused``, ``suppressed``, ``errors``) cannot take."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import mailer
import mailer._errors as errors_module
import mailer._routing.leaf
import mailer._unsubscribe.token
import mailer.providers._smtp.connection
from mailer import Message
from mailer._errors import (
    AllProvidersFailed,
    DeliveryError,
    MailerError,
    RateLimited,
    RecipientsDeferred,
    RecipientsRefused,
    RecipientsSuppressed,
)
from mailer._result import Attempt

MESSAGE = Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t")
# Its Message-ID is made when first read; a message that was tried has read it.
assert MESSAGE.message_id


def trip(error: BaseException, protocol: int = pickle.DEFAULT_PROTOCOL) -> Any:
    """``error`` through pickle and back (our own bytes: S301 does not apply)."""
    return pickle.loads(pickle.dumps(error, protocol=protocol))  # noqa: S301


def every_error_class() -> list[type[MailerError]]:
    """MailerError and every subclass defined by the library (the modules defining
    the private ones are imported above)."""
    found: list[type[MailerError]] = []
    todo: list[type[MailerError]] = [MailerError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("mailer") and cls not in found:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def sample(cls: type[MailerError]) -> MailerError:
    """An instance of ``cls`` with every field set away from its default."""
    if not issubclass(cls, DeliveryError):
        return cls("bad config: port 0")
    common: dict[str, Any] = {
        "provider": "p1", "code": 451, "response": "4.7.0 try later",
        "retry_here": False, "timed_out": True, "no_verdict": True,
    }  # fmt: skip
    error: DeliveryError
    if issubclass(cls, AllProvidersFailed):
        inner = RecipientsRefused("refused", refused={"b@example.org": "550 no"}, **common)
        error = cls({"p1": inner, "p2": RateLimited("slow", retry_after=2.5)}, message=MESSAGE)
    elif issubclass(cls, RateLimited):
        error = cls("slow down", retry_after=30.0, **common)
    elif issubclass(cls, RecipientsDeferred | RecipientsRefused):
        error = cls("refused", refused={"b@example.org": "450 later"}, **common)
    elif issubclass(cls, RecipientsSuppressed):
        error = cls("suppressed", suppressed={"b@example.org": "bounced:hard"}, **common)
    else:
        error = cls("it failed", **common)
    error.attempts = [Attempt(provider="p1", outcome=cls.__name__, duration=0.25,
                              error="it failed", code=451, committed=False)]  # fmt: skip
    return error


def fields(error: BaseException) -> dict[str, Any]:
    """What an error says: its class, args, str, repr and attributes (nested errors by
    their own fields; the message by its JSON)."""
    out: dict[str, Any] = {"class": type(error), "args": error.args, "str": str(error),
                           "repr": repr(error)}  # fmt: skip
    for name, value in vars(error).items():
        if isinstance(value, dict) and any(isinstance(v, BaseException) for v in value.values()):
            value = {k: fields(v) for k, v in value.items()}
        elif isinstance(value, Message):
            value = value.model_dump_json()
        out[name] = value
    return out


def test_the_walk_finds_the_tree() -> None:
    found = set(every_error_class())
    public = {getattr(errors_module, n) for n in errors_module.__all__ if n[0].isupper()}
    assert public <= found
    assert mailer.providers._smtp.connection.ConnectionStale in found
    assert mailer._unsubscribe.token.InvalidToken in found
    assert mailer._routing.leaf._NotTried in found


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__qualname__)
def test_round_trip_keeps_every_field(cls: type[MailerError]) -> None:
    error = sample(cls)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        back = trip(error, protocol)
        assert type(back) is cls
        assert fields(back) == fields(error)


def test_all_providers_failed_keeps_its_verdicts() -> None:
    """The derived judgements hold after the trip: what the outbox and a task result's
    reader decide from (possibly delivered, failover) and the nested errors' fields."""
    from mailer._errors import DeliveryUncertain

    uncertain = AllProvidersFailed({"a": DeliveryUncertain("no reply after '.'", provider="a")})
    back = trip(uncertain)
    assert back.possibly_delivered and not back.failover
    refused = trip(sample(AllProvidersFailed))
    assert isinstance(refused, AllProvidersFailed)
    assert not refused.possibly_delivered and refused.failover
    assert refused.errors["p1"].refused == {"b@example.org": "550 no"}
    assert isinstance(refused.errors["p2"], RateLimited)
    assert refused.errors["p2"].retry_after == 2.5
    assert refused.message == MESSAGE


def test_a_subclass_defaults_stay_class_level() -> None:
    """An attribute left to its class default is not copied into the pickle, so the
    unpickled error still follows the class (as the original did)."""
    error = RateLimited("slow", retry_after=1.0)
    back = trip(error)
    assert "failover" not in vars(back) and back.failover is True
    assert "retry_here" not in vars(back)
