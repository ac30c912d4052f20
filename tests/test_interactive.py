"""The kernel-free interactive figures: their frames, slider and hover readouts, the HTML that draws them, and
the Sphinx hooks that serve plotly.js from the site and keep its pages free of script errors."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from icl_meta import shipped
from icl_meta.book import interactive
from icl_meta.book.interactive import PLOTLY_FILE, figure_html, head_scrubber, layer_scrubber, unique_scripts


@pytest.fixture(scope="module")
def ref():
    return shipped("default")[0]


@pytest.fixture(scope="module")
def layer_fig(ref):
    rep = ref.phases()["robust"]
    return layer_scrubber(ref, ref.probe(), "seed 0", rep["phases"], rep["transitions"])


def test_layer_scrubber_has_one_frame_and_slider_position_per_checkpoint(ref, layer_fig):
    names = [f.name for f in layer_fig.frames]
    assert names == [str(s) for s in ref.checkpoint_steps]
    steps = layer_fig.layout.sliders[0].steps
    assert [list(s.args[0]) for s in steps] == [[n] for n in names]
    assert layer_fig.layout.sliders[0].active == len(names) - 1  # it opens at the last checkpoint, as drawn
    assert layer_fig.layout.title.text == f"seed 0, step {ref.checkpoint_steps[-1]:,}"


def test_layer_scrubber_frames_carry_both_maps_and_the_marker(ref, layer_fig):
    first, last = layer_fig.frames[0], layer_fig.frames[-1]
    kinds = [layer_fig.data[i].type for i in first.traces]
    assert kinds == ["heatmap", "heatmap", "scatter", "scatter"]
    assert not np.allclose(first.data[0].z, last.data[0].z)  # the untrained map differs from the trained one
    assert last.data[2].x[0] == ref.checkpoint_steps[-1] and first.data[2].x[0] == ref.steps[ref.steps > 0][0]
    assert "weight" in layer_fig.data[0].hovertemplate
    assert last.layout.title.text.endswith(f"{ref.checkpoint_steps[-1]:,}")
    labels = {a.text for a in layer_fig.layout.annotations}
    assert {"layer 1 attention", "layer 2 attention", "layer 1 metrics", "layer 2 metrics"} <= labels


def test_head_scrubber_shows_every_head_and_the_role_timeline():
    run = next(r for r in shipped("heads") if r.config.n_heads == 2 and r.config.seed == 0)
    fig = head_scrubber(run, run.probe(), "H = 2", run.checkpoint_steps[:3])
    maps = [t for t in fig.data if t.type == "heatmap"]
    assert len(maps) == 2 * 2 + 1  # every head of both layers, then the role timeline
    assert list(maps[-1].y) == ["L1 H1", "L1 H2", "L2 H1", "L2 H2"]
    assert [f.name for f in fig.frames] == [str(s) for s in run.checkpoint_steps[:3]]
    assert len(fig.frames[0].traces) == 2 * 2 + 1 and "role" not in fig.frames[0].data[0].hovertemplate


def test_figure_html_draws_from_the_site_or_else_the_cdn(layer_fig):
    html = figure_html(layer_fig)
    div = re.search(r'<div id="(icl-[0-9a-f]+)" class="icl-plotly">', html)
    assert div and f'Plotly.newPlot("{div.group(1)}"' in html
    assert f'root + "_static/{PLOTLY_FILE}"' in html and "cdn.plot.ly" in html  # site first, CDN off-site
    spec = json.loads(re.search(r"var fig = (\{.*?\});\n", html, flags=re.S).group(1))
    assert len(spec["frames"]) == len(layer_fig.frames) and spec["layout"]["sliders"]
    assert len(html) < 1_000_000, "the figure's data should stay small (float32, base64)"


def test_show_displays_html_not_plotly_json(monkeypatch, layer_fig):
    shown = []
    monkeypatch.setattr(interactive, "display", shown.append)
    interactive.show(layer_fig)
    bundle = shown[0]._repr_mimebundle_() if hasattr(shown[0], "_repr_mimebundle_") else None
    assert bundle is None and "icl-plotly" in shown[0]._repr_html_()


def sphinx_app(outdir):
    handlers = {}
    app = SimpleNamespace(outdir=str(outdir), builder=SimpleNamespace(format="html"),
                          connect=lambda event, fn: handlers.setdefault(event, fn))
    return app, handlers


def test_extension_writes_plotlyjs_into_the_built_site(tmp_path):
    app, handlers = sphinx_app(tmp_path)
    interactive.setup(app)
    handlers["build-finished"](app, RuntimeError("failed build"))
    assert not (tmp_path / "_static" / PLOTLY_FILE).exists()
    handlers["build-finished"](app, None)
    assert (tmp_path / "_static" / PLOTLY_FILE).read_text() == get_plotlyjs()


def test_unique_scripts_drops_the_repeated_thebe_configuration():
    from sphinx.builders.html._assets import _JavaScript

    body = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=body), _JavaScript("", body=body),
               _JavaScript("_static/a.js", priority=800)]
    context = {"script_files": scripts}
    unique_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == scripts[:2]


def test_ceiling_explorer_shows_each_regime_with_a_slider_over_context_length():
    from icl_meta import Config

    tasks, classes, seqs = [1, 3], [16, 64], [2, 4]
    grid = interactive.ceiling_grid(Config(), tasks, classes, seqs, n=300)
    assert grid.shape == (2, 3, 2, 2) and not np.isnan(grid).any()
    assert np.allclose(grid[:, 0, 0], 1.0)  # one task: the query alone gives the label
    assert (grid[:, 0, 1] < 0.6).all()  # three tasks: the query-only ceiling falls to about 1/3
    fig = interactive.ceiling_explorer(grid, tasks, classes, seqs, "ceilings")
    assert [f.name for f in fig.frames] == ["2", "4"] and fig.layout.sliders[0].active == 1  # opens at N = 4
    assert np.allclose(fig.frames[0].data[1].z, grid[0, 1]) and "ceiling" in fig.data[0].hovertemplate


def test_figure_html_cannot_be_closed_early_by_a_label():
    import plotly.graph_objects as go

    html = figure_html(go.Figure(layout={"title": {"text": "a </script> b"}}))
    assert html.count("</script>") == 1


def test_scc_explorer_matches_the_formula_and_slides_over_context_length():
    from icl_meta import scc_theory_accuracy

    fig = interactive.scc_explorer([2, 4], [8, 16], n=2_000, title="SCC")
    assert [f.name for f in fig.frames] == ["2", "4"] and fig.layout.sliders[0].active == 1
    formula, simulated = fig.frames[1].data[0], fig.frames[1].data[1]
    assert formula.y[list(formula.x).index(8)] == pytest.approx(scc_theory_accuracy(8, 4))
    assert np.allclose(simulated.y, [scc_theory_accuracy(k, 4) for k in (8, 16)], atol=0.03)


def test_prompt_explorer_shows_each_prompt_with_its_text():
    rng = np.random.default_rng(0)
    per_prompt = {name: rng.random((3, 4)) for name in ("bigram", "label_attention", "chunk_example")}
    texts = ["[demo: <b>great</b> & fun]⏎\n▶Sentiment:", "second", "third"]
    fig = interactive.prompt_explorer(np.arange(1, 5), per_prompt, texts, "LLM")
    assert [f.name for f in fig.frames] == ["0", "1", "2"]
    assert np.allclose(fig.frames[2].data[1].y, per_prompt["label_attention"][2])
    note = fig.layout.annotations[0].text
    assert "&lt;b&gt;great&lt;/b&gt; &amp; fun" in note and "<br>" in note  # escaped, lines kept
    assert fig.frames[1].layout.annotations[0].text == "second"


def test_architecture_explorer_has_one_frame_per_valid_network():
    from icl_meta import Config, make_instance, sample
    from icl_meta.task import generator

    cfg = Config()
    probe = sample(make_instance(cfg), cfg, 32, generator(0))
    configs = [cfg.replace(n_layers=1), cfg.replace(n_layers=3, n_heads=4), cfg.replace(n_heads=3)]  # 3 heads: invalid
    fig = interactive.architecture_explorer(configs, probe, "untrained")
    assert [f.name for f in fig.frames] == ["L = 1, H = 1, attention block", "L = 3, H = 4, attention block"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["L1 H1 atte", "L3 H4 atte"]
    assert "parameters" in fig.layout.title.text and len(fig.data) == 2


def test_map_slider_has_one_frame_per_entry_each_with_its_own_token_names():
    maps = {"2": [np.full((1, 6, 6), 0.1), np.full((1, 6, 6), 0.2)], "4": [np.eye(10)[None], np.eye(10)[None] / 2]}
    names = {"2": [f"a{i}" for i in range(6)], "4": [f"b{i}" for i in range(10)]}
    fig = interactive.map_slider(maps, names, "context", prefix="N = ")
    assert [f.name for f in fig.frames] == ["2", "4"]
    assert fig.layout.title.text == "context, N = 4"  # opens at the last entry, as drawn
    assert list(fig.frames[0].data[0].x) == names["2"] and np.allclose(fig.frames[0].data[1].z, 0.2)
    assert np.allclose(fig.frames[1].data[1].z, np.eye(10) / 2)
    with pytest.raises(ValueError, match="one number of layers"):
        interactive.map_slider({"a": maps["2"], "b": maps["2"][:1]}, names, "x")


def test_log_bin_max_keeps_every_spike_and_thins_the_rest():
    t = np.arange(0, 100_000, 100)
    d = np.zeros(len(t))
    d[[5, 500, 999]] = [0.3, 0.05, 0.04]
    tt, dd = interactive.log_bin_max(t, d, per_decade=10)
    assert len(tt) < 60 and np.all(np.diff(tt) > 0)
    assert sorted(dd[dd > 0].tolist()) == [0.04, 0.05, 0.3]


def test_rule_explorer_counts_the_paper_rule_at_every_knob_setting(ref):
    runs = [ref]
    dts, thresholds = [100, 1_000], [0.025, 0.1]
    fig = interactive.rule_explorer(runs, dts, thresholds, "rule")
    counts = fig.data[-1].z
    for i, th in enumerate(thresholds):
        for j, dt in enumerate(dts):
            assert counts[i][j] == len(interactive.paper_boundaries(ref.steps, ref.metrics["acc"], dt, th))
    assert [f.name for f in fig.frames] == ["100", "1000"]
    t, d = interactive.delta_acc(ref.steps, ref.metrics["acc"], 1_000)
    assert np.isclose(max(fig.frames[1].data[0].y), d[t > 0].max(), atol=1e-6)
