"""The mechanism readings (analysis.mechanism): token names, strong edges on hand-made maps, Chunk Example by
task and by pair, the causal tests and the FCC criterion; and chapter 15's tables and checks
(book.mechanism_claims) on the shipped default runs.

The models are default-size (N = 4, S = 9) and untrained, with a fixed seed; where the answer must be known,
layer 1 (and layer 2) are restricted by hand so that each label attends only to its own item (and the query
only to the labels)."""

import pytest
import torch

from icl_meta import Config, Model, circuit_metrics, make_instance, mask_matrix, sample, shipped
from icl_meta.analysis.heads import pattern_thresholds, uniform_metrics
from icl_meta.analysis.mechanism import (causal_tests, cells, chunk_by_pair, chunk_by_task, fcc_seen, strong_edges,
                                         token_name)
from icl_meta.analysis.surgery import Edit, edited
from icl_meta.book import mechanism_claims as mc
from icl_meta.probes import attention_maps
from icl_meta.trainer import accuracy

N, S, Q = 4, 9, 8
NAMES = ["item 1", "label 1", "item 2", "label 2", "item 3", "label 3", "item 4", "label 4", "query"]


@pytest.fixture(scope="module")
def cfg():
    return Config(num_seq=N)


@pytest.fixture(scope="module")
def model(cfg):
    """An untrained default-size model, fixed seed."""
    return Model(cfg, seed=0)


@pytest.fixture(scope="module")
def batch(cfg):
    """512 in-distribution sequences; every task is drawn."""
    b = sample(make_instance(cfg), cfg, 512, torch.Generator().manual_seed(0))
    assert set(b.task.tolist()) == set(range(cfg.num_tasks))
    return b


@pytest.fixture(scope="module")
def chunk_only(model):
    """The model with layer 1's label rows pushed onto their own item: bias -1e4 on every other causal cell
    of a label row (so the softmax gives those cells exactly 0 in float32, as the chunk_example mask does), yet
    finite, so that the model's own mask stays causal and causal_tests may still cut each label's own edge."""
    out = edited(model, [])  # a copy
    causal, chunk = mask_matrix("none", N), mask_matrix("chunk_example", N)
    with torch.no_grad():
        out.bias[0] = torch.zeros(S, S).masked_fill(causal & ~chunk, -1e4).masked_fill(~causal, float("-inf"))
    return out


def test_token_name_of_every_position():
    """0-based positions of N = 4 read item 1, label 1, ..., label 4, query (1-based k, as in the paper)."""
    assert [token_name(pos, N) for pos in range(S)] == NAMES
    assert token_name(2, 1) == "query" and token_name(1, 1) == "label 1"


def test_cells_sets_exactly_the_given_pairs():
    """cells: a boolean [S, S] with exactly the (row, column) pairs set; none for no pairs."""
    c = cells([(3, 2), (Q, 1), (3, 2)], N)
    assert c.dtype == torch.bool and c.shape == (S, S)
    assert sorted(map(tuple, c.nonzero().tolist())) == [(3, 2), (Q, 1)]
    assert not cells([], N).any()
    assert cells([(1, 0)], 1).shape == (3, 3)


