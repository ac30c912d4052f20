"""Run directories: what a training run writes and what `load_run()` gives back.

    RUN/config.json             the Config
    RUN/instance.safetensors    class means and label table
    RUN/metrics.safetensors     one column per metric, a row every eval_every steps (float64 while training,
                                float32 once compacted; read back as float64)
    RUN/checkpoints/step_0001000.safetensors   model weights at log-spaced steps
    RUN/state.safetensors       resume state: weights, data-stream RNG, step (dropped by `compact`)
    RUN/provenance.json         command, seeds, versions, git commit, wall time, finished flag

Every file is written to a temporary name and renamed into place, so a killed run never leaves a
half-written file (the temporary names a kill leaves behind are removed on resume and by `compact`).
Each safetensors file records the SHA-256 of its tensors in its header, checked whenever it is read, so a
damaged file is an error naming it rather than wrong numbers (files written before checksums have none).
While a process writes a run it holds RUN/.lock (see `locked`). Only JSON and safetensors are read back:
loading never unpickles anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file

from .config import Config
from .model import Model
from .probes import phase_report
from .task import Batch, Instance, eval_sets


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(tmp), metadata={DIGEST: tensor_digest({k: v.numpy() for k, v in tensors.items()})})
    os.replace(tmp, path)


def save_metrics(path: Path, metrics: dict[str, list[float]], dtype: type = np.float64) -> None:
    tmp = path.with_name(path.name + ".tmp")
    arrays = {k: np.asarray(v, dtype=dtype) for k, v in metrics.items()}
    save_np(arrays, str(tmp), metadata={DIGEST: tensor_digest(arrays)})
    os.replace(tmp, path)


# The header metadata key under which a safetensors file of a run holds `tensor_digest` of its tensors.
DIGEST = "sha256"


def tensor_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the arrays, in name order: what a file must
    give back when read, independent of how safetensors lays it out."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_tensors(path: Path, framework: str = "pt") -> dict:
    """The tensors of a safetensors file ("pt": torch, "np": numpy), checked against the SHA-256 recorded
    when it was written. A damaged file (truncated, garbled, checksum mismatch) raises ValueError naming it."""
    try:
        with safe_open(str(path), framework=framework) as f:
            recorded = (f.metadata() or {}).get(DIGEST)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{path} is damaged (not a readable safetensors file: {e})") from e
    arrays = tensors if framework == "np" else {k: v.numpy() for k, v in tensors.items()}
    if recorded is not None and tensor_digest(arrays) != recorded:
        raise ValueError(f"{path} is damaged: its contents do not match the SHA-256 recorded when it was written")
    return tensors


def read_json(path: Path):
    """The JSON value in path; a file that is not JSON raises ValueError naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged (not valid JSON: {e})") from e


def is_temporary(path: Path) -> bool:
    """The temporary files of a write a kill interrupted: ours (NAME.tmp) and safetensors' own (.tmpXXXXXX)."""
    return path.is_file() and (path.name.endswith(".tmp") or path.name.startswith(".tmp"))


def remove_temporaries(run: Path) -> None:
    """Delete what interrupted writes left in a run directory (call only while holding its lock)."""
    for p in [*run.iterdir(), *((run / "checkpoints").iterdir() if (run / "checkpoints").is_dir() else [])]:
        if is_temporary(p):
            p.unlink()


class RunLocked(ValueError):
    """Another live process holds the run directory's lock."""


@contextmanager
def locked(run: Path) -> Iterator[None]:
    """Hold the exclusive lock of a run directory while writing it: RUN/.lock, flock-ed, holding our pid.

    A second writer (another process, or another call in this one) gets RunLocked naming the directory and
    the owner's pid. The kernel drops the lock of a process that dies, so a stale lock file is simply taken
    over. The file is removed on release, while still held; a writer that locked a file removed meanwhile
    tries again on the new one.
    """
    lock = run / ".lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"{run} is being written by process {owner} (it holds {lock})") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


RUN_STATES = ("finished", "being trained", "stopped", "not started")


