"""Bayes ceilings (Methods §Task) against the quoted values, the App. D theory and exact enumeration."""

import itertools
from collections import defaultdict

import pytest
import torch

from icl_meta import Config, ceilings, make_instance, scc_theory_accuracy
from icl_meta.bayes import _log_comb, random_label_ceiling, scc_elimination_accuracy
from icl_meta.task import zipf


def mean_ceilings(cfg, seeds=range(4), n=20000):
    """Ceilings averaged over problem instances (instance_seed) and sample seeds."""
    runs = [ceilings(cfg.replace(instance_seed=s), n=n, seed=s) for s in seeds]
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}


@pytest.mark.parametrize("num_tasks, query_only, label_multiset", [(2, 0.52, 0.87), (3, 0.36, 0.78), (4, 0.30, 0.72)])
def test_ceilings_match_quoted_values(num_tasks, query_only, label_multiset):
    """K=64, L=32, N=4: the ceilings are close to the reference 0.52/0.87, 0.36/0.78, 0.30/0.72, and full pairs ≈ 1."""
    c = mean_ceilings(Config(num_tasks=num_tasks))
    assert c["query_only"] == pytest.approx(query_only, abs=0.03)
    assert c["label_multiset"] == pytest.approx(label_multiset, abs=0.04)
    assert c["full_pairs"] >= 0.99


@pytest.mark.parametrize("changes", [{}, {"num_tasks": 2}, {"alpha": 1.0}, {"beta": 1.0}, {"p_bursty": 0.5}])
def test_ceilings_are_ordered(changes):
    """More information never hurts: query_only <= label_multiset <= full_pairs."""
    c = ceilings(Config(**changes), n=5000)
    assert c["query_only"] <= c["label_multiset"] <= c["full_pairs"] <= 1.0


@pytest.mark.parametrize("k", [8, 16])
def test_label_multiset_matches_scc_theory(k):
    """Under the App. D conditions the label-multiset ceiling equals p + (1-p)/2."""
    cfg = Config(num_tasks=2, num_classes=k, num_labels=k, label_table="scc_theory")
    c = ceilings(cfg, n=20000)
    assert c["label_multiset"] == pytest.approx(scc_theory_accuracy(k), abs=0.01)
    assert c["query_only"] == pytest.approx(0.5)


def test_scc_theory_formula():
    """scc_theory_accuracy(K) = p + (1-p)/2 with p = 1 - C(K-2,4)/C(K-1,4); K=8 gives p = 4/7."""
    assert scc_theory_accuracy(8) == pytest.approx(4 / 7 + 3 / 14)
    assert scc_theory_accuracy(16) > scc_theory_accuracy(32) > 0.5


def brute_force_ceilings(cfg, inst):
    """Exact Bayes accuracies by enumerating every context set, query and task with its probability."""
    f, K, n, p_b = inst.table.tolist(), cfg.num_classes, cfg.n_ctx_classes, cfg.p_bursty
    prior = zipf(cfg.num_tasks, cfg.beta).tolist()
    sets = list(itertools.combinations(range(K), n))
    joint = {name: defaultdict(float) for name in ("query_only", "label_multiset", "random_label", "full_pairs")}
    for ctx in sets:
        for q in range(K):
            if cfg.query_rule == "uniform":
                p_q = (1 - p_b) / K + (p_b / n if q in ctx else 0.0)
            else:
                p_q = p_b / n if q in ctx else (1 - p_b) / (K - n)
            for t, p_t in enumerate(prior):
                p = p_t * p_q / len(sets)
                multiset = tuple(sorted(f[t][c] for c in ctx))
                obs = {"query_only": q, "label_multiset": (q, multiset), "random_label": (q, ctx, multiset),
                       "full_pairs": (q, ctx, tuple(f[t][c] for c in ctx))}
                for name, o in obs.items():
                    joint[name][o, f[t][q]] += p
    out = {}
    for name, mass in joint.items():
        best = defaultdict(float)
        for (o, _), p in mass.items():
            best[o] = max(best[o], p)
        out[name] = sum(best.values())
    return out


@pytest.mark.parametrize("changes", [
    {}, {"beta": 1.0}, {"p_bursty": 0.5}, {"p_bursty": 1.0}, {"num_seq": 4, "burstiness": 2},
    {"query_rule": "uniform"},
    {"query_rule": "uniform", "p_bursty": 0.5},
])
def test_ceilings_match_exact_enumeration(changes):
    """K=8, L=4, N=2, T=3: Monte-Carlo ceilings equal the exact Bayes accuracies from enumeration, and the
    random-label one (the class set with the label multiset) lies between the multiset's and the pairs'."""
    cfg = Config(**{"num_classes": 8, "num_labels": 4, "num_seq": 2, "num_tasks": 3, **changes})
    inst = make_instance(cfg)
    exact = brute_force_ceilings(cfg, inst)
    mc = {**ceilings(cfg, inst, n=200000), "random_label": random_label_ceiling(cfg, inst, n=200000)}
    assert exact["label_multiset"] <= exact["random_label"] <= exact["full_pairs"]
    for name in exact:
        assert mc[name] == pytest.approx(exact[name], abs=0.005), name


@pytest.mark.parametrize("k", [8, 16, 32])
def test_scc_elimination_strategy_matches_the_formula(k):
    """Simulating App. D's strategy (rule out tasks whose query label is in the context) gives p + (1-p)/2."""
    cfg = Config(num_tasks=2, label_table="scc_theory", num_classes=k, num_labels=k)
    assert scc_elimination_accuracy(cfg, n=40000) == pytest.approx(scc_theory_accuracy(k), abs=0.01)


def test_log_comb_table_matches_lgamma():
    """The table lookup gives exactly lgamma's log C(c, m), and -inf where m > c or m < 0."""
    g = torch.Generator().manual_seed(0)
    c, m = torch.randint(0, 40, (500, 3), generator=g), torch.randint(-1, 12, (500, 3), generator=g)
    cd, md = c.double(), m.double()
    direct = torch.lgamma(cd + 1) - torch.lgamma(md + 1) - torch.lgamma((cd - md).clamp(min=0) + 1)
    direct = direct.masked_fill((m > c) | (m < 0), float("-inf"))
    assert torch.equal(_log_comb(c, m), direct)
    assert _log_comb(torch.tensor([5]), torch.tensor([2])).exp().item() == pytest.approx(10)
