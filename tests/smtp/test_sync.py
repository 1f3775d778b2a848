"""SyncMailer against real SMTP servers: close under load with a server-side ledger, and
fork (os.fork and multiprocessing's fork start method) in a subprocess.

The ledger rule: every caller is told something, and nothing told is wrong. A caller
told "sent" has its Message-ID on the server exactly once; a caller told anything else
but DeliveryUncertain has it nowhere; DeliveryUncertain may go either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from mailer import DeliveryUncertain, MailerError, Message, SendResult, SyncMailer
from mailer._sync import SEND_GRACE
from mailer.testing import SMTPTestServer

ROOT = Path(__file__).resolve().parents[2]


def msg(tag: str) -> Message:
    return Message(
        sender="app@example.com",
        to=["b@example.org"],
        subject=tag,
        text="x",
        message_id=f"<{tag}@sync.test>",
    )


def test_close_under_load_tells_every_caller_and_nothing_wrong(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    # Each message takes 0.3 s to be accepted; 4 connections: ~13 messages a second, so
    # close() comes while most of the 50 sends are queued or under way.
    server.state.fail("DATA_END", "delay:0.3")
    config = {
        "providers": [
            {
                "type": "smtp",
                "name": "smtp",
                "config": server.config(pool=True, max_connections=4, socket_timeout=10.0),
            },
        ],
        "send_timeout": 30,
    }
    sm = SyncMailer.from_config(config)
    told: dict[str, SendResult | BaseException] = {}
    lock = threading.Lock()
    go = threading.Event()

    def caller(i: int) -> None:
        go.wait(10)
        time.sleep(0.02 * (i % 25))  # staggered: some arrive after close() began
        try:
            outcome: SendResult | BaseException = sm.send(msg(f"m{i}"))
        except BaseException as exc:
            outcome = exc
        with lock:
            told[f"<m{i}@sync.test>"] = outcome

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    go.set()
    assert server.wait_for(lambda: len(server.state.messages) >= 3, timeout=15)
    close_timeout = 0.5
    began = time.monotonic()
    sm.close(timeout=close_timeout)
    closed_in = time.monotonic() - began
    for thread in threads:
        thread.join(close_timeout + SEND_GRACE + 10)
    assert not any(t.is_alive() for t in threads), "a caller was stranded"
    assert len(told) == 50, "every caller is told"
    assert closed_in < close_timeout + 8

    time.sleep(1.0)  # anything still in flight lands (or not) before we read the ledger
    ledger = Counter(server.state.message_ids())
    assert all(n == 1 for n in ledger.values()), f"duplicates: {ledger}"
    kinds: Counter[str] = Counter()
    for message_id, outcome in told.items():
        kinds[type(outcome).__name__] += 1
        if isinstance(outcome, SendResult):
            assert ledger[message_id] == 1, f"{message_id} told sent, not on the server"
        elif not isinstance(outcome, DeliveryUncertain):
            assert isinstance(outcome, MailerError), repr(outcome)
            assert ledger[message_id] == 0, f"{message_id} told {outcome!r}, but delivered"
    # the run did what it set out to: some sent, some cut by close or refused after it
    assert kinds["SendResult"] >= 3
    assert kinds["SendResult"] < 50, kinds
    # and precisely: sends queued for a pooled connection are told "not sent"; only those
    # on the 4 connections, past their commit point, may be uncertain
    assert kinds["TransientError"] >= 1, kinds
    assert kinds["DeliveryUncertain"] <= 4, kinds


FORK_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, os, signal, sys, traceback
    from mailer import Mailer, MailerError, Message, SyncMailer

    config = json.loads(sys.argv[1])

    def msg(tag):
        return Message(sender="app@example.com", to=["b@example.org"], subject=tag,
                       text="x", message_id=f"<{tag}@fork.test>")

    sm = SyncMailer(config)                        # used in the parent: rebuilt in a child
    unused = SyncMailer.from_config(config)        # never used in the parent
    used_obj = SyncMailer(Mailer.from_config(config))  # a Mailer object, used before fork
    sm.send(msg("parent-1"))
    used_obj.send(msg("parent-obj"))

    def child_work(tag):
        signal.alarm(30)  # a child that hangs fails the test instead of stalling it
        out = {"pid": os.getpid()}
        for suffix in ("a", "b"):
            out[suffix] = sm.send(msg(f"{tag}-{suffix}")).provider
        out["unused"] = unused.send(msg(f"{tag}-unused")).provider
        try:
            used_obj.send(msg(f"{tag}-obj"))
            out["obj"] = "sent"
        except MailerError as exc:
            out["obj"] = str(exc)
        sm.close()
        unused.close()
        return out

    report = {"parent": os.getpid()}
    pid = os.fork()
    if pid == 0:
        try:
            out = child_work("fork")
            with open(sys.argv[2], "w") as f:
                json.dump(out, f)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    report["fork_status"] = status
    with open(sys.argv[2]) as f:
        report["fork"] = json.load(f)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        report["mp"] = pool.apply(child_work, ("mp",))
    sm.send(msg("parent-2"))  # the parent's pooled connection is still fine
    sm.close()
    used_obj.close()
    unused.close()
    print(json.dumps(report))
    """
)


def test_after_fork_the_child_sends_through_fresh_connections(
    smtp_server: Callable[..., SMTPTestServer], tmp_path: Path
) -> None:
    server = smtp_server()
    config = {
        "providers": [{"type": "smtp", "name": "smtp", "config": server.config(pool=True)}],
        "send_timeout": 20,
    }
    run = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, json.dumps(config), str(tmp_path / "child.json")],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["fork_status"] == 0
    for tag in ("fork", "mp"):
        child = report[tag]
        assert child["pid"] != report["parent"]
        assert child["a"] == child["b"] == child["unused"] == "smtp"
        assert "before fork()" in child["obj"]  # a used Mailer object cannot be rebuilt
    # the server's ledger: each message once; the children's over their own connections
    ids = server.state.message_ids()
    assert Counter(ids) == Counter(
        f"<{t}@fork.test>"
        for t in (
            "parent-1",
            "parent-obj",
            "parent-2",
            "fork-a",
            "fork-b",
            "fork-unused",
            "mp-a",
            "mp-b",
            "mp-unused",
        )
    )
    peer = dict(zip(ids, server.state.peers, strict=True))
    parent = peer["<parent-1@fork.test>"]
    assert peer["<parent-2@fork.test>"] == parent  # kept its pooled connection
    for tag in ("fork", "mp"):
        mine = {peer[f"<{tag}-a@fork.test>"], peer[f"<{tag}-b@fork.test>"]}
        assert len(mine) == 1, "the child's pool reuses its own connection"
        assert parent not in mine and peer["<parent-obj@fork.test>"] not in mine
