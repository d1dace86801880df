"""The training loop stays short: no function of the loop's modules is over 80 lines (logging,
checkpoints, progress and memory sampling live in callbacks, not inline)."""

import ast
from pathlib import Path

import pytest

import stzarr.training

MODULES = ("train.py", "loop.py", "callbacks.py")
LIMIT = 80


def long_functions(source: str) -> list[str]:
    """``"name (N lines)"`` of every function (methods and nested ones too) over the limit."""
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > LIMIT
    ]


@pytest.mark.parametrize("name", MODULES)
def test_no_function_is_over_80_lines(name):
    path = Path(stzarr.training.__file__).parent / name
    assert long_functions(path.read_text()) == []


def test_the_check_finds_a_long_method():
    def source(lines):
        body = "\n".join(f"        x{i} = {i}" for i in range(lines - 1))
        return f"class C:\n    def f(self):\n{body}\n"

    assert long_functions(source(LIMIT)) == []
    assert long_functions(source(LIMIT + 1)) == [f"f ({LIMIT + 1} lines)"]
