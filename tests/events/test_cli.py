"""``mailer suppression list|add|remove|import|export`` and ``mailer events list``, run as
the console command, against a SQLite store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def mailer(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(f'providers = ["memory://"]\nsuppression = "sqlite:///{tmp_path / "m.db"}"\n')
    return path


def test_add_list_remove_export_import(config: Path, tmp_path: Path) -> None:
    added = mailer(
        config, "suppression", "add", "A@Example.COM", "b@example.org", "--reason", "legal"
    )
    assert added.returncode == 0, added.stderr
    assert "2 added, 0 already suppressed" in added.stdout
    listing = mailer(config, "suppression", "list")
    lines = listing.stdout.splitlines()
    assert lines[0] == "address\treason\tprovider\tmessage_id\tcreated"
    assert [line.split("\t")[:2] for line in lines[1:]] == [
        ["A@example.com", "legal"],
        ["b@example.org", "legal"],
    ]
    exported = tmp_path / "list.csv"
    assert mailer(config, "suppression", "export", "-o", str(exported)).returncode == 0
    assert exported.read_text().splitlines()[1].startswith("A@example.com,legal,,,")

    gone = mailer(config, "suppression", "remove", "b@example.org", "nobody@example.org")
    assert gone.returncode == 1 and "1 of 2 removed" in gone.stdout
    assert "not on the list" in gone.stderr

    # import: the exported file (one already there), plus a plain list with a bad row
    # b comes back, with its exported reason and time
    assert "1 added, 1 already" in mailer(config, "suppression", "import", str(exported)).stdout
    plain = "address\nc@example.org\nnot an address\nd@EXAMPLE.org\n"
    imported = mailer(config, "suppression", "import", "-", stdin=plain)
    assert imported.returncode == 1
    assert "2 added" in imported.stdout and "lines 3" in imported.stderr
    final = mailer(config, "suppression", "export").stdout
    assert sorted(row.split(",")[:2] for row in final.splitlines()[1:]) == [
        ["A@example.com", "legal"],
        ["b@example.org", "legal"],
        ["c@example.org", "imported"],
        ["d@example.org", "imported"],
    ]
    no_column = mailer(config, "suppression", "import", "-", stdin="email\nx@example.org\n")
    assert no_column.returncode == 2 and "no `address` column" in no_column.stderr
    bad = mailer(config, "suppression", "add", "not-an-address")
    assert bad.returncode == 2 and "local@domain" in bad.stderr


def test_events_list_none(config: Path) -> None:
    done = mailer(config, "events", "list", "--message-id", "<nothing@example.org>")
    assert done.returncode == 1 and "no events stored" in done.stderr


def test_events_purge(config: Path, tmp_path: Path) -> None:
    """Events stored long ago go, recent ones stay, the suppression list is untouched;
    a bad --older-than is refused before the store is opened."""
    from mailer import SyncMailer

    from .conftest import event

    with SyncMailer.from_config(config) as sync_mailer:
        events = [event("delivered", message_id="<old@example.com>", event_id="e1"),
                  event("bounced", bounce="hard", message_id="<old@example.com>",
                        event_id="e2"),
                  event("delivered", message_id="<new@example.com>", event_id="e3")]  # fmt: skip
        assert sync_mailer.ingest_events(events).new == 3
    with sqlite3.connect(tmp_path / "m.db") as db:  # the first two stored 2 days ago
        db.execute("UPDATE mailer_events SET stored = stored - 172800 WHERE event_key != 'e3'")

    done = mailer(config, "events", "purge", "--older-than", "1d")
    assert done.returncode == 0, done.stderr
    assert "purged 2 events" in done.stdout
    assert mailer(config, "events", "list", "--message-id", "<old@example.com>").returncode == 1
    assert "e3" in mailer(config, "events", "list", "--message-id", "<new@example.com>").stdout
    assert "user@example.org" in mailer(config, "suppression", "list").stdout  # kept

    # the default is events.retention (30 days): nothing is that old
    assert "purged 0 events" in mailer(config, "events", "purge").stdout
    for bad in ("banana", "0"):
        refused = mailer(config, "events", "purge", "--older-than", bad)
        assert refused.returncode == 2 and "--older-than" in refused.stderr
