"""Probes: attention maps, the three circuit metrics (Methods §Metrics, paper Table 2) and the phase rules.

Token positions here are 0-based (item k at 2k, label k at 2k+1, query at 2N); the paper's 1-based formulas
p[2N+1, 2N+1], Σ_k p[2N+1, 2k] and (1/N) Σ_k p[2k, 2k-1] become the indices below.

Layers and heads are 1-based everywhere they are named: in function arguments (`layer`, `head`), in the
logged metric columns (`metric_column`: "L1H1_bigram" is the first layer's first head) and in every
chapter. They are 0-based only as Python indices into per-layer lists and arrays (the attention maps of
`attention_maps`, the [layers, heads, ...] arrays of `icl_meta.analysis.heads`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from .model import Model
from .task import Batch

METRICS = ("bigram", "label_attention", "chunk_example")


@torch.no_grad()
def attention_weights(model: Model, batch: Batch) -> list[torch.Tensor]:
    """Attention of every layer per sequence: a list of [B, H, S, S] tensors (for task_metrics, chunk_pairs)."""
    return model(batch, full=True, return_attn=True)[1]


def attention_maps(model: Model, batch: Batch) -> list[torch.Tensor]:
    """Batch-mean attention of every layer: a list of [H, S, S] tensors."""
    return [a.mean(0) for a in attention_weights(model, batch)]


def circuit_metrics(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bigram, Label Attention and Chunk Example of attention maps p [..., S, S] (S = 2N+1).

    Returns a dict of tensors with p's leading shape (e.g. [H] for one layer's heads, [B, H] for one layer's
    per-sequence weights).
    """
    S = p.shape[-1]
    N, q = (S - 1) // 2, S - 1
    labels = torch.arange(1, q, 2)
    return {
        "bigram": p[..., q, q],
        "label_attention": p[..., q, labels].sum(-1),
        "chunk_example": p[..., labels, labels - 1].sum(-1) / N,
    }


def task_means(x: torch.Tensor, task: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Mean of x [B, ...] over the sequences of each task (task [B], as Batch.task): [num_tasks, ...], NaN
    for a task the batch never drew."""
    sums = x.new_zeros((num_tasks, *x.shape[1:])).index_add_(0, task, x)
    counts = torch.bincount(task, minlength=num_tasks).to(x.dtype)
    return sums / counts.view(-1, *(1,) * (x.dim() - 1))


def task_metrics(p: torch.Tensor, task: torch.Tensor, num_tasks: int) -> dict[str, torch.Tensor]:
    """circuit_metrics of each task's mean attention: p [B, ..., S, S] holds one map per sequence (a layer's
    weights from `model(batch, full=True, return_attn=True)`), task [B]. Returns tensors [num_tasks, ...],
    NaN for a task the batch never drew. The metrics are linear in p, so these are also each task's mean of
    the per-sequence metrics, and their average weighted by the tasks' counts is the batch's metric: a
    circuit that only some tasks use shows here and is diluted there."""
    return {name: task_means(v, task, num_tasks) for name, v in circuit_metrics(p).items()}


def chunk_pairs(p: torch.Tensor) -> torch.Tensor:
    """Chunk Example per pair: p[label_k, item_k] for k = 0..N-1, a tensor [..., N] of maps p [..., S, S].
    Its mean over k is the chunk_example metric; per k it shows whether early and late pairs chunk alike."""
    labels = torch.arange(1, p.shape[-1] - 1, 2)
    return p[..., labels, labels - 1]


def own_item_top(p: torch.Tensor) -> torch.Tensor:
    """Bool [..., N] of maps p [..., S, S]: label k weights its own item strictly above every other token it
    sees (the earlier tokens and itself), i.e. the label's row has its argmax at its item.

    Per sequence (p [B, H, S, S]), `own_item_top(p).float().mean(0)` is the fraction of sequences in which
    each pair chunks: a mean chunk_example of 0.5 may be every label half on its item, or half the labels
    fully on it, and this tells the two apart."""
    S = p.shape[-1]
    labels, cols = torch.arange(1, S - 1, 2, device=p.device), torch.arange(S, device=p.device)
    others = (cols <= labels[:, None]) & (cols != labels[:, None] - 1)  # [N, S]: causal, not the own item
    return ((p[..., labels, :] < chunk_pairs(p)[..., None]) | ~others).all(-1)


def metric_column(layer: int, head: int, metric: str) -> str:
    """The name of the logged column of one head's circuit metric: 'L{layer}H{head}_{metric}' (1-based)."""
    return f"L{layer}H{head}_{metric}"


def parse_metric_column(column: str) -> tuple[int, int, str] | None:
    """(layer, head, metric) of a metric_column name; None for any other column (acc, loss, ...)."""
    m = re.fullmatch(r"L(\d+)H(\d+)_(\w+)", column)
    return (int(m[1]), int(m[2]), m[3]) if m and m[3] in METRICS else None


