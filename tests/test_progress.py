"""Progress bars: one updating line in a notebook kernel, so a built page shows the bar once, not once per redraw."""

import nbformat
import pytest
from nbclient import NotebookClient

from icl_meta.progress import in_kernel, progress_bar

CELL = """
import time
from icl_meta.progress import progress_bar
bar = progress_bar(5, desc="train", unit="step", mininterval=0)
for _ in range(5):
    time.sleep(0.05)
    bar.update()
bar.close()
"""


def test_outside_a_kernel_the_bar_writes_to_stderr(capsys):
    assert not in_kernel()
    bar = progress_bar(3, desc="x", mininterval=0)
    bar.update(3)
    bar.close()
    assert "3/3" in capsys.readouterr().err


def test_disabled_bar_writes_nothing(capsys):
    bar = progress_bar(3, enabled=False)
    bar.update(3)
    bar.close()
    assert capsys.readouterr() == ("", "")


@pytest.mark.timeout(120)
def test_in_a_kernel_the_stored_notebook_keeps_one_final_line():
    """Executed as a book build executes a chapter: every redraw replaced one display, nothing went to stderr."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    NotebookClient(nb, timeout=100, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    text = outputs[0].data["text/plain"]
    assert text.startswith("train: 100%") and "5/5" in text and "\n" not in text
