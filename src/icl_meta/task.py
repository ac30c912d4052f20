"""The in-context meta-learning task (Methods §Task): a seeded problem instance and a batched sampler.

Every sequence is x_1, l_1, ..., x_N, l_N, x_q. All sampling is tensor code over the whole batch; the
distinct context classes and the query come from one Gumbel top-k draw, which is exactly successive
sampling without replacement from the class Zipf law, so the (N/B + 1)-th pick is a query class drawn
from the same law restricted to classes absent from the context.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch

from .config import Config

KINDS = ("train", "random_label", "in_weights", "copy")


@dataclass(frozen=True)
class Instance:
    """What is drawn once per run: class means μ [K, D] and the label table f [T, K]."""

    means: torch.Tensor
    table: torch.Tensor

    def to(self, device: str) -> "Instance":
        return Instance(self.means.to(device), self.table.to(device))


@dataclass(frozen=True)
class Batch:
    """A batch of sequences. `classes` holds the N context classes then the query class (-1: novel)."""

    items: torch.Tensor  # [B, N+1, D] float: context items then the query item
    labels: torch.Tensor  # [B, N] long: context labels as shown
    target: torch.Tensor  # [B] long: the query's label
    task: torch.Tensor  # [B] long
    classes: torch.Tensor  # [B, N+1] long
    positions: torch.Tensor  # [B, N+1] long: pair index of each item in the P-wide window

    def __len__(self) -> int:
        return self.target.shape[0]

    def slice(self, start: int, stop: int) -> "Batch":
        return Batch(*(t[start:stop] for t in (self.items, self.labels, self.target, self.task,
                                                self.classes, self.positions)))

    def with_labels(self, labels: torch.Tensor) -> "Batch":
        return Batch(self.items, labels, self.target, self.task, self.classes, self.positions)


# Batch's field names in order: a batch passed as a plain tuple of tensors (to torch.func and torch.compile) and
# rebuilt with Batch(*tensors).
BATCH_FIELDS = tuple(f.name for f in fields(Batch))


def zipf(n: int, exponent: float, device: str = "cpu") -> torch.Tensor:
    """Probabilities p_i ∝ (i+1)^-exponent over n outcomes (uniform at exponent 0)."""
    w = torch.arange(1, n + 1, dtype=torch.float64, device=device) ** -exponent
    return (w / w.sum()).float()


@functools.lru_cache(maxsize=32)
def _log_zipf(n: int, exponent: float, device: str) -> torch.Tensor:
    """log zipf(n, exponent), kept: every training batch adds it to its Gumbel noise. Read-only."""
    return torch.log(zipf(n, exponent, device))


def make_instance(cfg: Config, seed: int | None = None) -> Instance:
    """Draw class means μ_k ~ N(0, I_D/D) and the label table of the run (Methods §Task)."""
    g = torch.Generator().manual_seed(cfg.seeds()["instance"] if seed is None else seed)
    K, T, L, D = cfg.num_classes, cfg.num_tasks, cfg.num_labels, cfg.content_dim
    means = torch.randn(K, D, generator=g) / D**0.5
    if cfg.label_table == "random":
        table = torch.randint(L, (T, K), generator=g)
    else:  # App. D: bijective per task, and no (class, label) pair shared by the two tasks
        first = torch.randperm(L, generator=g)
        while True:
            sigma = torch.randperm(K, generator=g)
            if not (sigma == torch.arange(K)).any():
                break
        table = torch.stack([first, first[sigma]])
    return Instance(means, table).to(cfg.device)


def _gumbel(shape: tuple[int, ...], g: torch.Generator, device: str) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)), computed in place in the uniform draw's tensor."""
    u = torch.rand(shape, generator=g, device=device).clamp_(1e-20, 1.0 - 1e-7)
    return u.log_().neg_().log_().neg_()