def uniform_map(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform causal attention [1, S, S] (one head): row r spreads 1/(r + 1) over its r + 1 cells."""
    p = torch.ones(S, S, dtype=dtype).tril()
    return (p / p.sum(-1, keepdim=True))[None]


def raised(p: torch.Tensor, row: int, col: int, factor: float) -> torch.Tensor:
    """A copy of p [1, S, S] with one cell multiplied by factor and its row renormalised."""
    p = p.clone()
    p[0, row, col] *= factor
    p[0, row] /= p[0, row].sum()
    return p


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_maps_have_no_strong_edge(dtype):
    """Uniform causal attention sits exactly at the uniform weight of every cell: no edge, in either layer and
    in float32 (where most 1/(r + 1) round up) as in float64."""
    u = uniform_map(dtype)
    assert strong_edges([u, u], N) == []


def test_one_raised_cell_is_the_one_edge():
    """Raising one cell (label 2 -> item 2, 3x) and renormalising its row names exactly that edge, in the layer it
    is in, with its weight 3/6 and the uniform weight 1/(row + 1) = 1/4; the row's other cells fall below."""
    u = uniform_map()
    p = raised(u, 3, 2, 3.0)
    assert strong_edges([p, u], N) == [(1, "label 2", "item 2", pytest.approx(0.5), 0.25)]
    assert strong_edges([u, p], N) == [(2, "label 2", "item 2", pytest.approx(0.5), 0.25)]
    q = raised(u, Q, 7, 5.0)  # query -> label 4: 5/13 against 1/9
    assert strong_edges([u, q], N) == [(2, "query", "label 4", pytest.approx(5 / 13), 1 / 9)]


def test_strong_edges_strongest_first_within_each_layer():
    """Several raised cells: layer 1's edges come first, each layer's sorted by weight, strongest first; only
    head 1 is read."""
    u = uniform_map()
    l1 = raised(raised(raised(u, 1, 0, 2.0), 5, 4, 9.0), Q, 1, 4.0)  # 2/3, 9/14, 4/12
    l2 = raised(raised(u, 2, 0, 2.0), 7, 6, 20.0)  # 2/4, 20/27
    other_head = raised(u, 4, 4, 50.0)
    edges = strong_edges([torch.cat([l1, other_head]), l2], N)
    assert [(e[0], e[1], e[2]) for e in edges] == [
        (1, "label 1", "item 1"), (1, "label 3", "item 3"), (1, "query", "label 1"),
        (2, "label 4", "item 4"), (2, "item 2", "item 1")]
    assert [e[3] for e in edges] == pytest.approx([2 / 3, 9 / 14, 4 / 12, 20 / 27, 2 / 4])
    assert [e[4] for e in edges] == pytest.approx([1 / 2, 1 / 6, 1 / 9, 1 / 8, 1 / 3])


def test_strong_edges_of_a_model(model, batch, chunk_only):
    """On the chunk-only model, layer 1 names every label_k -> item_k at weight 1 (and no other cell of a label
    row), besides what the untrained rows happen to show; each edge beats its uniform weight."""
    edges = strong_edges(attention_maps(chunk_only, batch), N)
    assert all(w > u for *_, w, u in edges)
    label_rows = [e for e in edges if e[0] == 1 and e[1].startswith("label")]
    assert [(e[1], e[2]) for e in label_rows] == [(f"label {k}", f"item {k}") for k in range(1, N + 1)]
    assert [e[3] for e in label_rows] == pytest.approx([1.0] * N)


def test_chunk_by_task_weighted_by_counts_is_the_batch_metric(batch):
    """Per task, L1 chunk_example and L2 label_attention of head 1; weighted by each task's count in the batch
    they give the batch-mean circuit_metrics of those layers. The model is sharpened (3x W_QKV) so that the tasks'
    values differ."""
    model = Model(Config(num_seq=N), seed=0)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.w_qkv.mul_(3)
    by_task = chunk_by_task(model, batch)
    assert set(by_task) == {"L1 chunk_example", "L2 label_attention"}
    counts = torch.bincount(batch.task, minlength=3).double()
    maps = attention_maps(model, batch)
    for key, layer, metric in (("L1 chunk_example", 0, "chunk_example"), ("L2 label_attention", 1, "label_attention")):
        values = torch.tensor(by_task[key], dtype=torch.float64)
        assert values.shape == (3,) and len(set(by_task[key])) == 3
        want = float(circuit_metrics(maps[layer])[metric][0])
        assert float((values * counts).sum() / counts.sum()) == pytest.approx(want, abs=1e-5)


def test_chunk_by_pair_on_an_untrained_model(model, batch):
    """Weight on own item averages over k to layer 1's Chunk Example; own item on top is a fraction per pair."""
    pairs = chunk_by_pair(model, batch)
    assert set(pairs) == {"weight on own item", "own item on top"}
    assert all(len(v) == N for v in pairs.values())
    chunk = float(circuit_metrics(attention_maps(model, batch)[0])["chunk_example"][0])
    assert sum(pairs["weight on own item"]) / N == pytest.approx(chunk, abs=1e-5)
    assert all(0 <= v <= 1 for v in pairs["own item on top"])
    assert 0 < sum(pairs["own item on top"]) < N  # untrained: neither never nor always


@pytest.mark.parametrize("how", ["soft bias", "edited"])
def test_chunk_by_pair_when_every_label_attends_to_its_item(model, batch, chunk_only, how):
    """Every label on its own item (by a finite bias, or surgery's chunk_example mask): weight 1, on top in every
    sequence, for every k."""
    m = chunk_only if how == "soft bias" else edited(model, [Edit(1, "chunk_example", "keep")])
    pairs = chunk_by_pair(m, batch)
    assert pairs["weight on own item"] == pytest.approx([1.0] * N)
    assert pairs["own item on top"] == [1.0] * N


def expected_causal_names() -> set[str]:
    """The interventions of causal_tests for N = 4: 1 + 1 + N + 3 + 2 cuts in layer 1, N + 3 in layer 2, 2 value
    and 3 pattern patches: 15 + 2N = 23."""
    arrow = "→"
    names = {"none", f"L1 cut label_k {arrow} item_k (all k)", f"L1 cut label_k {arrow} itself",
             f"L1 cut item_k+1 {arrow} label_k", f"L1 cut item_k+1 {arrow} item_k",
             f"L1 keep only the chunk mask (label_k {arrow} item_k)", "L1 label rows keep only {item_k, itself}",
             f"L2 query cut {arrow} every label", f"L2 query cut {arrow} every context item",
             f"L2 query cut {arrow} itself"}
    names |= {f"L1 cut label_{k} {arrow} item_{k}" for k in range(1, N + 1)}
    names |= {f"L2 query cut {arrow} label_{k}" for k in range(1, N + 1)}
    names |= {f"L1 values along label_k {arrow} item_k: {s}" for s in ("batch_mean", "other")}
    names |= {f"L1 label rows' pattern: {s}" for s in ("batch_mean", "task_mean", "other")}
    assert len(names) == 15 + 2 * N
    return names


def test_causal_tests_names_and_values(model, batch):
    """One accuracy per intervention, every one a fraction in [0, 1], "none" the model's own accuracy; the
    model is left unchanged."""
    bias = model.bias.clone()
    out = causal_tests(model, batch)
    assert set(out) == expected_causal_names()
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in out.values())
    assert out["none"] == accuracy(model, batch)
    assert torch.equal(model.bias, bias) and model.gate is None
    assert all(b.attn.patch is None for b in model.blocks)


