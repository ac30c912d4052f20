"""The network (Methods §Model), its fast query-only path, attention weights and circuit masks (Methods §Metrics)."""

import pytest
import torch
import torch.nn.functional as F

from icl_meta import Config, Model, loss_and_correct, make_instance, mask_matrix, sample

N, S = 4, 9
LABEL_POS = [1, 3, 5, 7]


def batch_for(cfg, gen, n=8):
    """n training sequences of cfg's default instance."""
    return sample(make_instance(cfg), cfg, n, gen)


def reference_logits(model, batch):
    """Methods §Model written out: [x; one-hot(pos)] and label tokens, h += softmax(QK^T + causal) V per head
    (unscaled, no W_O, no LayerNorm), then Linear+ReLU+Linear at the query."""
    cfg = model.cfg
    items = torch.cat([batch.items, F.one_hot(batch.positions, cfg.pos_dim).float()], -1)
    labels = model.label_emb[batch.labels]
    h = torch.stack([items[:, :N], labels], 2).flatten(1, 2)
    h = torch.cat([h, items[:, N:]], 1)
    H, dh = cfg.n_heads, cfg.d_model // cfg.n_heads
    causal = torch.ones(S, S).tril().bool()
    for block in model.blocks:
        q, k, v = (t.unflatten(-1, (H, dh)).transpose(1, 2) for t in (h @ block.attn.w_qkv).split(cfg.d_model, -1))
        att = torch.softmax((q @ k.transpose(-1, -2)).masked_fill(~causal, float("-inf")), -1)
        h = h + (att @ v).transpose(1, 2).flatten(2)
    return torch.relu(h[:, -1] @ model.w1 + model.b1) @ model.w2 + model.b2


@pytest.mark.parametrize("n_heads", [1, 4])
def test_forward_matches_reference(n_heads, gen):
    """The default model computes exactly the architecture of Methods §Model."""
    cfg = Config(n_heads=n_heads)
    model = Model(cfg)
    batch = batch_for(cfg, gen)
    with torch.no_grad():
        assert torch.allclose(model(batch)[:, 0], reference_logits(model, batch), atol=1e-5)


def test_logits_shapes(gen):
    """Logits are [B, 1, L] at the query and [B, N+1, L] with the all-labels readout."""
    cfg = Config()
    batch = batch_for(cfg, gen)
    with torch.no_grad():
        assert Model(cfg)(batch).shape == (8, 1, 32)
        assert Model(cfg.replace(readout="all_labels"))(batch).shape == (8, N + 1, 32)


VARIANTS = [{}, {"n_heads": 2}, {"n_heads": 4}, {"block": "standard"}, {"w_o": True},
            {"masks": ("bigram", "label_attention")}, {"masks": ("chunk_example", "label_attention")},
            {"readout": "all_labels"}, {"n_layers": 1}, {"n_layers": 3}, {"random_offset": True}]


@pytest.mark.parametrize("changes", VARIANTS)
def test_fast_path_matches_full(changes, gen):
    """The query-only last layer (full=False) gives the same logits as the full computation, fused or not."""
    cfg = Config(**changes)
    model = Model(cfg)
    batch = batch_for(cfg, gen)
    with torch.no_grad():
        fast = model(batch)
        full = model(batch, full=True)
        full_weights, _ = model(batch, full=True, return_attn=True)
        fast_weights, _ = model(batch, return_attn=True)
    for other in (full, full_weights, fast_weights):
        assert torch.allclose(fast, other, atol=1e-5)


@pytest.mark.parametrize("changes", [{}, {"n_heads": 2}, {"block": "standard"}])
def test_attention_weights_are_causal_distributions(changes, gen):
    """Full attention weights are [B, H, S, S] per layer, rows sum to 1 and nothing lies above the diagonal."""
    cfg = Config(**changes)
    with torch.no_grad():
        _, attns = Model(cfg)(batch_for(cfg, gen), full=True, return_attn=True)
    assert len(attns) == 2
    for a in attns:
        assert a.shape == (8, cfg.n_heads, S, S)
        assert torch.allclose(a.sum(-1), torch.ones(8, cfg.n_heads, S))
        assert (a.triu(1) == 0).all()
        assert (a.tril() > 0).sum() == 8 * cfg.n_heads * S * (S + 1) // 2


def test_fast_path_attention_is_query_row_of_full(gen):
    """With full=False the last layer returns only the query row [B, H, 1, S], equal to the full map's."""
    cfg = Config(n_heads=2)
    model = Model(cfg)
    batch = batch_for(cfg, gen)
    with torch.no_grad():
        _, fast = model(batch, return_attn=True)
        _, full = model(batch, full=True, return_attn=True)
    assert fast[1].shape == (8, 2, 1, S)
    assert torch.allclose(fast[1], full[1][:, :, -1:], atol=1e-6)
    assert torch.allclose(fast[0], full[0], atol=1e-6)


def assert_causal_rows(a, rows):
    """Rows of a [B, H, S, S] are strictly positive up to the diagonal and zero after it."""
    for i in rows:
        assert (a[..., i, : i + 1] > 0).all() and (a[..., i, i + 1:] == 0).all()


