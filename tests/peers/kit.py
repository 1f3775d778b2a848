"""Real SMTP servers nobody here wrote, for the peer tests: Nodemailer's smtp-server
(run by ``smtp_server.js``) and Postfix's smtp-sink.

smtp-server is npm-installed on first use into ``.bench/smtp-server`` (git-ignored) by the
one helper the benchmarks use for Nodemailer (``benchmarks/_shared.py``). Each server writes
what it saw to a JSON-lines *ledger* (see ``smtp_server.js``); the tests assert on the
ledger, not on what our library says it did.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._shared import BENCH_DIR, npm_install, terminate

from mailer.testing import TLS_NAME, Certs, free_port, wait_until

__all__ = [
    "SMTP_SERVER_SPEC",
    "TLS_NAME",
    "Ledger",
    "PeerServer",
    "SinkServer",
    "install_smtp_server",
    "postfix_sink_reason",
]

#: the issue names smtp-server 3.21: the tests pin that minor line
SMTP_SERVER_SPEC = "smtp-server@~3.21.0"
NODE_DIR = BENCH_DIR / "smtp-server"
SCRIPT = Path(__file__).resolve().parent / "smtp_server.js"
POSTFIX_SINK = (
    Path(os.environ.get("MAILER_BENCH_TOOLS", BENCH_DIR.parent.parent / "shared" / "tools"))
    / "postfix-sink"
)


def install_smtp_server() -> str:
    """The installed smtp-server version; RuntimeError (with the reason) if unavailable."""
    return npm_install(NODE_DIR, "smtp-server", SMTP_SERVER_SPEC, timeout=240)


@dataclass
class Ledger:
    """What the server wrote, one JSON object per line. ``mark()`` before a case and
    ``events(since=mark)`` after it keep the cases on a shared server apart."""

    path: Path

    def _lines(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # a line being written by the server right now has no newline yet: leave it
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def mark(self) -> int:
        return len(self._lines())

    def events(self, since: int = 0, ev: str | None = None) -> list[dict[str, Any]]:
        lines = self._lines()[since:]
        return [e for e in lines if ev is None or e["ev"] == ev]

    def messages(self, since: int = 0) -> list[dict[str, Any]]:
        return self.events(since, "message")

    def wait(self, since: int, ev: str, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` ``ev`` events are in (close events come after the reply)."""
        return wait_until(lambda: len(self.events(since, ev)) >= count, timeout)

    def commands(self, since: int = 0) -> list[str]:
        return [e["line"] for e in self.events(since, "C")]

    def replies(self, since: int = 0) -> list[str]:
        return [e["line"] for e in self.events(since, "S")]

    def await_reply(self, since: int, text: str, timeout: float = 5.0) -> list[str]:
        """The replies since ``since`` once one contains ``text`` (bounded wait).

        smtp-server's logger, which the ledger's S lines come from, may write a reply's
        line after the reply itself left: a client that got it and hung up at once can
        read the ledger before the line is there (seen once in a full run)."""
        wait_until(lambda: any(text in r for r in self.replies(since)), timeout)
        return self.replies(since)


def raw(message_event: dict[str, Any]) -> bytes:
    """The bytes the server received for one message (after dot-unstuffing)."""
    return base64.b64decode(message_event["raw"])


