"""Circuit metrics (paper Table 2) and the phase-boundary rules (paper §4.1)."""

import numpy as np
import pytest
import torch

from icl_meta import (Config, Model, attention_maps, circuit_metrics, make_instance, paper_boundaries, phase_report,
                      phases, robust_boundaries, sample)
from icl_meta.probes import (delta_acc, matching_label_weight, metric_column, metric_columns, parse_metric_column,
                             plateaus)
from icl_meta.task import generator


def hand_map() -> torch.Tensor:
    """An N=2 (S=5) map: query row puts 0.2 on itself and 0.3 + 0.2 on the labels; label rows put 0.8 and
    0.4 on their own items."""
    p = torch.eye(5)
    p[1] = torch.tensor([0.8, 0.2, 0, 0, 0])
    p[3] = torch.tensor([0.1, 0.2, 0.4, 0.3, 0])
    p[4] = torch.tensor([0.1, 0.3, 0.2, 0.2, 0.2])
    return p


def test_circuit_metrics_on_identity():
    """Pure self-attention: Bigram 1, Label Attention 0, Chunk Example 0."""
    m = circuit_metrics(torch.eye(5))
    assert (m["bigram"].item(), m["label_attention"].item(), m["chunk_example"].item()) == (1.0, 0.0, 0.0)


def test_circuit_metrics_on_hand_built_map():
    """Bigram = p[q,q], Label Attention = sum of the query row over labels, Chunk Example = mean label->own item."""
    m = circuit_metrics(hand_map())
    assert m["bigram"].item() == pytest.approx(0.2)
    assert m["label_attention"].item() == pytest.approx(0.5)
    assert m["chunk_example"].item() == pytest.approx(0.6)


def test_metric_columns_per_layer_and_head():
    """Columns are named L{layer}H{head}_{metric}, 1-based, with each head's own values."""
    maps = [torch.stack([torch.eye(5), hand_map()]), torch.stack([hand_map(), torch.eye(5)])]
    cols = metric_columns(maps)
    assert len(cols) == 2 * 2 * 3
    assert cols["L1H1_bigram"] == 1.0 and cols["L1H2_label_attention"] == pytest.approx(0.5)
    assert cols["L2H1_chunk_example"] == pytest.approx(0.6) and cols["L2H2_chunk_example"] == 0.0


def test_metric_column_names_and_parses_back():
    """One name per (layer, head, metric), 1-based, parsed back to the same triple; other columns parse to None."""
    assert metric_column(1, 2, "label_attention") == "L1H2_label_attention"
    assert parse_metric_column(metric_column(12, 16, "chunk_example")) == (12, 16, "chunk_example")
    for other in ("acc", "loss", "acc_task0", "L1H1_nothing", "L1H1bigram"):
        assert parse_metric_column(other) is None


def test_attention_maps_are_batch_means():
    """attention_maps returns each layer's [H, S, S] weights averaged over the batch."""
    cfg = Config(n_heads=2)
    model = Model(cfg)
    batch = sample(make_instance(cfg), cfg, 16, generator(0))
    maps = attention_maps(model, batch)
    with torch.no_grad():
        _, attns = model(batch, full=True, return_attn=True)
    assert [m.shape for m in maps] == [(2, 9, 9)] * 2
    for m, a in zip(maps, attns):
        assert torch.allclose(m, a.mean(0))


def staircase() -> tuple[np.ndarray, np.ndarray]:
    """Accuracy every 100 steps to 10^5: chance, a sharp rise to 0.35 over 1000-1500, slow rises to 0.78
    over 8000-12000 and to 1.0 over 40000-50000 (abrupt on a log axis, < 0.025 per 100 steps)."""
    steps = np.arange(0, 100_001, 100)
    acc = np.interp(steps, [0, 1000, 1500, 8000, 12000, 40000, 50000, 100_000],
                    [0.03, 0.03, 0.35, 0.35, 0.78, 0.78, 1.0, 1.0])
    return steps, acc


def test_delta_acc():
    """ΔAcc(t) = Acc(t+Δt) - Acc(t) with Δt a multiple of the spacing."""
    steps = np.arange(0, 500, 50)
    acc = steps / 1000
    t, d = delta_acc(steps, acc, dt=100)
    assert np.array_equal(t, steps[:-2]) and np.allclose(d, 0.1)


