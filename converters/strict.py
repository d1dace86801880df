"""Strict reading of text sources: every CSV row checked before a value is taken from it.

pandas is forgiving where a data engine must not be: a row with a missing field is padded with
NaN (a "missing reading" that was never missing), a row with an extra field is accepted when
only some columns are read (the values shift), a file cut inside its last number stores the cut
number, and bytes that are not UTF-8 surface as a decoder traceback. :func:`csv_rows` reads a
CSV with the standard library first, line by line, and names the file and the line of the first
such problem; pandas then reads values known to be laid out as the header says.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from stzarr.errors import SourceFormatError


def decoded_lines(path: Path, *, terminated: bool = True) -> Iterator[str]:
    """The lines of ``path`` decoded as UTF-8 (a BOM allowed), each checked; with
    ``terminated`` the last one must end with a newline.

    Raises
    ------
    SourceFormatError
        ``PATH:LINE: not UTF-8 text ...``, or a last line without its newline (a file cut
        short: its last value may be cut too).
    """
    with path.open("rb") as fh:
        lineno = 0
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SourceFormatError(
                    f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                    f"{exc.start + 1})"
                ) from None
            if terminated and not raw.endswith(b"\n") and raw.strip():
                raise SourceFormatError(
                    f"{path}:{lineno}: the file ends inside this line (no final newline): cut "
                    "short? its last value may be cut too (add the newline if it is complete)"
                )
            yield text


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of every non-blank row of the CSV ``path``, the header first; every row
    must have as many fields as the header.

    Raises
    ------
    SourceFormatError
        Naming the file and the line: not UTF-8, cut short, a row with more or fewer fields
        than the header, or an unterminated quote.
    """
    reader = csv.reader(decoded_lines(path), strict=True)
    width = None
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line, skipped by pandas too
            if width is None:
                width = len(row)
            elif len(row) != width:
                more = "an extra field" if len(row) > width else "a missing field"
                raise SourceFormatError(
                    f"{path}:{reader.line_num}: {len(row)} fields, the header has {width} "
                    f"({more}: the values would shift)"
                )
            yield reader.line_num, row
    except csv.Error as exc:
        raise SourceFormatError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def first_bad_number(path: Path, columns: list[int], na_values: frozenset[str]) -> str:
    """``PATH:LINE: ...`` naming the first field of ``columns`` that is neither a number nor a
    missing-value marker (for the message of a failed numeric read)."""
    rows = csv_rows(path)
    next(rows, None)  # the header
    for lineno, row in rows:
        for col in columns:
            value = row[col].strip()
            if value in na_values:
                continue
            try:
                float(value)
            except ValueError:
                return f"{path}:{lineno}: {value!r} in column {col + 1} is not a number"
    return f"{path}: a value is not a number"
