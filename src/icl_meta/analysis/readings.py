"""Readings of one run's logged curves, shared by every chapter: where a column ended, when it reached a
level, where two curves part, the circuit metrics at a step, the step that stands for a plateau, and the pattern
a layer turned to.

Every function takes a `Run` (or its steps) and returns plain numbers, so the checks of the book
(`icl_meta.book`) and the analyses of this package read a run the same way.
"""

from __future__ import annotations

import numpy as np

from ..probes import METRICS, Phase, Plateau, metric_column, plateaus
from ..runs import Run


def final_level(run: Run, column: str = "acc", frac: float = 0.1) -> float:
    """Median of a logged column over the last `frac` of a run's evaluations (at least one): where it
    ended up. The chapters read a run's final accuracy over its last 10%; a sweep summary over the last
    5% (`icl_meta.analysis.phasemap.summarise`)."""
    v = run.metrics[column]
    return float(np.median(v[-max(int(len(v) * frac), 1):]))


def end_slope(run: Run, column: str = "acc", frac: float = 0.25) -> float:
    """Least-squares slope of a logged column over the last `frac` of a run's steps, per 10^5 steps: how fast
    it was still moving where the run ended (a run cut while it climbs is reported with it, never silently)."""
    steps, v = run.steps, run.metrics[column]
    last = steps >= steps[-1] * (1 - frac)
    if last.sum() < 2:
        return 0.0
    return float(np.polyfit(steps[last], v[last], 1)[0] * 1e5)


def steps_to(run: Run, level: float, column: str = "acc") -> int | None:
    """The first evaluated step at which a column reached `level` (None if it never did)."""
    hit = np.flatnonzero(run.metrics[column] >= level)
    return int(run.steps[hit[0]]) if hit.size else None


def parting_step(run: Run, column: str = "acc", other: str = "acc_random_label", gap: float = 0.05) -> int | None:
    """The first evaluated step from which `column` stays more than `gap` above `other` to the run's end (None if
    it never does): where two curves that rose together part. For the accuracy and the random-label accuracy
    (labels shuffled among the context items, chapter 6), the step at which the model starts to read which item
    carries which label; before it, what the model drew from the context it drew from the label multiset alone.
    gap: the robust rule's smallest transition (7 standard errors of a 2048-sequence accuracy)."""
    below = np.flatnonzero(run.metrics[column] - run.metrics[other] <= gap)
    i = below[-1] + 1 if below.size else 0
    return int(run.steps[i]) if i < len(run.steps) else None


def multiset_reach(run: Run) -> tuple[int, float] | None:
    """(the step where the accuracy parts from the random-label accuracy, the random-label accuracy's highest value
    up to it), or None if they never part: how far the label-multiset strategy had got when the model began to
    read the pairs. Against the SCC ceiling it says whether Phase 2 was complete when Phase 3 began."""
    step = parting_step(run)
    if step is None:
        return None
    return step, float(run.metrics["acc_random_label"][run.steps <= step].max())


def metrics_at(run: Run, step: int, layer: int, head: int = 1) -> dict[str, float]:
    """The logged circuit metrics of one layer and head (1-based) at an evaluated step."""
    i = int(np.searchsorted(run.steps, step))
    return {m: float(run.metrics[metric_column(layer, head, m)][i]) for m in METRICS}


def run_plateaus(run: Run) -> list[Plateau]:
    """The run's plateaus by the plateau rule (`icl_meta.probes.plateaus`), the untrained one included."""
    return plateaus(run.steps, run.metrics["acc"])


def plateau_gaps(found: list[Plateau]) -> list[tuple[int, int]]:
    """The stretches between consecutive plateaus (`run_plateaus`), where the run climbed: the plateau
    rule's counterpart of the transition rules' transitions, for shading."""
    return [(a.end, b.start) for a, b in zip(found, found[1:]) if b.start > a.end]


def learned_phases(run: Run, rule: str = "plateau") -> list[Phase]:
    """The run's learned phases, Phase 0 (the untrained stretch) left out. rule "plateau" (every
    phase-named reading of the book, Methods §Phase rules): the plateau rule's plateaus, and the end
    level of a run that ended climbing; "robust" or "paper": the stretches after each transition."""
    if rule == "plateau":
        return [p for p in run_plateaus(run) if p.index >= 1]
    return [p for p in run.phases()[rule]["phases"] if p.index >= 1]


def plateau_middle(steps: np.ndarray, phase: Phase) -> int | None:
    """The step among `steps` (all > 0) inside the plateau nearest its middle in log step, if any."""
    inside = steps[(steps >= phase.start) & (steps <= phase.end)]
    if not inside.size:
        return None
    return int(inside[np.argmin(np.abs(np.log(inside) - np.log(np.sqrt(max(phase.start, 1) * phase.end))))])


def phase_steps(run: Run, phases: list[Phase], checkpoints: bool = True) -> dict[int, int]:
    """For each phase, keyed by its index, the step nearest (in log step) to the middle of its plateau,
    among the checkpoints (to draw maps) or among the evaluated steps (to read logged metrics), up to the
    run's last evaluated step; for the end level of a run that ended climbing, its last such step. Phases
    with the same index (a name given twice): the later one wins.

    phases: the run's learned phases in order (`learned_phases`), or its plateaus named after the
    phase they reach (`icl_meta.analysis.phasemap.Summary.plateaus`).
    """
    steps = run.checkpoint_steps if checkpoints else run.steps.tolist()
    steps = np.array([t for t in steps if 0 < t <= run.steps[-1]])
    out = {}
    for ph in phases:
        if getattr(ph, "climbing", False):  # a run that ended climbing: where it stopped, not a middle
            inside = steps[(steps >= ph.start) & (steps <= ph.end)]
            step = int(inside[-1]) if inside.size else None
        else:
            step = plateau_middle(steps, ph)
        if step is not None:
            out[ph.index] = step
    return out


def layer_pattern(before: dict[str, float], after: dict[str, float], min_change: float = 0.1) -> str:
    """The attention pattern a layer uses after a transition: the metric that rose most, if it rose by
    at least `min_change`; otherwise the layer kept its pattern, read as its largest metric."""
    rise = {m: after[m] - before[m] for m in METRICS}
    top = max(rise, key=rise.get)
    return top if rise[top] >= min_change else max(after, key=after.get)


def layer_patterns(run: Run, steps: dict[int, int]) -> list[tuple[int, int, dict, tuple[str, ...]]]:
    """At each phase's step (`phase_steps`), in step order: (phase, step, metrics of each layer, the pattern
    each layer changed to since the previous step, the first against initialisation). Head 1 of a
    2-layer run, as paper Table 1 reads it."""
    out, before = [], {layer: metrics_at(run, 0, layer) for layer in (1, 2)}
    for k, step in sorted(steps.items(), key=lambda kv: kv[1]):
        now = {layer: metrics_at(run, step, layer) for layer in (1, 2)}
        out.append((k, step, now, tuple(layer_pattern(before[layer], now[layer]) for layer in (1, 2))))
        before = now
    return out
