"""Shared fixtures: single-threaded torch, tiny configs and one finished tiny run."""

import os

import pytest
import torch

from icl_meta import Config, train
from icl_meta.task import generator

torch.set_num_threads(1)
# The chapter kernels nbmake starts inherit this environment: one torch/OpenMP thread each, as in the book build
# (icl_meta.book.execute.kernel_env). With torch's default two threads beside one busy process the chapters took
# 23 minutes in all under nbmake, chapter 15 alone 363 s (2026-12-02).
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY = dict(steps=60, batch_size=32, eval_every=10, save_every=20, eval_size=256, aux_eval_size=128, probe_size=64)


# The end-to-end test modules; every chapter notebook (nbmake) is one too.
INTEGRATION = {"test_artifacts.py", "test_book.py"}


def pytest_collection_modifyitems(items):
    """Mark the end-to-end tests `integration` (the rest are unit tests), and let a chapter that fails run once
    more: a kernel's reply is rarely lost under load (see pyproject.toml), never a reason to rerun a unit test."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.flaky(reruns=1))
        elif item.path.name in INTEGRATION:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def gen():
    """A fresh seeded torch generator."""
    return generator(0)


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    """A 60-step run small enough for CI."""
    return Config(**TINY)


@pytest.fixture(scope="session")
def tiny_run(tiny_cfg, tmp_path_factory):
    """The finished run of tiny_cfg (shared, treat as read-only)."""
    return train(tiny_cfg, tmp_path_factory.mktemp("runs") / "a", progress=False)
