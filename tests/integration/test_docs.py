"""The front door and the user guide as a new user meets them: every shell and Python block of
``README.md`` and ``docs/guide/*.md`` runs as written, in order, in a fresh directory with the
installed ``stzarr`` on ``PATH``; the few blocks that cannot run here say why in their fence
(```` ```bash norun: REASON ````); and every default a page states matches the code.

Conventions the pages follow (and these tests hold them to):

* a runnable block is fenced ``bash``, ``sh``, ``console`` (only its ``$ `` lines run) or
  ``python`` (run as a script, so ``if __name__ == "__main__":`` guards work); each makes the
  small data it needs itself;
* output and diagrams are fenced ``text`` and hold no ``$ `` command lines;
* a default is stated as ```` `--flag` (default `VALUE`) ````, ```` `stzarr CMD --flag` (default
  `VALUE`) ```` or ```` `Name.parameter` (default `VALUE`) ```` (``Name`` a public ``stzarr``
  object or a configuration dataclass); the word "default" appears in no other prose.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
SHELLS = {"bash", "sh", "console"}
RUNNABLE = SHELLS | {"python"}
QUIET = {"text", "toml", "yaml", "json"}
MAX_NORUN = 6
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
FLAG_DEFAULT = re.compile(
    r"`(?:stzarr (?P<command>[a-z]+) )?(?P<flag>--[a-z0-9-]+)` \(default `(?P<value>[^`]*)`\)"
)
NAME_DEFAULT = re.compile(
    r"`(?P<owner>[A-Z_a-z]\w*)\.(?P<name>\w+)` \(default `(?P<value>[^`]*)`\)"
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int
    lang: str
    code: str
    norun: str | None  # the stated reason, for a block marked ``norun``

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang})"


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order."""
    text = page.read_text()
    out = []
    for match in FENCE.finditer(text):
        info = match.group(1).strip()
        lang, _, rest = info.partition(" ")
        rest = rest.strip()
        norun = None
        if rest.startswith("norun"):
            norun = rest.removeprefix("norun").lstrip(":").strip()
        line = text.count("\n", 0, match.start()) + 1
        out.append(Block(page, line, lang, match.group(2), norun))
    return out


def prose_of(page: Path) -> str:
    """``page`` without its fenced blocks, on one line (statements may wrap)."""
    return " ".join(FENCE.sub(" ", page.read_text()).split())


def test_the_pages_exist_and_the_readme_is_short():
    names = {p.name for p in PAGES}
    assert {"README.md", "install.md", "your-data.md", "training-and-models.md"} <= names
    assert len((ROOT / "README.md").read_text().split()) <= 1200


def test_blocks_run_or_say_why_and_few_do_not():
    blocks = [b for page in PAGES for b in blocks_of(page)]
    runnable = [b for b in blocks if b.lang in RUNNABLE]
    assert len(runnable) >= 20
    for block in blocks:
        assert block.lang in RUNNABLE | QUIET, f"{block}: fence says {block.lang!r}"
        if block.lang in QUIET:
            assert block.norun is None, f"{block}: only runnable blocks are marked norun"
            commands = [ln for ln in block.code.splitlines() if ln.startswith("$ ")]
            assert not commands, f"{block}: commands belong in a runnable block: {commands}"
        elif block.norun is not None:
            assert len(block.norun.split()) >= 4, f"{block}: norun without a stated reason"
    skipped = [b for b in runnable if b.norun is not None]
    assert len(skipped) <= MAX_NORUN, [str(b) for b in skipped]
    assert len(skipped) * 5 <= len(runnable), [str(b) for b in skipped]


