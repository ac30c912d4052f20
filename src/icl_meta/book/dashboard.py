"""The intro's dashboard: every check the chapters make, recomputed from the shipped runs in one table."""

from __future__ import annotations

from ..analysis.phasemap import phase_map, sweep_summaries, varied
from ..analysis.readings import learned_phases, phase_steps
from ..analysis.surgery import standard_edits, surgery_table
from ..runs import shipped
from ..sweeps import ARCH_SWEEPS, DATA_SWEEPS
from .architecture_claims import block_checks, depth_checks, head_checks, readout_checks
from .chapter import mean_ceilings
from .claims import (circuit_checks, induction_checks, paper_rule_check, phase_checks, random_label_checks,
                     restricted_checks, restricted_runs, scc_theory_checks, surgery_checks)
from .mechanism_claims import control_checks, default_check, fresh_batch, long_run_check
from .paper import CHAPTER_CLAIMS
from .report import Check, md_cell
from .sweep_claims import DATA_CHAPTERS, MAPS, data_checks, map_checks


MECHANISM_N = 4_096  # fresh sequences per run for chapter 15's FCC criterion, as the chapter reads it


def dashboard(n_mc: int = 5_000) -> list[tuple[str, Check]]:
    """Every check the chapters make, recomputed from the shipped runs, as (chapter, Check) rows in the
    order of paper.CHAPTER_CLAIMS.

    The LLM claim is only measurable where the Hugging Face Hub is reachable; here it is a row that
    says so. n_mc: Monte-Carlo samples for the Bayes ceilings.
    """
    runs = shipped("default")
    per_seed, ceil = mean_ceilings(runs, n_mc)
    ref = runs[0]
    sets = ref.eval_sets()
    at = phase_steps(ref, learned_phases(ref))
    tables = {k: surgery_table(ref.model(s), sets, standard_edits()) for k, s in at.items()}
    swept = sweep_summaries(DATA_SWEEPS + ARCH_SWEEPS)  # each chapter picks its settings with `varied`
    checks = {
        "3. Three phases": phase_checks(runs) + [paper_rule_check(runs)],
        "4. Circuits": [c for run in runs for c in circuit_checks(run)],
        "5. Circuit-restricted training": restricted_checks(restricted_runs(), runs, ceil),
        "6. The semi-context circuit": scc_theory_checks(shipped("scc_theory")) + random_label_checks(runs, per_seed),
        "7. The induction-head baseline": (induction_checks(shipped("induction"), "T = 1, K = 64")
                                           + induction_checks(shipped("induction_k1024"), "T = 1, K = 1024")),
        "8. Circuit surgery": surgery_checks(tables),
        "9. LLM": [Check("Chunk Example peaks in an earlier layer than Label Attention", "yes (GPT2-XL)",
                         "needs the Hugging Face Hub (Colab); offline the chapter runs a smoke test", "–", None)],
        "10. Data properties I": data_checks(DATA_CHAPTERS[0], swept),
        "11. Data properties II": data_checks(DATA_CHAPTERS[1], swept),
        "12. Phase maps": [c for name, label in MAPS.items() for c in map_checks(label, *phase_map(name, swept)[2:])],
        "13. Heads": head_checks(varied(swept, ("n_heads",))),
        "14. Depth and blocks": (depth_checks(varied(swept, ("n_layers",))) + block_checks(varied(swept, ("block",)))
                                 + readout_checks(varied(swept, ("readout",)))),
        "15. The Phase-3 mechanism": ([default_check(runs, [fresh_batch(r, MECHANISM_N) for r in runs])]
                                      + control_checks(MECHANISM_N) + [long_run_check(MECHANISM_N)]),
    }
    return [(where, c) for where in CHAPTER_CLAIMS for c in checks[where]]


VERDICT_WORDS = {True: "✓ matched or holds", False: "✗ did not match or fails", None: "○ open"}
# The longest a dashboard cell may run, in characters (claim, ours), so that the table fits a 1280 px
# window without a cut column; the chapter holds the full text.
CELL_LIMITS = {"claim": 70, "paper": 50, "ours": 90}


def _short(text: str, limit: int) -> str:
    """text cut to at most limit characters at a word boundary, "…" marking the cut: a word cut in half would
    read as another word (the chapter holds the whole text)."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:(|") + "…"


def _breakable(text: str) -> str:
    """text with a zero-width space after every "_" and "/", so that identifiers such as label_attention may wrap
    there: no single word then sets a column's width, and the table fits the rendered page's content column."""
    return text.replace("_", "_\u200b").replace("/", "/\u200b")


def dashboard_summary(rows: list[tuple[str, Check]]) -> str:
    """Markdown: the ✓ / ✗ / ○ counts over every check, then per chapter with the paper figures it
    reproduces."""
    def counts(checks):
        return [sum(c.ok is v for c in checks) for v in (True, False, None)]

    total = counts([c for _, c in rows])
    lines = [f"**{len(rows)} checks: " + " · ".join(f"{n} {VERDICT_WORDS[v]}" for n, v in
                                                   zip(total, (True, False, None))) + "**", "",
             "| chapter | paper figures | ✓ | ✗ | ○ |", "|---|---|---|---|---|"]
    for where in dict.fromkeys(w for w, _ in rows):
        n = counts([c for w, c in rows if w == where])
        lines.append(f"| {md_cell(where)} | {md_cell(CHAPTER_CLAIMS[where][0])} | " + " | ".join(map(str, n)) + " |")
    return "\n".join(lines)


def dashboard_table(rows: list[tuple[str, Check]]) -> str:
    """The dashboard as Markdown, one line per check, grouped by the paper figures a chapter reproduces:
    verdict first (a mark that survives grey-scale, and its words), the paper figure (named on the first
    row of its group), the claim, what the paper reports, ours with the reason for a ✗ or an open
    verdict, and the seeds. Cells are kept short (CELL_LIMITS) and may wrap inside identifiers (_breakable) so
    that the table fits the page."""
    lines = ["| verdict | paper figure (chapter) | claim | paper | ours | seeds |", "|---|---|---|---|---|---|"]
    previous = None
    for where, c in rows:
        figure = f"{CHAPTER_CLAIMS[where][0]} (ch. {where.split('.')[0]})" if where != previous else ""
        previous = where
        ours = _breakable(_short(c.ours, CELL_LIMITS["ours"])) + (f" — *{_breakable(c.why)}*" if c.why else "")
        cells = (c.verdict, _breakable(figure), _breakable(_short(c.what, CELL_LIMITS["claim"])),
                 _breakable(_short(c.paper, CELL_LIMITS["paper"])), ours, _breakable(c.seeds))
        lines.append("| " + " | ".join(md_cell(x) for x in cells) + " |")
    return "\n".join(lines)
