"""What circuit a trained 2-layer model uses in Phase 3, beyond the batch-mean circuit metrics.

Three readings of one checkpoint on fresh in-distribution sequences:

* `strong_edges`: every attention edge whose batch-mean weight is above uniform over the row's causal cells;
* `chunk_by_task` / `chunk_by_pair`: layer 1's Chunk Example split by the sequence's task and by pair k, and
  how often label k weights its own item above every other cell it sees (per sequence, not on the mean);
* `causal_tests`: the accuracy after each cut (attention masked, renormalised), value patch and pattern patch
  of the mechanism chapter, so that "the pattern is visible" and "the pattern is used" are told apart.

`fcc_seen` is the criterion, fixed before any control run of the mechanism chapter had finished or been read,
for "the paper's FCC circuit appears": in layer 1 the Chunk Example of *every* task, and in layer 2 the Label
Attention, at or above the book's pattern threshold (`analysis.heads.pattern_thresholds`, an excess of 1/3 over
uniform).
"""

from __future__ import annotations

import torch

from ..model import Model
from ..probes import attention_weights, chunk_pairs, circuit_metrics, own_item_top, task_metrics
from ..task import Batch
from ..trainer import accuracy
from .heads import pattern_thresholds
from .patching import patched_accuracy, row_edges
from .surgery import Edit, cut, edited


def token_name(pos: int, num_seq: int) -> str:
    """The name of a 0-based position: item k / label k (1-based k, as in the paper) or query."""
    if pos == 2 * num_seq:
        return "query"
    return f"{'item' if pos % 2 == 0 else 'label'} {pos // 2 + 1}"


def cells(pairs: list[tuple[int, int]], num_seq: int) -> torch.Tensor:
    """Boolean [S, S] with the given (row, column) cells set."""
    S = 2 * num_seq + 1
    out = torch.zeros(S, S, dtype=torch.bool)
    for r, c in pairs:
        out[r, c] = True
    return out


def strong_edges(maps: list[torch.Tensor], num_seq: int) -> list[tuple[int, str, str, float, float]]:
    """(layer, row token, column token, mean weight, uniform weight) of every edge of head 1 whose batch-mean
    weight exceeds 1/(row + 1), the weight of that edge under uniform causal attention; strongest first
    within each layer. maps: per-layer [H, S, S] batch means (probes.attention_maps)."""
    out = []
    for layer, p in enumerate(maps, start=1):
        p = p[0]
        found = []
        for r in range(p.shape[0]):
            for c in range(r + 1):
                if p[r, c] > 1 / (r + 1):
                    found.append((layer, token_name(r, num_seq), token_name(c, num_seq), float(p[r, c]), 1 / (r + 1)))
        out += sorted(found, key=lambda e: -e[3])
    return out


@torch.no_grad()
def chunk_by_task(model: Model, batch: Batch, p: list[torch.Tensor] | None = None) -> dict[str, list[float]]:
    """Each circuit metric of layer 1 (chunk_example) and layer 2 (label_attention), per task [T], head 1.
    p: the model's attention weights on batch (`attention_weights`) when the caller has them."""
    p = attention_weights(model, batch) if p is None else p
    T = model.cfg.num_tasks
    return {"L1 chunk_example": task_metrics(p[0][:, 0], batch.task, T)["chunk_example"].tolist(),
            "L2 label_attention": task_metrics(p[1][:, 0], batch.task, T)["label_attention"].tolist()}


@torch.no_grad()
def chunk_by_pair(model: Model, batch: Batch, p: list[torch.Tensor] | None = None) -> dict[str, list[float]]:
    """Layer 1, head 1, per pair k: the mean weight of label k on its own item, and the fraction of sequences
    in which label k weights its own item above every other cell it sees. p: as chunk_by_task's."""
    p = (attention_weights(model, batch) if p is None else p)[0][:, 0]
    return {"weight on own item": chunk_pairs(p).mean(0).tolist(),
            "own item on top": own_item_top(p).float().mean(0).tolist()}


