"""The module structure as documented: plans import no execution code, and
``docs/architecture.md`` lists every module's imports as they are."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLANS = ("windows", "sampler", "partition", "stream_plan", "rank_plan")
EXECUTION = {"loader", "store", "stream", "stats", "rank_data", "torch", "zarr", "xarray", "dask"}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def runtime_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports at run time (not under TYPE_CHECKING):
    ``stzarr.x.y`` as ``x.y``, third-party packages by their root name."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            names = []
        for name in names:
            if name == "stzarr":
                found.add("stzarr")
            elif name.startswith("stzarr."):
                found.add(name.removeprefix("stzarr."))
            else:
                found.add(name.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "stzarr").rglob("*.py")):
        parts = path.relative_to(ROOT / "stzarr").with_suffix("").parts
        if parts[0] == "converters":
            continue  # the converters package has its own page of contracts
        name = ".".join(p for p in parts if p != "__init__") or "stzarr"
        out[name] = path
    return out


def test_plans_import_no_loader_store_reader_or_torch():
    files = module_files()
    checked = 0
    for plan in PLANS:
        seen, todo = set(), [plan]
        while todo:  # the transitive closure over stzarr's own modules
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            imports = runtime_imports(files[name])
            bad = imports & EXECUTION
            assert not bad, f"{plan} imports {sorted(bad)} (through {name})"
            todo += [m for m in imports if m in files]
            checked += 1
    assert checked >= len(PLANS)


def documented_imports() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Imports", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| (.*?) \|$", section, flags=re.M)
    return {name: set(re.findall(r"`([\w.]+)`", deps)) for name, deps in rows}


def test_architecture_page_lists_every_import_as_it_is():
    files = module_files()
    documented = documented_imports()
    assert set(documented) == set(files), (
        f"undocumented: {sorted(set(files) - set(documented))}, "
        f"gone: {sorted(set(documented) - set(files))}"
    )
    for name, path in files.items():
        ours = {m for m in runtime_imports(path) if m in files or m.startswith("converters")}
        assert documented[name] == ours, f"{name}: the page says {documented[name]}, code {ours}"


@pytest.mark.parametrize("plan", PLANS)
def test_plan_modules_exist(plan):
    assert plan in module_files()
