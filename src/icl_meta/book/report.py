"""The "Did it reproduce?" box that closes every chapter: the paper's number, ours, seeds, verdict."""

from __future__ import annotations

from dataclasses import dataclass

from ..sweeps import WINDOW


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


def seeds_text(n: int = 1, seed: int | None = None, window: bool = True) -> str:
    """The seeds column of a check: '3 seeds, 60,000 steps' for n seeds, 'seed 0, 60,000 steps' for the
    one named seed; window: the runs were read over the sweeps' window (sweeps.WINDOW)."""
    who = f"seed {seed}" if seed is not None else f"{n} seed{'s' * (n > 1)}"
    return who + (f", {WINDOW:,} steps" if window else "")


def reproduction_table(checks: list[Check]) -> str:
    """A Markdown table for a chapter's closing box (renders in Jupyter, Colab and the built book)."""
    lines = ["**Did it reproduce?** Every value in the *ours* column was computed when this page ran.", "",
             "| quantity | paper | ours | seeds | verdict |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(md_cell(x) for x in (c.what, c.paper, c.ours, c.seeds, c.verdict_why)) + " |"
              for c in checks]
    return "\n".join(lines)
