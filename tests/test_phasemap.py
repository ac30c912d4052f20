"""Phase naming, the phase table and the phase maps, on synthetic runs whose phases are known."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from icl_meta import Config, ceilings
from icl_meta.analysis.phasemap import (MIN_GAP, Summary, max_jump, name_plateau, phase2_gap, settled, summarise,
                                        truncated, varied)
from icl_meta.analysis.readings import multiset_reach, parting_step
from icl_meta.bayes import query_class_accuracy, random_label_ceiling
from icl_meta.book.sweep_claims import (first_plateau_checks, judge, map_checks, paper_check, parting_table,
                                        phase_table, seen_instead, smoothing_check, task_order_check)
from icl_meta.runs import Run
from icl_meta.sweeps import CAP, WINDOW

CEIL = {"query_only": 0.36, "label_multiset": 0.80, "full_pairs": 1.0}
STEPS = np.arange(0, WINDOW + 1, 100)


def run_with(levels, edges, cfg=Config(), extra=None) -> Run:
    """Accuracy that holds each level and climbs linearly between the given step edges."""
    xs = [0]
    ys = [levels[0]]
    for (a, b), lo, hi in zip(edges, levels, levels[1:]):
        xs += [a, b]
        ys += [lo, hi]
    m = {"step": STEPS.astype(float), "acc": np.interp(STEPS, xs + [WINDOW], ys + [ys[-1]]), **(extra or {})}
    return Run(Path("synthetic"), cfg, m, {}, [])


THREE = run_with([0.03, 0.36, 0.80, 1.0], [(1000, 2000), (8000, 12000), (30000, 40000)])


def test_name_plateau_nearest_ceiling_and_close_ceilings_merge_upwards():
    assert name_plateau(0.35, CEIL) == 1 and name_plateau(0.7, CEIL) == 2 and name_plateau(0.95, CEIL) == 3
    assert name_plateau(1.0, {"query_only": 1.0, "label_multiset": 1.0, "full_pairs": 1.0}) == 3
    close = {"query_only": 0.36, "label_multiset": 0.97, "full_pairs": 1.0}
    assert name_plateau(0.96, close) == 3 and name_plateau(0.4, close) == 1


def test_summarise_three_phases_and_a_climb_cut_by_the_window():
    s = summarise(THREE, CEIL)
    assert s.seen == (1, 2, 3) and s.seen_text == "1 → 2 → 3" and len(s.transitions) == 3
    assert abs(s.levels[1] - 0.36) < 0.01 and abs(s.levels[2] - 0.80) < 0.01
    climbing = run_with([0.03, 0.36, 0.80], [(1000, 2000), (20000, WINDOW)])
    s = summarise(climbing, CEIL)
    assert s.seen == (1, 2) and s.rising == 2 and s.seen_text == "1 → (2)"
    assert len(s.transitions) == 2 and s.transitions[-1][1] == WINDOW  # the last climb runs into the end


def test_the_plateau_rule_keeps_a_short_plateau_the_robust_rule_merges():
    """A 0.2-decade plateau between two rises whose log-grid exceedances lie one grid point apart."""
    short = run_with([0.03, 0.36, 0.80], [(2000, 4000), (6400, 9600)])
    s = summarise(short, CEIL)
    assert s.rule == "plateau" and s.seen == (1, 2) and len(s.transitions) == 2
    assert s.robust.rule == "robust" and s.robust.seen == (2,) and s.both_text == "1 → 2 [robust: 2]"
    assert summarise(short, CEIL, rule="robust").robust is None


def test_truncated_cuts_the_metrics_only():
    r = truncated(THREE, 5000)
    assert r.steps[-1] == 5000 and len(r.metrics["acc"]) == 51 and len(THREE.metrics["acc"]) == len(STEPS)


def _summary(seen, final, rising=None, cfg=Config(), curve=None):
    """A summary whose plateaus are `seen` at their ceilings (and `rising` climbed into at the end), read off a run
    of WINDOW steps ending at `final` unless its curve is given."""
    levels = {k: CEIL[c] for k, c in zip((1, 2, 3), CEIL) if k in seen}
    curve = curve or {"step": np.array([0.0, WINDOW]), "acc": np.array([0.03, final])}
    return Summary(Run(Path("s"), cfg, curve, {}, []), CEIL, "plateau", [], [], 0, levels, final, rising)


def test_judge_sequences_and_skips():
    """Sequences must match exactly (a prefix still below the last ceiling cannot tell); skips are
    judged on plateaus, and need a later phase reached."""
    three = ("sequence", (1, 2, 3))
    assert judge(_summary((1, 2, 3), 1.0), three) is True
    assert judge(_summary((1,), 0.4), three) is None
    assert judge(_summary((1, 3), 1.0), three) is False
    assert judge(_summary((2, 3), 1.0), ("skips", (1,))) is True
    assert judge(_summary((1, 2, 3), 1.0), ("skips", (1,))) is False
    assert judge(_summary((1,), 0.4), ("skips", (2,))) is None
    assert judge(_summary((1,), 0.8, rising=2), ("skips", (2,))) is None  # climbing past 2 is no plateau
    assert judge(_summary((1, 3), 1.0), ("skips any", (1, 2))) is True
    assert judge(_summary((1, 2, 3), 1.0), ("skips any", (1, 2))) is False
    claim = ("skips", (1,))
    seeds = [[_summary((2, 3), 1.0)] * 2, [_summary((2, 3), 1.0), _summary((), 0.05)],
             [_summary((2, 3), 1.0), _summary((), 0.05), _summary((1, 3), 1.0)]]
    assert [paper_check("x", s, claim, "p").ok for s in seeds] == [True, None, False]
    assert paper_check("x", seeds[2], claim, "p").why.startswith("seed 0 kept a plateau at Phase 1")  # what we saw
    assert paper_check("x", [_summary((1, 3), 1.0)], three, "p").why == "seed 0 showed 1 → 3"
    assert paper_check("x", seeds[1], claim, "p").why.startswith(f"the run ended before it could tell: seed 0 cut at "
                                                                  f"{WINDOW:,} steps")
    steps = np.arange(0, CAP + 1, 1000.0)
    flat, rising = np.full(len(steps), 0.37), np.interp(steps, [0, 0.75 * CAP, CAP], [0.37, 0.37, 0.6])
    at_cap = {k: _summary((1,), 0.37, curve={"step": steps, "acc": acc})
              for k, acc in (("flat", flat), ("rising", rising))}
    assert settled(at_cap["flat"].run) and not settled(at_cap["rising"].run) and not settled(_summary((1,), 0.4).run)
    assert judge(at_cap["flat"], ("skips", (2,))) is False and judge(at_cap["flat"], three) is False  # finished
    assert judge(at_cap["rising"], ("skips", (2,))) is None and judge(at_cap["rising"], three) is None  # may still come
    assert paper_check("x", [at_cap["flat"]], ("skips", (2,)), "p").why == (
        "seed 0 showed 1 and was flat at the cap of 400,000 steps (+0.000 accuracy per 10^5 steps over its last "
        "quarter): no later phase came")
    split = dataclasses.replace(_summary((2, 3), 1.0), robust=_summary((1, 2, 3), 1.0))
    check = paper_check("x", [split], claim, "p")  # the plateau rule decides; the robust reading is named
    assert check.ok is True and "[robust: 1 → 2 → 3]" in check.ours
    assert check.why == "the robust rule would read it as not matched"


def test_phase_table_lists_plateaus_against_ceilings_and_the_paper():
    s = summarise(run_with([0.03, 0.80, 1.0], [(1000, 3000), (20000, 30000)], Config(num_classes=32)), CEIL)
    table = phase_table([s], "classes")
    assert "| K=32 | 0 | 2 → 3 |" in table and "– / 0.360" in table and "small K skips Phase 1" in table
    assert f"| 1.000 | {int(STEPS[-1]):,} | small K" in table  # the accuracy at the end, then the step it ended at


def test_first_plateau_and_task_order_checks():
    s = _summary((1, 2), 0.8, cfg=Config(num_tasks=3))
    (check,) = first_plateau_checks([s])
    assert check.ok is True and "1/T = 0.333" in check.paper
    per_task = {f"acc_task{t}": np.interp(STEPS, [0, 5000 * (t + 1), WINDOW], [0, 1, 1]) for t in range(3)}
    run = run_with([0.1, 0.9], [(1000, 2000)], Config(beta=1.0), per_task)
    assert task_order_check(run).ok is True
    late_first = {**per_task, "acc_task0": per_task["acc_task2"], "acc_task2": per_task["acc_task0"]}
    assert task_order_check(run_with([0.1, 0.9], [(1000, 2000)], Config(beta=1.0), late_first)).ok is False


def test_smoothing_check_prefers_gentler_curves():
    def summary(edges, p_bursty):
        return Summary(run_with([0.03, 1.0], [edges], Config(p_bursty=p_bursty)), CEIL, "plateau", [], [], 0, {}, 1.0,
                       None)

    steep, gentle = (1000, 1200), (1000, 40000)
    assert max_jump(summary(steep, 0.0).run) > max_jump(summary(gentle, 0.0).run)
    assert smoothing_check([summary(steep, 0.0), summary(gentle, 1.0)], "p_bursty").ok is True
    failed = smoothing_check([summary(gentle, 0.0), summary(steep, 1.0)], "p_bursty")
    assert failed.ok is False and failed.why == "the steepest rise grew from 0.0 → 1.0"


def test_smoothing_check_reads_every_run_over_the_shortest_ones_steps():
    """A jump a longer run makes after the shorter runs ended is no jump they had the steps to show."""
    steps = np.arange(0, 3 * WINDOW + 1, 100)
    late = np.interp(steps, [0, 1000, 40000, 2 * WINDOW, 2 * WINDOW + 200], [0.03, 0.03, 0.5, 0.5, 1.0])
    longer = Run(Path("l"), Config(p_bursty=1.0), {"step": steps.astype(float), "acc": late}, {}, [])
    gentle = run_with([0.03, 0.5], [(1000, 40000)], Config(p_bursty=0.0))
    check = smoothing_check([Summary(r, CEIL, "plateau", [], [], 0, {}, 1.0, None) for r in (gentle, longer)],
                            "p_bursty")
    assert check.ok is True and check.seeds == f"2 runs, first {WINDOW:,} steps"


def test_varied_keeps_runs_that_change_only_the_given_fields():
    kws = ({}, {"num_classes": 32}, {"num_classes": 32, "eps": 0.5})
    a, b, c = (_summary((1,), 0.4, cfg=Config(**kw)) for kw in kws)
    assert varied([a, b, c], ("num_classes",)) == [a, b]
    assert varied([a, b, c], ("num_classes", "eps")) == [a, b, c]


def test_phase2_gap_and_map_checks():
    """Longer contexts leave the SCC ceiling no room below the FCC one; the map check counts only runs
    that reached Phase 3."""
    assert phase2_gap(ceilings(Config(), n=5_000)) > MIN_GAP > phase2_gap(ceilings(Config(num_seq=8), n=5_000))
    cells = [[[_summary((1, 2, 3), 1.0)], [_summary((1, 3), 1.0)], [_summary((1,), 0.4)]]]
    (check,) = map_checks("m", cells, np.array([[True, False, False]]))
    assert check.ok is True and "2 of 2" in check.ours
    (check,) = map_checks("m", cells, np.array([[True, True, True]]))
    assert check.ok is False and "1 of 2" in check.ours and check.beyond
    assert check.why == ("default (seed 0) showed 1 → 3 where the map's ceilings (one instance per setting) "
                         "leave Phase 2 room")  # names the run
    assert map_checks("m", [[[_summary((1,), 0.4)]]], np.array([[True]])) == []  # tests nothing: no row


def test_query_class_accuracy_falls_with_noise():
    assert query_class_accuracy(Config(eps=0.1), n=2_000) > 0.99
    assert query_class_accuracy(Config(eps=30.0), n=2_000) < 0.5


def test_phase_table_without_a_sweep_labels_what_changed():
    rows = [_summary((1,), 0.4), _summary((2, 3), 1.0, cfg=Config(num_classes=32, eps=0.5, seed=3, steps=10))]
    table = phase_table(rows)
    assert "| default | 0 | 1 |" in table and "| K=32, ε=0.5 | 3 | 2 → 3 |" in table


def test_summary_plateaus_are_named_by_their_ceiling():
    """A run that climbs straight to the top has one plateau, named 3 (not 'the first phase'), and one rise."""
    straight = summarise(run_with([0.03, 1.0], [(1000, 20_000)]), CEIL)
    assert [ph.index for ph in straight.plateaus] == [3] and len(straight.transitions) == 1
    assert [ph.index for ph in summarise(THREE, CEIL).plateaus] == [1, 2, 3]
    with pytest.raises(ValueError, match="rule must be"):
        summarise(THREE, CEIL, rule="paper")


def test_a_pause_near_chance_is_no_phase():
    """A plateau nearer the untrained accuracy than every ceiling (a bump from 0.03 to 0.10) is named 0: it
    is neither Phase 1 nor a rise between phases, so a run that then climbs smoothly to the top is smooth."""
    assert name_plateau(0.10, CEIL, start=0.03) == 0 and name_plateau(0.10, CEIL) == 1
    assert name_plateau(0.25, CEIL, start=0.03) == 1
    bump = run_with([0.03, 0.10, 0.36, 0.80], [(300, 400), (3000, 4000), (20_000, 30_000)])
    s = summarise(bump, CEIL)
    assert s.seen == (1, 2) and [p.index for p in s.plateaus] == [1, 2] and len(s.transitions) == 2
    smooth = summarise(run_with([0.03, 0.10, 1.0], [(300, 400), (3000, 50_000)]), CEIL)
    assert smooth.plateaus == [] and len(smooth.transitions) == 1 and smooth.seen == (3,)


def test_map_cells_give_each_sequence_with_its_fraction_of_seeds():
    """A map cell with several seeds names each phase sequence with the fraction of seeds showing it, most
    common first (its colour); one seed keeps its robust reading; an empty cell was not run."""
    from types import SimpleNamespace

    from icl_meta.book.plots import cell_patterns, cell_text

    def seed(seen, both=None):
        return SimpleNamespace(seen=seen, both_text=both or " → ".join(map(str, seen)))

    cell = [seed((1, 3)), seed((1, 2, 3)), seed((1, 2, 3))]
    assert cell_patterns(cell) == [("1 → 2 → 3", 2), ("1 → 3", 1)]
    assert cell_text(cell) == "1 → 2 → 3: 2/3\n1 → 3: 1/3"
    assert cell_patterns([seed((1, 3)), seed((1, 2))])[0] == ("1 → 3", 1)  # a tie: the first seed's
    assert cell_text([seed((1, 2), "1 → 2 [robust: 1]")]) == "1 → 2\n[robust: 1]"
    assert cell_text([]) == "not run"


def test_seed_spread_spans_the_seeds_on_the_steps_they_all_logged():
    from types import SimpleNamespace

    from icl_meta.book.plots import seed_spread

    steps = np.arange(0, 500, 100)
    runs = [SimpleNamespace(steps=steps[:n], metrics={"acc": a[:n]})
            for n, a in ((5, np.array([0.1, 0.2, 0.5, 0.9, 1.0])), (4, np.array([0.1, 0.3, 0.4, 0.8])))]
    at, lo, hi = seed_spread(runs, "acc")
    assert np.array_equal(at, steps[:4])
    assert np.allclose(lo, [0.1, 0.2, 0.4, 0.8]) and np.allclose(hi, [0.1, 0.3, 0.5, 0.9])
    runs[1].steps = steps[:4] + 1
    with pytest.raises(ValueError, match="same steps"):
        seed_spread(runs, "acc")


def test_parting_step_and_table_say_how_far_phase_2_got_before_phase_3():
    """The accuracy and the random-label accuracy part where the model starts to read the pairs; the table gives
    the random-label accuracy's highest value by then against the SCC ceiling. A run that never reached Phase 3
    gives no row; one whose two curves never part says so."""
    edges = [(1000, 2000), (8000, 12000), (30000, 40000)]
    acc = run_with([0.03, 0.36, 0.80, 1.0], edges).metrics["acc"]
    full = run_with([0.03, 0.36, 0.80, 1.0], edges, extra={"acc_random_label": np.minimum(acc, 0.80)})
    assert parting_step(full) in (32500, 32600)  # the accuracy passes 0.80 + 0.05 a quarter into its last climb
    edges = [(1000, 2000), (10000, 40000)]
    acc = run_with([0.03, 0.36, 1.0], edges).metrics["acc"]
    cut = run_with([0.03, 0.36, 1.0], edges, extra={"acc_random_label": np.minimum(acc, 0.5)})
    acc = run_with([0.03, 1.0], edges[:1]).metrics["acc"]
    blind = run_with([0.03, 1.0], edges[:1], extra={"acc_random_label": acc})  # T = 1: labels carry nothing
    early = run_with([0.03, 0.36], [(1000, 2000)], extra={"acc_random_label": np.full(len(STEPS), 0.36)})
    assert parting_step(blind) is None and multiset_reach(blind) is None
    assert multiset_reach(cut)[1] == 0.5 and multiset_reach(cut)[0] == parting_step(cut)
    rows = parting_table([summarise(r, CEIL) for r in (full, cut, blind, early)]).splitlines()[2:]
    assert len(rows) == 3  # `early` never reached Phase 3
    rl_ceiling = f"{random_label_ceiling(Config(), n=20_000):.3f}"  # each row's, on the default instance
    assert rows[0].startswith(f"| default | 0 | 1 → 2 → 3 | 0.800 | 0.800 | {rl_ceiling} | 32,")
    assert f"| 1 → 3 | 0.500 | 0.800 | {rl_ceiling} | " in rows[1]  # Phase 2 cut short: multiset stopped at 0.5
    assert "never (within 0.05 to the end)" in rows[2]
    three = ("sequence", (1, 2, 3))
    assert seen_instead(summarise(cut, CEIL), three) == ("seed 0 showed 1 → 3: Phase 2 cut short, its random-label "
                                                         "accuracy at 0.500 of its ceiling 0.800 when the pairing "
                                                         "began (chapter 10, random labels)")
    full_reach = run_with([0.03, 0.36, 1.0], edges, extra={"acc_random_label": np.minimum(cut.metrics["acc"], 0.85)})
    assert seen_instead(summarise(full_reach, CEIL), three) == (
        "seed 0 showed 1 → 3: no pause at the SCC level, though its random-label accuracy had reached 0.850, at or "
        "above its ceiling 0.800, when the pairing began (chapter 10, random labels)")
    assert seen_instead(summarise(run_with([0.03, 0.36, 1.0], edges), CEIL), three) == "seed 0 showed 1 → 3"


def test_seen_instead_names_a_label_multiset_plateau_flat_at_the_cap():
    """A run flat at the cap on a plateau whose SCC and FCC ceilings lie within MIN_GAP is named Phase 3; if its
    accuracy never parted from its random-label accuracy it never read the pairs, and the why says so. While it
    could still climb (the 60,000-step window), or where the ceilings leave Phase 2 room, the why does not."""
    close = {"query_only": 0.36, "label_multiset": 0.96, "full_pairs": 1.0}
    steps = np.arange(0, CAP + 1, 100)
    acc = np.interp(steps, [0, 2000, 6000], [0.03, 0.03, 0.93])
    metrics = {"step": steps.astype(float), "acc": acc, "acc_random_label": acc + 0.02}
    flat = summarise(Run(Path("synthetic"), Config(), metrics, {}, []), close)
    three = ("sequence", (1, 2, 3))
    assert flat.seen == (3,) and judge(flat, three) is False
    assert seen_instead(flat, three) == ("seed 0 showed 3: its accuracy never parted from its random-label accuracy, "
                                         "so it never read the pairs; a label-multiset plateau at 0.93, named Phase 3 "
                                         "because its SCC and FCC ceilings (0.96, 1.00) lie within 0.05 (chapter 10, "
                                         "random labels)")
    window = Run(Path("synthetic"), Config(), {k: v[steps <= WINDOW] for k, v in metrics.items()}, {}, [])
    assert seen_instead(summarise(window, close), three) == "seed 0 showed 3"
    apart = {**close, "label_multiset": 0.90}
    assert "never read the pairs" not in seen_instead(summarise(flat.run, apart), three)


def test_plot_parting_draws_both_curves_the_ceiling_and_the_parting_step():
    import matplotlib.pyplot as plt

    from icl_meta.book.plots import plot_parting

    acc = THREE.metrics["acc"]
    run = run_with([0.03, 0.36, 0.80, 1.0], [(1000, 2000), (8000, 12000), (30000, 40000)],
                   extra={"acc_random_label": np.minimum(acc, 0.80)})
    fig, ax = plt.subplots()
    plot_parting(ax, summarise(run, CEIL), "t")
    labels = ax.get_legend_handles_labels()[1]
    assert {"accuracy", "random-label accuracy", "the two part", "Phase 1", "Phase 2", "Phase 3"} <= set(labels)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "training step" and ax.get_title() == "t\nSCC ceiling 0.80"
    plt.close(fig)
