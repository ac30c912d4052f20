"""The checks of the chapters on the default setting and its controls (chapters 3-8): the paper's
numbers (`paper`) next to the ones measured on the shipped runs, as `report.Check` rows.

Everything here is computed from run artifacts through `icl_meta.analysis`; the paper's values come from
`icl_meta.book.paper`, the only module with typed-in numbers.
"""

from __future__ import annotations

import numpy as np

from ..analysis.readings import final_level, layer_patterns, learned_phases, phase_steps, steps_to
from ..analysis.surgery import EFFECT, Edit, verdict_flags, verdicts
from ..bayes import scc_theory_accuracy
from ..config import CIRCUITS
from ..probes import METRICS, induction_score, metric_column
from ..runs import Run, shipped
from .paper import PAPER_CIRCUITS, PAPER_LEVELS
from .report import Check, md_cell, seeds_text


RULES = ("plateau", "robust", "paper")


def phase_rows(runs, rule: str = "plateau") -> list[dict]:
    """One row per run: seed, transitions (none for the plateau rule, which finds plateaus directly),
    the level of each learned phase, the learned phases themselves, and whether the run ended climbing."""
    rows = []
    for run in runs:
        learned = learned_phases(run, rule)
        rows.append({"seed": run.config.seed, "final_step": int(run.steps[-1]), "phases": learned,
                     "transitions": [] if rule == "plateau" else run.phases()[rule]["transitions"],
                     "levels": {p.index: p.level for p in learned},
                     "climbing": any(getattr(p, "climbing", False) for p in learned)})
    return rows


def plateau_counts(runs, rule: str = "plateau") -> list[int]:
    """Learned plateaus per run: the end level of a run that ended climbing is not a plateau."""
    return [len([p for p in r["phases"] if not getattr(p, "climbing", False)]) for r in phase_rows(runs, rule)]


def rule_disagreements(runs) -> list[int]:
    """Seeds on which the transition rules (robust, paper) count a different number of learned phases
    than the plateau rule."""
    counts = {rule: plateau_counts(runs, rule) for rule in RULES}
    return [run.config.seed for i, run in enumerate(runs) if len({counts[r][i] for r in RULES}) > 1]


def _stretches(row: dict, rule: str) -> str:
    """A phase_rows row's plateaus (plateau rule) or transitions (the others), as step ranges."""
    if rule == "plateau":
        return "; ".join(f"{p.start:,}–{p.end:,}" + (" (climbing)" if p.climbing else "") for p in row["phases"])
    return "; ".join(f"{a:,}–{b:,}" for a, b in row["transitions"]) or "none"


def rules_table(runs) -> str:
    """Markdown: per seed and rule, the learned phases counted, their levels and where they lie (plateaus for
    the plateau rule, transitions for the others): the three rules side by side."""
    table = ["| seed | rule | phases | levels | plateaus (plateau rule) or transitions (steps) |",
             "|---|---|---|---|---|"]
    for rule in RULES:
        for row, n in zip(phase_rows(runs, rule), plateau_counts(runs, rule)):
            levels = ", ".join(f"{v:.3f}" for v in row["levels"].values()) or "none"
            table.append(f"| {row['seed']} | {rule} | {n} | {levels} | {md_cell(_stretches(row, rule))} |")
    return "\n".join(table)


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–"


