"""Matplotlib figures shared by the chapters, so every chapter shades phases and labels axes the same way.

Importing this module applies the book's plotting style (`style.use()`: figures at most `style.W_MAX` = 7 in
wide at 100 dpi, every font at least 8 pt; see `style`), so every chapter that draws with these helpers draws in
it. Each phase has one colour in every chapter: `PHASE_COLOURS` shades its plateau, `PHASE_LINE_COLOURS` (the
same hue, darker) draws a curve that stands for it (e.g. chapter 5's NCC/SCC/FCC-restricted models). Every heat
map of values carries a colour bar; a map of categories (head roles, phase patterns) carries a legend instead.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..analysis.readings import parting_step, plateau_gaps, run_plateaus
from ..probes import METRICS, Phase, metric_column
from .style import W_MAX
from .style import use as use_book_style

use_book_style()

PHASE_COLOURS = ("#f4d6a0", "#bcd9ea", "#c8e6c0", "#e3c9e8", "#eeeeee")
# Phase k's curves (matplotlib's C1, C0, C2, C4): the hue of its shading PHASE_COLOURS[k - 1], dark enough for a line.
PHASE_LINE_COLOURS = ("#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f")
# The circuit each learned phase forms (paper Table 1), for curves named by circuit rather than by phase.
CIRCUIT_COLOURS = {"NCC": PHASE_LINE_COLOURS[0], "SCC": PHASE_LINE_COLOURS[1], "FCC": PHASE_LINE_COLOURS[2]}
TRANSITION_COLOUR = "#888888"
METRIC_LABELS = {"bigram": "Bigram", "label_attention": "Label Attention", "chunk_example": "Chunk Example"}
CEILING_LABELS = {"query_only": "Bayes: query only", "label_multiset": "Bayes: query + label multiset",
                  "full_pairs": "Bayes: full pairs"}


def shade_phases(ax: plt.Axes, phases: list[Phase], transitions: list[tuple[int, int]], label: bool = True) -> None:
    """Shade each learned plateau in its phase colour and each transition in grey (the same in every
    chapter). Phase 0, the untrained stretch before the first transition, is left white."""
    for ph in phases:
        if ph.index >= 1:
            ax.axvspan(ph.start, ph.end, color=PHASE_COLOURS[min(ph.index, len(PHASE_COLOURS)) - 1], alpha=0.5,
                       lw=0, label=f"Phase {ph.index}" if label else None)
    for a, b in transitions:
        ax.axvspan(a, b, color=TRANSITION_COLOUR, alpha=0.25, lw=0)


def wrap(text: str, width: int) -> str:
    """`text` broken into lines of at most `width` characters (existing line breaks kept): a title that fits
    its panel at the style's font size instead of running into the next one."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def legend_below(fig: plt.Figure, handles=None, labels=None, ncol: int = 3, **kw) -> plt.Legend:
    """One legend for the whole figure, centred under its panels, and the panels laid out (tight_layout) to
    leave it room: the place for a legend too long to sit inside a panel at the style's 8-pt size. Call it
    last, instead of fig.tight_layout(). Without handles, the labelled artists of every panel, each label once."""
    if handles is None:
        seen = {}
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        handles, labels = list(seen.values()), list(seen)
    leg = fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0), **kw)
    height = leg.get_window_extent(fig.canvas.get_renderer()).height / fig.bbox.height
    fig.tight_layout(rect=(0, height, 1, 1))
    return leg


def draw_ceilings(ax: plt.Axes, ceilings: dict[str, float]) -> None:
    for (name, value), style in zip(ceilings.items(), (":", "--", "-.")):
        ax.axhline(value, color="k", ls=style, lw=1, label=f"{CEILING_LABELS[name]} ({value:.2f})")


def plot_curves(ax: plt.Axes, runs, column: str, ylabel: str, **kw) -> None:
    """One column of several runs against step on a log axis (step 0 is left out)."""
    for run in runs:
        s = run.steps
        ax.plot(s[s > 0], run.metrics[column][s > 0], lw=1, label=f"seed {run.config.seed}", **kw)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)


