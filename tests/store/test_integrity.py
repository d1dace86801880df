"""Every byte accounted for: chunks bound to their place by the manifest, writers that never
build on damage nor lose another writer's update, destinations that cannot be swallowed by a
later write, partials told apart from user directories, exit statuses that say whether the
change was committed. docs/reliability.md lists the matrix.
"""

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stzarr import open_store
from stzarr.cli import main
from stzarr.converters import append as append_module
from stzarr.converters import convert
from stzarr.converters.synth import synth_traffic
from stzarr.store import manifest
from stzarr.store.atomic import lock_store
from stzarr.store.verify import verify_store
from stzarr.testing.cli import assert_one_line, run_cli, snapshot

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def parts(tmp_path):
    """A generated series split into a store (first 300 steps, chunks of 40: the last one holds
    20 steps) and a next file."""
    made = synth_traffic(tmp_path / "all.h5", nodes=6, steps=480, progress=False)
    df = pd.read_hdf(made.path)
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise([0, 300, 480])):
        path = tmp_path / f"part{i}.h5"
        df.iloc[a:b].to_hdf(path, key="df")
        paths.append(path)
    store = tmp_path / "s.zarr"
    convert(paths[0], store, adjacency=made.adjacency, chunk_time=40, progress=False)
    return df, store, paths


def _failures(report) -> list[str]:
    return [f.detail for f in report.findings if f.status == "fail"]


def _hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


# -- chunks bound to their place ----------------------------------------------------------------


def test_swapped_chunks_are_named_by_verify_full(parts):
    df, store, _ = parts
    a, b = store / "data/c/1/0/0", store / "data/c/2/0/0"
    first, second = a.read_bytes(), b.read_bytes()
    b.write_bytes(first)
    a.write_bytes(second)
    # each file still carries a valid CRC: every read returns the time axis scrambled
    got = open_store(store).read(40, 80)[:, :, 0]
    np.testing.assert_array_equal(got, df.iloc[80:120].to_numpy(np.float32))
    report = verify_store(store, full=True)
    failed = " ".join(_failures(report))
    assert not report.ok
    assert "data/c/1/0/0" in failed and "data/c/2/0/0" in failed


def test_a_chunk_copied_from_another_store_of_the_same_shape_is_named(parts, tmp_path):
    _, store, paths = parts
    other = tmp_path / "other.zarr"
    shifted = pd.read_hdf(paths[0]) + 1.0  # same shape, other values
    shifted.to_hdf(tmp_path / "shifted.h5", key="df")
    convert(tmp_path / "shifted.h5", other, chunk_time=40, progress=False)
    shutil.copyfile(other / "data/c/3/0/0", store / "data/c/3/0/0")
    report = verify_store(store, full=True)
    assert not report.ok
    assert any("data/c/3/0/0" in d for d in _failures(report)), _failures(report)


def test_a_stale_chunk_put_back_is_named(parts):
    _, store, paths = parts
    stale = (store / "data/c/7/0/0").read_bytes()  # the boundary chunk before the append
    assert main(["append", str(store), str(paths[1]), "--quiet"]) == 0
    (store / "data/c/7/0/0").write_bytes(stale)
    report = verify_store(store, full=True)
    assert any("data/c/7/0/0" in d for d in _failures(report)), _failures(report)


@pytest.mark.parametrize("damage", ["delete", "dtype"])
def test_damaged_metadata_is_named_by_verify_and_one_line_elsewhere(parts, capsys, damage):
    _, store, _ = parts
    doc = store / "data" / "zarr.json"
    if damage == "delete":
        doc.unlink()
    else:
        doc.write_text(doc.read_text().replace('"float32"', '"float64"'))
    report = verify_store(store, full=True)
    assert not report.ok
    assert any("data/zarr.json" in d for d in _failures(report)), _failures(report)
    for command in (["stats", str(store)], ["info", str(store)], ["train", str(store)]):
        code, err = run_cli(capsys, *command)
        assert code == 2
        assert_one_line(err, "data/zarr.json", "damaged")


def test_the_manifest_survives_cached_statistics(parts, capsys):
    _, store, _ = parts
    assert main(["stats", str(store)]) == 0
    assert verify_store(store, full=True).ok, _failures(verify_store(store, full=True))


