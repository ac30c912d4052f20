"""Training (Methods §Training): plain SGD on fresh batches, fixed seeded evaluation sets, log-spaced
checkpoints, exact resume and optional early stop. `train(cfg, out)` writes a run directory."""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import shutil
import tempfile
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad_and_value

from .config import Config
from .model import Model, loss_and_correct, readout_loss
from .probes import attention_maps, metric_columns
from .progress import progress_bar
from .runs import (Run, atomic_save_tensors, atomic_write_text, checkpoint_path, git_commit, load_run, locked,
                   provenance, read_json, read_tensors, recorded_command, remove_temporaries, save_metrics,
                   versions)
from .task import BATCH_FIELDS, Batch, eval_sets, generator, make_instance, sample

EVAL_CHUNK = 256
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def retain_freed_memory() -> bool:
    """Let glibc's allocator keep freed memory for reuse instead of returning it to the OS; returns whether it
    applied (Linux with glibc; elsewhere nothing changes). The numbers computed are unchanged.

    A training step frees and allocates again the same tensors of 0.1-2 MB every step, an evaluation larger ones.
    With glibc's defaults such blocks can go back to the OS, and the next step gets fresh pages that the kernel
    zeroes on first touch: tens to hundreds of page faults per step. Measured with `icl-meta bench` against
    `--no-retain-memory` (2026-12-01, one core): eager steps 5% and evaluations 11-14% faster (the previous path's
    evaluation 2x); page faults per step fell from hundreds to a few. Afterwards blocks up to 32 MiB come from the
    heap, and the heap is trimmed only past 256 MiB free: the process keeps about its peak memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))


def checkpoint_steps(cfg: Config) -> list[int]:
    """Step 0 plus about n_checkpoints - 1 log-spaced multiples of eval_every up to cfg.steps."""
    if cfg.n_checkpoints == 0:
        return []
    grid = np.geomspace(cfg.eval_every, cfg.steps, max(cfg.n_checkpoints - 1, 1))
    snapped = {int(round(s / cfg.eval_every)) * cfg.eval_every for s in grid}
    return sorted({0, cfg.steps} | {min(max(s, cfg.eval_every), cfg.steps) for s in snapped})


@torch.no_grad()
def query_logits(model: Model, batch: Batch) -> torch.Tensor:
    """Logits [B, L] at the query, computed in chunks."""
    return torch.cat([model(batch.slice(i, i + EVAL_CHUNK))[:, -1] for i in range(0, len(batch), EVAL_CHUNK)])


def accuracy(model: Model, batch: Batch) -> float:
    """Fraction of batch whose query label the model predicts."""
    return (query_logits(model, batch).argmax(-1) == batch.target).float().mean().item()


def runnable(model: Model, compile: bool) -> Model:
    """model itself, or with its forward compiled by torch.compile (the same parameters, the same function to
    float rounding): the evaluations' forward of a compiled run, whose training steps take compiled_step.
    Compiling takes tens of seconds once per process (less with inductor's cache warm) and makes an evaluation
    ~1.2x faster than the eager path on one CPU core (`icl-meta bench`): it pays for long runs, not short ones.
    Compiling resets torch.compile's caches first: a process that trains run after run (a sweep worker) would
    otherwise reach its recompilation limit after a few runs and silently fall back to eager."""
    if not compile:
        return model
    torch.compiler.reset()
    return torch.compile(model, dynamic=False)


def eager_step(model: Model, fast: Model) -> Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]:
    """One SGD step of model on a batch through fast (the model or its compiled forward, see runnable): loss,
    autograd's backward, torch.optim.SGD's update. Returns the loss and the bool [B] of correct predictions."""
    opt = torch.optim.SGD(model.parameters(), lr=model.cfg.lr)

    def step(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss, correct = loss_and_correct(fast, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss, correct

    return step


def compiled_step(model: Model) -> Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]:
    """eager_step's function with the loss and its gradient (torch.func.grad_and_value over the model's
    parameters: forward and backward) traced into one torch.compile graph, Inductor's C++ wrapper calling its
    kernels, then SGD's update of the parameters in place (one foreach call, as torch.optim.SGD makes it). On one
    CPU core it takes out what the autograd engine and the Python launch of each small kernel cost, much of a step
    of this model: about 1.5x the eager step here (`icl-meta bench`). The same run to float rounding
    (tests/test_trainer.py). Compiling takes about half a minute, once per process."""
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    readout = model.cfg.readout

    def loss(p: dict[str, torch.Tensor], tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = Batch(*tensors)
        return readout_loss(readout, functional_call(model, (p, buffers), (batch,)), batch)

    gradient = torch.compile(grad_and_value(loss, has_aux=True), dynamic=False, options={"cpp_wrapper": True})

    @torch.no_grad()
    def step(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        grads, (value, correct) = gradient({k: p.detach() for k, p in params.items()},
                                           tuple(getattr(batch, n) for n in BATCH_FIELDS))
        torch._foreach_add_(list(params.values()), [grads[k] for k in params], alpha=-model.cfg.lr)
        return value, correct

    return step


@torch.no_grad()
def evaluate(model: Model, sets: dict[str, Batch], probe_model: Model | None = None) -> dict[str, float]:
    """Accuracy on every set, in-distribution loss and per-task accuracy, and the circuit metrics.

    model may be a compiled one (see runnable); the attention maps are read from probe_model (default: model),
    which must then be the eager model, as they take another path through forward."""
    cfg = model.cfg
    ind = sets["in_dist"]
    logits = query_logits(model, ind)
    correct = (logits.argmax(-1) == ind.target).float()
    row = {"loss": torch.nn.functional.cross_entropy(logits, ind.target).item(), "acc": correct.mean().item()}
    per_task = torch.zeros(cfg.num_tasks, device=correct.device).index_add_(0, ind.task, correct)
    seen = torch.bincount(ind.task, minlength=cfg.num_tasks)
    for t, v in enumerate((per_task / seen).tolist()):  # NaN for a task the set never drew
        row[f"acc_task{t}"] = v
    for kind in ("random_label", "in_weights", "copy"):
        if kind in sets:
            row[f"acc_{kind}"] = accuracy(model, sets[kind])
    row.update(metric_columns(attention_maps(probe_model or model, ind.slice(0, cfg.probe_size))))
    return row


# Fields a run may change when resumed: they decide how long it runs, not what it computes.
RESUMABLE_CHANGES = {"steps", "early_stop_acc", "early_stop_factor", "save_every"}


class DivergedError(RuntimeError):
    """The training loss or the evaluation loss is no longer finite: the run stopped, resumable from its last
    saved state (a lower lr needs a new run directory)."""


def _divergence(out: Path, cfg: Config, row: dict, metrics: dict[str, list[float]]) -> str:
    """The message of a run that diverged at the evaluation `row`, given the metrics logged before it."""
    finite = [(int(s), v) for s, v in zip(metrics["step"], metrics["train_loss"]) if math.isfinite(v)]
    last = f"last finite training loss {finite[-1][1]:.4g} at step {finite[-1][0]}" if finite else "none finite before"
    return (f"training diverged at step {row['step']} (training loss {row['train_loss']}, evaluation loss "
            f"{row['loss']}; {last}); {out} is left as last saved, resumable; lr = {cfg.lr} may be too large")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _create(out: Path, cfg: Config) -> None:
    """Make out, a missing or empty directory, a run directory of cfg (config.json and checkpoints/): built
    under a temporary sibling name (.NAME.PID.tmp) and renamed into place, so that a kill leaves either no run
    or one the next call resumes. Temporary siblings of dead processes are removed first. What an older
    version left when killed at this point (an empty checkpoints/, config.json.tmp) counts as empty."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a directory, got the file {out}")
    if out.resolve() == Path.cwd().resolve():
        raise ValueError(f"out must not be the current directory (a new run is renamed into place), got {out}")
    leftovers = list(out.iterdir()) if out.is_dir() else []
    if any(p.name != "config.json.tmp" and not (p.name == "checkpoints" and p.is_dir() and not any(p.iterdir()))
           for p in leftovers):
        raise ValueError(f"out must be an empty or missing directory or a run of the same config, got {out}")
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for p in out.parent.iterdir():
            pid = p.name[len(out.name) + 2:-len(".tmp")]
            if p.name.startswith(f".{out.name}.") and p.name.endswith(".tmp") and pid.isdigit() and (
                    int(pid) == os.getpid() or not _alive(int(pid))):
                shutil.rmtree(p)
        (tmp / "checkpoints").mkdir(parents=True)
    except OSError as e:
        raise ValueError(f"out must be a path where a directory can be created, got {out} ({e})") from e
    atomic_write_text(tmp / "config.json", cfg.to_json())
    for p in leftovers:
        p.rmdir() if p.is_dir() else p.unlink()
    try:
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp)
        if not (out / "config.json").exists():  # else another process made out first: it is a run now
            raise