def _commands(block: Block) -> str:
    if block.lang != "console":
        return block.code
    lines, going = [], False
    for line in block.code.splitlines():
        if line.startswith("$ ") or going:
            lines.append(line.removeprefix("$ "))
            going = line.endswith("\\")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_of_the_page_runs_as_written(page, tmp_path):
    """Each block, in page order, in one fresh directory, as a user would paste it."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    for i, block in enumerate(b for b in blocks_of(page) if b.lang in RUNNABLE and not b.norun):
        if block.lang == "python":
            script = tmp_path / f"block_{i}.py"
            command = [str(bin_dir / "python"), script.name]
        else:
            script = tmp_path / f"block_{i}.sh"
            command = ["bash", "-e", script.name]
        script.write_text(_commands(block))
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (
            f"{block} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from stzarr.cli import build_parser

    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _config_default(dest: str) -> object:
    """The configuration dataclasses' default of option ``dest`` (flags that default to
    ``None`` so that a config file or a checkpoint can fill them in)."""
    from stzarr.training.config import PARTS

    for kind in PARTS.values():
        for field in dataclasses.fields(kind):
            if field.name == dest and field.default is not dataclasses.MISSING:
                return field.default
    return None


def _same(stated: str, value: object) -> bool:
    if isinstance(value, bool):
        return stated.lower() == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(stated) == float(value)
        except ValueError:
            return False
    if isinstance(value, tuple | list):
        return stated == ",".join(str(v) for v in value)
    return stated == str(value)


def _flag_default(parser: argparse.ArgumentParser, flag: str) -> tuple[bool, object]:
    for action in parser._actions:
        if flag in action.option_strings:
            value = action.default
            if value is None or value is argparse.SUPPRESS:
                value = _config_default(action.dest)
            return True, value
    return False, None


def _name_default(owner: str, name: str) -> object:
    import stzarr
    from stzarr.training.config import PARTS

    kinds = {kind.__name__: kind for kind in PARTS.values()}
    obj = kinds.get(owner) or getattr(stzarr, owner)
    if dataclasses.is_dataclass(obj):
        (field,) = (f for f in dataclasses.fields(obj) if f.name == name)
        return field.default
    return inspect.signature(obj).parameters[name].default


def wrong_defaults(name: str, text: str) -> tuple[int, list[str]]:
    """How many defaults ``text`` states, and each one that is not the code's."""
    commands = _subcommands()
    found = [m for pattern in (FLAG_DEFAULT, NAME_DEFAULT) for m in pattern.finditer(text)]
    wrong = []
    for match in found:
        stated = match["value"]
        if "flag" in match.groupdict():
            names = [match["command"]] if match["command"] else sorted(commands)
            checked = 0
            for command in names:
                has, value = _flag_default(commands[command], match["flag"])
                if has:
                    checked += 1
                    if not _same(stated, value):
                        wrong.append(
                            f"{name}: stzarr {command} {match['flag']} defaults to "
                            f"{value!r}, the page says {stated!r}"
                        )
            if not checked:
                wrong.append(f"{name}: no sub-command has {match['flag']} ({match[0]})")
        else:
            value = _name_default(match["owner"], match["name"])
            if not _same(stated, value):
                wrong.append(f"{name}: {match[0]} but the code says {value!r}")
    return len(found), wrong


def test_every_stated_default_is_the_codes():
    total = 0
    for page in PAGES:
        count, wrong = wrong_defaults(page.name, prose_of(page))
        total += count
        assert not wrong, wrong
    assert total >= 10


def test_a_wrong_default_is_caught():
    text = (
        "`--lr` (default `0.5`), `stzarr train --epochs` (default `1`), `--no-such-flag` "
        "(default `1`), `SplitSpec.train` (default `0.8`), `make_loaders.batch_size` "
        "(default `64`)"
    )
    count, wrong = wrong_defaults("example", text)
    assert count == 5
    assert len(wrong) == 3
    assert "--lr defaults to 0.01" in wrong[0]
    assert "no sub-command has --no-such-flag" in wrong[1]
    assert "SplitSpec.train" in wrong[2]


def test_defaults_are_only_stated_in_the_checked_form():
    for page in PAGES:
        text = prose_of(page)
        spans = [m.span() for p in (FLAG_DEFAULT, NAME_DEFAULT) for m in p.finditer(text)]
        for word in re.finditer(r"\bdefault", text, flags=re.I):
            inside = any(lo <= word.start() < hi for lo, hi in spans)
            context = text[max(0, word.start() - 60) : word.start() + 40]
            assert inside, f"{page.name}: a default stated in an unchecked form: ...{context}..."
