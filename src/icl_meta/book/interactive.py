"""Interactive figures that need no kernel: Plotly figures that carry their data (one frame per checkpoint,
a slider to move between them, hover readouts), so they work the same on the static website, in Jupyter
and in Colab.

Two things make them render in the Jupyter Book 1.x site:

- `show` displays a figure as HTML (a div and a script), never as Plotly's JSON mime type, which myst-nb
  does not render.
- plotly.js comes from the site itself, not a CDN, so the book works offline: `setup` is a Sphinx
  extension (listed in _config.yml) that writes the installed plotly's own plotly.js once into the built
  site's `_static/`, and the script of every figure loads it from there. Outside the book (Jupyter,
  Colab) there is no site, so the script loads the same version from Plotly's CDN instead.

Each chapter's default figure stays a matplotlib image (`plots`); these are its "try it" extras:
`ceiling_explorer` with `ceiling_grid` (chapter 1), `architecture_explorer` (2), `rule_explorer` (3),
`layer_scrubber` (4 and 7), `scc_explorer` (6), `surgery_explorer` (8), `prompt_explorer` (9),
`sweep_explorer` (10), `map_slider` (11 and 14), `room_explorer` (12) and `head_scrubber` (13).
"""

from __future__ import annotations

import html
import itertools
import textwrap
import uuid
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from IPython.display import HTML, display
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs, get_plotlyjs_version
from plotly.subplots import make_subplots

from ..analysis.heads import ROLES, head_roles
from ..analysis.phasemap import MIN_GAP, phase2_gap, setting_label
from ..analysis.surgery import ACTIONS, SETS, Edit, edited
from ..bayes import ceilings, scc_elimination_accuracy, scc_theory_accuracy
from ..config import Config
from ..model import Model
from ..probes import METRICS, attention_maps, delta_acc, metric_column, paper_boundaries
from ..sweeps import sweep
from .plots import CEILING_LABELS, METRIC_LABELS, PHASE_COLOURS, ROLE_COLOURS, TRANSITION_COLOUR, token_names

PLOTLY_FILE = "plotly.min.js"  # under the built site's _static/
CDN_URL = "https://cdn.plot.ly/plotly-{version}.min.js"  # the same plotly.js, for Jupyter and Colab
METRIC_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")  # matplotlib's C0-C2, as in the static metric plots
MAP_HOVER = "query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"

# Loads plotly.js once per page and then draws the figure. Sphinx marks its pages with the path to the
# site's root (data-content_root), so a page of the book loads the site's copy; anywhere else (Jupyter,
# Colab) the CDN's. AMD loaders (require.js in classic Jupyter) are hidden while it loads, or plotly.js
# would register with them instead of defining window.Plotly.
LOADER = """<div id="{id}" class="icl-plotly"></div>
<script type="text/javascript">
(function () {{
  var fig = {fig};
  if (!window.iclPlotly) {{
    window.iclPlotly = new Promise(function (resolve, reject) {{
      if (window.Plotly) {{ resolve(window.Plotly); return; }}
      var root = document.documentElement.getAttribute("data-content_root");
      var amd = window.define;
      window.define = undefined;
      var s = document.createElement("script");
      s.src = root === null ? "{cdn}" : root + "_static/{file}";
      s.onload = function () {{ window.define = amd; resolve(window.Plotly); }};
      s.onerror = function () {{ window.define = amd; reject(new Error("plotly.js did not load from " + s.src)); }};
      document.head.appendChild(s);
    }});
  }}
  window.iclPlotly.then(function (Plotly) {{
    Plotly.newPlot("{id}", fig.data, fig.layout, {{responsive: true, displaylogo: false}}).then(function (gd) {{
      return Plotly.addFrames(gd, fig.frames || []);
    }});
  }});
}})();
</script>"""


def figure_html(fig: go.Figure) -> str:
    """The figure as a div and the script that draws it (loading plotly.js as the module docstring says).
    Plotly's JSON escapes "<" and "/" in strings, so no label can close the script early."""
    return LOADER.format(id=f"icl-{uuid.uuid4().hex[:12]}", fig=pio.to_json(fig, validate=False),
                         cdn=CDN_URL.format(version=get_plotlyjs_version()), file=PLOTLY_FILE)


def show(fig: go.Figure) -> None:
    """Display the figure as HTML output, which the book renders without a kernel (see module docstring)."""
    display(HTML(figure_html(fig)))


