"""Chapter 5's short restricted run drawn against the ceilings (`book.chapter.restricted_curve`)."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from icl_meta.book import chapter  # noqa: E402
from icl_meta.config import MASK_NAMES  # noqa: E402

CEIL = {"query_only": 0.36, "label_multiset": 0.78, "full_pairs": 1.0}


@pytest.mark.parametrize("layer1, layer2", [("chunk", "label_attention"), ("bigram", "Bigram")])
def test_a_bad_mask_name_raises_before_any_training(monkeypatch, layer1, layer2):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(chapter, "train", no_training)
    figures = plt.get_fignums()
    with pytest.raises(ValueError, match=re.escape(f"masks must be names from {MASK_NAMES}")):
        chapter.restricted_curve(layer1, layer2, 30, CEIL)
    assert plt.get_fignums() == figures  # nothing drawn either


def test_restricted_curve_trains_the_masks_and_draws_accuracy_against_the_ceilings():
    fig, ax = plt.subplots()
    run = chapter.restricted_curve("chunk_example", "label_attention", 30, CEIL, ax=ax)
    assert run.config.masks == ("chunk_example", "label_attention") and run.steps[-1] == 30
    curve, *ceilings = ax.get_lines()
    assert np.array_equal(curve.get_xdata(), run.steps[run.steps > 0])
    assert np.array_equal(curve.get_ydata(), run.metrics["acc"][run.steps > 0])
    assert [line.get_ydata()[0] for line in ceilings] == list(CEIL.values())
    plt.close(fig)
