"""The icl-meta command: flags from the Config, train, phases, sweep, bench, and clear errors."""

import dataclasses

import pytest
import torch

from icl_meta import Config, load_run
from icl_meta.bench import report
from icl_meta.cli import build_parser, config_from_args, main, parse_grid
from icl_meta.sweeps import setting_name

from conftest import TINY

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def test_every_config_field_is_a_flag():
    """Each Config field has a --kebab-case flag of train whose default is the field's default."""
    args = build_parser().parse_args(["train", "--out", "x"])
    assert config_from_args(args) == Config()
    for f in dataclasses.fields(Config):
        assert hasattr(args, f.name)


def test_flags_parse_types():
    """Ints, floats, booleans, optional numbers and mask lists parse into the Config."""
    args = build_parser().parse_args(["train", "--out", "x", "--num-tasks", "2", "--eps", "0.5", "--random-offset",
                                      "--early-stop-acc", "0.99", "--instance-seed", "none", "--masks",
                                      "bigram,label_attention"])
    cfg = config_from_args(args)
    assert (cfg.num_tasks, cfg.eps, cfg.random_offset, cfg.early_stop_acc, cfg.instance_seed, cfg.masks) == \
        (2, 0.5, True, 0.99, None, ("bigram", "label_attention"))


def test_train_then_phases(tmp_path, capsys):
    """train writes a run with the command in its provenance; phases prints both rules."""
    out = tmp_path / "run"
    main(["train", *TINY_FLAGS, "--seed", "3", "--out", str(out), "--no-progress"])
    run = load_run(out)
    assert run.config.seed == 3 and run.provenance["command"].startswith("icl-meta train")
    main(["phases", str(out)])
    printed = capsys.readouterr().out
    assert "[paper rule]" in printed and "[robust rule]" in printed and "Bayes ceilings" in printed


@pytest.mark.parametrize("flags, name", [(["--n-heads", "3"], "n_heads"), (["--lr", "0"], "lr"),
                                         (["--masks", "bigram,nope"], "masks"), (["--num-seq", "70"], "pos_dim")])
def test_bad_flags_exit_with_the_parameter_name(tmp_path, capsys, flags, name):
    """An impossible setting exits with status 2 and a message naming the parameter, and writes nothing."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", *flags, "--out", str(out)])
    assert e.value.code == 2 and name in capsys.readouterr().err
    assert not out.exists()


def test_parse_grid_and_run_names():
    """--grid values are parsed with the field's type; masks use '|' between values."""
    grid = parse_grid(["num_classes=32,64", "eps=0.1", "masks=bigram,bigram|none,none"])
    assert grid == {"num_classes": [32, 64], "eps": [0.1], "masks": [("bigram", "bigram"), ("none", "none")]}
    assert setting_name({"masks": ("bigram", "bigram"), "seed": 1}) == "masks-bigram+bigram__seed-1"
    with pytest.raises(ValueError, match="--grid"):
        parse_grid(["not_a_field=1"])


def test_sweep_runs_grid_and_resumes(tmp_path, capsys):
    """sweep trains every grid point and seed in parallel; running it again retrains nothing."""
    argv = ["sweep", *TINY_FLAGS, "--grid", "num_tasks=1,2", "--seeds", "0,1", "--jobs", "2", "--out", str(tmp_path),
            "--no-progress"]
    main(argv)
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == ["num_tasks-1__seed-0", "num_tasks-1__seed-1", "num_tasks-2__seed-0", "num_tasks-2__seed-1"]
    stamps = {d: (tmp_path / d / "metrics.safetensors").stat().st_mtime_ns for d in dirs}
    main(argv)
    assert stamps == {d: (tmp_path / d / "metrics.safetensors").stat().st_mtime_ns for d in dirs}
    assert load_run(tmp_path / "num_tasks-2__seed-1").config.num_tasks == 2