def test_keeping_the_chunk_mask_of_a_chunk_only_model_changes_nothing(chunk_only, batch):
    """Layer 1 already attends only along label_k -> item_k: keeping only the chunk mask keeps what the model
    has, and its accuracy is that of "none"."""
    out = causal_tests(chunk_only, batch)
    assert set(out) == expected_causal_names()
    assert out["L1 keep only the chunk mask (label_k → item_k)"] == out["none"]
    assert all(0 <= v <= 1 for v in out.values())


def test_fcc_seen_on_the_fcc_masks(model, batch):
    """Layer 1 kept to chunk_example and layer 2 to label_attention: every task's Chunk Example and the Label
    Attention are 1, so FCC is seen; the thresholds are the book's pattern thresholds (excess 1/3 over uniform)."""
    fcc = edited(model, [Edit(1, "chunk_example", "keep"), Edit(2, "label_attention", "keep")])
    out = fcc_seen(fcc, batch)
    assert set(out) == {"L1 chunk_example by task", "L2 label_attention", "thresholds", "seen"}
    assert out["L1 chunk_example by task"] == pytest.approx([1.0] * 3)
    assert out["L2 label_attention"] == pytest.approx(1.0)
    assert out["seen"] is True
    t = pattern_thresholds(N)
    assert out["thresholds"] == (t["chunk_example"], t["label_attention"])
    u = uniform_metrics(N)
    assert out["thresholds"] == pytest.approx((u["chunk_example"] + (1 - u["chunk_example"]) / 3,
                                               u["label_attention"] + (1 - u["label_attention"]) / 3))


