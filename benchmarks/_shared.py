"""Helpers shared by the benchmarks and the peer tests (tests/peers), one rule in one place:
installing npm packages on first use (Nodemailer; Nodemailer's smtp-server) and stopping
a helper process started in its own process group.

Packages go into a folder under ``.bench/`` (git-ignored), one folder per purpose, with
its own ``package.json``. Nothing here has side effects at import (the peer tests import
it from pytest), and a failure is a reason in words, never an exception: the callers
skip (tests) or leave a case out (benchmarks) and say why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after 3 s. Only for a
    process started with ``start_new_session=True`` (its group is its own)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=3)


@contextlib.contextmanager
def _locked(where: Path) -> Iterator[None]:
    """Two processes installing into one folder (a benchmark and a test run) take turns."""
    with open(where / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def installed_version(where: Path, package: str) -> str | None:
    """The version of ``package`` installed in ``where``, or None."""
    try:
        data = json.loads((where / "node_modules" / package / "package.json").read_text())
        return str(data["version"])
    except (OSError, ValueError, KeyError):
        return None


def npm_install(where: Path, package: str, spec: str | None = None, timeout: float = 300) -> str:
    """Make sure ``package`` (npm ``spec``, e.g. ``smtp-server@3.21``) is installed in
    ``where``; install it on first use. Returns its version; raises RuntimeError with the
    reason when node or npm is missing or the install fails."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    where.mkdir(parents=True, exist_ok=True)
    with _locked(where):
        version = installed_version(where, package)
        if version is not None:
            return version
        if not (where / "package.json").exists():
            (where / "package.json").write_text('{"private": true}\n')
        try:
            proc = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent", spec or package],
                cwd=where,
                capture_output=True,
                timeout=timeout,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeError(f"npm install {spec or package} failed: {exc}") from None
        version = installed_version(where, package)
        if proc.returncode != 0 or version is None:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-2:]
            raise RuntimeError(
                f"npm install {spec or package} failed (exit {proc.returncode}): "
                + " | ".join(tail)
            )
        return version
