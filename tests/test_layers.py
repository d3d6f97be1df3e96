"""The package's layers: serving (the hot path) < pipeline (events) < analysis (reports) <
the top level (ModelMonitor, the framework adapters, the command line). A module imports
only its own layer and the ones below; no import cycle anywhere (lazy imports count)."""
from __future__ import annotations

import ast
from pathlib import Path

import modelmon

PACKAGE = Path(modelmon.__file__).resolve().parent
LAYERS = ["serving", "pipeline", "analysis", ""]  # "" is the top level


def module_name(path: Path) -> str:
    """``modelmon.serving.bins`` for exporters/modelmon/serving/bins.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at any depth, as dotted names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("modelmon"):
                continue
            # "from .serving import multiprocess" imports the module serving.multiprocess
            modules = {f"{target}.{a.name}" for a in node.names} & MODULES
            found |= modules or {target}
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("modelmon."))
    return found & MODULES


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    group = module.split(".")[1] if "." in module else ""
    return LAYERS.index(group if group in LAYERS else "")


def test_the_package_is_grouped_by_data_flow():
    for name in LAYERS[:-1]:
        assert (PACKAGE / name / "__init__.py").exists(), name
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "asgi", "cli", "flask", "gunicorn", "monitor", "uvicorn"]


def test_lower_layers_never_import_higher_ones():
    upward = sorted(
        f"{module_name(p)} imports {imported}"
        for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
        for imported in imported_modules(p)
        if layer(imported) > layer(module_name(p))
    )
    assert upward == []


def test_no_module_imports_the_command_line():
    importers = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if "modelmon.cli" in imported_modules(p))
    assert importers == []


def test_the_training_csv_helpers_live_below_the_commands():
    from modelmon import cli
    from modelmon.analysis import report, skew, training_csv

    assert report.read_csv is training_csv.read_csv is cli.read_csv
    assert skew.NA_VALUES is training_csv.NA_VALUES


def test_the_modules_import_one_way():
    """No import cycle among the package's modules: lower modules never import higher ones."""
    graph = {module_name(p): imported_modules(p) - {module_name(p)} for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
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


def test_the_layer_check_sees_imports():
    """The checks above are not vacuous: the monitor's imports are found, with their layers."""
    found = imported_modules(PACKAGE / "monitor.py")
    assert {"modelmon.serving.bins", "modelmon.serving.multiprocess", "modelmon.pipeline.events"} <= found
    assert "modelmon.serving.drift" not in MODULES and "modelmon.analysis.drift" in imported_modules(PACKAGE / "analysis" / "report.py")
