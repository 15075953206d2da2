"""The package map in docs/ARCHITECTURE.md is a rule, not a wish: data flows one way through the stages, no module
imports itself back through a cycle, the instrumentation (inside customers' processes) never loads the processor,
and product code never imports the demo. Read from the source with ``ast``, so a change that breaks the layering
fails here, wherever it hides."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROCESSOR = "tokentrail.processor"

# Stage -> floor. A module may import from its own stage or from a stage on a lower floor, never higher.
# Keep in step with "Pipeline" in docs/ARCHITECTURE.md.
FLOORS: dict[str, int] = {
    "schema": 0,
    "errors": 0,
    "environment": 0,
    "pricing": 1,
    "normalize": 2,
    "storage": 3,
    "reports": 4,
    "ingest": 4,
    "api": 5,
    "demo": 6,
    "cli": 7,
}


def _modules(folder: str, package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT / folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join((package, *parts)), path


def _imports(path: Path, *, module_level_only: bool) -> Iterator[str]:
    """Absolute module names imported by a file (``from a.b import c`` gives ``a.b`` and ``a.b.c``: c may be a
    module). Imports under ``if TYPE_CHECKING:`` are for type checkers only and are skipped."""
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = list(tree.body) if module_level_only else list(ast.walk(tree))
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") and module_level_only:
                nodes.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try) and module_level_only:
            nodes.extend(node.body + node.orelse + node.finalbody + [h for x in node.handlers for h in x.body])
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _stage(module: str) -> str:
    return module.removeprefix(PROCESSOR + ".").split(".")[0]


PROCESSOR_MODULES = dict(_modules("processor", PROCESSOR))


@functools.cache
def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target in _imports(path, module_level_only=True) if target in PROCESSOR_MODULES} - {name}
        for name, path in PROCESSOR_MODULES.items()
        if name != PROCESSOR  # the package facade re-exports lazily, by name
    }


def test_every_stage_has_a_floor() -> None:
    stages = {_stage(name) for name in PROCESSOR_MODULES if name != PROCESSOR}
    assert stages == set(FLOORS)


@pytest.mark.parametrize("module", sorted(set(PROCESSOR_MODULES) - {PROCESSOR}))
def test_a_module_imports_only_its_own_stage_or_lower_ones(module: str) -> None:
    upward = sorted(
        target
        for target in _graph()[module]
        if target != PROCESSOR and FLOORS[_stage(target)] > FLOORS[_stage(module)]
    )
    assert not upward, f"{module} (floor {FLOORS[_stage(module)]}) imports upward: {upward}"


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_instrumentation_never_imports_the_processor() -> None:
    for name, path in _modules("instrumentation", "tokentrail.instrumentation"):
        found = [t for t in _imports(path, module_level_only=False) if t.startswith(PROCESSOR)]
        assert not found, (name, found)


def test_product_code_never_imports_the_demo() -> None:
    allowed = {f"{PROCESSOR}.cli.demo"}  # the `tokentrail demo` command starts it
    for name, path in PROCESSOR_MODULES.items():
        if _stage(name) == "demo" or name in allowed:
            continue
        found = [t for t in _imports(path, module_level_only=False) if t.startswith(f"{PROCESSOR}.demo")]
        assert not found, (name, found)
