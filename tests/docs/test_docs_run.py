"""Every Python block in README.md and docs/ runs as written, against local servers.

Each page's blocks run in order, each as its own ``python`` process, in one folder per
page that holds the quickstart's ``mailer.toml``. The blocks are not edited: the world
around them is. Host names the docs use (``smtp.example.com:587``) resolve to an aiosmtpd
server on 127.0.0.1 (a ``sitecustomize`` in the child maps them), whose certificate for
that name is signed by a CA the child trusts (``SSL_CERT_FILE``), and the environment
variables the blocks read are set. So a block that sends really sends: the README's
example is checked at the server.

An HTML comment right above a block changes what happens to it:

* ``<!-- docs-run: save PATH -->``: written to PATH in the page's folder (later blocks
  import it);
* ``<!-- docs-run: install pyproject.toml -->`` (on a ``toml`` block): registered as
  pip would, a dist-info with its entry points, so ``type = "acme"`` finds it;
* ``<!-- docs-run: pytest PATH -->``: written to PATH and run with pytest;
* ``<!-- docs-run: skip: REASON -->``: not run; the reason is required.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailer.testing import USERS, Certs, SMTPTestServer, make_certs

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SMTP_PASSWORD = "docs-run-password"
ENV = {
    "SMTP_PASSWORD": SMTP_PASSWORD,
    "RESEND_API_KEY": "re_docs_run_key",
    "SENDGRID_API_KEY": "SG.docs-run",
}
#: names the docs connect to, served by the local SMTP server
HOSTS = ("smtp.example.com",)

_BLOCK = re.compile(
    r"(?:<!--\s*docs-run:\s*(?P<directive>.*?)\s*-->\n)?```(?P<lang>[a-z]+)\n(?P<code>.*?)```",
    re.S,
)

SITECUSTOMIZE = '''\
"""docs-run: resolve the docs' host names to the local test servers."""
import json, os, socket

_MAP = json.loads(os.environ.get("DOCS_RUN_HOSTS", "{}"))
_real = socket.getaddrinfo


def _getaddrinfo(host, port, *args, **kwargs):
    target = _MAP.get(f"{host}:{port}")
    if target is not None:
        host, port = target.rsplit(":", 1)
    return _real(host, int(port) if port is not None else None, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo
'''


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    directive: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in _BLOCK.finditer(text):
        lang, directive = m.group("lang"), m.group("directive") or ""
        if lang == "python" or directive.startswith("install"):
            line = text.count("\n", 0, m.start("code"))
            found.append(Block(page, line, lang, m.group("code"), directive))
    return found


def _quickstart_toml() -> str:
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    return text.split("`mailer.toml`:", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def docs_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(Path(tmp_path_factory.mktemp("docs-certs")), HOSTS)


@pytest.fixture
def smtp(docs_certs: Certs) -> Iterator[SMTPTestServer]:
    users = {**USERS, "app@example.com": SMTP_PASSWORD}
    server = SMTPTestServer(docs_certs, tls="starttls", users=users).start()
    yield server
    server.stop()


def _install(pyproject: str, site: Path) -> None:
    """Register a project as pip would: a dist-info with its entry points."""
    project = tomllib.loads(pyproject)["project"]
    name = project["name"]
    dist = site / f"{name.replace('-', '_')}-{project.get('version', '0')}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {project.get('version', '0')}\n"
    )
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=90, check=False
    )


@pytest.mark.parametrize(
    "page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_blocks_run_as_written(
    page: Path, tmp_path: Path, smtp: SMTPTestServer, docs_certs: Certs
) -> None:
    found = blocks(page)
    (tmp_path / "mailer.toml").write_text(_quickstart_toml())
    site = tmp_path / "src"  # saved modules and "installed" projects
    site.mkdir()
    hooks = tmp_path / "_docs_run"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(ENV)
    env.update(
        PYTHONPATH=os.pathsep.join([str(hooks), str(site), env.get("PYTHONPATH", "")]),
        SSL_CERT_FILE=str(docs_certs.ca_file),
        DOCS_RUN_HOSTS=json.dumps({f"{h}:587": f"127.0.0.1:{smtp.port}" for h in HOSTS}),
    )
    ran = 0
    for block in found:
        verb, _, arg = block.directive.partition(" ")
        if verb == "skip:":
            assert arg.strip(), f"{block.id}: a skipped block needs a reason"
            continue
        if verb == "install":
            _install(block.code, site)
            continue
        if verb == "save":
            target = tmp_path / arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
            continue
        if verb == "pytest":
            target = tmp_path / arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
            args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)]
        else:
            assert not block.directive, f"{block.id}: unknown directive {block.directive!r}"
            script = tmp_path / f"block_{block.line}.py"
            script.write_text(block.code)
            args = [sys.executable, str(script)]
        result = _run(args, tmp_path, env)
        assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"
        if verb == "pytest":
            assert re.search(r"\b\d+ passed", result.stdout), result.stdout
        ran += 1
    assert ran or all(b.directive for b in found)
    if page.name == "README.md":
        # the async example really sent, through the local server, with the password
        assert smtp.wait_for(lambda: len(smtp.state.messages) >= 1)
        assert "AUTH PLAIN" in smtp.state.commands or "AUTH LOGIN" in smtp.state.commands
        assert "STARTTLS" in smtp.state.verbs()


def test_the_runner_sees_every_block() -> None:
    total = sum(len(blocks(p)) for p in PAGES)
    raw = sum(p.read_text(encoding="utf-8").count("```python\n") for p in PAGES)
    assert total >= raw and raw >= 10
