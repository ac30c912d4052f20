"""Workshop exercises: checks that tell a learner whether their function is right, and the tool that
turns an exercise notebook (solutions filled in, as CI runs it) into the learner's version.

    python -m icl_meta.book.exercises --learner-copies   # from the repository root: rewrite book/learner/
    python -m icl_meta.book.exercises book/ex_circuits.ipynb my_copy.ipynb   # one copy, anywhere

A solution cell carries the tag "solution"; the learner's version keeps its first line (the function
signature and docstring up to the first blank line) and replaces the body with NotImplementedError. A
teacher's answer to a Discuss question is a Markdown cell tagged "answer" (a `{dropdown}`, collapsed on
the website); the learner's version leaves it out.

The learner copies of the book's exercise notebooks (book/ex_*.ipynb) are committed under book/learner/, so
that the workshop page offers them for download; tests/test_exercises.py fails when one differs from what
this module makes of its exercise now. They are never pages of the book (`only_build_toc_files` in
_config.yml leaves out every file _toc.yml does not list) nor tests (book/learner/conftest.py): a learner
copy raises NotImplementedError when run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import MASK_NAMES, Config
from ..model import mask_matrix
from ..probes import METRICS, circuit_metrics
from ..task import make_instance, sample

SOLUTION_TAG = "solution"
ANSWER_TAG = "answer"
LEARNER_DIR = "learner"  # under book/: the committed learner copies


def _ok(what: str) -> None:
    print(f"✓ {what}: correct")


def check_labels(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
    """fn(table [T, K], task [B], classes [B, N+1]) -> (context labels [B, N], target [B]), compared with
    the sampler on 500 sequences of three settings. Raises AssertionError saying what differs."""
    for cfg in (Config(), Config(num_tasks=5, num_classes=20, num_labels=7), Config(num_seq=8, burstiness=2)):
        inst = make_instance(cfg)
        b = sample(inst, cfg, 500, torch.Generator().manual_seed(0))
        labels, target = fn(inst.table, b.task, b.classes)
        assert torch.equal(torch.as_tensor(labels), b.labels), (
            f"context labels differ (T={cfg.num_tasks}, K={cfg.num_classes}): label k of a sequence is "
            "f[task, class of item k]")
        assert torch.equal(torch.as_tensor(target), b.target), "targets differ: the target is f[task, query class]"
    _ok("labels and targets")


def check_metrics(fn: Callable[[torch.Tensor], dict[str, float]]) -> None:
    """fn(p [S, S]) -> {'bigram', 'label_attention', 'chunk_example'} on random causal attention maps
    of N = 2, 4 and 8 pairs, compared with icl_meta.probes.circuit_metrics (Methods §Metrics)."""
    g = torch.Generator().manual_seed(0)
    for n in (2, 4, 8):
        S = 2 * n + 1
        scores = torch.randn(S, S, generator=g).masked_fill(~mask_matrix("none", n), float("-inf"))
        p = torch.softmax(scores, -1)
        ours, ref = fn(p), circuit_metrics(p)
        for m in METRICS:
            assert m in ours, f"missing metric {m!r}: return a dict with keys {METRICS}"
            assert abs(float(ours[m]) - float(ref[m])) < 1e-5, (
                f"{m} is {float(ours[m]):.4f}, expected {float(ref[m]):.4f} (N = {n}); remember positions are "
                "0-based here: item k at 2k, label k at 2k+1, query at 2N")
    _ok("the three circuit metrics")


def check_mask(fn: Callable[[str, int], torch.Tensor]) -> None:
    """fn(name, N) -> bool [S, S] allowed attention, compared with icl_meta.model.mask_matrix for every
    mask name and N = 1..8."""
    for name in MASK_NAMES:
        for n in range(1, 9):
            ours, ref = torch.as_tensor(fn(name, n)).bool(), mask_matrix(name, n)
            assert ours.shape == ref.shape, f"{name}, N = {n}: shape {tuple(ours.shape)}, expected {tuple(ref.shape)}"
            wrong = (ours != ref).nonzero().tolist()
            assert not wrong, (f"{name}, N = {n}: wrong (row, column) cells {wrong[:5]} (rows the mask does not "
                               "restrict stay causal)")
    _ok("the circuit masks")


def learner_version(nb: dict) -> dict:
    """The notebook with every solution cell's body replaced by `raise NotImplementedError` (its lines up
    to the first blank line, the signature and docstring, are kept), its outputs cleared, and its teacher's
    answers (cells tagged "answer") left out."""
    out = json.loads(json.dumps(nb))
    out["cells"] = [c for c in out["cells"] if ANSWER_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in out["cells"]:
        if cell["cell_type"] == "code" and SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]).split("\n\n")[0].rstrip("\n")
            cell["source"] = src + "\n    raise NotImplementedError  # your code here\n"
            cell["outputs"], cell["execution_count"] = [], None
            cell["metadata"]["tags"] = [t for t in cell["metadata"]["tags"] if t not in (SOLUTION_TAG, "hide-input")]
    return out


def learner_text(exercise: Path) -> str:
    """The learner copy of an exercise notebook file, as the text to write: the book's notebook format
    (indent 1, UTF-8 characters unescaped, final newline), so a committed copy compares byte for byte."""
    return json.dumps(learner_version(json.loads(exercise.read_text())), indent=1, ensure_ascii=False) + "\n"


def learner_copies(book: Path) -> dict[Path, Path]:
    """Each exercise notebook of the book directory (ex_*.ipynb) and the path of its committed learner copy,
    learner/<name>_learner.ipynb, which the workshop page links for download."""
    return {src: book / LEARNER_DIR / f"{src.stem}_learner.ipynb" for src in sorted(book.glob("ex_*.ipynb"))}


def write_learner_copies(book: Path) -> list[Path]:
    """Rewrite every learner copy of the book directory that differs from its exercise notebook's learner
    version (after an exercise was edited, or its Colab install cell synced); returns the copies rewritten."""
    written = []
    for src, dst in learner_copies(book).items():
        text = learner_text(src)
        if not dst.exists() or dst.read_text() != text:
            dst.parent.mkdir(exist_ok=True)
            dst.write_text(text)
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> None:
    """`--learner-copies`: bring book/learner/ (from the current directory, the repository root) up to date.
    `EXERCISE LEARNER_COPY`: write one learner copy to a new file (an existing one is never overwritten)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--learner-copies"]:
        written = write_learner_copies(Path.cwd() / "book")
        print("\n".join(f"wrote {p}" for p in written) or "every learner copy is up to date")
        return
    if len(argv) != 2:
        sys.exit("usage: python -m icl_meta.book.exercises --learner-copies\n"
                 "       python -m icl_meta.book.exercises EXERCISE.ipynb LEARNER_COPY.ipynb")
    src, dst = map(Path, argv)
    if dst.exists():
        sys.exit(f"{dst} exists; choose a new file name")
    dst.write_text(learner_text(src))
    print(f"wrote {dst}: solution cells blanked")


if __name__ == "__main__":
    main()
