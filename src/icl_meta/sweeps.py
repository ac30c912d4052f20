"""The data-property sweeps (SPEC Fig 7, 15, 18, 19 and the phase maps of the data chapters), declared once.

`icl-meta sweeps --out runs` trains every run of `SWEEPS` that is not finished yet, several processes at
once, into `runs/<sweep>/<setting>__seed-S`; it resumes interrupted runs, so the same command continues a
killed regeneration. Runs are queued round-robin over the sweeps, each sweep's settings in the order given
here, so a cut-short regeneration still has the first points of every figure. The default setting
(T=3, K=64, ε=0.1, N=4, ...) is not repeated: the sweeps' chapters take it from the shipped default runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from .config import Config

# Steps per run (all sweeps alike, so that runs compare over one window): the default setting reaches
# its Phase-2 plateau by then, its Phase 3 (at 1.5-2.3e5 steps) only in the shipped default runs.
WINDOW = 60_000


@dataclass(frozen=True)
class Sweep:
    """One figure's runs: the settings (Config changes from the defaults), in queue order, and their length."""

    name: str
    figure: str
    settings: tuple[dict, ...]
    steps: int = WINDOW


SWEEPS = (
    Sweep("tasks", "Fig 7a, 18", tuple({"num_tasks": t} for t in (1, 2, 6, 12, 4))),
    Sweep("classes", "Fig 7b", tuple({"num_classes": k} for k in (32, 1024, 256))),
    Sweep("noise", "Fig 7c", tuple({"eps": e} for e in (1.0, 0.5))),
    Sweep("class_zipf", "Fig 7d", ({"alpha": 1.0},)),
    Sweep("task_zipf", "Fig 7e", ({"beta": 1.0},)),
    Sweep("burstiness", "Fig 15", ({"burstiness": 2, "p_bursty": 0.25}, {"p_bursty": 0.25}, {"p_bursty": 1.0},
                                   {"p_bursty": 0.5})),
    Sweep("context", "Fig 19", tuple({"num_seq": n} for n in (2, 8, 16))),
    Sweep("map_classes_noise", "phase map (K, ε)",
          tuple({"num_classes": k, "eps": e} for e in (1.0, 0.5) for k in (32, 256))),
    Sweep("map_tasks_context", "phase map (T, N)",
          tuple({"num_tasks": t, "num_seq": n} for n in (2, 8) for t in (2, 6))),
)
SWEEP_NAMES = tuple(s.name for s in SWEEPS)
# What every sweep run shares beyond its setting: stop once solved, keep only the final checkpoint.
RUN_DEFAULTS = {"early_stop_acc": 0.99, "n_checkpoints": 0}


def setting_name(changes: dict) -> str:
    """{'num_classes': 32, 'eps': 0.5} -> 'num_classes-32__eps-0.5' (also the sweep command's run names)."""
    def fmt(v):
        return "+".join(v) if isinstance(v, tuple) else str(v)
    return "__".join(f"{k}-{fmt(v)}" for k, v in changes.items())


def sweep(name: str) -> Sweep:
    for s in SWEEPS:
        if s.name == name:
            return s
    raise ValueError(f"sweep must be one of {SWEEP_NAMES}, got {name!r}")


def plan(out: str | Path, names: tuple[str, ...] = SWEEP_NAMES, seeds: tuple[int, ...] = (0,)) -> list[tuple[Config, Path]]:
    """Every (config, run directory) of the named sweeps, round-robin over the sweeps; all validated."""
    queues = []
    for s in map(sweep, names):
        queues.append([(Config(**RUN_DEFAULTS, steps=s.steps, seed=seed, **changes).validate(),
                        Path(out) / s.name / f"{setting_name({**changes, 'seed': seed})}")
                       for changes in s.settings for seed in seeds])
    return [job for jobs in itertools.zip_longest(*queues) for job in jobs if job is not None]
