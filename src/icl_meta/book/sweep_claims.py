"""The data chapters' checks against the paper (chapters 10-12: paper Fig. 7, 15, 18, 19 and the phase
maps): the phase table of a sweep, and each setting's phases seen judged against what the paper reports
(paper.PAPER_SEEN). The readings come from `icl_meta.analysis.phasemap`.

Every verdict reads the plateau rule (Methods §Phase rules), the robust rule's reading shown beside it; a
run that ended before the claim could be decided gives none (its why says where it was cut, and its slope).
"""

from __future__ import annotations

import numpy as np

from ..analysis.phasemap import (MIN_GAP, PHASE_OF_CEILING, Summary, changed_label, max_jump, setting_label,
                                 settled, truncated, varied)
from ..analysis.readings import multiset_reach, steps_to
from ..bayes import random_label_ceiling
from ..runs import Run
from ..sweeps import setting_name, sweep
from .paper import PAPER_SEEN, PAPER_WORDS
from .report import Check, end_text, over_seeds, reading_text, seeds_text, unfinished_text

# The sweeps each data chapter reads (10: tasks, classes, noise, Zipf; 11: burstiness, context length),
# and the phase maps of chapter 12 with their axes.
DATA_CHAPTERS = (("tasks", "classes", "noise", "class_zipf", "task_zipf"), ("burstiness", "context"))
MAPS = {"map_classes_noise": "(K, ε)", "map_tasks_context": "(T, N)"}
TOP_CEILING = {k: c for c, k in PHASE_OF_CEILING.items()}
VERDICT_WORDS = {True: "as matched", False: "as not matched", None: "as not comparable"}


