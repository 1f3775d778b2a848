"""The import graph of ``src/mailer``: no cycles, and the layer rules below.

Run by ``make lint``. A cycle is reported even when Python happens to cope with it (an import
inside a function, or one at the bottom of a module): such a cycle still means neither module
can be read, tested or moved without the other. An import under ``if TYPE_CHECKING:`` does not
count, because it never runs; that is the way for a lower layer to name a type of a higher one.

Standard library only (``ast``), so it needs no install and cannot itself import the package.

Usage: ``python tools/check_imports.py [SRC_DIR]`` (default ``src``); exit status 1 with the
cycles and the broken layer rules printed, 0 when the graph is clean.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    """``importer`` (a module or package, with everything under it) may import, of the
    project's own modules, only those under ``only`` besides itself (when ``only`` is not
    None), and never those under ``never``. ``why`` is printed with a broken rule."""

    importer: str
    why: str
    only: tuple[str, ...] | None = None
    never: tuple[str, ...] = ()


# Leaf helpers that import nothing of ours: any layer may use them.
BASE = ("mailer._errors", "mailer._options", "mailer._text")

# The front end and what sits on it: no layer below the Mailer reaches up into them.
FRONT = (
    "mailer._mailer",
    "mailer._front",
    "mailer._sync",
    "mailer._sync_call",
    "mailer._outbox",
    "mailer._config",
)
ON_TOP = ("mailer._integrations", "mailer._demo", "mailer._cli")

# The layer table of DESIGN.md ("Wave 3", "Layers"), as far as the code keeps it: this is
# its one home. Add a row when a rule starts to hold; `python tools/check_imports.py` shows
# what a new row would break.
LAYERS: tuple[Rule, ...] = (
    *(Rule(base, "a base helper imports nothing of ours", only=()) for base in BASE),
    Rule("mailer._message", "message is the bottom layer: it imports only the base", only=BASE),
    Rule("mailer._looplag", "the loop-lag monitor imports nothing of ours", only=()),
    Rule(
        "mailer._pgdriver",
        "the asyncpg import check serves every Postgres store: it imports only the errors",
        only=("mailer._errors",),
    ),
    Rule(
        "mailer._provider",
        "the provider interface knows no concrete provider and nothing above routing",
        never=("mailer.providers", *FRONT, *ON_TOP),
    ),
    Rule(
        "mailer._attempt",
        "the attempt layer sits between message and providers: routing and providers use it",
        never=("mailer.providers", "mailer._provider", "mailer._routing", *FRONT, *ON_TOP),
    ),
    Rule(
        "mailer.providers",
        "providers sit below routing, the Mailer, its outbox and its config",
        never=("mailer._routing", *FRONT, *ON_TOP),
    ),
    Rule(
        "mailer._routing",
        "routing drives providers through their interface, below the Mailer",
        never=("mailer.providers", *FRONT, *ON_TOP),
    ),
    Rule("mailer._mailer", "the Mailer is used by integrations, not the reverse", never=ON_TOP),
    Rule(
        "mailer._front",
        "the Mailer's parts serve the Mailer: they never import it, nor what sits on it",
        never=("mailer._mailer", "mailer._sync", "mailer._sync_call", *ON_TOP),
    ),
    Rule("mailer._outbox", "the outbox is used by integrations, not the reverse", never=ON_TOP),
    Rule(
        "mailer",
        "the command line is the top: only `mailer.__main__` and the console script use it",
        never=("mailer._cli",),
    ),
)

# Modules a rule does not bind: the entry points of the command line.
ENTRY_POINTS: frozenset[str] = frozenset({"mailer.__main__", "mailer._cli"})


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module at ``path`` under the source root ``root``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at any depth (functions, classes, ``try``),
    skipping the bodies of ``if TYPE_CHECKING:`` (but not their ``else``)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_imports(node.orelse)
        else:
            yield from _runtime_imports(ast.iter_child_nodes(node))


def _resolve(base: str, level: int, is_package: bool) -> str:
    """The package a relative import of ``level`` dots in module ``base`` starts from."""
    parts = base.split(".")
    drop = level - 1 if is_package else level
    if drop >= len(parts):
        raise ValueError(f"relative import beyond the top package in {base}")
    return ".".join(parts[: len(parts) - drop])


def imports_of(source: str, name: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The project modules that module ``name`` imports when it runs. ``from a import b``
    counts as importing ``a.b`` when that is a module of ours, else ``a``."""
    modules = set(known)
    found: set[str] = set()
    for stmt in _runtime_imports([ast.parse(source)]):
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        else:
            start = _resolve(name, stmt.level, is_package) if stmt.level else ""
            base = ".".join(p for p in (start, stmt.module or "") if p)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in stmt.names
            ]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph_of(src: Path) -> dict[str, set[str]]:
    """The runtime import graph of every module under ``src`` (a source root holding
    packages, like ``src/``)."""
    files = {module_name(path, src): path for path in sorted(src.rglob("*.py"))}
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", files)
        for name, path in files.items()
    }


def _parent_edges(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: those count as
    imported too, the way Python does it."""
    full: dict[str, set[str]] = {}
    for name, targets in graph.items():
        edges = set(targets)
        for target in targets:
            parts = target.split(".")
            for cut in range(1, len(parts)):
                parent = ".".join(parts[:cut])
                if parent in graph and not name.startswith(parent + ".") and parent != name:
                    edges.add(parent)
        full[name] = edges
    return full


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one
    cycle through its members, sorted so the output is stable."""
    full = _parent_edges(graph)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(full.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_a_cycle(sorted(component), full))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(full):
        if node not in index:
            visit(node)
    return sorted(found)


def _a_cycle(component: list[str], full: Mapping[str, set[str]]) -> list[str]:
    """One closed path through the component's first module (breadth first, so it is a
    shortest one), ending where it started: what a reader follows to see the cycle."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        step: list[str] = []
        for node in frontier:
            for nxt in sorted(full[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    step.append(nxt)
        frontier = step
    return [*component, start]  # unreachable for a strongly connected component


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_violations(graph: Mapping[str, set[str]], rules: Iterable[Rule] = LAYERS) -> list[str]:
    """Each import that breaks a rule, as ``importer -> imported (why)``."""
    broken: list[str] = []
    for rule in rules:
        for name in sorted(graph):
            if not _under(name, rule.importer) or any(_under(name, e) for e in ENTRY_POINTS):
                continue
            for target in sorted(graph[name]):
                ours = target.split(".")[0] == name.split(".")[0]
                refused = any(_under(target, n) and not _under(name, n) for n in rule.never) or (
                    ours
                    and rule.only is not None
                    and not _under(target, rule.importer)
                    and not any(_under(target, a) for a in rule.only)
                )
                if refused:
                    broken.append(f"{name} -> {target} ({rule.why})")
    return broken


def main(argv: list[str]) -> int:
    src = Path(argv[1] if len(argv) > 1 else "src")
    graph = graph_of(src)
    problems = [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    problems += [f"layer rule: {line}" for line in layer_violations(graph)]
    for line in problems:
        print(line)
    if not problems:
        print(f"import graph: {len(graph)} modules, no cycle, layer rules kept")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
