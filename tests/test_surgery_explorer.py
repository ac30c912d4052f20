"""Chapter 8's kernel-free surgery figure (one position per phase checkpoint, layer, pattern and action, the
edited attention and the accuracies of the chapter's table) and its table of ch. 4's reading beside ch. 8's."""

import re

import numpy as np
import plotly.io as pio
import pytest

from icl_meta import attention_maps, shipped
from icl_meta.analysis.surgery import ACTIONS, SETS, Edit, allowed_after, pattern_cells, standard_edits
from icl_meta.book.claims import circuit_rows, visible_vs_needed_table
from icl_meta.book.interactive import surgery_explorer
from icl_meta.probes import METRICS

ACCURACY = re.compile(r"(\w+) (\d\.\d{3}) → (\d\.\d{3})")


@pytest.fixture(scope="module")
def at(tiny_run):
    return {1: tiny_run.checkpoint_steps[1], 2: tiny_run.checkpoint_steps[-1]}


@pytest.fixture(scope="module")
def tables(at):
    """Made-up accuracies, different for every edit, so the figure can only show them by reading them."""
    rng = np.random.default_rng(0)
    return {k: {name: {s: float(rng.random()) for s in SETS} for name in standard_edits()} for k in at}


@pytest.fixture(scope="module")
def fig(tiny_run, at, tables):
    return surgery_explorer(tiny_run, tiny_run.probe(), at, tables, "seed 0")


def position(k: int, step: int, edit: Edit) -> str:
    return f"Phase {k}, step {step:,}: {edit}"


def test_one_frame_and_menu_entry_per_checkpoint_layer_pattern_and_action(fig, at):
    expected = [position(k, s, Edit(layer, p, a)) for k, s in at.items() for layer in (1, 2) for p in METRICS
                for a in ACTIONS]
    assert [f.name for f in fig.frames] == expected and len(expected) == len(at) * 2 * 3 * 2
    menu = fig.layout.updatemenus[0]
    assert [(b.label, list(b.args[0]), b.method) for b in menu.buttons] == [(n, [n], "animate") for n in expected]
    start = expected.index(position(2, at[2], Edit(1, "chunk_example", "remove")))
    assert menu.active == start and fig.layout.title.text == fig.frames[start].layout.title.text
    assert [t.type for t in fig.data] == ["heatmap"] * 4 and all(f.traces == (0, 1, 2, 3) for f in fig.frames)
    assert len(pio.to_json(fig)) < 300_000  # float32 maps: small enough for a page


def test_edited_maps_obey_the_edit_and_the_unedited_ones_are_the_models(fig, tiny_run, at):
    n = tiny_run.config.num_seq
    unedited = [m[0].numpy() for m in attention_maps(tiny_run.model(at[1]), tiny_run.probe())]
    for frame in fig.frames:
        layer, action, pattern = re.search(r"L(\d) (\w+) (\w+)$", frame.name).groups()
        edit = Edit(int(layer), pattern, action)
        after = np.asarray(frame.data[2 + edit.layer - 1].z)
        banned = pattern_cells(pattern, n) if action == "remove" else ~allowed_after(edit, n)
        assert banned.any() and np.all(after[banned.numpy()] == 0), frame.name
        assert np.allclose(after.sum(1), 1, atol=1e-5)  # renormalised: every row still sums to one
        if frame.name.startswith("Phase 1,"):
            assert np.allclose(frame.data[0].z, unedited[0], atol=1e-6)
            assert np.allclose(frame.data[1].z, unedited[1], atol=1e-6)


def test_title_shows_the_tables_accuracies_before_and_after_the_edit(fig, at, tables):
    for frame in fig.frames:
        k = int(re.match(r"Phase (\d)", frame.name).group(1))
        edit = frame.name.split(": ")[1]
        found = ACCURACY.findall(frame.layout.title.text)
        assert found == [(s, f"{tables[k]['none'][s]:.3f}", f"{tables[k][edit][s]:.3f}") for s in SETS]


def test_visible_vs_needed_table_reads_chapter_4_and_the_surgery_table():
    run = shipped("default")[0]
    rows = {r["phase"]: r for r in circuit_rows(run)}
    needed = {k: {name: {"in_dist": 0.9} for name in standard_edits()} for k in rows}
    needed[1]["L2 remove bigram"]["in_dist"] = 0.5  # only phase 1's layer-2 bigram is necessary
    at = {k: 1_000 * k for k in rows}
    lines = visible_vs_needed_table(run, needed, at).splitlines()
    assert len(lines) == 2 + 2 * len(rows) and all(line.count("|") == 7 for line in lines)
    assert [line.endswith("| ✓ yes |") for line in lines[2:]] == [k == 1 and layer == 2 for k in rows
                                                                 for layer in (1, 2)]
    first = lines[2].split(" | ")
    assert first[1] == f"{rows[1]['step']:,} / 1,000" and first[3] == f"{rows[1]['metrics'][1]['bigram']:.2f}"
