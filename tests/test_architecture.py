"""The shape of the code, as ARCHITECTURE.md describes it: layers that import only downwards, no
import cycle, small modules and functions, one owner of the suite folder's files, and plugins
that import mimbench only through its plugin door."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The layers of mimbench/, lowest first: a module imports only from the layers below its own
#: (a package, ``folder``, ``report`` or ``schema``, counts as one module; inside, its modules import freely
#: but without cycles). The same list, explained, is in ARCHITECTURE.md.
LAYERS = [
    ["protocols", "record"],
    ["version", "errors", "columns", "stats", "metrics", "classical", "diagnostics", "augment", "prefetch", "memory", "data", "optim",
     "hookspecs"],
    ["contract", "preflight", "schema", "plugins", "selection"],
    ["suite", "specs", "registry"],
    ["labels"],
    ["jobs", "folder", "tracking", "provenance", "design", "steps"],
    ["train", "evaluate", "probing", "executors", "expansion", "report", "reuse"],
    ["runtime", "progress", "export", "supervised"],
    ["compute", "distributed", "probe_runs"],
    ["worker", "planning", "recipes", "testing"],
    ["plugin", "driver"],
    ["api", "dryrun"],
    ["cli"],
    ["__main__", "__init__"],
]
#: Functions allowed over 60 lines, each with its reason.
LONG_FUNCTIONS: dict[str, str] = {}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def unit(module: str) -> str:
    """``mimbench.folder.run`` -> ``folder``: the layer unit of a module of mimbench."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, type_only: bool = False) -> set[str]:
    """The mimbench modules ``path`` imports, at module level or inside functions; those imported
    only for type checking (``if TYPE_CHECKING:``) only with ``type_only``."""
    tree = ast.parse(path.read_text())
    typing_only = set() if type_only else {
        id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
        and getattr(block.test, "id", "") == "TYPE_CHECKING" for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mimbench"):
            # ``from mimbench.report import render`` imports the module mimbench.report.render
            found.update(f"{node.module}.{a.name}" if node.module == "mimbench" or is_module(f"{node.module}.{a.name}")
                         else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mimbench"))
    return {name for name in found if not name.startswith("mimbench_plugins")}


def is_module(name: str) -> bool:
    """Whether ``name`` (``mimbench.report.render``) is a module or package of this tree."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def core_files() -> list[Path]:
    return sorted((ROOT / "mimbench").rglob("*.py"))


def test_every_module_has_a_layer_and_imports_only_from_lower_layers():
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    wrong = []
    for path in core_files():
        module = module_name(path)
        own = unit(module)
        assert own in layer, f"{module}: not in any layer of tests/test_architecture.py (and ARCHITECTURE.md)"
        for imported in imports(path):
            target = unit(imported)
            if target == "__version__":
                target = "__init__"
            if target != own and layer.get(target, -1) >= layer[own]:
                wrong.append(f"{module} (layer {layer[own]}) imports {imported} (layer {layer.get(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    """Counting the imports made only for type checking too: a cycle there is still two modules
    that cannot be understood one without the other."""
    names = {module_name(path): path for path in core_files()}
    graph = {name: {i for i in imports(path, type_only=True) if i in names and i != name} for name, path in names.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [name, nxt]
                                                           if nxt in trail else [name, nxt]))
            if nxt not in state:
                visit(nxt, trail + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_modules_and_functions_are_small():
    too_long = []
    for path in [*core_files(), *sorted((ROOT / "mimbench_plugins").glob("*.py"))]:
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                key = f"{path.relative_to(ROOT)}:{node.name}"
                if length > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    too_long.append(f"{key}: {length} lines")
    assert not too_long, "\n".join(too_long)


#: Path methods that read or write a file or a folder.
PATH_IO = {"read_text", "read_bytes", "write_text", "write_bytes", "unlink", "mkdir", "rmdir", "rename", "touch",
           "iterdir", "glob", "rglob", "read_csv", "read_parquet"}
#: Module functions that read or write files, by module.
MODULE_IO = {"torch": {"load", "save"}, "json": {"load", "dump"}, "shutil": None,  # None: every function
             "os": {"replace", "remove", "rename", "makedirs", "unlink", "rmdir", "scandir", "listdir"}}


def file_calls(path: Path) -> set[str]:
    """The calls in ``path`` that read or write a file or a folder: ``open``, a Path's I/O methods,
    ``torch.save``/``load``, ``json.load``/``dump``, ``shutil``, ``os.replace``..., the folder's own
    writers (``write_atomic``, ``write_json``). Writing to an in-memory buffer is not found: only
    these names are."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("open", "write_atomic", "write_json"):
            found.add(func.id)
        elif isinstance(func, ast.Attribute):
            module = getattr(func.value, "id", "")
            if func.attr in PATH_IO:
                found.add(func.attr)
            elif module in MODULE_IO and (MODULE_IO[module] is None or func.attr in MODULE_IO[module]):
                found.add(f"{module}.{func.attr}")
    return found


def test_only_the_suite_folder_reads_and_writes_its_files():
    """File I/O of any kind outside mimbench/folder/ only where it does not touch a suite folder,
    each with its reason."""
    allowed = {
        "memory.py": {"open", "read_text"},  # /proc/self
        "optim.py": {"read_text"},  # /proc/cpuinfo: whether the CPU has native bf16
        "distributed.py": {"torch.load", "torch.save"},  # the DDP processes' scratch file, in a temporary folder
        "provenance.py": {"read_bytes"},  # the source files of the plugins, hashed
        "suite.py": {"iterdir", "read_bytes"},  # the suite file the user gives, the packaged suites
        "cli.py": {"read_text"},  # a suite file, a packaged suite, the export's description (--out anywhere)
        "export.py": {"torch.save", "write_atomic"},  # the backbone file the user names (--out anywhere)
        "api.py": {"mkdir"},  # the results root, before a suite folder is taken in it
    }
    found = []
    for path in core_files():
        if "folder" in path.relative_to(ROOT / "mimbench").parts:
            continue
        found += [f"{path.relative_to(ROOT)}: {call}" for call in file_calls(path) - allowed.get(path.name, set())]
    assert not found, "\n".join(found)


def test_no_baseline_detected_by_looking_inside_a_config():
    for path in [*core_files(), *sorted((ROOT / "mimbench_plugins").glob("*.py"))]:
        assert '"baseline" in' not in path.read_text(), path


def test_plugins_import_mimbench_only_through_its_plugin_door():
    for path in sorted((ROOT / "mimbench_plugins").glob("*.py")):
        imported = imports(path)
        assert imported <= {"mimbench.plugin"}, f"{path.name} imports {sorted(imported - {'mimbench.plugin'})}"


def test_no_private_name_is_imported_from_another_module():
    """A name starting with ``_`` is its module's own: another module that needs it gets a public name."""
    found = []
    for path in [*core_files(), *sorted((ROOT / "mimbench_plugins").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mimbench"):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "\n".join(found)


def test_the_run_path_takes_specs_not_config_dicts():
    """The modules that plan, train and evaluate take a run's settings as a typed spec; a config dict
    exists only at the JSON boundary (specs, the folder, trackers' events, the report, export)."""
    run_path = {"train", "evaluate", "probing", "worker", "runtime", "planning", "driver", "compute", "distributed",
                "expansion", "reuse", "design", "recipes", "dryrun", "api"}
    found = []
    for path in core_files():
        if module_name(path).split(".")[-1] not in run_path:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{path.relative_to(ROOT)}:{node.name}({arg.arg})"
                          for arg in node.args.args + node.args.kwonlyargs
                          if "config" in arg.arg and arg.annotation is not None and "dict" in ast.unparse(arg.annotation)]
    assert not found, "\n".join(found)


def test_the_core_asks_a_component_what_it_can_do_only_through_its_contract():
    """An optional capability (``predicts_image``, ``blocks``, ``layer``...) is read with
    :func:`mimbench.protocols.capability`, which takes its default from the contract class; never with
    ``getattr``/``hasattr`` and a default of the reader's own."""
    from mimbench.protocols import OPTIONAL

    names = {name for capabilities in OPTIONAL.values() for name in capabilities}
    found = []
    for path in core_files():
        if module_name(path) == "mimbench.protocols":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
