"""Activation patching: swap what one attention layer computes along chosen edges for a reference, and
measure what the model's accuracy depended on.

Surgery (`analysis.surgery`) takes attention away; patching keeps every edge and replaces its content:

* ``pattern``: the attention weights on the chosen (row, column) edges are replaced by a reference pattern's.
  If accuracy survives the batch-mean pattern, where those rows looked carried nothing specific to the
  sequence; if it survives another sequence's, the rows' pattern is not what the answer is read from.
* ``value``: the weights stay, and what flows along the chosen edges is replaced: row r reads, at column s,
  the reference value vector at s instead of its own sequence's. If accuracy falls, the content carried
  along those edges mattered, not only where the rows looked.

Sources, computed on the batch the model is evaluated on:

    batch_mean  the mean over the batch
    task_mean   the mean over the batch's sequences of the same task (batch.task)
    other       another sequence's: sequence b gets sequence b - 1's and the first the last's, a roll by one
                along the batch, which moves every sequence (a derangement) in a batch of two or more
    zero        zeros: for a pattern, zero ablation of those cells (surgery's renormalise=False); for values,
                the edges carry nothing

Every source reads the patched layer's own weights or values of the same forward. The layers below it are
not patched, so these are exactly what a clean first pass over the batch would record, without the second
pass. A pattern patched on part of a row is not renormalised: the row then sums to one only if the source's
weights on those cells add up to the clean ones (to replace a whole row's pattern, patch `row_edges`).
Positions are 0-based (item k at 2k, label k at 2k+1, query at 2N) and layers 1-based, as in the probes.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Iterable, Sequence

import torch

from ..model import PATCH_KINDS, Model, Patch
from ..probes import task_means
from ..task import Batch

SOURCES = ("batch_mean", "task_mean", "other", "zero")
Edges = torch.Tensor | Sequence[tuple[int, int]]


def row_edges(rows: Iterable[int], num_seq: int) -> torch.Tensor:
    """Boolean [S, S]: every cell the given rows (0-based positions) may attend to causally, i.e. whole rows."""
    S = 2 * num_seq + 1
    cells = torch.zeros(S, S, dtype=torch.bool)
    for r in rows:
        if not 0 <= r < S:
            raise ValueError(f"rows must be positions in 0..{S - 1}, got {r}")
        cells[r, : r + 1] = True
    return cells


def as_edges(edges: Edges, num_seq: int) -> torch.Tensor:
    """The edges as a boolean [S, S] matrix (row attends to column), from such a matrix or from a list of
    (row, column) pairs of 0-based positions. Raises ValueError for a bad shape, a position out of range, an
    edge above the diagonal (no row attends to a later token, so patching it could change nothing) or none."""
    S = 2 * num_seq + 1
    if isinstance(edges, torch.Tensor):
        if edges.dtype != torch.bool or edges.shape != (S, S):
            raise ValueError(f"edges must be a boolean [S, S] matrix with S = 2 num_seq + 1 = {S} or a list of "
                             f"(row, column) pairs, got a {edges.dtype} tensor of shape {tuple(edges.shape)}")
        cells = edges.cpu()
    else:
        cells = torch.zeros(S, S, dtype=torch.bool)
        for pair in edges:
            if len(pair) != 2 or not all(isinstance(i, numbers.Integral) and 0 <= i < S for i in pair):
                raise ValueError(f"edges must be (row, column) pairs of positions in 0..{S - 1}, got {pair!r}")
            cells[int(pair[0]), int(pair[1])] = True
    if not cells.any():
        raise ValueError("edges must name at least one (row, column) cell, got none")
    above = (cells & ~torch.ones(S, S, dtype=torch.bool).tril()).nonzero().tolist()
    if above:
        raise ValueError(f"edges must be causal (column <= row), got {[tuple(c) for c in above]}")
    return cells


def source_of(source: str, task: torch.Tensor, num_tasks: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function a Patch applies to the layer's tensor [B, H, S, *] (see the module docstring); task [B]
    is only read by "task_mean"."""
    if source == "batch_mean":
        return lambda t: t.mean(0, keepdim=True)
    if source == "task_mean":
        return lambda t: task_means(t, task, num_tasks)[task]
    if source == "other":
        return lambda t: t.roll(1, 0)
    if source == "zero":
        return torch.zeros_like
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def _check(model: Model, batch: Batch, layer: int, kind: str, source: str) -> None:
    if not 1 <= layer <= model.cfg.n_layers:
        raise ValueError(f"layer must be in 1..{model.cfg.n_layers}, got {layer}")
    if kind not in PATCH_KINDS:
        raise ValueError(f"kind must be one of {PATCH_KINDS}, got {kind!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "other" and len(batch) < 2:
        raise ValueError(f"batch must hold at least 2 sequences for source='other', got {len(batch)}")


def patched(model: Model, batch: Batch, layer: int, edges: Edges, kind: str, source: str) -> Model:
    """A copy of model whose attention layer `layer` (1-based) is patched on `edges` (the model itself is left
    unchanged): kind "pattern" or "value", source one of SOURCES (module docstring).

    The copy is meant for `batch`: run it on the whole batch in one forward, as patched_logits does. Its
    sources are computed over whatever batch it is run on, so in chunks (trainer.accuracy evaluates 256 at a
    time) batch_mean and other would mix within chunks only, and task_mean would fail on the size.
    Raises ValueError, before copying anything, for a layer out of range, an unknown kind or source, bad
    edges (see as_edges) or source "other" on a batch of one.
    """
    _check(model, batch, layer, kind, source)
    cells = as_edges(edges, model.cfg.num_seq)
    device = model.bias.device
    out = copy.deepcopy(model)
    fn = source_of(source, batch.task.to(device), model.cfg.num_tasks)
    out.blocks[layer - 1].attn.patch = Patch(cells.to(device), kind, fn)
    return out


@torch.no_grad()
def patched_logits(model: Model, batch: Batch, layer: int, edges: Edges, kind: str, source: str) -> torch.Tensor:
    """Query logits [B, L] of model on batch with one layer patched (see patched), in one forward."""
    return patched(model, batch, layer, edges, kind, source)(batch)[:, -1]


def patched_accuracy(model: Model, batch: Batch, layer: int, edges: Edges, kind: str, source: str) -> float:
    """Fraction of batch whose query label the model predicts with one layer patched (see patched)."""
    logits = patched_logits(model, batch, layer, edges, kind, source)
    return (logits.argmax(-1) == batch.target).float().mean().item()