def metric_columns(maps: list[torch.Tensor]) -> dict[str, float]:
    """Flatten per-layer, per-head metrics into their metric_column names."""
    out = {}
    for li, p in enumerate(maps):
        for name, vals in circuit_metrics(p).items():
            for hi, v in enumerate(vals.tolist()):
                out[metric_column(li + 1, hi + 1, name)] = v
    return out


def matching_label_weight(query_row: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Attention [B] that the query row [B, S] puts on the label of the context pair whose class is the
    query's (classes [B, N+1]; -1 marks novel classes, which match nothing): the induction-head pattern.
    Summed over matching pairs; NaN for a sequence without one."""
    match = (classes[:, :-1] == classes[:, -1:]) & (classes[:, -1:] >= 0)
    w = (query_row[:, 1:-1:2] * match).sum(1)
    return w.masked_fill(~match.any(1), float("nan"))


@torch.no_grad()
def induction_score(model: Model, batch: Batch, layer: int) -> float:
    """Mean over sequences (with a matching pair) and heads of matching_label_weight in a layer (1-based)."""
    _, attns = model(batch, full=True, return_attn=True)
    return float(matching_label_weight(attns[layer - 1].mean(1)[:, -1], batch.classes).nanmean())


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
    if spacing <= 0 or np.any(np.diff(steps) != spacing):
        raise ValueError("steps must increase in even steps for ΔAcc with fixed dt")
    if dt <= 0 or dt % spacing:
        raise ValueError(f"dt must be a positive multiple of the evaluation spacing ({spacing}), got {dt}")
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


def log_smoothed(steps, acc, per_decade: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy on a log-spaced step grid, each point the mean over evaluations within half a grid
    step of it (in log space): few points early, many averaged late, as a log-axis plot reads it."""
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    pos = steps > 0
    s, a = steps[pos], acc[pos]
    n = max(int(np.ceil(np.log10(s[-1] / s[0]) * per_decade)) + 1, 2)
    grid = np.geomspace(s[0], s[-1], n)
    half = 10 ** (0.5 / per_decade)
    keep = [(g, a[(s >= g / half) & (s <= g * half)]) for g in grid]
    keep = [(g, v.mean()) for g, v in keep if v.size]
    return np.array([g for g, _ in keep]), np.array([v for _, v in keep])


def log_changes(steps, values, per_decade: int = 10) -> np.ndarray:
    """Changes of a logged curve between neighbouring points of the log_smoothed grid: how steep each
    stretch looks on a log axis (analysis.phasemap.max_jump reads the accuracy's, analysis.heads.steepest_change
    a head's)."""
    return np.diff(log_smoothed(steps, values, per_decade)[1])


def robust_boundaries(steps, acc, threshold: float = 0.025, per_decade: int = 10, merge_gap: int = 1,
                      min_rise: float = 0.05) -> list[tuple[int, int]]:
    """The paper's rule with Δt proportional to t: ΔAcc between consecutive points of a log-spaced,
    log-window-averaged accuracy (10 points a decade: Δt ≈ 0.26 t) exceeds `threshold`.

    Exceedance runs at most `merge_gap` grid points apart are merged, and a transition whose smoothed
    accuracy rises by less than `min_rise` overall is dropped. Unlike a fixed Δt of 100 steps, this
    sees a transition that is abrupt on a log axis but spans thousands of steps, and averages away
    evaluation noise late in training.
    """
    grid, sm = log_smoothed(steps, acc, per_decade)
    d = np.diff(sm)
    out = []
    for a, b in _runs(d > threshold, merge_gap):
        if sm[b + 1] - sm[a] >= min_rise:
            out.append((int(round(grid[a])), int(round(grid[b + 1]))))
    return out


def phases(steps, acc, transitions: list[tuple[int, int]]) -> list[Phase]:
    """Plateaus between transitions, each with its level: the median accuracy over its second half.

    Phase k is the stretch after the k-th transition; Phase 0 is the stretch before the first one (the
    untrained model, or the whole run if nothing ever changed). Stretches shorter than two
    evaluations are left out.
    """
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    edges = [int(steps[0])] + [x for tr in transitions for x in tr] + [int(steps[-1])]
    out = []
    for index, (start, end) in enumerate(zip(edges[0::2], edges[1::2])):
        vals = acc[(steps >= start) & (steps <= end)]
        if vals.size >= 2:
            out.append(Phase(index, start, end, float(np.median(vals[len(vals) // 2:]))))
    return out


@dataclass(frozen=True)
class Plateau(Phase):
    """A stretch the plateau rule (`plateaus`) found flat, or the run's end level when the run ended off
    every plateau (`climbing`: in these runs it was still climbing, so the level is where it stopped, not
    where it would settle)."""

    climbing: bool = False


def log_grid(steps, values, per_decade: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A logged curve on a log-spaced step grid anchored at the last step (exactly `per_decade` points a
    decade), each point the mean of the evaluations within half a grid step of it in log step, so that
    each evaluation counts once. Points with no evaluation (early, where evaluations are sparser than
    the grid) are left out."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    pos = steps > 0
    s, v = steps[pos], values[pos]
    n = int(np.floor(np.log10(s[-1] / s[0]) * per_decade + 1e-9)) + 1
    grid = s[-1] * 10.0 ** (-np.arange(n)[::-1] / per_decade)
    half = 10 ** (0.5 / per_decade)
    keep = [(g, v[(s > g / half) & (s <= g * half)]) for g in grid]
    keep = [(g, x.mean()) for g, x in keep if x.size]
    return np.array([g for g, _ in keep]), np.array([x for _, x in keep])


def log_slopes(steps, values, per_decade: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `log_grid` of a curve, its smoothed values, and at each grid point the change per decade of
    log step between its two neighbours (one-sided at the ends): the plateau rule's slope."""
    grid, sm = log_grid(steps, values, per_decade)
    if len(grid) < 2:
        return grid, sm, np.zeros(len(grid))
    x, i = np.log10(grid), np.arange(len(grid))
    lo, hi = np.maximum(i - 1, 0), np.minimum(i + 1, len(grid) - 1)
    return grid, sm, (sm[hi] - sm[lo]) / (x[hi] - x[lo])


def plateaus(steps, acc, per_decade: int = 20, max_slope: float = 0.15, min_span: float = 0.15,
             min_step: float = 0.05) -> list[Plateau]:
    """The plateau rule (ours, Methods §Phase rules): the stretches a reader sees as flat on a log step
    axis, found directly rather than as what lies between transitions.

    1. Smooth: accuracy on a log grid of `per_decade` (20) points a decade, each the mean of the
       evaluations within ±1/40 decade of it (`log_grid`; neighbouring windows do not overlap, so a rise
       smears into one neighbour only).
    2. Slope: at each grid point, the change per decade of log step between its two neighbours (one-sided
       at the ends). A point is flat when |slope| <= `max_slope` (0.15 per decade: a curve that creeps
       by less than 0.15 over a whole decade looks level on a log axis; the rises between the paper's
       phases climb 0.2-0.5 within a few tenths of a decade).
    3. Plateaus: a maximal run of flat points i..j certifies the curve from grid point i-1 to j+1 (each
       slope reads its two neighbours); it is a plateau when that stretch spans at least `min_span`
       (0.15) decade, a factor 1.41 in steps: the shortest stretch a reader sees as a plateau, and what
       the early stop (99% held for 1.5x its step) leaves the final level. A run of flat points that
       reaches the run's last step is cut by the run's end, not by the data, and has no neighbour there.
    4. Merge: neighbouring plateaus whose levels differ by less than `min_step` (0.05, the robust rule's
       smallest rise) are one plateau with a wobble in it, and merge (the stretch between included).
    5. Level: the median of the smoothed values of the plateau's flat points.
    6. Index: the first plateau, if within `min_step` of the first evaluated accuracy, is the untrained
       stretch, index 0; the others count 1, 2, ... in order. When the run's last grid point lies on no plateau
       and its smoothed accuracy differs from the last plateau's level by at least `min_step`, the end
       is appended as one more index with `climbing` True (its level: the last grid point's value).

    Returns the plateaus in step order; start and end are grid steps (rounded).
    """
    steps, acc = np.asarray(steps), np.asarray(acc, dtype=float)
    grid, sm, slope = log_slopes(steps, acc, per_decade)
    x, last = np.log10(grid), len(grid) - 1
    if last < 2:
        return [Plateau(0, int(steps[0]), int(steps[-1]), float(np.median(acc)))]
    found = []  # [lo, hi, flat indices]
    for i, j in _runs(np.abs(slope) <= max_slope):
        lo, hi = max(i - 1, 0), min(j + 1, last)
        if x[hi] - x[lo] < min_span - 1e-9:
            continue
        flat = list(range(i, j + 1))
        if found and abs(np.median(sm[found[-1][2]]) - np.median(sm[flat])) < min_step:
            found[-1] = [found[-1][0], hi, found[-1][2] + flat]
        else:
            found.append([lo, hi, flat])
    out, start_level, index = [], float(acc[0]), 1
    for lo, hi, flat in found:
        level = float(np.median(sm[flat]))
        k = 0 if not out and abs(level - start_level) < min_step else index
        index += k > 0
        out.append(Plateau(k, int(round(grid[lo])), int(round(grid[hi])), level))
    if not found or (found[-1][1] < last and abs(sm[-1] - out[-1].level) >= min_step):
        begin = out[-1].end if out else int(steps[0])
        out.append(Plateau(index, begin, int(steps[-1]), float(sm[-1]), climbing=True))
    return out


def phase_report(steps, acc, dt: int = 100, threshold: float = 0.025) -> dict[str, dict]:
    """Transitions and phases by both rules, as plain data for printing or tables."""
    report = {}
    for name, tr in (("paper", paper_boundaries(steps, acc, dt, threshold)),
                     ("robust", robust_boundaries(steps, acc, threshold))):
        report[name] = {"transitions": tr, "phases": phases(steps, acc, tr)}
    return report
