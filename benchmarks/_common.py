"""Shared helpers for the benchmark scripts: servers, proxies, Node, workers, reporting.

Every server or proxy is started in its own process group, bound to 127.0.0.1, and killed
when the script exits (normally, on an exception, on SIGINT or SIGTERM). Each client runs
in a fresh worker process (``_clients.py``) that times only its own sending, so cases can
be interleaved round by round and compared by their medians on a shared, noisy machine.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _shared import BENCH_DIR, ROOT, installed_version, npm_install, terminate

TOOLS = Path(os.environ.get("MAILER_BENCH_TOOLS", ROOT.parent / "shared" / "tools"))
POSTFIX_SINK = TOOLS / "postfix-sink"
LATENCY_PROXY = TOOLS / "latency-proxy"
CLIENTS = Path(__file__).resolve().parent / "_clients.py"
NODE_DIR = BENCH_DIR / "node"
HOST = "127.0.0.1"

_children: list[subprocess.Popen[bytes]] = []


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, timeout=60, check=True)
    return out.stdout.decode().strip()


def _ours_src() -> tuple[Path | None, str]:
    """Where "ours" is imported from: MAILER_BENCH_REF=<git rev> exports that commit's
    src/ into .bench/src-<sha> (so edits in progress in the tree are not measured);
    unset, the working tree (as installed in the venv)."""
    ref = os.environ.get("MAILER_BENCH_REF")
    if not ref:
        try:
            head = _git("rev-parse", "--short", "HEAD")
            dirty = _git("status", "--porcelain", "--", "src")
        except (OSError, subprocess.SubprocessError):
            return None, "working tree"
        return None, f"working tree at {head}" + (" with uncommitted src changes" if dirty else "")
    sha = _git("rev-parse", "--short", ref)
    return export_src(sha), f"commit {sha} ({ref})"


def export_src(ref: str) -> Path:
    """That commit's src/, exported once into .bench/src-<sha> (an importable tree)."""
    sha = _git("rev-parse", "--short", ref)
    dest = BENCH_DIR / f"src-{sha}"
    if not (dest / "src" / "mailer").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], cwd=ROOT, capture_output=True, timeout=60, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


OURS_SRC, OURS_FROM = _ours_src()


def worker_env(src: Path | None = None) -> dict[str, str]:
    """The environment of a client process: "ours" from ``src`` (another commit's tree,
    for a before/after in one run), else from MAILER_BENCH_REF's, else the working tree."""
    env = dict(os.environ)
    src = src or OURS_SRC
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def _kill_children() -> None:
    while _children:
        terminate(_children.pop())


def _on_signal(signum: int, frame: object) -> None:
    _kill_children()
    sys.exit(128 + signum)


atexit.register(_kill_children)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