def _prepare(out: Path, cfg: Config) -> tuple[dict | None, bool]:
    """Check the run directory out (holding config.json, locked by us) against cfg, verify its files' checksums
    and remove what killed writes left. Returns the saved resume state (None when there is none yet) and whether
    the run directory already holds exactly this config, finished or not."""
    saved = load_run(out).config
    diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items() if getattr(cfg, k) != v}
    state = out / "state.safetensors"
    if set(diff) - RESUMABLE_CHANGES:
        raise ValueError(f"{out} holds a run with another config (saved, asked): {diff}")
    if diff and not state.exists():
        raise ValueError(f"{out} has no resume state (compacted?), so its {sorted(diff)} cannot change")
    remove_temporaries(out)
    for p in (out / "instance.safetensors", *(out / "checkpoints").glob("step_*.safetensors")):
        if p.exists():
            read_tensors(p)
    return (read_tensors(state) if state.exists() else None), not diff


def _early_stop(cfg: Config, steps: list[float], acc: list[float]) -> bool:
    """True once accuracy has held early_stop_acc from some step t up to step early_stop_factor * t."""
    if cfg.early_stop_acc is None or acc[-1] < cfg.early_stop_acc:
        return False
    below = [s for s, a in zip(steps, acc) if a < cfg.early_stop_acc]
    held_since = next(s for s in steps if not below or s > below[-1])
    return steps[-1] >= max(cfg.early_stop_factor * held_since, held_since + cfg.eval_every)