def setup(app) -> dict:
    """Sphinx extension: after an HTML build, write the installed plotly's plotly.js into the site's _static/."""
    def write_plotlyjs(app, exception) -> None:
        if exception is None and app.builder.format == "html":
            static = Path(app.outdir) / "_static"
            static.mkdir(parents=True, exist_ok=True)
            (static / PLOTLY_FILE).write_text(get_plotlyjs(), encoding="utf-8")

    app.connect("build-finished", write_plotlyjs)
    app.connect("html-page-context", unique_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated <script> entries of a page. sphinx-thebe registers its inline configuration
    (`const THEBE_JS_URL = ...`) twice in a Jupyter Book build (once with no file name, once with an empty
    one), and the repeated `const` is a SyntaxError on every page."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def heatmap(p: np.ndarray, names: list[str], showscale: bool = False) -> go.Heatmap:
    """One attention map [S, S] with the paper's token names: rows attend (query), columns are attended (key)."""
    return go.Heatmap(z=np.asarray(p, dtype=np.float32), x=names, y=names, zmin=0, zmax=1, colorscale="Viridis",
                      showscale=showscale, hovertemplate=MAP_HOVER, colorbar={"title": {"text": "weight"}, "len": 0.5,
                                                                              "y": 0.8})


def slider(steps: list[int | str], active: int) -> dict:
    """A slider with one position per value (a checkpoint's step, or a setting), each showing the frame
    named after it."""
    anim = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    return {"active": active, "currentvalue": {"prefix": "checkpoint: step "}, "pad": {"t": 40},
            "steps": [{"label": f"{s:,}" if isinstance(s, int) else str(s), "method": "animate",
                       "args": [[str(s)], anim]} for s in steps]}


def marker(step: int, first_logged: int, showlegend: bool = False) -> go.Scatter:
    """A black vertical line at a checkpoint on a log-step axis (step 0 drawn at the first logged step)."""
    x = max(step, first_logged)
    return go.Scatter(x=[x, x], y=[-0.02, 1.02], mode="lines", line={"color": "black", "width": 1.5},
                      name="checkpoint shown", showlegend=showlegend, hoverinfo="skip")


def phase_bands(phases, transitions, top: float = 1.02) -> list[go.Scatter]:
    """Filled bands as in `plots.shade_phases`: learned plateaus in their phase colour, transitions in grey."""
    spans = [(ph.start, ph.end, PHASE_COLOURS[min(ph.index, len(PHASE_COLOURS)) - 1], f"Phase {ph.index}")
             for ph in phases if ph.index >= 1]
    spans += [(a, b, TRANSITION_COLOUR, "transition") for a, b in transitions]
    return [go.Scatter(x=[max(a, 1), max(a, 1), b, b], y=[-0.02, top, top, -0.02], fill="toself", mode="none",
                       fillcolor=colour, opacity=0.4, name=name, showlegend=False, hoverinfo="name")
            for a, b, colour, name in spans]


def metric_traces(run, layer: int, head: int = 1, showlegend: bool = False) -> list[go.Scatter]:
    """The three circuit metrics of one layer and head (1-based) against step (step 0 left out)."""
    s = run.steps
    keep = s > 0
    return [go.Scatter(x=s[keep].astype(np.int32), y=run.metrics[metric_column(layer, head, name)][keep].astype(
        np.float32), mode="lines", line={"color": colour, "width": 1.3, "dash": dash}, name=METRIC_LABELS[name],
        legendgroup=name, showlegend=showlegend,
        hovertemplate=f"{METRIC_LABELS[name]}<br>step %{{x:,}}<br>%{{y:.3f}}<extra>L{layer} H{head}</extra>")
        for name, colour, dash in zip(METRICS, METRIC_COLOURS, ("solid", "dash", "dashdot"))]


def checkpoint_maps(run, probe, steps: list[int] | None = None) -> dict[int, list[np.ndarray]]:
    """Batch-mean attention maps of every layer ([H, S, S] arrays) at each checkpoint (default: all)."""
    return {s: [m.numpy() for m in attention_maps(run.model(s), probe)]
            for s in (run.checkpoint_steps if steps is None else steps)}


def layer_scrubber(run, probe, title: str, phases=None, transitions=None) -> go.Figure:
    """Attention maps of both layers (head 1) at every checkpoint, with a slider over checkpoints; under each
    map its layer's three metrics across training, phases shaded, and a marker at the slider's step."""
    maps = checkpoint_maps(run, probe)
    steps = list(maps)
    names = token_names(run.config.num_seq)
    first = int(run.steps[run.steps > 0][0])
    fig = make_subplots(rows=2, cols=2, row_heights=[0.58, 0.42], vertical_spacing=0.12, horizontal_spacing=0.1,
                        subplot_titles=("layer 1 attention", "layer 2 attention", "layer 1 metrics",
                                        "layer 2 metrics"))
    last = steps[-1]
    for col in (1, 2):
        fig.add_trace(heatmap(maps[last][col - 1][0], names, showscale=col == 2), row=1, col=col)
    moving = [0, 1]  # the traces each frame replaces: both maps, then both markers
    for col in (1, 2):
        for band in phase_bands(phases or [], transitions or []):
            fig.add_trace(band, row=2, col=col)
        for tr in metric_traces(run, col, showlegend=col == 1):
            fig.add_trace(tr, row=2, col=col)
        moving.append(len(fig.data))
        fig.add_trace(marker(last, first, showlegend=col == 1), row=2, col=col)
    fig.frames = [go.Frame(name=str(s), traces=moving, layout={"title": {"text": f"{title}, step {s:,}"}},
                           data=[heatmap(maps[s][0][0], names), heatmap(maps[s][1][0], names, showscale=True),
                                 marker(s, first, True), marker(s, first)]) for s in steps]
    for col in (1, 2):
        fig.update_xaxes(title_text="key", row=1, col=col)
        fig.update_yaxes(title_text="query", autorange="reversed", row=1, col=col)
        fig.update_xaxes(title_text="training step", type="log", row=2, col=col)
        fig.update_yaxes(title_text="attention weight", range=[-0.02, 1.02], row=2, col=col)
    fig.update_layout(title={"text": f"{title}, step {last:,}", "font": {"size": 14}}, height=820,
                      margin={"t": 80}, sliders=[slider(steps, len(steps) - 1)], template="plotly_white",
                      legend={"orientation": "h", "y": -0.28, "x": 0})
    return fig


def head_scrubber(run, probe, title: str, steps: list[int] | None = None) -> go.Figure:
    """Every head's attention map at every checkpoint (one row per layer, one column per head) with a slider
    over checkpoints, above the head-role timeline (`analysis.heads.head_roles`) marked at the slider's step."""
    maps = checkpoint_maps(run, probe, steps)
    steps = list(maps)
    n_layers, n_heads = len(maps[steps[0]]), maps[steps[0]][0].shape[0]
    names = token_names(run.config.num_seq)
    rows = n_layers + 1
    fig = make_subplots(rows=rows, cols=n_heads, specs=[[{}] * n_heads] * n_layers + [[{"colspan": n_heads}]
                                                                                       + [None] * (n_heads - 1)],
                        row_heights=[1.0] * n_layers + [0.8], vertical_spacing=0.12, horizontal_spacing=0.05,
                        subplot_titles=[f"layer {li + 1}, head {hi + 1}" for li in range(n_layers)
                                        for hi in range(n_heads)]
                        + ["head roles across training (NCC orange, SCC blue, FCC green, other / mixed white)"])
    last = steps[-1]
    for li in range(n_layers):
        for hi in range(n_heads):
            fig.add_trace(heatmap(maps[last][li][hi], names, showscale=li == hi == 0), row=li + 1, col=hi + 1)
    roles = head_roles(run)
    keep = run.steps > 0
    index = np.vectorize(ROLES.index)(roles[:, :, keep]).reshape(n_layers * n_heads, -1)
    labels = [f"L{li + 1} H{hi + 1}" for li in range(n_layers) for hi in range(n_heads)]
    colours = [ROLE_COLOURS[r] for r in ROLES]
    scale = [[k / len(ROLES) + e / len(ROLES), c] for k, c in enumerate(colours) for e in (0, 1)]
    fig.add_trace(go.Heatmap(z=index.astype(np.int8), x=run.steps[keep].astype(np.int32), y=labels,
                             customdata=np.asarray(roles[:, :, keep].reshape(n_layers * n_heads, -1), dtype=str),
                             zmin=-0.5, zmax=len(ROLES) - 0.5, colorscale=scale, showscale=False,
                             hovertemplate="%{y}, step %{x:,}: %{customdata}<extra></extra>"), row=rows, col=1)
    first = int(run.steps[keep][0])
    fig.add_trace(go.Scatter(x=[max(last, first)] * 2, y=[labels[0], labels[-1]], mode="lines+markers",
                             line={"color": "black", "width": 2}, hoverinfo="skip", showlegend=False),
                  row=rows, col=1)
    moving = list(range(n_layers * n_heads)) + [len(fig.data) - 1]
    fig.frames = [go.Frame(name=str(s), traces=moving, layout={"title": {"text": f"{title}, step {s:,}"}},
                           data=[heatmap(maps[s][li][hi], names, showscale=li == hi == 0) for li in range(n_layers)
                                 for hi in range(n_heads)]
                           + [go.Scatter(x=[max(s, first)] * 2, y=[labels[0], labels[-1]])]) for s in steps]
    for li in range(n_layers):
        for hi in range(n_heads):
            fig.update_yaxes(autorange="reversed", row=li + 1, col=hi + 1, title_text="query" if hi == 0 else None)
            fig.update_xaxes(row=li + 1, col=hi + 1, title_text="key" if li == n_layers - 1 else None)
    fig.update_xaxes(type="log", title_text="training step", row=rows, col=1)
    fig.update_yaxes(autorange="reversed", row=rows, col=1)
    fig.update_layout(title={"text": f"{title}, step {last:,}", "font": {"size": 14}},
                      height=280 * n_layers + 280, width=max(700, 230 * n_heads + 150), margin={"t": 80},
                      template="plotly_white",
                      sliders=[slider(steps, len(steps) - 1)])
    return fig


def surgery_explorer(run, probe, at: dict[int, int], tables: dict[int, dict[str, dict[str, float]]],
                     title: str) -> go.Figure:
    """Chapter 8's surgery one edit at a time, so a reader sees what an edit does to the attention and to the
    accuracy together. One position per phase checkpoint (at: phase -> step), layer, pattern (probes.METRICS)
    and action (keep, remove), picked from a dropdown: head 1's batch-mean attention of every layer before
    (top row) and after (bottom row) the edit, masked with renormalisation (`analysis.surgery.edited`), and
    the accuracy on the three evaluation sets before and after it in the title. The accuracies are read from
    `tables` (phase -> `analysis.surgery.surgery_table` of `standard_edits`, renormalise=True), the numbers
    of the chapter's table, not measured again. It opens on the last phase's layer-1 chunk-example removal;
    the dropdown sits above the maps, where its list has room to open."""
    names = token_names(run.config.num_seq)
    n = run.config.n_layers
    frames = []
    for k, step in at.items():
        model = run.model(step)
        before = [heatmap(m[0].numpy(), names, showscale=i == n - 1)
                  for i, m in enumerate(attention_maps(model, probe))]
        for layer, pattern, action in itertools.product(range(1, n + 1), METRICS, ACTIONS):
            edit = Edit(layer, pattern, action)
            after = [heatmap(m[0].numpy(), names) for m in attention_maps(edited(model, [edit]), probe)]
            base, cut = tables[k]["none"], tables[k][str(edit)]
            accs = " · ".join(f"{s} {base[s]:.3f} → {cut[s]:.3f}" for s in SETS)
            label = f"Phase {k}, step {step:,}: {edit}"
            frames.append(go.Frame(name=label, traces=list(range(2 * n)), data=before + after, layout={
                "title": {"text": f"{title}<br>{label}<br>accuracy (unedited → edited): {accs}"}}))
    labels = [f.name for f in frames]
    start = labels.index(f"Phase {max(at)}, step {at[max(at)]:,}: {Edit(1, 'chunk_example', 'remove')}")
    fig = make_subplots(rows=2, cols=n, vertical_spacing=0.14, horizontal_spacing=0.25 / n,
                        subplot_titles=[f"{when}, layer {i}, head 1" for when in ("unedited", "edited")
                                        for i in range(1, n + 1)])
    for i, trace in enumerate(frames[start].data):
        fig.add_trace(trace, row=i // n + 1, col=i % n + 1)
        fig.update_xaxes(title_text="key", row=i // n + 1, col=i % n + 1)
        fig.update_yaxes(title_text="query" if i % n == 0 else None, autorange="reversed", row=i // n + 1,
                         col=i % n + 1)
    fig.frames = frames
    menu = {"type": "dropdown", "active": start, "buttons": slider(labels, start)["steps"], "x": 0,
            "xanchor": "left", "y": 1.06, "yanchor": "bottom", "direction": "down"}
    fig.update_layout(title={"text": frames[start].layout.title.text, "font": {"size": 12}, "y": 0.98,
                             "yanchor": "top"}, height=820, margin={"t": 170}, updatemenus=[menu],
                      template="plotly_white")
    return fig


def ceiling_grid(cfg, tasks: list[int], classes: list[int], seqs: list[int], n: int) -> np.ndarray:
    """Bayes ceilings (`bayes.ceilings`, n Monte-Carlo sequences) of cfg with T, K and N varied:
    an array [N, regime, T, K] in the order of CEILING_LABELS, NaN where the setting is invalid."""
    out = np.full((len(seqs), len(CEILING_LABELS), len(tasks), len(classes)), np.nan)
    for (a, N), (b, T), (c, K) in itertools.product(enumerate(seqs), enumerate(tasks), enumerate(classes)):
        try:
            setting = cfg.replace(num_tasks=T, num_classes=K, num_seq=N, pos_dim=max(cfg.pos_dim, N + 1)).validate()
        except ValueError:
            continue
        out[a, :, b, c] = list(ceilings(setting, n=n).values())
    return out


def ceiling_explorer(grid: np.ndarray, tasks: list[int], classes: list[int], seqs: list[int],
                     title: str) -> go.Figure:
    """Heat maps of the three Bayes ceilings over tasks T (rows) and classes K (columns), one panel per
    information regime, with a slider over the context length N and each value written in its cell."""
    x, y = [str(k) for k in classes], [str(t) for t in tasks]

    def panels(a: int) -> list[go.Heatmap]:
        return [go.Heatmap(z=grid[a, r].astype(np.float32), x=x, y=y, zmin=0, zmax=1, colorscale="Viridis",
                           showscale=r == 0, texttemplate="%{z:.2f}", colorbar={"title": {"text": "accuracy"}},
                           hovertemplate=f"{name}<br>T = %{{y}}, K = %{{x}}, N = {seqs[a]}<br>ceiling %{{z:.3f}}"
                                         "<extra></extra>")
                for r, name in enumerate(CEILING_LABELS.values())]

    fig = make_subplots(rows=1, cols=len(CEILING_LABELS), subplot_titles=list(CEILING_LABELS.values()),
                        horizontal_spacing=0.06)
    start = seqs.index(4) if 4 in seqs else 0
    for r, trace in enumerate(panels(start)):
        fig.add_trace(trace, row=1, col=r + 1)
        fig.update_xaxes(title_text="classes K", type="category", row=1, col=r + 1)
        fig.update_yaxes(title_text="tasks T" if r == 0 else None, type="category", row=1, col=r + 1)
    fig.frames = [go.Frame(name=str(N), data=panels(a), traces=list(range(len(CEILING_LABELS))),
                           layout={"title": {"text": f"{title}, N = {N}"}}) for a, N in enumerate(seqs)]
    steps = slider(seqs, start)
    steps["currentvalue"]["prefix"] = "context pairs N = "
    fig.update_layout(title={"text": f"{title}, N = {seqs[start]}", "font": {"size": 14}}, height=430,
                      margin={"t": 80}, sliders=[steps], template="plotly_white")
    return fig


def log_thin(steps: np.ndarray, points: int) -> np.ndarray:
    """Indices of the logged evaluations (step 0 left out) nearest to `points` log-spaced steps from the
    first to the last: a long curve thinned for a web page that keeps its shape on a log step axis, every
    point kept a logged value (unlike `probes.log_grid`, which averages), and every early evaluation kept
    where they are sparser than the grid."""
    pos = np.flatnonzero(np.asarray(steps) > 0)
    if len(pos) <= points:
        return pos
    log = np.log(np.asarray(steps)[pos])
    grid = np.linspace(log[0], log[-1], points)
    right = np.clip(np.searchsorted(log, grid), 1, len(log) - 1)
    nearest = np.where(grid - log[right - 1] < log[right] - grid, right - 1, right)
    return pos[np.unique(nearest)]


def sweep_explorer(runs: dict[str, list], columns: list[str], title: str, start: tuple[str, str] = ("classes", "acc"),
                   points: int = 300) -> go.Figure:
    """Chapter 10's sweeps, any logged column: one curve per run (runs: sweep name -> its runs, default runs
    included) against log step, coloured by the swept setting (seeds share a colour; the first seed is drawn
    thicker and named in the legend). One dropdown picks the sweep (shows its curves only), the other the
    column (swaps every curve's values), so any pair is two clicks away without a curve stored per pair.
    Curves are thinned with `log_thin` to keep the page light."""
    def hover(run_label: str, column: str) -> str:
        return f"{run_label}<br>step %{{x:,}}<br>{column} %{{y:.3f}}<extra></extra>"

    traces, owner, who = [], [], []
    values = {c: [] for c in columns}
    for name, rs in runs.items():
        fields = sweep(name).fields
        rs = sorted(rs, key=lambda r: ([getattr(r.config, f) for f in fields], r.config.seed))
        labels = list(dict.fromkeys(setting_label(r.config, fields) for r in rs))
        colours = sample_colorscale("Viridis", [0.9 * i / max(len(labels) - 1, 1) for i in range(len(labels))])
        named = set()
        for r in rs:
            label, keep = setting_label(r.config, fields), log_thin(r.steps, points)
            first = label not in named
            named.add(label)
            owner.append(name)
            who.append(f"{label}, seed {r.config.seed}")
            for c in columns:
                values[c].append(np.round(r.metrics[c][keep].astype(float), 4).tolist())
            traces.append(go.Scatter(x=r.steps[keep].astype(np.int32), y=r.metrics[start[1]][keep].astype(np.float32),
                                     mode="lines", name=label, legendgroup=f"{name}: {label}", showlegend=first,
                                     visible=name == start[0], opacity=1 if first else 0.6,
                                     line={"color": colours[labels.index(label)], "width": 1.6 if first else 0.9},
                                     hovertemplate=hover(who[-1], start[1])))

    def legend(name: str) -> str:
        return f"{name} ({sweep(name).figure})"

    fig = go.Figure(data=traces)
    menu = {"direction": "down", "y": 1.02, "yanchor": "bottom", "xanchor": "left", "showactive": True}
    by_sweep = {**menu, "x": 0.08, "active": list(runs).index(start[0]),
                "buttons": [{"label": legend(name), "method": "update",
                             "args": [{"visible": [o == name for o in owner]}, {"legend.title.text": legend(name)}]}
                            for name in runs]}
    by_column = {**menu, "x": 0.5, "active": columns.index(start[1]),
                 "buttons": [{"label": c, "method": "update", "args": [{"y": values[c], "hovertemplate": [
                     hover(w, c) for w in who]}, {"yaxis.title.text": c}]} for c in columns]}
    notes = [{"text": text, "xref": "paper", "yref": "paper", "x": x, "y": 1.06, "xanchor": "right",
              "yanchor": "bottom", "showarrow": False} for text, x in (("sweep", 0.07), ("column", 0.49))]
    most = max(len(t.x) for t in traces)
    fig.update_xaxes(title_text="training step", type="log")
    fig.update_yaxes(title_text=start[1])
    subtitle = f"one curve per run, thinned to at most {most} logged evaluations at log-spaced steps"
    fig.update_layout(title={"text": title, "font": {"size": 14}, "subtitle": {"text": subtitle}},
                      updatemenus=[by_sweep, by_column], annotations=notes,
                      legend={"title": {"text": legend(start[0])}}, height=520, margin={"t": 150},
                      template="plotly_white")
    return fig


def room_explorer(grid: np.ndarray, tasks: list[int], classes: list[int], seqs: list[int], title: str) -> go.Figure:
    """Chapter 12's room for Phase 2 (`analysis.phasemap.phase2_gap` of each setting's ceilings in a
    `ceiling_grid`) over tasks T (rows) and classes K (columns), with a slider over the context length N and
    each value written in its cell. The scale breaks at MIN_GAP, red below (the ceilings leave Phase 2 no
    plateau of its own), green from it up; settings that are not valid stay blank."""
    room = np.apply_along_axis(lambda c: phase2_gap(dict(zip(CEILING_LABELS, c))), 1, grid)  # [N, T, K]
    top = max(2 * MIN_GAP, float(np.nanmax(room)))
    cut = MIN_GAP / top
    scale = [[0, "#b2182b"], [cut, "#f4a582"], [cut, "#d9f0d3"], [1, "#1b7837"]]
    ticks = [0.0, MIN_GAP, *np.arange(0.1, top, 0.1).round(1)]
    x, y = [str(k) for k in classes], [str(t) for t in tasks]

    def cells(a: int) -> go.Heatmap:
        r = room[a]
        verdict = np.where(np.isnan(r), "not a valid setting", np.where(r >= MIN_GAP, "visible", "no room"))
        return go.Heatmap(z=r.astype(np.float32), x=x, y=y, zmin=0, zmax=top, colorscale=scale,
                          text=np.where(np.isnan(r), "", np.char.mod("%.3f", r)), texttemplate="%{text}",
                          customdata=verdict, hovertemplate=f"T = %{{y}}, K = %{{x}}, N = {seqs[a]}<br>room for "
                                                            "Phase 2 %{z:.3f}: %{customdata}<extra></extra>",
                          colorbar={"title": {"text": "room for Phase 2"}, "tickvals": ticks, "ticktext": [
                              f"{MIN_GAP} (threshold)" if t == MIN_GAP else f"{t:g}" for t in ticks]})

    start = seqs.index(4) if 4 in seqs else 0
    fig = go.Figure(data=[cells(start)])
    fig.frames = [go.Frame(name=str(N), data=[cells(a)], traces=[0], layout={"title": {"text": f"{title}, N = {N}"}})
                  for a, N in enumerate(seqs)]
    steps = slider(seqs, start)
    steps["currentvalue"]["prefix"] = "context pairs N = "
    fig.update_xaxes(title_text="classes K", type="category")
    fig.update_yaxes(title_text="tasks T", type="category")
    fig.update_layout(title={"text": f"{title}, N = {seqs[start]}", "font": {"size": 14}}, height=520,
                      margin={"t": 80}, sliders=[steps], template="plotly_white")
    return fig


def scc_explorer(seqs: list[int], classes: list[int], n: int, title: str) -> go.Figure:
    """Chapter 6's SCC accuracy against K = L, one frame per context length N (slider): the formula
    p + (1 - p)/2 (`bayes.scc_theory_accuracy`, every K from N + 2 to the largest) and, at the given K, the
    simulated elimination strategy and the label-multiset Bayes ceiling (n Monte-Carlo sequences each)."""
    def traces(N: int) -> list[go.Scatter]:
        dense = np.arange(N + 2, max(classes) + 1)
        sim, bayes = [], []
        for K in classes:
            try:
                cfg = Config(num_tasks=2, label_table="scc_theory", num_classes=K, num_labels=K, num_seq=N).validate()
            except ValueError:
                sim.append(np.nan)
                bayes.append(np.nan)
                continue
            sim.append(scc_elimination_accuracy(cfg, n=n))
            bayes.append(ceilings(cfg, n=n)["label_multiset"])
        hover = "K = L = %{x}<br>%{y:.3f}<extra>" + f"N = {N}</extra>"
        return [go.Scatter(x=dense, y=[scc_theory_accuracy(int(K), N) for K in dense], mode="lines", name="formula",
                           line={"color": "black"}, hovertemplate=hover),
                go.Scatter(x=classes, y=sim, mode="markers", name="simulated strategy",
                           marker={"symbol": "circle-open", "size": 11, "color": "#1f77b4"}, hovertemplate=hover),
                go.Scatter(x=classes, y=bayes, mode="markers", name="Bayes: query + label multiset",
                           marker={"symbol": "x", "size": 8, "color": "#d62728"}, hovertemplate=hover)]

    frames = {N: traces(N) for N in seqs}
    start = seqs.index(4) if 4 in seqs else 0
    fig = go.Figure(data=frames[seqs[start]])
    fig.frames = [go.Frame(name=str(N), data=frames[N], traces=[0, 1, 2],
                           layout={"title": {"text": f"{title}, N = {N}"}}) for N in seqs]
    steps = slider(seqs, start)
    steps["currentvalue"]["prefix"] = "context pairs N = "
    fig.update_xaxes(title_text="classes = labels K", type="log")
    fig.update_yaxes(title_text="accuracy", range=[0.45, 1.02])
    fig.update_layout(title={"text": f"{title}, N = {seqs[start]}", "font": {"size": 14}}, height=460,
                      margin={"t": 80}, sliders=[steps], template="plotly_white")
    return fig


def prompt_explorer(layers: np.ndarray, per_prompt: dict[str, np.ndarray], texts: list[str], title: str,
                    width: int = 110) -> go.Figure:
    """Chapter 9's per-prompt metrics: the three circuit metrics of one prompt against layer (per_prompt:
    metric -> [prompts, layers]), a slider over the prompts given in `texts`, and the prompt's text (wrapped
    at `width` characters) under the plot, so a reader can see prompts whose pattern differs from the mean."""
    def lines(i: int) -> list[go.Scatter]:
        return [go.Scatter(x=layers, y=per_prompt[name][i].astype(np.float32), mode="lines+markers",
                           name=METRIC_LABELS[name], line={"color": colour}, marker={"size": 5},
                           hovertemplate=f"{METRIC_LABELS[name]}<br>layer %{{x}}: %{{y:.3f}}<extra>prompt {i}</extra>")
                for name, colour in zip(METRICS, METRIC_COLOURS)]

    def note(text: str) -> dict:
        wrapped = "<br>".join(w for line in html.escape(text).split("\n") for w in textwrap.wrap(line, width) or [""])
        return {"text": wrapped, "xref": "paper", "yref": "paper", "x": 0, "y": -0.6, "xanchor": "left",
                "yanchor": "top", "align": "left", "showarrow": False, "font": {"family": "monospace", "size": 11}}

    top = max(float(np.nanmax(per_prompt[name][: len(texts)])) for name in METRICS)
    fig = go.Figure(data=lines(0))
    fig.frames = [go.Frame(name=str(i), data=lines(i), traces=[0, 1, 2],
                           layout={"title": {"text": f"{title}, prompt {i}"}, "annotations": [note(t)]})
                  for i, t in enumerate(texts)]
    steps = slider(list(range(len(texts))), 0)
    steps["currentvalue"]["prefix"] = "prompt "
    steps["pad"]["t"] = 50
    fig.update_xaxes(title_text="layer", dtick=1 if len(layers) <= 12 else 4)
    fig.update_yaxes(title_text="attention weight (mean over heads)", range=[0, 1.1 * top])
    fig.update_layout(title={"text": f"{title}, prompt 0", "font": {"size": 14}}, annotations=[note(texts[0])],
                      height=680, margin={"t": 80, "b": 300}, sliders=[steps], template="plotly_white")
    return fig


def architecture_explorer(configs: list[Config], probe, title: str) -> go.Figure:
    """Chapter 2's untrained networks: for each valid configuration, the batch-mean attention (head 1) of its
    first and last layer at initialisation, a slider over the configurations, and the parameter count in
    the title. Invalid configurations (`Config.validate`) are left out."""
    names = token_names(configs[0].num_seq)
    frames, labels, ticks = [], [], []
    for c in configs:
        try:
            model = Model(c.validate())
        except ValueError:
            continue
        maps = attention_maps(model, probe)
        label = f"L = {c.n_layers}, H = {c.n_heads}, {c.block} block"
        params = sum(p.numel() for p in model.parameters())
        labels.append(label)
        ticks.append(f"L{c.n_layers} H{c.n_heads} {c.block[:4]}")
        frames.append(go.Frame(name=label, traces=[0, 1], layout={"title": {"text": f"{title}: {label}, {params:,} "
                                                                                     "parameters"}},
                               data=[heatmap(maps[0][0].numpy(), names), heatmap(maps[-1][0].numpy(), names, True)]))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("first layer, head 1", "last layer, head 1"),
                        horizontal_spacing=0.12)
    for col, trace in enumerate(frames[0].data, 1):
        fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(title_text="key", row=1, col=col)
        fig.update_yaxes(title_text="query", autorange="reversed", row=1, col=col)
    fig.frames = frames
    steps = slider(list(range(len(labels))), 0)
    for step, label, tick in zip(steps["steps"], labels, ticks):
        step["label"], step["args"][0] = tick, [label]
    steps["currentvalue"]["prefix"] = "network: "
    fig.update_layout(title={"text": frames[0].layout.title.text, "font": {"size": 14}}, height=520,
                      margin={"t": 80, "b": 120}, sliders=[steps], template="plotly_white")
    return fig


def map_slider(maps: dict[int | str, list[np.ndarray]], names: dict[int | str, list[str]], title: str,
               prefix: str = "checkpoint: step ") -> go.Figure:
    """Head 1's batch-mean attention map of every layer (one panel each), with one slider position per
    entry of `maps` (a checkpoint's step, or a setting), drawn with that entry's token names (settings may
    differ in context length). Every entry must have the same number of layers; it opens at the last."""
    keys = list(maps)
    n_layers = {len(m) for m in maps.values()}
    if len(n_layers) != 1:
        raise ValueError(f"maps must have one number of layers per figure, got {sorted(n_layers)}")
    n = n_layers.pop()
    cols = min(n, 3)  # at most three panels a row: wider figures shrink below legibility at page width
    rows = -(-n // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"layer {i + 1}, head 1" for i in range(n)],
                        horizontal_spacing=0.3 / cols, vertical_spacing=0.3 / rows)
    last = keys[-1]

    def panels(key) -> list[go.Heatmap]:
        return [heatmap(maps[key][i][0], names[key], showscale=i == n - 1) for i in range(n)]

    for i, trace in enumerate(panels(last)):
        row, col = divmod(i, cols)
        fig.add_trace(trace, row=row + 1, col=col + 1)
        fig.update_xaxes(title_text="key", row=row + 1, col=col + 1)
        fig.update_yaxes(title_text="query" if col == 0 else None, autorange="reversed", row=row + 1, col=col + 1)

    def label(k) -> str:
        return f"{prefix}{k:,}" if isinstance(k, int) else f"{prefix}{k}"

    fig.frames = [go.Frame(name=str(k), traces=list(range(n)), data=panels(k),
                           layout={"title": {"text": f"{title}, {label(k)}"}}) for k in keys]
    control = slider(keys, len(keys) - 1)
    control["currentvalue"]["prefix"] = prefix
    fig.update_layout(title={"text": f"{title}, {label(last)}", "font": {"size": 14}}, height=120 + 330 * rows,
                      margin={"t": 80}, sliders=[control], template="plotly_white")
    return fig


def log_bin_max(t: np.ndarray, d: np.ndarray, per_decade: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A spiky curve thinned for the page: the largest value in each log-spaced bin of t > 0 (per_decade bins a
    decade), at the bin's first t. The maximum, not the mean, so that every crossing of a threshold survives."""
    keep = t > 0
    t, d = t[keep], d[keep]
    bins = np.floor(np.log10(t) * per_decade).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(bins) != 0])
    return t[starts], np.maximum.reduceat(d, starts)


def rule_explorer(runs, dts: list[int], thresholds: list[float], title: str) -> go.Figure:
    """Chapter 3's paper rule and its two knobs. Top: ΔAcc of every run (`probes.delta_acc`, thinned by
    `log_bin_max`) with a slider over Δt, each threshold a horizontal line. Below, one panel per run: how
    many transitions the rule (`probes.paper_boundaries`) finds at every (Δt, threshold), so the whole knob
    space reads at once without a kernel (three transitions = the paper's three learned phases)."""
    n = len(runs)
    counts = np.array([[[len(paper_boundaries(r.steps, r.metrics["acc"], dt, th)) for dt in dts] for th in thresholds]
                       for r in runs], dtype=np.int16)
    fig = make_subplots(rows=2, cols=n, specs=[[{"colspan": n}] + [None] * (n - 1), [{}] * n],
                        row_heights=[0.55, 0.45], vertical_spacing=0.2, horizontal_spacing=0.08,
                        subplot_titles=["ΔAcc(t) = Acc(t + Δt) − Acc(t)"]
                        + [f"seed {r.config.seed}: transitions found" for r in runs])

    def curves(dt: int) -> list[go.Scatter]:
        out = []
        for r, colour in zip(runs, METRIC_COLOURS):
            t, d = log_bin_max(*delta_acc(r.steps, r.metrics["acc"], dt))
            seed = r.config.seed
            out.append(go.Scatter(x=t.astype(np.int32), y=d.astype(np.float32), mode="lines", name=f"seed {seed}",
                                  line={"color": colour, "width": 1},
                                  hovertemplate=f"seed {seed}<br>step %{{x:,}}<br>ΔAcc %{{y:.3f}}<extra></extra>"))
        return out

    start = dts.index(100) if 100 in dts else 0
    for trace in curves(dts[start]):
        fig.add_trace(trace, row=1, col=1)
    left, right = int(min(r.steps[1] for r in runs)), int(max(r.steps[-1] for r in runs))
    for th in thresholds:
        fig.add_trace(go.Scatter(x=[left, right], y=[th, th], mode="lines", name=f"threshold {th:g}",
                                 line={"color": "red" if th == 0.025 else "grey", "width": 1,
                                       "dash": "solid" if th == 0.025 else "dot"}, hoverinfo="name"), row=1, col=1)
    for i in range(n):
        fig.add_trace(go.Heatmap(z=counts[i], x=[f"{dt:,}" for dt in dts], y=[f"{th:g}" for th in thresholds],
                                 zmin=0, zmax=int(counts.max()), colorscale="Cividis", showscale=i == n - 1,
                                 texttemplate="%{z}", colorbar={"title": {"text": "transitions"}, "len": 0.4, "y": 0.2},
                                 hovertemplate="Δt %{x}, threshold %{y}: %{z} transitions<extra></extra>"),
                      row=2, col=i + 1)
        fig.update_xaxes(title_text="Δt (steps)", type="category", row=2, col=i + 1)
        fig.update_yaxes(title_text="threshold" if i == 0 else None, type="category", row=2, col=i + 1)
    fig.update_xaxes(title_text="training step", type="log", row=1, col=1)
    fig.update_yaxes(title_text="ΔAcc", row=1, col=1)
    fig.frames = [go.Frame(name=str(dt), traces=list(range(n)), data=curves(dt),
                           layout={"title": {"text": f"{title}, Δt = {dt:,}"}}) for dt in dts]
    control = slider(dts, start)
    control["currentvalue"]["prefix"] = "Δt = "
    fig.update_layout(title={"text": f"{title}, Δt = {dts[start]:,}", "font": {"size": 14}}, height=760,
                      margin={"t": 80}, sliders=[control], template="plotly_white",
                      legend={"x": 1.02, "y": 1, "yanchor": "top", "font": {"size": 10}})
    return fig
