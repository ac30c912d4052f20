"""Training (SPEC §4): plain SGD on fresh batches, fixed seeded evaluation sets, log-spaced
checkpoints, exact resume and optional early stop. `train(cfg, out)` writes a run directory."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from .config import Config
from .model import Model, loss_and_correct
from .probes import attention_maps, metric_columns
from .runs import (Run, atomic_save_tensors, atomic_write_text, checkpoint_path, git_commit, load_run, provenance,
                   recorded_command, save_metrics)
from .task import Batch, eval_sets, generator, make_instance, sample

EVAL_CHUNK = 256


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


@torch.no_grad()
def evaluate(model: Model, sets: dict[str, Batch]) -> dict[str, float]:
    """Accuracy on every set, in-distribution loss and per-task accuracy, and the circuit metrics."""
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
    row.update(metric_columns(attention_maps(model, ind.slice(0, cfg.probe_size))))
    return row


# Fields a run may change when resumed: they decide how long it runs, not what it computes.
RESUMABLE_CHANGES = {"steps", "early_stop_acc", "early_stop_factor", "save_every"}


def _prepare(out: Path, cfg: Config) -> tuple[dict | None, bool]:
    """Check out against cfg. Returns the saved resume state (None for a new run) and whether the run
    directory already holds exactly this config, finished or not."""
    if (out / "config.json").exists():
        saved = Config.from_dict(json.loads((out / "config.json").read_text()))
        diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items() if getattr(cfg, k) != v}
        state = out / "state.safetensors"
        if set(diff) - RESUMABLE_CHANGES:
            raise ValueError(f"{out} holds a run with another config (saved, asked): {diff}")
        if diff and not state.exists():
            raise ValueError(f"{out} has no resume state (compacted?), so its {sorted(diff)} cannot change")
        return (load_file(str(state)) if state.exists() else None), not diff
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out must be an empty or missing directory or a run of the same config, got {out}")
    return None, False


def _early_stop(cfg: Config, steps: list[float], acc: list[float]) -> bool:
    """True once accuracy has held early_stop_acc from some step t up to step early_stop_factor * t."""
    if cfg.early_stop_acc is None or acc[-1] < cfg.early_stop_acc:
        return False
    below = [s for s, a in zip(steps, acc) if a < cfg.early_stop_acc]
    held_since = next(s for s in steps if not below or s > below[-1])
    return steps[-1] >= max(cfg.early_stop_factor * held_since, held_since + cfg.eval_every)


def train(cfg: Config, out: str | os.PathLike | None = None, progress: bool | None = None,
          command: str | None = None) -> Run:
    """Train cfg into the run directory `out` (a fresh temporary one if None) and return the loaded run.

    An existing run of the same config resumes from its last state (a finished one returns at once);
    one that differs only in RESUMABLE_CHANGES (e.g. more steps) continues from its last state too.
    progress: a tqdm bar; default on unless the CI environment variable is set.
    """
    cfg.validate()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device must be 'cpu' on a machine without CUDA, got {cfg.device!r}")
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="icl-meta-"))
    state, same = _prepare(out, cfg)
    prov_path = out / "provenance.json"
    if same and prov_path.exists() and json.loads(prov_path.read_text())["finished"]:
        return load_run(out)
    progress = not os.environ.get("CI") if progress is None else progress

    inst = make_instance(cfg)
    model = Model(cfg).to(cfg.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    data = generator(cfg.seeds()["data"], cfg.device)
    sets = eval_sets(inst, cfg)
    keep = set(checkpoint_steps(cfg))
    metrics: dict[str, list[float]] = defaultdict(list)

    if state is None:
        prov = provenance(cfg, command)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", cfg.to_json())
        atomic_save_tensors(out / "instance.safetensors", {"means": inst.means, "table": inst.table})
        atomic_write_text(prov_path, json.dumps(prov, indent=1))
        step, elapsed = 0, 0.0
        row = {"step": 0, "train_loss": float("nan"), "train_acc": float("nan"), **evaluate(model, sets), "time": 0.0}
        for k, v in row.items():
            metrics[k].append(v)
        if 0 in keep:
            atomic_save_tensors(checkpoint_path(out, 0), model.state_dict())
    else:
        step, elapsed = int(state.pop("step")), float(state.pop("elapsed"))
        if step > cfg.steps:
            raise ValueError(f"steps must be >= {step}, the step {out} was saved at, to resume it; got {cfg.steps}")
        data.set_state(state.pop("rng").to(data.get_state().device))
        model.load_state_dict(state)
        old = load_run(out).metrics
        rows = old["step"] <= step
        for k, v in old.items():
            metrics[k] = v[rows].tolist()
        prov = json.loads(prov_path.read_text())
        prov["resumed_at"] = prov.get("resumed_at", []) + [step]
        prov.setdefault("resume_commands", []).append(recorded_command(command))
        prov.setdefault("resume_commits", []).append(git_commit())
        prov["finished"] = False  # until this resumption ends: a killed extension must resume again
        atomic_write_text(prov_path, json.dumps(prov, indent=1))
        atomic_write_text(out / "config.json", cfg.to_json())

    def save_state() -> None:
        save_metrics(out / "metrics.safetensors", metrics)
        atomic_save_tensors(out / "state.safetensors", {**model.state_dict(), "rng": data.get_state(),
                                                        "step": torch.tensor(step), "elapsed": torch.tensor(elapsed + time.time() - t0)})

    t0 = time.time()
    window_loss = torch.zeros((), device=cfg.device)
    window_correct = torch.zeros((), device=cfg.device)
    window_n = 0
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train", unit="step", mininterval=1.0)
    while step < cfg.steps:
        batch = sample(inst, cfg, cfg.batch_size, data)
        loss, correct = loss_and_correct(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        window_loss += loss.detach()
        window_correct += correct.sum()
        window_n += 1
        if step % cfg.eval_every and step != cfg.steps:
            continue
        row = {"step": step, "train_loss": window_loss.item() / window_n,
               "train_acc": window_correct.item() / (window_n * cfg.batch_size), **evaluate(model, sets),
               "time": elapsed + time.time() - t0}
        for k, v in row.items():
            metrics[k].append(v)
        window_loss.zero_()
        window_correct.zero_()
        window_n = 0
        bar.update(step - bar.n)
        bar.set_postfix(acc=f"{row['acc']:.3f}", refresh=False)
        stop = _early_stop(cfg, metrics["step"], metrics["acc"])
        if step in keep or stop:
            atomic_save_tensors(checkpoint_path(out, step), model.state_dict())
        if step % cfg.save_every == 0:
            save_state()
        if stop:
            break
    bar.close()
    if not checkpoint_path(out, step).exists():
        atomic_save_tensors(checkpoint_path(out, step), model.state_dict())
    save_state()
    prov.update(finished=True, final_step=step, wall_time_s=round(elapsed + time.time() - t0, 2),
                early_stopped=step < cfg.steps)
    atomic_write_text(prov_path, json.dumps(prov, indent=1))
    return load_run(out)


def retrain_start(run: Run, steps: int, out: str | os.PathLike | None = None, progress: bool | None = None) -> Run:
    """Train the first `steps` steps of a run again from its recorded config, into a fresh directory
    (a temporary one if out is None): its metrics must equal the run's, which is how chapters and tests
    show that a shipped run is what this code produces. steps: a multiple of eval_every."""
    cfg = run.config.replace(steps=steps, n_checkpoints=2, save_every=steps, early_stop_acc=None)
    return train(cfg, out, progress=progress)