def phase_table(summaries: list[Summary], name: str | None = None) -> str:
    """Markdown: setting -> phases seen -> Phase-1 and Phase-2 plateaus against their Bayes ceilings, and where
    the run ended (the step it held 99% to, or its cap). For one sweep (name), settings are labelled by its fields,
    next to what the paper reports for them (paper.PAPER_WORDS); without a name, by what they change from the
    defaults."""
    fields = sweep(name).fields if name else None
    words = PAPER_WORDS.get(name, {})
    lines = ["| setting | seed | phases seen (plateau rule) | robust rule | transitions (robust / paper rule) | "
             "Phase-1 plateau / ceiling | Phase-2 plateau / ceiling | accuracy at the end | ended at step | paper |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        cfg = s.run.config
        cells = []
        for k, c in ((1, "query_only"), (2, "label_multiset")):
            cells.append(f"{s.levels[k]:.3f} / {s.ceilings[c]:.3f}" if k in s.levels else f"– / {s.ceilings[c]:.3f}")
        label = setting_label(cfg, fields) if fields else changed_label(cfg)
        paper = words.get(setting_name({f: getattr(cfg, f) for f in fields}), "") if fields else ""
        robust = s.robust or s
        lines.append(f"| {label} | {cfg.seed} | {s.seen_text} | {robust.seen_text} | {len(robust.transitions)} / "
                     f"{s.paper_transitions} | {cells[0]} | {cells[1]} | {s.final_acc:.3f} | "
                     f"{int(s.run.steps[-1]):,} | {paper} |")
    return "\n".join(lines)


def parting_table(summaries: list[Summary], n_mc: int = 20_000) -> str:
    """Markdown, one row per run that reached Phase 3: how far the unpaired reading of the context had got when the
    model began to read the pairs. The random-label accuracy is blind to which item carries which label, so until
    it parts from the accuracy (`readings.parting_step`) every gain the context gave came without the pairing; its
    highest value by then, against the SCC ceiling, says whether Phase 2 was complete when Phase 3 began. The
    random-label ceiling (`bayes.random_label_ceiling`, on the run's instance, rebuilt from its config) bounds what
    the shuffled sequences allow: above the SCC ceiling, the model read the context's classes as well as its labels."""
    lines = ["| setting | seed | phases seen | random-label accuracy: highest before it parts from the accuracy | "
             "SCC ceiling | random-label ceiling | the two part at step | accuracy there |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        if 3 not in s.seen:
            continue
        run, scc = s.run, s.ceilings["label_multiset"]
        ceil = f"{scc:.3f} | {random_label_ceiling(run.config, n=n_mc):.3f}"
        reach = multiset_reach(run)
        if reach is None:
            cells = f"– | {ceil} | never (within 0.05 to the end) | –"
        else:
            step, peak = reach
            cells = f"{peak:.3f} | {ceil} | {step:,} | {run.metrics['acc'][run.steps == step][0]:.3f}"
        lines.append(f"| {changed_label(run.config)} | {run.config.seed} | {s.seen_text} | {cells} |")
    return "\n".join(lines)


def judge(s: Summary, claim: tuple[str, tuple[int, ...]]) -> bool | None:
    """One run against a PAPER_SEEN claim: True, False, or None when the run ended too early to tell (a run
    that ended flat at the cap did not: `phasemap.settled`). Skips are judged on plateaus (a phase only passed
    through while climbing is not a plateau), and need a later phase reached: a run at the top whose last plateau is
    named no later than the claim's phases (two ceilings closer than the accuracy's climb) cannot tell."""
    kind, ks = claim
    if kind == "sequence":
        if s.seen == ks:
            return True
        early = s.seen == ks[:len(s.seen)] and s.final_acc < s.ceilings[TOP_CEILING[ks[-1]]] - MIN_GAP
        return None if early and not settled(s.run) else False
    beyond = bool(s.seen) and max(s.seen) > max(ks)
    present = [k in s.levels for k in ks]
    missing = not any(present) if kind == "skips" else not all(present)
    if not missing:
        return False
    return True if beyond else (False if settled(s.run) else None)


def seen_instead(s: Summary, claim: tuple[str, tuple[int, ...]]) -> str:
    """What a run that fails a PAPER_SEEN claim showed instead, in a few words: the phases it went through, or
    the plateaus a claimed skip kept; for a run flat at the cap short of the claim's phases, that no later phase
    came. A claimed Phase 2 the run went past without a plateau gets how far the label-multiset strategy had got
    when the pairing began (`parting_table`, chapter 10), or, where that strategy had reached its ceiling, that
    the run went past the SCC level without pausing there; a run flat at the cap whose two accuracies never parted
    never read the pairs: its last plateau is the label multiset's, named Phase 3 only because its SCC and FCC
    ceilings lie too close to name apart."""
    kind, ks = claim
    seed = s.run.config.seed
    if settled(s.run) and not (bool(s.seen) and max(s.seen) >= max(ks)):
        return f"seed {seed} showed {s.seen_text} and was flat at the cap of {end_text(s.run)}: no later phase came"
    if kind == "sequence":
        text = f"seed {seed} showed {s.seen_text}"
        cut = 2 in ks and 2 not in s.seen and 3 in s.seen and "acc_random_label" in s.run.metrics
        reach = multiset_reach(s.run) if cut else None
        if reach is not None:
            got, ceiling = reach[1], s.ceilings["label_multiset"]
            if got < ceiling:
                how = f"Phase 2 cut short, its random-label accuracy at {got:.3f} of its ceiling {ceiling:.3f}"
            else:
                how = (f"no pause at the SCC level, though its random-label accuracy had reached {got:.3f}, at or "
                       f"above its ceiling {ceiling:.3f},")
            text += f": {how} when the pairing began (chapter 10, random labels)"
        elif cut and settled(s.run) and s.ceilings["full_pairs"] - s.ceilings["label_multiset"] < MIN_GAP:
            text += (f": its accuracy never parted from its random-label accuracy, so it never read the pairs; a "
                     f"label-multiset plateau at {s.final_acc:.2f}, named Phase 3 because its SCC and FCC ceilings "
                     f"({s.ceilings['label_multiset']:.2f}, {s.ceilings['full_pairs']:.2f}) lie within {MIN_GAP} "
                     "(chapter 10, random labels)")
        return text
    kept = [k for k in ks if k in s.levels]
    plateaus = ", ".join(f"Phase {k} ({s.levels[k]:.2f})" for k in kept)
    return f"seed {seed} kept a plateau at {plateaus} on its way through {s.seen_text}"


def paper_check(what: str, summaries: list[Summary], claim: tuple[str, tuple[int, ...]], paper: str) -> Check:
    """A PAPER_SEEN claim over every seed of a setting, by the plateau rule: matched if every seed matches,
    not matched if some seed fails, else not comparable (a seed's run ended too early). The robust
    rule's reading is listed where it differs, and named in the why when it would judge otherwise."""
    ours = "phases seen, by seed: " + "; ".join(s.both_text for s in summaries)
    verdicts = [judge(s, claim) for s in summaries]
    ok = over_seeds(verdicts)
    other = over_seeds([judge(s.robust or s, claim) for s in summaries])
    why = ""
    if ok is False:
        why = "; ".join(seen_instead(s, claim) for s, v in zip(summaries, verdicts) if v is False)
    elif ok is None:
        why = unfinished_text([s.run for s, v in zip(summaries, verdicts) if v is None])
    if other != ok:
        why += ("; " if why else "") + f"the robust rule would read it {VERDICT_WORDS[other]}"
    return Check(what, paper, ours, reading_text([s.run for s in summaries]), ok, why)


def sweep_checks(name: str, summaries: list[Summary]) -> list[Check]:
    """One check per setting of a sweep that the paper reads (PAPER_SEEN), over the setting's seeds."""
    fields = sweep(name).fields
    checks = []
    for key, (claim, paper) in PAPER_SEEN.get(name, {}).items():
        same = [s for s in summaries if setting_name({f: getattr(s.run.config, f) for f in fields}) == key]
        if same:
            checks.append(paper_check(setting_label(same[0].run.config, fields), same, claim, paper))
    return checks


def first_plateau_checks(summaries: list[Summary]) -> list[Check]:
    """Paper Fig. 7a, 18: the first plateau sits near 1/T. Ours: its level by the plateau rule (the robust
    rule's beside it where it differs), next to the query-only ceiling, which is what a memorised query can
    reach (a little above 1/T: tasks can share a class's label)."""
    def fmt(v):
        return "none" if v is None else f"{v:.3f}"

    checks = []
    for T in sorted({s.run.config.num_tasks for s in summaries if s.run.config.num_tasks > 1}):
        same = [s for s in summaries if s.run.config.num_tasks == T]
        levels = [s.levels.get(1) for s in same]
        robust = [(s.robust or s).levels.get(1) for s in same]
        ours = ", ".join(fmt(v) if fmt(v) == fmt(r) else f"{fmt(v)} [robust: {fmt(r)}]" for v, r in zip(levels, robust))
        ceil = np.mean([s.ceilings["query_only"] for s in same])
        ok = all(v is not None and abs(v - 1 / T) <= 0.05 for v in levels)
        on_ceiling = all(v is not None and abs(v - ceil) <= 0.02 for v in levels)
        why = ("" if ok else
               f"more than 0.05 from 1/T, but on the query-only Bayes ceiling ({ceil:.3f}), the reference chapter 1 "
               "argues for (tasks can share a class's label)" if on_ceiling else
               "no Phase-1 plateau in some seed" if None in levels else "more than 0.05 from 1/T")
        checks.append(Check(f"T={T}: Phase-1 plateau", f"≈ 1/T = {1 / T:.3f}",
                            f"{ours} (query-only ceiling {ceil:.3f})", seeds_text(len(same)), ok,
                            why))
    return checks


def task_order_check(run: Run, level: float = 0.9) -> Check:
    """Paper Fig. 7e: with Zipf-distributed tasks the most frequent one (task 0) is learned first.
    Ours: the step at which each task's accuracy first reaches `level`."""
    firsts = [steps_to(run, level, f"acc_task{t}") for t in range(run.config.num_tasks)]
    ours = ", ".join(f"task {t}: {'never' if v is None else f'{v:,}'}" for t, v in enumerate(firsts))
    done = [v for v in firsts[1:] if v is not None]
    ok = firsts[0] is not None and all(firsts[0] < v for v in done)
    return Check(f"β={run.config.beta}: first task to reach {level:.0%}", "the most frequent (task 0)", ours,
                 reading_text([run]), ok)


def smoothing_check(summaries: list[Summary], field: str) -> Check:
    """Paper Fig. 15: a larger p_B smooths the curve. Ours: the steepest log-axis jump (max_jump) of
    each setting, seeds averaged, must not grow with the field's value; every run is read over the steps the
    shortest of them ran (a later phase of a longer run is no jump the others had the steps to show)."""
    values = sorted({getattr(s.run.config, field) for s in summaries})
    common = min(int(s.run.steps[-1]) for s in summaries)
    jumps = [np.mean([max_jump(truncated(s.run, common)) for s in summaries if getattr(s.run.config, field) == v])
             for v in values]
    ours = ", ".join(f"{v}: {j:.3f}" for v, j in zip(values, jumps))
    ok = bool(np.all(np.diff(jumps) <= 0.01)) if len(values) > 1 else None
    steeper = [f"{a} → {b}" for a, b, d in zip(values, values[1:], np.diff(jumps)) if d > 0.01]
    why = f"the steepest rise grew from {', '.join(steeper)}" if ok is False else ""
    return Check(f"steepest rise in a tenth of a decade as {field} grows", "smaller (smoother)", ours,
                 f"{len(summaries)} runs, first {common:,} steps", ok, why)


def data_checks(names: tuple[str, ...], summaries: list[Summary]) -> list[Check]:
    """Every check of the named 1-D sweeps (their chapters' "Did it reproduce?" rows)."""
    by_sweep = {name: varied(summaries, sweep(name).fields) for name in names}
    checks = [c for name in names for c in sweep_checks(name, by_sweep[name])]
    if "tasks" in names:
        checks += first_plateau_checks(by_sweep["tasks"])
    if "task_zipf" in names:
        checks += [task_order_check(s.run) for s in by_sweep["task_zipf"] if s.run.config.beta > 0]
    if "burstiness" in names:
        single = [s for s in by_sweep["burstiness"] if s.run.config.burstiness == 1]
        checks.append(smoothing_check(single, "p_bursty"))
    return checks


def map_checks(label: str, cells: list[list[list[Summary]]], predicted: np.ndarray) -> list[Check]:
    """Ours, not the paper's: does the ceilings' prediction say where Phase 2 shows? Judged on the runs
    that reached Phase 3 (only there is a missing Phase 2 a skip, not a wait); a map
    with no such run tests nothing and gives no check."""
    decided, disagree = 0, []
    for j, row in enumerate(cells):
        for i, cell in enumerate(row):
            for s in cell:
                if 3 in s.seen:
                    decided += 1
                    if (2 in s.seen) != bool(predicted[j, i]):
                        room = "leave" if predicted[j, i] else "leave no"
                        disagree.append(f"{changed_label(s.run.config)} (seed {s.run.config.seed}) showed "
                                        f"{s.seen_text} where the map's ceilings (one instance per setting) {room} "
                                        "Phase 2 room")
    if not decided:
        return []
    return [Check(f"{label}: Phase 2 seen exactly where the ceilings leave it room", "– (beyond the paper)",
                  f"{decided - len(disagree)} of {decided} runs that reached Phase 3", "all seeds", not disagree,
                  "; ".join(disagree), beyond=True)]
