"""The paper's headline numbers and the measured ones, side by side, for the chapters and the intro.

Everything here is computed from run artifacts; the paper's values are the only typed-in numbers.
"""

from __future__ import annotations

import numpy as np

from .probes import METRICS, Phase
from .report import Check

# Plateau accuracy of each phase in the paper's default setting (Fig. 2 left, Table 1).
PAPER_LEVELS = {1: (0.30, 0.40), 2: (0.70, 0.80), 3: (0.99, 1.0)}
# Paper Table 1: the attention pattern that defines each circuit, per layer.
PAPER_CIRCUITS = {1: ("NCC", "bigram", "bigram"), 2: ("SCC", "label_attention", "bigram"),
                  3: ("FCC", "chunk_example", "label_attention")}


def learned_phases(run, rule: str = "robust") -> list[Phase]:
    """The phases after the first transition (Phase 0, the untrained stretch, left out)."""
    return [p for p in run.phases()[rule]["phases"] if p.index >= 1]


def phase_rows(runs, rule: str = "robust") -> list[dict]:
    """One row per run: seed, transitions, and the level of each learned phase."""
    rows = []
    for run in runs:
        rep = run.phases()[rule]
        rows.append({"seed": run.config.seed, "transitions": rep["transitions"],
                     "levels": {p.index: p.level for p in rep["phases"] if p.index >= 1},
                     "final_step": int(run.steps[-1])})
    return rows


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"


def phase_checks(runs, rule: str = "robust") -> list[Check]:
    """Three phases per seed, and each plateau inside the paper's range."""
    rows = phase_rows(runs, rule)
    seeds = f"{len(runs)} seeds"
    counts = [len(r["levels"]) for r in rows]
    checks = [Check(f"phases seen ({rule} rule)", "3", ", ".join(map(str, counts)), seeds,
                    all(c == 3 for c in counts))]
    three = [r for r in rows if len(r["levels"]) == 3]  # only there is phase k the paper's phase k
    seeds = "seeds " + ", ".join(str(r["seed"]) for r in three) + " (3 phases seen)" if three else "no seed with 3 phases"
    for k, (lo, hi) in PAPER_LEVELS.items():
        vals = [r["levels"][k] for r in three]
        ok = bool(vals) and all(lo - 0.02 <= v <= hi + 0.02 for v in vals)
        checks.append(Check(f"Phase {k} plateau accuracy", f"{lo:.2f}–{hi:.2f}", _spread(vals), seeds, ok))
    return checks


def metrics_at(run, step: int, layer: int, head: int = 1) -> dict[str, float]:
    """The logged circuit metrics of one layer and head at an evaluated step."""
    i = int(np.searchsorted(run.steps, step))
    return {m: float(run.metrics[f"L{layer}H{head}_{m}"][i]) for m in METRICS}


def phase_steps(run, rule: str = "robust", checkpoints: bool = True) -> dict[int, int]:
    """For each learned phase, the step nearest (in log step) to the middle of its plateau, among the
    checkpoints (to draw maps) or among all evaluated steps (to read logged metrics)."""
    ckpts = np.array([s for s in (run.checkpoint_steps if checkpoints else run.steps.tolist()) if s > 0])
    out = {}
    for p in learned_phases(run, rule):
        inside = ckpts[(ckpts >= p.start) & (ckpts <= p.end)]
        if inside.size:
            mid = np.sqrt(max(p.start, 1) * p.end)
            out[p.index] = int(inside[np.argmin(np.abs(np.log(inside) - np.log(mid)))])
    return out


def layer_pattern(before: dict[str, float], after: dict[str, float], min_change: float = 0.1) -> str:
    """The attention pattern a layer uses after a transition: the metric that rose most, if it rose by
    at least `min_change`; otherwise the layer kept its pattern, read as its largest metric."""
    rise = {m: after[m] - before[m] for m in METRICS}
    top = max(rise, key=rise.get)
    return top if rise[top] >= min_change else max(after, key=after.get)


def circuit_rows(run, rule: str = "robust") -> list[dict]:
    """Per learned phase: its checkpoint, the metrics of both layers, the measured pattern of each layer
    (against the previous phase, Phase 1 against initialisation) and the paper's Table 1 entry."""
    rows, before = [], {layer: metrics_at(run, 0, layer) for layer in (1, 2)}
    for k, step in phase_steps(run, rule, checkpoints=False).items():
        now = {layer: metrics_at(run, step, layer) for layer in (1, 2)}
        patterns = tuple(layer_pattern(before[layer], now[layer]) for layer in (1, 2))
        paper = PAPER_CIRCUITS.get(k, ("–", "–", "–"))
        rows.append({"phase": k, "step": step, "metrics": now, "patterns": patterns, "paper": paper,
                     "match": patterns == paper[1:]})
        before = now
    return rows


def circuit_checks(run, rule: str = "robust") -> list[Check]:
    """Paper Table 1, row by row: does each phase use the paper's pattern in each layer?"""
    checks = []
    by_phase = {r["phase"]: r for r in circuit_rows(run, rule)}
    for k, (name, l1, l2) in PAPER_CIRCUITS.items():
        r = by_phase.get(k)
        ours = f"L1 {r['patterns'][0]}, L2 {r['patterns'][1]} (step {r['step']:,})" if r else "phase not reached"
        checks.append(Check(f"Phase {k} circuit ({name})", f"L1 {l1}, L2 {l2}", ours, f"seed {run.config.seed}",
                            r["match"] if r else False))
    return checks