def _shuffle(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Independently permute each row of x [B, n]."""
    perm = torch.rand(x.shape, generator=g, device=x.device).argsort(dim=1)
    return x.gather(1, perm)


def sample(inst: Instance, cfg: Config, n: int, g: torch.Generator, kind: str = "train") -> Batch:
    """Draw n sequences of the given kind.

    train: the training distribution. random_label: the context labels permuted among the context
    items (paper §4.3). in_weights: context labels replaced by uniform random labels. copy: fresh class
    means and distinct fresh labels per sequence, query class in the context (induction-head test).
    The arithmetic is done in place where a fresh tensor would hold the same numbers: the sampler is part of
    every training step, and the random draws, their order and every result are those of out-of-place code.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    dev = cfg.device
    N, B, K, L, D = cfg.num_seq, cfg.burstiness, cfg.num_classes, cfg.num_labels, cfg.content_dim
    n_ctx = cfg.n_ctx_classes
    if cfg.beta == 0:
        task = torch.randint(cfg.num_tasks, (n,), generator=g, device=dev)
    else:
        task = torch.multinomial(zipf(cfg.num_tasks, cfg.beta, dev), n, replacement=True, generator=g)

    if kind == "copy":
        if n_ctx > L:
            raise ValueError(f"copy sequences need num_seq / burstiness <= num_labels = {L}, got {n_ctx}")
        means = torch.randn(n, n_ctx, D, generator=g, device=dev) / D**0.5
        fresh_labels = torch.rand(n, L, generator=g, device=dev).argsort(dim=1)[:, :n_ctx]
        slots = _shuffle(torch.arange(n_ctx, device=dev).repeat_interleave(B).expand(n, N), g)
        q_slot = torch.randint(n_ctx, (n, 1), generator=g, device=dev)
        all_slots = torch.cat([slots, q_slot], dim=1)
        centres = means[torch.arange(n, device=dev)[:, None], all_slots]
        labels = fresh_labels.gather(1, slots)
        target = fresh_labels.gather(1, q_slot)[:, 0]
        classes = torch.full((n, N + 1), -1, device=dev)
    else:
        n_pick = min(n_ctx + 1, K)
        keys = _gumbel((n, K), g, dev).add_(_log_zipf(K, cfg.alpha, dev))
        picked = keys.topk(n_pick, dim=1).indices
        distinct = picked[:, :n_ctx]
        ctx = _shuffle(distinct.repeat_interleave(B, dim=1), g)
        if cfg.query_rule == "uniform":
            query = torch.randint(K, (n,), generator=g, device=dev)
        else:
            query = picked[:, -1] if n_pick > n_ctx else distinct[:, 0]
        if cfg.p_bursty > 0:
            in_ctx = distinct.gather(1, torch.randint(n_ctx, (n, 1), generator=g, device=dev))[:, 0]
            bursty = torch.rand(n, generator=g, device=dev) < cfg.p_bursty
            query = torch.where(bursty, in_ctx, query)
        classes = torch.cat([ctx, query[:, None]], dim=1)
        centres = inst.means[classes]
        labels = inst.table[task[:, None], ctx]
        target = inst.table[task, query]

    noise = torch.randn(centres.shape, generator=g, device=dev)
    items = noise.div_(D**0.5).mul_(cfg.eps).add_(centres).div_((1 + cfg.eps**2) ** 0.5)  # (μ + ε·η/√D)/√(1+ε²)
    if kind == "random_label":
        labels = _shuffle(labels, g)
    elif kind == "in_weights":
        labels = torch.randint(L, labels.shape, generator=g, device=dev)
    positions = torch.arange(N + 1, device=dev).repeat(n, 1)
    if cfg.random_offset:
        positions += torch.randint(cfg.pos_dim - N, (n, 1), generator=g, device=dev)
    return Batch(items, labels, target, task, classes, positions)


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def eval_sets(inst: Instance, cfg: Config) -> dict[str, Batch]:
    """The run's fixed evaluation sets, all drawn from the eval seed in a fixed order."""
    g = generator(cfg.seeds()["eval"], cfg.device)
    sets = {"in_dist": sample(inst, cfg, cfg.eval_size, g)}
    for kind in ("random_label", "in_weights"):
        sets[kind] = sample(inst, cfg, cfg.aux_eval_size, g, kind)
    if cfg.n_ctx_classes <= cfg.num_labels:
        sets["copy"] = sample(inst, cfg, cfg.aux_eval_size, g, "copy")
    return sets
