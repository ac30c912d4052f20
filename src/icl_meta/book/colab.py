"""Colab launch buttons and install cells, both driven by the one place that holds the repository URL:
`Repository` under `[project.urls]` in pyproject.toml (branch `main`).

- Set: every chapter page gets a Colab button that opens that chapter from the repository, and every
  chapter's first cell installs the package when it runs in Colab (the package itself from the
  repository, never our pinned requirements, so Colab's own torch stays).
- Unset (no `Repository` line): no launch buttons at all, and no install cells. Jupyter Book would
  otherwise fill in its own default repository (executablebooks/jupyter-book) and point every button there.

`setup` is a Sphinx extension (listed in _config.yml) that sets the theme's launch options from the URL;
`python -m icl_meta.book.colab book/*.ipynb`, run from the repository root, adds, updates or removes the
install cells to match it (`tests/test_colab.py` fails when a chapter is out of step). Needs Python 3.11+
(tomllib), as do the book's build and tests.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

COLAB_URL = "https://colab.research.google.com"
BRANCH = "main"
INSTALL_TAG = "colab-install"  # marks the install cell, so the sync finds it again


def repository_url(root: Path) -> str | None:
    """The repository URL from `[project.urls] Repository` in root/pyproject.toml, or None when unset."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return project.get("urls", {}).get("Repository") or None


def theme_options(options: dict, url: str | None) -> dict:
    """sphinx-book-theme options with the repository and launch buttons set from url: a Colab button on
    every notebook page when url is set; no launch buttons and no repository (not even Jupyter Book's
    default) when it is None."""
    out = {k: v for k, v in options.items() if k not in ("launch_buttons", "repository_url", "repository_branch")}
    if url is None:
        return {**out, "repository_url": "", "launch_buttons": {}}
    return {**out, "repository_url": url, "repository_branch": BRANCH, "path_to_docs": "",
            "launch_buttons": {"colab_url": COLAB_URL, "notebook_interface": "classic"}}


def setup(app) -> dict:
    """Sphinx extension: set the launch options from the repository URL once the configuration is read."""
    def set_options(app, config) -> None:
        config.html_theme_options = theme_options(config.html_theme_options, repository_url(Path(app.srcdir)))

    app.connect("config-inited", set_options)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def install_cell(url: str) -> dict:
    """The first cell of every chapter when the URL is set: install the package from the repository when
    running in Colab (a no-op anywhere else, and hidden from the website)."""
    source = ("# In Colab: install this book's package from its repository (only the package: Colab's torch stays).\n"
              "import subprocess\n"
              "import sys\n"
              "\n"
              "if \"google.colab\" in sys.modules:\n"
              f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"git+{url}@{BRANCH}\"], "
              "check=True)")
    return {"cell_type": "code", "execution_count": None, "id": "colab-install",
            "metadata": {"tags": [INSTALL_TAG, "remove-cell"]}, "outputs": [], "source": source.splitlines(True)}


def is_install_cell(cell: dict) -> bool:
    return INSTALL_TAG in cell.get("metadata", {}).get("tags", [])


def sync_notebook(nb: dict, url: str | None) -> dict:
    """The notebook with its install cell matching url: the first cell when set, absent when None."""
    cells = [c for c in nb["cells"] if not is_install_cell(c)]
    return {**nb, "cells": ([install_cell(url)] if url else []) + cells}


def main(paths: list[str]) -> None:
    """Sync the install cell of each notebook given with the repository URL of ./pyproject.toml."""
    url = repository_url(Path.cwd())
    for path in map(Path, paths):
        nb = json.loads(path.read_text())
        synced = sync_notebook(nb, url)
        if synced != nb:
            path.write_text(json.dumps(synced, indent=1, ensure_ascii=False) + "\n")
            print(f"{path}: install cell {'set' if url else 'removed'}")


if __name__ == "__main__":
    main(sys.argv[1:])
