"""The "Did it reproduce?" box that closes every chapter: the paper's number, ours, seeds, verdict."""

from __future__ import annotations

from dataclasses import dataclass


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


def reproduction_table(checks: list[Check]) -> str:
    """A Markdown table for a chapter's closing box (renders in Jupyter, Colab and the built book)."""
    lines = ["**Did it reproduce?** Every value in the *ours* column was computed when this page ran.", "",
             "| quantity | paper | ours | seeds | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c.what} | {c.paper} | {c.ours} | {c.seeds} | {c.verdict} |" for c in checks]
    return "\n".join(lines)
