"""The sampler and the problem instance (Methods §Task)."""

import pytest
import torch

from icl_meta import Config, make_instance, sample
from icl_meta.task import KINDS, generator, zipf


def in_context(batch, num_seq):
    """Bool [n]: the query class is one of the context classes."""
    return (batch.classes[:, :num_seq] == batch.classes[:, num_seq:]).any(1)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes(kind, gen):
    """Every field of a batch has the documented shape and dtype."""
    cfg = Config()
    b = sample(make_instance(cfg), cfg, 16, gen, kind)
    assert b.items.shape == (16, 5, 63) and b.items.dtype == torch.float32
    for t, shape in ((b.labels, (16, 4)), (b.target, (16,)), (b.task, (16,)), (b.classes, (16, 5)),
                     (b.positions, (16, 5))):
        assert t.shape == shape and t.dtype == torch.long
    assert len(b) == 16 and len(b.slice(2, 7)) == 5


def test_unknown_kind_raises(gen):
    """An unknown sequence kind is rejected by name."""
    cfg = Config()
    with pytest.raises(ValueError, match="kind"):
        sample(make_instance(cfg), cfg, 4, gen, "nonsense")


def test_context_classes_distinct_at_b1(gen):
    """With B=1 the N context classes of a sequence are distinct."""
    cfg = Config()
    ctx = sample(make_instance(cfg), cfg, 2000, gen).classes[:, :4].sort(1).values
    assert (ctx[:, 1:] != ctx[:, :-1]).all()


def test_each_context_class_shown_b_times(gen):
    """With B=2, N=4 the context holds two distinct classes, each exactly twice."""
    cfg = Config(burstiness=2)
    ctx = sample(make_instance(cfg), cfg, 2000, gen).classes[:, :4].sort(1).values
    assert (ctx[:, 0] == ctx[:, 1]).all() and (ctx[:, 2] == ctx[:, 3]).all() and (ctx[:, 1] != ctx[:, 2]).all()


@pytest.mark.parametrize("burstiness", [1, 2])
def test_query_absent_at_p_bursty_0(burstiness, gen):
    """query_rule='absent', p_B=0: the query class never appears in the context."""
    cfg = Config(burstiness=burstiness, p_bursty=0.0)
    assert not in_context(sample(make_instance(cfg), cfg, 4000, gen), 4).any()


@pytest.mark.parametrize("burstiness", [1, 2])
def test_query_present_at_p_bursty_1(burstiness, gen):
    """p_B=1: the query class is always one of the context classes."""
    cfg = Config(burstiness=burstiness, p_bursty=1.0)
    assert in_context(sample(make_instance(cfg), cfg, 4000, gen), 4).all()


def test_query_in_context_fraction_is_p_bursty(gen):
    """p_B=0.5: the query class is in the context in about half of the sequences."""
    cfg = Config(p_bursty=0.5)
    frac = in_context(sample(make_instance(cfg), cfg, 4000, gen), 4).float().mean().item()
    assert abs(frac - 0.5) < 0.03


def test_uniform_query_rule_hits_context_n_over_k(gen):
    """query_rule='uniform' (authors' code): the query is in the context with probability N/K = 1/16."""
    cfg = Config(query_rule="uniform")
    frac = in_context(sample(make_instance(cfg), cfg, 20000, gen), 4).float().mean().item()
    assert abs(frac - 4 / 64) < 0.01


@pytest.mark.parametrize("kind", ["train", "random_label", "in_weights"])
def test_target_is_table_of_task_and_query(kind, gen):
    """target = f[task, query class] for every kind drawn from the run's classes."""
    cfg = Config()
    inst = make_instance(cfg)
    b = sample(inst, cfg, 1000, gen, kind)
    assert torch.equal(b.target, inst.table[b.task, b.classes[:, 4]])


def test_labels_are_table_of_task_and_context(gen):
    """Training context labels are f[task, context class]."""
    cfg = Config()
    inst = make_instance(cfg)
    b = sample(inst, cfg, 1000, gen)
    assert torch.equal(b.labels, inst.table[b.task[:, None], b.classes[:, :4]])


def test_items_have_unit_mean_squared_norm(gen):
    """x = (μ + εη)/sqrt(1+ε²) with μ, η ~ N(0, I/D) has E|x|² = 1 (checked at ε=1, where a missing
    normalisation would give 2)."""
    cfg = Config(num_classes=1024, eps=1.0)
    b = sample(make_instance(cfg), cfg, 4000, gen)
    assert abs(b.items.pow(2).sum(-1).mean().item() - 1.0) < 0.03


@pytest.mark.parametrize("eps", [0.05, 0.2, 1.0])
def test_item_noise_scales_with_eps(eps, gen):
    """x - μ/sqrt(1+ε²) = εη/sqrt(1+ε²), whose mean squared norm is ε²/(1+ε²)."""
    cfg = Config(eps=eps)
    inst = make_instance(cfg)
    b = sample(inst, cfg, 500, gen)
    resid = b.items - inst.means[b.classes] / (1 + eps**2) ** 0.5
    expected = eps**2 / (1 + eps**2)
    assert resid.pow(2).sum(-1).mean().item() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("beta, expected", [(0.0, [1 / 3, 1 / 3, 1 / 3]), (1.0, [6 / 11, 3 / 11, 2 / 11])])
def test_task_frequencies_follow_zipf_beta(beta, expected, gen):
    """Tasks are uniform at β=0 and Zipf(1) at β=1 (task 0 most frequent)."""
    cfg = Config(beta=beta)
    task = sample(make_instance(cfg), cfg, 6000, gen).task
    freq = torch.bincount(task, minlength=3).double() / 6000
    assert torch.allclose(freq, torch.tensor(expected, dtype=torch.float64), atol=0.02)


