"""The package's layout: no import circles, and each room imports only the rooms it may.

The graph is read from the source (every ``import`` / ``from ... import``, at module level or
inside a function), so a circle closed by a lazy import counts too. Importing a submodule also
imports its parent packages; those edges are in the graph as well, except a module's edges to its
own parents, which are being imported already when it runs (a package's ``__init__`` that imports
its submodules is no circle). The top-level package, which registers everything, is the root every
module hangs from and is left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'omnisafe_alam'
ROOT = 'omnisafe_alam'


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob('*.py'))}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, resolved to modules (not names in them)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (parents included, the root left out)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == ROOT:
            continue
        edges = _imports(path, set(modules))
        for target in list(edges):  # importing a.b.c runs a and a.b first
            parts = target.split('.')
            edges.update('.'.join(parts[:i]) for i in range(2, len(parts)))
        parents = {'.'.join(name.split('.')[:i]) for i in range(1, name.count('.') + 1)}
        graph[name] = {target for target in edges if target not in (ROOT, name, *parents)}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path back to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state:
                circle = visit(target)
                if circle:
                    return circle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            circle = visit(node)
            if circle:
                return circle
    return None


def test_the_circle_finder_finds_a_circle_closed_by_a_lazy_import() -> None:
    assert find_circle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_circle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None
    source = 'import os\ndef f():\n    from omnisafe_alam.core import training\n'
    path = PACKAGE.parent / '.layout_probe.py'
    try:
        path.write_text(source, encoding='utf-8')
        assert _imports(path, {'omnisafe_alam.core', 'omnisafe_alam.core.training'}) == {
            'omnisafe_alam.core',
            'omnisafe_alam.core.training',
        }
    finally:
        path.unlink()


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) >= 25, sorted(graph)  # the walk saw the package
    assert find_circle(graph) is None, ' -> '.join(find_circle(graph) or [])


def test_each_room_imports_only_what_it_may() -> None:
    """core and glue never reach the tools; the glue's lower modules never reach the algorithms
    (registration is the one glue module that imports them: to register them)."""
    graph = import_graph()
    rooms = {name: name.split('.')[1] for name in graph}
    for name, targets in graph.items():
        for target in targets:
            if rooms[name] in ('core', 'glue', 'envs'):
                assert rooms[target] != 'tools', f'{name} imports {target}'
            if rooms[name] == 'glue' and name != f'{ROOT}.glue.registration':
                allowed = {f'{ROOT}.core', f'{ROOT}.core.functional'}
                assert rooms[target] != 'core' or target in allowed, f'{name} imports {target}'
    assert f'{ROOT}.glue.defaults' in graph[f'{ROOT}.core.training']
    assert f'{ROOT}.glue.registration' not in graph[f'{ROOT}.core.training']


@pytest.mark.parametrize('module', ['omnisafe_alam.core.training', 'omnisafe_alam.glue.registration'])
def test_a_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """The two ends of the old circle import on their own (the package's own import then
    registers everything)."""
    code = f'import {module}, omnisafe.algorithms as a; assert "SACALaM" in a.ALGORITHM2TYPE'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
