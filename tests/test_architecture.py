"""The architecture chapters' checks, on synthetic runs whose phases and heads are known."""

import dataclasses
from pathlib import Path

import numpy as np

from icl_meta import Config
from icl_meta.analysis.heads import layer_metrics_at_end, uniform_metrics
from icl_meta.analysis.phasemap import summarise, truncated
from icl_meta.book.architecture_claims import (block_checks, fcc_location_check, head_checks, layer_metrics_table,
                                              phased, readout_checks)
from icl_meta.probes import metric_column
from icl_meta.runs import Run
from icl_meta.sweeps import CAP, WINDOW

CEIL = {"query_only": 0.36, "label_multiset": 0.80, "full_pairs": 1.0}
STEPS = np.arange(0, WINDOW + 1, 100)


def synthetic(cfg: Config, levels, edges, heads: dict[str, tuple[float, float, int]] | None = None):
    """A summarised run: accuracy holding `levels` and climbing linearly over `edges`; every head metric
    at its uniform value except `heads`: column -> (before, after, step)."""
    xs, ys = [0], [levels[0]]
    for (a, b), lo, hi in zip(edges, levels, levels[1:]):
        xs += [a, b]
        ys += [lo, hi]
    m = {"step": STEPS.astype(float), "acc": np.interp(STEPS, xs + [WINDOW], ys + [ys[-1]])}
    for layer in range(1, cfg.n_layers + 1):
        for head in range(1, cfg.n_heads + 1):
            for name, u in uniform_metrics(cfg.num_seq).items():
                m[metric_column(layer, head, name)] = np.full(len(STEPS), u)
    for col, (before, after, step) in (heads or {}).items():
        m[col] = np.where(STEPS < step, before, after)
    return summarise(Run(Path("synthetic"), cfg, m, {}, []), CEIL)


def held_to_cap(s):
    """The same run held flat from its last row to the full-length cap: finished below the top (phasemap.settled)."""
    extra = np.arange(WINDOW + 100, CAP + 1, 100.0)
    m = {k: np.concatenate([v, np.full(len(extra), v[-1])]) for k, v in s.run.metrics.items()}
    m["step"] = np.concatenate([s.run.metrics["step"], extra])
    return summarise(dataclasses.replace(s.run, metrics=m), CEIL)


PHASED = ([0.03, 0.36, 0.80], [(1000, 2000), (20_000, 30_000)])
SMOOTH = ([0.03, 0.97], [(2000, 50_000)])


def test_heads_checks_phases_hidden_switch_scc_and_specialisation():
    one = synthetic(Config(), *PHASED)
    two = synthetic(Config(n_heads=2), *SMOOTH, {
        "L1H1_bigram": (0.11, 0.95, 9000), "L2H1_bigram": (0.11, 0.99, 9000),
        "L1H2_label_attention": (0.44, 0.95, 30_000), "L2H2_label_attention": (0.44, 0.97, 40_000)})
    assert phased(one) and not phased(two)
    checks = {c.what: c for c in head_checks([one, two])}
    assert checks["n_heads=1: phases or smooth"].ok and checks["n_heads=2: phases or smooth"].ok
    # one rise to a plateau below the top: a second rise may follow after the window, so no verdict
    stopped = synthetic(Config(n_heads=2), [0.03, 0.80], [(2000, 20_000)])
    assert head_checks([stopped])[0].ok is None
    # the same run read to the full-length cap, flat there: finished, one rise, smooth
    steps = np.arange(0, CAP + 1, 100.0)
    acc = np.interp(steps, [0, 2000, 20_000, CAP], [0.03, 0.03, 0.80, 0.80])
    capped = summarise(Run(Path("capped"), Config(n_heads=4), {"step": steps, "acc": acc}, {}, []), CEIL)
    assert len(capped.transitions) == 1, capped.transitions
    assert head_checks([capped])[0].ok is True
    assert checks["H=2: head metric switches while accuracy rises smoothly"].ok
    scc = checks["H=2: a head turns SCC-like"]
    assert scc.ok and scc.ours == "seed 0: L1 H2 at step 30,000"
    spec = checks["H=2: heads take different roles"]
    assert spec.ok and spec.ours == "seed 0: L1 NCC, SCC; L2 SCC, FCC"