def phase_checks(runs, rule: str = "plateau") -> list[Check]:
    """Three phases per seed, and each plateau inside the paper's range. The verdict uses the plateau
    rule (Methods §Phase rules): it finds the flat stretches the paper's claim is about, where the
    transition rules can merge two rises close together and lose the plateau between them."""
    rows = phase_rows(runs, rule)
    seeds = f"{len(runs)} seeds"
    counts = plateau_counts(runs, rule)
    climbing = [r["seed"] for r in rows if r["climbing"]]
    checks = [Check(f"phases seen ({rule} rule)", "3", ", ".join(map(str, counts)), seeds,
                    all(c == 3 for c in counts),
                    why=("" if all(c == 3 for c in counts) else
                         "not every seed shows three plateaus" + (f"; seeds {climbing} ended climbing" if climbing
                                                                   else "")))]
    three = [r for r, c in zip(rows, counts) if c == 3 and len(r["levels"]) == 3]  # phase k is the paper's k
    seeds = ("seeds " + ", ".join(str(r["seed"]) for r in three) + " (3 phases seen)" if three
             else "no seed with 3 phases")
    for k, (lo, hi) in PAPER_LEVELS.items():
        vals = [r["levels"][k] for r in three]
        ok = bool(vals) and all(lo - 0.02 <= v <= hi + 0.02 for v in vals)
        why = "" if ok else ("no seed shows three phases" if not vals else
                             f"a level lies outside {lo - 0.02:.2f}–{hi + 0.02:.2f} (the paper's range ± 0.02)")
        checks.append(Check(f"Phase {k} plateau accuracy", f"{lo:.2f}–{hi:.2f}", _spread(vals), seeds, ok, why))
    return checks


def paper_rule_check(runs) -> Check:
    """Phases counted by the paper's own rule at its own knobs (Δt = 100, threshold 0.025; Methods §Phase
    rules), beside `phase_checks`: the rule the paper states, whatever it finds."""
    counts = [len(r["levels"]) for r in phase_rows(runs, "paper")]
    ok = all(c == 3 for c in counts)
    return Check("phases seen by the paper's rule (Δt = 100, threshold 0.025)", "3", ", ".join(map(str, counts)),
                 f"{len(runs)} seeds", ok, why="" if ok else
                 "a 100-step Δt misses rises spread over thousands of steps and fires on late noise (Figure 3.2)")


def reading_steps(run: Run, rule: str = "plateau") -> dict[int, int]:
    """The step at which each learned phase is read: the checkpoint nearest the middle of its plateau when
    the plateau holds one (the step chapter 8's surgery edits, so chapters 4 and 8 read the same model),
    else the evaluated step nearest that middle (readings.phase_steps)."""
    phases = learned_phases(run, rule)
    return {**phase_steps(run, phases, checkpoints=False), **phase_steps(run, phases)}


def circuit_rows(run: Run, rule: str = "plateau") -> list[dict]:
    """Per learned phase: its step (`reading_steps`), the metrics of both layers, the pattern each layer
    changed to (readings.layer_patterns: against the previous phase, Phase 1 against initialisation) and
    the paper's Table 1 entry."""
    rows = []
    for k, step, now, patterns in layer_patterns(run, reading_steps(run, rule)):
        paper = PAPER_CIRCUITS.get(k, ("–", "–", "–"))
        rows.append({"phase": k, "step": step, "metrics": now, "patterns": patterns, "paper": paper,
                     "match": patterns == paper[1:]})
    return rows


def circuit_checks(run, rule: str = "plateau") -> list[Check]:
    """Paper Table 1, row by row, as the question "is each phase's pattern visible in the batch-mean
    attention metric?": does each layer's most-risen metric at the phase's step (readings.layer_patterns)
    name the paper's pattern? Whether the pattern is causally needed is chapter 8's question
    (`surgery_checks`)."""
    checks = []
    by_phase = {r["phase"]: r for r in circuit_rows(run, rule)}
    for k, (name, l1, l2) in PAPER_CIRCUITS.items():
        r = by_phase.get(k)
        ours = f"L1 {r['patterns'][0]}, L2 {r['patterns'][1]} (step {r['step']:,})" if r else "phase not reached"
        why = "" if r and r["match"] else ("the run shows no such phase" if not r else
                                             _pattern_why(r, (l1, l2)))
        checks.append(Check(f"Phase {k} ({name}) visible in the batch-mean attention metric",
                            f"L1 {l1}, L2 {l2}", ours, seeds_text(seed=run.config.seed),
                            r["match"] if r else False, why))
    return checks


def _pattern_why(row: dict, paper: tuple[str, str]) -> str:
    """One sentence for a ✗ of `circuit_checks`: what the batch-mean metrics of each layer that misses the
    paper's pattern name instead, and the paper's pattern's value there."""
    off = [f"layer {i} reads as {row['patterns'][i - 1]} ({p} {row['metrics'][i][p]:.2f})"
           for i, p in enumerate(paper, start=1) if row["patterns"][i - 1] != p]
    return "; ".join(off) + ": a batch mean can hide a pattern that surgery (chapter 8) finds needed"


