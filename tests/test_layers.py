"""The package layout: no import cycles, no re-exports, and each layer usable without what it does not need.

Which layer may import which is import-linter's contract (pyproject.toml, run by .ci/run); these tests
add what a layers contract does not see: cycles inside one layer, names passed on by a module that does
not define them, and the optional packages a layer must not pull in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seqpatch_core", "app")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports: at module level, in functions and under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            names = names or [node.module]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    # a package's __init__ is not an edge to each of its modules: the facade imports lazily and
    # stands above every layer
    return {m: _imports(p, modules) - {m} for m, p in modules.items() if m not in PACKAGES}


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m not in PACKAGES))
def test_a_module_exports_only_what_it_defines(module):
    """``__all__`` names only what the module defines, so every name has one import path."""
    path = _modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            imported.update(a.asname or a.name for a in node.names)
    exported = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported = set(ast.literal_eval(node.value))
    assert not exported & imported, f"{module} passes on {sorted(exported & imported)} from another module"


_BLOCK = "import sys; [sys.modules.__setitem__(m, None) for m in {blocked!r}]; "


@pytest.mark.parametrize(
    ("modules", "blocked"),
    [
        # the bottom layer: numpy and scipy only
        (["seqpatch_core.base.errors", "seqpatch_core.base.metrics", "seqpatch_core.base.tables"],
         ["torch", "SimpleITK", "gradio"]),
        # the accelerator machine has no SimpleITK: training, its data and the evaluation run there
        (["seqpatch_core.images.volume", "seqpatch_core.images.intensity", "seqpatch_core.training.loop",
          "seqpatch_core.evaluation.evaluate", "seqpatch_core.data.backgrounds"], ["SimpleITK", "gradio"]),
        # the core never needs the UI
        (["seqpatch_core.cli.main", "seqpatch_core.inference.predictor", "seqpatch_core.bench.paths"], ["gradio"]),
    ],
)
def test_layers_import_without_what_they_do_not_need(modules, blocked):
    code = _BLOCK.format(blocked=blocked) + "; ".join(f"import {m}" for m in modules)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1:]


def test_the_facade_names_the_defining_objects():
    import seqpatch_core
    from seqpatch_core.images.io import read_volume
    from seqpatch_core.inference.predictor import Predictor

    assert seqpatch_core.Predictor is Predictor and seqpatch_core.read_volume is read_volume
    assert set(seqpatch_core.__all__) >= {"Predictor", "load_models", "read_volume", "write_mask"}
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        seqpatch_core.nothing  # noqa: B018
