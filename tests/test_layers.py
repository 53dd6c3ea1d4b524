"""The layers contract: the package's imports point down the pipeline (DESIGN.md).

Every module of ``immunoprofile`` has a layer; an import from a module to one in a higher
layer "runs back up the pipeline". The package's import graph (module-level and
function-local imports alike, found with `ast`; imports under ``if TYPE_CHECKING:`` are
for type checkers only and do not count) must have no cycle, and at most
`MAX_BACK_UP` imports running back up. An import inside a function that warns with a
DeprecationWarning (the old spelling of a moved name) is listed in `DEPRECATED` instead
and goes away with that spelling.

``python tests/test_layers.py`` prints the numbers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "immunoprofile"

#: the pipeline's layers, first to last; a module belongs to the longest prefix listed
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "immunoprofile",  # the package itself: __version__ (its public names load lazily)
            "immunoprofile.exceptions",
            "immunoprofile._files",
            "immunoprofile._json",
            "immunoprofile._xml",
            "immunoprofile._threads",
            "immunoprofile._deprecate",
            "immunoprofile.progress",
            "immunoprofile.panel",
            "immunoprofile.sample",
            "immunoprofile.hierarchy",
        ),
    ),
    # the batch runner takes the per-file work as an argument: it needs only identities
    ("io", ("immunoprofile.io", "immunoprofile.cohort", "immunoprofile.batch")),
    (
        "prepare",
        (
            "immunoprofile.compensation",
            "immunoprofile.transforms",
            "immunoprofile.prepare",
            "immunoprofile.describe",
            "immunoprofile.simulate",
            "immunoprofile.examples",
        ),
    ),
    ("gate/cluster", ("immunoprofile.gating", "immunoprofile.clustering", "immunoprofile.interop")),
    ("quantify", ("immunoprofile.quantify", "immunoprofile.folder", "immunoprofile.results")),
    ("compare", ("immunoprofile.comparison", "immunoprofile.compare", "immunoprofile.stats")),
    ("present", ("immunoprofile.plots", "immunoprofile.report")),
    (
        "batch",
        (
            "immunoprofile.gating.run",
            "immunoprofile.interop.export",
            "immunoprofile.clustering.api",
            "immunoprofile.pipeline",
        ),
    ),
    ("cli", ("immunoprofile.cli", "immunoprofile.__main__")),
)

#: imports that may run back up the pipeline (DESIGN.md allows at most one)
MAX_BACK_UP = 1

#: (importer, imported) inside a deprecated spelling -> what goes away with it
DEPRECATED: dict[tuple[str, str], str] = {
    ("immunoprofile.sample", "immunoprofile.interop.exchange"): "Sample.to_flowkit/from_flowkit",
}


@dataclass(frozen=True)
class Import:
    """One import of a package module by another."""

    src: str
    dst: str
    line: int
    local: bool  # inside a function
    deprecated: bool  # inside a function that emits a DeprecationWarning


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _warns_deprecation(fn: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call)
        and ast.unparse(n.func).endswith("warn")
        and "DeprecationWarning" in ast.unparse(n)
        for n in ast.walk(fn)
    )


def imports_of(name: str, path: Path, modules: Iterable[str]) -> list[Import]:
    """The package modules ``name`` (at ``path``) imports, one entry per imported module."""
    known = set(modules)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []

    def target(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def add(dotted: str, line: int, local: bool, deprecated: bool) -> None:
        dst = target(dotted)
        if dst is not None and dst != name:
            out.append(Import(name, dst, line, local, deprecated))

    def visit(node: ast.AST, local: bool, deprecated: bool) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(ch, True, deprecated or _warns_deprecation(ch))
            elif isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                for sub in ch.orelse:  # the ``else`` of TYPE_CHECKING does run
                    visit(sub, local, deprecated)
            elif isinstance(ch, ast.Import):
                for a in ch.names:
                    add(a.name, ch.lineno, local, deprecated)
            elif isinstance(ch, ast.ImportFrom):
                if ch.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - ch.level + 1]
                    mod = ".".join([*base, *([ch.module] if ch.module else [])])
                else:
                    mod = ch.module or ""
                for a in ch.names:  # ``from pkg import submodule`` imports the submodule
                    full = f"{mod}.{a.name}"
                    add(full if full in known else mod, ch.lineno, local, deprecated)
            else:
                visit(ch, local, deprecated)

    visit(tree, False, False)
    return out


def package_imports(package: Path = PACKAGE) -> list[Import]:
    mods = module_names(package)
    return [i for name, f in mods.items() for i in imports_of(name, f, mods)]


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted:
    every import cycle lies inside one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = set(graph) | {w for ws in graph.values() for w in ws}

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return sorted(found)


def layer_of(module: str) -> int:
    """The index in `LAYERS` of ``module`` (by the longest prefix listed)."""
    best, best_len = -1, -1
    for k, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = k, len(p)
    return best


def back_up(imports: Iterable[Import], layer=layer_of) -> list[Import]:
    """The imports from a module to one in a later layer."""
    return [i for i in imports if layer(i.dst) > layer(i.src)]


def graph_of(imports: Iterable[Import]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for i in imports:
        g.setdefault(i.src, set()).add(i.dst)
    return g


# --- the contract ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return package_imports()


def test_every_module_has_a_layer():
    missing = [m for m in module_names(PACKAGE) if layer_of(m) < 0]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


def test_no_import_cycles(imports):
    live = [i for i in imports if not i.deprecated]
    assert cycles(graph_of(live)) == []


def test_at_most_one_import_runs_back_up_the_pipeline(imports):
    up = sorted({(i.src, i.dst) for i in back_up(i for i in imports if not i.deprecated)})
    assert len(up) <= MAX_BACK_UP, f"imports running back up the pipeline: {up}"


def test_deprecated_imports_are_the_listed_ones(imports):
    assert {(i.src, i.dst) for i in imports if i.deprecated} == set(DEPRECATED)


def test_only_the_version_comes_from_the_package_itself():
    """``from immunoprofile import X`` of a lazily loaded public name would hide an import."""
    mods = module_names(PACKAGE)
    bad = []
    for name, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "immunoprofile"
                and not node.level
            ):
                for a in node.names:
                    if a.name != "__version__" and f"immunoprofile.{a.name}" not in mods:
                        bad.append((name, a.name))
    assert bad == []


# --- the checks can fail -----------------------------------------------------------------


def _toy(edges: list[tuple[str, str]]) -> list[Import]:
    return [Import(s, d, k, False, False) for k, (s, d) in enumerate(edges)]


def test_an_injected_cycle_is_found():
    down = [("cli", "gate"), ("gate", "io"), ("gate", "sample"), ("io", "sample")]
    assert cycles(graph_of(_toy(down))) == []
    looped = [*down, ("sample", "gate")]  # sample -> gate -> io -> sample
    assert cycles(graph_of(_toy(looped))) == [["gate", "io", "sample"]]
    two = [*looped, ("cli", "report"), ("report", "cli")]
    assert cycles(graph_of(_toy(two))) == [["cli", "report"], ["gate", "io", "sample"]]


def test_an_import_back_up_is_counted():
    rank = {"io": 0, "sample": 0, "gate": 1, "report": 2, "cli": 3}.__getitem__
    ok = _toy([("cli", "report"), ("report", "gate"), ("gate", "io")])
    assert back_up(ok, rank) == []
    bad = _toy([*[(i.src, i.dst) for i in ok], ("io", "report"), ("gate", "gate")])
    assert [(i.src, i.dst) for i in back_up(bad, rank)] == [("io", "report")]


def test_the_walk_sees_function_local_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "immunoprofile"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "b.py").write_text("Y = 2\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from immunoprofile.cli import Z\n"
        "def f():\n    from ..low import X\n    return X\n"
        "def old():\n    import warnings\n"
        "    warnings.warn('x moved', DeprecationWarning)\n"
        "    from immunoprofile import low\n"
    )
    (pkg / "cli.py").write_text("import immunoprofile.sub.a\n")
    found = {
        (i.src, i.dst, i.local, i.deprecated)
        for i in package_imports(pkg)
        if i.src != "immunoprofile"
    }
    assert found == {
        ("immunoprofile.sub.a", "immunoprofile.sub.b", False, False),
        ("immunoprofile.sub.a", "immunoprofile.low", True, False),
        ("immunoprofile.sub.a", "immunoprofile.low", True, True),
        ("immunoprofile.cli", "immunoprofile.sub.a", False, False),
    }


if __name__ == "__main__":  # the numbers
    found = package_imports()
    live = [i for i in found if not i.deprecated]
    print("modules", len(module_names(PACKAGE)))
    print("import statements", len({(i.src, i.line) for i in found}))
    print("function-local import statements", len({(i.src, i.line) for i in found if i.local}))
    print("cycles", cycles(graph_of(live)))
    print("cycles with deprecated spellings", cycles(graph_of(found)))
    print("back up", sorted({(i.src, i.dst) for i in back_up(live)}))
    print("deprecated", sorted({(i.src, i.dst) for i in found if i.deprecated}))
