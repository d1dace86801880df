"""A checkpoint is plain data: its pickle names no stzarr class, so moving or renaming stzarr's
modules never stops an older checkpoint from loading."""

import pickle
import types

import torch

from stzarr.cli import main
from stzarr.testing.validators import make_store


def _globals_named(path) -> set[str]:
    """Every module a pickle's classes and functions come from (recorded while unpickling)."""
    seen: set[str] = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            seen.add(module)
            return super().find_class(module, name)

    recording = types.SimpleNamespace(**vars(pickle))
    recording.Unpickler = Recording
    torch.load(path, map_location="cpu", weights_only=False, pickle_module=recording)
    return seen


def test_checkpoints_name_no_stzarr_module(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_time=600, n_node=5, chunk_time=32)
    code = main([
        "train", store.path, "--epochs", "1", "--max-batches", "2", "--no-progress",
        "--input-steps", "4", "--horizon", "4", "--batch-size", "8", "--hidden", "8",
        "--checkpoint", str(tmp_path / "ck"), "--log", str(tmp_path / "log.json"),
    ])  # fmt: skip
    assert code == 0
    for name in ("last.pt", "best.pt"):
        modules = _globals_named(tmp_path / "ck" / name)
        assert "torch._utils" in modules  # the recording saw the tensors' rebuild
        assert not [m for m in modules if m == "stzarr" or m.startswith("stzarr.")], modules
