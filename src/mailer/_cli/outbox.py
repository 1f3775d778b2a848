"""``mailer worker`` and ``mailer outbox status|list|retry|purge``: rendering only; the
work is the Outbox's."""

from __future__ import annotations

import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.table import Table

from .._log import one_line
from .._outbox.config import parse_duration
from .._outbox.store import STATES, State
from .common import EXIT_FAILED, EXIT_USAGE, ConfigOption, app, fail, friendly, out, run
from .dispatch import dispatch_table

if TYPE_CHECKING:
    from .._mailer import Mailer

__all__ = ["outbox_app"]

outbox_app = typer.Typer(
    name="outbox",
    help="Look at and manage the durable outbox (docs/outbox.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(outbox_app)

StateOption = Annotated[str | None, typer.Option("--state", help=f"One of: {', '.join(STATES)}.")]


def _mailer(config: Path) -> Mailer:
    from .._mailer import Mailer

    mailer = Mailer.from_config(config)
    mailer.outbox  # noqa: B018 - ConfigError when the config has none
    return mailer


def _state(value: str | None) -> State | None:
    if value is None:
        return None
    if value not in STATES:
        fail(f"unknown state {value!r}", f"use one of: {', '.join(STATES)}", EXIT_USAGE)
    return value  # type: ignore[return-value]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
@friendly
def worker(
    config: ConfigOption = Path("mailer.toml"),
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1024, help="Messages sent at once (default: config).")
    ] = None,
) -> None:
    """Deliver from the outbox until SIGTERM or SIGINT, then finish the sends under way."""
    mailer = _mailer(config)
    logger = logging.getLogger("mailer")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        # a daemon's log is how an operator sees it work (unless --verbose set one up)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    log = logging.getLogger("mailer.outbox")

    async def go() -> tuple[dict[str, int], int]:
        stop = anyio.Event()
        async with mailer, anyio.create_task_group() as tg:

            async def signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                    async for signum in received:
                        if stop.is_set():
                            name = signal.Signals(signum).name
                            log.warning(
                                "second %s: stopping now; leases will settle what was in flight",
                                name,
                            )
                            tg.cancel_scope.cancel()
                            return
                        log.info(
                            "%s: finishing the sends under way, then exiting",
                            signal.Signals(signum).name,
                        )
                        stop.set()

            tg.start_soon(signals)
            log.info("outbox worker started (%s)", mailer.outbox.store)
            counts = await mailer.outbox.run(concurrency=concurrency, stop=stop)
            left = (await mailer.outbox.stats())["queued"]
            tg.cancel_scope.cancel()
        return counts, left

    counts, left = run(go)
    log.info("outbox worker stopped: %s", worker_summary(counts, left))


def worker_summary(counts: dict[str, int], left: int) -> str:
    """What a worker run did, as events, and what is still queued.

    The run counts the outcome of each attempt: ``queued`` there means an attempt failed
    and the message was put back for a retry (one message can be counted several
    times), not that anything is queued now: ``4 queued, 5 sent`` read as a backlog.
    """
    words = {"queued": "re-queued for a retry", "sending": "left in flight"}
    done = [f"{n} {words.get(state, state)}" for state, n in sorted(counts.items(),
            key=lambda kv: (kv[0] != "sent", kv[0])) if n]  # fmt: skip
    return f"{', '.join(done) or 'nothing sent'}; {left} queued now"


@outbox_app.command("status")
@friendly
def status(config: ConfigOption = Path("mailer.toml")) -> None:
    """Messages per state."""
    mailer = _mailer(config)

    async def go() -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        async with mailer:
            engines = {}
            if mailer.outbox.config.dispatch is not None:
                engines = await mailer.outbox.dispatch_stats()
            return dict(await mailer.outbox.stats()), engines

    stats, engines = run(go)
    table = Table("state", "messages")
    for state in STATES:
        table.add_row(state, str(stats[state]))
    out().print(table)
    if engines:
        out().print(dispatch_table(engines))


