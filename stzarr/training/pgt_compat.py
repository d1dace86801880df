"""Import PyTorch Geometric Temporal without torch-sparse.

PGT 0.56.2 imports ``torch_sparse.SparseTensor`` at package import, in one module only
(``nn/recurrent/evolvegcno.py``); none of the layers stzarr uses needs it, and torch-sparse has no
wheels (it compiles for about 13 minutes, and against CUDA on GPU clusters). When torch-sparse is
not installed, :func:`import_pgt` registers a ``torch_sparse`` module whose ``SparseTensor`` is
PyG's own placeholder, ``torch_geometric.typing.SparseTensor``, and then imports PGT. PGT's code
is not changed. ``EvolveGCNO`` uses ``SparseTensor`` only in a type annotation, so it imports,
runs and trains on an ``edge_index`` graph without torch-sparse (``tests/test_models.py``); what
needs the real package is an adjacency passed *as* a ``SparseTensor``, and building one from the
placeholder raises PyG's ``ImportError: 'SparseTensor' requires 'torch-sparse'``. Nothing in PGT
imports torch-scatter (PyG falls back to ``torch.scatter_reduce``). ``pip install
'stzarr[sparse]'`` installs the real packages, and then nothing is stood in.

Use it instead of a bare ``import torch_geometric_temporal``::

    from stzarr.training.pgt_compat import import_pgt
    pgt = import_pgt()
    layer = pgt.nn.recurrent.A3TGCN2(...)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

PLACEHOLDER_ATTR = "__stzarr_placeholder__"


def torch_sparse_is_placeholder() -> bool:
    """True when ``torch_sparse`` is (or would be) PyG's placeholder rather than the package."""
    module = sys.modules.get("torch_sparse")
    if module is not None:
        return bool(getattr(module, PLACEHOLDER_ATTR, False))
    return importlib.util.find_spec("torch_sparse") is None


def _stand_in_torch_sparse() -> None:
    if "torch_sparse" in sys.modules or importlib.util.find_spec("torch_sparse") is not None:
        return
    # torch_geometric must decide that torch-sparse is absent *before* the stand-in exists:
    # importing torch_geometric.typing first fixes WITH_TORCH_SPARSE = False.
    from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

    assert not WITH_TORCH_SPARSE
    stand_in = ModuleType("torch_sparse")
    stand_in.SparseTensor = SparseTensor  # type: ignore[attr-defined]
    setattr(stand_in, PLACEHOLDER_ATTR, True)
    sys.modules["torch_sparse"] = stand_in


def import_pgt(module: str = "torch_geometric_temporal") -> ModuleType:
    """Import PGT (or one of its submodules), standing PyG's placeholder in for torch-sparse.

    Parameters
    ----------
    module
        The module to import, ``torch_geometric_temporal`` or one of its submodules such as
        ``torch_geometric_temporal.nn.recurrent``.

    Returns
    -------
    ModuleType
        The imported module.
    """
    _stand_in_torch_sparse()
    return importlib.import_module(module)
