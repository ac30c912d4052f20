"""The declared sweeps and the `icl-meta sweeps` command that regenerates them."""

import pytest

from icl_meta import load_run
from icl_meta.cli import main
from icl_meta.sweeps import (ARCH_SWEEPS, CAP, DATA_SWEEPS, OPEN_FIRST, OPEN_SEEDS, QUEUE, WINDOW, plan, setting_name,
                             sweep)

from conftest import TINY


def test_plan_puts_open_verdicts_first_and_is_validated_and_unique(tmp_path):
    """The settings whose verdicts were open come first, then the other seeds of those their first seed left open,
    then every one-knob data sweep; the remaining seeds run one after the other; directories are distinct; runs
    are capped at CAP (or the steps asked); only the architecture runs keep checkpoints along training."""
    jobs = plan(tmp_path, seeds=(0, 1))
    assert len(jobs) == 2 * len(QUEUE)
    assert len({out for _, out in jobs}) == len(jobs)
    assert all(entry in QUEUE for entry in OPEN_FIRST)
    first = [(out.parent.name, c.to_dict()) for c, out in jobs[:len(OPEN_FIRST)]]
    assert all(all(cfg[k] == v for k, v in changes.items()) and name == n
               for (name, cfg), (n, changes) in zip(first, OPEN_FIRST))
    one_knob = [n for n in DATA_SWEEPS if not n.startswith("map_")]
    firsts = [out.parent.name for c, out in jobs if c.seed == 0]
    assert set(one_knob) <= set(firsts[:len(OPEN_FIRST) + len(one_knob)])
    n_first, n_open = len(OPEN_FIRST), len(OPEN_SEEDS)
    assert all(entry in QUEUE for entry in OPEN_SEEDS)
    seeds = [c.seed for c, _ in jobs]
    assert seeds == [0] * n_first + [1] * n_open + [0] * (len(QUEUE) - n_first) + [1] * (len(QUEUE) - n_open)
    reopened = [(out.parent.name, c.to_dict()) for c, out in jobs[n_first:n_first + n_open]]
    assert all(all(cfg[k] == v for k, v in changes.items()) and name == n
               for (name, cfg), (n, changes) in zip(reopened, OPEN_SEEDS))
    three = [(c.seed, out.name) for c, out in plan(tmp_path, ("heads",), seeds=(0, 1, 2))]
    assert three[:8] == [(0, "n_heads-4__seed-0"), (0, "n_heads-8__seed-0"), (0, "n_heads-16__seed-0"),
                         (1, "n_heads-4__seed-1"), (2, "n_heads-4__seed-2"), (1, "n_heads-8__seed-1"),
                         (2, "n_heads-8__seed-2"), (1, "n_heads-16__seed-1")]
    assert len(three) == len(set(three)) == 3 * len(sweep("heads").settings)
    assert [c.seed for c, _ in plan(tmp_path, seeds=(1,))] == [1] * len(QUEUE)
    cfg, out = jobs[0]
    assert out == tmp_path / "tasks" / "num_tasks-2__seed-0" and cfg.num_tasks == 2 and cfg.steps == CAP
    assert {c.steps for c, _ in plan(tmp_path, ("noise",), steps=WINDOW)} == {WINDOW}
    assert all(c.early_stop_acc == 0.99 for c, _ in jobs)
    assert {c.n_checkpoints for c, out in jobs if out.parent.name in ARCH_SWEEPS} == {12}
    assert {c.n_checkpoints for c, out in jobs if out.parent.name in DATA_SWEEPS} == {0}
    heads = [c.n_heads for c, out in jobs if out.parent.name == "heads" and c.seed == 0]
    assert sorted(heads) == [2, 4, 8, 16] and {c.n_layers for c, out in jobs if out.parent.name == "depth"} == {3, 4, 5}


def test_sweep_fields_and_unknown_name():
    assert sweep("burstiness").fields == ("burstiness", "p_bursty")
    assert setting_name({"num_classes": 32, "eps": 0.5}) == "num_classes-32__eps-0.5"
    with pytest.raises(ValueError, match="sweep must be one of"):
        sweep("nope")


def test_sweeps_command_trains_and_resumes(tmp_path, monkeypatch, capsys):
    """`icl-meta sweeps NAME` trains the named sweep's runs; a second call retrains nothing."""
    import icl_meta.sweeps as sweeps

    monkeypatch.setattr(sweeps, "FIGURES", {"tiny": "test"})
    monkeypatch.setattr(sweeps, "QUEUE", (("tiny", {"num_tasks": 1}), ("tiny", {"num_tasks": 2})))
    monkeypatch.setattr(sweeps, "RUN_DEFAULTS", {**sweeps.RUN_DEFAULTS, **TINY})
    argv = ["sweeps", "tiny", "--out", str(tmp_path), "--jobs", "2", "--no-progress"]
    main(argv)
    dirs = sorted(p.name for p in (tmp_path / "tiny").iterdir())
    assert dirs == ["num_tasks-1__seed-0", "num_tasks-2__seed-0"]
    stamp = (tmp_path / "tiny" / dirs[1] / "metrics.safetensors").stat().st_mtime_ns
    main(argv)
    assert (tmp_path / "tiny" / dirs[1] / "metrics.safetensors").stat().st_mtime_ns == stamp
    run = load_run(tmp_path / "tiny" / dirs[1])
    assert run.provenance["finished"] and run.provenance["command"].startswith("icl-meta sweeps tiny")


def test_sweeps_command_rejects_an_unknown_sweep(tmp_path, capsys):
    with pytest.raises(SystemExit, match="2"):
        main(["sweeps", "nope", "--out", str(tmp_path / "s")])
    assert "sweep must be one of" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
