"""Workshop exercises: the checks accept the core's own answers, reject wrong ones with a message, and the
learner's copy of each exercise notebook has its solutions blanked."""

import json
from pathlib import Path

import pytest

from icl_meta import mask_matrix
from icl_meta.book.exercises import SOLUTION_TAG, check_labels, check_mask, check_metrics, main
from icl_meta.probes import circuit_metrics

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_checks_accept_the_core(capsys):
    check_metrics(circuit_metrics)
    check_mask(mask_matrix)
    check_labels(lambda f, t, c: (f[t[:, None], c[:, :-1]], f[t, c[:, -1]]))
    assert capsys.readouterr().out.count("✓") == 3


def test_checks_reject_wrong_answers():
    with pytest.raises(AssertionError, match="label_attention"):
        check_metrics(lambda p: {"bigram": p[-1, -1], "label_attention": p[-1, 0::2].sum(), "chunk_example": 0.0})
    with pytest.raises(AssertionError, match="chunk_example, N = 1"):
        check_mask(lambda name, n: mask_matrix("none", n) if name == "chunk_example" else mask_matrix(name, n))
    with pytest.raises(AssertionError, match="targets differ"):
        check_labels(lambda f, t, c: (f[t[:, None], c[:, :-1]], f[0, c[:, -1]]))


@pytest.mark.parametrize("name", ["ex_task", "ex_circuits"])
def test_learner_version_blanks_the_solutions(name, tmp_path):
    src = BOOK / f"{name}.ipynb"
    n_solutions = sum(SOLUTION_TAG in c["metadata"].get("tags", []) for c in json.loads(src.read_text())["cells"])
    assert n_solutions >= 1
    main([str(src), str(tmp_path / "copy.ipynb")])
    cells = json.loads((tmp_path / "copy.ipynb").read_text())["cells"]
    blanked = ["".join(c["source"]) for c in cells if "raise NotImplementedError" in "".join(c["source"])]
    assert len(blanked) == n_solutions
    assert all(s.startswith("def ") and '"""' in s for s in blanked)
    with pytest.raises(SystemExit, match="exists"):
        main([str(src), str(tmp_path / "copy.ipynb")])
