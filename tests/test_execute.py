"""icl_meta.book.execute: a small book's notebooks are executed in parallel into myst-nb's cache, each build
recomputes them, a failing notebook fails the build by name, icl_book_jobs sets how many run at once, and a
cell timeout is retried once."""

import logging
import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError

from icl_meta.book.execute import execute, kernel_env

CONFIG = """title: mini
only_build_toc_files: true
execute:
  execute_notebooks: cache
  timeout: 120
sphinx:
  extra_extensions: [icl_meta.book.execute]
  config:
    nb_execution_raise_on_error: true
"""
TOC = "format: jb-book\nroot: intro\nchapters:\n  - file: a\n  - file: b\n"


def notebook(path: Path, *codes: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {path.stem}")]
                                  + [nbformat.v4.new_code_cell(c) for c in codes])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def build(root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.run(["jupyter-book", "build", str(root), "--all"], env=env, capture_output=True, text=True)


def test_kernel_env_gives_one_thread_unless_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert kernel_env()["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert kernel_env()["OMP_NUM_THREADS"] == "3"


@pytest.mark.integration  # builds a small book three times with jupyter-book
def test_book_notebooks_run_in_parallel_from_the_cache_and_a_failure_names_its_notebook(tmp_path):
    (tmp_path / "_config.yml").write_text(CONFIG)
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "intro.md").write_text("# Intro\n")
    notebook(tmp_path / "a.ipynb", "import os\nprint('threads', os.environ['OMP_NUM_THREADS'], os.getcwd())")
    notebook(tmp_path / "b.ipynb", "import time\nprint('stamp', time.time_ns())")

    res = build(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stdout + res.stderr
    assert "executing 2 notebooks" in log
    assert log.count("Using cached notebook") == 2  # myst-nb read both from the cache, executed neither
    html = tmp_path / "_build" / "html"
    assert f"threads 1 {tmp_path}" in (html / "a.html").read_text()
    first = (html / "b.html").read_text().split("stamp ")[1][:19]

    assert build(tmp_path).returncode == 0  # a second build executes again: new outputs, not the cached ones
    assert (html / "b.html").read_text().split("stamp ")[1][:19] != first

    notebook(tmp_path / "b.ipynb", "1 / 0")
    (tmp_path / "_config.yml").write_text(CONFIG + "    icl_book_jobs: 1\n")
    res = build(tmp_path)
    assert res.returncode != 0
    assert "executing 2 notebooks, 1 at a time" in res.stdout + res.stderr
    assert "b.ipynb failed to execute" in res.stdout + res.stderr
    assert "ZeroDivisionError" in res.stdout + res.stderr


def test_a_cell_timeout_is_retried_once_then_raised(tmp_path, caplog):
    path = tmp_path / "slow.ipynb"
    notebook(path, "import time\ntime.sleep(30)")
    with caplog.at_level(logging.WARNING), pytest.raises(CellTimeoutError):
        execute(path, timeout=1, allow_errors=False)
    assert [r.getMessage() for r in caplog.records if "executing it once more" in r.getMessage()]


def test_a_cells_prints_become_one_output_per_stream(tmp_path):
    path = tmp_path / "prints.ipynb"
    notebook(path, "import sys, time\nfor i in range(3):\n    print('line', i)\n    time.sleep(0.3)\n"
                   "_ = sys.stderr.write('0%\\r50%\\r100%\\n')")
    outputs = execute(path, timeout=60, allow_errors=False).cells[1].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "line 0\nline 1\nline 2\n"), ("stderr", "100%\n")]