def test_heads_checks_read_every_seed():
    def seeded(seed, top, scc_step):
        return synthetic(Config(n_heads=2, seed=seed), [0.03, top], [(2000, 50_000)], {
            "L1H1_bigram": (0.11, 0.95, 9000), "L2H1_bigram": (0.11, 0.99, 9000),
            "L2H2_label_attention": (0.44, 0.97, 20_000), "L1H2_label_attention": (0.44, 0.95, scc_step)})

    solved = seeded(0, 0.99, 30_000)
    checks = {c.what: c for c in head_checks([solved, seeded(1, 0.99, 30_000)])}
    assert checks["H=2: a head turns SCC-like"].ok and checks["H=2: a head turns SCC-like"].seeds.startswith("2 seeds")
    # a seed whose SCC comes far too early fails the check for all; one still climbing without it leaves it open
    late = {c.what: c for c in head_checks([solved, seeded(1, 0.99, 5_000), seeded(2, 0.80, 10 ** 6)])}
    assert late["H=2: a head turns SCC-like"].ok is False
    assert "seed 1: L1 H2 at step 5,000" in late["H=2: a head turns SCC-like"].ours
    open_ = {c.what: c for c in head_checks([solved, seeded(2, 0.80, 10 ** 6)])}
    assert open_["H=2: a head turns SCC-like"].ok is None
    assert "seed 2: no head becomes SCC-like" in open_["H=2: a head turns SCC-like"].ours
    assert open_["H=2: heads take different roles"].ok  # seed 2's heads are specialised already
    alike = synthetic(Config(n_heads=2, seed=3), [0.03, 0.80], [(2000, 50_000)],
                      {"L1H1_bigram": (0.11, 0.95, 9000), "L1H2_bigram": (0.11, 0.95, 9000)})
    assert head_checks([solved, alike])[-1].ok is None  # alike heads, still climbing: they may yet specialise


def test_heads_checks_fail_when_the_two_heads_do_the_same():
    solved = ([0.03, 0.36, 0.80, 1.0], [(1000, 2000), (10_000, 15_000), (30_000, 40_000)])
    two = synthetic(Config(n_heads=2), *solved, {"L1H1_bigram": (0.11, 0.95, 1500), "L1H2_bigram": (0.11, 0.95, 1500)})
    checks = {c.what: c for c in head_checks([two])}
    assert checks["n_heads=2: phases or smooth"].ok is False
    assert checks["H=2: a head turns SCC-like"].ok is False
    assert checks["H=2: heads take different roles"].ok is False


def test_fcc_location_needs_a_solved_run_and_finds_the_layers():
    heads = {"L1H1_chunk_example": (0.26, 0.9, 30_000), "L2H1_label_attention": (0.44, 0.95, 30_000)}
    solved = synthetic(Config(n_layers=3), [0.03, 0.36, 1.0], [(1000, 2000), (20_000, 30_000)], heads)
    assert layer_metrics_at_end(solved.run).shape == (3, 3)
    check = fcc_location_check(solved)
    assert check.ok and "most chunking in L1, most label attention in L2" in check.ours
    assert fcc_location_check(synthetic(Config(n_layers=3), *PHASED, heads)).ok is None
    swapped = {"L3H1_chunk_example": (0.26, 0.9, 30_000), "L2H1_label_attention": (0.44, 0.95, 30_000)}
    solved_late = synthetic(Config(n_layers=3), [0.03, 0.36, 1.0], [(1000, 2000), (20_000, 30_000)], swapped)
    assert fcc_location_check(solved_late).ok is False


