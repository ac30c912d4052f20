"""The code style check of CI: ruff (configured in pyproject.toml) passes on the package, the tests and the chapters'
code cells, and no chapter source line (markdown included) runs past the 120 characters of the code."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "book"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_chapter_source_lines_fit_120_characters():
    long = [(path.name, cell["id"], line[:50]) for path in sorted((ROOT / "book").glob("*.ipynb"))
            for cell in json.loads(path.read_text())["cells"]
            for line in "".join(cell["source"]).splitlines() if len(line) > 120]
    assert not long, long
