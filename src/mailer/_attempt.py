"""One attempt at one provider: its deadline, its pre-commit budget, its commit point.

The layer between routing and the providers. Routing opens an :class:`AttemptContext`
for each try at a provider and reads it afterwards; the provider, while it runs, reaches
the same object through :func:`current_attempt` and talks to it through four calls:
:meth:`~AttemptContext.timeout` (how long this step may take), :meth:`~AttemptContext.commit`
(about to cross the commit point), :meth:`~AttemptContext.progress` (a reply in a long
envelope) and :meth:`~AttemptContext.queued` (time spent waiting for a free connection).
Neither side reads the other's state: this module imports neither routing nor providers,
and both import it. A provider used on its own (outside a group) sees a detached context
that has no deadline and whose calls do nothing, so it never has to test for None.

Every attempt has a moment after which the provider may have accepted the message: for
SMTP the end of the data (the final ``.``), for an HTTP API the request body. Before it,
abandoning the attempt is always safe, because nothing can have been delivered; after it,
the outcome is a success, a classified error, or :class:`~mailer.DeliveryUncertain`.

A provider marks the moment by awaiting :func:`commit_point` (plugins:
``await self.commit_point()``) just *before* it crosses it, and says that it does so with
``reports_commit_point = True``. A provider that says nothing is treated as committed from
its first instruction: the safe default, since we cannot know when it sent anything.

What the commit point buys:

* **The pre-commit budget.** Until the commit point, an attempt runs under a short
  budget (pool wait, connect, TLS, greeting, EHLO, AUTH, MAIL, RCPT, DATA all count). A
  provider that hangs is abandoned when the budget runs out, as a TransientError, and the
  send moves on. At the commit point the budget is lifted: from then on only the send's
  own deadline applies, because abandoning a send that may have been accepted is how mail
  is lost track of.
* **Release.** When another send finds the provider down (its breaker opens), every
  attempt still before its commit point on that provider is cancelled at once and moves
  to the next provider, instead of waiting out its own timeout.
* **Hooks.** Callers (the outbox) can record, durably, that an attempt is about to cross
  the commit point, before it does: a worker killed after that record left a message that
  may have been delivered, one killed before it did not.

**Early start.** A durable record takes a database round trip, and a provider that waits
for it at the commit point holds its connection idle meanwhile (SMTP: between DATA's 354
and the payload). So a provider may call :meth:`AttemptContext.prepare` when it starts
the exchange that leads to its commit point (SMTP: as the attempt starts, before the
pool wait and MAIL, RCPT and DATA): a hook with a ``prepare()`` method
(:class:`PreparedHook`) starts its write then, and the hook itself, awaited at the
commit point as before, only waits for that write to be done. The guarantee is
unchanged: nothing crosses before the record is durable. What changes is the hook's
side: its record may now exist for an attempt that never reached the commit point, and
it must be harmless there (the outbox's is: see :mod:`mailer._outbox._commit`).

**One deadline.** The send's deadline is held here, by the attempt, and nowhere else a
provider can see: :meth:`AttemptContext.limit` is the one answer to "until when may I
wait", the budget's end before the commit point and the send's deadline after it.

Concurrency style: anyio for the scope (the core runs on asyncio and trio). On asyncio
one loop timer per attempt holds both its ends, the budget's and the deadline's backstop
(see :meth:`AttemptContext.arm`): the scope has no deadline of its own. Under trio the
scope's deadline does it.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from . import _clock, _looplag
from ._backend import current_async_library
from ._errors import TransientError

__all__ = [
    "AttemptContext",
    "CommitHook",
    "PreparedHook",
    "ReadyHook",
    "Tries",
    "attached",
    "commit_hooks",
    "commit_point",
    "current_attempt",
    "deadline_remaining",
    "loop_time",
]

CommitHook = Callable[[], Awaitable[None]]


class PreparedHook(Protocol):
    """A commit hook that can start its work before the commit point (see the module).

    ``prepare()`` is called, at most once per attempt and without awaiting, when the
    provider starts the exchange that leads to its commit point; it must not block (it
    starts a task). The hook is still awaited at the commit point, and only then may the
    attempt cross. An attempt may be prepared and then fail, or be abandoned, before its
    commit point: whatever ``prepare()`` started must be harmless then.
    """

    def __call__(self) -> Awaitable[None]: ...

    def prepare(self) -> None: ...


class ReadyHook(Protocol):
    """A commit hook that can often answer without waiting (see :meth:`AttemptContext.commit`).

    ``ready()`` is called at the commit point first: True means the hook's work is done
    and the attempt may cross (the hook is then not awaited); False, that it must be
    awaited; an exception refuses the crossing, as the awaited hook would. It must not
    block.
    """

    def __call__(self) -> Awaitable[None]: ...

    def ready(self) -> bool: ...


@dataclass(eq=False, slots=True)
class AttemptContext:
    """One try at one provider: what routing sets up and the provider reports into."""

    provider: str
    #: the send's deadline (:func:`mailer._clock.now`), or None without one
    deadline: float | None = None
    #: when the pre-commit budget runs out (:func:`mailer._clock.now`), or None without one
    budget_deadline: float | None = None
    #: the scope the attempt runs in; cancelled when the budget runs out or on release
    scope: anyio.CancelScope | None = None
    #: the scope's deadline once the commit point is crossed (the send's deadline + grace)
    lift_to: float = math.inf
    committed: bool = False
    #: the provider announced its commit point is coming (:meth:`prepare`)
    prepared: bool = False
    #: set when another send's verdict cancelled this attempt before its commit point
    released: bool = False
    hooks: Sequence[CommitHook] = ()
    started: float = field(default_factory=_clock.now)
    #: seconds from the start to the commit point, once crossed (feeds the adaptive budget)
    setup_time: float | None = None
    #: seconds spent queued behind this process's own sends (a busy pool): not set-up
    #: time, so not fed to the adaptive budget, which would learn queueing as slowness
    waited: float = 0.0
    #: the budget's length, and how much later than it the scope fires (the provider's
    #: own, more precise timeout errors come first)
    budget: float | None = None
    grace: float = 0.0
    #: the send's deadline, when ``deadline`` is a sooner one of the provider's (its
    #: tries share its own timeout: routing/leaf.py): time queued behind this process's
    #: own sends moves ``deadline`` on, up to here, as queueing is not the provider
    cap: float | None = None
    #: the attempt's timer (asyncio): cancels the scope when the budget runs out before
    #: the commit point, or at ``lift_to`` (the deadline's backstop) whichever comes first
    _timer: asyncio.TimerHandle | None = None
    #: the timer holds the deadline too (opened on asyncio): the scope has none of its own
    _looped: bool = False
    #: the event loop's lag monitor, when the budget does not count the loop's own lag
    #: (:mod:`mailer._looplag`; None under trio, without a budget, or when told to count it)
    lag: _looplag.LoopLag | None = None
    #: the monitor's reading when the budget's end was last set or moved on by the lag
    _lag_at: float = 0.0
    #: seconds the budget's end was moved on because the loop was held up
    lagged: float = 0.0

    @classmethod
    def open(
        cls,
        provider: str,
        *,
        deadline: float,
        started: float,
        grace: float,
        budget: float | None,
        cap: float | None = None,
        loop_lag: bool = True,
    ) -> AttemptContext:
        """An attempt that starts at ``started`` (:func:`mailer._clock.now`) under the
        send's ``deadline``, in a scope that fires ``grace`` after it (the backstop: the
        provider's own cut timeouts fail first, and more precisely). ``budget``: the
        pre-commit budget, or None for a provider that does not report its commit point
        (then it counts as committed from the start, and only the deadline applies).
        ``cap``: the send's deadline when ``deadline`` is the provider's sooner one.
        ``loop_lag``: time the event loop was held up does not count against the budget
        (:meth:`catch_up`); False counts wall time."""
        loop = asyncio._get_running_loop()
        base = loop.time() if loop is not None else anyio.current_time()
        lift_to = base + (deadline - started) + grace
        state = cls(provider, deadline=deadline, started=started, lift_to=lift_to, cap=cap)
        if loop is not None:
            # The deadline on the attempt's own loop timer (arm()), not the scope's: a
            # scope with a deadline costs 8.4 us a send against 3.7 us without one.
            state.scope = _asyncio_scope()
            state._looped = True
        else:
            state.scope = anyio.CancelScope(deadline=lift_to)
        if budget is not None:
            state.budget_deadline = started + budget
            state.budget, state.grace = budget, min(0.25, budget * 0.1)
            if loop_lag and loop is not None:
                lag = state.lag = _looplag.monitor(loop)
                assert lag is not None
                state._lag_at = lag.read(budget + state.grace)
            state.arm(base + budget + state.grace)
        elif loop is not None:
            state.arm(lift_to)
        return state

    @property
    def reported(self) -> bool | None:
        """Whether it crossed its commit point, as recorded: None when its provider
        does not report one (it counted as committed from the start)."""
        return self.committed if self.budget_deadline is not None else None

    # -- what the provider calls ---------------------------------------------------------

    def limit(self) -> float | None:
        """The deadline that applies now: the budget's before the commit point (moved
        on by the time the event loop was held up: :meth:`catch_up`)."""
        if not self.committed and self.budget_deadline is not None:
            lag = self.lag
            if lag is not None and lag.stalled > self._lag_at:
                # the heartbeat recorded a stall since: two reads and a compare on the hot
                # path; a stall still under way is caught up where a timer fires
                self.catch_up()
            if self.deadline is None:
                return self.budget_deadline
            return min(self.budget_deadline, self.deadline)
        return self.deadline

    def timeout(self, configured: float | None) -> float | None:
        """``configured`` (a step's own timeout) shortened to what is left of
        :meth:`limit`; never below a millisecond, so that a step fails with its own
        precise error rather than not starting."""
        deadline = self.limit()
        if deadline is None:
            return configured
        left = max(deadline - _clock.now(), 0.001)
        return left if configured is None else min(configured, left)

    def limited_by(self) -> str:
        """What :meth:`timeout` is cutting short, for the provider's error text."""
        budget = self.budget_deadline
        if (
            not self.committed
            and budget is not None
            and (self.deadline is None or budget < self.deadline)
        ):
            return "the pre-commit budget"
        return "the send deadline"

    def progress(self) -> None:
        """The provider got an answer in a long envelope (MAIL, each RCPT): the budget
        starts again from now. A hang is still caught within one budget of the last
        answer; 10,000 recipients to a server 50 ms away are not mistaken for one."""
        if self.committed or self.budget is None:
            return
        self.budget_deadline = _clock.now() + self.budget
        lag = self.lag
        if lag is not None:  # the lag recorded so far is behind the budget's new start
            self._lag_at = lag.stalled
        # The asyncio timer checks budget_deadline when it fires and re-arms itself if it
        # moved (one timer per attempt, not one per RCPT answer); trio's scope is moved.
        scope = self.scope
        if self._timer is None and scope is not None and not scope.cancel_called:
            self.arm(loop_time() + self.budget + self.grace)

    def catch_up(self) -> float:
        """Move the pre-commit budget's end on by the time the event loop was held up
        since it was last set or moved (the lag, :mod:`mailer._looplag`): a reply that
        arrived in time but waited in the socket for a busy loop is not the provider's
        slowness. Returns the seconds added (0 when the loop kept up, after the commit
        point, or without a monitor). Called by :meth:`limit` (so every step's timeout
        includes what the heartbeat has recorded) and when a timer fires (the budget's,
        :meth:`extend`: a stall still under way counts there too); never moves past the
        send's deadline, which :meth:`limit` and the scope still hold."""
        lag = self.lag
        if lag is None or self.committed or self.budget_deadline is None:
            return 0.0
        budget = self.budget or 0.0
        now = lag.read(budget + self.grace)
        extra = now - self._lag_at
        if extra <= 0.0:
            return 0.0
        self._lag_at = now
        self.budget_deadline += extra
        self.lagged += extra
        return extra

    def extend(self) -> bool:
        """A step's own timer, cut short by the budget, fired: whether the budget's end
        has moved on since (the loop's lag: :meth:`catch_up`, here or when the budget's
        timer fired first), so that the step should wait again with :meth:`timeout`
        instead of failing. A provider calls it only on that timeout's path, and waits
        again only where that is safe (a read whose reply is still owed; a set-up step
        started over: nothing was sent)."""
        if self.lag is None or self.committed:
            return False
        self.catch_up()  # a stall still under way included
        deadline = self.limit()
        return (
            deadline is not None
            and deadline == self.budget_deadline
            and deadline - _clock.now() > 0.001
        )

    def queued(self, seconds: float) -> None:
        """The provider waited ``seconds`` for a free connection of its own."""
        self.waited += seconds
        if self.cap is not None and self.deadline is not None and self.deadline < self.cap:
            moved = min(self.deadline + seconds, self.cap) - self.deadline
            self.deadline += moved
            old, self.lift_to = self.lift_to, self.lift_to + moved
            scope = self.scope
            if scope is not None and scope.deadline == old:
                scope.deadline = self.lift_to  # else trio's budget: disarm() lifts it

    def prepare(self) -> None:
        """The exchange that leads to the commit point starts now (SMTP: MAIL goes out):
        hooks that can (:class:`PreparedHook`) start their work, to be awaited at the
        commit point. Does nothing the second time, after the commit point, or without
        such hooks; never blocks."""
        if self.prepared or self.committed:
            return
        self.prepared = True
        for hook in self.hooks:
            start = getattr(hook, "prepare", None)  # a PreparedHook (no isinstance: slow)
            if start is not None:
                start()

    async def commit(self) -> None:
        """About to cross the commit point: run the hooks, then lift the budget.

        Raises TransientError when the attempt was abandoned meanwhile (its budget ran
        out, or another send released it): the caller must then not cross.
        """
        if self.committed:
            return
        for hook in self.hooks:
            # A hook already done (a ReadyHook; no isinstance: slow) needs no shielded
            # scope and no await: one scope fewer a send at the outbox's commit point.
            ready = getattr(hook, "ready", None)
            if ready is not None and ready():
                continue
            with anyio.CancelScope(shield=True):
                await hook()
        scope = self.scope
        if scope is not None and scope.cancel_called:
            # Abandoned while the hooks ran, or just before: do not cross. Raised rather
            # than left to the next checkpoint, because the crossing itself may not await.
            why = "released" if self.released else "out of budget"
            raise TransientError(f"attempt abandoned before its commit point ({why})")
        self.committed = True
        # Neither time queued behind our own sends nor time the loop was held up is the
        # provider's set-up time; a sample that is all our own delay teaches nothing.
        setup = _clock.now() - self.started - self.waited - self.lagged
        self.setup_time = setup if setup > 0.0 else None
        self._lift()

    def _lift(self) -> None:
        """The commit point lifts the budget; the deadline's backstop stays. The asyncio
        timer is left as it is: if it fires, it finds the attempt committed and re-arms
        itself for ``lift_to`` (one timer an attempt, and nothing to do here on the hot
        path). Without one (trio), the scope's deadline was the budget's: moved on."""
        if self._timer is None:
            scope = self.scope
            if scope is not None and not self._looped and scope.deadline != self.lift_to:
                scope.deadline = self.lift_to

    # -- what routing calls --------------------------------------------------------------

    def arm(self, at: float) -> None:
        """Cancel the attempt at ``at`` (``anyio.current_time()``) unless it has
        committed by then, and at ``lift_to`` in any case.

        A timer rather than the scope's own deadline: moving an anyio scope's deadline
        at the commit point cost about 20 us per send, a loop timer's cancel almost
        nothing; and the same timer holds the deadline's backstop (an anyio scope with a
        deadline costs about 5 us a send more than one without). Under trio (no asyncio
        loop) the scope's deadline is used.
        """
        self.disarm()
        loop = asyncio._get_running_loop()
        if loop is None:
            if self.scope is not None:
                self.scope.deadline = min(at, self.lift_to)
            return
        self._timer = loop.call_at(min(at, self.lift_to), self._expire)

    def disarm(self) -> None:
        """Stop the timer: the attempt is over (or :meth:`arm` sets a new one)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        elif not self._looped and self.scope is not None and self.scope.deadline != self.lift_to:
            self.scope.deadline = self.lift_to  # trio: the scope's deadline was the budget

    def _expire(self) -> None:
        """The timer fired: cancel the scope if the budget (before the commit point) or
        the deadline's backstop is reached, else wait again for the sooner of the two
        (progress(), the loop's lag or queueing moved one on; or the commit point lifted
        the budget the timer was set for)."""
        self._timer = None
        scope = self.scope
        if scope is None or scope.cancel_called:
            return
        loop = asyncio.get_running_loop()
        left = self.lift_to - loop.time()  # the send's deadline and grace: always holds
        if left > 0.001 and not self.committed and self.budget_deadline is not None:
            self.catch_up()  # a late timer: the loop itself was held up, not the provider
            left = min(left, self.budget_deadline + self.grace - _clock.now())
        if left > 0.001:
            self._timer = loop.call_later(left, self._expire)
            return
        scope.cancel()

    def release(self) -> None:
        """Cancel this attempt if it has not reached its commit point (else: nothing)."""
        if not self.committed and self.scope is not None:
            self.released = True
            self.scope.cancel()

    def enter(self) -> contextvars.Token[AttemptContext]:
        """Make this the attempt the provider sees (with the caller's commit hooks)."""
        self.hooks = _HOOKS.get()
        return _CURRENT.set(self)

    @staticmethod
    def exit(token: contextvars.Token[AttemptContext]) -> None:
        _CURRENT.reset(token)


#: anyio's asyncio cancel-scope class, once :func:`_asyncio_scope` has seen it
_ASYNCIO_SCOPE: type[anyio.CancelScope] | None = None


def _asyncio_scope() -> anyio.CancelScope:
    """A deadline-less anyio cancel scope, on a running asyncio loop.

    ``anyio.CancelScope()`` asks sniffio which library runs the task, on every attempt
    (~1.6 us); the backend's own class, found once, makes the same object (its
    ``__new__`` is its own: were it anyio's dispatching one in some release, this would
    still be right, only no faster). Found only where asyncio runs plainly, not under a
    library that runs on an asyncio loop and tells sniffio otherwise.
    """
    global _ASYNCIO_SCOPE
    cls = _ASYNCIO_SCOPE
    if cls is not None:
        return cls()
    scope = anyio.CancelScope()
    if current_async_library() == "asyncio":
        _ASYNCIO_SCOPE = type(scope)
    return scope


def _past(deadline: float, margin: float, took: float) -> bool:
    """Whether another try, as long as the tries so far, would end past the deadline."""
    return _clock.now() + margin + took >= deadline


@dataclass(slots=True)
class Tries:
    """One send's tries on one provider and the deadline they share (routing's
    ``Leaf.try_send``; an idempotent batch request's two tries, providers/http/
    batch.py, use it too). The provider's window starts with the first try, after any
    wait for its rate-limit slot, which the send's deadline bounds alone."""

    window: float | None  # the provider's attempts_timeout
    deadline: float  # the send's, until the first try starts
    cap: float  # the send's
    #: tries that split the window: ``retry.attempts`` for an idempotent provider (its
    #: retry follows even a timeout after the commit point), else 1 (a try may use all)
    shares: int = 1
    started: int = 0

    @property
    def split(self) -> bool:
        return self.window is not None and self.shares > 1

    def start(self, now: float) -> float:
        """The deadline of a try starting ``now``: with a split window, an equal share
        of what is left for this try and those that may follow it."""
        if not self.started and self.window is not None:
            self.deadline = min(self.deadline, now + self.window)
        self.started += 1
        left = self.shares - self.started + 1
        if not self.split or left <= 1:
            return self.deadline
        return now + (self.deadline - now) / left

    def queued(self, seconds: float) -> None:
        """A try waited ``seconds`` for a connection of our own: not the provider's
        time, so the window moves on by as much (within the send's deadline)."""
        if seconds > 0 and self.window is not None:
            self.deadline = min(self.deadline + seconds, self.cap)

    def past(self, margin: float, took: float) -> bool:
        """Whether a retry after ``margin`` seconds would end past the deadline. With a
        split window a share was kept for it, so the tries so far do not count."""
        if self.split:
            return _clock.now() + margin >= self.deadline
        return _past(self.deadline, margin, took)


@dataclass(eq=False, slots=True)
class _Detached(AttemptContext):
    """The attempt a provider sees when it is used on its own: no deadline, no budget,
    no hooks; its commit point and reports change nothing (there is no one to tell)."""

    async def commit(self) -> None:
        return

    def prepare(self) -> None:
        return

    def progress(self) -> None:
        return

    def queued(self, seconds: float) -> None:
        return


_DETACHED = _Detached("")
_CURRENT: contextvars.ContextVar[AttemptContext] = contextvars.ContextVar(
    "mailer_attempt", default=_DETACHED
)
#: hooks to run at the commit point of every attempt made in this context (the outbox)
_HOOKS: contextvars.ContextVar[tuple[CommitHook, ...]] = contextvars.ContextVar(
    "mailer_commit_hooks", default=()
)


def current_attempt() -> AttemptContext:
    """The attempt under way in this task; outside any, a detached one whose calls do
    nothing (:func:`attached` tells them apart)."""
    return _CURRENT.get()


def attached(attempt: AttemptContext) -> bool:
    """Whether ``attempt`` is one routing opened (not the detached stand-in)."""
    return attempt is not _DETACHED


def loop_time() -> float:
    """``anyio.current_time()``, without anyio's backend lookup (sniffio, a few
    microseconds a call) when the loop is asyncio's: it is on every attempt's path."""
    loop = asyncio._get_running_loop()
    return loop.time() if loop is not None else anyio.current_time()


def deadline_remaining(timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left of the current attempt's deadline."""
    return _CURRENT.get().timeout(timeout)


async def commit_point() -> None:
    """Mark that the provider is about to cross its commit point (see the module).

    Await it immediately before the step after which the message may have been accepted
    (before writing the end of the SMTP data, before the HTTP request body goes out).
    Raises TransientError when the attempt was abandoned meanwhile. Outside an attempt
    (a provider used on its own) it does nothing.
    """
    await _CURRENT.get().commit()


class commit_hooks:
    """``with commit_hooks(hook): await mailer.send(m)``: await ``hook()`` before each
    attempt of that send crosses its commit point (shielded from cancellation)."""

    def __init__(self, *hooks: CommitHook) -> None:
        self._hooks = hooks
        self._token: contextvars.Token[tuple[CommitHook, ...]] | None = None

    def __enter__(self) -> None:
        self._token = _HOOKS.set(_HOOKS.get() + self._hooks)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _HOOKS.reset(self._token)
