"""The architecture chapters' checks against the paper (chapters 13-14): heads (paper Fig. 8, 9, 16, 17),
depth (Fig. 22, 23), the standard transformer block (Fig. 20) and the all-label loss (Fig. 21).

Runs come from `icl-meta sweeps heads depth standard all_labels` (one architecture knob changed from the
defaults) and are read, like the shipped default runs beside them, to their end: the full-length run of a
setting where it is shipped, else the 60,000-step one (`icl_meta.analysis.phasemap.sweep_summaries`). A run
*shows phases* when the plateau rule finds at least two rises (a learned plateau between two climbs); it is
*smooth* with at most one.
As in the data chapters, the verdict is the plateau rule's; the robust rule's reading is shown beside it.
"""

from __future__ import annotations

from ..analysis.heads import head_patterns, head_roles, layer_metrics_at_end, role_switches, steepest_head_change
from ..analysis.phasemap import Summary, max_jump
from ..analysis.readings import layer_patterns, phase_steps, steps_to
from ..probes import METRICS
from .paper import PAPER_CIRCUITS, PAPER_PHASED
from .plots import METRIC_LABELS
from .report import Check, over_seeds, reading_text, unfinished_text

# The sweeps each architecture chapter reads (13: heads; 14: depth, the standard block, the all-label loss).
ARCH_CHAPTERS = (("heads",), ("depth", "standard", "all_labels"))


def phased(s: Summary) -> bool:
    """At least two rises (climbs, or transitions for a robust-rule summary): a plateau between two of them."""
    return len(s.transitions) >= 2


def counted(n: int, noun: str) -> str:
    """'1 rise', '2 rises'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def decided(s: Summary) -> bool:
    """Whether "phases or smooth" is settled by the run's end: it showed phases, or no later phase can come
    (`Summary.finished`: it reached the top, or ended flat at the cap)."""
    return phased(s) or s.finished


def phased_checks(summaries: list[Summary], field: str) -> list[Check]:
    """Per value of field (n_heads or n_layers): phases or smooth, as the paper reports (PAPER_PHASED),
    judged on every seed by the plateau rule, the robust rule's count beside it. A seed gives no verdict
    where its run ended before it was decided (see `decided`)."""
    checks = []
    for value, claim in PAPER_PHASED[field].items():
        same = [s for s in summaries if getattr(s.run.config, field) == value]
        if not same:
            continue
        verdicts = [phased(s) == claim if decided(s) else None for s in same]
        ours = "; ".join(f"{counted(len(s.transitions), 'rise')} [robust rule: "
                         f"{counted(len((s.robust or s).transitions), 'transition')}], steepest rise "
                         f"{max_jump(s.run):.2f}, accuracy {s.final_acc:.2f}" for s in same)
        ok = over_seeds(verdicts)
        disagree = any(phased(s) != phased(s.robust or s) for s in same)
        why = (unfinished_text([s.run for s in same if not decided(s)]) if ok is None else
               "" if ok else f"a seed reads as {'smooth' if claim else 'phased'} by the plateau rule"
               + (" (the robust rule reads some seeds otherwise)" if disagree else ""))
        checks.append(Check(f"{field}={value}: phases or smooth", "phases" if claim else "smooth", ours,
                            reading_text([s.run for s in same]), ok, why))
    return checks


def per_seed_check(what: str, paper: str, same: list[Summary], read, sep: str = "; ") -> Check:
    """One check over every seed of a head count: read(s) gives a seed's (reading, verdict); the
    readings are listed seed by seed and the verdicts combined by report.over_seeds."""
    found = [read(s) for s in same]
    ours = sep.join(f"seed {s.run.config.seed}: {text}" for s, (text, _) in zip(same, found))
    ok = over_seeds([ok for _, ok in found])
    why = {True: "", False: "a seed's reading does not show it",
           None: "a seed not finished (below the top, still climbing) may show it later"}
    return Check(f"H={same[0].run.config.n_heads}: {what}", paper, ours, reading_text([s.run for s in same]), ok,
                 why[ok])


def hidden_switch_check(same: list[Summary], factor: float = 2.0) -> Check:
    """Paper Fig. 9: with several heads the accuracy is smooth but a head's metric switches abruptly.
    Ours, per seed: the steepest change of any head's metric in a tenth of a decade against the steepest
    rise of the accuracy in the same run; a seed matches when the head's is at least `factor` times larger."""
    def read(s: Summary) -> tuple[str, bool]:
        (head, column), acc = steepest_head_change(s.run), max_jump(s.run)
        return f"{column} {head:.2f} vs accuracy {acc:.2f}", head >= factor * acc

    return per_seed_check("head metric switches while accuracy rises smoothly", "abrupt head switch, smooth accuracy",
                          same, read)


