"""One `Config` describes a run: task, model, training and evaluation.

The CLI builds one `--kebab-case` flag per field, chapters and tests construct it directly, and a run
directory stores it as `config.json`. `validate()` rejects impossible settings before any work starts,
naming the parameter and the allowed range.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import os
import tokenize
from dataclasses import dataclass

import numpy as np

MASK_NAMES = ("none", "bigram", "label_attention", "chunk_example")
# Methods §Metrics / paper Table 1: the pattern of each circuit in layers 1 and 2, also its training masks (App. C).
CIRCUITS = {"NCC": ("bigram", "bigram"), "SCC": ("label_attention", "bigram"),
            "FCC": ("chunk_example", "label_attention")}
QUERY_RULES = ("absent", "uniform")
LABEL_TABLES = ("random", "scc_theory")
BLOCKS = ("attention", "standard")
READOUTS = ("query", "all_labels")
CLASSIFIER_INITS = ("normal", "torch_linear")
MAX_LAYERS = 6
SEED_LIMIT = 2**64  # seeds feed torch.Generator.manual_seed, which takes at most 64 bits


def field_docs() -> dict[str, tuple[str, str]]:
    """{field: (section, what it is)} for every Config field, read from the comments in Config's source (the
    section comments and each field's trailing comment), so the CLI's help has no second copy of the text."""
    names = {f.name for f in dataclasses.fields(Config)}
    lines = inspect.getsource(Config).splitlines(keepends=True)
    comments = {t.start[0]: t.string.lstrip("# ").strip()
                for t in tokenize.generate_tokens(iter(lines).__next__) if t.type == tokenize.COMMENT}
    docs, section = {}, ""
    for number, line in enumerate(lines, start=1):
        name = line.strip().split(":")[0]
        if line.strip().startswith("#"):
            section = comments[number]
        elif name in names:
            docs[name] = (section, comments.get(number, ""))
    return docs


def fast_mode() -> bool:
    """True when ICL_FAST=1: chapters and tests shrink their live runs so CI stays within budget."""
    return os.environ.get("ICL_FAST", "") == "1"


@dataclass(frozen=True)
class Config:
    """Every knob of one run. Defaults are the paper's (Methods §Task, §Model, §Training)."""

    # task (Methods §Task)
    num_tasks: int = 3  # T, tasks (label tables)
    num_classes: int = 64  # K, classes
    num_labels: int = 32  # L, labels
    num_seq: int = 4  # N, context (item, label) pairs
    content_dim: int = 63  # D, dimensions of an item
    pos_dim: int = 65  # P, one-hot pair-index slots of an item token
    eps: float = 0.1  # within-class noise ε
    burstiness: int = 1  # B, copies of each context class
    p_bursty: float = 0.0  # p_B, probability that the query class is in the context
    alpha: float = 0.0  # Zipf exponent over classes
    beta: float = 0.0  # Zipf exponent over tasks
    query_rule: str = "absent"  # "absent": paper's p_B definition; "uniform": authors' code, any of K
    random_offset: bool = False  # place each sequence at a random offset in the P-wide position window
    label_table: str = "random"  # "random": i.i.d. labels; "scc_theory": App. D conditions (T=2, K=L)
    # model (Methods §Model)
    n_layers: int = 2  # attention layers (blocks)
    n_heads: int = 1  # heads per layer, each of width d_model / n_heads
    w_o: bool = False  # output projection per attention layer (the authors' code had none)
    masks: tuple[str, ...] = ()  # one circuit mask name per layer (Methods §Metrics); empty: causal everywhere
    block: str = "attention"  # "attention": attention-only; "standard": pre-LN attention + MLP blocks
    readout: str = "query"  # "query": loss at the query; "all_labels": loss at every item (App. M)
    mlp_hidden: int = 128  # width of the classifier's hidden layer
    classifier_init: str = "normal"  # "normal": N(0, 1/fan_in), zero biases; "torch_linear": authors' code
    # training (Methods §Training)
    lr: float = 0.01  # SGD learning rate (no momentum, no decay)
    batch_size: int = 128  # fresh sequences per step
    steps: int = 100_000  # training steps (a resumed run may raise it)
    seed: int = 0  # derives the four seeds below that are left None
    instance_seed: int | None = None  # None: derived from seed
    init_seed: int | None = None  # None: derived from seed
    data_seed: int | None = None  # None: derived from seed
    eval_seed: int | None = None  # None: derived from seed
    # evaluation and logging
    eval_every: int = 100  # also the window over which training loss/accuracy are averaged
    eval_size: int = 2048  # in-distribution evaluation sequences (fixed for the run)
    aux_eval_size: int = 512  # random-label, in-weights-only and copy evaluation sequences each
    probe_size: int = 256  # sequences of the in-distribution set used for the attention metrics
    n_checkpoints: int = 20  # log-spaced checkpoints kept (step 0 and the last step included)
    save_every: int = 10_000  # steps between resume states
    early_stop_acc: float | None = None  # stop once accuracy held this level ...
    early_stop_factor: float = 1.5  # ... from step t until step factor·t
    device: str = "cpu"  # "cpu" or a CUDA device such as "cuda" or "cuda:0"

    # derived sizes
    @property
    def d_model(self) -> int:
        return self.content_dim + self.pos_dim

    @property
    def n_ctx_classes(self) -> int:
        """Distinct classes in a context: N/B."""
        return self.num_seq // self.burstiness

    @property
    def seq_len(self) -> int:
        return 2 * self.num_seq + 1

    def layer_masks(self) -> tuple[str, ...]:
        return self.masks if self.masks else ("none",) * self.n_layers

    def seeds(self) -> dict[str, int]:
        """The four seeds of a run; unset ones are derived from `seed` so that each stream is independent."""
        derived = np.random.SeedSequence(self.seed).generate_state(4, dtype=np.uint32)
        names = ("instance", "init", "data", "eval")
        given = (self.instance_seed, self.init_seed, self.data_seed, self.eval_seed)
        return {n: int(g) if g is not None else int(d) for n, g, d in zip(names, given, derived)}

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        d = dict(d)
        if "masks" in d:
            d["masks"] = tuple(d["masks"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def validate(self) -> "Config":
        """Raise ValueError naming the first impossible parameter; return self when all is well."""
        _check(self)
        return self


def _require(ok: bool, name: str, allowed: str, value) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# What each field type admits (checked first, so that the range checks below compare numbers with numbers).
TYPE_CHECKS = {
    "int": (_is_int, "an integer"),
    "int | None": (lambda v: v is None or _is_int(v), "None or an integer"),
    "float": (_is_finite, "a finite number"),
    "float | None": (lambda v: v is None or _is_finite(v), "None or a finite number"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[str, ...]": (lambda v: isinstance(v, tuple) and all(isinstance(m, str) for m in v), "a tuple of names"),
}


def _check(c: Config) -> None:
    for f in dataclasses.fields(c):
        ok, allowed = TYPE_CHECKS[f.type]
        _require(ok(getattr(c, f.name)), f.name, allowed, getattr(c, f.name))
    for name in ("num_tasks", "num_classes", "num_seq", "content_dim", "burstiness", "n_heads",
                 "mlp_hidden", "batch_size", "steps", "eval_every", "eval_size", "aux_eval_size",
                 "probe_size", "save_every"):
        v = getattr(c, name)
        _require(isinstance(v, int) and v >= 1, name, "an integer >= 1", v)
    _require(isinstance(c.num_labels, int) and c.num_labels >= 2, "num_labels", "an integer >= 2", c.num_labels)
    _require(c.pos_dim >= c.num_seq + 1, "pos_dim",
             f">= num_seq + 1 = {c.num_seq + 1} (one slot per pair and the query)", c.pos_dim)
    _require(c.num_seq % c.burstiness == 0, "burstiness", f"a divisor of num_seq = {c.num_seq}", c.burstiness)
    _require(c.n_ctx_classes <= c.num_classes, "num_seq / burstiness",
             f"<= num_classes = {c.num_classes} (distinct context classes)", c.n_ctx_classes)
    _require(c.eps >= 0, "eps", ">= 0", c.eps)
    _require(0.0 <= c.p_bursty <= 1.0, "p_bursty", "in [0, 1]", c.p_bursty)
    _require(c.alpha >= 0, "alpha", ">= 0", c.alpha)
    _require(c.beta >= 0, "beta", ">= 0", c.beta)
    _require(c.query_rule in QUERY_RULES, "query_rule", f"one of {QUERY_RULES}", c.query_rule)
    if c.query_rule == "absent" and c.p_bursty < 1.0:
        _require(c.n_ctx_classes < c.num_classes, "num_seq / burstiness",
                 f"< num_classes = {c.num_classes} so that a query class absent from the context exists",
                 c.n_ctx_classes)
    _require(c.label_table in LABEL_TABLES, "label_table", f"one of {LABEL_TABLES}", c.label_table)
    if c.label_table == "scc_theory":
        _require(c.num_tasks == 2, "num_tasks", "2 under label_table='scc_theory'", c.num_tasks)
        _require(c.num_labels == c.num_classes, "num_labels",
                 f"== num_classes = {c.num_classes} under label_table='scc_theory'", c.num_labels)
        _require(c.burstiness == 1, "burstiness", "1 under label_table='scc_theory' (no duplicate classes)",
                 c.burstiness)
        _require(c.p_bursty == 0.0 and c.query_rule == "absent", "p_bursty",
                 "0 with query_rule='absent' under label_table='scc_theory' (query never in context)", c.p_bursty)
    _require(1 <= c.n_layers <= MAX_LAYERS, "n_layers", f"in 1..{MAX_LAYERS}", c.n_layers)
    _require(c.d_model % c.n_heads == 0, "n_heads", f"a divisor of d_model = content_dim + pos_dim = {c.d_model}",
             c.n_heads)
    _require(len(c.masks) in (0, c.n_layers), "masks", f"empty or one name per layer ({c.n_layers})", c.masks)
    for m in c.masks:
        _require(m in MASK_NAMES, "masks", f"names from {MASK_NAMES}", m)
    _require(c.block in BLOCKS, "block", f"one of {BLOCKS}", c.block)
    _require(c.readout in READOUTS, "readout", f"one of {READOUTS}", c.readout)
    _require(c.classifier_init in CLASSIFIER_INITS, "classifier_init", f"one of {CLASSIFIER_INITS}", c.classifier_init)
    _require(c.lr > 0, "lr", "> 0", c.lr)
    _require(0 <= c.seed < SEED_LIMIT, "seed", "in [0, 2**64)", c.seed)
    for name in ("instance_seed", "init_seed", "data_seed", "eval_seed"):
        v = getattr(c, name)
        _require(v is None or 0 <= v < SEED_LIMIT, name, "None or in [0, 2**64)", v)
    _require(c.probe_size <= c.eval_size, "probe_size", f"<= eval_size = {c.eval_size}", c.probe_size)
    _require(c.save_every % c.eval_every == 0, "save_every", f"a multiple of eval_every = {c.eval_every}", c.save_every)
    _require(c.n_checkpoints >= 0, "n_checkpoints", ">= 0", c.n_checkpoints)
    _require(c.early_stop_acc is None or 0 < c.early_stop_acc <= 1, "early_stop_acc", "None or in (0, 1]",
             c.early_stop_acc)
    _require(c.early_stop_factor >= 1, "early_stop_factor", ">= 1", c.early_stop_factor)
    _require(c.device == "cpu" or c.device.startswith("cuda"), "device", "'cpu' or 'cuda[:i]'", c.device)
