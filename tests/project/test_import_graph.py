"""The import-graph check of `make lint` (tools/check_imports.py), on tiny synthetic trees:
it has to see the cycles Python itself tolerates (imports in functions, at the bottom) and
ignore the ones that never run (under TYPE_CHECKING), or the lint proves nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "tools/check_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


check = _checker()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "src"


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "def f():\n    from .a import thing\n    return thing\n",
        },
    )
    assert check.cycles(check.graph_of(src)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_type_checking_imports_do_not_count_but_their_else_does(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import B\n",
        "pkg/b.py": ("import typing\nif typing.TYPE_CHECKING:\n    from .a import A\nB = 1\n"),
    }
    assert check.cycles(check.graph_of(_tree(tmp_path, files))) == []
    files["pkg/b.py"] = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    pass\nelse:\n    from . import a\n"
    )
    assert check.cycles(check.graph_of(_tree(tmp_path, files))) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_relative_imports_resolve_from_packages_and_modules(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub import x\n",
            "pkg/low.py": "",
            "pkg/sub/__init__.py": "from .. import low\nfrom ..low import y\n",
            "pkg/sub/x.py": "from .. import low as _low\nimport pkg.low\n",
        },
    )
    graph = check.graph_of(src)
    assert graph["pkg"] == {"pkg.sub.x"}
    assert graph["pkg.sub"] == {"pkg.low"}
    assert graph["pkg.sub.x"] == {"pkg.low"}


def test_importing_a_submodule_runs_its_package_first(tmp_path: Path) -> None:
    # pkg/__init__ imports pkg.a; pkg.b imports pkg.inner.c, whose package imports pkg.b
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/b.py": "from .inner.c import C\n",
            "pkg/inner/__init__.py": "from .. import b\n",
            "pkg/inner/c.py": "C = 1\n",
        },
    )
    assert check.cycles(check.graph_of(src)) == [["pkg.b", "pkg.inner", "pkg.b"]]


def test_layer_rules_report_what_breaks_them_and_why(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/base.py": "",
            "pkg/low/__init__.py": "from . import part\n",
            "pkg/low/part.py": "from .. import base\nfrom ..high import thing\n",
            "pkg/high.py": "from .low import part\nthing = 1\n",
            "pkg/cli.py": "from . import high\n",
            "pkg/user.py": "def f():\n    from . import cli\n",
        },
    )
    rules = (
        check.Rule("pkg.low", "low is the bottom", only=("pkg.base",)),
        check.Rule("pkg", "nobody uses the cli", never=("pkg.cli",)),
    )
    assert check.layer_violations(check.graph_of(src), rules) == [
        "pkg.low.part -> pkg.high (low is the bottom)",
        "pkg.user -> pkg.cli (nobody uses the cli)",
    ]


def test_main_prints_the_cycle_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _tree(
        tmp_path,
        {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "import pkg.a\n"},
    )
    assert check.main(["check_imports", str(src)]) == 1
    assert capsys.readouterr().out == "import cycle: pkg.a -> pkg.b -> pkg.a\n"


def test_the_project_graph_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["check_imports", str(ROOT / "src")]) == 0, capsys.readouterr().out
