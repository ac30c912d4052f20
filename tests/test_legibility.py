"""Legible output by construction: Markdown tables keep their columns, the dashboard's cells stay short
enough to fit the page, and every attention heat map carries a colour bar."""

import json
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from icl_meta.analysis.surgery import standard_edits  # noqa: E402
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
    cells = [[c.strip() for c in UNESCAPED_PIPE.split(line)[1:-1]] for line in lines[2:]]
    assert [c[0][0] for c in cells] == ["✓", "✓", "✗", "○"]
    assert cells[0][1].startswith(CHAPTER_CLAIMS["3. Three phases"][0]) and cells[1][1] == ""
    assert all(len(c[2]) <= CELL_LIMITS["claim"] for c in cells)
    assert all(len(c[3]) <= CELL_LIMITS["paper"] for c in cells)
    assert all(len(c[4].split(" — ")[0].replace("\\|", "|")) <= CELL_LIMITS["ours"] for c in cells)
    assert max(len(word) for line in lines for word in line.split()) <= 30
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
    """Rendered in headless Chromium in the content column a 1280 px window leaves the book (about 700 px
    after the navigation bars), the dashboard table is no wider than that column."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    markdown_it = pytest.importorskip("markdown_it")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(dashboard_table(ROWS * 3))
    page = f'<body style="margin:0;font:16px sans-serif"><main style="width:700px">{html}</main></body>'
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_content(page)
        width = tab.evaluate("() => document.querySelector('table').scrollWidth")
        browser.close()
    assert width <= 700


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