def causal_tests(model: Model, batch: Batch) -> dict[str, float]:
    """Accuracy on batch under each intervention of the mechanism chapter (a 2-layer, one-head model trained
    without attention masks: a model whose label rows may only see their own item cannot have that edge cut).

    Cuts mask the edges before the softmax, so each row's weight is shared out over what is left, as a
    training mask does; value and pattern patches are those of `analysis.patching` on one layer.
    """
    N, q = model.cfg.num_seq, 2 * model.cfg.num_seq
    labels, items = [2 * k + 1 for k in range(N)], [2 * k for k in range(N)]
    own = [(lab, lab - 1) for lab in labels]  # label k -> item k
    label_rows = torch.zeros(q + 1, q + 1, dtype=torch.bool)
    label_rows[labels] = True
    causal = torch.ones(q + 1, q + 1, dtype=torch.bool).tril()
    out = {"none": accuracy(model, batch),
           "L1 cut label_k → item_k (all k)": accuracy(cut(model, 1, cells(own, N)), batch)}
    for k, edge in enumerate(own, start=1):
        out[f"L1 cut label_{k} → item_{k}"] = accuracy(cut(model, 1, cells([edge], N)), batch)
    out["L1 cut label_k → itself"] = accuracy(cut(model, 1, cells([(lab, lab) for lab in labels], N)), batch)
    out["L1 cut item_k+1 → label_k"] = accuracy(cut(model, 1, cells([(lab + 1, lab) for lab in labels], N)), batch)
    out["L1 cut item_k+1 → item_k"] = accuracy(cut(model, 1, cells([(lab + 1, lab - 1) for lab in labels], N)), batch)
    out["L1 keep only the chunk mask (label_k → item_k)"] = accuracy(
        edited(model, [Edit(1, "chunk_example", "keep")]), batch)
    keep = cells(own + [(lab, lab) for lab in labels], N)
    out["L1 label rows keep only {item_k, itself}"] = accuracy(cut(model, 1, label_rows & causal & ~keep), batch)
    for k, lab in enumerate(labels, start=1):
        out[f"L2 query cut → label_{k}"] = accuracy(cut(model, 2, cells([(q, lab)], N)), batch)
    out["L2 query cut → every label"] = accuracy(cut(model, 2, cells([(q, lab) for lab in labels], N)), batch)
    out["L2 query cut → every context item"] = accuracy(cut(model, 2, cells([(q, i) for i in items], N)), batch)
    out["L2 query cut → itself"] = accuracy(cut(model, 2, cells([(q, q)], N)), batch)
    for source in ("batch_mean", "other"):
        out[f"L1 values along label_k → item_k: {source}"] = patched_accuracy(model, batch, 1, own, "value", source)
    for source in ("batch_mean", "task_mean", "other"):
        out[f"L1 label rows' pattern: {source}"] = patched_accuracy(model, batch, 1, row_edges(labels, N),
                                                                     "pattern", source)
    return out


def fcc_seen(model: Model, batch: Batch) -> dict[str, object]:
    """The paper's FCC circuit by the criterion fixed before the control runs (module docstring): layer 1's
    Chunk Example at or above threshold for every task, and layer 2's Label Attention at or above threshold.
    A task the batch never drew reads NaN and fails the criterion: use a batch that holds every task."""
    thresholds = pattern_thresholds(model.cfg.num_seq)
    weights = attention_weights(model, batch)
    by_task = chunk_by_task(model, batch, weights)
    l2 = float(circuit_metrics(weights[1].mean(0)[0])["label_attention"])
    every_task = all(v >= thresholds["chunk_example"] for v in by_task["L1 chunk_example"])
    return {"L1 chunk_example by task": by_task["L1 chunk_example"], "L2 label_attention": l2,
            "thresholds": (thresholds["chunk_example"], thresholds["label_attention"]),
            "seen": every_task and l2 >= thresholds["label_attention"]}
