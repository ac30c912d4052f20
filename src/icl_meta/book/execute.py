"""Sphinx extension: execute the book's notebooks on every core before Sphinx reads them.

Jupyter Book 1.x executes notebooks one after another as Sphinx reads them. Every chapter's kernel trains and
probes on one torch thread, so on a 2-core machine that leaves a core idle for the whole build. With
`execute_notebooks: cache` in _config.yml, this extension runs first (Sphinx's `env-before-read-docs`): it
executes every notebook Sphinx is about to read, `icl_book_jobs` at a time (default: one per available core,
each kernel with one torch thread), and stores the executed notebooks in myst-nb's jupyter-cache, where the
reader then finds them instead of executing them again.

Those notebooks' previous cache entries are removed first, so every build still recomputes every number it shows:
jupyter-cache keys a notebook by its code alone and would otherwise keep outputs of older package code. Their
execution times order the next build, longest first.

A notebook whose kernel stops answering (a cell's reply that never arrives was seen, rarely, on a loaded machine,
cause unknown: the kernel sits idle while the client waits) runs into the cell timeout; it is then executed
once more, with a warning in the build log, before the build fails.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)
RETRIED = (CellTimeoutError, DeadKernelError)  # a lost reply or a dead kernel: executed once more


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kernel_env() -> dict[str, str]:
    """The kernels' environment: this one, with one torch/OpenMP thread per kernel unless OMP_NUM_THREADS is set
    (several kernels run at once, one per core; more threads each would oversubscribe the cores)."""
    return {"OMP_NUM_THREADS": "1", **os.environ}


def execute(path: Path, timeout: int, allow_errors: bool) -> nbformat.NotebookNode:
    """The notebook at path, executed in its own directory (as myst-nb does), once more after a cell timeout or a
    dead kernel. A cell's prints are merged into one output per stream (and a progress bar's carriage returns
    resolved to its last state): the website shows one block per cell, not one per print made between
    computations."""
    def attempt() -> nbformat.NotebookNode:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, allow_errors=allow_errors, record_timing=False,
                                coalesce_streams=True, resources={"metadata": {"path": str(path.parent)}})
        return client.execute(env=kernel_env())

    try:
        return attempt()
    except RETRIED as err:
        logger.warning(f"{path.name}: {type(err).__name__} ({err}); executing it once more")
        return attempt()


def execute_all(app, env, docnames: list[str]) -> None:
    """env-before-read-docs: execute the notebooks among docnames in parallel into myst-nb's cache."""
    config = env.mystnb_config
    if config.execution_mode != "cache":
        return
    paths = [p for p in (Path(env.doc2path(d)) for d in sorted(docnames)) if p.suffix == ".ipynb"]
    if not paths:
        return
    cache = get_cache(config.execution_cache_path)
    last_seconds = {}
    for record in cache.list_cache_records():
        if Path(record.uri) in paths:
            last_seconds[Path(record.uri)] = record.data.get("execution_seconds", 0)
            cache.remove_cache(record.pk)
    paths.sort(key=lambda p: -last_seconds.get(p, 0))  # the longest of the last build first: a shorter tail
    jobs = app.config.icl_book_jobs or available_cores()
    logger.info(f"executing {len(paths)} notebooks, {jobs} at a time (icl_meta.book.execute)")

    def run(path: Path) -> tuple[nbformat.NotebookNode, float]:
        start = time.perf_counter()
        nb = execute(path, config.execution_timeout, config.execution_allow_errors)
        return nb, time.perf_counter() - start

    with ThreadPoolExecutor(jobs) as pool:  # threads suffice: each notebook runs in its own kernel process
        futures = {pool.submit(run, p): p for p in paths}
        for done, future in enumerate(as_completed(futures), 1):
            path = futures[future]
            try:
                nb, seconds = future.result()
            except Exception as err:  # the notebooks not started are dropped, those running end first
                for f in futures:
                    f.cancel()
                raise ExtensionError(f"{path.name} failed to execute:\n{err}") from err
            cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            logger.info(f"executed {path.name} in {seconds:.0f} s ({done}/{len(paths)})")


def setup(app) -> dict:
    """Register the handler and its one setting, icl_book_jobs (notebooks at a time; 0: one per core)."""
    app.add_config_value("icl_book_jobs", 0, "env", int)
    app.connect("env-before-read-docs", execute_all)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
