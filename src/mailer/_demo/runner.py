"""``mailer demo``: failover you can watch, checked against what the servers received.

Three loopback servers stand in for three providers: an SMTP sink as the primary, a fake
Resend API second, another SMTP sink third. A few hundred messages go out, paced so the
run takes a few seconds; a third of the way in the primary goes down, a little later the
HTTP provider throttles for a moment (so the third provider gets traffic too), and then
the primary comes back and the breaker returns traffic to it.

The verdict does not trust the library's own reports: every Message-ID the demo sent is
looked up in what the servers actually stored. Zero lost and zero duplicated, or the
demo exits 1.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._errors import MailerError
from .._mailer import Event, Mailer
from .._message import Message
from ..testing._resend import FakeResend
from ..testing._sink import SMTPSink

__all__ = ["DemoOptions", "DemoReport", "build_config", "render_summary", "run_demo"]

PRIMARY, HTTP, BACKUP = "smtp-primary", "http-resend", "smtp-backup"
#: what the throttled HTTP provider answers in Retry-After, in seconds
_RETRY_AFTER = 1.0
_STATE_STYLE = {"closed": "green", "open": "red", "half-open": "yellow"}


@dataclass(frozen=True)
class DemoOptions:
    """How big and how fast. The defaults finish in about ten seconds."""

    messages: int = 300
    concurrency: int = 20
    #: messages started per second (pacing makes the outage visible, not a benchmark)
    rate: float = 40.0
    #: fraction of the run at which the primary goes down / the HTTP API throttles / ...
    primary_down_at: float = 0.25
    throttle_at: float = 0.40
    throttle_end_at: float = 0.50
    primary_up_at: float = 0.55
    #: breaker cooldown in seconds: short, so the return to the primary is visible
    #: (None: an eighth of the run, at most 1 s, so a quick run still shows it)
    cooldown: float | None = None

    @property
    def duration(self) -> float:
        return self.messages / self.rate

    @property
    def breaker_cooldown(self) -> float:
        if self.cooldown is not None:
            return self.cooldown
        return max(0.05, min(1.0, self.duration / 8))


@dataclass
class DemoReport:
    """What happened, from the Mailer's events and from the servers' own counts."""

    sent_by: Counter[str] = field(default_factory=Counter)
    received_by: dict[str, int] = field(default_factory=dict)
    failovers: Counter[tuple[str, str]] = field(default_factory=Counter)
    breaker_changes: list[tuple[float, str, str, str]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    misreported: list[str] = field(default_factory=list)
    #: Message-ID -> the provider the Mailer said took it
    sent_ids: dict[str, str] = field(default_factory=dict)
    unexpected: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.lost or self.duplicated or self.misreported)


def build_config(
    primary: int, http_base_url: str, api_key: str, backup: int, cooldown: float
) -> dict[str, Any]:
    """The Mailer config the demo runs: the same shape a user would write in TOML."""

    def smtp(name: str, priority: int, port: int) -> dict[str, Any]:
        return {
            "type": "smtp",
            "name": name,
            "priority": priority,
            "config": {
                "host": "127.0.0.1",
                "port": port,
                # Loopback sinks offer no STARTTLS; real servers must keep TLS on.
                "ignore_tls": True,
                "pool": True,
                "max_connections": 10,
                "connection_timeout": 2.0,
                "greeting_timeout": 2.0,
                "socket_timeout": 5.0,
            },
        }

    return {
        "defaults": {"sender": "Demo <demo@example.com>"},
        "providers": [
            smtp(PRIMARY, 1, primary),
            {
                "type": "resend",
                "name": HTTP,
                "priority": 2,
                "config": {"api_key": api_key, "base_url": http_base_url, "timeout": 5.0},
            },
            smtp(BACKUP, 3, backup),
        ],
        "send_timeout": 20.0,
        "health": {
            "failure_threshold": 2,
            "cooldown": cooldown,
            "max_cooldown": cooldown * 2,
            "backoff_factor": 2.0,
        },
        # No same-provider retry: a down provider should hand over at once.
        "retry": {"attempts": 1},
    }


class _View:
    """The live screen: a progress bar, a row per provider, and the last few events."""

    def __init__(self, total: int, servers: dict[str, Callable[[], str]]) -> None:
        self.progress = Progress(
            TextColumn("[bold]sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("send", total=total)
        self.servers = servers
        self.states = dict.fromkeys(servers, "closed")
        self.sent: Counter[str] = Counter()
        self.failed_attempts: Counter[str] = Counter()
        self.log: list[Text] = []
        self.start = time.monotonic()

    def note(self, text: str, style: str = "") -> None:
        stamp = f"{time.monotonic() - self.start:5.1f}s "
        self.log.append(Text(stamp, style="dim") + Text(text, style=style))
        del self.log[:-12]

    def __rich__(self) -> RenderableType:
        table = Table(expand=False, box=None, padding=(0, 2))
        for col in ("provider", "server", "breaker", "sent", "failed attempts"):
            table.add_column(col, justify="right" if col in ("sent", "failed attempts") else "left")
        for name, status in self.servers.items():
            state = self.states[name]
            server = status()
            table.add_row(
                name,
                Text(server, style="green" if server == "up" else "red"),
                Text(state, style=_STATE_STYLE.get(state, "")),
                str(self.sent[name]),
                str(self.failed_attempts[name]),
            )
        return Group(self.progress, Text(""), table, Text(""), *self.log)


async def run_demo(
    options: DemoOptions | None = None, console: Console | None = None
) -> DemoReport:
    """Run the demo end to end and return the report; servers are always torn down."""
    opts = options or DemoOptions()
    console = console or Console()
    report = DemoReport()
    primary, backup = SMTPSink("primary"), SMTPSink("backup")
    http = FakeResend(api_key="re_demo_key")
    try:
        await primary.start()
        await backup.start()
        await http.start()
        config = build_config(
            primary.port, http.base_url, http.api_key, backup.port, opts.breaker_cooldown
        )
        mailer = Mailer.from_config(config)
        async with mailer:
            await _drive(mailer, opts, console, report, primary, http)
    finally:
        await primary.stop(grace=0.2)
        await backup.stop(grace=0.2)
        await http.stop()
    _verify(report, primary, http, backup)
    return report


async def _drive(
    mailer: Mailer,
    opts: DemoOptions,
    console: Console,
    report: DemoReport,
    primary: SMTPSink,
    http: FakeResend,
) -> None:
    view = _View(
        opts.messages,
        {
            PRIMARY: lambda: "up" if primary.running else "down",
            HTTP: lambda: "429 throttling" if http.mode.startswith("429") else "up",
            BACKUP: lambda: "up",
        },
    )
    started = anyio.current_time()

    def on_event(event: Event) -> None:
        if event.kind == "sent" and event.provider:
            view.sent[event.provider] += 1
        elif event.kind == "attempt" and event.provider and event.error is not None:
            view.failed_attempts[event.provider] += 1
        elif event.kind == "failover" and event.provider:
            report.failovers[(event.provider, event.next_provider or "nobody")] += 1
        elif event.kind == "breaker" and event.provider and event.new_state and event.old_state:
            old, new = event.old_state.value, event.new_state.value
            view.states[event.provider] = new
            report.breaker_changes.append(
                (anyio.current_time() - started, event.provider, old, new)
            )
            view.note(f"breaker {event.provider}: {old} -> {new}", _STATE_STYLE.get(new, ""))

    unsubscribe = mailer.subscribe(on_event)
    sent_ids = report.sent_ids
    limit = anyio.Semaphore(opts.concurrency)

    async def send_one(i: int) -> None:
        try:
            msg = Message(
                to=[f"user{i}@example.org"],
                subject=f"Demo message {i + 1} of {opts.messages}",
                text=f"Hello from the mailer demo.\n.\n..this line starts with a dot ({i}).\n",
                html=f"<p>Hello from the mailer demo, message {i + 1}.</p>",
            )
            # msg.message_id is read after send(): the id is made when first read, and
            # by then it carries the default sender's domain (see Message.message_id)
            try:
                result = await mailer.send(msg)
                sent_ids[str(msg.message_id)] = result.provider
                report.sent_by[result.provider] += 1
            except MailerError as exc:
                report.failed[str(msg.message_id)] = f"{type(exc).__name__}: {exc}"
                view.note(f"FAILED {msg.message_id}: {type(exc).__name__}", "bold red")
            view.progress.advance(view.task)
        finally:
            limit.release()

    async def at(fraction: float, action: Callable[[], Any], text: str, style: str) -> None:
        await anyio.sleep(max(fraction * opts.duration, 0))
        view.note(text, style)
        result = action()
        if inspect.isawaitable(result):
            await result

    def throttle(mode: str) -> Callable[[], None]:
        def apply() -> None:
            http.mode = mode

        return apply

    with Live(view, console=console, refresh_per_second=12, transient=False):
        view.note(
            f"{opts.messages} messages, {opts.concurrency} at a time; "
            f"primary {PRIMARY} on 127.0.0.1:{primary.port}",
            "bold",
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                at,
                opts.primary_down_at,
                primary.stop,
                f"{PRIMARY} goes DOWN (refuses connections, 421 to open ones)",
                "bold red",
            )
            tg.start_soon(
                at,
                opts.throttle_at,
                throttle(f"429:{_RETRY_AFTER:g}"),
                f"{HTTP} starts throttling (429, Retry-After: {_RETRY_AFTER:g}s)",
                "bold yellow",
            )
            tg.start_soon(
                at, opts.throttle_end_at, throttle("ok"), f"{HTTP} stops throttling", "green"
            )
            tg.start_soon(
                at,
                opts.primary_up_at,
                primary.start,
                f"{PRIMARY} is back UP (breaker will probe it after its cooldown)",
                "bold green",
            )
            for i in range(opts.messages):
                await anyio.sleep_until(started + i / opts.rate)
                await limit.acquire()
                tg.start_soon(send_one, i)
        view.note("all sends finished; counting what the servers received", "bold")
    unsubscribe()
    report.elapsed = anyio.current_time() - started


def _verify(report: DemoReport, primary: SMTPSink, http: FakeResend, backup: SMTPSink) -> None:
    """Compare what the Mailer reported with what each server actually stored."""
    servers: dict[str, Counter[str]] = {
        PRIMARY: primary.received,
        HTTP: http.received,
        BACKUP: backup.received,
    }
    report.received_by = {name: sum(c.values()) for name, c in servers.items()}
    total: Counter[str] = Counter()
    for counts in servers.values():
        total.update(counts)
    ours = set(report.sent_ids) | set(report.failed)
    for message_id, provider in report.sent_ids.items():
        n = total[message_id]
        if n == 0:
            report.lost.append(message_id)
        elif n > 1:
            report.duplicated[message_id] = n
        elif servers[provider][message_id] != 1:
            report.misreported.append(message_id)
    report.unexpected = sum(n for mid, n in total.items() if mid not in ours)


def render_summary(report: DemoReport, console: Console) -> None:
    """The end-of-run table and the verdict line."""
    table = Table(title="Demo summary", title_justify="left")
    table.add_column("provider")
    table.add_column("role")
    table.add_column("sent (Mailer said)", justify="right")
    table.add_column("received (server counted)", justify="right")
    table.add_column("breaker changes", justify="right")
    changes = Counter(p for _, p, _, _ in report.breaker_changes)
    roles = {
        PRIMARY: "SMTP, priority 1",
        HTTP: "Resend API, priority 2",
        BACKUP: "SMTP, priority 3",
    }
    for name, role in roles.items():
        table.add_row(
            name,
            role,
            str(report.sent_by[name]),
            str(report.received_by.get(name, 0)),
            str(changes[name]),
        )
    console.print(table)
    sent = len(report.sent_ids)
    fallback = sent - report.sent_by[PRIMARY]
    console.print(
        f"[bold]Served by a fallback[/]: {fallback} of {sent} (while {PRIMARY} was down, "
        "its breaker kept sends away from it without trying it each time)"
    )
    if report.failovers:
        parts = [f"{a} -> {b}: {n}" for (a, b), n in sorted(report.failovers.items())]
        console.print(
            f"[bold]Failovers[/] (a send failed on one provider and moved on): "
            f"{sum(report.failovers.values())} ({'; '.join(parts)})"
        )
    if report.breaker_changes:
        console.print("[bold]Breaker state changes[/]:")
        for t, provider, old, new in report.breaker_changes:
            style = _STATE_STYLE.get(new, "")
            console.print(f"  {t:5.1f}s  {provider}: {old} -> [{style}]{new}[/]")
    console.print(
        f"Messages: {sent + len(report.failed)} sent, {len(report.failed)} failed, "
        f"{len(report.lost)} lost, {len(report.duplicated)} duplicated, "
        f"{len(report.misreported)} misreported, {report.unexpected} unexpected; "
        f"{report.elapsed:.1f}s"
    )
    if report.ok:
        console.print(
            "[bold green]OK[/]: every message was received exactly once, by the provider "
            "that reported it (counted at the servers by Message-ID)."
        )
    else:
        console.print("[bold red]FAILED[/]: the servers' counts do not match what was sent.")
        for message_id, why in list(report.failed.items())[:5]:
            console.print(f"  failed {message_id}: {why}")
        for message_id in report.lost[:5]:
            console.print(f"  lost {message_id}")
        for message_id, n in list(report.duplicated.items())[:5]:
            console.print(f"  duplicated {message_id} x{n}")
        for message_id in report.misreported[:5]:
            console.print(f"  misreported {message_id} (not at the provider that took it)")
