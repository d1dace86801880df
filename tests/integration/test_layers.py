"""The layers as documented: each stage imports only the stages below it, the store and the plans
import no torch, reading a store imports neither torch nor Dask distributed, and
``docs/architecture.md`` lists every module's imports as they are."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stzarr.testing.validators import make_store

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"stzarr", "errors", "units", "lazy", "monitor"}
# what each stage may import from stzarr (besides itself and SHARED) and which third-party
# packages it must not import, anywhere in its code (function-level imports included)
RULES = {
    "store": (set(), {"torch", "distributed", "torch_geometric", "torch_geometric_temporal"}),
    "plan": (set(), {"torch", "distributed", "zarr", "xarray", "dask", "numcodecs", "pandas"}),
    "converters": ({"store"}, {"torch", "distributed"}),
    "data": ({"store", "plan"}, {"distributed"}),
    "training": ({"store", "plan", "data", "plot"}, set()),
    "inference": ({"store", "plan", "data", "training", "plot"}, set()),
}
# plan may import NumPy and the standard library only
PLAN_THIRD_PARTY = {"numpy"}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports at run time, anywhere in its code (not under
    TYPE_CHECKING): ``stzarr.x.y`` as ``x.y``, others by their root package."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module in ("stzarr", "stzarr.converters") or node.module.count(".") == 1:
                # ``from stzarr.store import manifest`` names a module
                names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            names = []
        for name in names:
            if name == "stzarr" or name.startswith("stzarr."):
                found.add(name.removeprefix("stzarr").removeprefix(".") or "stzarr")
            else:
                found.add(name.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def module_files() -> dict[str, Path]:
    """stzarr's modules by dotted name below ``stzarr`` (converters included)."""
    out = {}
    for base, prefix in ((ROOT / "stzarr", ""), (ROOT / "converters", "converters.")):
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            name = prefix + ".".join(p for p in parts if p != "__init__")
            out[name.rstrip(".") or "stzarr"] = path
    return out


def own(imports: set[str], files: dict[str, Path]) -> set[str]:
    return {m for m in imports if m in files or m.split(".")[0] in files}


@pytest.mark.parametrize("stage", sorted(RULES))
def test_stage_imports_only_the_stages_below_it(stage):
    files = module_files()
    allowed, banned = RULES[stage]
    modules = [n for n in files if n.split(".")[0] == stage]
    assert modules
    for name in modules:
        imports = imports_of(files[name])
        bad = imports & banned
        assert not bad, f"{name} imports {sorted(bad)}"
        for dep in own(imports, files):
            head = dep.split(".")[0]
            assert head in {stage} | SHARED | allowed, f"{name} imports stzarr.{dep}"
        if stage == "plan":
            third = {m for m in imports if m not in files and m.split(".")[0] not in files}
            third -= set(sys.stdlib_module_names) | {"__future__"}
            assert third <= PLAN_THIRD_PARTY, f"{name} imports {sorted(third)}"


def test_shared_modules_import_no_stage():
    files = module_files()
    for name in ("errors", "units", "lazy", "monitor"):
        deps = {d.split(".")[0] for d in own(imports_of(files[name]), files)}
        assert deps <= SHARED, f"{name} imports {sorted(deps - SHARED)}"


def test_reading_a_store_imports_neither_torch_nor_distributed(tmp_path):
    make_store(tmp_path / "s.zarr", n_time=64, n_node=3, chunk_time=16)
    code = (
        "import sys, stzarr\n"
        f"store = stzarr.open_store({str(tmp_path / 's.zarr')!r})\n"
        "assert store.read(0, 64).shape == (64, 3, 1)\n"
        "from stzarr.cli import main\n"
        f"assert main(['info', {str(tmp_path / 's.zarr')!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'distributed') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_public_name_resolves():
    import stzarr

    for name in stzarr.__all__:
        assert getattr(stzarr, name) is not None, name


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
        ours = {m for m in own(imports_of(path), files) if m in files} - {name}
        assert documented[name] == ours, f"{name}: the page says {documented[name]}, code {ours}"
