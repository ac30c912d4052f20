"""The code style check of CI: ruff (configured in pyproject.toml) passes on the package, the tests and the chapters'
code cells (its E501 holds their lines to 120 characters), no line of a chapter's markdown cells runs past the same
120 characters, and no rewrapped line of chapter prose starts a numbered list by accident."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "book"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def chapter_markdown() -> list[tuple[str, str, str]]:
    """(notebook, cell id, text) of every markdown cell of the chapters: the prose the style checks read."""
    return [(path.name, cell["id"], "".join(cell["source"])) for path in sorted((ROOT / "book").glob("*.ipynb"))
            for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "markdown"]


def test_chapter_markdown_lines_fit_120_characters():
    long = [(name, cell, line[:50]) for name, cell, text in chapter_markdown() for line in text.splitlines()
            if len(line) > 120]
    assert not long, long


def test_chapter_markdown_has_no_accidental_numbered_list():
    """A wrapped line that begins with "1)" or "12." (a seed, a count) starts an ordered list in the rendered page.
    A numbered line is allowed only where a list is meant: after a blank line or inside a block that already holds
    one."""
    marker = re.compile(r"\s*\d+[.)]\s")
    found = []
    for name, cell, text in chapter_markdown():
        in_block = in_list = False
        for line in text.splitlines():
            if not line.strip():
                in_block = in_list = False
                continue
            numbered = bool(marker.match(line))
            if numbered and in_block and not in_list:
                found.append((name, cell, line[:50]))
            in_block, in_list = True, in_list or numbered
    assert not found, found