def test_block_and_readout_checks_leave_unreached_phases_open():
    standard = synthetic(Config(block="standard"), *PHASED, {
        "L1H1_bigram": (0.11, 0.95, 1500), "L2H1_bigram": (0.11, 0.95, 1500),
        "L1H1_label_attention": (0.44, 0.0, 1500), "L2H1_label_attention": (0.44, 0.0, 1500)})
    checks = block_checks([standard, synthetic(Config(), *PHASED)])
    assert [c.what for c in checks] == [f"standard block: Phase {k} circuit ({n})" for k, n in
                                        ((1, "NCC"), (2, "SCC"), (3, "FCC"))]
    assert checks[0].ok and checks[2].ok is None and checks[2].ours == "not reached by the run's end"
    skipping = synthetic(Config(block="standard"), [0.03, 0.36, 1.0], [(1000, 2000), (20_000, 30_000)], {
        "L1H1_bigram": (0.11, 0.95, 1500), "L2H1_bigram": (0.11, 0.95, 1500),
        "L2H1_label_attention": (0.44, 0.95, 25_000), "L1H1_chunk_example": (0.26, 0.9, 25_000)})
    p1, p2, p3 = block_checks([skipping])
    assert p1.ok and p2.ok is False and p2.ours.startswith("skipped")  # the second plateau is named 3
    assert p3.ok and p3.ours.startswith("L1 chunk_example, L2 label_attention")
    query, every = synthetic(Config(), *PHASED), synthetic(Config(readout="all_labels"), *PHASED)
    phases, final = readout_checks([query, every])
    assert phases.ok and final.ok is None  # no query-loss run reached 99%: below 100% says nothing
    solved = synthetic(Config(), [0.03, 0.36, 1.0], [(1000, 2000), (20_000, 30_000)])
    assert readout_checks([solved, every])[1].ok
    # an all-label run cut before the query-loss run reached 99% is compared over its own steps: open
    short = summarise(truncated(every.run, 25_000), CEIL)
    final = readout_checks([solved, short])[1]
    assert final.ok is None and final.why.endswith("within its 25,000 steps")


def test_a_run_flat_at_the_cap_is_finished():
    """Held flat below the top to the cap, a run is finished (Summary.finished): what it has not shown by then fails
    the heads', the FCC-location and the named-circuit checks, where the same run cut at the window leaves them open."""
    alike = synthetic(Config(n_heads=2), [0.03, 0.80], [(2000, 50_000)],
                      {"L1H1_bigram": (0.11, 0.95, 9000), "L1H2_bigram": (0.11, 0.95, 9000)})
    capped = held_to_cap(alike)
    assert not alike.finished and capped.finished and not capped.reached_top
    before, after = ({c.what: c.ok for c in head_checks([s])} for s in (alike, capped))
    for what in ("H=2: a head turns SCC-like", "H=2: heads take different roles"):
        assert before[what] is None and after[what] is False, what
    heads = {"L1H1_chunk_example": (0.26, 0.9, 30_000), "L2H1_label_attention": (0.44, 0.95, 30_000)}
    deep = synthetic(Config(n_layers=3), *PHASED, heads)
    assert fcc_location_check(deep).ok is None and fcc_location_check(held_to_cap(deep)).ok is True
    standard = synthetic(Config(block="standard"), *PHASED, {
        "L1H1_bigram": (0.11, 0.95, 1500), "L2H1_bigram": (0.11, 0.95, 1500),
        "L1H1_label_attention": (0.44, 0.0, 1500), "L2H1_label_attention": (0.44, 0.0, 1500)})
    p3 = block_checks([held_to_cap(standard)])[2]
    assert p3.ok is False and p3.ours == "not reached: flat at 0.80 at the cap" and p3.why == "no later phase came"


def test_summary_plateaus_use_the_plateau_rule_and_the_ceilings_names():
    """Plateaus at the NCC and SCC ceilings are named Phases 1 and 2; the untrained stretch is left out."""
    s = synthetic(Config(), *PHASED)
    named = s.plateaus
    assert [p.index for p in named] == [1, 2]
    assert [round(p.level, 2) for p in named] == [0.36, 0.80]


def test_layer_metrics_table_has_a_row_per_run_and_layer():
    heads = {"L1H1_chunk_example": (0.26, 0.9, 30_000), "L2H1_label_attention": (0.44, 0.95, 30_000)}
    s = synthetic(Config(n_layers=3), [0.03, 0.36, 1.0], [(1000, 2000), (20_000, 30_000)], heads)
    lines = layer_metrics_table([s]).splitlines()
    assert lines[0] == "| layers | seed | layer | Bigram | Label Attention | Chunk Example |"
    assert len(lines) == 2 + 3 and lines[2].startswith("| 3 | 0 | 1 | ") and lines[2].endswith(" | 0.90 |")
