"""Where the runs of a sweep train: a local pool of processes (the default), a SLURM cluster through
`submitit`, or a Dask cluster. Every one takes the same jobs, and `run_jobs` submits them in order.

A job is one run: its config, its run directory and how to run it. Training a run directory is idempotent
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


def train_job(job: Job) -> str:
    """Train one job in this process (with job.threads torch threads) and say how it ended, in one line."""
    from .config import Config
    from .runs import RunLocked
    from .trainer import train

    try:
        run = train(Config.from_dict(job.config), job.out, progress=False, command=job.command,
                    threads=job.threads, compile=job.compile)
    except RunLocked as e:
        return f"{job.out}: skipped, {e}"
    return f"{job.out}: {run.provenance['final_step']:,} steps, final accuracy {run.metrics['acc'][-1]:.3f}"


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


def run_jobs(jobs: list[Job], executor, progress: bool = False) -> list[str]:
    """Submit every job, in order, to executor (anything with submit(fn, arg) returning an object with
    result(), as concurrent.futures and submitit executors do); print and return one line per run, in order.

    A run that fails (diverged, a damaged file, a lost worker) does not stop the others: its line says
    "failed", and once every run has ended RunsFailed names the failed ones."""
    futures = [executor.submit(train_job, job) for job in jobs]
    lines, failed = [], []
    bar = progress_bar(len(jobs), enabled=progress, desc="runs")
    for job, future in zip(jobs, futures):
        try:
            lines.append(future.result())
        except Exception as e:  # reported below, after the other runs
            failed.append(job.out)
            lines.append(f"{job.out}: failed, {type(e).__name__}: {e}")
        print(lines[-1], flush=True)
        bar.update()
    bar.close()
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}")
    return lines