def test_bigram_and_label_attention_masks(gen):
    """masks=(bigram, label_attention): L1 query attends only to itself, L2 query only to label tokens."""
    cfg = Config(masks=("bigram", "label_attention"))
    with torch.no_grad():
        _, (a1, a2) = Model(cfg)(batch_for(cfg, gen), full=True, return_attn=True)
    assert torch.allclose(a1[..., 8, 8], torch.ones(8, 1))
    assert torch.allclose(a2[..., 8, LABEL_POS].sum(-1), torch.ones(8, 1))
    assert (a2[..., 8, LABEL_POS] > 0).all()
    assert_causal_rows(a1, range(8))
    assert_causal_rows(a2, range(8))


def test_chunk_example_mask(gen):
    """masks=(chunk_example, none): every label row attends only to its own item; other rows stay causal."""
    cfg = Config(masks=("chunk_example", "none"))
    with torch.no_grad():
        _, (a1, a2) = Model(cfg)(batch_for(cfg, gen), full=True, return_attn=True)
    for k in range(N):
        assert torch.allclose(a1[..., 2 * k + 1, 2 * k], torch.ones(8, 1))
    assert_causal_rows(a1, [0, 2, 4, 6, 8])
    assert_causal_rows(a2, range(S))


def test_mask_matrix_by_hand():
    """mask_matrix for N=1 (S=3) and the N=2 label-attention query row, checked by hand."""
    causal = [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    expected = {"none": causal, "bigram": [[1, 0, 0], [1, 1, 0], [0, 0, 1]],
                "label_attention": [[1, 0, 0], [1, 1, 0], [0, 1, 0]],
                "chunk_example": [[1, 0, 0], [1, 0, 0], [1, 1, 1]]}
    for name, m in expected.items():
        assert torch.equal(mask_matrix(name, 1), torch.tensor(m, dtype=torch.bool)), name
    two = mask_matrix("label_attention", 2)
    assert two[4].tolist() == [False, True, False, True, False]
    assert torch.equal(two[:4], torch.ones(4, 5).tril().bool()[:4])
    chunk = mask_matrix("chunk_example", 2)
    assert chunk[3].tolist() == [False, False, True, False, False]
    with pytest.raises(ValueError, match="mask"):
        mask_matrix("induction", 2)


def test_init_seed_determines_parameters():
    """Same init seed: identical parameters (whatever the run seed); another init seed: different ones."""
    a = Model(Config(seed=1, init_seed=5)).state_dict()
    b = Model(Config(seed=2, init_seed=5)).state_dict()
    c = Model(Config(seed=1, init_seed=6)).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.w_qkv"], c["blocks.0.attn.w_qkv"])


def test_default_parameter_count_and_init_scale():
    """Default model: 2 x W_QKV (128x384), label embeddings 32x128, MLP 128x128+128 and 128x32+32; W ~ N(0, 1/128)."""
    model = Model(Config())
    expected = 2 * 128 * 384 + 32 * 128 + 128 * 128 + 128 + 128 * 32 + 32
    assert sum(p.numel() for p in model.parameters()) == expected == 123040
    w = torch.cat([b.attn.w_qkv.flatten() for b in model.blocks])
    assert w.std().item() == pytest.approx(128**-0.5, rel=0.03)
    assert all(b.attn.w_o is None for b in model.blocks)


def test_torch_linear_classifier_init():
    """classifier_init="torch_linear": classifier weights and biases U(±1/sqrt(fan_in)) as nn.Linear draws them,
    the attention layers and label embeddings exactly as under the default."""
    normal, torch_linear = Model(Config()), Model(Config(classifier_init="torch_linear"))
    for name, fan_in in (("w1", 128), ("b1", 128), ("w2", 128), ("b2", 128)):
        p = getattr(torch_linear, name).detach()
        assert p.abs().max() <= fan_in**-0.5 and p.abs().max() > 0.9 * fan_in**-0.5
        assert p.std().item() == pytest.approx((3 * fan_in) ** -0.5, rel=0.2)
    assert not normal.b1.any() and not normal.b2.any()
    for name in ("label_emb", "blocks.0.attn.w_qkv", "blocks.1.attn.w_qkv"):
        assert torch.equal(normal.state_dict()[name], torch_linear.state_dict()[name])


def test_loss_and_correct_at_query(gen):
    """loss_and_correct: cross-entropy of the query logits and argmax == target."""
    cfg = Config()
    model = Model(cfg)
    batch = batch_for(cfg, gen, 32)
    loss, correct = loss_and_correct(model, batch)
    logits = model(batch)[:, 0]
    assert loss.item() == pytest.approx(F.cross_entropy(logits, batch.target).item(), rel=1e-6)
    assert torch.equal(correct, logits.argmax(-1) == batch.target)


def test_loss_all_labels_covers_every_label(gen):
    """readout='all_labels': the loss averages every item's prediction of the label after it, query included."""
    cfg = Config(readout="all_labels")
    model = Model(cfg)
    batch = batch_for(cfg, gen, 32)
    loss, correct = loss_and_correct(model, batch)
    logits = model(batch)
    targets = torch.cat([batch.labels, batch.target[:, None]], 1)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item(), rel=1e-6)
    assert torch.equal(correct, logits[:, -1].argmax(-1) == batch.target)
