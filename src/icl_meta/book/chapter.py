"""Plumbing the chapters share, so that a chapter holds narrative, calls and plots: where a shipped run
came from, the Bayes ceilings of its instances, and a live retraining that checks the code still makes it.
"""

from __future__ import annotations

import numpy as np

from ..bayes import ceilings
from ..runs import Run
from ..trainer import retrain_start
from .report import md_cell


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