def check_arguments(cfg: Config, threads: int) -> None:
    """Refuse, before any work, a config, a thread count or a device this machine cannot train."""
    cfg.validate()
    if not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device must be 'cpu' on a machine without CUDA, got {cfg.device!r}")


def open_run(cfg: Config, out: Path) -> Run | None:
    """The finished run of cfg in out, returned without taking its lock; otherwise None, once out is a run
    directory of cfg (made if missing, see _create) to be trained."""
    if (out / "config.json").is_file():
        run = load_run(out)
        if run.config == cfg and run.provenance.get("finished"):
            return run
    else:
        _create(out, cfg)
    return None


def train(cfg: Config, out: str | os.PathLike | None = None, progress: bool | None = None,
          command: str | None = None, threads: int = 1, compile: bool = False) -> Run:
    """Train cfg into the run directory `out` and return the loaded run.

    An existing run of the same config resumes from its last state (a finished one returns at once);
    one that differs only in RESUMABLE_CHANGES (e.g. more steps) continues from its last state too.
    out=None trains into a temporary directory, removed once the returned Run is garbage-collected.
    progress: a progress bar (one updating line in a notebook); default on unless the CI environment variable is set.
    threads: torch threads while training (default 1, as the CLI). The rounding, hence the bits, depend on it:
    provenance.json records it (torch_threads, and resume_threads for every resumption).
    compile: train through compiled_step and evaluate through the compiled forward (runnable): the same run to
    float rounding, faster once compiled; recorded as provenance's compiled (resume_compiled for every resumption).
    A process writing a run holds its lock: a second writer gets runs.RunLocked. A non-finite loss stops the
    run with DivergedError, leaving the directory resumable from its last saved state. Training lets glibc keep
    freed memory for the rest of the process (retain_freed_memory: fewer page faults, the same numbers).
    """
    check_arguments(cfg, threads)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="icl-meta-"))
        try:
            run = train(cfg, out, progress, command, threads, compile)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        weakref.finalize(run, shutil.rmtree, out, ignore_errors=True)
        return run
    out = Path(out)
    finished = open_run(cfg, out)
    if finished is not None:
        return finished
    retain_freed_memory()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with locked(out):
            return _train(cfg, out, progress, command, threads, compile)
    finally:
        torch.set_num_threads(previous)


