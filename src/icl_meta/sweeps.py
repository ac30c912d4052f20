"""The sweeps of the data chapters (paper Fig. 7, 15, 18, 19, phase maps) and the architecture chapters
(Fig. 8, 9, 16, 17, 20-23), declared once (Methods §Choices: data and architecture sweeps).

`icl-meta sweeps --out runs` trains every run of `QUEUE` that is not finished yet, several processes at
once, into `runs/<sweep>/<setting>__seed-S`; it resumes interrupted runs, so the same command continues a
killed regeneration. Runs start in `QUEUE` order, which puts the first point of every figure first, so
a regeneration cut short still has something in every figure. The default setting (T=3, K=64, ε=0.1,
N=4, ...) is not repeated: the sweeps' chapters take it from the shipped default runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config

# The length of the first shipped sweep runs (artifacts/<sweep>/): the default setting reaches its Phase-2
# plateau by then, its Phase 3 (at 1.5-2.3e5 steps) only later. The chapters read a setting's full-length run
# in their place once it is shipped (runs.shipped_sweep), and draw attention maps from their checkpoints.
WINDOW = 60_000
# The cap of the full-length regeneration, fixed before its runs: a run stops once it has held 99% or at
# CAP steps, where one still climbing is reported as such (`icl-meta sweeps --steps 60000` remakes the
# shipped window-length runs; their first WINDOW steps are the same either way).
CAP = 400_000
# What every sweep run shares beyond its setting: stop once solved, only the final checkpoint.
RUN_DEFAULTS = {"steps": CAP, "early_stop_acc": 0.99, "n_checkpoints": 0}
# The architecture chapters draw attention maps along training, so their runs keep log-spaced checkpoints
# (the head-role timelines read the metrics, which every run logs at each evaluation).
ARCH_SWEEPS = ("heads", "depth", "standard", "all_labels")
SWEEP_RUN_DEFAULTS = {name: {"n_checkpoints": 12} for name in ARCH_SWEEPS}

FIGURES = {"tasks": "Fig 7a, 18", "classes": "Fig 7b", "noise": "Fig 7c", "class_zipf": "Fig 7d",
           "task_zipf": "Fig 7e", "burstiness": "Fig 15", "context": "Fig 19",
           "map_classes_noise": "phase map (K, ε)", "map_tasks_context": "phase map (T, N)",
           "heads": "Fig 8, 9, 16, 17", "depth": "Fig 22, 23", "standard": "Fig 20", "all_labels": "Fig 21"}
QUEUE = (
    # one point of every one-knob figure
    ("tasks", {"num_tasks": 1}), ("classes", {"num_classes": 32}), ("noise", {"eps": 1.0}),
    ("class_zipf", {"alpha": 1.0}), ("task_zipf", {"beta": 1.0}), ("burstiness", {"burstiness": 2, "p_bursty": 0.25}),
    ("context", {"num_seq": 2}),
    # their other ends
    ("tasks", {"num_tasks": 2}), ("classes", {"num_classes": 1024}), ("noise", {"eps": 0.5}),
    ("burstiness", {"p_bursty": 0.25}), ("context", {"num_seq": 8}), ("tasks", {"num_tasks": 6}),
    ("classes", {"num_classes": 256}), ("burstiness", {"p_bursty": 1.0}),
    # the phase maps' off-axis cells (on-axis ones are the runs above and the default runs)
    ("map_classes_noise", {"num_classes": 32, "eps": 1.0}), ("map_classes_noise", {"num_classes": 256, "eps": 1.0}),
    ("map_tasks_context", {"num_tasks": 2, "num_seq": 2}), ("map_tasks_context", {"num_tasks": 6, "num_seq": 2}),
    ("context", {"num_seq": 16}), ("tasks", {"num_tasks": 12}),
    ("map_classes_noise", {"num_classes": 32, "eps": 0.5}), ("map_classes_noise", {"num_classes": 256, "eps": 0.5}),
    ("map_tasks_context", {"num_tasks": 2, "num_seq": 8}), ("map_tasks_context", {"num_tasks": 6, "num_seq": 8}),
    # in between
    ("burstiness", {"p_bursty": 0.5}), ("tasks", {"num_tasks": 4}),
    # architecture: the paper's headline cases first (2 heads, 3 layers, standard block, all-label loss)
    ("heads", {"n_heads": 2}), ("depth", {"n_layers": 3}), ("standard", {"block": "standard"}),
    ("all_labels", {"readout": "all_labels"}), ("heads", {"n_heads": 4}), ("depth", {"n_layers": 5}),
    ("heads", {"n_heads": 16}), ("heads", {"n_heads": 8}), ("depth", {"n_layers": 4}),
)

# Settings whose verdicts the 60k-step window left open (dashboard of 2026-12-01): trained first, so that a
# regeneration cut short decides the most; the rest follow in QUEUE order. Seed 0 of every setting comes
# before seeds 1 and 2.
OPEN_FIRST = (
    ("tasks", {"num_tasks": 2}), ("classes", {"num_classes": 32}), ("noise", {"eps": 0.5}),
    ("burstiness", {"burstiness": 2, "p_bursty": 0.25}), ("context", {"num_seq": 2}), ("tasks", {"num_tasks": 4}),
    ("depth", {"n_layers": 3}), ("all_labels", {"readout": "all_labels"}), ("heads", {"n_heads": 4}),
    ("classes", {"num_classes": 1024}), ("tasks", {"num_tasks": 6}), ("heads", {"n_heads": 8}),
    ("heads", {"n_heads": 16}), ("tasks", {"num_tasks": 12}),
)
# Settings whose verdicts stayed open after their seed-0 run: the head counts, waiting on seeds 1 and 2 (still
# climbing at 60,000 steps). Their seeds 1 and 2 come right after the OPEN_FIRST seed-0 runs, before the seed-0
# runs of the settings the window already decided. T = 12 and K = 1024, listed here too until 2026-12-02, were
# then decided by their seed-0 runs read to the cap (not matched, and a check fails when any seed fails), so their
# seeds 1 and 2 wait with the rest.
OPEN_SEEDS = (("heads", {"n_heads": 4}), ("heads", {"n_heads": 8}), ("heads", {"n_heads": 16}))


@dataclass(frozen=True)
class Sweep:
    """One figure's runs: the settings (Config changes from the defaults) in queue order."""

    name: str
    figure: str
    settings: tuple[dict, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """The config fields the sweep varies, in first-seen order."""
        return tuple(dict.fromkeys(k for s in self.settings for k in s))


SWEEP_NAMES = tuple(FIGURES)
DATA_SWEEPS = tuple(n for n in SWEEP_NAMES if n not in ARCH_SWEEPS)


def setting_name(changes: dict) -> str:
    """{'num_classes': 32, 'eps': 0.5} -> 'num_classes-32__eps-0.5' (also the sweep command's run names)."""
    def fmt(v):
        return "+".join(v) if isinstance(v, tuple) else str(v)
    return "__".join(f"{k}-{fmt(v)}" for k, v in changes.items())


def sweep(name: str) -> Sweep:
    if name not in FIGURES:
        raise ValueError(f"sweep must be one of {SWEEP_NAMES}, got {name!r}")
    return Sweep(name, FIGURES[name], tuple(changes for n, changes in QUEUE if n == name))


def plan(out: str | Path, names: tuple[str, ...] = SWEEP_NAMES, seeds: tuple[int, ...] = (0,),
         steps: int | None = None, device: str = "cpu") -> list[tuple[Config, Path]]:
    """Every (config, run directory) of the named sweeps: the first seed's runs of the OPEN_FIRST settings, then
    the other seeds of the OPEN_SEEDS settings (setting by setting), then the first seed's other runs in QUEUE
    order, then the other seeds' remaining runs, seed by seed; each run capped at `steps` (default:
    RUN_DEFAULTS') and trained on `device`. All validated."""
    for name in names:
        sweep(name)
    first = [e for e in OPEN_FIRST if e in QUEUE]
    order = first + [e for e in QUEUE if e not in OPEN_FIRST]
    later = seeds[1:]
    jobs = ([(seeds[0], e) for e in first] + [(seed, e) for e in OPEN_SEEDS for seed in later]
            + [(seeds[0], e) for e in order[len(first):]]
            + [(seed, e) for seed in later for e in order if e not in OPEN_SEEDS])
    run = {"device": device, **({} if steps is None else {"steps": steps})}
    return [(Config(**{**RUN_DEFAULTS, **SWEEP_RUN_DEFAULTS.get(name, {}), **run, "seed": seed, **changes}).validate(),
             Path(out) / name / setting_name({**changes, "seed": seed}))
            for seed, (name, changes) in jobs if name in names]
