"""Shipped run artifacts must still be what this code produces: retrain their first steps and compare."""

import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from icl_meta import Model, load_run, retrain_start
from icl_meta.book.dashboard import dashboard, dashboard_table
from icl_meta.book.paper import CHAPTER_CLAIMS
from icl_meta.config import fast_mode
from icl_meta.runs import ARTIFACTS, checkpoint_path, shipped_sweep
from icl_meta.sweeps import SWEEP_NAMES

# artifacts/<experiment>/<run>, and the finished runs of the full-length sweep regeneration,
# artifacts/full/<sweep>/<run> (read by the chapters in place of the 60,000-step run of the same name)
SHIPPED = sorted(p.parent for pattern in ("*/*/config.json", "full/*/*/config.json") for p in ARTIFACTS.glob(pattern))
RUN_ID = {"ids": lambda p: str(p.relative_to(ARTIFACTS))}
FIRST_STEPS = 300
# Retraining a run's first steps takes seconds, and the full-length regeneration ships over a hundred runs: in fast
# mode (the README's test command, CI) the retraining check covers one of SLICES fixed slices of the shipped runs
# (a run's slice: the CRC-32 of its path), the slice turning with the commit count, so any SLICES consecutive
# commits check every run once. Without ICL_FAST=1 (`python -m pytest tests/test_artifacts.py`) every run is retrained.
SLICES = 3


def commit_count() -> int | None:
    """How many commits HEAD has (None outside a git checkout, e.g. an installed package)."""
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=root, capture_output=True, text=True)
    return int(res.stdout) if res.returncode == 0 else None


def retrained(runs: list[Path], fast: bool, count: int | None) -> list[Path]:
    """The runs whose first steps are retrained: all of them, or in fast mode inside a checkout, the slice
    count % SLICES."""
    if not fast or count is None:
        return runs
    return [p for p in runs if zlib.crc32(str(p.relative_to(ARTIFACTS)).encode()) % SLICES == count % SLICES]


def test_artifacts_are_shipped():
    """The default setting is shipped with at least three seeds."""
    assert len([p for p in SHIPPED if p.parent.name == "default"]) >= 3


def test_a_sweep_is_read_at_full_length_where_shipped():
    """shipped_sweep takes each (setting, seed) from artifacts/full/<sweep>/ where it is shipped, else the
    60,000-step run, so every setting is read once and the full-length runs replace their window-length ones."""
    for full in sorted(p for p in (ARTIFACTS / "full").iterdir() if p.is_dir()):
        runs = shipped_sweep(full.name)
        names = [r.path.name for r in runs]
        assert len(names) == len(set(names))
        assert set(names) == {p.name for p in (ARTIFACTS / full.name).iterdir()} | {p.name for p in full.iterdir()}
        assert all(r.path.parent == full for r in runs if (full / r.path.name).is_dir())
        assert all(r.path.parent == ARTIFACTS / full.name for r in runs if not (full / r.path.name).is_dir())


@pytest.mark.parametrize("path", SHIPPED, **RUN_ID)
def test_shipped_run_provenance_is_complete(path):
    """A shipped run is finished, compacted, and records command, seeds, versions, commit and wall time;
    its last checkpoint is the final step's (kept, or recorded as dropped)."""
    run = load_run(path)
    prov = run.provenance
    assert prov["finished"] and prov["command"].startswith("icl-meta ")
    assert prov["seeds"] == run.config.seeds()
    assert prov["git_commit"] and prov["versions"]["torch"] and prov["wall_time_s"] > 0
    assert not (path / "state.safetensors").exists()
    assert run.steps[-1] == prov["final_step"]
    last = run.checkpoint_steps[-1:] or prov["dropped_checkpoints"][-1:]  # metrics-only runs dropped theirs
    assert last == [prov["final_step"]]


def test_every_run_is_retrained_in_some_slice():
    """The fast-mode slices partition the shipped runs: SLICES consecutive commits retrain every run once."""
    slices = [retrained(SHIPPED, True, count) for count in range(7, 7 + SLICES)]
    assert sorted(p for part in slices for p in part) == SHIPPED
    assert all(slices) and retrained(SHIPPED, False, 7) == SHIPPED == retrained(SHIPPED, True, None)


def assert_first_steps_match(run, fresh) -> None:
    """fresh (a retraining of run's first steps) logged the same steps and, to float rounding, the same metrics."""
    rows = run.steps <= FIRST_STEPS
    assert np.array_equal(run.steps[rows], fresh.steps)
    for col, ref in run.metrics.items():
        if col == "time":
            continue
        atol = 3 / fresh.config.eval_size if col.startswith("acc") or col == "train_acc" else 1e-3
        np.testing.assert_allclose(fresh.metrics[col], ref[rows], atol=atol, rtol=1e-3, err_msg=col)


@pytest.mark.parametrize("path", retrained(SHIPPED, fast_mode(), commit_count()), **RUN_ID)
def test_shipped_run_first_steps_match_the_code(path, tmp_path):
    """Retraining the first steps from the recorded config reproduces the logged metrics and the init.

    The retraining is eager, which reproduces a compiled run to float rounding: its sums run in another order, and
    where the model learns fast a few predictions near a tie can flip (5 of 2,048 for the standard block's seed 2
    at step 300). A compiled run that differs from its eager retraining is retrained compiled as it was trained,
    which must then match (it costs a compilation, so it is the fallback, not the rule)."""
    run = load_run(path)
    try:
        assert_first_steps_match(run, retrain_start(run, FIRST_STEPS, tmp_path / "eager", progress=False))
    except AssertionError:
        if not run.provenance["compiled"]:
            raise
        compiled = retrain_start(run, FIRST_STEPS, tmp_path / "compiled", progress=False, compile=True)
        assert_first_steps_match(run, compiled)
    if 0 in run.checkpoint_steps:
        init = Model(run.config).state_dict()
        for k, v in load_file(str(checkpoint_path(path, 0))).items():
            assert torch.equal(init[k], v), k


def test_dashboard_covers_every_chapter_and_experiment():
    """The intro's dashboard recomputes a check for every chapter that has one, from every shipped
    experiment, with a verdict. 'Not comparable' is allowed only for the offline LLM row (always), the
    sweep chapters (10-14), whose 60k-step window or disagreeing phase rules can leave a claim open, and
    chapter 15's control rows while fewer than three seeds of a control are shipped."""
    rows = dashboard(n_mc=2_000)
    chapters = {where for where, _ in rows}
    assert chapters == set(CHAPTER_CLAIMS)
    assert {p.parent.name for p in SHIPPED} - {"controls"} == {"default", "masks", "scc_theory", "induction",
                                                               "induction_k1024", *SWEEP_NAMES}
    open_ok = set(list(CHAPTER_CLAIMS)[7:12])  # chapters 10-14
    for where, c in rows:
        assert c.ours and c.paper
        training = where.startswith("15.") and "control" in c.what and "still training" in c.why
        assert c.ok is not None or where == "9. LLM" or where in open_ok or training, c
        if where == "9. LLM":
            assert c.ok is None
    assert dashboard_table(rows).count("\n") == len(rows) + 1
