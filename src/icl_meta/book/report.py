"""The "Did it reproduce?" box that closes every chapter: the paper's number, ours, seeds, verdict."""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.readings import end_slope
from ..runs import Run


@dataclass(frozen=True)
class Check:
    """One reproduced quantity. ok: True matched, False did not, None open (not comparable).

    why: one sentence saying why a ✗ (or an open verdict) came out so, shown beside it. beyond: the claim
    is ours, not the paper's (chapters 8 and 12): it can hold or fail, never "match".
    """

    what: str
    paper: str
    ours: str
    seeds: str
    ok: bool | None
    why: str = ""
    beyond: bool = False

    @property
    def mark(self) -> str:
        """✓, ✗ or ○: distinct shapes, so the verdict survives a grey-scale print."""
        return {True: "✓", False: "✗", None: "○"}[self.ok]

    @property
    def verdict(self) -> str:
        words = ({True: "holds", False: "fails", None: "open"} if self.beyond
                 else {True: "matched", False: "did not match", None: "open (not comparable)"})[self.ok]
        return f"{self.mark} {words}" + (" (beyond the paper)" if self.beyond else "")

    @property
    def verdict_why(self) -> str:
        """The verdict with its reason, if one was given."""
        return self.verdict + (f": {self.why}" if self.why else "")


def md_cell(text: object) -> str:
    """Text safe inside a Markdown table cell: "|" escaped, line breaks flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def within(ours: float, paper: float, tol: float) -> bool:
    return abs(ours - paper) <= tol


def over_seeds(verdicts: list[bool | None]) -> bool | None:
    """One verdict from the seeds': not matched if any seed fails, else not comparable if any seed
    gives no verdict, else matched."""
    return False if False in verdicts else (None if None in verdicts else True)


def seeds_text(n: int = 1, seed: int | None = None) -> str:
    """The seeds column of a check: '3 seeds' for n seeds, 'seed 0' for the one named seed."""
    return f"seed {seed}" if seed is not None else f"{n} seed{'s' * (n > 1)}"


def reading_text(runs: list[Run]) -> str:
    """The seeds column of a check read on whole runs: their seeds and how long they ran ('3 seeds, 288,000-366,200
    steps', 'seed 0, 400,000 steps'): a run ends where it held 99% or at its cap (the window-length sweep runs'
    60,000 steps, the full-length ones' 400,000)."""
    ends = sorted({int(r.steps[-1]) for r in runs})
    who = seeds_text(len(runs), runs[0].config.seed if len(runs) == 1 else None)
    return who + (f", {ends[0]:,} steps" if len(ends) == 1 else f", {ends[0]:,}-{ends[-1]:,} steps")


def end_text(run: Run) -> str:
    """Where a run ended and how fast it still climbed: its last step and the slope of its accuracy over its last
    quarter (readings.end_slope)."""
    return f"{int(run.steps[-1]):,} steps ({end_slope(run):+.3f} accuracy per 10^5 steps over its last quarter)"


def unfinished_text(runs: list[Run]) -> str:
    """Why a check over these runs is open, for the runs that leave it open: each was cut at its cap before
    the claim could be decided, with how fast it still climbed (end_text)."""
    cut = "; ".join(f"seed {r.config.seed} cut at {end_text(r)}" for r in runs)
    return f"{'the run' if len(runs) == 1 else 'the runs'} ended before it could tell: {cut}"


def reproduction_table(checks: list[Check]) -> str:
    """A Markdown table for a chapter's closing box (renders in Jupyter, Colab and the built book)."""
    lines = ["**Did it reproduce?** Every value in the *ours* column was computed when this page ran.", "",
             "| quantity | paper | ours | seeds | verdict |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(md_cell(x) for x in (c.what, c.paper, c.ours, c.seeds, c.verdict_why)) + " |"
              for c in checks]
    return "\n".join(lines)