def test_single_context_class_follows_zipf_alpha(gen):
    """With one context pair and α=1, the context class is distributed as Zipf(1) over the K classes."""
    cfg = Config(num_seq=1, alpha=1.0)
    ctx = sample(make_instance(cfg), cfg, 20000, gen).classes[:, 0]
    freq = torch.bincount(ctx, minlength=64).double() / 20000
    assert torch.allclose(freq[:8], zipf(64, 1.0).double()[:8], atol=0.015)


def test_query_class_is_zipf_restricted_to_absent_classes(gen):
    """K=3, N=1, α=1: P(query=j | context=i) = p_j / (1 - p_i) for j != i."""
    cfg = Config(num_classes=3, num_seq=1, alpha=1.0)
    cls = sample(make_instance(cfg), cfg, 20000, gen).classes
    p = zipf(3, 1.0).double()
    for i in range(3):
        q = cls[cls[:, 0] == i, 1]
        freq = torch.bincount(q, minlength=3).double() / len(q)
        expected = torch.where(torch.arange(3) == i, 0.0, p / (1 - p[i]))
        assert torch.allclose(freq, expected, atol=0.02)


def test_context_classes_zipf_ordered_at_alpha_1(gen):
    """α=1, N=4: class 0 is the most frequent context class and frequency falls with the class index."""
    cfg = Config(alpha=1.0)
    ctx = sample(make_instance(cfg), cfg, 5000, gen).classes[:, :4]
    counts = torch.bincount(ctx.flatten(), minlength=64)
    assert counts.argmax() == 0
    assert counts[0] > counts[1] > counts[4] > counts[16] > counts[63]


def test_default_positions_are_pair_indices(gen):
    """Without random_offset the positions are 0..N (query at N)."""
    cfg = Config()
    b = sample(make_instance(cfg), cfg, 8, gen)
    assert torch.equal(b.positions, torch.arange(5).expand(8, 5))


def test_random_offset_positions_consecutive_in_window(gen):
    """random_offset: positions are consecutive, inside [0, P), and every feasible offset occurs."""
    cfg = Config(pos_dim=8, random_offset=True)
    pos = sample(make_instance(cfg), cfg, 2000, gen).positions
    assert (pos.diff(dim=1) == 1).all()
    assert pos.min() >= 0 and pos.max() < 8
    assert set(pos[:, 0].tolist()) == {0, 1, 2, 3}


def test_random_label_permutes_true_labels(gen):
    """'random_label': each row's labels are a permutation of f[task, context], and usually not the identity."""
    cfg = Config()
    inst = make_instance(cfg)
    b = sample(inst, cfg, 1000, gen, "random_label")
    true = inst.table[b.task[:, None], b.classes[:, :4]]
    assert torch.equal(b.labels.sort(1).values, true.sort(1).values)
    assert (b.labels != true).any(1).float().mean() > 0.5


def test_in_weights_labels_uniform(gen):
    """'in_weights': context labels are uniform over L and unrelated to the true labels."""
    cfg = Config()
    inst = make_instance(cfg)
    b = sample(inst, cfg, 4000, gen, "in_weights")
    freq = torch.bincount(b.labels.flatten(), minlength=32).double() / b.labels.numel()
    assert torch.allclose(freq, torch.full((32,), 1 / 32, dtype=torch.float64), atol=0.01)
    true = inst.table[b.task[:, None], b.classes[:, :4]]
    assert (b.labels == true).float().mean() < 0.1


def test_copy_query_matches_a_context_item_with_the_target(gen):
    """'copy': classes are -1, labels are distinct, and the context item nearest the query carries the target."""
    cfg = Config()
    b = sample(make_instance(cfg), cfg, 1000, gen, "copy")
    assert (b.classes == -1).all()
    lab = b.labels.sort(1).values
    assert (lab[:, 1:] != lab[:, :-1]).all()
    nearest = (b.items[:, :4] - b.items[:, 4:]).pow(2).sum(-1).argmin(1)
    assert torch.equal(b.labels.gather(1, nearest[:, None])[:, 0], b.target)


def test_same_seed_same_batch():
    """The same generator seed reproduces every field; another seed does not."""
    cfg = Config(p_bursty=0.3, random_offset=True)
    inst = make_instance(cfg)
    a, b, c = (sample(inst, cfg, 64, generator(s)) for s in (7, 7, 8))
    for field in ("items", "labels", "target", "task", "classes", "positions"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.items, c.items)


def test_make_instance_seeded_with_right_scale():
    """The instance depends only on its seed; μ has variance 1/D and labels lie in 0..L-1."""
    cfg = Config(num_classes=1024)
    a, b, c = make_instance(cfg, seed=1), make_instance(cfg, seed=1), make_instance(cfg, seed=2)
    assert torch.equal(a.means, b.means) and torch.equal(a.table, b.table)
    assert not torch.equal(a.means, c.means)
    assert a.means.shape == (1024, 63) and a.table.shape == (3, 1024)
    assert a.means.var().item() == pytest.approx(1 / 63, rel=0.03)
    assert a.table.min() >= 0 and a.table.max() == 31


@pytest.mark.parametrize("k", [8, 16, 32])
def test_scc_theory_table_bijective_and_disjoint(k):
    """label_table='scc_theory': each task's row is a permutation of 0..K-1 and f[0,k] != f[1,k] for all k."""
    inst = make_instance(Config(num_tasks=2, num_classes=k, num_labels=k, label_table="scc_theory"))
    for row in inst.table:
        assert torch.equal(row.sort().values, torch.arange(k))
    assert (inst.table[0] != inst.table[1]).all()
