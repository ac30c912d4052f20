"""Where the runs of a sweep train: a local pool of processes (the default), a SLURM cluster through
`submitit`, or a Dask cluster. Every one takes the same jobs, and `run_jobs` submits them in order.

A job is one run: its config, its run directory and how to run it; `group_jobs` may gather compatible jobs
into ensembles (tuples of jobs), each trained by one worker as one batched model (`icl_meta.ensemble`: it pays
on a GPU, not on one CPU core). Training a run directory is idempotent
(a finished run returns at once, an interrupted one resumes from its last state, one that another process
is writing is skipped), so submitting a whole queue again, to any executor, is safe. Run files are only
ever written as JSON and safetensors; the executors ship the jobs themselves between processes.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .progress import progress_bar

EXECUTORS = ("local", "slurm", "dask")


class RunsFailed(RuntimeError):
    """Some runs of a sweep failed; the others ran to their end."""


@dataclass(frozen=True)
class Job:
    """One run to train: config (as Config.to_dict()), run directory, torch threads, whether to compile the
    model, and the command recorded in the run's provenance."""

    config: dict
    out: str
    threads: int
    compile: bool
    command: str


Work = Job | tuple[Job, ...]


def members(work: Work) -> tuple[Job, ...]:
    """The jobs of a unit of work: the job itself, or the jobs of an ensemble."""
    return work if isinstance(work, tuple) else (work,)


def _line(job: Job, run) -> str:
    return f"{job.out}: {run.provenance['final_step']:,} steps, final accuracy {run.metrics['acc'][-1]:.3f}"


def train_job(work: Work) -> str:
    """Train one job, or an ensemble of jobs as one batched model, in this process (with the job's torch threads)
    and say how each run ended, one line per run."""
    from .config import Config
    from .ensemble import train_ensemble
    from .runs import RunLocked
    from .trainer import train

    jobs = members(work)
    try:
        if isinstance(work, tuple):
            runs = train_ensemble([Config.from_dict(j.config) for j in jobs], [j.out for j in jobs], progress=False,
                                  command=jobs[0].command, threads=jobs[0].threads)
        else:
            runs = [train(Config.from_dict(work.config), work.out, progress=False, command=work.command,
                          threads=work.threads, compile=work.compile)]
    except RunLocked as e:
        return "\n".join(f"{j.out}: skipped, {e}" for j in jobs)
    return "\n".join(_line(j, run) for j, run in zip(jobs, runs))


def group_jobs(jobs: list[Job], size: int) -> list[Work]:
    """The jobs in order, those that can train as one ensemble (the same ensemble.SHARED fields and threads)
    gathered into tuples of up to `size`, each placed where its first job was; size 1 keeps every job alone."""
    from .config import Config
    from .ensemble import ensemble_key

    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"ensemble must be an integer >= 1, got {size!r}")
    groups: list[list[Job]] = []
    open_group: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = (ensemble_key(Config.from_dict(job.config)), job.threads)
        group = open_group.get(key)
        if group is None or len(group) == size:
            group = open_group[key] = []
            groups.append(group)
        group.append(job)
    return [g[0] if len(g) == 1 else tuple(g) for g in groups]


def local_executor(processes: int) -> Executor:
    """A pool of `processes` fresh (spawned) worker processes on this machine."""
    if processes < 1:
        raise ValueError(f"jobs must be >= 1, got {processes}")
    return ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"))


def slurm_executor(folder: str | Path, partition: str | None = None, minutes: int = 24 * 60, cpus: int = 1):
    """A submitit executor that submits each job as one SLURM job of `cpus` cores (logs under folder)."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=minutes, cpus_per_task=cpus, slurm_partition=partition)
    return executor


def dask_executor(address: str) -> Executor:
    """A concurrent.futures executor on the Dask cluster whose scheduler is at `address`."""
    from dask.distributed import Client

    return Client(address).get_executor()


def run_jobs(jobs: list[Work], executor, progress: bool = False) -> list[str]:
    """Submit every job (or ensemble of jobs), in order, to executor (anything with submit(fn, arg) returning an
    object with result(), as concurrent.futures and submitit executors do); print and return one line per run,
    in order.

    A run that fails (diverged, a damaged file, a lost worker) does not stop the others: its line says
    "failed", and once every job has ended RunsFailed names the failed runs (every run of a failed ensemble)."""
    futures = [executor.submit(train_job, job) for job in jobs]
    runs = [j for job in jobs for j in members(job)]
    lines, failed = [], []
    bar = progress_bar(len(runs), enabled=progress, desc="runs")
    for job, future in zip(jobs, futures):
        outs = [j.out for j in members(job)]
        try:
            lines += future.result().split("\n")
        except Exception as e:  # reported below, after the other runs
            failed += outs
            lines += [f"{out}: failed, {type(e).__name__}: {e}" for out in outs]
        print("\n".join(lines[-len(outs):]), flush=True)
        bar.update(len(outs))
    bar.close()
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}")
    return lines