def header(data: bytes, name: str) -> str | None:
    """A header's unfolded value in the received bytes (the first one), or None."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ")
    for line in unfolded.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


@dataclass
class PeerServer:
    """One smtp-server process on 127.0.0.1 with its ledger; see ``smtp_server.js`` for
    the options. Started with :meth:`start`, stopped with :meth:`stop`."""

    directory: Path
    certs: Certs | None = None
    options: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    version: str = "?"
    _proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.directory / "ledger.jsonl")

    @property
    def tls(self) -> str | None:
        if self.options.get("secure"):
            return "implicit"
        return None if self.options.get("starttls") is False else "starttls"

    def start(self) -> PeerServer:
        self.version = install_smtp_server()
        config = {"ledger": str(self.ledger.path), "port": 0, **self.options}
        if self.certs is not None and self.tls is not None:
            config["key"] = self.certs.server.private_key_pem.bytes().decode()
            config["cert"] = self.certs.server.cert_chain_pems[0].bytes().decode()
        config_file = self.directory / "config.json"
        config_file.write_text(json.dumps(config))
        env = dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules"))
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        self._proc = subprocess.Popen(
            [node, str(SCRIPT), str(config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(self.directory / "stderr.log", "wb"),  # noqa: SIM115 - the child owns it
            env=env,
            start_new_session=True,
        )
        self.port = self._read_port(timeout=20.0)
        return self

    def _read_port(self, timeout: float) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    self.stop()
                    log = (self.directory / "stderr.log").read_text(errors="replace")[-500:]
                    raise RuntimeError(f"smtp-server did not start: {log.strip()}")
                if sel.select(timeout=min(left, 0.5)):
                    chunk = os.read(self._proc.stdout.fileno(), 4096)
                    if not chunk:
                        continue
                    buffer += chunk
        return int(json.loads(buffer.split(b"\n", 1)[0])["port"])

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A provider config for this server: 127.0.0.1, verified against the test CA,
        our library's DEFAULT timeouts (none set here)."""
        config: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "name": "client.test"}
        if self.tls == "implicit":
            config["secure"] = True
        if self.tls is not None:
            assert self.certs is not None
            config["tls"] = {"ca_file": str(self.certs.ca_file), "servername": TLS_NAME}
        config.update(overrides)
        return config


def postfix_sink_reason() -> str | None:
    """None if Postfix's smtp-sink can run here, else why not."""
    if not POSTFIX_SINK.exists():
        return f"Postfix smtp-sink wrapper not found at {POSTFIX_SINK}"
    try:
        subprocess.run([str(POSTFIX_SINK), "path"], check=True, capture_output=True, timeout=240)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Postfix smtp-sink is not available: {exc}"
    return None


@dataclass
class SinkServer:
    """Postfix's C smtp-sink on 127.0.0.1: it takes mail and discards it, after writing
    each transaction to its own dump file (``-d``), which is the ledger here: its
    envelope (``X-Mail-Args``, ``X-Rcpt-Args``) and the message as received (dot-stuffing
    undone, lines ending in LF). ``pipelining=False`` hides PIPELINING (``-p``);
    ``quit_after_dot`` drops the connection after the final "." without a reply (``-q .``).
    smtp-sink has no SIZE and no AUTH."""

    directory: Path
    pipelining: bool = True
    quit_after_dot: bool = False
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkServer:
        self.dumps = self.directory / "dumps"
        self.dumps.mkdir(exist_ok=True)
        args = [str(POSTFIX_SINK), "sink", "-d", f"{self.dumps}/%H%M%S/"]
        if os.geteuid() == 0:  # required as root; root keeps the dump folder writable
            args += ["-u", "root"]
        if not self.pipelining:
            args.append("-p")
        if self.quit_after_dot:
            args += ["-q", "."]
        for _ in range(5):
            self.port = free_port()
            proc = subprocess.Popen(
                [*args, f"127.0.0.1:{self.port}", "100"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.directory / "stderr.log", "ab"),  # noqa: SIM115 - the child owns it
                start_new_session=True,
            )
            self._proc = proc
            wait_until(lambda: self._exited() or self._listening(), 10)
            if not self._exited() and self._listening():
                return self
            self.stop()
        raise RuntimeError("Postfix smtp-sink did not start")

    def _exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def mark(self) -> set[Path]:
        return set(self.dumps.rglob("*"))

    def messages(self, since: set[Path] | None = None) -> list[dict[str, Any]]:
        """Each transaction dumped since ``since``: ``mail`` and ``rcpt`` (the command
        arguments), ``data`` (the message, LF line endings)."""
        found = []
        for path in sorted(set(self.dumps.rglob("*")) - (since or set())):
            if path.is_file():
                found.append(self._parse(path.read_bytes()))
        return found

    @staticmethod
    def _parse(dump: bytes) -> dict[str, Any]:
        # smtp-sink's own header lines, ending with its three-line Received header, then
        # the message as received, then one empty line
        lines = dump.split(b"\n")
        at = next(i for i, line in enumerate(lines) if line.startswith(b"Received: "))
        own, data = lines[: at + 3], b"\n".join(lines[at + 3 :])
        assert data.endswith(b"\n\n"), "incomplete dump"
        values = [line.decode().partition(": ") for line in own]
        return {
            "mail": next(v for k, _, v in values if k == "X-Mail-Args"),
            "rcpt": [v for k, _, v in values if k == "X-Rcpt-Args"],
            "data": data[:-1],
        }
