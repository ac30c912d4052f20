"""Legible output by construction: Markdown tables keep their columns, the dashboard's cells stay short
enough to fit the page, and every figure is legible at page width (icl_meta.book.style: at most W_MAX = 7 in
wide at 100 dpi, no font below 8 pt) with one phase colour scheme and a key on every heat map."""

import ast
import importlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from icl_meta.analysis.surgery import standard_edits  # noqa: E402
from icl_meta.book import style  # noqa: E402
from icl_meta.book.claims import surgery_flag_table  # noqa: E402
from icl_meta.book.dashboard import CELL_LIMITS, dashboard_summary, dashboard_table  # noqa: E402
from icl_meta.book.paper import CHAPTER_CLAIMS  # noqa: E402
from icl_meta.book.plots import draw_map, plot_surgery  # noqa: E402
from icl_meta.book.report import Check, reproduction_table  # noqa: E402

UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def columns(table: str) -> set[int]:
    """The cell counts of a Markdown table's rows (one value when every row has the header's)."""
    return {len(UNESCAPED_PIPE.split(line)) - 2 for line in table.splitlines() if line.startswith("|")}


ROWS = [("3. Three phases", Check("phases seen (plateau rule)", "3", "3, 3, 3", "3 seeds", True)),
        ("3. Three phases", Check("live retrain", "–", "max |Δacc| 0.0000", "seed 0", True, beyond=True)),
        ("4. Circuits", Check("Phase 3 (FCC): Table-1 patterns visible in the batch-mean attention metric " * 2,
                              "L1 chunk_example", "L1 bigram | L2 label_attention " * 5, "seed 0", False,
                              why="layer 1 reads as bigram")),
        ("12. Phase maps", Check("(T, N): Phase 2 where the ceilings leave it room", "–", "3 of 4", "all", None,
                                 why="the window ended", beyond=True))]


def test_every_table_row_has_the_headers_column_count():
    checks = [c for _, c in ROWS]
    table = {1: {name: {"in_dist": 0.5} for name in standard_edits()}}
    for text in (reproduction_table(checks), dashboard_table(ROWS), dashboard_summary(ROWS),
                 surgery_flag_table(table)):
        assert len(columns(text)) == 1, text


def test_dashboard_rows_fit_the_page():
    """Verdict first, the paper figure once per group, cells within CELL_LIMITS, no word long enough to
    force the table wider than a 1280 px window."""
    lines = dashboard_table(ROWS).splitlines()
    assert lines[0].startswith("| verdict | paper figure")
    visible = [line.replace("\u200b", "") for line in lines]  # the zero-width break opportunities (_breakable)
    cells = [[c.strip() for c in UNESCAPED_PIPE.split(line)[1:-1]] for line in visible[2:]]
    assert [c[0][0] for c in cells] == ["✓", "✓", "✗", "○"]
    assert cells[0][1].startswith(CHAPTER_CLAIMS["3. Three phases"][0]) and cells[1][1] == ""
    assert all(len(c[2]) <= CELL_LIMITS["claim"] for c in cells)
    assert all(len(c[3]) <= CELL_LIMITS["paper"] for c in cells)
    assert all(len(c[4].split(" — ")[0].replace("\\|", "|")) <= CELL_LIMITS["ours"] for c in cells)
    assert max(len(piece) for line in lines for word in line.split() for piece in word.split("\u200b")) <= 30
    assert "label_\u200battention" in lines[4]
    assert "batch-mean attention…" in visible[4] and "| L2… — " in visible[4]  # cut between words, not inside one
    assert "holds (beyond the paper)" in lines[3] and "matched" not in lines[3]


def test_dashboard_summary_counts_verdicts_per_chapter():
    summary = dashboard_summary(ROWS)
    assert summary.startswith("**4 checks: 2 ✓ matched or holds · 1 ✗ did not match or fails · 1 ○ open**")
    assert "| 3. Three phases | Fig 2 left, Fig 3 | 2 | 0 | 0 |" in summary


