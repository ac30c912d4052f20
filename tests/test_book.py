"""Build the book as the README does (in fast mode) and look at every chapter page in headless Chromium."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for c in toc["chapters"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The HTML book, built with every chapter executed (ICL_FAST=1), in a scratch directory."""
    out = tmp_path_factory.mktemp("book")
    subprocess.run(["jupyter-book", "build", str(ROOT), "--path-output", str(out), "--all"], check=True,
                   env={**os.environ, "ICL_FAST": "1"}, capture_output=True, text=True)
    return out / "_build" / "html"


def rendered_dom(page: Path) -> str:
    """The page's DOM after Chromium has loaded it and run its scripts."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    return res.stdout


@pytest.mark.parametrize("chapter", chapters())
def test_chapter_page_renders_figures_without_errors(built, chapter):
    """Each page exists, each notebook page shows at least one figure in its outputs, and no page shows a
    traceback or stderr output."""
    page = built / f"{chapter}.html"
    assert page.exists(), f"{chapter} was not built"
    dom = rendered_dom(page)
    assert "<h1" in dom
    outputs = re.findall(r'<div class="cell_output[^"]*">(.*?)</div>\s*</div>', dom, flags=re.S)
    if (ROOT / f"{chapter}.ipynb").exists():  # executed chapters show a figure; Markdown pages have no outputs
        assert any("<img" in o for o in outputs), f"{chapter}: no figure in the executed outputs"
    assert 'class="output traceback' not in dom, f"{chapter}: a cell raised"
    assert 'class="output stderr' not in dom, f"{chapter}: a cell wrote to stderr"