@pytest.mark.parametrize("steps, dt", [(np.arange(0, 1000, 100), 150), (np.arange(0, 1000, 100), 50),
                                       (np.array([0, 100, 200, 400, 500]), 100), (np.array([0, 0, 100]), 100),
                                       (np.array([300, 200, 100, 0]), 100)])
def test_delta_acc_rejects_bad_spacing(steps, dt):
    """dt not a multiple of the spacing, or a series not increasing evenly, raises ValueError."""
    with pytest.raises(ValueError, match="dt|steps"):
        delta_acc(steps, np.zeros(len(steps)), dt)


def test_paper_boundaries_on_staircase():
    """The paper rule (fixed Δt = 100) finds the sharp rise, as (first t, last t + Δt), but not the slow ones."""
    assert paper_boundaries(*staircase()) == [(1000, 1500)]


def test_robust_boundaries_on_staircase():
    """The log-step rule finds all three rises, each interval covering the true one."""
    found = robust_boundaries(*staircase())
    assert len(found) == 3
    for (a, b), (lo, hi) in zip(found, [(1000, 1500), (8000, 12000), (40000, 50000)]):
        assert a <= lo * 1.3 and b >= hi / 1.3 and b <= hi * 1.6


def test_flat_noisy_curve_has_no_boundaries():
    """Noise of amplitude 0.005 never exceeds the 0.025 threshold under either rule."""
    steps = np.arange(0, 50_001, 100)
    acc = 0.5 + np.random.default_rng(0).uniform(-0.005, 0.005, len(steps))
    assert paper_boundaries(steps, acc) == [] and robust_boundaries(steps, acc) == []


def test_robust_rule_ignores_single_spike():
    """One evaluation spiking by 0.2 late in training is a boundary for the paper rule, not the robust one."""
    steps = np.arange(0, 50_001, 100)
    acc = np.full(len(steps), 0.5)
    acc[200] = 0.7
    assert paper_boundaries(steps, acc) == [(19900, 20000)]
    assert robust_boundaries(steps, acc) == []


@pytest.mark.parametrize("merge_gap, merged", [(1, True), (0, False)])
def test_robust_rule_merges_nearby_runs(merge_gap, merged):
    """Two rises one flat grid point apart are one transition with merge_gap=1 and two with 0."""
    steps = np.arange(0, 100_001, 100)
    grid = np.geomspace(100, 100_000, 31)
    acc = np.interp(steps, [0, grid[10], grid[12], grid[13], grid[15], 100_000], [0.3, 0.3, 0.5, 0.5, 0.7, 0.7])
    found = robust_boundaries(steps, acc, merge_gap=merge_gap)
    assert len(found) == (1 if merged else 2)


def test_robust_rule_on_noisy_staircase():
    """Evaluation noise of ±0.01 changes nothing: the same three transitions."""
    steps, acc = staircase()
    noisy = acc + np.random.default_rng(1).uniform(-0.01, 0.01, len(steps))
    assert len(robust_boundaries(steps, noisy)) == 3


def test_phases_levels_on_staircase():
    """phases(): Phase 0 before the first transition, then one plateau per transition with its level."""
    steps, acc = staircase()
    found = phases(steps, acc, robust_boundaries(steps, acc))
    assert [p.index for p in found] == [0, 1, 2, 3]
    assert [p.level for p in found] == pytest.approx([0.03, 0.35, 0.78, 1.0])


def test_phases_without_transitions_is_one_phase_zero():
    """A run where nothing changes is a single Phase 0."""
    steps = np.arange(0, 1001, 100)
    assert [p.index for p in phases(steps, np.full(len(steps), 0.1), [])] == [0]


def test_phase_report_runs_both_rules():
    """phase_report gives transitions and phases under the names 'paper' and 'robust'."""
    report = phase_report(*staircase())
    assert set(report) == {"paper", "robust"}
    assert report["paper"]["transitions"] == [(1000, 1500)]
    assert len(report["robust"]["phases"]) == 4


