"""The chapters' shared plumbing: provenance lines, mean ceilings, and live retraining against a run."""

import pytest

from icl_meta import ceilings
from icl_meta.book.chapter import mean_ceilings, provenance_line, provenance_table, retrain_gap


def test_provenance_line_names_steps_time_and_commit(tiny_run):
    p = tiny_run.provenance
    line = provenance_line(tiny_run)
    assert line.startswith(f"{p['final_step']:,} steps, ") and f"commit {p['git_commit'][:10]}" in line
    assert provenance_line(tiny_run, command=True) == f"{line}; command: {p['command']}"


def test_mean_ceilings_average_each_instance(tiny_run):
    per_seed, mean = mean_ceilings([tiny_run, tiny_run], 500)
    assert per_seed[0] == per_seed[1] == ceilings(tiny_run.config, tiny_run.instance(), n=500)
    assert mean == pytest.approx(per_seed[0])


def test_retrain_gap_is_zero_for_a_run_this_code_made(tiny_run):
    live, gap = retrain_gap(tiny_run, 20)
    assert live.steps[-1] == 20 and gap == 0.0


def test_provenance_table_is_markdown_with_one_row_per_run(tiny_run):
    lines = provenance_table([tiny_run, tiny_run]).splitlines()
    assert lines[0].count("|") == 8 and len([line for line in lines if line.startswith("| ")]) == 3
    assert lines[-1] == f"Command (seed {tiny_run.config.seed}): `{tiny_run.provenance['command']}`"
