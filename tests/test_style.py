"""The code style check of CI: ruff (configured in pyproject.toml) passes on the package, the tests and the chapters'
code cells (its E501 holds their lines to 120 characters), and no line of a chapter's markdown cells runs past the same
120 characters."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "book"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_chapter_markdown_lines_fit_120_characters():
    long = [(path.name, cell["id"], line[:50]) for path in sorted((ROOT / "book").glob("*.ipynb"))
            for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "markdown"
            for line in "".join(cell["source"]).splitlines() if len(line) > 120]
    assert not long, long
