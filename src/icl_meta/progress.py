"""Progress bars that stay one line wherever training runs.

In a terminal a tqdm bar redraws itself in place on stderr. In a Jupyter kernel (Jupyter, Colab, or the
kernel a book build starts) every redraw written to stderr is kept as its own chunk of output, and a
built page printed each chunk on a line of its own: a 10,000-step run left about 100 lines. In a kernel
the bar is therefore one text display that each redraw replaces (a display id): a live notebook shows it
moving, and the stored notebook, hence the built page, keeps only its final line.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def in_kernel() -> bool:
    """True inside a Jupyter kernel (an IPython shell with a kernel), False in a terminal or plain Python."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class DisplayLine:
    """A text file for tqdm whose every write replaces the text of one notebook display."""

    encoding = "utf-8"  # tqdm draws its Unicode bar only for a file that says it takes Unicode

    def __init__(self):
        from IPython.display import display

        self._handle = display({"text/plain": ""}, raw=True, display_id=True)

    def write(self, text: str) -> None:
        """tqdm writes "\\r" and the redrawn bar; the bar after the last carriage return becomes the display."""
        line = text.rsplit("\r", 1)[-1].strip()
        if line:
            self._handle.update({"text/plain": line}, raw=True)

    def flush(self) -> None:
        """Nothing is buffered: each write has already updated the display."""


def progress_bar(total: int, initial: int = 0, enabled: bool = True, **kw) -> tqdm:
    """A tqdm bar over `total` steps: on stderr in a terminal, one updating display line in a kernel."""
    file = DisplayLine() if enabled and in_kernel() else None
    return tqdm(total=total, initial=initial, disable=not enabled, file=file, **kw)
