"""litecoder's own import graph, read from the source (never by importing it).

A stage's code dependencies in dvc.yaml are the files of its import closure inside
`litecoder/` (so DVC re-runs a stage when any module it runs changes), and the graph must have
no cycles (tests/test_pipeline_dvc.py). Imports inside functions count (they run too); those
under `if TYPE_CHECKING:` do not; a string constant that is an import path
("litecoder.harbor.environment:LitecoderEnvironment", which Harbor loads) counts as an import.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

PACKAGE = "litecoder"
SOURCE = Path(__file__).resolve().parent  # litecoder/
_IMPORT_PATH = re.compile(rf"({PACKAGE}(?:\.\w+)+):\w+")


def _module_name(path: Path, package_dir: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` inside `module`."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def _imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    out: set[str] = set()

    def visit(nodes: list[ast.stmt] | list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if m := _IMPORT_PATH.fullmatch(node.value):
                    out.add(m.group(1))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                subs = {f"{base}.{a.name}" for a in node.names} & known
                out.update(subs)
                if len(subs) < len(node.names):  # names defined in `base` itself
                    out.add(base)
            visit(list(ast.iter_child_nodes(node)))

    visit(tree.body)
    return out


@cache
def graph(package_dir: Path = SOURCE) -> dict[str, frozenset[str]]:
    """module -> the modules of the same package it imports."""
    files = {_module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    known = set(files)
    return {
        name: frozenset(
            m
            for m in _imports(ast.parse(p.read_bytes()), name, p.name == "__init__.py", known)
            if m in known and m != name
        )
        for name, p in files.items()
    }


def module_file(module: str, package_dir: Path = SOURCE) -> Path:
    rel = Path(*module.split(".")[1:])
    pkg = package_dir / rel / "__init__.py"
    return pkg if pkg.exists() else (package_dir / rel).with_suffix(".py")


def closure(module: str, package_dir: Path = SOURCE) -> set[str]:
    """`module` and everything it imports, directly or not, inside the package (a module's
    parent packages run first, so they count too)."""
    g = graph(package_dir)
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in g:
            continue
        seen.add(m)
        todo.extend(g[m])
        parent = m.rpartition(".")[0]
        if parent.count(".") >= 1:  # litecoder/__init__ itself is not a dependency
            todo.append(parent)
    return seen


def cycles(package_dir: Path = SOURCE) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    g = graph(package_dir)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            strongconnect(v)
    return found


def code_deps(module: str, package_dir: Path = SOURCE) -> list[str]:
    """The files (relative to the project root) of a module's import closure. A directory is
    listed instead of its files when all of its modules are in the closure, or when it ships
    data files (prompts, scenarios) beside a module that is."""
    root = package_dir.parent
    files = {module_file(m, package_dir) for m in closure(module, package_dir)}
    subdirs = sorted(
        {d for f in files for d in f.parents if package_dir in d.parents},
        key=lambda d: len(d.parts),
    )
    listed: set[Path] = set()
    for d in subdirs:  # outermost first
        if any(a in listed for a in d.parents):
            continue
        inside = [p for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        modules = [p for p in inside if p.suffix == ".py"]
        if all(p in files for p in modules) or any(p.suffix != ".py" for p in inside):
            listed.add(d)
    kept = {f for f in files if not any(d in f.parents for d in listed)}
    return sorted(p.relative_to(root).as_posix() for p in kept | listed)
