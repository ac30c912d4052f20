"""Phase and circuit checks against the paper, on synthetic runs whose answers are known."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from icl_meta import Config, scc_theory_accuracy
from icl_meta.analysis.readings import final_level, layer_pattern, learned_phases, phase_steps, steps_to
from icl_meta.analysis.surgery import standard_edits
from icl_meta.book.claims import (circuit_checks, circuit_rows, circuit_table, induction_checks, phase_checks,
                                  phase_rows, random_label_checks, restricted_checks, scc_theory_checks,
                                  rules_table, surgery_checks, surgery_flag_table)
from icl_meta.probes import metric_column
from icl_meta.runs import Run

STEPS = np.arange(0, 100_001, 100)
EDGES = [0, 1000, 1500, 8000, 12000, 40000, 50000, 100_000]


def synthetic_run(levels=(0.03, 0.35, 0.78, 1.0), circuits=True) -> Run:
    """Accuracy with three log-abrupt rises; metrics switch as paper Table 1 says (or never, if not circuits)."""
    acc = np.interp(STEPS, EDGES, [level for level in levels for _ in (0, 1)])
    phase = np.searchsorted([1500, 12000, 50000], STEPS, side="right")  # 0..3, settled after each rise
    m = {"step": STEPS.astype(float), "acc": acc, "loss": 1 - acc}
    table = {  # phase -> (layer-1 metrics, layer-2 metrics) as bigram, label_attention, chunk_example
        0: ((0.11, 0.44, 0.26), (0.11, 0.44, 0.26)),
        1: ((0.98, 0.01, 0.26), (1.0, 0.0, 0.26)),
        2: ((0.60, 0.38, 0.25), (1.0, 0.0, 0.25)),
        3: ((0.05, 0.20, 0.90), (0.05, 0.90, 0.30)),
    }
    for layer in (1, 2):
        for j, name in enumerate(("bigram", "label_attention", "chunk_example")):
            vals = [table[p if circuits else 0][layer - 1][j] for p in range(4)]
            m[metric_column(layer, 1, name)] = np.array(vals)[phase]
    return Run(Path("synthetic"), Config(), m, {}, [0, 100, 1000, 3000, 10000, 30000, 100_000])


def test_layer_pattern_rule():
    """The pattern that rose by >= 0.1 wins; with no such rise the layer keeps its largest metric."""
    before = {"bigram": 1.0, "label_attention": 0.0, "chunk_example": 0.25}
    assert layer_pattern(before, {"bigram": 0.7, "label_attention": 0.3, "chunk_example": 0.25}) == "label_attention"
    assert layer_pattern(before, {"bigram": 0.98, "label_attention": 0.05, "chunk_example": 0.25}) == "bigram"


def test_phase_rows_and_checks_on_three_phases():
    """Three phases with the paper's plateau levels all pass."""
    run = synthetic_run()
    row = phase_rows([run])[0]
    assert row["levels"] == pytest.approx({1: 0.35, 2: 0.78, 3: 1.0})
    assert all(c.ok for c in phase_checks([run]))


def test_phase_checks_fail_when_phase_two_is_missing():
    """A run that jumps from 0.35 to 1.0 fails the phase count and the Phase 2 level."""
    run = synthetic_run(levels=(0.03, 0.35, 1.0, 1.0))
    checks = {c.what: c.ok for c in phase_checks([run])}
    assert not checks["phases seen (plateau rule)"] and not checks["Phase 2 plateau accuracy"]
    assert all(c.why for c in phase_checks([run]) if c.ok is False)


def test_phase_steps_pick_the_middle_of_each_plateau():
    """Checkpoints chosen per phase lie inside the plateau; evaluated steps sit near its log-middle."""
    run = synthetic_run()
    ckpts = phase_steps(run, learned_phases(run))
    assert set(ckpts) <= {1, 2, 3} and all(s in run.checkpoint_steps for s in ckpts.values())
    evals = phase_steps(run, learned_phases(run), checkpoints=False)
    assert 2500 <= evals[1] <= 5000 and 15000 <= evals[2] <= 30000


def test_circuit_checks_match_table_one():
    """Metrics that switch as in Table 1 give NCC, SCC and FCC; metrics that never move give no match."""
    rows = circuit_rows(synthetic_run())
    assert [r["patterns"] for r in rows] == [("bigram", "bigram"), ("label_attention", "bigram"),
                                              ("chunk_example", "label_attention")]
    assert all(c.ok for c in circuit_checks(synthetic_run()))
    failed = circuit_checks(synthetic_run(circuits=False))
    assert not any(c.ok for c in failed) and all(c.why for c in failed)
    assert all("visible in the batch-mean attention metric" in c.what for c in failed)


def curve_run(acc, cfg=Config(), extra=None) -> Run:
    """A run with a given accuracy curve on STEPS (and extra logged columns)."""
    metrics = {"step": STEPS.astype(float), "acc": np.asarray(acc, float), "loss": 1 - np.asarray(acc, float),
               **(extra or {})}
    return Run(Path("synthetic"), cfg, metrics, {}, [])