def test_fcc_not_seen_untrained_or_half_masked(model, batch):
    """An untrained model (near uniform attention) shows no FCC; nor does one with only layer 1 or only layer 2
    kept to its FCC pattern: both conditions are needed."""
    out = fcc_seen(model, batch)
    assert out["seen"] is False
    assert all(v < out["thresholds"][0] for v in out["L1 chunk_example by task"])
    assert out["L2 label_attention"] < out["thresholds"][1]
    only_l1 = fcc_seen(edited(model, [Edit(1, "chunk_example", "keep")]), batch)
    assert only_l1["L1 chunk_example by task"] == pytest.approx([1.0] * 3) and only_l1["seen"] is False
    only_l2 = fcc_seen(edited(model, [Edit(2, "label_attention", "keep")]), batch)
    assert only_l2["L2 label_attention"] == pytest.approx(1.0) and only_l2["seen"] is False


# ---- book.mechanism_claims: chapter 15's tables and checks, on the shipped default runs ----


@pytest.fixture(scope="module")
def default_runs():
    runs = shipped("default")
    return runs, [mc.fresh_batch(r, 256) for r in runs]


def _rows(table: str) -> list[list[str]]:
    return [line.strip().strip("|").split("|") for line in table.splitlines()]


def test_chapter_tables_have_one_column_per_seed(default_runs):
    """Every table: the header's column count on every row, one column per seed after the fixed ones."""
    runs, batches = default_runs
    results = mc.causal_results(runs, batches)
    for table, fixed in ((mc.causal_table(runs, results), 1), (mc.by_task_table(runs, batches), 3),
                         (mc.by_pair_table(runs, batches), 2), (mc.edges_table(runs, batches), 3)):
        rows = _rows(table)
        assert len(rows[0]) == fixed + len(runs)
        assert all(len(r) == len(rows[0]) for r in rows)
    assert len(_rows(mc.causal_table(runs, results))) == 2 + len(results[0])
    assert len(_rows(mc.by_pair_table(runs, batches))) == 2 + runs[0].config.num_seq


def test_causal_summary_reads_the_results():
    """The summary quotes each test as one value when the seeds agree, else as a min-max span."""
    same = {name: 0.5 for name in mc.SUMMARY_TESTS.values()}
    text = mc.causal_summary([same, dict(same, none=0.9)])
    assert "accuracy unedited is 0.50-0.90" in text and "to itself 0.50" in text


def test_task_maps_average_to_the_batch_map(default_runs):
    """The per-task maps, weighted by each task's count in the batch, are the batch-mean map of each layer."""
    runs, batches = default_runs
    run, batch = runs[1], batches[1]
    maps = mc.task_maps(run, batch)
    counts = torch.bincount(batch.task, minlength=run.config.num_tasks).double()
    for layer, full in enumerate(attention_maps(run.model(), batch)):
        mixed = sum(c * maps[f"task {t + 1}"][layer].double() for t, c in enumerate(counts)) / counts.sum()
        torch.testing.assert_close(mixed, full.double(), atol=1e-5, rtol=1e-5)


def test_along_training_has_one_entry_per_checkpoint(default_runs):
    runs, batches = default_runs
    along = mc.along_training(runs[1], batches[1])
    assert along["step"].tolist() == runs[1].checkpoint_steps
    assert along["by_task"].shape == (len(runs[1].checkpoint_steps), runs[1].config.num_tasks)
    assert ((along["none"] >= 0) & (along["none"] <= 1)).all()


