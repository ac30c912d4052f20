"""Head patterns, roles and switches, on synthetic 2-head runs whose heads do known things."""

from pathlib import Path

import numpy as np
import pytest
import torch

from icl_meta import Config, Model, attention_maps, circuit_metrics, sample
from icl_meta.analysis.heads import (head_patterns, head_roles, pattern_thresholds, role_switches, steepest_change,
                                     steepest_head_change, uniform_metrics)
from icl_meta.probes import metric_column
from icl_meta.runs import Run
from icl_meta.task import generator, make_instance

STEPS = np.arange(0, 20_001, 100)
CFG = Config(n_heads=2)


def head_run(columns: dict[str, tuple[float, float, int]], cfg: Config = CFG) -> Run:
    """Every metric of every head at its uniform value, except `columns`: name -> (before, after, step)
    switching abruptly at that step."""
    u = uniform_metrics(cfg.num_seq)
    m = {"step": STEPS.astype(float), "acc": np.linspace(0, 1, len(STEPS))}
    for layer in range(1, cfg.n_layers + 1):
        for head in range(1, cfg.n_heads + 1):
            for name, value in u.items():
                m[metric_column(layer, head, name)] = np.full(len(STEPS), value)
    for col, (before, after, step) in columns.items():
        m[col] = np.where(STEPS < step, before, after)
    return Run(Path("synthetic"), cfg, m, {}, [])


def test_uniform_metrics_are_those_of_an_untrained_model():
    """At initialisation (W_Q, W_K ~ N(0, 1/128)) attention is near uniform: the metrics match."""
    cfg = Config(n_heads=2)
    model = Model(cfg)
    batch = sample(make_instance(cfg, 0), cfg, 256, generator(1))
    got = circuit_metrics(attention_maps(model, batch)[0])
    for name, u in uniform_metrics(cfg.num_seq).items():
        assert torch.allclose(got[name], torch.full_like(got[name], u), atol=0.03), name


def test_patterns_and_roles_follow_table_1():
    """Head 1 of layer 1 turns to Label Attention (SCC) while layer 2 keeps Bigram, which then reads as SCC;
    head 2 of layer 1 chunks later (FCC); a head near uniform is mixed/other."""
    run = head_run({"L1H1_bigram": (0.1, 0.98, 2000), "L1H1_label_attention": (0.44, 0.0, 2000),
                    "L2H1_bigram": (0.11, 0.99, 1500), "L2H1_label_attention": (0.44, 0.0, 1500),
                    "L1H2_chunk_example": (0.26, 0.95, 12_000)})
    run.metrics["L1H1_bigram"][STEPS >= 8000] = 0.1
    run.metrics["L1H1_label_attention"][STEPS >= 8000] = 0.9
    pat, roles = head_patterns(run), head_roles(run)
    def at(step):
        return int(np.searchsorted(STEPS, step))

    assert pat[0, 0, at(0)] == "mixed" and pat[0, 0, at(5000)] == "bigram" and pat[0, 0, at(9000)] == "label_attention"
    assert list(roles[:, 0, at(5000)]) == ["NCC", "NCC"]
    assert list(roles[:, 0, at(9000)]) == ["SCC", "SCC"]
    assert roles[0, 1, at(13_000)] == "FCC" and roles[1, 1, at(13_000)] == "other"
    switches = role_switches(run, roles)
    assert switches[0] == (2, 1, 1500, "other", "NCC")
    assert (1, 1, 8000, "NCC", "SCC") in switches and (2, 1, 8000, "NCC", "SCC") in switches
    assert (1, 2, 12_000, "other", "FCC") in switches and len(switches) == 5


def test_a_head_shows_a_pattern_from_its_threshold_on():
    line = pattern_thresholds(CFG.num_seq)["label_attention"]
    run = head_run({"L1H2_label_attention": (line - 0.01, line + 0.01, 5000)})
    pat = head_patterns(run)[0, 1]
    assert pat[STEPS < 5000].tolist() == ["mixed"] * 50 and set(pat[STEPS >= 5000]) == {"label_attention"}


def test_layer_2_label_attention_is_fcc_and_flickers_are_not_switches():
    run = head_run({"L2H2_label_attention": (0.44, 0.97, 4000)})
    col = run.metrics["L1H1_bigram"]
    col[(STEPS >= 3000) & (STEPS < 3300)] = 0.9  # a 300-step flicker
    roles = head_roles(run)
    assert roles[1, 1, -1] == "FCC"
    assert role_switches(run, roles) == [(2, 2, 4000, "other", "FCC")]


def test_head_roles_need_two_layers():
    with pytest.raises(ValueError, match="n_layers must be 2"):
        head_roles(head_run({}, Config(n_layers=3)))


def test_steepest_change_finds_the_abrupt_head_under_a_smooth_accuracy():
    """Hidden circuit emergence in miniature: accuracy rises linearly, one head's metric jumps."""
    run = head_run({"L1H2_bigram": (0.1, 0.9, 5000)})
    jump, col = steepest_head_change(run)
    assert col == "L1H2_bigram" and jump > 0.5
    assert steepest_change(run, "acc") < 0.2
