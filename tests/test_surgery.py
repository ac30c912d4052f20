"""Circuit surgery: edits keep or remove exactly the cells of a pattern, in either mode, on a copy; cut removes
any set of cells."""

import pytest
import torch

from icl_meta import Config, Model, attention_maps, make_instance, mask_matrix, sample
from icl_meta.config import CIRCUITS
from icl_meta.analysis import surgery
from icl_meta.analysis.surgery import (Edit, allowed_after, circuit_edits, cut, edited, pattern_cells,
                                       standard_edits, surgery_table, verdict_flags, verdicts)
from icl_meta.task import eval_sets

N, S, Q = 4, 9, 8
LABELS = [1, 3, 5, 7]


def test_pattern_cells_by_hand():
    """bigram: (q, q); label_attention: q to each label; chunk_example: each label to its own item."""
    expected = {"bigram": [(Q, Q)], "label_attention": [(Q, j) for j in LABELS],
                "chunk_example": [(j, j - 1) for j in LABELS]}
    for pattern, cells in expected.items():
        assert sorted(map(tuple, pattern_cells(pattern, N).nonzero().tolist())) == cells


@pytest.mark.parametrize("pattern", ["bigram", "label_attention", "chunk_example"])
def test_keep_and_remove_split_the_pattern_rows(pattern):
    """keep = the training mask; remove = causal minus the pattern's cells; together they cover causal."""
    keep = allowed_after(Edit(1, pattern, "keep"), N)
    remove = allowed_after(Edit(1, pattern, "remove"), N)
    assert torch.equal(keep, mask_matrix(pattern, N))
    assert not (remove & pattern_cells(pattern, N)).any()
    assert torch.equal(keep | remove, mask_matrix("none", N))


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    cfg = Config()
    model = Model(cfg)
    with torch.no_grad():  # sharper attention than at init, so that edits change the output visibly
        for b in model.blocks:
            b.attn.w_qkv.mul_(3)
    batch = sample(make_instance(cfg), cfg, 64, torch.Generator().manual_seed(1))
    return model, batch


@pytest.mark.parametrize("renormalise", [True, False])
@pytest.mark.parametrize("pattern", ["bigram", "label_attention", "chunk_example"])
def test_edited_attention_obeys_the_edit(model_and_batch, pattern, renormalise):
    """After an edit the layer's weights are zero outside what it allows; other layers' rows and the
    original model are untouched; with renormalise the edited rows still sum to one."""
    model, batch = model_and_batch
    before = [p.clone() for p in attention_maps(model, batch)]
    for action in ("keep", "remove"):
        m = edited(model, [Edit(2, pattern, action)], renormalise)
        p = attention_maps(m, batch)
        allowed = allowed_after(Edit(2, pattern, action), N)
        assert torch.all(p[1][0][~allowed] == 0)
        if renormalise:
            assert torch.allclose(p[1][0].sum(-1), torch.ones(S), atol=1e-5)
        assert torch.allclose(p[0], before[0], atol=1e-6)  # layer 1 unchanged
    after = attention_maps(model, batch)
    assert all(torch.equal(a, b) for a, b in zip(after, before))


def test_zero_ablation_keeps_the_other_weights(model_and_batch):
    """Without renormalising, the weights a removal leaves are exactly the unedited ones."""
    model, batch = model_and_batch
    p0 = attention_maps(model, batch)[0][0]
    p = attention_maps(edited(model, [Edit(1, "label_attention", "remove")], renormalise=False), batch)[0][0]
    cells = pattern_cells("label_attention", N)
    assert torch.allclose(p[~cells], p0[~cells], atol=1e-6)


def test_keeping_a_models_own_mask_changes_nothing(model_and_batch):
    """A model trained with the SCC masks, edited to keep the SCC patterns, computes the same logits."""
    _, batch = model_and_batch
    model = Model(Config(masks=CIRCUITS["SCC"]))
    with torch.no_grad():
        assert torch.allclose(edited(model, circuit_edits("SCC"))(batch), model(batch), atol=1e-6)