def test_the_data_digest_follows_the_chunks_not_cached_statistics(parts):
    _, store, _ = parts
    before = manifest.root_digest(store)
    assert main(["stats", str(store)]) == 0  # writes attributes into the root document
    assert manifest.root_digest(store) == before
    a, b = store / "data/c/1/0/0", store / "data/c/2/0/0"
    first, second = a.read_bytes(), b.read_bytes()
    a.write_bytes(second)
    b.write_bytes(first)
    manifest.write(store)  # sealed as it now is: same files, other places
    assert manifest.root_digest(store) != before


def test_caching_statistics_does_not_launder_a_foreign_file(parts):
    _, store, _ = parts
    (store / "data/c/99/0").mkdir(parents=True)
    shutil.copyfile(store / "data/c/0/0/0", store / "data/c/99/0/0")  # beyond the grid
    assert main(["stats", str(store)]) == 0  # writes its cache into the store
    failures = _failures(verify_store(store))
    assert any("data/c/99/0/0 is not in the manifest" in d for d in failures), failures


# -- writers never launder or lose --------------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete last", "truncate boundary", "swap"])
def test_append_refuses_a_damaged_store_and_leaves_it_as_it_was(parts, capsys, tmp_path, damage):
    _, store, paths = parts
    if damage == "delete last":
        (store / "data/c/7/0/0").unlink()
    elif damage == "truncate boundary":
        chunk = store / "data/c/7/0/0"
        chunk.write_bytes(chunk.read_bytes()[:-9])
    else:
        a, b = store / "data/c/0/0/0", store / "data/c/5/0/0"
        first, second = a.read_bytes(), b.read_bytes()
        a.write_bytes(second)
        b.write_bytes(first)
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "append", store, paths[1], "--quiet")
    assert code == 2
    assert_one_line(err, "stzarr append: error:", "damaged", "data/c/")
    assert snapshot(tmp_path) == before  # nothing written, nothing left
    assert not verify_store(store, full=True).ok  # the damage is still detectable


def test_append_refuses_a_truncated_boundary_chunk_of_a_store_without_manifest(
    parts, capsys, tmp_path
):
    """A store of an older stzarr (no manifest): the chunk the append rewrites is checked
    through its CRC-32C; one line, no traceback, no stray partial."""
    _, store, paths = parts
    (store / manifest.MANIFEST_NAME).unlink()
    chunk = store / "data/c/7/0/0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "append", store, paths[1], "--quiet")
    assert code == 2
    assert_one_line(err, "stzarr append: error:", "c/7/0/0", "checksum")
    assert snapshot(tmp_path) == before


def test_convert_overwrite_waits_for_no_one_while_an_append_holds_the_store(parts, capsys):
    _, store, paths = parts
    before = snapshot(store)
    fd = lock_store(store)  # what a running append holds
    try:
        code, err = run_cli(capsys, "convert", paths[1], store, "--overwrite", "--quiet")
    finally:
        os.close(fd)
    assert code == 2
    assert_one_line(err, "being written by another process")
    assert snapshot(store) == before


