"""Config validation, serialisation and seeds."""

import json

import pytest

from icl_meta import Config, train

BAD = [
    ({"num_seq": 8, "num_classes": 4}, "num_seq / burstiness"),
    ({"burstiness": 3}, "burstiness"),
    ({"n_heads": 3}, "n_heads"),
    ({"pos_dim": 4}, "pos_dim"),
    ({"eps": -0.1}, "eps"),
    ({"masks": ("bigram", "induction")}, "masks"),
    ({"masks": ("bigram",)}, "masks"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.01}, "lr"),
    ({"p_bursty": -0.1}, "p_bursty"),
    ({"p_bursty": 1.5}, "p_bursty"),
    ({"n_layers": 0}, "n_layers"),
    ({"n_layers": 7}, "n_layers"),
    ({"label_table": "scc_theory", "num_tasks": 3, "num_labels": 64}, "num_tasks"),
    ({"label_table": "scc_theory", "num_tasks": 2}, "num_labels"),
    ({"probe_size": 512, "eval_size": 256}, "probe_size"),
    ({"save_every": 150, "eval_every": 100}, "save_every"),
    ({"query_rule": "sometimes"}, "query_rule"),
    ({"block": "mamba"}, "block"),
    ({"readout": "everything"}, "readout"),
    ({"classifier_init": "xavier"}, "classifier_init"),
    ({"label_table": "cyclic"}, "label_table"),
    ({"num_labels": 1}, "num_labels"),
    ({"num_tasks": 0}, "num_tasks"),
    ({"early_stop_acc": 1.5}, "early_stop_acc"),
    ({"early_stop_factor": 0.5}, "early_stop_factor"),
]


@pytest.mark.parametrize("changes, name", BAD)
def test_bad_config_raises_naming_parameter(changes, name):
    """validate() rejects the impossible setting with a ValueError whose message starts with the parameter."""
    with pytest.raises(ValueError) as err:
        Config(**changes).validate()
    assert str(err.value).startswith(name + " ")


@pytest.mark.parametrize("changes", [{}, {"label_table": "scc_theory", "num_tasks": 2, "num_labels": 64},
                                     {"n_layers": 6, "masks": ("none",) * 6}, {"p_bursty": 1.0, "num_seq": 64},
                                     {"n_heads": 128}, {"block": "standard", "readout": "all_labels"}])
def test_good_configs_validate(changes):
    """Boundary-but-legal settings pass validation."""
    assert Config(**changes).validate() == Config(**changes)


def test_train_rejects_bad_config_before_touching_disk(tmp_path):
    """train() validates first: a bad config leaves no run directory behind."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="n_heads"):
        train(Config(n_heads=3), out, progress=False)
    assert not out.exists()


def test_json_round_trip():
    """to_json/from_dict restore an equal Config, masks as a tuple included."""
    cfg = Config(masks=("bigram", "label_attention"), early_stop_acc=0.9, data_seed=3)
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_from_dict_rejects_unknown_fields():
    """An unknown field in a saved config is an error, not silently dropped."""
    with pytest.raises(ValueError, match="unknown"):
        Config.from_dict({"num_tasks": 3, "learning_rate": 0.1})


def test_seeds_derived_and_overridable():
    """Unset seeds derive from `seed` (distinct streams, reproducible); an explicit seed overrides one stream."""
    s = Config(seed=4).seeds()
    assert set(s) == {"instance", "init", "data", "eval"} and len(set(s.values())) == 4
    assert Config(seed=4).seeds() == s != Config(seed=5).seeds()
    t = Config(seed=4, data_seed=11).seeds()
    assert t["data"] == 11
    assert {k: v for k, v in t.items() if k != "data"} == {k: v for k, v in s.items() if k != "data"}