def test_bad_edits_are_rejected():
    model = Model(Config(masks=("bigram", "bigram")))
    with pytest.raises(ValueError, match="pattern must be one of"):
        Edit(1, "copy", "keep")
    with pytest.raises(ValueError, match="action must be one of"):
        Edit(1, "bigram", "swap")
    with pytest.raises(ValueError, match=r"layer must be in 1\.\.2"):
        edited(model, [Edit(3, "bigram", "keep")])
    with pytest.raises(ValueError, match="nothing to attend to|something to attend to"):
        edited(model, [Edit(1, "bigram", "remove")])  # the query row may only see itself
    with pytest.raises(ValueError, match="name must be one of"):
        circuit_edits("XCC")
    edited(model, [Edit(1, "bigram", "remove")], renormalise=False)  # zeroing a whole row is allowed


def test_surgery_table_and_verdicts(model_and_batch):
    """One row per edit, accuracies in [0, 1]; the unedited row equals keeping nothing out."""
    model, _ = model_and_batch
    cfg = Config(eval_size=256, aux_eval_size=128)
    sets = eval_sets(make_instance(cfg), cfg)
    edits = standard_edits()
    assert len(edits) == 1 + 2 * 3 * 2 + 3
    table = surgery_table(model, sets, edits)
    assert set(table) == set(edits)
    assert all(0 <= v <= 1 for row in table.values() for v in row.values())
    fake = {"none": {"in_dist": 0.9}, "L1 remove bigram": {"in_dist": 0.5}, "L1 keep bigram": {"in_dist": 0.88}}
    assert verdicts(fake, 1, "bigram") == {"necessary": True, "sufficient": True}
    assert verdict_flags(fake, 1, "bigram") == "NS"
    fake["L1 keep bigram"]["in_dist"] = 0.6
    assert verdict_flags(fake, 1, "bigram") == "N"
    fake["L1 remove bigram"]["in_dist"] = 0.87
    assert verdicts(fake, 1, "bigram") == {"necessary": False, "sufficient": False}
    assert verdict_flags(fake, 1, "bigram") == "-"


@pytest.mark.parametrize("renormalise", [True, False])
def test_edited_fast_path_matches_full(model_and_batch, renormalise):
    """Training's query-only last layer and the probes' full computation agree on an edited model."""
    model, batch = model_and_batch
    m = edited(model, [Edit(1, "chunk_example", "remove"), Edit(2, "label_attention", "keep")], renormalise)
    with torch.no_grad():
        assert torch.allclose(m(batch), m(batch, full=True), atol=1e-5)


# ---- cut: any set of cells ---------------------------------------------------------------------------------

def weights(model, batch):
    """Per-sequence attention of every layer, every row computed: a list of [B, H, S, S]."""
    with torch.no_grad():
        return model(batch, full=True, return_attn=True)[1]


@pytest.mark.parametrize("layer, pattern", [(1, "chunk_example"), (2, "label_attention"), (2, "bigram")])
def test_cut_equals_removing_the_pattern(model_and_batch, layer, pattern):
    """Cutting a pattern's cells (e.g. every label_k -> item_k of layer 1) is the edit that removes the pattern:
    the same logits, and a model that differs from the unedited one."""
    model, batch = model_and_batch
    with torch.no_grad():
        got = cut(model, layer, pattern_cells(pattern, N))(batch, full=True)
        want = edited(model, [Edit(layer, pattern, "remove")])(batch, full=True)
        assert torch.allclose(got, want, atol=1e-6)
        assert not torch.allclose(got, model(batch, full=True), atol=1e-4)


def test_cut_zeroes_the_cells_and_renormalises_the_rows(model_and_batch):
    """The copy's cut layer has weight zero on the cut cells, every row still sums to one, and a cut row's other
    weights are the clean ones divided by what the row kept (the softmax over the cells left); rows with no cut
    cell, and every other layer's input (here: the layer below), are as before."""
    model, batch = model_and_batch
    before = weights(model, batch)
    cells = torch.zeros(S, S, dtype=torch.bool)
    for r, c in [(3, 2), (5, 0), (5, 5), (Q, 1), (Q, Q)]:
        cells[r, c] = True
    for layer in (1, 2):
        after = weights(cut(model, layer, cells), batch)
        p, clean = after[layer - 1][:, 0], before[layer - 1][:, 0]  # [B, S, S]
        assert torch.all(p[:, cells] == 0)
        assert torch.allclose(p.sum(-1), torch.ones(len(batch), S), atol=1e-5)
        kept = 1 - (clean * cells).sum(-1, keepdim=True)  # [B, S, 1]
        rows = (kept > 0.01).expand_as(p)  # 1 - kept is too coarse in float32 where a row kept almost nothing
        assert torch.allclose(p[rows], torch.where(cells, 0.0, clean / kept)[rows], atol=1e-5, rtol=1e-3)
        untouched = ~cells.any(1)
        assert torch.allclose(p[:, untouched], clean[:, untouched], atol=1e-6)
        if layer == 2:
            assert torch.allclose(after[0], before[0], atol=1e-6)