def test_control_checks_stay_open_until_three_seeds_are_shipped(monkeypatch, default_runs):
    """No shipped control: every row open, saying the runs train. Three seeds in Phase 3: a decided verdict,
    from the FCC criterion (the default runs stand in for a control here)."""
    runs, _ = default_runs
    monkeypatch.setattr(mc, "control_runs", lambda name: [])
    assert [c.ok for c in mc.control_checks(256)] == [None] * len(mc.CONTROLS)
    monkeypatch.setattr(mc, "control_runs", lambda name: runs[:2])
    assert all(c.ok is None and "still training" in c.why for c in mc.control_checks(256))
    monkeypatch.setattr(mc, "control_runs", lambda name: runs)
    verdicts = mc.control_verdicts(256)
    assert verdicts == {name: 0 for name in mc.CONTROLS}
    decided = mc.control_checks(256, verdicts)
    assert all(c.ok is False and c.ours == "seen in 0 of 3 seeds" for c in decided)


def test_long_run_check_is_open_until_the_run_reaches_its_steps(monkeypatch, default_runs):
    """Control (c): open while not shipped or short of LONG_STEPS; then fcc_seen at its last checkpoint decides
    (seed 0 of the default stands in for it here), and chunk_along reads every checkpoint from step 10^5."""
    runs, batches = default_runs
    monkeypatch.setattr(mc, "control_runs", lambda name: [])
    c = mc.long_run_check(256)
    assert c.ok is None and "still training" in c.why and "control" in c.what
    monkeypatch.setattr(mc, "control_runs", lambda name: [runs[0]] if name == mc.LONG_RUN else [])
    assert mc.long_run() is None  # shipped, but short of LONG_STEPS
    monkeypatch.setattr(mc, "LONG_STEPS", int(runs[0].steps[-1]))
    c = mc.long_run_check(256)
    assert c.ok is False and c.ours == f"not seen at step {int(runs[0].steps[-1]):,}"
    rows = _rows(mc.chunk_along(runs[0], batches[0]))[2:]
    assert [int(r[0].replace(",", "")) for r in rows] == [s for s in runs[0].checkpoint_steps if s >= 100_000]
    assert all(len(r[1].split(",")) == runs[0].config.num_tasks for r in rows)


def test_controls_conclusion_follows_the_predictions_fixed_before_the_runs():
    """Open while a control trains; a control with the circuit in every seed explains the difference; in some
    seeds, possible not certain; in none, neither explains it, and what follows for the figures is said."""
    names = list(mc.CONTROLS)
    assert "Not decided yet" in mc.controls_conclusion({names[0]: None, names[1]: 0})
    text = mc.controls_conclusion({names[0]: 3, names[1]: 0})
    assert "appears in every seed under **query rule**" in text
    assert "some seeds only, under **query rule** (1 of 3 seeds)" in mc.controls_conclusion({names[0]: 1, names[1]: 0})
    text = mc.controls_conclusion({names[0]: 0, names[1]: 0})
    assert "Neither (a) nor (b) brings the paper's FCC circuit" in text
    assert all(f in text for f in ("*Table 1:*", "*Fig. 4:*", "*Fig. 6:*"))
    assert "still training" in text
    text = mc.controls_conclusion({names[0]: 0, names[1]: 0}, long_seen=False)
    assert "nor does training on to" in text and "FCC row stays not matched" in text and "still training" not in text
    text = mc.controls_conclusion({names[0]: 0, names[1]: 0}, long_seen=True)
    assert "the difference is how long the authors trained" in text
    assert "FCC row is not matched at our early stop" in text


def test_default_check_says_what_was_seen_instead(default_runs):
    runs, batches = default_runs
    c = mc.default_check(runs, batches)
    assert c.ok is False and "per task spans" in c.why
