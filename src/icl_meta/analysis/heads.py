"""What each attention head does, step by step: head patterns, head roles and how abruptly they switch
(the architecture chapters: paper Fig. 8, 9, 16, 17, 22, 23; Methods §Heads).

A head's *pattern* is the circuit metric (probes.METRICS) it shows most, each metric measured as its
excess over uniform causal attention, (m - u) / (1 - u): 0 for a head that spreads its attention evenly
(as every head does at initialisation), 1 for the pure pattern. A head whose largest excess is below
MIN_EXCESS is "mixed". Its *role* is the circuit of paper Table 1 that uses that pattern in that layer:

    layer 1:  Bigram -> NCC,  Label Attention -> SCC,  Chunk Example -> FCC
    layer 2:  Label Attention or Chunk Example -> FCC,
              Bigram -> SCC if some layer-1 head is SCC-like at that step (Table 1's SCC row), else NCC

and "other" for a mixed head. The rule reads the metrics logged at every evaluation, so a role timeline
has the resolution of the accuracy curve, not of the few checkpoints.
"""

from __future__ import annotations

import numpy as np

from ..probes import METRICS, log_changes, metric_column, parse_metric_column
from ..runs import Run

# A head shows a pattern when its metric stands at least a third of the way from uniform attention to the
# pure pattern (fixed before the architecture runs were trained; the chapters show the raw metrics too).
MIN_EXCESS = 1 / 3
ROLES = ("NCC", "SCC", "FCC", "other")
FIRST_LAYER_ROLE = {"bigram": "NCC", "label_attention": "SCC", "chunk_example": "FCC", "mixed": "other"}


def uniform_metrics(num_seq: int) -> dict[str, float]:
    """The three metrics of uniform causal attention over a sequence of N pairs and the query: the query
    row spreads over 2N+1 tokens, label k's row over its 2k tokens (1-based)."""
    k = np.arange(1, num_seq + 1)
    return {"bigram": 1 / (2 * num_seq + 1), "label_attention": num_seq / (2 * num_seq + 1),
            "chunk_example": float(np.mean(1 / (2 * k)))}


def pattern_thresholds(num_seq: int) -> dict[str, float]:
    """The value of each metric at which a head shows that pattern (excess MIN_EXCESS): the line drawn
    under a head's metric curve."""
    return {m: u + MIN_EXCESS * (1 - u) for m, u in uniform_metrics(num_seq).items()}


def excess(run: Run, layer: int, head: int) -> dict[str, np.ndarray]:
    """Each metric of one head (1-based layer and head) at every evaluated step, as excess over uniform."""
    u = uniform_metrics(run.config.num_seq)
    return {m: (run.metrics[metric_column(layer, head, m)] - u[m]) / (1 - u[m]) for m in METRICS}


def head_patterns(run: Run) -> np.ndarray:
    """Pattern names [layers, heads, steps]: the metric with the largest excess, or "mixed"."""
    cfg = run.config
    out = np.empty((cfg.n_layers, cfg.n_heads, len(run.steps)), dtype=object)
    for li in range(cfg.n_layers):
        for hi in range(cfg.n_heads):
            e = np.stack([excess(run, li + 1, hi + 1)[m] for m in METRICS])
            top = np.array(METRICS, dtype=object)[e.argmax(0)]
            out[li, hi] = np.where(e.max(0) >= MIN_EXCESS, top, "mixed")
    return out


def head_roles(run: Run) -> np.ndarray:
    """Role names (ROLES) [2, heads, steps] of a 2-layer run by the Table-1 rule of the module docstring."""
    if run.config.n_layers != 2:
        raise ValueError(f"n_layers must be 2 for head roles (Table 1 names layer-1 and layer-2 patterns), "
                         f"got {run.config.n_layers}")
    pat = head_patterns(run)
    first = np.vectorize(FIRST_LAYER_ROLE.get, otypes=[object])(pat[0])
    scc_below = (first == "SCC").any(0)
    second = np.where(np.isin(pat[1], ("label_attention", "chunk_example")), "FCC",
                      np.where(pat[1] == "bigram", np.where(scc_below, "SCC", "NCC"), "other"))
    return np.stack([first, second.astype(object)])


def role_switches(run: Run, roles: np.ndarray, min_steps: int = 1000) -> list[tuple[int, int, int, str, str]]:
    """(layer, head, step, old role, new role) for every role change of a head that then lasts at least
    `min_steps` (shorter flickers at a threshold are skipped), in step order."""
    steps, out = run.steps, []
    for li, hi in np.ndindex(roles.shape[:2]):
        r = roles[li, hi]
        current = r[0]
        for i in np.flatnonzero(r[1:] != r[:-1]) + 1:
            stays = steps <= steps[i] + min_steps
            if r[i] != current and np.all(r[i:][stays[i:]] == r[i]):
                out.append((li + 1, hi + 1, int(steps[i]), current, r[i]))
                current = r[i]
    return sorted(out, key=lambda s: s[2])


def steepest_change(run: Run, column: str) -> float:
    """The largest change (either sign) of a logged column between neighbouring points of the robust
    rule's log grid (10 a decade): how abrupt its steepest switch looks on a log axis."""
    return float(np.abs(log_changes(run.steps, run.metrics[column])).max())


def steepest_head_change(run: Run) -> tuple[float, str]:
    """The steepest change of any head's circuit metric, and its column name."""
    cols = [c for c in run.metrics if parse_metric_column(c)]
    changes = {c: steepest_change(run, c) for c in cols}
    top = max(changes, key=changes.get)
    return changes[top], top


def layer_metrics_at_end(run: Run) -> np.ndarray:
    """[layers, 3] each layer's largest value over heads of each metric (probes.METRICS order), at the
    last evaluated step (of the window, for a truncated run)."""
    cfg = run.config
    return np.array([[max(run.metrics[metric_column(layer, head, m)][-1] for head in range(1, cfg.n_heads + 1))
                      for m in METRICS] for layer in range(1, cfg.n_layers + 1)])