def test_sweep_trains_compatible_runs_as_ensembles(tmp_path, capsys):
    """--ensemble 2 trains the grid's compatible runs two at a time in one process (icl_meta.ensemble)."""
    main(["sweep", *TINY_FLAGS, "--grid", "num_tasks=1,2", "--seeds", "0", "--jobs", "1", "--ensemble", "2",
          "--out", str(tmp_path), "--no-progress"])
    assert "ensembles of up to 2 (1 jobs)" in capsys.readouterr().out
    for name in ("num_tasks-1__seed-0", "num_tasks-2__seed-0"):
        assert load_run(tmp_path / name).provenance["ensemble"] == [2]


def test_sweep_rejects_a_bad_grid_point_before_any_run(tmp_path, capsys):
    """One impossible grid point stops the sweep before any run directory is made."""
    with pytest.raises(SystemExit, match="2"):
        main(["sweep", *TINY_FLAGS, "--grid", "n_heads=1,3", "--out", str(tmp_path / "s")])
    assert "n_heads" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_bench_report_lists_its_figures():
    """bench reports the matmul peak, FLOPs per step, and steps/s with and without evaluation, one row per path
    (the compiled one is left out here: compiling the default model takes a minute)."""
    text = report(steps=20, threads=1, compile=False)
    for needle in ("GFLOP/s", "MFLOP", "steps/s", "with eval", "of peak", "eval ms", "x eager", "faults",
                   "allocator: glibc keeps freed memory"):
        assert needle in text
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[-6:]] == ["eager", "ensemble", "E", "1", "4", "16"]
    assert "runs x steps/s" in lines[-4]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_refuses_a_device_this_machine_lacks(capsys):
    with pytest.raises(SystemExit, match="2"):
        main(["bench", "--device", "cuda"])
    assert "device must be 'cpu' on a machine without CUDA, got 'cuda'" in capsys.readouterr().err


def test_help_says_what_every_config_flag_is(capsys):
    """Every Config field has a flag whose help is its comment in Config, grouped by Config's sections."""
    from icl_meta.config import field_docs

    docs = field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(Config)} and all(doc for _, doc in docs.values())
    assert docs["num_tasks"] == ("task (Methods §Task)", "T, tasks (label tables)")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "config: model (Methods §Model):" in text and "--num-tasks INT T, tasks (label tables) (default: 3)" in text


def test_sweeps_status_says_where_each_planned_run_stands(tmp_path, capsys):
    """--status trains nothing: one line per planned run (finished, being trained by a live process, stopped and
    resumable, not started), in queue order, then the counts."""
    import json
    import os
    import shutil

    from icl_meta.sweeps import QUEUE, plan

    done, stopped, busy = (out for _, out in plan(tmp_path)[:3])
    main(["train", *TINY_FLAGS, "--out", str(done), "--no-progress"])
    for out in (stopped, busy):
        shutil.copytree(done, out)
        prov = json.loads((out / "provenance.json").read_text())
        (out / "provenance.json").write_text(json.dumps({**prov, "finished": False}))
    (busy / ".lock").write_text(f"{os.getpid()}\n")
    capsys.readouterr()
    main(["sweeps", "--out", str(tmp_path), "--status"])
    lines = capsys.readouterr().out.splitlines()
    last = int(load_run(done).steps[-1])
    assert lines[0].split() == [f"{done.parent.name}/{done.name}", "finished", "at", "step", f"{last:,}",
                                "(at", "its", "cap)"]
    assert lines[1].endswith(f"stopped, step {last:,} saved (resumes)")
    assert lines[2].endswith(f"being trained by process {os.getpid()} (step {last:,} saved)")
    assert lines[3].endswith("not started") and len(lines) == len(QUEUE) + 1
    assert lines[-1] == f"{len(QUEUE)} runs: 1 finished, 1 being trained, 1 stopped, {len(QUEUE) - 3} not started"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({done.parent.name, stopped.parent.name,
                                                                busy.parent.name})  # nothing else was written
