"""Activation patching (analysis.patching) and the per-task, per-pair circuit metrics (probes).

Patching is checked on a hand-built tiny model whose answer is known, and on a default-size model against a
separate clean pass and against surgery's zero ablation."""

import copy

import pytest
import torch

from icl_meta import Batch, Config, Model, circuit_metrics, make_instance, sample
from icl_meta.analysis import patching
from icl_meta.analysis.patching import (SOURCES, as_edges, patched, patched_accuracy, patched_logits, row_edges,
                                        source_of)
from icl_meta.analysis.surgery import Edit, edited, pattern_cells
from icl_meta.model import Patch
from icl_meta.probes import attention_maps, attention_weights, chunk_pairs, own_item_top, task_means, task_metrics

# The hand-built model: N = 2 pairs, S = 5 (item 0, label 0, item 1, label 1, query), d_model = 4 + 3.
TINY = Config(num_seq=2, content_dim=4, pos_dim=3, num_labels=4, num_classes=8, mlp_hidden=8)
Q = 4
E = torch.eye(4)


def hand_model(sharpness: float = 0.0) -> Model:
    """Layer 1 copies the residual stream (W_V = I) and its query row scores sharpness * (token is label 0's
    embedding), every other score 0 (so at sharpness 0 all rows attend uniformly); layer 2 adds nothing
    (all weights 0, so its values are 0). Label j is e_j in the first four dims, items carry no content there,
    and the classifier reads those four dims out unchanged: the logits are sum_s p[q, s] e_{label at s}."""
    model = Model(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        d = TINY.d_model
        model.label_emb[:, :4] = E
        w = model.blocks[0].attn.w_qkv
        w[d - 1, 0] = sharpness  # W_Q: the query's position slot (pair index N = 2, the last of P = 3) ...
        w[0, d] = 1.0  # W_K: ... meets a token's label-0 dimension
        w[:, 2 * d:] = torch.eye(d)  # W_V = I
        model.w1[:4, :4] = E
        model.b1.fill_(10.0)  # keeps the ReLU linear: relu(h + 10) - 10 = h
        model.w2[:4, :4] = E
        model.b2.fill_(-10.0)
    return model


def hand_batch(labels: list[tuple[int, int]], tasks: list[int] | None = None) -> Batch:
    """Sequences with the given context labels, items with no content and the query's label as target 0."""
    B = len(labels)
    return Batch(items=torch.zeros(B, 3, 4), labels=torch.tensor(labels), target=torch.zeros(B, dtype=torch.long),
                 task=torch.tensor(tasks if tasks else [0] * B), classes=torch.zeros(B, 3, dtype=torch.long),
                 positions=torch.arange(3).expand(B, 3))


def test_hand_model_reads_the_label_tokens():
    """Uniform attention: the query's logits are the mean of the label embeddings over the 5 tokens."""
    logits = hand_model()(hand_batch([(0, 1), (2, 3)]))[:, 0]
    assert torch.allclose(logits, torch.stack([E[0] + E[1], E[2] + E[3]]) / 5, atol=1e-6)


def test_value_patch_on_a_label_edge_changes_what_the_query_reads():
    """Value patching the query -> label 0 edge replaces exactly label 0's share (1/5) of the logits: zero
    removes it, other swaps in the other sequence's label 0, batch_mean the mean label 0. The edge to an
    item, which carries nothing the classifier reads, changes nothing."""
    model, batch = hand_model(), hand_batch([(0, 1), (2, 3)])
    expected = {"zero": torch.stack([E[1], E[3]]) / 5,
                "other": torch.stack([E[2] + E[1], E[0] + E[3]]) / 5,
                "batch_mean": torch.stack([(E[0] + E[2]) / 2 + E[1], (E[0] + E[2]) / 2 + E[3]]) / 5}
    for source, want in expected.items():
        assert torch.allclose(patched_logits(model, batch, 1, [(Q, 1)], "value", source), want, atol=1e-6)
    clean = model(batch)[:, 0]
    for source in SOURCES:
        assert torch.allclose(patched_logits(model, batch, 1, [(Q, 0)], "value", source), clean, atol=1e-6)


def test_pattern_patch_follows_the_other_sequences_attention():
    """The sharp query attends to whichever label token is label 0: at position 1 in the first sequence,
    3 in the second. Given the other's pattern, each query reads label 1 instead, and predicts it. Where all
    sequences attend alike (uniform attention), patterns from another sequence change nothing."""
    model, batch = hand_model(sharpness=30.0), hand_batch([(0, 1), (1, 0)])
    assert model(batch)[:, 0].argmax(-1).tolist() == [0, 0]
    logits = patched_logits(model, batch, 1, row_edges([Q], 2), "pattern", "other")
    assert logits.argmax(-1).tolist() == [1, 1]
    p = attention_weights(model, batch)[0][:, 0, Q]  # [B, S], the clean query rows
    tokens = model.embed(batch)[..., :4]  # [B, S, 4]
    assert torch.allclose(logits, torch.einsum("bs,bsc->bc", p.roll(1, 0), tokens), atol=1e-5)
    assert patched_accuracy(model, batch, 1, row_edges([Q], 2), "pattern", "other") == 0.0
    uniform = hand_model()
    assert torch.allclose(patched_logits(uniform, batch, 1, row_edges([Q], 2), "pattern", "other"),
                          uniform(batch)[:, 0], atol=1e-6)


@pytest.fixture(scope="module")
def model_and_batch():
    """A default-size model with sharper attention than at init (so that patches visibly change the output)."""
    torch.manual_seed(0)
    cfg = Config()
    model = Model(cfg)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.w_qkv.mul_(3)
    batch = sample(make_instance(cfg), cfg, 64, torch.Generator().manual_seed(1))
    assert set(batch.task.tolist()) == {0, 1, 2}
    return model, batch


def causal(num_seq: int = 4) -> torch.Tensor:
    return row_edges(range(2 * num_seq + 1), num_seq)


def test_no_intervention_leaves_the_logits_exactly_unchanged(model_and_batch):
    """Building and running patched copies leaves the model's own forward bit for bit as it was, and a copy
    whose patch is removed computes exactly the model's logits again (the default path is untouched)."""
    model, batch = model_and_batch
    with torch.no_grad():
        before = model(batch)
        m = patched(model, batch, 2, causal(), "value", "batch_mean")
        assert not torch.equal(m(batch), before)
        assert all(b.attn.patch is None for b in model.blocks)
        assert torch.equal(model(batch), before)
        m.blocks[1].attn.patch = None
        assert torch.equal(m(batch), before)


@pytest.mark.parametrize("kind", ["pattern", "value"])
@pytest.mark.parametrize("layer", [1, 2])
def test_sources_over_identical_sequences_change_nothing(model_and_batch, kind, layer):
    """A batch of one sequence repeated: its mean, its task's mean and 'another' sequence are the sequence
    itself, so patching every causal cell of a layer with them is a no-op."""
    model, batch = model_and_batch
    same = Batch(*(t[:1].expand(8, *t.shape[1:]) for t in (batch.items, batch.labels, batch.target)),
                 torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
                 *(t[:1].expand(8, *t.shape[1:]) for t in (batch.classes, batch.positions)))
    with torch.no_grad():
        clean = model(same)[:, -1]
    for source in ("batch_mean", "task_mean", "other"):
        assert torch.allclose(patched_logits(model, same, layer, causal(), kind, source), clean, atol=1e-5)


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("source", ["batch_mean", "task_mean", "other", "zero"])
def test_pattern_sources_are_those_of_a_clean_pass(model_and_batch, layer, source):
    """The patched layer's weights are the clean weights with the edges taken from the source, computed by
    hand from a separate clean pass (two passes); the layers below are unchanged."""
    model, batch = model_and_batch
    clean = attention_weights(model, batch)
    p = clean[layer - 1]
    if source == "batch_mean":
        ref = p.mean(0, keepdim=True).expand_as(p)
    elif source == "task_mean":
        ref = torch.stack([p[batch.task == t].mean(0) for t in batch.task.tolist()])
    elif source == "other":
        ref = p[(torch.arange(len(batch)) - 1) % len(batch)]
    else:
        ref = torch.zeros_like(p)
    edges = pattern_cells("label_attention", 4) | row_edges([1, 6], 4)
    got = attention_weights(patched(model, batch, layer, edges, "pattern", source), batch)
    assert torch.allclose(got[layer - 1], torch.where(edges, ref, p), atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(got[:layer - 1], clean[:layer - 1]))


@pytest.mark.parametrize("layer, row", [(1, 3), (1, 8), (2, 8)])
def test_zeroing_a_rows_values_or_weights_is_zero_ablation(model_and_batch, layer, row):
    """Value patching with zeros on every edge of a row, or zeroing its weights, equals zero-ablating the
    row's attention output (a post-softmax gate of 0 on that row, surgery's renormalise=False)."""
    model, batch = model_and_batch
    ablated = copy.deepcopy(model)
    gate = torch.ones(2, 9, 9)
    gate[layer - 1, row] = 0
    ablated.gate = gate
    with torch.no_grad():
        want = ablated(batch)[:, -1]
        assert not torch.allclose(want, model(batch)[:, -1], atol=1e-3)
    for kind in ("value", "pattern"):
        assert torch.allclose(patched_logits(model, batch, layer, row_edges([row], 4), kind, "zero"), want, atol=1e-5)


@pytest.mark.parametrize("pattern", ["bigram", "label_attention", "chunk_example"])
def test_zero_pattern_on_a_circuit_pattern_is_surgerys_zero_ablation(model_and_batch, pattern):
    model, batch = model_and_batch
    with torch.no_grad():
        want = edited(model, [Edit(1, pattern, "remove")], renormalise=False)(batch)[:, -1]
    got = patched_logits(model, batch, 1, pattern_cells(pattern, 4), "pattern", "zero")
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kind", ["pattern", "value"])
def test_patched_last_layer_fast_path_matches_full(model_and_batch, kind):
    """A patched last layer computes every row (its values are needed) and keeps the readout rows: the same
    logits as the full computation, and weights for the query row only."""
    model, batch = model_and_batch
    m = patched(model, batch, 2, row_edges([8], 4), kind, "other")
    with torch.no_grad():
        fast, attns = m(batch, return_attn=True)
        assert torch.allclose(fast, m(batch, full=True), atol=1e-5)
    assert attns[1].shape == (64, 1, 1, 9)
    assert not torch.allclose(fast, model(batch), atol=1e-3)


def test_task_mean_of_a_one_task_batch_is_the_batch_mean(model_and_batch):
    model, batch = model_and_batch
    one = batch.slice(0, 16)
    one = Batch(one.items, one.labels, one.target, torch.ones_like(one.task), one.classes, one.positions)
    for kind in ("pattern", "value"):
        a = patched_logits(model, one, 1, causal(), kind, "task_mean")
        b = patched_logits(model, one, 1, causal(), kind, "batch_mean")
        assert torch.allclose(a, b, atol=1e-5)


def test_accuracy_is_a_fraction(model_and_batch):
    model, batch = model_and_batch
    for kind in ("pattern", "value"):
        for source in SOURCES:
            assert 0.0 <= patched_accuracy(model, batch, 2, [(8, 7), (8, 5)], kind, source) <= 1.0


def test_edges_from_pairs_or_matrix():
    cells = as_edges([(8, 7), (3, 2)], 4)
    assert sorted(map(tuple, cells.nonzero().tolist())) == [(3, 2), (8, 7)]
    assert torch.equal(as_edges(cells, 4), cells)
    assert torch.equal(row_edges([2], 4)[2], torch.tensor([True] * 3 + [False] * 6))


def test_bad_inputs_are_rejected_before_any_work(model_and_batch, monkeypatch):
    """Each bad argument raises ValueError naming it and what it may be, before the model is copied."""
    model, batch = model_and_batch

    def no_copy(*_):
        raise AssertionError("copied the model before checking the arguments")

    monkeypatch.setattr(patching.copy, "deepcopy", no_copy)
    good = dict(layer=1, edges=[(8, 7)], kind="value", source="zero")
    bad = [(dict(layer=0), r"layer must be in 1\.\.2"), (dict(layer=3), r"layer must be in 1\.\.2"),
           (dict(kind="weights"), r"kind must be one of \('pattern', 'value'\)"),
           (dict(source="mean"), "source must be one of"),
           (dict(edges=[]), "edges must name at least one"),
           (dict(edges=torch.zeros(9, 9, dtype=torch.bool)), "edges must name at least one"),
           (dict(edges=torch.ones(5, 5, dtype=torch.bool)), r"edges must be a boolean \[S, S\] matrix with S = .* 9"),
           (dict(edges=torch.ones(9, 9)), "edges must be a boolean"),
           (dict(edges=[(9, 0)]), r"edges must be \(row, column\) pairs of positions in 0\.\.8"),
           (dict(edges=[(8,)]), r"edges must be \(row, column\) pairs"),
           (dict(edges=[(3, 5)]), r"edges must be causal \(column <= row\), got \[\(3, 5\)\]")]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            patched(model, batch, **{**good, **change})
        with pytest.raises(ValueError, match=message):
            patched_accuracy(model, batch, **{**good, **change})
    with pytest.raises(ValueError, match="batch must hold at least 2 sequences for source='other', got 1"):
        patched(model, batch.slice(0, 1), 1, [(8, 7)], "pattern", "other")
    with pytest.raises(ValueError, match=r"rows must be positions in 0\.\.8"):
        row_edges([9], 4)
    with pytest.raises(ValueError, match="source must be one of"):
        source_of("mean", batch.task, 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        Patch(torch.ones(9, 9, dtype=torch.bool), "weights", torch.zeros_like)


# ---- per-task and per-pair metrics (probes) ---------------------------------------------------------------

def test_task_metrics_weighted_by_task_counts_give_the_batch_metrics(model_and_batch):
    model, batch = model_and_batch
    weights = torch.bincount(batch.task, minlength=3).float() / len(batch)
    for p, mean_map in zip(attention_weights(model, batch), attention_maps(model, batch)):
        per_task = task_metrics(p, batch.task, 3)
        for name, want in circuit_metrics(mean_map).items():
            assert per_task[name].shape == (3, 1)
            assert torch.allclose((weights[:, None] * per_task[name]).sum(0), want, atol=1e-6)


def test_task_metrics_by_hand():
    """Three sequences, tasks (0, 0, 2): task 0 is the mean of the first two, task 1 was never drawn (NaN)."""
    p = torch.zeros(3, 5, 5)
    p[:, Q, Q] = torch.tensor([0.2, 0.4, 1.0])
    p[:, Q, 1] = torch.tensor([0.8, 0.6, 0.0])
    p[:, 3, 2] = torch.tensor([1.0, 0.0, 0.5])
    m = task_metrics(p, torch.tensor([0, 0, 2]), 3)
    assert torch.allclose(m["bigram"][[0, 2]], torch.tensor([0.3, 1.0]))
    assert torch.allclose(m["label_attention"][[0, 2]], torch.tensor([0.7, 0.0]))
    assert torch.allclose(m["chunk_example"][[0, 2]], torch.tensor([0.25, 0.25]))
    assert all(v[1].isnan() for v in m.values())
    assert torch.equal(task_means(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([1, 1, 0]), 2),
                       torch.tensor([[5.0], [2.0]]))


def test_chunk_pairs_average_to_chunk_example(model_and_batch):
    model, batch = model_and_batch
    for p in attention_weights(model, batch):
        pairs = chunk_pairs(p)
        assert pairs.shape == (64, 1, 4)
        assert torch.allclose(pairs.mean(-1), circuit_metrics(p)["chunk_example"], atol=1e-6)
        assert torch.equal(pairs[..., 2], p[..., 5, 4])


def test_own_item_top_by_hand():
    """Label 0 (row 1) sees item 0 and itself; label 1 (row 3) sees positions 0..3, its item is 2."""
    p = torch.zeros(4, 5, 5)
    p[0, 1, :2], p[0, 3, :4] = torch.tensor([0.6, 0.4]), torch.tensor([0.1, 0.1, 0.7, 0.1])  # both chunk
    p[1, 1, :2], p[1, 3, :4] = torch.tensor([0.5, 0.5]), torch.tensor([0.4, 0.0, 0.3, 0.3])  # a tie; item 0 wins
    p[2, 1, :2], p[2, 3, :4] = torch.tensor([0.3, 0.7]), torch.tensor([0.0, 0.0, 0.4, 0.6])  # each on itself
    p[3, 1, :2], p[3, 3, :4] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.45, 0.55, 0.0])
    top = own_item_top(p)
    assert top.tolist() == [[True, True], [False, False], [False, False], [True, True]]
    assert own_item_top(p).float().mean(0).tolist() == [0.5, 0.5]
    p[3, 3, 4] = 0.9  # the query, after label 1, does not count
    assert own_item_top(p)[3].tolist() == [True, True]
