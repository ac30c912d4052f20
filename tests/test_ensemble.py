"""The ensemble trainer writes, for every member, the run directory the single-run trainer writes."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from icl_meta import Config, load_run, train
from icl_meta.ensemble import check_members, train_ensemble
from icl_meta.executors import Job, group_jobs, local_executor, run_jobs
from icl_meta.trainer import DivergedError, RunWriter

from conftest import TINY

# Members that differ in seeds and in data settings (T, ε, B and p_B, K, the query rule), in steps and the
# classifier's initialisation: everything but the shared model shape.
MEMBERS = [Config(**TINY, seed=0), Config(**TINY, seed=1, num_tasks=2, eps=0.3),
           Config(**{**TINY, "steps": 40}, seed=2, burstiness=2, p_bursty=0.5, num_classes=32),
           Config(**TINY, seed=3, query_rule="uniform", classifier_init="torch_linear")]


def assert_same_run(run, ref) -> None:
    """Same files, config, metrics (but wall time) and checkpoints, to float rounding."""
    assert sorted(p.name for p in run.path.rglob("*")) == sorted(p.name for p in ref.path.rglob("*"))
    assert run.config == ref.config and run.provenance["final_step"] == ref.provenance["final_step"]
    for col, v in ref.metrics.items():
        if col != "time":
            np.testing.assert_allclose(run.metrics[col], v, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=col)
    for p in (ref.path / "checkpoints").iterdir():
        a, b = load_file(p), load_file(run.path / "checkpoints" / p.name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return [train(c, root / f"m{i}", progress=False) for i, c in enumerate(MEMBERS)]


def test_members_write_what_the_single_run_trainer_writes(tmp_path, references):
    runs = train_ensemble(MEMBERS, [tmp_path / f"m{i}" for i in range(len(MEMBERS))], progress=False, command="t")
    for run, ref in zip(runs, references):
        assert_same_run(run, ref)
        assert run.provenance["finished"] and run.provenance["ensemble"] == [len(MEMBERS)]
    # The member with fewer steps left the ensemble at its end; the others went on to theirs.
    assert [r.provenance["final_step"] for r in runs] == [c.steps for c in MEMBERS]


def test_members_resume_from_different_steps(tmp_path, references):
    """A finished member is returned as is, an interrupted one resumes, a new one starts: still the same runs."""
    outs = [tmp_path / f"m{i}" for i in range(len(MEMBERS))]
    train(MEMBERS[0], outs[0], progress=False)
    train(MEMBERS[1].replace(steps=20), outs[1], progress=False)
    stamp = (outs[0] / "metrics.safetensors").stat().st_mtime_ns
    runs = train_ensemble(MEMBERS, outs, progress=False)
    assert (outs[0] / "metrics.safetensors").stat().st_mtime_ns == stamp
    assert runs[1].provenance["resumed_at"] == [20] and runs[1].provenance["ensemble"] == [3]
    for run, ref in zip(runs, references):
        assert_same_run(run, ref)


def test_a_member_killed_after_its_last_step_is_only_finished(tmp_path, references, monkeypatch):
    """A member whose resume state is at its last step, not yet marked finished, takes no further step."""
    outs = [tmp_path / f"m{i}" for i in range(2)]
    monkeypatch.setattr(RunWriter, "finish", lambda self: None)  # killed before finishing
    train(MEMBERS[0], outs[0], progress=False)
    monkeypatch.undo()
    runs = train_ensemble(MEMBERS[:2], outs, progress=False)
    assert runs[0].provenance["finished"] and runs[0].steps[-1] == MEMBERS[0].steps
    for run, ref in zip(runs, references):
        assert_same_run(run, ref)


def test_a_diverged_member_does_not_stop_the_others(tmp_path, references, monkeypatch):
    log = RunWriter.log

    def diverging(self, fast):
        if self.out.name == "m1" and self.step == 30:
            raise DivergedError(f"training diverged at step 30; {self.out} is left as last saved, resumable")
        return log(self, fast)

    monkeypatch.setattr(RunWriter, "log", diverging)
    outs = [tmp_path / f"m{i}" for i in range(2)]
    with pytest.raises(DivergedError, match="m1 is left"):
        train_ensemble(MEMBERS[:2], outs, progress=False)
    assert_same_run(load_run(outs[0]), references[0])
    assert not json.loads((outs[1] / "provenance.json").read_text())["finished"]
    monkeypatch.setattr(RunWriter, "log", log)
    assert_same_run(train_ensemble(MEMBERS[:2], outs, progress=False)[1], references[1])


def test_members_must_share_the_model_shape(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match=r"n_heads must be the same for every member of an ensemble, got \[1, 2\]"):
        train_ensemble([Config(**TINY), Config(**TINY, n_heads=2)], outs)
    with pytest.raises(ValueError, match="lr must be the same"):
        train_ensemble([Config(**TINY), Config(**TINY, lr=0.1)], outs)
    with pytest.raises(ValueError, match="outs must be distinct"):
        train_ensemble([Config(**TINY), Config(**TINY, seed=1)], [outs[0], outs[0]])
    with pytest.raises(ValueError, match="one run directory per config"):
        check_members([Config(**TINY)], outs)
    with pytest.raises(ValueError, match="at least one config"):
        check_members([], [])
    assert not any(tmp_path.iterdir())  # refused before any directory was made


def _job(cfg: Config, out) -> Job:
    return Job(cfg.to_dict(), str(out), 1, False, "icl-meta test")


def test_group_jobs_keeps_the_order_and_groups_compatible_runs(tmp_path):
    jobs = [_job(Config(**TINY, seed=s, n_heads=h), tmp_path / f"h{h}s{s}") for s in range(3) for h in (1, 2)]
    groups = group_jobs(jobs, 2)
    assert [[j.out[-4:] for j in (g if isinstance(g, tuple) else (g,))] for g in groups] == [
        ["h1s0", "h1s1"], ["h2s0", "h2s1"], ["h1s2"], ["h2s2"]]
    assert group_jobs(jobs, 1) == jobs
    with pytest.raises(ValueError, match="ensemble must be an integer >= 1"):
        group_jobs(jobs, 0)


def test_an_ensemble_job_runs_on_an_executor(tmp_path, references, capsys):
    jobs = [_job(c, tmp_path / f"m{i}") for i, c in enumerate(MEMBERS)]
    with local_executor(1) as ex:
        lines = run_jobs(group_jobs(jobs, 4), ex)
    assert [line.split(":")[0] for line in lines] == [j.out for j in jobs]
    for i, ref in enumerate(references):
        assert_same_run(load_run(tmp_path / f"m{i}"), ref)


@pytest.mark.parametrize("shape", [{"n_heads": 4}, {"block": "standard"}, {"readout": "all_labels"},
                                   {"n_layers": 3, "w_o": True}], ids=lambda s: ",".join(s))
def test_other_model_shapes(tmp_path, shape):
    members = [Config(**TINY, **shape, seed=s, eps=eps) for s, eps in ((0, 0.1), (1, 0.4))]
    runs = train_ensemble(members, [tmp_path / f"e{i}" for i in range(2)], progress=False)
    for i, (run, cfg) in enumerate(zip(runs, members)):
        assert_same_run(run, train(cfg, tmp_path / f"s{i}", progress=False))
