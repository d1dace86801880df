"""Sizes on the command line (``--max-memory 2GB``): decimal and binary units, one-line errors."""

import pytest

from stzarr.errors import SpecError
from stzarr.units import parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2 * 10**9),
        ("500MB", 500 * 10**6),
        ("1.5GiB", 3 * 2**29),
        ("64 MiB", 64 * 2**20),
        ("1gb", 10**9),
        ("1000", 1000),
        (4096, 4096),
    ],
)
def test_sizes_in_decimal_and_binary_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "2 GX", "GB", "1.5.2GB", "-1GB", None, True])
def test_unreadable_sizes_are_one_line_errors(text):
    with pytest.raises(SpecError, match="cannot read") as err:
        parse_bytes(text)
    assert "\n" not in str(err.value) and str(text) in str(err.value)


@pytest.mark.parametrize("text", ["0", "0GB", "0.1"])
def test_sizes_must_be_at_least_a_byte(text):
    with pytest.raises(SpecError, match="at least one byte"):
        parse_bytes(text)
