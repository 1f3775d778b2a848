"""What a contributor expects to find: a license, one version source, the test plugin kept
out of the install, and a pre-commit config that runs the checks CI runs."""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from pathlib import Path

import mailer

ROOT = Path(__file__).parents[2]


def test_license_is_the_mit_text_pyproject_declares() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    for name in ("CHANGELOG.md", "CONTRIBUTING.md"):
        assert (ROOT / name).is_file()
    assert "## Adding a provider" in (ROOT / "CONTRIBUTING.md").read_text()


def test_one_version_source_for_the_package_and_its_plugins() -> None:
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in core["project"] and core["project"]["dynamic"] == ["version"]
    assert core["tool"]["hatch"]["version"]["path"] == "src/mailer/__init__.py"
    assert importlib.metadata.version("mailer-failover") == mailer.__version__
    for plugin in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        data = tomllib.loads(plugin.read_text())
        assert "version" not in data["project"], plugin
        source = (plugin.parent / data["tool"]["hatch"]["version"]["path"]).resolve()
        assert source == ROOT / "src" / "mailer" / "__init__.py", plugin
        assert importlib.metadata.version(data["project"]["name"]) == mailer.__version__


def test_the_test_plugin_is_not_installed() -> None:
    dist = importlib.metadata.distribution("mailer-testplugin")
    where = Path(str(dist.locate_file(""))).resolve()
    assert (ROOT / "tests" / "fixtures").resolve() in where.parents  # found only on sys.path
    makefile = (ROOT / "Makefile").read_text()
    assert "tests/fixtures" not in makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]


def test_pre_commit_runs_ruff_and_mypy() -> None:
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    for command in ("ruff check", "ruff format --check", "mypy"):
        assert command in config


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in a kit (``mailer.testing``, or a directory's ``kit.py`` /
    ``*_kit.py`` / conftest), never in a test module another one imports: pytest would
    collect that module's tests under two names' worth of fixtures, a rename breaks an
    unrelated file, and nobody looks for a server class in ``test_something.py``."""
    found = set()
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if last.startswith("test_"):
                    found.add((str(path.relative_to(ROOT)), last))
    assert not found, sorted(found)
