"""The "Did it reproduce?" rows: verdicts over seeds, the seeds column, and the chapter's table."""

import re
from pathlib import Path

import numpy as np
import pytest

from icl_meta import Config
from icl_meta.analysis.readings import end_slope
from icl_meta.book.report import Check, over_seeds, reading_text, reproduction_table, seeds_text, unfinished_text
from icl_meta.runs import Run


def test_over_seeds_fails_on_any_failure_and_abstains_on_any_abstention():
    assert over_seeds([True, True]) is True
    assert over_seeds([True, None]) is None
    assert over_seeds([None, False, True]) is False


def test_seeds_text_counts_or_names_seeds():
    assert seeds_text(3) == "3 seeds"
    assert seeds_text(1) == "1 seed"
    assert seeds_text(seed=2) == "seed 2"


def run_to(end: int, seed: int = 0, rise: float = 0.0) -> Run:
    """A run logged every 100 steps to `end`, its accuracy rising by `rise` per 10^5 steps from 0.5."""
    steps = np.arange(0, end + 1, 100)
    return Run(Path("r"), Config(seed=seed), {"step": steps.astype(float), "acc": 0.5 + rise * steps / 1e5}, {})


def test_reading_text_gives_the_seeds_and_where_their_runs_ended():
    assert reading_text([run_to(60_000)]) == "seed 0, 60,000 steps"
    assert reading_text([run_to(300_000, s) for s in range(3)]) == "3 seeds, 300,000 steps"
    assert reading_text([run_to(288_000, 0), run_to(366_200, 1)]) == "2 seeds, 288,000-366,200 steps"


def test_unfinished_text_reports_where_each_run_was_cut_and_its_slope():
    """A run cut while climbing is reported with its slope over its last quarter, never silently."""
    text = unfinished_text([run_to(400_000, 1, rise=0.02)])
    assert "seed 1 cut at 400,000 steps (+0.020 accuracy per 10^5 steps" in text
    assert end_slope(run_to(60_000, rise=-0.1)) == pytest.approx(-0.1)


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