def test_heat_maps_carry_a_colour_bar():
    fig, ax = plt.subplots()
    draw_map(ax, torch.eye(5), "map")
    assert len(fig.axes) == 2  # the map and its colour bar
    fig, ax = plt.subplots()
    plot_surgery(ax, {"ck": {name: {"in_dist": 0.5} for name in standard_edits()}}, ("in_dist",))
    assert len(fig.axes) == 2
    plt.close("all")


def test_dashboard_fits_a_1280_px_window_in_chromium():
    """Rendered in headless Chromium in the content column a 1280 px window leaves the book (688 px after the
    navigation bars, measured on the built intro page), the dashboard table is no wider than that column."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    markdown_it = pytest.importorskip("markdown_it")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(dashboard_table(ROWS * 3))
    page = f'<body style="margin:0;font:16px sans-serif"><main style="width:688px">{html}</main></body>'
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_content(page)
        width = tab.evaluate("() => document.querySelector('table').scrollWidth")
        browser.close()
    assert width <= 688


def test_book_figures_cannot_be_taken_for_the_papers():
    """Book figures are "Figure C.N", numbered in chapter C; the paper's are "Fig. N" and, in a book
    figure's title, "paper Fig. N": a dotted "Fig. 13.2" would read as the paper's Figure 13."""
    for path in sorted(Path("book").glob("[0-9][0-9]_*.ipynb")):
        chapter = int(path.name[:2])
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells)
        assert not re.findall(r"Fig\. \d+\.\d+", text), path
        for number, paren in re.findall(r"Figure (\d+)\.\d+(?::| \(([^)]*)\))", text):
            assert int(number) == chapter, (path, number)
            assert "Fig." not in paren or "paper Fig." in paren, (path, paren)


def test_the_methods_figure_index_lists_every_book_figure():
    """Methods §Figures maps every paper figure to the book figures that draw it: each "Figure C.N" a chapter
    titles appears in the index, and the index names no figure that no chapter draws."""
    drawn = set()
    for path in Path("book").glob("[0-9][0-9]_*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        drawn |= set(re.findall(r"Figure (\d+\.\d+)", code))
    methods = Path("book/methods.md").read_text(encoding="utf-8")
    table = methods[methods.index("## Figures"):]
    indexed = {f for row in table.splitlines() if row.startswith("| ")
               for f in re.findall(r"\b(\d+\.\d+)\b", row.rsplit("|", 2)[-2])}
    assert drawn and drawn == indexed


# ---- Figures legible at page width (icl_meta.book.style): at most W_MAX wide, no font below MIN_FONT ----

BOOK_SOURCES = [Path("src/icl_meta/book/plots.py"), Path("src/icl_meta/book/style.py")]


def notebook_code(path: Path) -> str:
    """A notebook's code cells as one Python source (IPython magics and shell lines blanked)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return re.sub(r"(?m)^\s*[%!].*$", "", code)


def sources() -> dict[str, str]:
    """Every place a book figure is drawn: the chapters, the exercises, the intro and the plotting modules (and
    chapter.py's one figure)."""
    out = {str(p): notebook_code(p) for p in sorted(Path("book").glob("*.ipynb"))}
    out |= {str(p): p.read_text(encoding="utf-8") for p in [*BOOK_SOURCES, Path("src/icl_meta/book/chapter.py")]}
    return out


def bounded_width(node: ast.expr) -> bool:
    """A figure width that cannot pass W_MAX: a number up to W_MAX, W_MAX itself, W_MAX over a number >= 1,
    a number <= 1 times W_MAX, or min(..., W_MAX, ...)."""
    def is_w_max(n):
        return (isinstance(n, ast.Name) and n.id == "W_MAX") or (isinstance(n, ast.Attribute) and n.attr == "W_MAX")

    def number(n):
        return n.value if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) else None

    if number(node) is not None:
        return number(node) <= style.W_MAX
    if is_w_max(node):
        return True
    if isinstance(node, ast.BinOp) and is_w_max(node.left) and isinstance(node.op, ast.Div):
        return (number(node.right) or 0) >= 1
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        a, b = (node.left, node.right) if is_w_max(node.left) else (node.right, node.left)
        return is_w_max(a) and number(b) is not None and number(b) <= 1
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "min":
        return any(bounded_width(a) for a in node.args)
    return False


