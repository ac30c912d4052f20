"""The "Did it reproduce?" rows: verdicts over seeds, the seeds column, and the chapter's table."""

import re

from icl_meta.book.report import Check, over_seeds, reproduction_table, seeds_text
from icl_meta.sweeps import WINDOW


def test_over_seeds_fails_on_any_failure_and_abstains_on_any_abstention():
    assert over_seeds([True, True]) is True
    assert over_seeds([True, None]) is None
    assert over_seeds([None, False, True]) is False


def test_seeds_text_counts_or_names_seeds():
    assert seeds_text(3) == f"3 seeds, {WINDOW:,} steps"
    assert seeds_text(1, window=False) == "1 seed"
    assert seeds_text(seed=2) == f"seed 2, {WINDOW:,} steps"
    assert seeds_text(seed=0, window=False) == "seed 0"


def test_reproduction_table_has_one_row_per_check():
    checks = [Check("a", "1", "1.0", "seed 0", True), Check("b", "2", "3", "seed 0", False),
              Check("c", "–", "x", "–", None)]
    table = reproduction_table(checks)
    assert table.count("\n| ") == 1 + len(checks)
    assert "✓ matched" in table and "✗ did not match" in table and "○ open (not comparable)" in table


def test_verdicts_read_in_grey_scale_and_beyond_the_paper():
    """Distinct marks with words; a claim of ours holds or fails, never "matches"; a ✗ carries its why."""
    assert [Check("a", "–", "x", "–", ok).mark for ok in (True, False, None)] == ["✓", "✗", "○"]
    ours = Check("a", "–", "x", "–", True, beyond=True)
    assert ours.verdict == "✓ holds (beyond the paper)" and "matched" not in ours.verdict
    assert Check("a", "1", "2", "–", False, why="too low").verdict_why == "✗ did not match: too low"


def test_table_cells_escape_pipes():
    """A "|" inside a cell (max |Δacc|) is escaped, so every row keeps the header's column count."""
    table = reproduction_table([Check("live retrain", "–", "max |Δacc| 0.0000", "seed 0", True)])
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert {len(re.split(r"(?<!\\)\|", row)) for row in rows} == {7}