def test_matching_label_weight_reads_the_matching_pair():
    """The weight on the label right after the item of the query's class; NaN without a match or for novel classes."""
    row = torch.zeros(3, 9)
    row[:, 1::2] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # labels 1..4 at positions 1, 3, 5, 7
    classes = torch.tensor([[5, 6, 7, 8, 7], [5, 6, 7, 8, 9], [-1, -1, -1, -1, -1]])
    w = matching_label_weight(row, classes)
    assert w[0].item() == pytest.approx(0.3)
    assert torch.isnan(w[1]) and torch.isnan(w[2])


# ---- the plateau rule on synthetic curves with known plateaus

def curve(end: int, base: float, rises: list[tuple[float, float, float]], noise: float = 0.0, seed: int = 0):
    """Accuracy logged every 100 steps up to `end`: `base` plus logistic rises in log10 step, each
    (height, log10 step of its middle, width in decades), plus Gaussian evaluation noise."""
    steps = np.arange(0, end + 1, 100)
    x = np.log10(np.maximum(steps, 100))
    acc = base + sum(h / (1 + np.exp(-(x - c) / w)) for h, c, w in rises)
    return steps, acc + np.random.default_rng(seed).normal(0, noise, steps.size)


def learned(found):
    return [(p.level, p.climbing) for p in found if p.index >= 1]


def test_plateaus_flat_curve_is_one_untrained_plateau():
    steps, acc = curve(100_000, 0.3, [], noise=0.005)
    found = plateaus(steps, acc)
    assert [(p.index, p.climbing) for p in found] == [(0, False)] and found[0].level == pytest.approx(0.3, abs=0.01)


def test_plateaus_creeping_curve_is_one_plateau():
    """0.1 per decade over three decades: level on a log axis, one plateau however far it creeps."""
    steps = np.arange(0, 100_001, 100)
    acc = 0.3 + 0.1 * np.log10(np.maximum(steps, 100) / 100)
    found = plateaus(steps, acc)
    assert len(found) == 1 and not found[0].climbing


def test_plateaus_noisy_three_phases():
    steps, acc = curve(300_000, 0.03, [(0.3, 3.0, 0.05), (0.45, 4.0, 0.05), (0.22, 4.9, 0.05)], noise=0.01)
    levels = learned(plateaus(steps, acc))
    assert [c for _, c in levels] == [False] * 3
    assert [round(v, 2) for v, _ in levels] == pytest.approx([0.33, 0.78, 1.0], abs=0.02)


def test_plateaus_separate_two_rises_close_together():
    """Rises at 7·10^4 and 1.8·10^5 leave a plateau at 0.78 from about 10^5 to 1.4·10^5 between them,
    which the robust rule merges into one transition; the plateau rule keeps it."""
    steps, acc = curve(400_000, 0.03, [(0.3, 3.0, 0.04), (0.45, 4.85, 0.03), (0.22, 5.25, 0.03)], noise=0.01)
    assert len(robust_boundaries(steps, acc)) == 2
    levels = learned(plateaus(steps, acc))
    assert [round(v, 2) for v, _ in levels] == pytest.approx([0.33, 0.78, 1.0], abs=0.02)


def test_plateaus_single_jump():
    steps, acc = curve(30_000, 0.03, [(0.97, 3.5, 0.03)], noise=0.005)
    found = plateaus(steps, acc)
    assert [p.index for p in found] == [0, 1] and found[1].level == pytest.approx(1.0, abs=0.01)
    assert not found[1].climbing


def test_plateaus_run_ending_while_climbing():
    """The run stops in the middle of its second rise: the end level is the last phase, marked climbing."""
    steps, acc = curve(100_000, 0.03, [(0.3, 3.0, 0.05), (0.6, 5.0, 0.1)], noise=0.005)
    found = learned(plateaus(steps, acc))
    assert found[0] == (pytest.approx(0.33, abs=0.02), False)
    assert found[-1][1] and len(found) == 2


def test_plateaus_early_stopped_run_ends_on_its_plateau():
    """99% reached at step t and held to 1.5 t (the early stop): the final level is a plateau."""
    t = 40_000
    steps, acc = curve(int(1.5 * t), 0.03, [(0.3, 3.0, 0.05), (0.67, np.log10(t) - 0.1, 0.02)], noise=0.003)
    assert acc[steps == t][0] > 0.99
    found = learned(plateaus(steps, acc))
    assert [c for _, c in found] == [False, False] and found[-1][0] == pytest.approx(1.0, abs=0.01)
