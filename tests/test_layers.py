"""The package's layers: the ``modelmon`` command (cli.py) imports the modules that do
the work, never the reverse, so no module depends on the command line's code."""
from __future__ import annotations

import ast
from pathlib import Path

import modelmon

PACKAGE = Path(modelmon.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at any depth (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modelmon."):
            found.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("modelmon."))
    return found


def test_no_module_imports_the_command_line():
    importers = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "cli.py" and "cli" in imported_modules(p))
    assert importers == []


def test_the_training_csv_helpers_live_below_the_commands():
    from modelmon import cli, report, skew, training_csv

    assert report.read_csv is training_csv.read_csv is cli.read_csv
    assert skew.NA_VALUES is training_csv.NA_VALUES


def test_the_modules_import_one_way():
    """No import cycle among the package's modules (lazy imports count): lower modules never import higher ones."""
    graph = {p.stem: imported_modules(p) - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + (module,)))
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module]):
            visit(imported, path + (module,))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