def hidden_scc_check(same: list[Summary], lo: int = 10_000, hi: int = 100_000) -> Check:
    """Paper Fig. 9: a hidden SCC appears near 3·10^4 steps. Ours, per seed: the first lasting switch of
    a head to the SCC-like role (analysis.heads.role_switches); a seed matches if it falls within half a decade of
    3·10^4 steps. A seed without one by its run's end does not match, unless its run is not finished
    (`Summary.finished`: the switch may come later, not comparable)."""
    def read(s: Summary) -> tuple[str, bool | None]:
        first = next(((layer, head, step) for layer, head, step, _, new in role_switches(s.run, head_roles(s.run))
                      if new == "SCC"), None)
        if first is None:
            return "no head becomes SCC-like", (False if s.finished else None)
        return f"L{first[0]} H{first[1]} at step {first[2]:,}", lo <= first[2] <= hi

    return per_seed_check("a head turns SCC-like", "near 30,000 steps", same, read)


def specialised_check(same: list[Summary]) -> Check:
    """Paper Fig. 8, 9: the heads of a layer specialise. Ours, per seed: the heads' roles at the end of
    its run; a seed matches if some layer has heads with different roles, other than "other", and
    fails if not, unless its run is not finished (its heads may yet specialise: not comparable)."""
    def read(s: Summary) -> tuple[str, bool | None]:
        roles = head_roles(s.run)[:, :, -1]
        layers = "; ".join(f"L{li + 1} " + ", ".join(r) for li, r in enumerate(roles))
        specialised = any(len(set(r) - {"other"}) > 1 for r in roles)
        return layers, (True if specialised else (False if s.finished else None))

    return per_seed_check("heads take different roles", "NCC-like and FCC-like heads", same, read, sep=" / ")


def head_checks(summaries: list[Summary]) -> list[Check]:
    """Every check of the heads chapter: phases per head count, and the 2-head runs' hidden circuits."""
    two = [s for s in summaries if s.run.config.n_heads == 2]
    hidden = [hidden_switch_check(two), hidden_scc_check(two), specialised_check(two)] if two else []
    return phased_checks(summaries, "n_heads") + hidden


def fcc_location_check(s: Summary) -> Check:
    """Paper Fig. 23: in deeper models the FCC pattern sits in the first two layers (Chunk Example in
    layer 1, Label Attention in layer 2). Ours: the layers with the most Chunk Example and the most Label
    Attention at the end of the run, and each layer's pattern (analysis.heads.head_patterns, head 1)."""
    m = layer_metrics_at_end(s.run)
    chunk, label = int(m[:, 2].argmax()) + 1, int(m[:, 1].argmax()) + 1
    patterns = ", ".join(f"L{li + 1} {p}" for li, p in enumerate(head_patterns(s.run)[:, 0, -1]))
    ok = (chunk, label) == (1, 2) if s.finished else None
    return Check(f"{s.run.config.n_layers} layers: where the FCC pattern sits",
                 "Chunk Example in layer 1, Label Attention in layer 2",
                 f"most chunking in L{chunk}, most label attention in L{label} ({patterns}; accuracy "
                 f"{s.final_acc:.2f})", reading_text([s.run]), ok,
                 unfinished_text([s.run]) if ok is None else "" if ok else "the two patterns peak in other layers")


