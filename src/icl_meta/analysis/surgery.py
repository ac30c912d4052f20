"""Circuit surgery: edit one attention pattern of a trained model and measure what it was for.

The paper restricts attention from initialisation (App. C). Here a trained checkpoint is edited at
test time instead, one pattern of one layer at a time (Methods §Metrics names the patterns):

* ``keep``: the pattern's rows may attend only where the pattern points (the training mask of the
  same name). If accuracy survives, the rest of those rows' attention was not needed: the pattern is
  *sufficient* for what the layer does there.
* ``remove``: the pattern's rows may attend anywhere causal *except* where the pattern points. If
  accuracy falls, the pattern was *necessary*.

Either way the softmax renormalises over what stays allowed, exactly as a training mask does, and
the model's own mask (if it was trained with one) still applies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..config import CIRCUITS
from ..model import Model, mask_matrix
from ..probes import METRICS
from ..task import Batch
from ..trainer import accuracy

ACTIONS = ("keep", "remove")
SETS = ("in_dist", "random_label", "in_weights")
EFFECT = 0.05  # an accuracy change this large (5 points, ~5 s.e. on 2048 sequences) counts as an effect


@dataclass(frozen=True)
class Edit:
    """Keep only, or remove, one attention pattern in one layer (1-based)."""

    layer: int
    pattern: str
    action: str

    def __post_init__(self):
        if self.pattern not in METRICS:
            raise ValueError(f"pattern must be one of {METRICS}, got {self.pattern!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")

    def __str__(self) -> str:
        return f"L{self.layer} {self.action} {self.pattern}"


def pattern_cells(pattern: str, num_seq: int) -> torch.Tensor:
    """Boolean [S, S]: the cells a pattern points at (e.g. chunk_example: each label to its own item)."""
    causal, only = mask_matrix("none", num_seq), mask_matrix(pattern, num_seq)
    rows = (only != causal).any(1)  # the rows the pattern restricts
    return only & rows[:, None]


def allowed_after(edit: Edit, num_seq: int) -> torch.Tensor:
    """Boolean [S, S]: the causal cells an edit leaves allowed."""
    if edit.action == "keep":
        return mask_matrix(edit.pattern, num_seq)
    return mask_matrix("none", num_seq) & ~pattern_cells(edit.pattern, num_seq)


def edited(model: Model, edits: list[Edit] | tuple[Edit, ...], renormalise: bool = True) -> Model:
    """A copy of model whose attention obeys every edit (the model itself is left unchanged).

    renormalise=True masks the cells before the softmax, so the row's weight is shared out again among
    the cells left (as a training mask does); False zeroes them after the softmax and leaves the other
    weights as they were (zero ablation: the layer's output loses exactly those cells' contribution).
    Raises ValueError, before copying anything, for a layer out of range or masks that leave some
    attention row nothing to attend to.
    """
    cfg = model.cfg
    allowed = torch.ones_like(model.bias, dtype=torch.bool, device="cpu")
    for e in edits:
        if not 1 <= e.layer <= cfg.n_layers:
            raise ValueError(f"layer must be in 1..{cfg.n_layers}, got {e.layer}")
        allowed[e.layer - 1] &= allowed_after(e, cfg.num_seq)
    return _restricted(model, allowed, renormalise, f"edits {[str(e) for e in edits]}")


def cut(model: Model, layer: int, cells: torch.Tensor) -> Model:
    """A copy of model whose layer `layer` (1-based) may not attend along `cells` (bool [S, S], row attends to
    column, 0-based positions); each row's weight is shared out again over the cells left, as a training mask
    does. The finer tool behind `edited`: any set of edges, e.g. one label's edge to its own item.
    Raises ValueError, before copying anything, for a layer out of range, a bad shape or an emptied row."""
    S = model.cfg.seq_len
    if not 1 <= layer <= model.cfg.n_layers:
        raise ValueError(f"layer must be in 1..{model.cfg.n_layers}, got {layer}")
    if cells.dtype != torch.bool or cells.shape != (S, S):
        raise ValueError(f"cells must be a boolean [{S}, {S}] matrix, got {cells.dtype} {tuple(cells.shape)}")
    allowed = torch.ones_like(model.bias, dtype=torch.bool, device="cpu")
    allowed[layer - 1] &= ~cells.cpu()
    return _restricted(model, allowed, True, f"cutting {cells.sum().item()} cells of layer {layer}")


def _restricted(model: Model, allowed: torch.Tensor, renormalise: bool, what: str) -> Model:
    """The copy behind edited and cut: attention restricted to `allowed` [layers, S, S] on top of the model's
    own masks, renormalised (masked before the softmax) or zeroed after it."""
    own = torch.isfinite(model.bias).cpu()  # [layers, S, S], the model's own masks
    empty = [(i + 1, r) for i, r in (~(own & allowed).any(2)).nonzero().tolist()]
    if renormalise and empty:
        raise ValueError(f"{what} must leave every attention row something to attend to; with the model's masks "
                         f"{model.cfg.layer_masks()} these rows are empty (layer, 0-based row): {empty}")
    out = copy.deepcopy(model)
    if renormalise:
        out.bias = torch.zeros_like(model.bias).masked_fill(~(own & allowed).to(model.bias.device), float("-inf"))
    else:
        out.gate = allowed.to(model.bias.device, model.bias.dtype)
    return out


def circuit_edits(name: str) -> tuple[Edit, Edit]:
    """Keep only the circuit's pattern in both layers: a trained model squeezed into NCC, SCC or FCC."""
    if name not in CIRCUITS:
        raise ValueError(f"name must be one of {tuple(CIRCUITS)}, got {name!r}")
    return tuple(Edit(layer, p, "keep") for layer, p in enumerate(CIRCUITS[name], start=1))


def standard_edits(n_layers: int = 2) -> dict[str, tuple[Edit, ...]]:
    """The edits of the surgery table: every (layer, pattern, action) alone, then each whole circuit."""
    out = {"none": ()}
    for layer in range(1, n_layers + 1):
        for pattern in METRICS:
            for action in ACTIONS:
                e = Edit(layer, pattern, action)
                out[str(e)] = (e,)
    if n_layers == 2:
        out.update({f"keep {name} only": circuit_edits(name) for name in CIRCUITS})
    return out


@torch.no_grad()
def surgery_table(model: Model, sets: dict[str, Batch], edits: dict[str, tuple[Edit, ...]],
                  renormalise: bool = True) -> dict[str, dict[str, float]]:
    """Accuracy of model under each named edit on the in-distribution, random-label and in-weights sets."""
    return {name: {k: accuracy(edited(model, es, renormalise), sets[k]) for k in SETS} for name, es in edits.items()}


def verdict_flags(table: dict[str, dict[str, float]], layer: int, pattern: str, effect: float = EFFECT) -> str:
    """verdicts() in two letters: "N" necessary, "S" sufficient, "NS" both, "-" neither."""
    v = verdicts(table, layer, pattern, effect)
    return ("N" if v["necessary"] else "") + ("S" if v["sufficient"] else "") or "-"


def verdicts(table: dict[str, dict[str, float]], layer: int, pattern: str, effect: float = EFFECT) -> dict[str, bool]:
    """Read one (layer, pattern) off a surgery table on the in-distribution set.

    necessary: removing it costs at least `effect` accuracy; sufficient: keeping only it costs less
    than `effect`.
    """
    base = table["none"]["in_dist"]
    return {"necessary": base - table[str(Edit(layer, pattern, "remove"))]["in_dist"] >= effect,
            "sufficient": base - table[str(Edit(layer, pattern, "keep"))]["in_dist"] < effect}