@outbox_app.command("list")
@friendly
def list_(
    config: ConfigOption = Path("mailer.toml"),
    state: StateOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 100,
) -> None:
    """Messages (oldest first), one tab-separated line each: no content, no wrapping."""
    mailer = _mailer(config)
    wanted = _state(state)

    async def go() -> list[Any]:
        async with mailer:
            return list(await mailer.outbox.items(wanted, limit))

    items = run(go)
    # One tab-separated line per message, never wrapped: Message-IDs are copied from here
    # into `mailer outbox retry`, and scripts read it with cut/awk.
    typer.echo("message-id\tstate\tattempts\tupdated (UTC)\tnext (UTC)\tprovider\tlast error")
    for item in items:
        fields = [
            item.message_id,
            item.state,
            str(item.attempts),
            _when(item.updated),
            _when(item.next_at) if item.state == "queued" else "-",
            f"{item.pin} (pinned)" if item.pin else item.provider or "-",
            one_line(item.last_error or "-").replace("\t", " "),
        ]
        typer.echo("\t".join(fields))


@outbox_app.command("retry")
@friendly
def retry(
    message_ids: Annotated[list[str], typer.Argument(help="Message-IDs to queue again.")],
    config: ConfigOption = Path("mailer.toml"),
) -> None:
    """Queue messages again, due now (for unknown ones: it may deliver a second copy)."""
    mailer = _mailer(config)

    async def go() -> int:
        async with mailer:
            return int(await mailer.outbox.retry(*message_ids))

    count = run(go)
    out().print(f"{count} of {len(message_ids)} queued again")
    if count < len(message_ids):
        fail(
            "some Message-IDs are not in the outbox (or are being sent right now)",
            "see `mailer outbox list`",
            EXIT_FAILED,
        )


@outbox_app.command("purge")
@friendly
def purge(
    state: Annotated[str, typer.Option("--state", help="sent, failed, dead, unknown, queued.")],
    older_than: Annotated[
        str, typer.Option("--older-than", help="Not updated for this long: 3600, 12h, 7d.")
    ],
    config: ConfigOption = Path("mailer.toml"),
) -> None:
    """Delete messages in one state that have not changed for a while."""
    wanted = _state(state)
    assert wanted is not None
    if wanted == "sending":
        fail("messages being sent cannot be purged", code=EXIT_USAGE)
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}", code=EXIT_USAGE)
    mailer = _mailer(config)

    async def go() -> int:
        async with mailer:
            return int(await mailer.outbox.purge(wanted, seconds))

    out().print(f"purged {run(go)} {wanted} messages")


@outbox_app.command("reconcile")
@friendly
def reconcile_(
    config: ConfigOption = Path("mailer.toml"),
    limit: Annotated[int, typer.Option(help="At most this many unknown rows.")] = 1000,
) -> None:
    """Ask the providers about each unknown message: settle it to sent, queue it again
    where the provider's record proves it never arrived, or leave it unknown."""
    mailer = _mailer(config)

    async def go() -> tuple[int, int, int]:
        async with mailer:
            report = await mailer.reconcile(limit=limit)
        return len(report.settled), len(report.requeued), len(report.left)

    settled, requeued, left = run(go)
    out().print(f"{settled} settled to sent, {requeued} queued again, {left} left unknown")


@outbox_app.command("sweep")
@friendly
def sweep(config: ConfigOption = Path("mailer.toml")) -> None:
    """Publish again the task-queue tasks that were lost (rows due but not picked up).

    For a cron job where the engine has no scheduler (RQ, django.tasks); Celery's beat
    and arq's cron run it themselves. docs/task-queues.md.
    """
    mailer = _mailer(config)

    async def go() -> int:
        async with mailer:
            if mailer.outbox.config.dispatch is None:
                fail("this outbox has no dispatch: `mailer worker` delivers it", code=EXIT_USAGE)
            return await mailer.outbox.sweep()

    published = run(go)
    out().print(f"{published} task(s) published again")
