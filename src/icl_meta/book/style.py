"""The book's one plotting style: every figure legible at page width, by construction.

"At page width" concretely: in a 1280 px browser window the book's content column is about 700 CSS px wide
(sphinx-book-theme after its navigation bars; `tests/test_legibility.py` fits the dashboard table in the same
700 px). A chapter's figure is a PNG saved at `DPI` = 100 dots per inch (the inline backend saves at the
figure's dpi, cropped to its drawn content), and the page shows a PNG at one CSS px per pixel unless it is wider
than the column, when the browser shrinks it to the column. The rule:

* every figure is at most `W_MAX` = 7 in wide, so at most 700 px: it is shown at its own size, never shrunk,
  and a font of f pt shows at f * 100/96 CSS pt (CSS has 96 px per inch), a little larger than f;
* every font is at least `MIN_FONT` = 8 pt (the sizes of `RC` below; helpers and chapters pass no smaller
  `fontsize`), so no text in the book shows below 8 pt in a column of 700 px or more;
* a PNG may come out at most `MAX_PNG_PX` = 729 px wide (the crop's 0.1 in margins, a title run past the
  edge): at that width, shrunk to 700 px, 8-pt text still shows at 8 CSS pt.

Content that does not fit 7 in wraps to more rows (2-3 panels a row) and legends go below or beside the panels
(`plots.legend_below`) instead of shrinking their font. `use()` applies `RC` to matplotlib's rcParams; importing
`icl_meta.book.plots`, as every chapter that draws does, calls it. `problems(fig)` lists what breaks the rule in a
drawn figure (the tests draw every helper and check it).
"""

from __future__ import annotations

import matplotlib
from matplotlib.font_manager import FontProperties

DPI = 100           # dots per inch of the figure and of its saved PNG
W_MAX = 7.0         # widest figure, in inches (7 in at 100 dpi = 700 px = the content column)
MIN_FONT = 8.0      # smallest font anywhere in a figure, in points
COLUMN_PX = 700     # the content column's width in a 1280 px window, CSS px
MAX_PNG_PX = int(COLUMN_PX * DPI / 96)  # widest PNG whose 8-pt text still shows at 8 CSS pt in the column

# Every font size a figure's text takes by default, in points (all >= MIN_FONT).
FONT_SIZES = {
    "font.size": 10.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
    "legend.title_fontsize": 8.5,
    "figure.titlesize": 10.5,
    "figure.labelsize": 9.0,
}

RC = {
    **FONT_SIZES,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (W_MAX, 4.0),
    "savefig.pad_inches": 0.1,
    "legend.borderaxespad": 0.4,
    "axes.titlepad": 5.0,
}


def use() -> None:
    """Apply the book's style (`RC`) to matplotlib's global rcParams."""
    matplotlib.rcParams.update(RC)


def context():
    """The book's style for a `with` block only (rcParams restored after it)."""
    return matplotlib.rc_context(RC)


def font_sizes() -> dict[str, float]:
    """The point size each of FONT_SIZES' rcParams resolves to under the style (a relative size such as
    "small" is resolved against font.size)."""
    with context():
        return {k: FontProperties(size=matplotlib.rcParams[k]).get_size_in_points() for k in FONT_SIZES}


def problems(fig) -> list[str]:
    """What breaks the rule in a figure: wider than W_MAX, or a drawn, non-empty text (titles, labels, tick
    labels, legend entries, annotations) set below MIN_FONT. Empty when the figure is legible at page width."""
    from matplotlib.text import Text

    found = []
    if fig.get_figwidth() > W_MAX + 1e-9:
        found.append(f"figure {fig.get_figwidth():.2f} in wide > {W_MAX} in")
    fig.canvas.draw()
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT - 1e-9:
            found.append(f"{t.get_text()[:40]!r} at {t.get_fontsize():.1f} pt < {MIN_FONT} pt")
    return found