def test_style_rule_fits_the_content_column():
    """The rule in numbers: W_MAX inches at DPI fill at most the 700 px column, and the widest PNG allowed
    (MAX_PNG_PX, for the crop's margins) still shows 8-pt text at 8 CSS pt once shrunk to the column."""
    assert style.W_MAX * style.DPI <= style.COLUMN_PX
    assert style.MIN_FONT * style.DPI / 96 * style.COLUMN_PX / style.MAX_PNG_PX >= style.MIN_FONT
    assert (style.W_MAX + 2 * 0.1) * style.DPI <= style.MAX_PNG_PX  # a figure of W_MAX, cropped with its margins
    with style.context():
        assert plt.rcParams["figure.dpi"] == plt.rcParams["savefig.dpi"] == style.DPI
        assert plt.rcParams["figure.figsize"][0] <= style.W_MAX
        assert plt.rcParams["savefig.pad_inches"] <= 0.1


def test_style_fonts_are_at_least_8_pt():
    sizes = style.font_sizes()
    assert {"font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
            "legend.fontsize", "legend.title_fontsize", "figure.titlesize"} <= set(sizes)
    assert all(v >= style.MIN_FONT for v in sizes.values()), sizes


def test_importing_the_plots_applies_the_style():
    import icl_meta.book.plots  # noqa: F401  (the chapters' import: applies the style)

    with plt.rc_context({"font.size": 5, "figure.dpi": 50}):
        importlib.reload(icl_meta.book.plots)
        assert plt.rcParams["font.size"] == style.RC["font.size"] and plt.rcParams["figure.dpi"] == style.DPI


@pytest.mark.parametrize("name", list(sources()))
def test_every_figure_is_at_most_w_max_wide(name):
    """Every figsize in a chapter or helper: its width a number <= W_MAX or bounded by W_MAX (min(W_MAX, ...))."""
    tree = ast.parse(sources()[name])
    sizes = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
             if kw.arg == "figsize"]
    for size in sizes:
        assert isinstance(size, ast.Tuple) and bounded_width(size.elts[0]), f"{name}: figsize={ast.unparse(size)}"


@pytest.mark.parametrize("name", sources())
def test_no_explicit_font_below_8_pt(name):
    """No fontsize, labelsize or title_fontsize (nor a default of one) is set to a number below MIN_FONT; sizes
    left to the style are at least MIN_FONT by test_style_fonts_are_at_least_8_pt."""
    text = sources()[name]
    found = re.findall(r"\b(?:fontsize|labelsize|title_fontsize)\b[^=\n(),]*=\s*([0-9.]+)", text)
    assert all(float(v) >= style.MIN_FONT for v in found), (name, found)


def fake_run(seed=0, **config):
    """A run as the plotting helpers read it: steps, an S-shaped accuracy in three steps, any other metric."""
    steps = np.unique(np.r_[0, np.logspace(1, 4.8, 120).astype(int)])
    x = np.log10(np.maximum(steps, 1))
    acc = 0.3 + sum(h / (1 + np.exp(-8 * (x - c))) for h, c in ((0.25, 2.5), (0.2, 3.5), (0.2, 4.2)))

    class Curves(dict):
        def __missing__(self, key):
            return np.clip(acc + 0.05 * (hash(key) % 5) - 0.1, 0, 1)

    return SimpleNamespace(steps=steps, metrics=Curves(acc=acc, loss=2 - acc),
                           config=SimpleNamespace(seed=seed, **config),
                           phases=lambda: {"paper": {"transitions": [(300, 400)]}})


CEILINGS = {"query_only": 0.34, "label_multiset": 0.63, "full_pairs": 0.97}


