import json
import subprocess
import sys

import numpy as np
import zarr

from stzarr import open_store
from stzarr.cli import main
from stzarr.converters.synth import synth_traffic
from stzarr.store import manifest


def test_convert_then_info_json(tmp_path, capsys):
    made = synth_traffic(tmp_path / "metr-la.h5", nodes=12, steps=400, progress=False)
    code = main(
        [
            "convert",
            made.path,
            str(tmp_path / "s.zarr"),
            "--adjacency",
            made.adjacency,
            "--chunk-time",
            "50",
            "--shard-time",
            "200",
            "--quiet",
        ]
    )
    out = capsys.readouterr()
    assert code == 0 and out.err == ""
    assert "400 steps x 12 nodes x 1 feature(s)" in out.out
    assert main(["info", str(tmp_path / "s.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [400, 12, 1]
    assert info["dims"] == ["time", "node", "feature"]
    assert info["chunking"]["chunk_time"] == 50 and info["chunking"]["shard_time"] == 200
    assert info["time"]["start"] == "2012-03-01T00:00:00"
    assert info["time"]["end"] == "2012-03-02T09:15:00"
    assert info["time"]["sampling_interval_s"] == 300
    store = open_store(tmp_path / "s.zarr")
    assert info["graph"]["edges"] == store.edge_index.shape[1] > 12
    assert info["missing"]["fraction"] == made.missing_fraction
    assert info["missing"]["computed"] == "at conversion"
    assert info["source"]["file"] == "metr-la.h5" and info["source"]["key"] == "df"
    assert info["storage"]["files"] >= 2


def test_info_computes_missing_lazily_when_not_recorded(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=5, steps=100, progress=False)
    assert main(["convert", made.path, str(tmp_path / "s.zarr"), "--quiet"]) == 0
    group = zarr.open_group(tmp_path / "s.zarr", mode="r+")
    del group.attrs["missing"]
    manifest.write(tmp_path / "s.zarr")  # a store whose writer recorded no counts
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["missing"]["computed"] == "now"
    assert info["missing"]["fraction"] == made.missing_fraction


def test_info_text_names_everything(tmp_path, shared_data, capsys):
    assert (
        main(["convert", str(shared_data / "chickenpox.json"), str(tmp_path / "c.zarr"), "--quiet"])
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(tmp_path / "c.zarr")]) == 0
    text = capsys.readouterr().out
    for expected in (
        "521 x 20 x 1",
        "cases",
        "2005-01-03",
        "(synthesised)",
        "102 edges",
        "chickenpox.json",
        "convention 'nan'",
    ):
        assert expected in text, expected


def test_info_on_a_non_store_fails_with_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"stzarr info: error: no store at {tmp_path / 'nothing.zarr'}"]


def test_bad_chunking_is_refused(tmp_path, capsys):
    made = synth_traffic(tmp_path / "x.h5", nodes=5, steps=100, progress=False)
    assert main(["convert", made.path, str(tmp_path / "s.zarr"), "--chunk-time", "0"]) == 2
    assert "--chunk-time must be a positive integer" in capsys.readouterr().err
    assert (
        main(
            [
                "convert",
                made.path,
                str(tmp_path / "s.zarr"),
                "--chunk-time",
                "30",
                "--shard-time",
                "45",
                "--quiet",
            ]
        )
        == 2
    )
    assert "multiple of --chunk-time" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5", "x_adj_mx.pkl"]


def test_convert_as_a_process(tmp_path, capsys):
    """The module entry point end to end: progress on stderr, no warnings or traceback."""
    h5 = tmp_path / "pems-bay.h5"
    argv = [
        "synth",
        str(h5),
        "--nodes",
        "9",
        "--steps",
        "300",
        "--key",
        "speed",
        "--format",
        "table",
        "--labels",
        "int",
        "--quiet",
    ]
    assert main(argv) == 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stzarr",
            "convert",
            str(h5),
            str(tmp_path / "s.zarr"),
            "--adjacency",
            str(tmp_path / "pems-bay_adj_mx.pkl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    assert "convert pems-bay.h5: 100%" in proc.stderr  # the progress bar
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [300, 9, 1] and info["source"]["format"] == "pandas-table"
    assert np.isclose(info["missing"]["fraction"], info["missing"]["missing"] / 2700)