class RunWriter:
    """One run directory while it trains: its instance, data stream, evaluation sets, metrics window, checkpoints,
    resume state, early stop and provenance. The single-run trainer (`train`) and the ensemble trainer
    (`icl_meta.ensemble`) both drive one per run; how the parameters are updated is theirs.

    Made once out is a run directory whose lock this process holds. `finished`: it already holds this run,
    finished (nothing else is then set). Otherwise `model` is the run's eager model (at its resumed state), and
    the caller calls `begin`, then for every step `batch` and `add`, `log` whenever `add` says so, and `finish`.
    `log` and `finish` read the parameters from `model`, which the caller keeps current."""

    def __init__(self, cfg: Config, out: Path, command: str | None, threads: int, compile: bool):
        state, same = _prepare(out, cfg)
        self.cfg, self.out, self.prov_path = cfg, out, out / "provenance.json"
        self.finished = bool(same and self.prov_path.exists() and read_json(self.prov_path)["finished"])
        if self.finished:
            return
        self.inst = make_instance(cfg)
        self.model = Model(cfg).to(cfg.device)
        self.data = generator(cfg.seeds()["data"], cfg.device)
        self.sets = eval_sets(self.inst, cfg)
        self.keep = set(checkpoint_steps(cfg))
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.window_loss = torch.zeros((), device=cfg.device)
        self.window_correct = torch.zeros((), device=cfg.device)
        self.window_n = 0
        self.fresh = state is None
        if state is None:
            self.prov = provenance(cfg, command, threads, compile)
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", cfg.to_json())
            atomic_save_tensors(out / "instance.safetensors", {"means": self.inst.means, "table": self.inst.table})
            atomic_write_text(self.prov_path, json.dumps(self.prov, indent=1))
            self.step, self.elapsed = 0, 0.0
            return
        self.step, self.elapsed = int(state.pop("step")), float(state.pop("elapsed"))
        if self.step > cfg.steps:
            raise ValueError(f"steps must be >= {self.step}, the step {out} was saved at, to resume it; "
                             f"got {cfg.steps}")
        self.data.set_state(state.pop("rng").to(self.data.get_state().device))
        self.model.load_state_dict(state)
        old = load_run(out).metrics
        rows = old["step"] <= self.step
        for k, v in old.items():
            self.metrics[k] = v[rows].tolist()
        prov = read_json(self.prov_path)
        prov["resumed_at"] = prov.get("resumed_at", []) + [self.step]
        prov.setdefault("resume_threads", []).append(threads)
        prov.setdefault("resume_compiled", []).append(compile)
        prov.setdefault("resume_commands", []).append(recorded_command(command))
        prov.setdefault("resume_commits", []).append(git_commit())
        prov.setdefault("resume_versions", []).append(versions())
        prov.setdefault("resume_platforms", []).append(platform.platform())
        prov["finished"] = False  # until this resumption ends: a killed extension must resume again
        self.prov = prov
        atomic_write_text(self.prov_path, json.dumps(prov, indent=1))
        atomic_write_text(out / "config.json", cfg.to_json())

    def record(self, key: str, value) -> None:
        """Append value to the provenance list `key` (e.g. how this (re)start trained) and write it."""
        self.prov.setdefault(key, []).append(value)
        atomic_write_text(self.prov_path, json.dumps(self.prov, indent=1))

    def begin(self, fast: Model) -> None:
        """Evaluate and checkpoint step 0 of a fresh run (through fast, the model or its compiled forward), then
        start the clock."""
        if self.fresh:
            row = {"step": 0, "train_loss": float("nan"), "train_acc": float("nan"),
                   **evaluate(fast, self.sets, self.model), "time": 0.0}
            for k, v in row.items():
                self.metrics[k].append(v)
            if 0 in self.keep:
                atomic_save_tensors(checkpoint_path(self.out, 0), self.model.state_dict())
        self.t0 = time.time()

    @property
    def running(self) -> bool:
        return self.step < self.cfg.steps

    def batch(self) -> Batch:
        """The next training batch of the run's data stream."""
        return sample(self.inst, self.cfg, self.cfg.batch_size, self.data)

    def add(self, loss: torch.Tensor, correct: torch.Tensor) -> bool:
        """Count one step (its loss and its bool [B] of correct predictions); True when it is to be logged."""
        self.step += 1
        self.window_loss += loss.detach()
        self.window_correct += correct.sum()
        self.window_n += 1
        return self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps

    def log(self, fast: Model) -> bool:
        """Evaluate (through fast), append the metrics row, keep a checkpoint and the resume state when due;
        True once the run stops early. A non-finite loss raises DivergedError."""
        cfg = self.cfg
        row = {"step": self.step, "train_loss": self.window_loss.item() / self.window_n,
               "train_acc": self.window_correct.item() / (self.window_n * cfg.batch_size),
               **evaluate(fast, self.sets, self.model), "time": self.elapsed + time.time() - self.t0}
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["loss"])):
            raise DivergedError(_divergence(self.out, cfg, row, self.metrics))
        for k, v in row.items():
            self.metrics[k].append(v)
        self.window_loss.zero_()
        self.window_correct.zero_()
        self.window_n = 0
        stop = _early_stop(cfg, self.metrics["step"], self.metrics["acc"])
        if self.step in self.keep or stop:
            atomic_save_tensors(checkpoint_path(self.out, self.step), self.model.state_dict())
        if self.step % cfg.save_every == 0:
            self._save_state()
        return stop

    def _save_state(self) -> None:
        save_metrics(self.out / "metrics.safetensors", self.metrics)
        resume = {"rng": self.data.get_state(), "step": torch.tensor(self.step),
                  "elapsed": torch.tensor(self.elapsed + time.time() - self.t0)}
        atomic_save_tensors(self.out / "state.safetensors", {**self.model.state_dict(), **resume})

    def finish(self) -> Run:
        """Keep the last checkpoint and resume state, mark the run finished and return it loaded."""
        if not checkpoint_path(self.out, self.step).exists():
            atomic_save_tensors(checkpoint_path(self.out, self.step), self.model.state_dict())
        self._save_state()
        wall = round(self.elapsed + time.time() - self.t0, 2)
        self.prov.update(finished=True, final_step=self.step, wall_time_s=wall,
                         early_stopped=self.step < self.cfg.steps)
        atomic_write_text(self.prov_path, json.dumps(self.prov, indent=1))
        return load_run(self.out)