def drawn_figures():
    """Every helper of plots.py drawn as a chapter draws it, the sizes that used to break the rule included
    (4 heads, 4 layers, N = 16 context pairs): (name, figure) pairs."""
    from icl_meta.book import plots

    figs = []
    fig, axes = plt.subplots(2, 1, figsize=(7, 3.6))
    batch = SimpleNamespace(classes=torch.tensor([[3, 17, 40, 9, 12], [-1, 17, -1, 9, -1]]),
                            target=torch.tensor([11, 2]), labels=torch.tensor([[5, 20, 7, 31]] * 2),
                            task=torch.tensor([0, 1]))
    plots.plot_sequence(axes[0], batch, 0,
                        "ICML, task 0: query class 12 is absent; its label under each task: [3, 17, 9]")
    plots.plot_sequence(axes[1], batch, 1)
    figs.append(("plot_sequence", fig))
    fig, axes = plt.subplots(2, 3, figsize=(7, 5.6))
    for ax in axes.flat:
        plots.plot_allowed(ax, torch.tril(torch.ones(9, 9, dtype=torch.bool)), "SCC model, layer 1: label_attention")
    figs.append(("plot_allowed", fig))
    for layers in (2, 3, 4):
        figs.append((f"plot_attention_maps {layers} layers", plots.plot_attention_maps(
            [torch.rand(1, 9, 9)] * layers, 4, "Phase 2 (paper: SCC), step 12,345,")))
    figs.append(("plot_attention_maps N=16", plots.plot_attention_maps([torch.rand(1, 33, 33)] * 2, 16, "N = 16,")))
    for heads in (2, 4, 6):
        figs.append((f"plot_head_maps {heads} heads", plots.plot_head_maps([torch.rand(heads, 9, 9)] * 2, "H")))
    fig, ax = plt.subplots(figsize=(7, 7.6))
    tables = {f"Phase {k} (NCC), step {k * 12_345:,}": {e: {s: 0.5 for s in ("in_dist", "random_label", "in_weights")}
                                                      for e in standard_edits()} for k in (1, 2, 3)}
    plots.plot_surgery(ax, tables, ("in_dist", "random_label", "in_weights"))
    fig.tight_layout()
    figs.append(("plot_surgery", fig))
    fig, ax = plt.subplots(figsize=(7, 5))
    cell = [SimpleNamespace(seen=(1, 2, 3), both_text="1 → 2 → 3 [robust: 1 → (2)]")] * 3
    plots.plot_phase_map(ax, [16, 64, 256], [0.0, 0.1], [[cell, [], cell], [cell, cell, cell]],
                         np.array([[True, False, True], [True, True, True]]), "classes K", "noise ε")
    fig.tight_layout()
    figs.append(("plot_phase_map", fig))
    run = fake_run(n_heads=2)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(7, 8))
    roles = np.array(["NCC", "SCC", "FCC", "other"])[np.arange(2 * 2 * len(run.steps)).reshape(2, 2, -1) % 4]
    plots.plot_head_roles(ax1, run, roles)
    plots.plot_metric_curves(ax2, run, 1)
    ax2.legend()
    plots.plot_sweep(ax3, [fake_run(s, num_tasks=t) for t in (1, 2, 3, 4) for s in (0, 1)], "num_tasks", symbol="T")
    ax3.legend(loc="upper left")
    fig.tight_layout()
    figs.append(("plot_head_roles, plot_metric_curves, plot_sweep", fig))
    fig, ax = plt.subplots(figsize=(7, 4.8))
    plots.accuracy_panel(ax, [fake_run(s) for s in range(3)], CEILINGS, legend=False)
    plots.legend_below(fig)
    figs.append(("accuracy_panel, legend_below", fig))
    return figs


def test_every_helper_draws_legibly():
    """Each helper's figure, drawn at the sizes the chapters use, breaks no rule of style.problems: no wider than
    W_MAX, no drawn text below MIN_FONT."""
    try:
        for name, fig in drawn_figures():
            assert style.problems(fig) == [], name
    finally:
        plt.close("all")


def test_map_figures_wrap_to_page_width():
    """Many maps wrap to more rows instead of widening the figure: two a row for layers, two or three for heads."""
    from icl_meta.book.plots import plot_attention_maps, plot_head_maps

    fig = plot_attention_maps([torch.rand(1, 9, 9)] * 4, 4)
    assert fig.get_figwidth() <= style.W_MAX and len([a for a in fig.axes if a.get_label() != "<colorbar>"]) == 4
    fig = plot_head_maps([torch.rand(4, 9, 9)] * 2)
    assert fig.get_figwidth() <= style.W_MAX
    assert sum(a.get_visible() and a.get_label() != "<colorbar>" for a in fig.axes) == 8
    plt.close("all")