def layer_metrics_table(summaries: list[Summary]) -> str:
    """Markdown: each layer's three metrics (its largest value over heads, `layer_metrics_at_end`) at the end
    of every run, one row per run and layer: where the FCC pattern sits in deeper models (Fig. 23)."""
    rows = ["| layers | seed | layer | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
            "|---|---|---|" + "---|" * len(METRICS)]
    for s in summaries:
        for li, m in enumerate(layer_metrics_at_end(s.run)):
            rows.append(f"| {s.run.config.n_layers} | {s.run.config.seed} | {li + 1} | "
                        + " | ".join(f"{v:.2f}" for v in m) + " |")
    return "\n".join(rows)


def depth_checks(summaries: list[Summary]) -> list[Check]:
    """Every check of the depth sweep: phases per depth, and where the FCC pattern sits in deeper models."""
    deeper = [fcc_location_check(s) for s in summaries if s.run.config.n_layers > 2]
    return phased_checks(summaries, "n_layers") + deeper


def named_circuit_checks(s: Summary, label: str) -> list[Check]:
    """Paper Table 1 for a run whose plateaus need not be Phases 1, 2, 3 in order: at each named plateau
    (`Summary.plateaus`, the plateau rule's, as in chapters 3, 4 and 8; a later plateau of the same name
    wins), the pattern each layer
    changed to since the previous plateau (readings.layer_patterns, chapter 4's rule; the first against
    initialisation), against Table 1's row of that name. A phase missing from a run that reached the top
    was skipped, and from one flat at the cap never came (neither matched); one missing from a run not finished
    (`Summary.finished`) is not comparable (it may come after the run's end)."""
    steps = phase_steps(s.run, s.plateaus, checkpoints=False)
    found = {k: (step, patterns) for k, step, _, patterns in layer_patterns(s.run, steps)}
    seed = reading_text([s.run])
    unfinished = None if s.finished else unfinished_text([s.run])  # the why of a phase not reached
    checks = []
    for k, (name, l1, l2) in PAPER_CIRCUITS.items():
        step, pats = found.get(k, (None, None))
        if pats:
            ours, ok = f"L1 {pats[0]}, L2 {pats[1]} (step {step:,})", pats == (l1, l2)
        elif s.reached_top:
            ours, ok = f"skipped: no Phase-{k} plateau on the way to {s.final_acc:.2f}", False
        elif s.finished:
            ours, ok = f"not reached: flat at {s.final_acc:.2f} at the cap", False
        else:
            ours, ok = "not reached by the run's end", None
        why = {True: "", None: unfinished,
               False: ("the layers' batch-mean metrics name other patterns" if pats else
                       "the phase was skipped" if s.reached_top else "no later phase came")}
        checks.append(Check(f"{label}: Phase {k} circuit ({name})", f"L1 {l1}, L2 {l2}", ours,
                            seed, ok, why[ok]))
    return checks


def block_checks(summaries: list[Summary]) -> list[Check]:
    """Paper Fig. 20: the standard block goes through the same circuits (named_circuit_checks)."""
    return [c for s in summaries if s.run.config.block == "standard" for c in named_circuit_checks(s, "standard block")]


def readout_checks(summaries: list[Summary]) -> list[Check]:
    """Paper Fig. 21: with the loss at every label the accuracy still shows phases, and ends below 100%
    (comparable only if a run with the loss at the query reached 99% within as many steps as the all-label run
    had: the two are compared over the same training time)."""
    query = [s.run for s in summaries if s.run.config.readout == "query"]
    checks = []
    for s in summaries:
        if s.run.config.readout == "all_labels":
            seed = reading_text([s.run])
            ok = phased(s) if decided(s) else None
            reading = f"{s.both_text}, {counted(len(s.transitions), 'rise')}"
            why = unfinished_text([s.run]) if ok is None else "" if ok else "smooth by the plateau rule"
            checks.append(Check("loss at every label: phases", "phases", reading, seed, ok, why))
            end = int(s.run.steps[-1])
            solved = any(t is not None and t <= end for t in (steps_to(r, 0.99) for r in query))
            ok = s.final_acc < 0.99 if solved else None
            checks.append(Check("loss at every label: final accuracy", "below 100%", f"{s.final_acc:.3f}", seed, ok,
                                {True: "", False: "it reached 99%",
                                 None: f"no run with the loss at the query reached 99% within its {end:,} steps"}[ok]))
    return checks