def token_names(num_seq: int) -> list[str]:
    """The paper's names of a sequence's tokens, for axis ticks: x1, ℓ1, ..., xN, ℓN, x_q."""
    return [f"{k}{i + 1}" for i in range(num_seq) for k in ("x", "ℓ")] + ["x_q"]


def token_ticks(ax: plt.Axes, names: list[str]) -> None:
    """Every token named on both axes of a map, the key axis's names turned upright past 12 tokens (N > 5) so
    that they keep the style's size instead of running into each other."""
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 0)
    ax.set_yticks(range(len(names)), names)


def plot_allowed(ax: plt.Axes, allowed: torch.Tensor, title: str) -> None:
    """A boolean [S, S] attention mask, white where a row (query) may attend to a column (key), with a
    two-step colour bar as its key."""
    names = token_names((allowed.shape[0] - 1) // 2)
    im = ax.imshow(allowed.float().numpy(), cmap=plt.get_cmap("gray", 2), vmin=0, vmax=1)
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03, ticks=[0.25, 0.75])
    bar.ax.set_yticklabels(["blocked", "allowed"])
    token_ticks(ax, names)
    ax.set_title(wrap(title, 26))
    ax.set_xlabel("key")
    ax.set_ylabel("query")


def draw_map(ax: plt.Axes, p: torch.Tensor, title: str, fontsize: float = 8) -> None:
    """One [S, S] attention map with the paper's token names: rows attend (query), columns are attended (key).
    Token names at `fontsize` (the style's 8 pt or more), labels and title a point larger; a long title wraps."""
    names = token_names((p.shape[-1] - 1) // 2)
    im = ax.imshow(p.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("attention weight", fontsize=fontsize + 1)
    token_ticks(ax, names)
    ax.tick_params(labelsize=fontsize)
    ax.set_xlabel("key", fontsize=fontsize + 1)
    ax.set_ylabel("query", fontsize=fontsize + 1)
    ax.set_title(wrap(title, 34), fontsize=fontsize + 1)


def map_grid(n: int, ncols: int, size: float = 3.5) -> tuple[plt.Figure, np.ndarray]:
    """A figure for n maps, `ncols` a row (fewer when n is smaller), each about `size` inches square, at most
    W_MAX wide; the panels past n are hidden. Returns the figure and its first n axes."""
    ncols = min(n, ncols)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(W_MAX, size * ncols), size * 0.95 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def plot_attention_maps(maps: list[torch.Tensor], num_seq: int, title: str = "", axes=None) -> plt.Figure:
    """Heat maps of batch-mean attention, one per layer (head 1), with the paper's token names: on a new figure
    (two maps a row) unless `axes` are given."""
    new = axes is None
    if new:
        _, axes = map_grid(len(maps), 2)
    axes = np.atleast_1d(axes)
    for li, (ax, p) in enumerate(zip(axes, maps)):
        draw_map(ax, p[0], f"{title} layer {li + 1}".strip())
    if new:
        axes[0].figure.tight_layout()
    return axes[0].figure


def plot_head_maps(maps: list[torch.Tensor], title: str = "") -> plt.Figure:
    """Every head's batch-mean attention map, layer by layer and head by head within a layer: up to three heads
    a row (two when that splits the layer's heads evenly), so a layer with many heads wraps to more rows."""
    n_layers, n_heads = len(maps), maps[0].shape[0]
    ncols = n_heads if n_heads <= 3 else (3 if n_heads % 3 == 0 else 2)
    fig, axes = map_grid(n_layers * n_heads, ncols, size=3.5 if ncols <= 2 else W_MAX / 3)
    for li, p in enumerate(maps):
        for hi in range(n_heads):
            draw_map(axes[li * n_heads + hi], p[hi], f"layer {li + 1}, head {hi + 1}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_metric_curves(ax: plt.Axes, run, layer: int, head: int = 1) -> None:
    """The three circuit metrics of one layer and head (1-based) against step."""
    s = run.steps
    for name, style in zip(METRICS, ("-", "--", "-.")):
        ax.plot(s[s > 0], run.metrics[metric_column(layer, head, name)][s > 0], style, lw=1.2,
                label=METRIC_LABELS[name])
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("attention weight")
    ax.set_ylim(-0.02, 1.02)


def plot_sequence(ax: plt.Axes, batch, i: int, title: str = "") -> None:
    """Draw sequence i as a row of tokens: items coloured by class, labels, the query and its target."""
    N = batch.labels.shape[1]
    classes, labels = batch.classes[i].tolist(), batch.labels[i].tolist()
    cmap = plt.get_cmap("tab20")
    tokens = [(f"x{k + 1}\nclass {classes[k]}", cmap(classes[k] % 20) if classes[k] >= 0 else "#dddddd")
              if j == 0 else (f"ℓ{k + 1}\n= {labels[k]}", "white") for k in range(N) for j in (0, 1)]
    q = classes[N]
    tokens.append((f"x_q\nclass {q}", cmap(q % 20) if q >= 0 else "#dddddd"))
    for j, (text, colour) in enumerate(tokens):
        ax.add_patch(plt.Rectangle((j, 0), 0.9, 0.9, facecolor=colour, edgecolor="k"))
        ax.text(j + 0.45, 0.45, text, ha="center", va="center", fontsize=8)
    ax.annotate(f"target {int(batch.target[i])}", (len(tokens) - 0.55, 0.95), (len(tokens) + 0.3, 1.25),
                arrowprops={"arrowstyle": "->"}, fontsize=8)
    ax.set_xlim(-0.1, len(tokens) + 1.6)
    ax.set_ylim(-0.1, 1.5)
    ax.axis("off")
    ax.set_title(title or f"task {int(batch.task[i])}", fontsize=9, loc="left")


def accuracy_panel(ax: plt.Axes, runs, ceilings: dict[str, float], legend: bool = True) -> None:
    """Accuracy of several runs with the first run's plateaus shaded (plateau rule, as every phase-named
    reading; grey between them), the paper rule's boundaries as red ticks above the axes, and the Bayes
    ceilings as reference lines. With legend=False the caller places the legend (e.g. `legend_below`)."""
    rep = runs[0].phases()
    found = run_plateaus(runs[0])
    shade_phases(ax, [p for p in found if not p.climbing], plateau_gaps(found))
    plot_curves(ax, runs, "acc", "accuracy (in-distribution)")
    draw_ceilings(ax, ceilings)
    for a, _ in rep["paper"]["transitions"]:
        ax.plot([a, a], [1.02, 1.06], color="red", lw=1.5, clip_on=False)
    ax.set_ylim(0, 1.06)
    if legend:
        ax.legend(loc="upper left", ncol=2)


def plot_surgery(ax: plt.Axes, tables: dict[str, dict[str, dict[str, float]]], sets: tuple[str, ...]) -> None:
    """Heat map of surgery tables: one row per edit, one column per (checkpoint, evaluation set),
    coloured by the change in accuracy against the unedited model and annotated with the accuracy. Each
    checkpoint's name heads its group of columns, wrapped to the group's width."""
    names = list(next(iter(tables.values())))
    cols = [(ck, s) for ck in tables for s in sets]
    acc = np.array([[tables[ck][e][s] for ck, s in cols] for e in names])
    delta = acc - acc[names.index("none")]
    im = ax.imshow(delta, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.figure.colorbar(im, ax=ax, fraction=0.03, pad=0.02).set_label("accuracy change vs unedited", fontsize=8)
    for i in range(len(names)):
        for j in range(len(cols)):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(delta[i, j]) > 0.5 else "black")
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(len(cols)), [s.replace("_", "-") for _, s in cols], rotation=45, ha="right")
    for g, ck in enumerate(tables):
        if g:
            ax.axvline(g * len(sets) - 0.5, color="k", lw=1)
        ax.text((g + 0.5) * len(sets) - 0.5, -0.7, wrap(ck, 6 * len(sets)), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("evaluation set")
    ax.set_ylabel("edit")


def plot_sweep(ax: plt.Axes, runs, field: str, column: str = "acc", ylabel: str = "accuracy (in-distribution)",
               symbol: str | None = None) -> None:
    """One curve per run on a log step axis, coloured by the value of `field` (seeds share a colour); where a
    value has several seeds, the band between their lowest and highest value shades the steps they all logged."""
    values = sorted({getattr(r.config, field) for r in runs})
    cmap = plt.get_cmap("viridis")
    for r in sorted(runs, key=lambda r: (getattr(r.config, field), r.config.seed)):
        v = getattr(r.config, field)
        seeds = [x for x in runs if getattr(x.config, field) == v]
        first = r is min(seeds, key=lambda x: x.config.seed)
        colour = cmap(values.index(v) / max(len(values) - 1, 1) * 0.9)
        s = r.steps
        ax.plot(s[s > 0], r.metrics[column][s > 0], color=colour, lw=1.1 if first else 0.7, alpha=1 if first else 0.6,
                label=f"{symbol or field} = {v}" if first else None)
        if first and len(seeds) > 1:
            steps, lo, hi = seed_spread(seeds, column)
            ax.fill_between(steps[steps > 0], lo[steps > 0], hi[steps > 0], color=colour, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)


def plot_parting(ax: plt.Axes, summary, title: str = "") -> None:
    """A run's accuracy and random-label accuracy (labels shuffled among the context items) with its plateaus
    shaded (the plateau rule, named after their ceilings), the SCC ceiling (its value in the title), and the step
    where the two curves part (`readings.parting_step`): up to there the context's gains are the label
    multiset's (chapter 6)."""
    run = summary.run
    shade_phases(ax, summary.plateaus, summary.transitions)
    s = run.steps > 0
    ax.plot(run.steps[s], run.metrics["acc"][s], color="k", lw=1.1, label="accuracy")
    ax.plot(run.steps[s], run.metrics["acc_random_label"][s], color=CIRCUIT_COLOURS["SCC"], lw=1.1, ls="--",
            label="random-label accuracy")
    scc = summary.ceilings["label_multiset"]
    ax.axhline(scc, color="k", ls="--", lw=0.8, label=CEILING_LABELS["label_multiset"])
    step = parting_step(run)
    if step is not None:
        ax.axvline(step, color="red", lw=1, label="the two part")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nSCC ceiling {scc:.2f}" if title else f"SCC ceiling {scc:.2f}", fontsize=10)


def seed_spread(runs, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, lowest, highest) of a metric over runs of one setting, on the steps every run logged (the runs log
    on one grid; a run that stopped early ends the shared stretch)."""
    n = min(len(r.steps) for r in runs)
    steps = runs[0].steps[:n]
    if any(not np.array_equal(r.steps[:n], steps) for r in runs):
        raise ValueError("runs must log their metrics at the same steps")
    values = np.stack([r.metrics[column][:n] for r in runs])
    return steps, values.min(axis=0), values.max(axis=0)


PATTERN_COLOURS = {"1 → 2 → 3": "#4c9a5b", "1 → 2": "#9cc7a4", "1 → 3": "#e0a458", "2 → 3": "#6a8fc7",
                   "1": "#d9d9d9", "2": "#b7c9e6", "3": "#c98bb9", "none": "#ffffff"}
NOT_RUN = "#f2f2f2"


def pattern_key(seen: tuple[int, ...]) -> str:
    """The PATTERN_COLOURS key of a phase sequence (a phase being climbed into counts as seen)."""
    return " → ".join(map(str, seen)) or "none"


def cell_patterns(cell: list) -> list[tuple[str, int]]:
    """The phase sequences (pattern_key) the seeds of one map cell show, with how many seeds show each, most
    common first (ties in seed order)."""
    return Counter(pattern_key(s.seen) for s in cell).most_common()


def cell_text(cell: list) -> str:
    """What a map cell says: one seed's sequence with the robust rule's reading where it differs; for several
    seeds, each sequence with the fraction of seeds that show it."""
    if len(cell) == 1:
        return cell[0].both_text.replace(" [", "\n[")
    return "\n".join(f"{key}: {n}/{len(cell)}" for key, n in cell_patterns(cell)) if cell else "not run"


def plot_phase_map(ax: plt.Axes, xs: list, ys: list, cells: list[list[list]], predicted: np.ndarray,
                   xlabel: str, ylabel: str) -> None:
    """A grid of settings coloured by the phases their runs showed (the sequence most seeds show; the cell
    says each sequence and the fraction of seeds showing it), with the cells where the Bayes ceilings leave
    Phase 2 no room of its own (predicted[y, x] False) hatched and fenced off by a black line."""
    for j, row in enumerate(cells):
        for i, cell in enumerate(row):
            colour = PATTERN_COLOURS.get(cell_patterns(cell)[0][0], "#ffffff") if cell else NOT_RUN
            ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, fc=colour, lw=0, ec="#555555",
                                       hatch=None if predicted[j, i] else "//"))
            ax.text(i, j, cell_text(cell), ha="center", va="center", fontsize=8)
    for j in range(len(ys)):
        for i in range(len(xs)):
            if i + 1 < len(xs) and predicted[j, i] != predicted[j, i + 1]:
                ax.plot([i + 0.5, i + 0.5], [j - 0.5, j + 0.5], color="k", lw=2.5)
            if j + 1 < len(ys) and predicted[j, i] != predicted[j + 1, i]:
                ax.plot([i - 0.5, i + 0.5], [j + 0.5, j + 0.5], color="k", lw=2.5)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(-0.5, len(ys) - 0.5)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    used = {cell_patterns(cell)[0][0] for row in cells for cell in row if cell}  # legend: only colours drawn
    shown = {k: c for k, c in PATTERN_COLOURS.items() if k in used}
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in shown.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, fc="white", ec="#555555", hatch="//"))
    ax.legend(handles, [*shown, "ceilings: no room\nfor Phase 2"], loc="upper left", bbox_to_anchor=(1.01, 1),
              title="phases seen")


# A head's role is drawn in the colour of the phase whose circuit uses it (analysis.heads.ROLES order).
ROLE_COLOURS = {"NCC": PHASE_COLOURS[0], "SCC": PHASE_COLOURS[1], "FCC": PHASE_COLOURS[2], "other": "#ffffff"}


def plot_head_roles(ax: plt.Axes, run, roles: np.ndarray, legend: bool = True) -> None:
    """Timeline of head roles (analysis.heads.head_roles): one row per layer and head, steps on a log axis."""
    from matplotlib.colors import ListedColormap

    names = list(ROLE_COLOURS)
    keep = run.steps > 0
    s = run.steps[keep]
    n_layers, n_heads = roles.shape[:2]
    index = np.vectorize(names.index)(roles[:, :, keep]).reshape(n_layers * n_heads, -1)
    edges = np.r_[s, s[-1] + (s[-1] - s[-2])]
    ax.pcolormesh(edges, np.arange(n_layers * n_heads + 1), index, cmap=ListedColormap(list(ROLE_COLOURS.values())),
                  vmin=-0.5, vmax=len(names) - 0.5)
    ax.set_xscale("log")
    ax.set_yticks(np.arange(n_layers * n_heads) + 0.5,
                  [f"L{li + 1} H{hi + 1}" for li in range(n_layers) for hi in range(n_heads)])
    ax.axhline(n_heads, color="k", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("training step")
    if not legend:
        return
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="#999999") for c in ROLE_COLOURS.values()]
    ax.legend(handles, [f"{r}-like" if r != "other" else "other / mixed" for r in names], loc="upper left",
              bbox_to_anchor=(1.01, 1))