def test_cut_leaves_the_model_unchanged(model_and_batch):
    """Cutting returns a copy: the model's mask, gate, parameters and logits are bit for bit as they were."""
    model, batch = model_and_batch
    with torch.no_grad():
        logits = model(batch, full=True)
    bias, params = model.bias.clone(), [p.clone() for p in model.parameters()]
    m = cut(model, 1, pattern_cells("chunk_example", N))
    assert m is not model and m.bias is not model.bias
    assert torch.equal(model.bias, bias) and model.gate is None
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), params))
    with torch.no_grad():
        assert torch.equal(model(batch, full=True), logits)


def test_cutting_nothing_or_above_the_diagonal_changes_nothing(model_and_batch):
    """No cells, or cells no row could attend to anyway (above the diagonal), leave the logits as they were."""
    model, batch = model_and_batch
    with torch.no_grad():
        clean = model(batch, full=True)
        assert torch.allclose(cut(model, 2, torch.zeros(S, S, dtype=torch.bool))(batch, full=True), clean, atol=1e-6)
        above = ~torch.ones(S, S, dtype=torch.bool).tril()
        assert torch.allclose(cut(model, 1, above)(batch, full=True), clean, atol=1e-6)


def test_cut_keeps_the_models_own_mask(model_and_batch):
    """On a model trained with masks, cutting layer 2 leaves layer 1's mask in force and adds the cut to
    layer 2's own mask."""
    _, batch = model_and_batch
    model = Model(Config(masks=("chunk_example", "label_attention")))
    cells = torch.zeros(S, S, dtype=torch.bool)
    cells[Q, 1] = True
    p = weights(cut(model, 2, cells), batch)
    assert torch.all(p[0][:, 0][:, ~mask_matrix("chunk_example", N)] == 0)
    allowed = mask_matrix("label_attention", N) & ~cells
    assert torch.all(p[1][:, 0][:, ~allowed] == 0)
    assert torch.allclose(p[1][:, 0, Q, [3, 5, 7]].sum(-1), torch.ones(len(batch)), atol=1e-5)


def test_bad_cuts_are_rejected_before_copying(model_and_batch, monkeypatch):
    """A layer out of range, cells of the wrong dtype or shape, or a cut that leaves a row (of the causal mask,
    or of the model's own mask) nothing to attend to raise ValueError naming the problem, before any copy."""
    model, _ = model_and_batch

    def no_copy(*_):
        raise AssertionError("copied the model before checking the arguments")

    monkeypatch.setattr(surgery.copy, "deepcopy", no_copy)
    none = torch.zeros(S, S, dtype=torch.bool)
    for layer in (0, 3):
        with pytest.raises(ValueError, match=r"layer must be in 1\.\.2, got " + str(layer)):
            cut(model, layer, none)
    for bad in (torch.zeros(S, S), torch.zeros(S, S, dtype=torch.long), torch.zeros(S - 1, S - 1, dtype=torch.bool),
                torch.zeros(S, dtype=torch.bool), torch.zeros(1, S, S, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"cells must be a boolean \[9, 9\] matrix"):
            cut(model, 1, bad)
    row = none.clone()
    row[3, :4] = True  # label 2's whole causal row
    with pytest.raises(ValueError, match=r"something to attend to.*\(1, 3\)"):
        cut(model, 1, row)
    masked = Model(Config(masks=("bigram", "bigram")))
    only = none.clone()
    only[Q, Q] = True  # the only cell the bigram mask leaves the query row
    with pytest.raises(ValueError, match=r"something to attend to.*\(2, 8\)"):
        cut(masked, 2, only)
