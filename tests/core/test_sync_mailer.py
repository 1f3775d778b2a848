"""SyncMailer never strands a caller: bounded sends, close() that tells everyone, a clear
error inside an event loop, from_config. (Real SMTP servers, fork and close under load:
tests/smtp/test_sync.py.)"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from mailer import (
    ConfigError,
    DeliveryUncertain,
    Mailer,
    MailerError,
    Message,
    SyncMailer,
    TransientError,
)
from mailer._sync import CLOSE_TIMEOUT, SEND_GRACE
from mailer.providers._memory import MemoryConfig, MemoryProvider

# Scheduling slack on a loaded 2-core machine; the bounds themselves are what is tested.
SLACK = 1.5


def msg(subject: str = "s") -> Message:
    return Message(sender="a@example.com", to=["b@example.org"], subject=subject, text="x")


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds a provider that blocks the loop thread; opened at the end of the test."""
    event = threading.Event()
    yield event
    event.set()


def test_from_config_takes_what_mailer_from_config_takes(tmp_path: Path) -> None:
    ours = inspect.signature(SyncMailer.from_config).parameters
    theirs = inspect.signature(Mailer.from_config).parameters
    assert list(ours) == list(theirs)
    assert [p.kind for p in ours.values()] == [p.kind for p in theirs.values()]
    config = tmp_path / "mailer.toml"
    config.write_text('send_timeout = 7\n[[providers]]\ntype = "memory"\nname = "mem"\n')
    with SyncMailer.from_config(config) as sm:
        assert sm.mailer.send_timeout == 7
        assert sm.send(msg()).provider == "mem"
    with SyncMailer.from_config({"providers": [{"type": "memory"}]}, send_timeout=3) as sm:
        assert sm.mailer.send_timeout == 3
        assert sm.send(msg()).provider == "memory"


def test_a_factory_builds_the_mailer() -> None:
    provider = MemoryProvider("m")
    with SyncMailer(lambda: Mailer([provider])) as sm:
        sm.send(msg())
    assert provider.calls == 1 and provider.closed


def test_options_with_a_built_mailer_are_refused() -> None:
    with pytest.raises(ConfigError, match="not to a built Mailer"):
        SyncMailer(Mailer([MemoryProvider("m")]), send_timeout=5)
    with pytest.raises(ConfigError, match="not a Mailer"):
        SyncMailer(lambda: "nope")  # type: ignore[arg-type, return-value]


def test_send_after_close_raises_mailer_error_and_sends_nothing() -> None:
    provider = MemoryProvider("m")
    sm = SyncMailer(Mailer([provider]))
    sm.send(msg())
    sm.close()
    sm.close()  # idempotent
    with pytest.raises(MailerError, match="closed") as info:
        sm.send(msg())
    assert not isinstance(info.value, TransientError)  # a usage error, not a delivery one
    assert provider.calls == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_inside_a_running_event_loop_raises_instead_of_freezing_it(
    anyio_backend: str,
) -> None:
    provider = MemoryProvider("m")
    sm = SyncMailer(Mailer([provider]))
    with pytest.raises(MailerError, match=r"await mailer\.send\(message\)") as info:
        sm.send(msg())
    assert f"running {anyio_backend} event loop" in str(info.value)
    with pytest.raises(MailerError, match=r"await mailer\.verify"):
        sm.verify()
    with pytest.raises(MailerError, match=r"await mailer\.aclose"):
        sm.close()
    assert provider.calls == 0
    # from a worker thread, as the error suggests, it works
    result = await anyio.to_thread.run_sync(sm.send, msg())
    assert result.provider == "m"
    await anyio.to_thread.run_sync(sm.close)


