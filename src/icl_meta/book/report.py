"""The "Did it reproduce?" box that closes every chapter: the paper's number, ours, seeds, verdict."""

from __future__ import annotations

from dataclasses import dataclass

from ..sweeps import WINDOW


@dataclass(frozen=True)
class Check:
    """One reproduced quantity. ok: True matched, False did not, None not comparable."""

    what: str
    paper: str
    ours: str
    seeds: str
    ok: bool | None

    @property
    def verdict(self) -> str:
        return {True: "✓ matched", False: "✗ did not match", None: "– not comparable"}[self.ok]


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
    lines += [f"| {c.what} | {c.paper} | {c.ours} | {c.seeds} | {c.verdict} |" for c in checks]
    return "\n".join(lines)
