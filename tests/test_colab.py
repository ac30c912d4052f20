"""Colab buttons and install cells appear exactly when pyproject.toml names the repository."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

from icl_meta.book import colab
from icl_meta.book.colab import (COLAB_URL, INSTALL_TAG, install_cell, is_install_cell, repository_url, sync_notebook,
                                 theme_options)

ROOT = Path(__file__).resolve().parents[1]
URL = "https://github.com/someone/icl-meta"
PYPROJECT = '[project]\nname = "icl-meta"\n'


def test_repository_url_is_read_from_project_urls(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT + "\n[project.urls]\n# Repository = \"x\"\n")
    assert repository_url(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text(PYPROJECT + f'\n[project.urls]\nRepository = "{URL}"\n')
    assert repository_url(tmp_path) == URL


def test_theme_options_unset_have_no_launch_buttons_and_no_default_repository():
    jb_defaults = {"repository_url": "https://github.com/executablebooks/jupyter-book", "repository_branch": "master",
                   "launch_buttons": {"colab_url": COLAB_URL}, "use_repository_button": False}
    opts = theme_options(jb_defaults, None)
    assert opts["launch_buttons"] == {} and opts["repository_url"] == ""
    assert "executablebooks" not in json.dumps(opts) and opts["use_repository_button"] is False


def test_theme_options_set_give_a_colab_button_from_the_repository():
    opts = theme_options({"repository_url": "https://github.com/executablebooks/jupyter-book"}, URL)
    assert opts["repository_url"] == URL and opts["repository_branch"] == "main" and opts["path_to_docs"] == ""
    assert opts["launch_buttons"]["colab_url"] == COLAB_URL


def test_extension_sets_the_options_from_the_sources_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT + f'\n[project.urls]\nRepository = "{URL}"\n')
    handlers = {}
    app = SimpleNamespace(srcdir=str(tmp_path), connect=lambda event, fn: handlers.setdefault(event, fn))
    colab.setup(app)
    config = SimpleNamespace(html_theme_options={"launch_buttons": {}})
    handlers["config-inited"](app, config)
    assert config.html_theme_options["repository_url"] == URL


def test_install_cell_installs_the_package_only_in_colab():
    cell = install_cell(URL)
    source = "".join(cell["source"])
    assert f"git+{URL}@main" in source and "requirements" not in source and "google.colab" in source
    assert is_install_cell(cell) and "remove-cell" in cell["metadata"]["tags"] and cell["outputs"] == []
    calls = []
    exec(source, {"__name__": "chapter", "subprocess": SimpleNamespace(run=calls.append)})
    assert not calls  # outside Colab it does nothing (this process has no google.colab)


def test_sync_adds_updates_and_removes_the_install_cell():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# 1. A chapter"]}], "nbformat": 4}
    synced = sync_notebook(nb, URL)
    assert is_install_cell(synced["cells"][0]) and synced["cells"][1:] == nb["cells"]
    assert sync_notebook(synced, URL) == synced  # idempotent
    moved = sync_notebook(synced, URL.replace("someone", "else"))
    assert len(moved["cells"]) == 2 and "else" in "".join(moved["cells"][0]["source"])
    assert sync_notebook(synced, None) == nb


def test_config_leaves_launch_buttons_and_repository_to_the_extension():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "launch_buttons" not in config and "repository" not in config
    assert "icl_meta.book.colab" in config["sphinx"]["extra_extensions"]


def test_every_chapter_matches_the_repository_url():
    """Every chapter starts with the install cell exactly when the URL is set (fix: python -m icl_meta.book.colab
    book/*.ipynb)."""
    url = repository_url(ROOT)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in [toc["root"]] + [c["file"] for c in toc["chapters"]]:
        path = ROOT / f"{name}.ipynb"
        if path.exists():
            nb = json.loads(path.read_text())
            assert nb == sync_notebook(nb, url), f"{name}: run python -m icl_meta.book.colab {name}.ipynb"
            assert sum(map(is_install_cell, nb["cells"])) == (1 if url else 0)


def test_sync_script_runs_from_the_repository_root(tmp_path):
    nb = {"cells": [install_cell(URL)], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps(nb))
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    subprocess.run([sys.executable, "-m", "icl_meta.book.colab", str(path)], cwd=tmp_path, check=True,
                   capture_output=True)
    assert json.loads(path.read_text())["cells"] == [] and INSTALL_TAG not in path.read_text()
