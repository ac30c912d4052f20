"""Shared fixtures: single-threaded torch, tiny configs and one finished tiny run."""

import pytest
import torch

from icl_meta import Config, train
from icl_meta.task import generator

torch.set_num_threads(1)

TINY = dict(steps=60, batch_size=32, eval_every=10, save_every=20, eval_size=256, aux_eval_size=128, probe_size=64)


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
