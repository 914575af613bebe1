"""The package's import graph: no circle, and nothing imports back up into the package that holds
it (its ``__init__``), so each module can be read and tested from the bottom up. Imports under
``TYPE_CHECKING`` (annotations only) do not count."""

import ast
from pathlib import Path

import infodecomp

ROOT = Path(infodecomp.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                lines.add(getattr(inner, "lineno", -1))
    return lines


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of the package's modules, at import time or inside functions."""
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        skip, found = _type_checking_lines(tree), set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_import_graph_has_no_circle_and_no_import_back_up():
    graph = _imports(_modules())
    up = {m: sorted(t for t in ts if m.startswith(t + ".")) for m, ts in graph.items()}
    assert not {m: t for m, t in up.items() if t}, "modules importing their own package"
    # Depth-first search for a path back to where it started.
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_graph_is_read_from_the_code():
    # The check above can fail: it sees the package's own imports.
    graph = _imports(_modules())
    assert "infodecomp.estimators" in graph["infodecomp.explanation"]
    assert "infodecomp.sampling" in graph["infodecomp.estimators"]
