"""The package stays laid out as agreed: no import cycle, no package import inside a function, small modules and
functions, a docstring on every public function, and a test module beside every module."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "saetrack"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg.__init__`` as ``pkg``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``path`` imports at module level (``from a.b import c`` counts ``a.b.c`` if a module)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("saetrack"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.add(target if target in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("saetrack"))
    return found


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) & set(modules) for name, path in modules.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle
    graph = {a: {b for b in deps if not b.startswith(a + ".")} for a, deps in graph.items()}
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state[dep] == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif state[dep] == 0:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(graph):
        if state[name] == 0:
            visit(name, [name])
    assert not cycles, f"import cycles: {[' -> '.join(c) for c in cycles]}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size_function_size_inner_imports_and_docstrings(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} has over {MAX_MODULE_LINES} lines"
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
        assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {length} lines"
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("saetrack"):
                pytest.fail(f"{path.name}:{sub.lineno}: package import inside {node.name}()")
            if isinstance(sub, ast.Import) and any(a.name.startswith("saetrack") for a in sub.names):
                pytest.fail(f"{path.name}:{sub.lineno}: package import inside {node.name}()")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            assert ast.get_docstring(node), f"{path.name}: public function {node.name}() has no docstring"


def test_every_module_has_a_test_module() -> None:
    missing = []
    for path in _modules().values():
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        expected = ROOT / "tests" / Path(*parts[:-1]) / f"test_{parts[-1]}.py"
        if not expected.exists():
            missing.append(str(expected.relative_to(ROOT)))
    assert not missing, f"modules without a test module: {missing}"