SLOW_APPEND = textwrap.dedent(
    """
    import sys, time
    from stzarr.converters import append
    stream_into = append.stream_into
    def slow(*args, **kwargs):
        counts = stream_into(*args, **kwargs)
        print("WROTE", flush=True)
        time.sleep(float(sys.argv[1]))
        return counts
    append.stream_into = slow
    from stzarr.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def test_convert_overwrite_and_append_in_two_processes_lose_no_update(parts, capsys):
    """The lost update as two real processes race it: an append is between its write and its
    swap when ``convert --overwrite`` of the same store starts. The convert is refused; the
    append commits; the store is the old steps plus the appended ones."""
    df, store, paths = parts
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_APPEND, "3", "append", str(store), str(paths[1]), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "WROTE"
    code, err = run_cli(capsys, "convert", paths[1], store, "--overwrite", "--quiet")
    assert code == 2
    assert_one_line(err, "being written by another process")
    _, append_err = proc.communicate(timeout=120)
    assert proc.returncode == 0, append_err
    got = open_store(store).read(0, 480)[:, :, 0]
    np.testing.assert_array_equal(got, df.to_numpy(np.float32))


def test_an_append_refuses_to_swap_over_a_store_changed_meanwhile(parts, capsys, monkeypatch):
    """A writer that ignores the lock (another tool) changes the store during the append: the
    append re-checks what it read before its swap and gives up, so that change is not lost."""
    _, store, paths = parts
    stream_into = append_module.stream_into

    def and_meanwhile(*args, **kwargs):
        counts = stream_into(*args, **kwargs)
        doc = store / "zarr.json"
        doc.write_text(doc.read_text().replace('"missing_value"', '"missing_value" ', 1))
        return counts

    monkeypatch.setattr(append_module, "stream_into", and_meanwhile)
    changed = snapshot(store)
    code, err = run_cli(capsys, "append", store, paths[1], "--quiet")
    assert code == 2
    assert_one_line(err, "changed while appending")
    changed["zarr.json"] = snapshot(store)["zarr.json"]
    assert snapshot(store) == changed and _hidden(store.parent) == []


SIGNAL_AFTER = textwrap.dedent(
    """
    import os, signal, sys
    from stzarr.store import atomic
    commit = atomic.AtomicOutput.{method}
    def then_signal(self, *args):
        out = commit(self, *args)
        os.kill(os.getpid(), signal.{signal})
        return out
    atomic.AtomicOutput.{method} = then_signal
    from stzarr.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    ("method", "sig"),
    [("commit", "SIGTERM"), ("commit", "SIGINT"), ("_commit", "SIGTERM")],
    ids=["after the swap", "SIGINT after the swap", "during the swap"],
)
def test_a_signal_after_the_swap_of_an_append_exits_0(parts, tmp_path, method, sig):
    _, store, paths = parts
    script = SIGNAL_AFTER.format(method=method, signal=sig)
    proc = subprocess.run(
        [sys.executable, "-c", script, "append", str(store), str(paths[1]), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert_one_line(proc.stderr.splitlines(), f"{sig} arrived after the output was committed")
    assert open_store(store).shape == (480, 6, 1)
    assert verify_store(store, full=True).ok
    assert _hidden(tmp_path) == []


# -- destinations and names ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["data/inner.zarr", "inner.zarr", "data/c/x.zarr"])
def test_a_destination_inside_a_store_is_refused(parts, capsys, tmp_path, where):
    _, store, paths = parts
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "convert", paths[1], store / where, "--quiet")
    assert code == 2
    assert_one_line(err, "inside the Zarr hierarchy", str(store))
    code, err = run_cli(capsys, "rechunk", store, store / where)
    assert code == 2
    assert_one_line(err, "stzarr rechunk: error:")
    assert snapshot(tmp_path) == before


def test_a_destination_inside_or_holding_the_source_is_refused(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    made = synth_traffic(tmp_path / "src" / "x.h5", nodes=4, steps=50, progress=False)
    before = snapshot(tmp_path)
    for dst in (tmp_path / "src" / "x.h5" / "s.zarr", made.path):
        code, err = run_cli(capsys, "convert", made.path, dst, "--overwrite", "--quiet")
        assert code == 2
        assert_one_line(err, "stzarr convert: error:")
    assert snapshot(tmp_path) == before


def test_clean_and_convert_spare_a_user_directory_named_like_a_partial(parts, capsys, tmp_path):
    _, store, paths = parts
    mine = tmp_path / f".{store.name}.partial-deadbeef"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    other = tmp_path / f".{store.name}.partial-backup"
    other.mkdir()
    before = snapshot(tmp_path)
    assert main(["clean", str(store)]) == 0
    assert snapshot(tmp_path) == before
    code, _ = run_cli(capsys, "convert", paths[0], store, "--overwrite", "--quiet")
    assert code == 0
    assert (mine / "notes.txt").read_text() == "mine" and other.is_dir()
    assert verify_store(store).ok  # named as no leftover either


def test_a_store_named_like_a_partial_is_refused(parts, capsys, tmp_path):
    _, _, paths = parts
    code, err = run_cli(capsys, "convert", paths[0], tmp_path / ".s.zarr.partial-0123abcd")
    assert code == 2
    assert_one_line(err, "named like a partial output")
    assert not (tmp_path / ".s.zarr.partial-0123abcd").exists()