def circuit_table(runs, rule: str = "plateau") -> str:
    """Markdown: paper Table 1, measured (`circuit_rows` of every run): per seed and learned phase, the
    step read, both layers' metrics (bigram / label attention / chunk example), the patterns read, and
    the paper's circuit."""
    lines = ["| seed | phase | step | L1 bigram / label / chunk | L2 bigram / label / chunk | measured (L1, L2) | "
             "paper |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        for r in circuit_rows(run, rule):
            m1, m2 = (" / ".join(f"{v:.2f}" for v in r["metrics"][layer].values()) for layer in (1, 2))
            name, l1, l2 = r["paper"]
            lines.append(f"| {run.config.seed} | {r['phase']} | {r['step']:,} | {m1} | {m2} | "
                         f"{', '.join(r['patterns'])} | {name}: {l1}, {l2} |")
    return "\n".join(lines)


# ---- circuit-restricted training (Fig. 13), the semi-context circuit (Fig. 5, 6), induction heads (Fig. 12)

def _steps(steps: list[int | None]) -> str:
    return ", ".join("never" if t is None else f"{t:,}" for t in steps)


def restricted_runs(name: str = "masks") -> dict[str, list]:
    """The shipped circuit-restricted runs grouped by circuit (NCC, SCC, FCC), each sorted by seed."""
    runs = shipped(name)
    return {c: [r for r in runs if r.config.masks == masks] for c, masks in CIRCUITS.items()}


def restricted_checks(restricted: dict[str, list], full: list, ceil: dict[str, float]) -> list[Check]:
    """Fig. 13: each circuit-restricted model plateaus at its phase's level; FCC-only learns at once.

    restricted: circuit name -> runs trained with that circuit's masks; ceil: Bayes ceilings of the default setting.
    FCC-only "at once" is read as: it reaches 99% in under a third of the steps the full model needs
    (medians over seeds) with a single transition (robust rule).
    """
    checks = []
    levels = {name: [final_level(r) for r in restricted.get(name, [])] for name in ("NCC", "SCC")}
    for name, k in (("NCC", 1), ("SCC", 2)):
        vals = levels[name]
        lo, hi = PAPER_LEVELS[k]
        checks.append(Check(f"{name}-only model plateau", f"Phase {k} level {lo:.2f}–{hi:.2f}", _spread(vals),
                            f"{len(vals)} seeds", bool(vals) and all(lo - 0.02 <= v <= hi + 0.02 for v in vals)))
    ncc = levels["NCC"]
    checks.append(Check("NCC-only plateau vs Bayes query-only ceiling", f"≤ {ceil['query_only']:.3f}",
                        _spread(ncc), f"{len(ncc)} seeds",
                        bool(ncc) and all(v <= ceil["query_only"] + 0.02 for v in ncc)))
    fcc = restricted.get("FCC", [])
    t_fcc = [steps_to(r, 0.99) for r in fcc]
    t_full = [steps_to(r, 0.99) for r in full]
    n_tr = [len(r.phases()["robust"]["transitions"]) for r in fcc]
    reached = bool(fcc) and None not in t_fcc + t_full
    sooner = reached and np.median(t_fcc) < np.median(t_full) / 3
    ok = sooner and all(n == 1 for n in n_tr)
    why = ("" if ok else "a run never reached 99%" if not reached else
           "not three times sooner than the full model" if not sooner else "a run rose in more than one jump")
    checks.append(Check("FCC-only model learns at once", "reaches 100% far sooner than the full model, one jump",
                        f"99% at steps {_steps(t_fcc)} (full model: {_steps(t_full)}); transitions {n_tr}",
                        f"{len(fcc)} + {len(full)} seeds", ok, why))
    return checks


def scc_theory_checks(runs, tol: float = 0.03) -> list[Check]:
    """Fig. 5: the SCC-restricted model under the App. D conditions ends on p + (1 - p)/2."""
    checks = []
    for k in sorted({r.config.num_classes for r in runs}):
        these = [r for r in runs if r.config.num_classes == k]
        vals = [final_level(r) for r in these]
        theory = scc_theory_accuracy(k, these[0].config.num_seq)
        checks.append(Check(f"SCC accuracy, K = L = {k}", f"theory {theory:.3f}", _spread(vals),
                            f"{len(these)} seeds", all(abs(v - theory) <= tol for v in vals)))
    return checks


def random_label_checks(runs, per_seed: list[dict[str, float]], rule: str = "plateau") -> list[Check]:
    """Fig. 6: random-label accuracy rises with Phase 2 and stays at the SCC level after it.

    Read at the middle of Phase 2 (RLA close to the in-distribution accuracy, within 0.05) and over the
    last 10% of the run (RLA inside the paper's Phase-2 band, as for the plateau checks, and under the
    Bayes query + label multiset ceiling of the run's instance).
    """
    lo, hi = PAPER_LEVELS[2]
    rise, stay, seeds = [], [], []
    for run, ceil in zip(runs, per_seed):
        mid = phase_steps(run, learned_phases(run, rule), checkpoints=False).get(2)
        if mid is None or len(learned_phases(run, rule)) != 3:
            continue
        i = int(np.searchsorted(run.steps, mid))
        rise.append((run.metrics["acc"][i], run.metrics["acc_random_label"][i]))
        stay.append((final_level(run, "acc_random_label"), ceil["label_multiset"]))
        seeds.append(run.config.seed)
    where = "seeds " + ", ".join(map(str, seeds)) + " (3 phases seen)" if seeds else "no seed with 3 phases"
    tracks = bool(rise) and all(abs(a - r) <= 0.05 for a, r in rise)
    stays = bool(stay) and all(lo - 0.02 <= v <= min(hi + 0.02, c + 0.02) for v, c in stay)
    return [
        Check("random-label accuracy in Phase 2", "≈ training accuracy",
              "; ".join(f"{a:.3f} vs {r:.3f}" for a, r in rise) + " (acc vs RLA)", where, tracks,
              "" if tracks else "a seed's random-label accuracy differs from its accuracy by more than 0.05"),
        Check("random-label accuracy after Phase 3", f"stays at the SCC level ({lo:.2f}–{hi:.2f})",
              "; ".join(f"{v:.3f} (ceiling {c:.3f})" for v, c in stay), where, stays,
              "" if stays else f"a seed ends outside {lo - 0.02:.2f}–{hi + 0.02:.2f} or above its Bayes ceiling: "
              "random-label accuracy falls after Phase 3 instead of staying"),
    ]


def induction_checks(runs, label: str) -> list[Check]:
    """Fig. 12: one jump to 100%, layer 1 chunking each pair and layer 2 reading the matching pair's
    label at the end (both above 0.5), and copying of novel classes (copy set)."""
    seeds = f"{len(runs)} seeds"
    n_tr = [len(r.phases()["robust"]["transitions"]) for r in runs]
    final = [final_level(r) for r in runs]
    one = all(n == 1 for n in n_tr) and all(v >= 0.98 for v in final)
    checks = [Check(f"{label}: a single jump to 100%", "1 transition", f"{n_tr}, final accuracy {_spread(final)}",
                    seeds, one, "" if one else "a run rose in more than one jump or ended below 0.98")]
    chunk = [float(r.metrics[metric_column(1, 1, "chunk_example")][-1]) for r in runs]
    copy = [final_level(r, "acc_copy") for r in runs]
    ind = [induction_score(r.model(), r.probe(), 2) for r in runs]
    for what, paper, vals in ((f"{label}: layer 1 chunks each pair", "Chunk Example high", chunk),
                              (f"{label}: layer 2 attends to the matching pair's label", "copies from context", ind),
                              (f"{label}: accuracy on novel classes (copy set)", "high (an induction head copies)",
                               copy)):
        ok = all(v > 0.5 for v in vals)
        checks.append(Check(what, paper, _spread(vals), seeds, ok,
                            "" if ok else "at most 0.5 in some run (0.5 is the line for 'high')"))
    return checks


# ---- circuit surgery (chapter 8)

def surgery_checks(tables: dict[int, dict[str, dict[str, float]]], effect: float = EFFECT) -> list[Check]:
    """Paper Table 1 tested causally, beyond the paper (which observes the patterns, never removes them):
    in each phase's checkpoint (tables: phase -> surgery table), is each layer's Table-1 pattern causally
    needed, i.e. does removing it cost at least `effect` accuracy? Whether the pattern is visible in the
    batch-mean metric is chapter 4's question (`circuit_checks`)."""
    names = dict(enumerate(CIRCUITS, start=1))  # phase k uses the k-th circuit
    checks = []
    for k, table in sorted(tables.items()):
        if k not in names:
            continue
        for layer, pattern in enumerate(CIRCUITS[names[k]], start=1):
            v = verdicts(table, layer, pattern, effect)
            base, cut = table["none"]["in_dist"], table[str(Edit(layer, pattern, "remove"))]["in_dist"]
            keep = table[str(Edit(layer, pattern, "keep"))]["in_dist"]
            why = "" if v["necessary"] else f"removing it costs {base - cut:.3f}, under the {effect:.2f} threshold"
            checks.append(Check(f"Phase {k} ({names[k]}): layer {layer} {pattern} causally needed (surgery)",
                                "Table 1 names it (observed, not tested)",
                                f"remove: {base:.3f} → {cut:.3f}; keep only: {keep:.3f} "
                                f"({'sufficient' if v['sufficient'] else 'not sufficient'})",
                                seeds_text(seed=0), v["necessary"], why, beyond=True))
    return checks


def surgery_flag_table(tables: dict[int, dict[str, dict[str, float]]]) -> str:
    """Markdown: each (layer, pattern) row's verdict flags (analysis.surgery.verdict_flags) in each phase's
    checkpoint (tables: phase -> surgery table), starred where paper Table 1 names that pattern."""
    lines = ["| layer / pattern | " + " | ".join(f"Phase {k} ({PAPER_CIRCUITS[k][0]})" for k in tables) + " |",
             "|---" * (len(tables) + 1) + "|"]
    for layer in (1, 2):
        for pattern in METRICS:
            cells = [verdict_flags(t, layer, pattern) + ("\\*" if PAPER_CIRCUITS[k][layer] == pattern else "")
                     for k, t in tables.items()]
            lines.append(f"| L{layer} {pattern} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def visible_vs_needed_table(run: Run, tables: dict[int, dict[str, dict[str, float]]], at: dict[int, int]) -> str:
    """Markdown: paper Table 1's pattern of each phase and layer, read two ways side by side. Chapter 4's
    reading (`circuit_rows`): the batch-mean metric at its step and whether the layer visibly changed to the
    pattern there; chapter 8's: whether removing the pattern in the phase's checkpoint (at: phase -> step;
    tables: phase -> surgery table) costs accuracy (`verdicts`). The two questions can get different answers,
    since a pattern can carry the answer on the rows that matter while the mean over batch and rows stays low."""
    seen = {r["phase"]: r for r in circuit_rows(run)}
    lines = ["| phase | step (ch. 4 / ch. 8) | layer: Table-1 pattern | batch-mean metric (ch. 4) | visible (ch. 4) | "
             "causally needed (ch. 8) |", "|---|---|---|---|---|---|"]
    for k, table in tables.items():
        name, *patterns = PAPER_CIRCUITS[k]
        for layer, pattern in enumerate(patterns, start=1):
            r = seen.get(k)
            step = f"{r['step']:,}" if r else "–"
            value = f"{r['metrics'][layer][pattern]:.2f}" if r else "–"
            read = r["patterns"][layer - 1] if r else None
            visible = "–" if r is None else "✓ yes" if read == pattern else f"✗ no (reads {read})"
            needed = "✓ yes" if verdicts(table, layer, pattern)["necessary"] else "✗ no"
            lines.append(f"| {k} ({name}) | {step} / {at[k]:,} | L{layer}: {pattern} | {value} | {visible} | "
                         f"{needed} |")
    return "\n".join(lines)
