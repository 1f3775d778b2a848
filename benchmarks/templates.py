"""The cost of templates and one-click unsubscribe on a send, against a plain message.

Each case sends ``--count`` messages through a Mailer with one memory provider (no I/O, so
only our own work is timed), in the same process and interleaved ``--rounds`` times:

* ``plain``: subject, text and HTML given (the reference);
* ``template``: the same content from ``welcome.*`` rendered locally with Jinja2 (the
  Mailer renders once per message, before routing);
* ``unsubscribe``: the plain message with ``unsubscribe=True`` (a token signed, two headers
  added);
* ``stored``: a template the provider maps (a SendGrid-shaped payload walk; no rendering,
  since the Mailer has no local templates), built with ``build_request`` only.

Medians of the per-message time are printed with the ratio to ``plain``.

    .venv/bin/python benchmarks/templates.py [--count 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OURS_SRC

if OURS_SRC is not None:
    sys.path.insert(0, str(OURS_SRC))

from mailer import Mailer, Message
from mailer.providers import SendGridProvider
from mailer.providers._memory import MemoryProvider

DATA = {"name": "Ada Lovelace", "plan": "Pro", "items": [{"sku": f"a-{i}"} for i in range(5)]}
TEXT = "Hi {{ name }},\nyour plan is {{ plan }}.\n{% for i in items %}- {{ i.sku }}\n{% endfor %}"
HTML = "<p>Hi {{ name }}, your plan is <b>{{ plan }}</b>.</p><ul>{% for i in items %}<li>{{ i.sku }}</li>{% endfor %}</ul>"  # noqa: E501
UNSUB = {"base_url": "https://example.com/mail", "key": "benchmark-key-0123456789-abcdefghij"}


def _dir() -> Path:
    folder = Path(tempfile.mkdtemp()) / "templates"
    folder.mkdir()
    (folder / "welcome.subject.txt").write_text("Welcome, {{ name }}!")
    (folder / "welcome.txt").write_text(TEXT)
    (folder / "welcome.html").write_text(HTML)
    return folder


def _plain(i: int, **extra: object) -> Message:
    return Message(**{"from": "app@example.com", "to": f"u{i}@example.org",
                      "subject": "Welcome, Ada Lovelace!", "text": "Hi Ada,\nyour plan is Pro.",
                      "html": "<p>Hi Ada, your plan is <b>Pro</b>.</p>", **extra})  # fmt: skip


def _templated(i: int) -> Message:
    return Message(**{"from": "app@example.com", "to": f"u{i}@example.org",
                      "template": "welcome", "template_data": DATA})  # fmt: skip


async def _send_all(mailer: Mailer, make: Callable[[int], Message], count: int) -> float:
    messages = [make(i) for i in range(count)]  # construction is not what is measured
    started = time.perf_counter()
    for m in messages:
        await mailer.send(m)
    return (time.perf_counter() - started) / count


def _build_all(count: int) -> float:
    provider = SendGridProvider.from_config("sg", {"api_key": "k", "templates": {"welcome": "d-1"}})
    messages = [_templated(i) for i in range(count)]
    started = time.perf_counter()
    for m in messages:
        provider.build_request(m)
    return (time.perf_counter() - started) / count


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = _dir()
    results: dict[str, list[float]] = {"plain": [], "template": [], "unsubscribe": [],
                                       "stored": []}  # fmt: skip
    for _ in range(args.rounds):
        async with Mailer([MemoryProvider("m")], templates={"dir": folder},
                          unsubscribe=UNSUB) as mailer:  # fmt: skip
            results["plain"].append(await _send_all(mailer, _plain, args.count))
            results["template"].append(await _send_all(mailer, _templated, args.count))
            results["unsubscribe"].append(
                await _send_all(mailer, lambda i: _plain(i, unsubscribe=True), args.count)
            )
        results["stored"].append(_build_all(args.count))
    base = statistics.median(results["plain"])
    print(f"{'case':<12} {'us/message':>11} {'x plain':>8}   (median of {args.rounds} rounds "
          f"of {args.count}; Python {sys.version.split()[0]})")  # fmt: skip
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<12} {med * 1e6:>11.1f} {med / base:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
