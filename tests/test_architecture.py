"""Architecture checks: data flows one way, so every import points down the layers of
``LAYERS`` (docs/architecture.md) and awcl's modules import each other without circles
(imports inside functions count too: they only hide an upward import or a circle); each
module imports on its own; no function is over 60 lines unless it says why
(``# long: <reason>``)."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "awcl"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = sorted(_module_name(p) for p in PKG.rglob("*.py") if p.name != "__main__.py")


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """awcl module -> the awcl modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve(node, name, path.name == "__init__.py")
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
            for t in targets:
                while t and t not in MODULES:
                    t = t.rpartition(".")[0]
                if t.startswith("awcl.") and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]


# ------------------------------------------------------------------------ import direction
# The layers, lowest first: a module may import modules of its own layer or of a lower one,
# never of a higher one. A package or module name places everything under it; the longest
# name that matches wins ("awcl" itself is only the package's __init__).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shared", ("awcl", "awcl._compat", "awcl.errors", "awcl.logs", "awcl.options", "awcl.atomic",
                "awcl.locking", "awcl.secret", "awcl.config", "awcl.config_checks", "awcl.config_env",
                "awcl.config_flags", "awcl.backbones", "awcl.geometry")),
    ("data", ("awcl.data",)),
    ("models", ("awcl.losses", "awcl.models")),
    ("runtime", ("awcl.runtime",)),
    ("methods", ("awcl.methods",)),
    ("train", ("awcl.train",)),
    ("evaluate", ("awcl.evaluate",)),
    ("study", ("awcl.study",)),
    ("command", ("awcl.cli", "awcl.__main__")),
)  # fmt: skip


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the layer ``module`` belongs to (None: no layer names it)."""
    best, layer = "", None
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (module == n or (n != "awcl" and module.startswith(n + "."))) and len(n) > len(best):
                best, layer = n, i
    return layer


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer's module, as "importer (layer) imports imported (layer)"."""
    found = []
    for mod in sorted(graph):
        for dep in sorted(graph[mod]):
            a, b = layer_of(mod), layer_of(dep)
            if a is not None and b is not None and b > a:
                found.append(f"{mod} ({LAYERS[a][0]}) imports {dep} ({LAYERS[b][0]})")
    return found


def test_every_module_has_a_layer():
    missing = sorted(m for m in import_graph() if layer_of(m) is None)
    assert not missing, "modules in no layer (add them to LAYERS and docs/architecture.md): " + ", ".join(missing)


def test_imports_follow_the_flow():
    found = upward_imports(import_graph())
    order = " < ".join(name for name, _ in LAYERS)
    assert not found, f"imports against the flow ({order}):\n  " + "\n  ".join(found)


def test_direction_check_finds_a_planted_upward_import():
    g = {
        "awcl.data.recipes.hc18": {"awcl.evaluate.metrics", "awcl.data.store", "awcl.errors"},
        "awcl.methods.base": {"awcl.train.distributed", "awcl.runtime.distributed"},
        "awcl.evaluate.fit": {"awcl.train.engine", "awcl.data.store"},  # down the flow: fine
        "awcl.errors": {"awcl.data.store"},
    }
    assert upward_imports(g) == [
        "awcl.data.recipes.hc18 (data) imports awcl.evaluate.metrics (evaluate)",
        "awcl.errors (shared) imports awcl.data.store (data)",
        "awcl.methods.base (methods) imports awcl.train.distributed (train)",
    ]
    assert layer_of("awcl.config_env") == layer_of("awcl") == 0  # not the data layer's "awcl.data"
    assert layer_of("awcl.data.store.merge") == 1 and layer_of("awcl.unknown") is None


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    saved = {k: v for k, v in sys.modules.items() if k == "awcl" or k.startswith("awcl.")}
    for k in saved:
        del sys.modules[k]
    try:
        importlib.import_module(module)
    finally:
        for k in [k for k in sys.modules if k == "awcl" or k.startswith("awcl.")]:
            del sys.modules[k]
        sys.modules.update(saved)


# ------------------------------------------------------------------------ function length
MAX_FUNCTION_LINES = 60
_LONG_MARK = re.compile(r"^\s*# long: \S")  # "# long: <why this reads best as one piece>"


def long_functions(source: str, filename: str = "<source>") -> list[str]:
    """Functions (and methods) over MAX_FUNCTION_LINES lines, ``def`` to last line, that do
    not say why with a ``# long: <reason>`` comment at the top of their body (between the
    signature or docstring and the first statement)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        body = node.body
        first = body[1] if ast.get_docstring(node, clean=False) is not None and len(body) > 1 else body[0]
        top = lines[node.lineno - 1 : first.lineno - 1]  # signature, docstring, leading comments
        if not any(_LONG_MARK.match(line) for line in top):
            found.append(f"{filename}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_functions_are_short():
    found = [f for p in sorted(PKG.rglob("*.py")) for f in long_functions(p.read_text(), str(p.relative_to(SRC)))]
    assert not found, (
        f"functions over {MAX_FUNCTION_LINES} lines; split them, or say why one reads best as one piece "
        "with a '# long: <reason>' comment at the top of its body:\n  " + "\n  ".join(found)
    )


def test_length_check_finds_a_planted_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    long_src = f'def f():\n    """Doc."""\n{body}'
    assert long_functions(long_src) == [f"<source>:1 f ({MAX_FUNCTION_LINES + 2} lines)"]
    marked = f'def f():\n    """Doc."""\n    # long: one straight sequence\n{body}'
    assert long_functions(marked) == []
    # the mark must carry a reason and sit at the top, not deep inside the body
    assert long_functions(f"def f():\n    # long:\n{body}")
    assert long_functions(f"def f():\n{body}    # long: too late\n    return 0\n")
    short = "def g():\n" + "".join(f"    y{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(short) == []
