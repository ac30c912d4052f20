"""Workshop exercises: the checks accept the core's own answers, reject wrong ones with a message, and the
learner's copy of each exercise notebook has its solutions blanked and its answers left out; the committed
learner copies, which the workshop page offers for download, are what the generator makes now, and are neither
pages of the book nor tests."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icl_meta import mask_matrix
from icl_meta.book.exercises import (ANSWER_TAG, SOLUTION_TAG, check_labels, check_mask, check_metrics,
                                     learner_copies, learner_text, main, write_learner_copies)
from icl_meta.probes import circuit_metrics

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FIX = "python -m icl_meta.book.exercises --learner-copies"


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
    assert not any(ANSWER_TAG in c["metadata"].get("tags", []) or "{dropdown}" in "".join(c["source"]) for c in cells)
    with pytest.raises(SystemExit, match="exists"):
        main([str(src), str(tmp_path / "copy.ipynb")])


def test_committed_learner_copies_are_current():
    """Each exercise's learner copy under book/learner/ is byte for byte what the generator makes of the exercise
    now: an edited exercise (or a synced Colab install cell) cannot leave a stale download behind."""
    copies = learner_copies(BOOK)
    assert {src.stem for src in copies} == {"ex_task", "ex_circuits"}
    for src, dst in copies.items():
        assert dst.exists(), f"{dst.relative_to(ROOT)} is missing: run {FIX}"
        assert dst.read_text() == learner_text(src), f"{dst.relative_to(ROOT)} is stale: run {FIX}"


def test_every_discuss_section_has_collapsed_answers():
    """In each exercise, the Markdown cell after every Discuss section holds the teacher's answers, collapsed."""
    for src in learner_copies(BOOK):
        cells = json.loads(src.read_text())["cells"]
        discuss = [i for i, c in enumerate(cells) if "## Discuss" in "".join(c["source"])]
        assert discuss, src.name
        for i in discuss:
            assert i + 1 < len(cells), f"{src.name}: no answer cell after Discuss"
            answer = cells[i + 1]
            assert ANSWER_TAG in answer["metadata"].get("tags", []), f"{src.name}: no answer cell after Discuss"
            assert "".join(answer["source"]).startswith("```{dropdown}"), f"{src.name}: the answers are not collapsed"


def test_workshop_links_every_learner_copy_for_download():
    """The workshop page offers each learner copy with the {download} role, and every download it names exists."""
    targets = re.findall(r"\{download\}`[^`<]*<([^>]+)>`", (BOOK / "workshop.md").read_text())
    assert sorted(BOOK / t for t in targets) == sorted(learner_copies(BOOK).values())
    assert all((BOOK / t).is_file() for t in targets)


def test_learner_copies_are_neither_pages_nor_tests():
    """A learner copy raises NotImplementedError when run: Jupyter Book must not execute it as a page (only the
    files _toc.yml lists are built) and pytest must not collect it as a notebook test (book/learner/conftest.py)."""
    assert yaml.safe_load((ROOT / "_config.yml").read_text())["only_build_toc_files"] is True
    assert "learner" not in (ROOT / "_toc.yml").read_text()
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "book"],
                         cwd=ROOT, capture_output=True, text=True)
    assert "ex_task.ipynb" in out.stdout and "learner" not in out.stdout, out.stdout + out.stderr


def test_learner_copies_are_rewritten_only_when_stale(tmp_path, monkeypatch, capsys):
    book = tmp_path / "book"
    book.mkdir()
    src = BOOK / "ex_task.ipynb"
    (book / "ex_task.ipynb").write_text(src.read_text())
    monkeypatch.chdir(tmp_path)
    main(["--learner-copies"])
    assert (book / "learner" / "ex_task_learner.ipynb").read_text() == learner_text(src)
    assert write_learner_copies(book) == []
    main(["--learner-copies"])
    assert "up to date" in capsys.readouterr().out.splitlines()[-1]