def spawn(args: Sequence[str | Path], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a helper process in its own process group; it is killed at exit."""
    proc = subprocess.Popen(
        [str(a) for a in args],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=kwargs.pop("stdout", subprocess.DEVNULL),
        stderr=kwargs.pop("stderr", subprocess.DEVNULL),
        **kwargs,
    )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc in _children:
        _children.remove(proc)
    terminate(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"helper exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout:g}s")


def ensure_postfix() -> None:
    """First use unpacks Postfix's binaries from Debian's package (apt-get download)."""
    subprocess.run([str(POSTFIX_SINK), "path"], check=True, capture_output=True, timeout=300)


@contextlib.contextmanager
def postfix_sink(backlog: int = 1000) -> Iterator[int]:
    """Postfix's C smtp-sink on a free loopback port (advertises PIPELINING)."""
    ensure_postfix()
    port = free_port()
    proc = spawn([POSTFIX_SINK, "sink", "-u", "nobody", f"{HOST}:{port}", str(backlog)])
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def latency_proxy(target: int, delay_ms: float) -> Iterator[int]:
    """latency-proxy on a free loopback port: delay_ms each way (2x per round trip)."""
    port = free_port()
    proc = spawn(
        [
            sys.executable,
            LATENCY_PROXY,
            "--listen",
            f"{HOST}:{port}",
            "--target",
            f"{HOST}:{target}",
            "--delay-ms",
            str(delay_ms),
        ]
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port with nothing listening: connect() is refused at once."""
    yield free_port()


@contextlib.contextmanager
def hung_server() -> Iterator[int]:
    """Listens (the kernel completes the TCP handshake) but never accepts nor greets."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(1024)
        yield int(s.getsockname()[1])


def node_dir(version: str = "latest") -> Path:
    return NODE_DIR if version == "latest" else BENCH_DIR / f"node-{version}"


def ensure_nodemailer(version: str = "latest") -> Path | None:
    """npm-install nodemailer into .bench/node (git-ignored); None if that fails."""
    where = node_dir(version)
    spec = "nodemailer" if version == "latest" else f"nodemailer@{version}"
    try:
        npm_install(where, "nodemailer", spec)
    except RuntimeError as exc:
        print(f"  (nodemailer unavailable: {exc})")
        return None
    driver = where / "driver.js"
    src = Path(__file__).resolve().parent / "nodemailer_driver.js"
    driver.write_text(src.read_text())
    return driver


def nodemailer_version(version: str = "latest") -> str:
    return installed_version(node_dir(version), "nodemailer") or "?"


def run_worker(
    args: Sequence[str | int | float], timeout: float = 300.0, *, src: Path | None = None
) -> dict[str, Any]:
    """Run one client in a fresh process; it prints one JSON object as its last line.
    ``src``: import "ours" from that tree (:func:`export_src`)."""
    if args and str(args[0]).startswith("nodemailer"):
        version = str(args[0]).partition("@")[2] or "latest"
        driver = ensure_nodemailer(version)
        if driver is None:
            return {"error": "nodemailer not installed"}
        cmd = ["node", str(driver), *[str(a) for a in args[1:]]]
        cwd: Path | None = driver.parent
    else:
        cmd = [sys.executable, str(CLIENTS), *[str(a) for a in args]]
        cwd = ROOT
    env = worker_env(src)
    proc = spawn(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        return {"error": f"timed out after {timeout:g}s"}
    finally:
        if proc in _children:
            _children.remove(proc)
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return {"error": f"bad output: {lines[-1][:200]}"}
    return result


def nodemailer_cases(
    versions: Sequence[str], args: Callable[[], list[str | int | float]]
) -> dict[str, Callable[[], dict[str, Any]]]:
    """One case per Nodemailer version: "nodemailer" is the latest, "nodemailer@6" etc."""
    cases: dict[str, Callable[[], dict[str, Any]]] = {}
    for v in versions:
        name = "nodemailer" if v == "latest" else f"nodemailer@{v}"
        ensure_nodemailer(v)
        print(f"  {name}: nodemailer {nodemailer_version(v)}")
        cases[name] = lambda name=name: run_worker([name, *args()])
    return cases


def ours_available() -> str | None:
    """None if the SMTP provider is importable, else why not."""
    code = "import mailer.providers._smtp as m; print(m.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=60, env=worker_env()
    )
    if proc.returncode == 0:
        print(f"  ours: {OURS_FROM}: {proc.stdout.decode().strip()}")
        return None
    last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
    return "SMTP provider not available: " + (last[0] if last else "import failed")


def rounds_of(
    cases: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Run every case once per round, interleaved, so noise hits all of them alike."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for r in range(rounds):
        for name, fn in cases.items():
            res = fn()
            results[name].append(res)
            shown = res.get("error") or {k: v for k, v in res.items() if k != "samples"}
            print(f"  round {r + 1}/{rounds} {name}: {shown}", flush=True)
    return results


def median_of(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if "error" not in s and s.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def num(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in rows)])


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")
