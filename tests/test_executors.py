"""The executors a sweep can run on write the same run directories as training in this process."""

import numpy as np
import pytest
import submitit
from dask import distributed

from icl_meta import Config, load_run, train
from icl_meta.executors import Job, RunsFailed, local_executor, run_jobs

from conftest import TINY


def _jobs(root, seeds=(0, 1)) -> list[Job]:
    return [Job(Config(**TINY, seed=s).to_dict(), str(root / f"seed-{s}"), 1, False, "icl-meta test") for s in seeds]


def _same_as_in_process(root, tmp_path, seeds=(0, 1)) -> None:
    for s in seeds:
        ref = train(Config(**TINY, seed=s), tmp_path / f"ref-{s}", progress=False)
        run = load_run(root / f"seed-{s}")
        assert run.provenance["finished"] and run.provenance["command"] == "icl-meta test"
        for col, v in ref.metrics.items():
            if col != "time":
                np.testing.assert_array_equal(run.metrics[col], v, err_msg=col)


def test_local_pool_trains_in_order_and_resubmission_is_idempotent(tmp_path, capsys):
    jobs = _jobs(tmp_path / "pool")
    with local_executor(2) as ex:
        lines = run_jobs(jobs, ex)
    assert [line.split(":")[0] for line in lines] == [j.out for j in jobs]
    _same_as_in_process(tmp_path / "pool", tmp_path)
    stamp = (tmp_path / "pool" / "seed-1" / "metrics.safetensors").stat().st_mtime_ns
    with local_executor(1) as ex:
        run_jobs(jobs, ex)
    assert (tmp_path / "pool" / "seed-1" / "metrics.safetensors").stat().st_mtime_ns == stamp
    assert "final accuracy" in capsys.readouterr().out


def test_local_pool_refuses_zero_processes():
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        local_executor(0)


def test_submitit_local_executor(tmp_path):
    """submitit's LocalExecutor runs each job as its own process, as a SLURM job would."""
    ex = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    ex.update_parameters(timeout_min=10)
    run_jobs(_jobs(tmp_path / "slurm"), ex)
    _same_as_in_process(tmp_path / "slurm", tmp_path)


def test_dask_local_cluster(tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            run_jobs(_jobs(tmp_path / "dask"), client.get_executor())
    _same_as_in_process(tmp_path / "dask", tmp_path)


def test_a_failed_run_does_not_stop_the_others(tmp_path, capsys):
    jobs = _jobs(tmp_path / "pool")
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "seed-0").write_text("a file where a run directory should be")
    with local_executor(1) as ex, pytest.raises(RunsFailed, match="1 of 2 runs failed"):
        run_jobs(jobs, ex)
    out = capsys.readouterr().out
    assert "seed-0: failed" in out and load_run(tmp_path / "pool" / "seed-1").provenance["finished"]