def test_every_send_ends_within_send_timeout_plus_grace_whatever_the_loop_does(
    gate: threading.Event,
) -> None:
    """A provider that blocks the loop thread (a plugin calling time.sleep, say): the
    caller whose send is under way is told it may have been delivered; one whose send
    never began is told, truthfully, that nothing was sent."""
    provider = MemoryProvider("m")
    provider.script(lambda m: gate.wait(30) and None)
    sm = SyncMailer(Mailer([provider], send_timeout=0.5))
    bound = 0.5 + SEND_GRACE + SLACK
    outcomes: dict[str, BaseException | None] = {}
    took: dict[str, float] = {}

    def send(name: str) -> None:
        began = time.monotonic()
        try:
            sm.send(msg(name))
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc
        took[name] = time.monotonic() - began

    first = threading.Thread(target=send, args=("first",))
    first.start()
    deadline = time.monotonic() + 5
    while provider.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert provider.calls == 1  # the loop thread is now blocked in the provider
    second = threading.Thread(target=send, args=("second",))
    second.start()
    first.join(bound + 5)
    second.join(bound + 5)
    assert not first.is_alive() and not second.is_alive()
    assert took["first"] < bound and took["second"] < bound
    assert isinstance(outcomes["first"], DeliveryUncertain)
    assert isinstance(outcomes["second"], TransientError)
    assert "not sent" in str(outcomes["second"])
    gate.set()  # the loop comes back: the abandoned send must not start
    time.sleep(0.3)
    assert provider.calls == 1
    sm.close(timeout=1)


def test_close_lets_sends_finish_then_cuts_the_rest_telling_each_caller() -> None:
    fast = MemoryProvider("m")
    sm = SyncMailer(
        Mailer([fast], retry={"attempts": 3, "backoff": 30, "max_backoff": 30}, send_timeout=60)
    )
    # one send that finishes within close's timeout, one stuck in a 30 s retry backoff
    # after a transient failure: nothing of it was delivered, and its caller is told so
    fast.script("ok", "transient")
    with ThreadPoolExecutor(2) as pool:
        done = pool.submit(sm.send, msg("done"))
        assert done.result(5).provider == "m"
        cut = pool.submit(sm.send, msg("cut"))
        deadline = time.monotonic() + 5
        while fast.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        began = time.monotonic()
        sm.close(timeout=0.3)
        closed_in = time.monotonic() - began
        with pytest.raises(TransientError, match=r"not sent: SyncMailer\.close"):
            cut.result(5)
    assert closed_in < 0.3 + SEND_GRACE + SLACK
    assert fast.calls == 2 and len(fast.messages) == 1


def _cut_by_close(provider: MemoryProvider) -> BaseException:
    """Start one send, close(timeout=0.2) while it is under way, return what it was told."""
    sm = SyncMailer(Mailer([provider], retry={"attempts": 1}))
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sm.send(msg())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 5
    while provider.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    began = time.monotonic()
    sm.close(timeout=0.2)
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - began < 0.2 + SEND_GRACE + SLACK
    assert len(errors) == 1
    return errors[0]


def test_close_cuts_a_send_before_its_commit_point_as_not_sent() -> None:
    slow = MemoryProvider("slow", MemoryConfig(latency=30))  # the wait is before the commit
    told = _cut_by_close(slow)
    assert type(told) is TransientError and "not sent" in str(told)
    assert slow.messages == []


def test_close_cuts_a_send_past_its_commit_point_as_uncertain() -> None:
    stalled = MemoryProvider("stalled", MemoryConfig(outcomes=["stall"]))  # taken, no answer
    told = _cut_by_close(stalled)
    assert isinstance(told, DeliveryUncertain)
    assert len(stalled.messages) == 1  # it was in fact delivered: "not sent" would be a lie


def test_close_default_timeout_is_documented() -> None:
    default: Any = inspect.signature(SyncMailer.close).parameters["timeout"].default
    assert default == CLOSE_TIMEOUT == 10.0
    assert "CLOSE_TIMEOUT" in (SyncMailer.close.__doc__ or "")


def test_send_to_named_providers_only() -> None:
    a = MemoryProvider("a", MemoryConfig())
    b = MemoryProvider("b", MemoryConfig())
    with SyncMailer(Mailer([a, b])) as mailer:
        assert mailer.send(msg(), providers=["b"]).provider == "b"
    assert a.calls == 0 and b.calls == 1