def _train(cfg: Config, out: Path, progress: bool | None, command: str | None, threads: int, compile: bool) -> Run:
    """train() once out is a run directory whose lock this process holds."""
    run = RunWriter(cfg, out, command, threads, compile)
    if run.finished:
        return load_run(out)
    progress = not os.environ.get("CI") if progress is None else progress
    model = run.model
    fast = runnable(model, compile)  # the evaluations' forward
    step = compiled_step(model) if compile else eager_step(model, fast)
    run.begin(fast)
    bar = progress_bar(cfg.steps, run.step, progress, desc="train", unit="step", mininterval=1.0)
    while run.running:
        loss, correct = step(run.batch())
        if not run.add(loss, correct):
            continue
        stop = run.log(fast)
        bar.update(run.step - bar.n)
        bar.set_postfix(acc=f"{run.metrics['acc'][-1]:.3f}", refresh=False)
        if stop:
            break
    bar.close()
    return run.finish()


def retrain_start(run: Run, steps: int, out: str | os.PathLike | None = None, progress: bool | None = None,
                  threads: int = 1, compile: bool = False) -> Run:
    """Train the first `steps` steps of a run again from its recorded config, into a fresh directory
    (a temporary one if out is None): its metrics must equal the run's, which is how chapters and tests
    show that a shipped run is what this code produces. steps: a multiple of eval_every. threads, compile: as
    train's (the bits depend on both: the shipped runs were trained with 1 thread, some of them compiled)."""
    every = run.config.eval_every
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 and steps % every == 0):
        raise ValueError(f"steps must be a positive multiple of eval_every = {every}, got {steps!r}")
    cfg = run.config.replace(steps=steps, n_checkpoints=2, save_every=steps, early_stop_acc=None)
    return train(cfg, out, progress=progress, threads=threads, compile=compile)
