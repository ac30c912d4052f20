"""Plumbing the chapters share, so that a chapter holds narrative, calls and plots: where a shipped run
came from, the Bayes ceilings of its instances, a live retraining that checks the code still makes it, and
chapter 5's short restricted run drawn against the ceilings.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from ..bayes import ceilings
from ..config import Config
from ..runs import Run
from ..trainer import retrain_start, train
from .plots import draw_ceilings
from .report import Check, md_cell


def _minutes(run: Run) -> str:
    """A run's wall time in minutes, to a tenth under ten minutes."""
    m = run.provenance["wall_time_s"] / 60
    return f"{m:.1f}" if m < 10 else f"{m:.0f}"


def provenance_line(run: Run, command: bool = False) -> str:
    """'60,000 steps, 42 min, commit 0123456789' for a shipped run (and '; command: ...', the command that
    made it)."""
    p = run.provenance
    text = f"{p['final_step']:,} steps, {_minutes(run)} min, commit {p['git_commit'][:10]}"
    return text + (f"; command: {p['command']}" if command else "")


def provenance_table(runs: list[Run]) -> str:
    """Markdown: how each shipped run was made (steps, minutes, device, early stop, commit, torch), then the
    first run's command."""
    rows = ["| seed | steps | minutes | device | early stop | commit | torch |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        p = r.provenance
        rows.append(f"| {r.config.seed} | {p['final_step']:,} | {_minutes(r)} | {md_cell(p['device'])} | "
                    f"{p['early_stopped']} | `{p['git_commit'][:10]}` | {p['versions']['torch']} |")
    return "\n".join(rows) + f"\n\nCommand (seed {runs[0].config.seed}): `{runs[0].provenance['command']}`"


def mean_ceilings(runs: list[Run], n_mc: int) -> tuple[list[dict[str, float]], dict[str, float]]:
    """The Bayes ceilings (bayes.ceilings, n_mc Monte-Carlo samples) of each run's own problem instance,
    and their mean over the runs: the reference lines of a figure that shows several seeds."""
    per_seed = [ceilings(r.config, r.instance(), n=n_mc) for r in runs]
    return per_seed, {k: float(np.mean([c[k] for c in per_seed])) for k in per_seed[0]}


def retrain_gap(run: Run, steps: int, progress: bool = False) -> tuple[Run, float]:
    """Retrain the first `steps` steps of a shipped run now, from its recorded config and seeds: the live
    run and the largest difference between its accuracy and the shipped curve over those steps (zero up
    to floating-point noise while the code still makes the same run)."""
    live = retrain_start(run, steps, progress=progress)
    return live, float(np.abs(live.metrics["acc"] - run.metrics["acc"][run.steps <= steps]).max())


def retrain_check(run: Run, gap: float, tolerance: float = 0.002) -> Check:
    """The check row of a live retraining (`retrain_gap`): the code still makes the shipped run when the
    accuracies differ by less than `tolerance` (floating-point noise, not a different run)."""
    return Check("live retrain matches the shipped curve", "–", f"max |Δacc| {gap:.4f}", f"seed {run.config.seed}",
                 gap < tolerance, beyond=True)


def restricted_curve(layer1: str, layer2: str, steps: int, ceil: dict[str, float], progress: bool = False,
                     ax: plt.Axes | None = None) -> Run:
    """Train a model whose attention is masked from initialisation, `layer1`'s mask in layer 1 and `layer2`'s in
    layer 2 (names from config.MASK_NAMES; the default Config otherwise), for `steps` steps, and draw its accuracy
    against the Bayes ceilings `ceil` on ax (default: a new figure): chapter 5's "train your own restriction",
    which a static page shows for the default masks and a reader with a kernel reruns with others. Returns the
    run. A bad mask name raises ValueError (Config.validate, naming `masks` and the allowed names) before any
    training. Accuracy is evaluated every 100 steps as in the shipped runs (every `steps` if fewer)."""
    cfg = Config(masks=(layer1, layer2), steps=steps, n_checkpoints=0).validate()
    every = min(cfg.eval_every, steps)
    cfg = cfg.replace(eval_every=every, save_every=every * math.ceil(steps / every)).validate()
    run = train(cfg, progress=progress)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    s = run.steps
    ax.plot(s[s > 0], run.metrics["acc"][s > 0], label=f"masks ({layer1}, {layer2})")
    draw_ceilings(ax, ceil)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (in-distribution)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left")
    ax.set_title(f"Restricted training, masks ({layer1}, {layer2}): {steps:,} steps", fontsize=10)
    return run
