"""The ensemble trainer: one process trains E runs of the same model shape as one batched model.

Each member is a run of its own: its config (seeds and data settings may differ: T, K, ε, α, β, p_B, B, the
query rule, the classifier's initialisation, steps, early stop, evaluation sizes), its instance, data stream,
evaluation sets and run directory, written by the same `trainer.RunWriter` as `train` writes. A step samples
each member's batch from its own stream, then `torch.func.vmap` computes every member's gradient in one call
over the stacked parameters and batches, and one SGD update moves them all. It is the same function, so a
member's directory holds, to float rounding, what `train` writes for its config (tests/test_ensemble.py).

Where it pays: on a GPU, where one of these small models leaves the device mostly idle. On one CPU core it does
not (`icl-meta bench` prints runs × steps/s for E = 1, 4, 16): there, runs train side by side in processes.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.func import functional_call, grad_and_value, vmap

from .config import Config
from .model import Model, readout_loss
from .progress import progress_bar
from .runs import Run, locked
from .task import BATCH_FIELDS, Batch
from .trainer import DivergedError, RunWriter, check_arguments, open_run, retain_freed_memory

# Config fields every member must share: they fix the parameters' shapes, the forward and the update.
SHARED = ("num_labels", "num_seq", "content_dim", "pos_dim", "n_layers", "n_heads", "w_o", "masks", "block",
          "readout", "mlp_hidden", "lr", "batch_size", "device")


def ensemble_key(cfg: Config) -> tuple:
    """The SHARED fields of cfg: runs with equal keys can train as one ensemble."""
    return tuple(getattr(cfg, f) for f in SHARED)


def check_members(cfgs: list[Config], outs: list[Path]) -> None:
    """Refuse, before any work, an empty ensemble, mismatched lists, a shared run directory or members that
    differ in a SHARED field (naming the field and its values)."""
    if not cfgs:
        raise ValueError("cfgs must hold at least one config, got none")
    if len(outs) != len(cfgs):
        raise ValueError(f"outs must hold one run directory per config ({len(cfgs)}), got {len(outs)}")
    resolved = [p.resolve() for p in outs]
    if len(set(resolved)) < len(resolved):
        twice = max(resolved, key=resolved.count)
        raise ValueError(f"outs must be distinct run directories, got {twice} twice")
    for field in SHARED:
        values = list(dict.fromkeys(getattr(c, field) for c in cfgs))
        if len(values) > 1:
            raise ValueError(f"{field} must be the same for every member of an ensemble, got {values}")


def stack_parameters(models: list[Model]) -> dict[str, torch.Tensor]:
    """{name: the members' parameter stacked along a new first dimension} (copies, no autograd)."""
    return {name: torch.stack([m.get_parameter(name).detach() for m in models])
            for name, _ in models[0].named_parameters()}


@torch.no_grad()
def copy_member(params: dict[str, torch.Tensor], i: int, model: Model) -> None:
    """Write member i's slice of the stacked params into model, in place."""
    for name, p in model.named_parameters():
        p.copy_(params[name][i])


def gradient_step(base: Model):
    """A function of (stacked params, stacked batch fields) returning every member's gradients, loss [E] and
    bool [E, B] of correct predictions: base's forward (its buffers shared, its own parameters unused) under
    vmap of torch.func.grad_and_value."""
    base.vmapped = True
    buffers = dict(base.named_buffers())

    def member(params: dict[str, torch.Tensor], fields: tuple[torch.Tensor, ...]):
        batch = Batch(*fields)
        return readout_loss(base.cfg.readout, functional_call(base, (params, buffers), (batch,)), batch)

    return vmap(grad_and_value(member, has_aux=True))


def stacked_batch(batches: list[Batch]) -> tuple[torch.Tensor, ...]:
    """The members' batches as one tuple of [E, ...] tensors, in Batch's field order."""
    return tuple(torch.stack([getattr(b, name) for b in batches]) for name in BATCH_FIELDS)


def sgd_step(grad, params: dict[str, torch.Tensor], batches: list[Batch],
             lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step of the ensemble: every member's gradient on its batch (grad: from gradient_step), then
    plain SGD on the stacked params in place. Returns the loss [E] and the bool [E, B] of correct predictions."""
    grads, (loss, correct) = grad(params, stacked_batch(batches))
    with torch.no_grad():
        torch._foreach_add_(list(params.values()), [grads[name] for name in params], alpha=-lr)
    return loss, correct


def train_ensemble(cfgs: list[Config], outs: list[str | os.PathLike], progress: bool | None = None,
                   command: str | None = None, threads: int = 1) -> list[Run]:
    """Train every cfgs[i] into outs[i] as one ensemble and return the loaded runs, in order.

    As `train` for each member: a finished run returns at once, an interrupted one resumes from its last state
    (members may resume from different steps), each run directory is locked while written. A member that stops
    (its steps done, or early stop) leaves the ensemble and the others go on. A member that diverges is left
    resumable, as `train` leaves it; the others go on, and DivergedError names it at the end. Provenance
    records the ensemble size each run was (re)started in (`ensemble`). Members are trained eagerly."""
    outs = [Path(o) for o in outs]
    check_members(cfgs, outs)
    for cfg in cfgs:
        check_arguments(cfg, threads)
    todo = [(cfg, out) for cfg, out in zip(cfgs, outs) if open_run(cfg, out) is None]
    if todo:
        retain_freed_memory()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with ExitStack() as stack:
                for _, out in todo:
                    stack.enter_context(locked(out))
                _train_members([RunWriter(cfg, out, command, threads, False) for cfg, out in todo], progress)
        finally:
            torch.set_num_threads(previous)
    return [open_run(cfg, out) for cfg, out in zip(cfgs, outs)]


def _train_members(writers: list[RunWriter], progress: bool | None) -> None:
    """train_ensemble once every run directory is locked by this process."""
    active = [w for w in writers if not w.finished]
    if not active:
        return
    progress = not os.environ.get("CI") if progress is None else progress
    lr = active[0].cfg.lr
    grad = gradient_step(Model(active[0].cfg).to(active[0].cfg.device))
    for w in active:
        w.record("ensemble", len(active))
        w.begin(w.model)
        if not w.running:  # killed after its last step, before it was marked finished
            w.finish()
    active = [w for w in active if w.running]
    if not active:
        return
    bar = progress_bar(sum(w.cfg.steps - w.step for w in active), 0, progress, desc=f"train {len(active)} runs",
                       unit="step", mininterval=1.0)
    diverged: dict[RunWriter, str] = {}
    while active:
        params = stack_parameters([w.model for w in active])
        ended: list[RunWriter] = []
        while not ended:
            loss, correct = sgd_step(grad, params, [w.batch() for w in active], lr)
            bar.update(len(active))
            for i, w in enumerate(active):
                if not w.add(loss[i], correct[i]):
                    continue
                copy_member(params, i, w.model)
                try:
                    if w.log(w.model) or not w.running:
                        ended.append(w)
                except DivergedError as e:
                    diverged[w] = str(e)
                    ended.append(w)
        for i, w in enumerate(active):
            copy_member(params, i, w.model)
        for w in ended:
            if w not in diverged:
                w.finish()
        active = [w for w in active if w not in ended]
    bar.close()
    if diverged:
        raise DivergedError("; ".join(diverged.values()))
