"""``mailer preview NAME --data FILE``: the local rendering, as send() would make it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Runner = Callable[..., Any]


def _templates(folder: Path) -> Path:
    folder.mkdir()
    (folder / "welcome.subject.txt").write_text("Welcome, {{ name }}!\n")
    (folder / "welcome.txt").write_text("Hi {{ name }}.\n")
    (folder / "welcome.html").write_text("<p>Hi {{ name }}</p>\n")
    return folder


def test_preview_prints_the_rendered_parts(mailer_cli: Runner, tmp_path: Path) -> None:
    folder = _templates(tmp_path / "t")
    (tmp_path / "data.json").write_text(json.dumps({"name": "<Ada>"}))
    result = mailer_cli("preview", "welcome", "--data", "data.json", "--templates", str(folder))
    assert result.code == 0, result.stderr
    assert "Subject: Welcome, <Ada>!" in result.stdout
    assert "Hi <Ada>." in result.stdout
    assert "<p>Hi &lt;Ada&gt;</p>" in result.stdout


def test_preview_reads_the_dir_from_the_config_and_prints_json(
    mailer_cli: Runner, tmp_path: Path
) -> None:
    _templates(tmp_path / "t")
    (tmp_path / "mailer.toml").write_text(
        'templates = { dir = "t" }\n[[providers]]\ntype = "memory"\n'
    )
    (tmp_path / "data.json").write_text(json.dumps({"name": "Ada"}))
    result = mailer_cli("preview", "welcome", "--data", "data.json", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "ok": True, "subject": "Welcome, Ada!", "text": "Hi Ada.\n", "html": "<p>Hi Ada</p>",
    }  # fmt: skip


def test_preview_names_a_missing_variable(mailer_cli: Runner, tmp_path: Path) -> None:
    folder = _templates(tmp_path / "t")
    result = mailer_cli("preview", "welcome", "--templates", str(folder))
    assert result.code == 2
    assert "'name' is undefined" in result.stderr