def run_state(run: Path) -> tuple[str, str]:
    """Where a run directory stands, read without taking its lock (a sweep worker may be writing it): one of
    RUN_STATES and the words that say it: 'finished at step N (held 99%)' or '(at its cap)', 'being trained by
    process P (step N saved)', 'stopped, step N saved (resumes)', 'not started'. The saved step is the last one
    in its metrics; the process is the one its lock file names, if it is alive."""
    if not (run / "config.json").is_file():
        return "not started", "not started"
    prov = read_json(run / "provenance.json") if (run / "provenance.json").is_file() else {}
    if prov.get("finished"):
        how = "held 99%" if prov.get("early_stopped") else "at its cap"
        return "finished", f"finished at step {prov['final_step']:,} ({how})"
    metrics = run / "metrics.safetensors"
    saved = f"step {int(read_tensors(metrics, 'np')['step'][-1]):,} saved" if metrics.is_file() else "nothing saved"
    owner = (run / ".lock").read_text().strip() if (run / ".lock").is_file() else ""
    if owner.isdigit() and _alive(int(owner)):
        return "being trained", f"being trained by process {owner} ({saved})"
    return "stopped", f"stopped, {saved} (resumes)"


def checkpoint_path(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}.safetensors"


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, with '+dirty' for uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    """The versions of the software a run trains with (a resumption records its own: it may be another machine)."""
    from . import __version__

    return {"icl_meta": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def recorded_command(command: str | None) -> str:
    """The command to record for a run: the one given, else this process's command line."""
    return command if command is not None else " ".join(sys.argv)


def provenance(cfg: Config, command: str | None, threads: int, compiled: bool = False) -> dict:
    """What a new run records about how it was made; threads: the torch thread count it trains with, compiled:
    whether through the compiled step (the rounding of its sums, hence its bits, depends on both)."""
    return {
        "command": recorded_command(command),
        "seeds": cfg.seeds(),
        "versions": versions(),
        "git_commit": git_commit(),
        "device": cfg.device,
        "torch_threads": threads,
        "compiled": compiled,
        "platform": platform.platform(),
        "finished": False,
        "final_step": 0,
        "wall_time_s": 0.0,
    }


@dataclass
class Run:
    """A loaded run: its config, metric columns, checkpoint steps and provenance."""

    path: Path
    config: Config
    metrics: dict[str, np.ndarray]
    provenance: dict
    checkpoint_steps: list[int] = field(default_factory=list)

    @property
    def steps(self) -> np.ndarray:
        if "step" not in self.metrics:
            raise ValueError(f"run {self.path} has no metrics yet (they are first saved at step save_every)")
        return self.metrics["step"].astype(np.int64)

    def instance(self) -> Instance:
        t = read_tensors(self.path / "instance.safetensors")
        return Instance(t["means"], t["table"])

    def eval_sets(self) -> dict[str, Batch]:
        """The run's fixed evaluation sets, regenerated from its eval seed (on the CPU)."""
        return eval_sets(self.instance(), self.config.replace(device="cpu"))

    def probe(self) -> Batch:
        """The sequences the logged circuit metrics were measured on."""
        return self.eval_sets()["in_dist"].slice(0, self.config.probe_size)

    def model(self, step: int | None = None) -> Model:
        """The model at a checkpointed step (default: the last one)."""
        if not self.checkpoint_steps:
            raise ValueError(f"run {self.path} has no checkpoints")
        step = self.checkpoint_steps[-1] if step is None else step
        if step not in self.checkpoint_steps:
            raise ValueError(f"step must be one of the checkpointed steps {self.checkpoint_steps}, got {step}")
        model = Model(self.config.replace(device="cpu"))
        model.load_state_dict(read_tensors(checkpoint_path(self.path, step)))
        return model.eval()

    def phases(self, dt: int = 100, threshold: float = 0.025) -> dict[str, dict]:
        """Transitions and plateaus of the in-distribution accuracy by the paper's and the robust rule.
        A run whose accuracy or loss is not finite (it diverged) has no phases: ValueError."""
        steps = self.steps
        bad = ~(np.isfinite(self.metrics["acc"]) & np.isfinite(self.metrics["loss"]))
        if bad.any():
            raise ValueError(f"run {self.path} diverged: its accuracy or loss is not finite from step {steps[bad][0]}")
        return phase_report(steps, self.metrics["acc"], dt, threshold)


def load_run(path: str | os.PathLike) -> Run:
    """The run in directory `path`, its config validated and its metrics checked (columns of one length, a
    step column, the recorded checksum); checkpoints and the instance are checked when loaded. A directory
    that is not a run, or a damaged file, raises ValueError naming it."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"run must be a run directory (one holding config.json), got {path}")
    try:
        cfg = Config.from_dict(read_json(path / "config.json")).validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'} is not a valid config: {e}") from e
    metrics_file = path / "metrics.safetensors"
    stored = read_tensors(metrics_file, "np") if metrics_file.exists() else {}
    metrics = {k: v.astype(np.float64, copy=False) for k, v in stored.items()}  # compacted runs store float32
    if metrics and ("step" not in metrics or len({v.shape for v in metrics.values()}) != 1):
        raise ValueError(f"{metrics_file} is damaged: it needs a step column and columns of one length")
    prov = read_json(path / "provenance.json") if (path / "provenance.json").exists() else {}
    ckpts = sorted(int(p.stem.split("_")[1]) for p in (path / "checkpoints").glob("step_*.safetensors"))
    return Run(path, cfg, metrics, prov, ckpts)


ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def shipped(name: str) -> list[Run]:
    """The runs shipped with the package under artifacts/<name>/, sorted by seed."""
    root = ARTIFACTS / name
    if not root.is_dir():
        known = sorted(p.name for p in ARTIFACTS.iterdir() if p.is_dir()) if ARTIFACTS.is_dir() else []
        raise ValueError(f"name must be one of the shipped experiments {known}, got {name!r}")
    runs = [load_run(p) for p in sorted(root.iterdir()) if (p / "config.json").exists()]
    return sorted(runs, key=lambda r: r.config.seed)


def shipped_sweep(name: str) -> list[Run]:
    """A sweep's shipped runs as the chapters read them: each (setting, seed) from the full-length
    regeneration (artifacts/full/<name>/, trained until it held 99% or to the cap) where that run is shipped,
    else the window-length one (artifacts/<name>/), sorted by seed. The two share their run directory's name."""
    runs = {r.path.name: r for r in shipped(name)}
    if (ARTIFACTS / "full" / name).is_dir():
        runs.update({r.path.name: r for r in shipped(f"full/{name}")})
    return sorted(runs.values(), key=lambda r: r.config.seed)


def compact(path: str | os.PathLike, checkpoints: str | int = "all") -> None:
    """Drop what only resuming needs (the resume state) from a finished run before shipping it.

    checkpoints: "all" keeps every checkpoint, "last" only the final one, "none" none (a metrics-only
    artifact), an int k >= 2 keeps k spread evenly over the (log-spaced) checkpoints, the first and the
    last included; dropped steps are recorded in provenance.json. Leftovers of killed writes are removed. The
    metrics are stored as float32, half the bytes (their values were computed in float32, so next to nothing is
    lost): the full-length sweeps ship over a hundred metrics-only runs.
    """
    if not (checkpoints in ("all", "last", "none") or (isinstance(checkpoints, int) and checkpoints >= 2)):
        raise ValueError(f"checkpoints must be one of 'all', 'last', 'none' or an int >= 2, got {checkpoints!r}")
    path = Path(path)
    load_run(path)  # a directory that is not a run is refused before it is locked
    with locked(path):
        run = load_run(path)
        if not run.provenance.get("finished"):
            raise ValueError(f"path must be a finished run, got {path} (resume it first)")
        remove_temporaries(path)
        (path / "state.safetensors").unlink(missing_ok=True)
        save_metrics(path / "metrics.safetensors", run.metrics, np.float32)
        steps = run.checkpoint_steps
        if isinstance(checkpoints, int):
            spread = np.linspace(0, len(steps) - 1, checkpoints).round().astype(int) if steps else []
            keep = {steps[i] for i in spread}
            drop = [s for s in steps if s not in keep]
        else:
            drop = {"all": [], "last": steps[:-1], "none": steps}[checkpoints]
        for step in drop:
            checkpoint_path(path, step).unlink()
        if drop:
            prov = run.provenance
            prov["dropped_checkpoints"] = prov.get("dropped_checkpoints", []) + drop
            atomic_write_text(path / "provenance.json", json.dumps(prov, indent=1))