def test_final_level_and_steps_to():
    acc = np.interp(STEPS, [0, 5000, 6000, 100_000], [0.0, 0.0, 1.0, 1.0])
    run = curve_run(acc)
    assert final_level(run) == 1.0
    assert steps_to(run, 0.99) == 6000 and steps_to(run, 1.01) is None


def test_restricted_checks():
    """Plateaus at the Phase-1/2 levels and an FCC model that is done 10x sooner pass; a slow FCC fails."""
    def flat(level):
        return curve_run(np.interp(STEPS, [0, 1000, 2000, 100_000], [0.03, 0.03, level, level]))

    def jump(at):
        return curve_run(np.interp(STEPS, [0, at, 2 * at, 100_000], [0.03, 0.03, 1.0, 1.0]))

    ceil = {"query_only": 0.36, "label_multiset": 0.80, "full_pairs": 1.0}
    good = {"NCC": [flat(0.35)], "SCC": [flat(0.78)], "FCC": [jump(1000)]}
    assert all(c.ok for c in restricted_checks(good, [jump(30000)], ceil))
    bad = {"NCC": [flat(0.5)], "SCC": [flat(0.5)], "FCC": [jump(20000)]}
    assert not any(c.ok for c in restricted_checks(bad, [jump(30000)], ceil))


def test_scc_theory_checks():
    """A run ending on the App. D line passes; one 0.1 above fails."""
    cfg = Config(num_tasks=2, label_table="scc_theory", num_classes=8, num_labels=8)
    theory = scc_theory_accuracy(8)
    assert scc_theory_checks([curve_run(np.full(len(STEPS), theory), cfg)])[0].ok
    assert not scc_theory_checks([curve_run(np.full(len(STEPS), theory + 0.1), cfg)])[0].ok


def test_random_label_checks():
    """Random-label accuracy that follows Phase 2 and stays at its level passes; one that collapses fails."""
    run = synthetic_run()
    ceil = [{"label_multiset": 0.80}]
    rla = np.minimum(run.metrics["acc"], 0.76)
    run.metrics["acc_random_label"] = rla
    assert all(c.ok for c in random_label_checks([run], ceil))
    run.metrics["acc_random_label"] = np.where(STEPS > 50000, 0.1, rla)
    checks = random_label_checks([run], ceil)
    assert checks[0].ok and not checks[1].ok


def test_induction_checks_on_a_tiny_run(tiny_run):
    """Four checks with measured values; a 60-step run has not jumped, so the jump check fails."""
    checks = induction_checks([tiny_run], "tiny")
    assert [c.what.split(": ")[1] for c in checks] == ["a single jump to 100%", "layer 1 chunks each pair",
                                                       "layer 2 attends to the matching pair's label",
                                                       "accuracy on novel classes (copy set)"]
    assert not checks[0].ok and all(c.ok in (True, False) for c in checks)


def test_phase_steps_of_a_repeated_phase_take_the_later_plateau():
    """Two plateaus given the same index (a phase named twice): the later one's middle step wins."""
    run = synthetic_run()
    first, second = learned_phases(run)[:2]
    steps = phase_steps(run, [first, dataclasses.replace(second, index=first.index)], checkpoints=False)
    assert steps == {first.index: phase_steps(run, [second], checkpoints=False)[second.index]}


def test_surgery_checks_and_flag_table():
    """A phase's Table-1 pattern is necessary when removing it costs 5 points; the flag table marks it."""
    def table(cut):
        return {name: {"in_dist": 0.9 - (cut if name.startswith("L1 remove bigram") else 0.0)}
                for name in standard_edits()}
    checks = surgery_checks({1: table(0.5)})
    assert [c.what for c in checks] == ["Phase 1 (NCC): layer 1 bigram causally needed (surgery)",
                                        "Phase 1 (NCC): layer 2 bigram causally needed (surgery)"]
    assert [c.ok for c in checks] == [True, False] and checks[1].why and all(c.beyond for c in checks)
    assert checks[1].verdict.startswith("✗ fails") and "beyond the paper" in checks[1].verdict
    assert not surgery_checks({1: table(0.01)})[0].ok
    lines = surgery_flag_table({1: table(0.5)}).splitlines()
    assert "Phase 1 (NCC)" in lines[0] and lines[2] == "| L1 bigram | NS\\* |" and lines[5] == "| L2 bigram | S\\* |"
    assert {line.count("|") for line in lines} == {3}


def test_circuit_table_is_markdown_with_one_row_per_phase():
    lines = circuit_table([synthetic_run()]).splitlines()
    assert len(lines) == 2 + 3 and {line.count("|") for line in lines} == {8}
    assert "| 0 | 3 |" in lines[-1] and "chunk_example, label_attention" in lines[-1]


def test_rules_table_has_one_row_per_seed_and_rule():
    """Markdown, one row per rule for the run, each with the header's columns; the plateau rule's row lists
    the three learned plateaus as step ranges."""
    lines = rules_table([synthetic_run()]).splitlines()
    assert len(lines) == 2 + 3 and {line.count("|") for line in lines} == {6}
    plateau_row = next(line for line in lines if "| plateau |" in line)
    assert "| 3 |" in plateau_row and plateau_row.count("–") == 3