def test_legend_below_sits_under_every_panel():
    """legend_below's legend lies below every panel's decorations (tick labels, axis labels), inside the figure."""
    from icl_meta.book.plots import legend_below

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax in axes:
        for i in range(7):
            ax.plot([1, 10, 100], [i, i + 1, i + 2], label=f"a long entry number {i}")
        ax.set_xscale("log")
        ax.set_xlabel("training step")
    leg = legend_below(fig, ncol=3)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box = leg.get_window_extent(r)
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert all(box.y1 <= ax.get_tightbbox(r).y0 + 1 for ax in axes)
    assert len(leg.get_texts()) == 7  # each label once
    plt.close("all")


def test_every_heat_map_has_a_key():
    """Maps of values carry a colour bar (attention maps, masks, surgery tables), maps of categories a legend
    (head roles, phase patterns)."""
    from icl_meta.book.plots import plot_allowed, plot_attention_maps, plot_head_maps, plot_head_roles

    fig, ax = plt.subplots()
    plot_allowed(ax, torch.ones(9, 9, dtype=torch.bool), "none")
    assert len(fig.axes) == 2
    fig = plot_attention_maps([torch.rand(1, 9, 9)] * 3, 4)
    assert sum(a.get_label() == "<colorbar>" for a in fig.axes) == 3
    fig = plot_head_maps([torch.rand(2, 9, 9)] * 2)
    assert sum(a.get_label() == "<colorbar>" for a in fig.axes) == 4
    fig, ax = plt.subplots()
    run = fake_run()
    plot_head_roles(ax, run, np.full((2, 1, len(run.steps)), "SCC"))
    assert ax.get_legend() is not None
    plt.close("all")


@pytest.mark.parametrize("name", [n for n in sources() if n.endswith(".ipynb")])
def test_chapter_heat_maps_carry_a_colour_bar(name):
    """A chapter cell that draws a heat map itself (imshow, pcolormesh, matshow) also draws its colour bar."""
    cells = json.loads(Path(name).read_text(encoding="utf-8"))["cells"]
    for c in cells:
        code = "".join(c["source"]) if c["cell_type"] == "code" else ""
        maps = len(re.findall(r"\.(?:imshow|pcolormesh|matshow)\(", code))
        assert len(re.findall(r"colorbar\(", code)) >= maps, (name, code[:200])


def test_one_phase_colour_scheme():
    """Phase k is PHASE_COLOURS[k - 1] wherever it is shaded, its circuit's curves the same hue darker, head
    roles in their phase's colour; no chapter picks its own colours for the phases or circuits."""
    from matplotlib.colors import rgb_to_hsv, to_rgb

    from icl_meta.book.plots import (CIRCUIT_COLOURS, PHASE_COLOURS, PHASE_LINE_COLOURS, ROLE_COLOURS,
                                     shade_phases)
    from icl_meta.probes import Phase

    fig, ax = plt.subplots()
    shade_phases(ax, [Phase(k, 10 * k, 10 * k + 5, 0.5) for k in (1, 2, 3)], [])
    assert [p.get_facecolor()[:3] for p in ax.patches] == [to_rgb(c) for c in PHASE_COLOURS[:3]]
    plt.close(fig)
    for light, dark in zip(PHASE_COLOURS[:4], PHASE_LINE_COLOURS):
        assert abs(rgb_to_hsv(to_rgb(light))[0] - rgb_to_hsv(to_rgb(dark))[0]) < 0.06, (light, dark)
    assert [ROLE_COLOURS[c] for c in ("NCC", "SCC", "FCC")] == list(PHASE_COLOURS[:3])
    assert list(CIRCUIT_COLOURS.values()) == list(PHASE_LINE_COLOURS[:3])
    for name, code in sources().items():
        if name.endswith(".ipynb"):
            assert not re.search(r"""["'](?:NCC|SCC|FCC)["']\s*:\s*["'](?:C\d|#|tab:)""", code), name
            assert "axvspan(" not in code, f"{name}: shade phases with plots.shade_phases"
