"""Bayes ceilings: the best accuracy reachable from (a) the query alone, (b) the query plus the
multiset of context labels, (c) the full (item, label) pairs. They bound the three plateaus.

Each is a Monte-Carlo average, over sequences drawn by the run's own sampler, of the exact posterior
probability that the best guess is right, so the only error is sampling error (about 0.002 at the
default n). The predictor knows the query's class (items are well separated at small ε).

(b) needs P(label multiset, query | task). With uniform classes (α = 0) it is exact: the number of
context class sets whose labels under the task form that multiset is a product of binomials. With
α > 0 the class sets are not uniform and a with-replacement likelihood is used instead, so (b) is then
the accuracy of a slightly suboptimal predictor: a lower bound of the true ceiling.
"""

from __future__ import annotations

from math import comb, inf, log

import torch

from .config import Config
from .task import Batch, Instance, make_instance, sample, zipf

CEILINGS = ("query_only", "label_multiset", "full_pairs")


def _log_comb(c: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """log C(c, m) elementwise for integer tensors, -inf where m > c or m < 0.

    The counts are small integers (c <= K, m <= N), so the values are read from a table over the grid of
    counts that occur: lgamma over the [n, T, L] arrays themselves was most of a ceiling's time.
    """
    grid_c = torch.arange(int(c.max()) + 1, dtype=torch.float64)[:, None]
    grid_m = torch.arange(max(int(m.max()), 0) + 1, dtype=torch.float64)[None]
    table = torch.lgamma(grid_c + 1) - torch.lgamma(grid_m + 1) - torch.lgamma((grid_c - grid_m).clamp(min=0) + 1)
    out = table.masked_fill(grid_m > grid_c, float("-inf"))[c.clamp(min=0), m.clamp(min=0)]
    return out.masked_fill((m < 0) | (c < 0), float("-inf"))


def _log(x: float) -> float:
    return log(x) if x > 0 else -inf


def _expected_accuracy(log_post: torch.Tensor, table_q: torch.Tensor, L: int) -> torch.Tensor:
    """Mean over sequences of max_l Σ_t post(t) [f(t, q) = l]. log_post [S, T] unnormalised, table_q [S, T]."""
    post = torch.softmax(log_post, dim=1)
    score = torch.zeros(post.shape[0], L, dtype=post.dtype).scatter_add_(1, table_q, post)
    return score.max(1).values.mean()


def _draw(cfg: Config, inst: Instance | None, n: int, seed: int) -> tuple[Config, Instance, Batch]:
    """cfg on CPU and validated, its instance (built from cfg unless given) and n training sequences drawn from
    seed: what every Monte-Carlo estimate here averages over."""
    cfg = cfg.replace(device="cpu").validate()
    inst = make_instance(cfg) if inst is None else inst.to("cpu")
    return cfg, inst, sample(inst, cfg, n, torch.Generator().manual_seed(seed))


@torch.no_grad()
def ceilings(cfg: Config, inst: Instance | None = None, n: int = 100_000, seed: int = 0) -> dict[str, float]:
    """The three Bayes ceilings of cfg's training distribution (on inst, default: the run's instance)."""
    cfg, inst, batch = _draw(cfg, inst, n, seed)
    T, K, L = cfg.num_tasks, cfg.num_classes, cfg.num_labels
    n_ctx, B = cfg.n_ctx_classes, cfg.burstiness
    f = inst.table  # [T, K]
    q = batch.classes[:, -1]
    table_q = f[:, q].T  # [S, T]: the query's label under each task
    log_prior = torch.log(zipf(T, cfg.beta)).double().expand(n, T)

    # (b) the context labels of the distinct classes (each shown B times) as counts m [S, L]
    distinct = batch.classes[:, :-1].sort(dim=1).values[:, ::B]
    m = torch.zeros(n, L, dtype=torch.long).scatter_add_(1, f[batch.task[:, None], distinct], torch.ones_like(distinct))
    counts = torch.zeros(T, L, dtype=torch.long).scatter_add_(1, f, torch.ones_like(f))  # classes per (task, label)
    if cfg.alpha == 0:
        full_sets = _log_comb(counts[None], m[:, None]).sum(-1)  # class sets drawn from all K
        c_minus_q = counts[None] - torch.nn.functional.one_hot(table_q, L)  # [S, T, L], query's class removed
        absent = _log_comb(c_minus_q, m[:, None]).sum(-1)
        m_in = m[:, None] - torch.nn.functional.one_hot(table_q, L)
        present = _log_comb(c_minus_q, m_in).sum(-1)
        if cfg.query_rule == "uniform":  # P(q | C) = (1 - p_B) / K + p_B [q in C] / n
            log_lik = torch.logaddexp(full_sets + _log(1 - cfg.p_bursty) - log(K),
                                      present + _log(cfg.p_bursty) - log(n_ctx))
        else:
            # P(C, q) = (1 - p_B) / (C(K, n) (K - n)) for q outside C, p_B / (C(K, n) n) for q in C
            log_lik = torch.logaddexp(absent + _log(1 - cfg.p_bursty) - log(K - n_ctx),
                                      present + _log(cfg.p_bursty) - log(n_ctx))
    else:
        mass = torch.zeros(T, L, dtype=torch.float64).scatter_add_(1, f, zipf(K, cfg.alpha).double().expand(T, K))
        log_lik = torch.special.xlogy(m[:, None].double(), mass[None]).sum(-1)

    # (c) tasks consistent with every observed (class, label) pair
    consistent = (f[:, batch.classes[:, :-1]] == batch.labels[None]).all(-1).T  # [S, T]
    pairs = torch.where(consistent, 0.0, float("-inf")).double()
    return {
        "query_only": float(_expected_accuracy(log_prior, table_q, L)),
        "label_multiset": float(_expected_accuracy(log_prior + log_lik, table_q, L)),
        "full_pairs": float(_expected_accuracy(log_prior + pairs, table_q, L)),
    }


@torch.no_grad()
def random_label_ceiling(cfg: Config, inst: Instance | None = None, n: int = 100_000, seed: int = 0) -> float:
    """The best accuracy reachable on random-label sequences: from the query, the set of context classes and
    the multiset of context labels, unpaired.

    Shuffling the labels among the items keeps which classes and which labels are in the context, so a
    predictor may rule out every task whose labels for those classes do not form the observed multiset. That is
    more than the label multiset alone tells (ceiling (b)), and usually pins the task: a model's random-label
    accuracy above its (b) ceiling means it reads more than the label multiset, not that it reads the pairs.
    The class draw does not depend on the task, so the posterior is the prior over the consistent tasks, exact
    at every α.
    """
    cfg, inst, batch = _draw(cfg, inst, n, seed)
    f = inst.table  # [T, K]
    table_q = f[:, batch.classes[:, -1]].T  # [S, T]
    per_task = f[:, batch.classes[:, :-1]].sort(-1).values  # [T, S, N]: each task's context labels, sorted
    consistent = (per_task == batch.labels.sort(1).values[None]).all(-1).T  # [S, T]
    log_post = torch.log(zipf(cfg.num_tasks, cfg.beta)).double() + torch.where(consistent, 0.0, float("-inf")).double()
    return float(_expected_accuracy(log_post, table_q, cfg.num_labels))


def scc_theory_accuracy(num_classes: int, num_seq: int = 4) -> float:
    """Paper App. D: accuracy p + (1-p)/2 of the semi-context circuit with p = 1 - C(K-2, N)/C(K-1, N).

    Under the SCC-theory conditions (T = 2, K = L, bijective tables, no shared pair) the other task's
    label for the query class shows up in the context with probability p, which reveals the task;
    otherwise the circuit guesses between the two candidate labels.
    """
    p = 1 - comb(num_classes - 2, num_seq) / comb(num_classes - 1, num_seq)
    return p + (1 - p) / 2


@torch.no_grad()
def scc_elimination_accuracy(cfg: Config, inst: Instance | None = None, n: int = 100_000, seed: int = 0) -> float:
    """Simulated accuracy of the App. D strategy: rule out every task whose label for the query class
    shows up among the context labels, then guess uniformly among the tasks left.

    Under the SCC-theory conditions the query class is never in the context and each task's table is a
    bijection, so the true task's label for the query can never appear: it is never ruled out, and the
    accuracy is P(only it is left) + P(both left) / 2, the formula of `scc_theory_accuracy`.
    """
    cfg, inst, batch = _draw(cfg, inst, n, seed)
    table_q = inst.table[:, batch.classes[:, -1]].T  # [S, T]: each task's label for the query class
    left = ~(batch.labels[:, None, :] == table_q[:, :, None]).any(-1)  # [S, T] tasks not ruled out
    left |= ~left.any(1, keepdim=True)  # nothing left (possible outside App. D): guess among all
    right = (left & (table_q == batch.target[:, None])).sum(1)
    return float((right / left.sum(1)).mean())


@torch.no_grad()
def query_class_accuracy(cfg: Config, inst: Instance | None = None, n: int = 100_000, seed: int = 0) -> float:
    """How often the query's class is the nearest (scaled) class mean to its item: the Bayes classifier
    of an item's class under isotropic noise and equal priors. Near 1, the ceilings' assumption that
    the predictor knows the query's class holds."""
    cfg, inst, batch = _draw(cfg, inst, n, seed)
    centres = inst.means / (1 + cfg.eps**2) ** 0.5
    nearest = torch.cdist(batch.items[:, -1], centres).argmin(1)
    return float((nearest == batch.classes[:, -1]).double().mean())
