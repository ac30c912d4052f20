"""Probes: attention maps, the three circuit metrics (SPEC §5, paper Table 2) and the phase rules.

Positions here are 0-based (item k at 2k, label k at 2k+1, query at 2N); SPEC's 1-based formulas
p[2N+1, 2N+1], Σ_k p[2N+1, 2k] and (1/N) Σ_k p[2k, 2k-1] become the indices below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import Model
from .task import Batch

METRICS = ("bigram", "label_attention", "chunk_example")


@torch.no_grad()
def attention_maps(model: Model, batch: Batch) -> list[torch.Tensor]:
    """Batch-mean attention of every layer: a list of [H, S, S] tensors."""
    _, attns = model(batch, full=True, return_attn=True)
    return [a.mean(0) for a in attns]


def circuit_metrics(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bigram, Label Attention and Chunk Example of attention maps p [..., S, S] (S = 2N+1).

    Returns a dict of tensors with p's leading shape (e.g. [H] for one layer's heads).
    """
    S = p.shape[-1]
    N, q = (S - 1) // 2, S - 1
    labels = torch.arange(1, q, 2)
    return {
        "bigram": p[..., q, q],
        "label_attention": p[..., q, labels].sum(-1),
        "chunk_example": p[..., labels, labels - 1].sum(-1) / N,
    }


def metric_columns(maps: list[torch.Tensor]) -> dict[str, float]:
    """Flatten per-layer, per-head metrics into columns named 'L{layer}H{head}_{metric}' (1-based)."""
    out = {}
    for li, p in enumerate(maps):
        for name, vals in circuit_metrics(p).items():
            for hi, v in enumerate(vals.tolist()):
                out[f"L{li + 1}H{hi + 1}_{name}"] = v
    return out


# ---- phase rules (paper §4.1, Fig. 3) ------------------------------------------------------------

@dataclass(frozen=True)
class Phase:
    """A plateau between transitions: [start, end] in steps and its accuracy level."""

    index: int
    start: int
    end: int
    level: float


def delta_acc(steps: np.ndarray, acc: np.ndarray, dt: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """ΔAcc(t) = Acc(t + dt) - Acc(t) on an evenly spaced accuracy series. Returns (t, ΔAcc)."""
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    spacing = int(steps[1] - steps[0]) if len(steps) > 1 else dt
    if dt % spacing or np.any(np.diff(steps) != spacing):
        raise ValueError(f"dt must be a multiple of the evaluation spacing ({spacing}) on an evenly spaced series, got {dt}")
    lag = dt // spacing
    return steps[:-lag], acc[lag:] - acc[:-lag]


def _runs(flags: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """Index ranges [i, j] of runs of True, merging runs separated by at most max_gap False entries."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return []
    runs = [[idx[0], idx[0]]]
    for i in idx[1:]:
        if i - runs[-1][1] - 1 <= max_gap:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(int(a), int(b)) for a, b in runs]


def paper_boundaries(steps, acc, dt: int = 100, threshold: float = 0.025) -> list[tuple[int, int]]:
    """The paper's rule: every t with ΔAcc(t) > threshold is a boundary point.

    Consecutive boundary points form one transition; returned as (first t, last t + dt) in steps.
    """
    t, d = delta_acc(steps, acc, dt)
    return [(int(t[a]), int(t[b]) + dt) for a, b in _runs(d > threshold)]


def robust_boundaries(steps, acc, dt: int = 100, threshold: float = 0.025, smooth: int = 5,
                      merge_gap: int = 5, min_rise: float = 0.05) -> list[tuple[int, int]]:
    """A noise-tolerant variant: the same rule on a centred moving average of `smooth` evaluations,
    exceedance runs closer than `merge_gap` evaluations merged, and transitions whose smoothed
    accuracy rises by less than `min_rise` overall dropped."""
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    pad = smooth // 2
    padded = np.pad(acc, pad, mode="edge")
    sm = np.convolve(padded, np.ones(smooth) / smooth, mode="valid")
    t, d = delta_acc(steps, sm, dt)
    lag = len(steps) - len(t)
    out = []
    for a, b in _runs(d > threshold, merge_gap):
        if sm[b + lag] - sm[a] >= min_rise:
            out.append((int(t[a]), int(t[b]) + dt))
    return out


def phases(steps, acc, transitions: list[tuple[int, int]]) -> list[Phase]:
    """Plateaus between transitions, each with its level: the median accuracy over its second half.

    The stretch before the first transition counts only if it holds at least two evaluations, so the
    climb from chance at the very start of training is a transition into Phase 1, not a phase.
    """
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    edges = [int(steps[0])] + [x for tr in transitions for x in tr] + [int(steps[-1])]
    out = []
    for start, end in zip(edges[0::2], edges[1::2]):
        sel = (steps >= start) & (steps <= end)
        if sel.sum() < 2:
            continue
        vals = acc[sel]
        out.append(Phase(len(out) + 1, start, end, float(np.median(vals[len(vals) // 2:]))))
    return out


def phase_report(steps, acc, dt: int = 100, threshold: float = 0.025) -> dict[str, dict]:
    """Transitions and phases by both rules, as plain data for printing or tables."""
    report = {}
    for name, rule in (("paper", paper_boundaries), ("robust", robust_boundaries)):
        tr = rule(steps, acc, dt, threshold)
        report[name] = {"transitions": tr, "phases": phases(steps, acc, tr)}
    return report
