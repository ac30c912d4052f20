"""The kernel-free explorers of chapters 10 and 12: any column of any sweep (two dropdowns over one set of
thinned curves) and the room for Phase 2 over (T, K) with a slider over N."""

import numpy as np
import plotly.io as pio
import pytest

from icl_meta import Config, ceilings, shipped
from icl_meta.analysis.phasemap import MIN_GAP, phase2_gap, setting_label
from icl_meta.book.interactive import ceiling_grid, log_thin, room_explorer, sweep_explorer
from icl_meta.sweeps import sweep

COLUMNS = ["acc", "loss", "L2H1_label_attention"]


@pytest.fixture(scope="module")
def runs():
    default = shipped("default")
    return {name: shipped(name) + default for name in ("classes", "noise")}


@pytest.fixture(scope="module")
def sweep_fig(runs):
    return sweep_explorer(runs, COLUMNS, "sweeps", start=("noise", "loss"), points=120)


def run_of(runs, fig, i):
    """The run drawn by trace i, found by its sweep (legend group) and its setting and seed (hover)."""
    trace = fig.data[i]
    name = trace.legendgroup.split(":")[0]
    seed = int(trace.hovertemplate.split("<br>")[0].rsplit("seed ", 1)[1])
    return name, next(r for r in runs[name] if setting_label(r.config, sweep(name).fields) == trace.name
                      and r.config.seed == seed)


def test_log_thin_keeps_logged_points_spread_on_a_log_axis():
    steps = np.arange(0, 100_001, 100)
    keep = log_thin(steps, 50)
    assert steps[keep[0]] == 100 and steps[keep[-1]] == 100_000  # both ends kept, step 0 left out
    assert len(keep) <= 50 and np.all(np.diff(keep) > 0)
    assert np.diff(np.log10(steps[keep]))[-10:].max() < 0.1  # late points log-spaced (3 decades / 49)
    assert list(log_thin(steps[:11], 50)) == list(range(1, 11))  # a short curve is kept whole


def test_sweep_menu_shows_exactly_each_sweeps_runs(runs, sweep_fig):
    menu = sweep_fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == [f"{n} ({sweep(n).figure})" for n in runs]
    assert len(sweep_fig.data) == sum(len(rs) for rs in runs.values())
    for button, name in zip(menu.buttons, runs):
        visible = button.args[0]["visible"]
        assert sum(visible) == len(runs[name])
        assert all(v == (run_of(runs, sweep_fig, i)[0] == name) for i, v in enumerate(visible))
    assert menu.active == 1 and [t.visible for t in sweep_fig.data] == menu.buttons[1].args[0]["visible"]


def test_column_menu_puts_each_runs_thinned_curve_on_its_metric(runs, sweep_fig):
    menu = sweep_fig.layout.updatemenus[1]
    assert [b.label for b in menu.buttons] == COLUMNS and menu.active == COLUMNS.index("loss")
    for button, column in zip(menu.buttons, COLUMNS):
        assert button.args[1]["yaxis.title.text"] == column
        for i, (trace, y) in enumerate(zip(sweep_fig.data, button.args[0]["y"])):
            run = run_of(runs, sweep_fig, i)[1]
            at = np.searchsorted(run.steps, trace.x)
            assert np.array_equal(run.steps[at], trace.x) and len(y) == len(trace.x) <= 120
            assert np.allclose(y, run.metrics[column][at], atol=1e-4, equal_nan=True)
            assert column in button.args[0]["hovertemplate"][i]
    shown = run_of(runs, sweep_fig, 0)[1]
    assert np.allclose(sweep_fig.data[0].y, shown.metrics["loss"][np.searchsorted(shown.steps, sweep_fig.data[0].x)])


def test_sweep_explorer_stays_light(sweep_fig):
    assert len(pio.to_json(sweep_fig)) < 1_500_000


def test_room_explorer_cells_are_the_phase2_gap_of_each_setting():
    tasks, classes, seqs = [1, 3], [4, 64], [2, 4]
    grid = ceiling_grid(Config(), tasks, classes, seqs, n=300)
    fig = room_explorer(grid, tasks, classes, seqs, "room")
    assert [f.name for f in fig.frames] == ["2", "4"] and fig.layout.sliders[0].active == 1  # opens at N = 4
    cell = fig.frames[1].data[0]
    expected = phase2_gap(ceilings(Config(num_tasks=3, num_classes=64, num_seq=4), n=300))
    assert cell.z[1][1] == pytest.approx(expected, abs=1e-6)
    assert cell.customdata[1][1] == ("visible" if expected >= MIN_GAP else "no room")
    assert cell.z[0][1] == pytest.approx(0.0, abs=1e-9) and cell.customdata[0][1] == "no room"  # T = 1
    assert np.isnan(cell.z[1][0]) and cell.text[1][0] == ""  # K = 4 < N + 1: not a valid setting
    assert not np.isnan(fig.frames[0].data[0].z[1][0])  # at N = 2 it is
    scale = fig.data[0].colorscale
    assert scale[1][0] == scale[2][0] == pytest.approx(MIN_GAP / fig.data[0].zmax)  # the break is at MIN_GAP
