"""A bad config (or a bad option) is one line and a hint, exit 2, no traceback."""

from __future__ import annotations

from typing import Any

import pytest

BAD_CONFIGS = {
    "missing file": (None, "cannot read config file", "--config"),
    "invalid TOML": ("[[providers]\ntype = ", "is not valid TOML", "syntax"),
    "unknown type": (
        '[[providers]]\ntype = "nope"\n',
        "unknown provider type 'nope'",
        "mailer providers",
    ),
    "unknown option": (
        '[[providers]]\ntype = "smtp"\nconfig = { hots = "x" }\n',
        "hots: unknown option; did you mean host?",
        "mailer docs configuration",
    ),
    "missing env": (
        '[[providers]]\ntype = "resend"\nconfig = { api_key = "${NOT_SET_X}" }\n',
        "environment variable NOT_SET_X is not set",
        "export it",
    ),
    "broken plugin": ('[[providers]]\ntype = "broken"\n', "failed to load", "mailer providers"),
}


@pytest.mark.parametrize("command", ["verify", "send"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_and_exit_2(
    mailer_cli: Any, write_config: Any, tmp_path: Any, case: str, command: str
) -> None:
    text, expected, hint = BAD_CONFIGS[case]
    path = write_config(text) if text is not None else tmp_path / "missing.toml"
    args = ["--to", "u@example.org", "--from", "a@example.com"] if command == "send" else []
    result = mailer_cli(command, "--config", str(path), *args)
    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: config: ") and expected in lines[0]
    assert lines[1].startswith("hint: ") and hint in lines[1]
    assert "Traceback" not in result.output


def test_secret_in_config_never_echoed(mailer_cli: Any, write_config: Any) -> None:
    path = write_config(
        '[[providers]]\ntype = "resend"\nconfig = { api_key = "re_supersecret_value", bogus = 1 }\n'
    )
    result = mailer_cli("verify", "-c", str(path))
    assert result.code == 2
    assert "bogus" in result.stderr
    assert "re_supersecret_value" not in result.output


def test_debug_shows_the_traceback(mailer_cli: Any, write_config: Any) -> None:
    path = write_config('[[providers]]\ntype = "nope"\n')
    result = mailer_cli("--debug", "verify", "-c", str(path))
    assert result.code == 2
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr
    assert "error: config: unknown provider type" in result.stderr


def test_mailer_config_env_var_is_the_default_config(mailer_cli: Any, write_config: Any) -> None:
    path = write_config('[[providers]]\ntype = "nope"\n', name="elsewhere.toml")
    result = mailer_cli("verify", env={"MAILER_CONFIG": str(path)})
    assert result.code == 2
    assert "unknown provider type 'nope'" in result.stderr


def test_usage_error_exit_2(mailer_cli: Any) -> None:
    result = mailer_cli("preview")
    assert result.code == 2
    assert "Missing argument" in result.output
    # doctor takes HOST or --domain: neither is the same usage error, said in its words
    result = mailer_cli("doctor")
    assert result.code == 2
    assert "give an SMTP HOST to probe, or --domain DOMAIN" in result.output


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"to": "a@example.org"}, "defaults.sender"),  # no sender: not a header-injection hint
        ({"sender": "a@example.com"}, "--to"),
        ({"sender": "a@example.com", "to": "a@b.org", "subject": "x\r\nBcc: c@d.org"}, "forge"),
        ({"sender": "a@example.com", "to": "not an address"}, "one plain address"),
        ({"sender": "a@example.com", "to": "a@b.org", "attachments": ["/no/such"]}, "the path"),
    ],
)
def test_message_errors_get_hints_that_fit(fields: dict[str, Any], needle: str) -> None:
    from mailer import Message, MessageError
    from mailer._cli.common import explain

    try:
        message = Message(**fields)
        message.envelope_sender  # noqa: B018
    except MessageError as exc:
        text, hint, code = explain(exc)
    else:
        raise AssertionError("no MessageError")
    assert code == 2 and text.startswith("message: ")
    assert hint is not None and needle in hint, hint
    if needle != "forge":
        assert "header" not in hint


def test_every_page_a_hint_names_is_shipped() -> None:
    import re
    from pathlib import Path

    import mailer._cli
    from mailer._docs import page_path

    package = Path(mailer._cli.__file__).parent
    source = "\n".join(path.read_text() for path in sorted(package.glob("*.py")))
    pages = set(re.findall(r'see\("([a-z-]+)"', source))
    assert {"configuration", "troubleshooting", "security"} <= pages
    for page in pages:
        assert page_path(page) is not None, page
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"docs" = "mailer/docs"' in pyproject  # the wheel carries them


def test_docs_command_shows_a_page(mailer_cli: Any) -> None:
    result = mailer_cli("docs", "configuration")
    assert result.code == 0 and "Coming from Nodemailer / NexoMailer" in result.stdout
    assert mailer_cli("docs", "nope").code == 2
