"""Lazy package attributes (PEP 562): a package names its public objects and the modules that
define them; each module is imported on first use, so ``import stzarr`` costs almost nothing and
opening a store never imports torch or Dask distributed."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def attach(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """PEP 562 hooks for a package exporting ``exports`` (public name -> defining module).

    Parameters
    ----------
    namespace : dict
        The package's ``globals()``; a resolved name is stored there, so later lookups are plain
        attribute reads.
    exports : mapping
        Public name to the absolute name of the module that defines it.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__, __all__)`` for the package to assign.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__, sorted(exports)
