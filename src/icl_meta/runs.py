"""Run directories: what a training run writes and what `load_run()` gives back.

    RUN/config.json             the Config
    RUN/instance.safetensors    class means and label table
    RUN/metrics.safetensors     one float64 column per metric, a row every eval_every steps
    RUN/checkpoints/step_0001000.safetensors   model weights at log-spaced steps
    RUN/state.safetensors       resume state: weights, data-stream RNG, step (dropped by `compact`)
    RUN/provenance.json         command, seeds, versions, git commit, wall time, finished flag

Every file is written to a temporary name and renamed into place, so a killed run never leaves a
half-written file. Only JSON and safetensors are read back: loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_np, save_file as save_np
from safetensors.torch import load_file, save_file

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
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def save_metrics(path: Path, metrics: dict[str, list[float]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_np({k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()}, str(tmp))
    os.replace(tmp, path)


def checkpoint_path(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}.safetensors"


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, with '+dirty' for uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def recorded_command(command: str | None) -> str:
    """The command to record for a run: the one given, else this process's command line."""
    return command if command is not None else " ".join(sys.argv)


def provenance(cfg: Config, command: str | None) -> dict:
    from . import __version__

    return {
        "command": recorded_command(command),
        "seeds": cfg.seeds(),
        "versions": {"icl_meta": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
        "git_commit": git_commit(),
        "device": cfg.device,
        "torch_threads": torch.get_num_threads(),
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
        return self.metrics["step"].astype(np.int64)

    def instance(self) -> Instance:
        t = load_file(str(self.path / "instance.safetensors"))
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
        model.load_state_dict(load_file(str(checkpoint_path(self.path, step))))
        return model.eval()

    def phases(self, dt: int = 100, threshold: float = 0.025) -> dict[str, dict]:
        """Transitions and plateaus of the in-distribution accuracy by the paper's and the robust rule."""
        return phase_report(self.steps, self.metrics["acc"], dt, threshold)


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a run directory (no config.json)")
    cfg = Config.from_dict(json.loads((path / "config.json").read_text()))
    metrics = load_np(str(path / "metrics.safetensors")) if (path / "metrics.safetensors").exists() else {}
    prov = json.loads((path / "provenance.json").read_text()) if (path / "provenance.json").exists() else {}
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


def compact(path: str | os.PathLike, checkpoints: str | int = "all") -> None:
    """Drop what only resuming needs (the resume state) from a finished run before shipping it.

    checkpoints: "all" keeps every checkpoint, "last" only the final one, "none" none (a metrics-only
    artifact), an int k >= 2 keeps k spread evenly over the (log-spaced) checkpoints, the first and the
    last included; dropped steps are recorded in provenance.json.
    """
    if not (checkpoints in ("all", "last", "none") or (isinstance(checkpoints, int) and checkpoints >= 2)):
        raise ValueError(f"checkpoints must be one of 'all', 'last', 'none' or an int >= 2, got {checkpoints!r}")
    path = Path(path)
    prov = json.loads((path / "provenance.json").read_text())
    if not prov.get("finished"):
        raise ValueError(f"path must be a finished run, got {path} (resume it first)")
    (path / "state.safetensors").unlink(missing_ok=True)
    steps = load_run(path).checkpoint_steps
    if isinstance(checkpoints, int):
        keep = {steps[i] for i in np.linspace(0, len(steps) - 1, checkpoints).round().astype(int)} if steps else set()
        drop = [s for s in steps if s not in keep]
    else:
        drop = {"all": [], "last": steps[:-1], "none": steps}[checkpoints]
    for step in drop:
        checkpoint_path(path, step).unlink()
    if drop:
        prov["dropped_checkpoints"] = prov.get("dropped_checkpoints", []) + drop
        atomic_write_text(path / "provenance.json", json.dumps(prov, indent=1))
