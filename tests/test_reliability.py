"""Runs under faults and bad input (issue 17): divergence, concurrent writers, kills at every write,
damaged files, clear errors for bad input, leftovers and thread counts. Numbered as the issue's items."""

import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from icl_meta import Config, compact, load_run, retrain_start, shipped, train, trainer
from icl_meta.cli import main, parse_grid
from icl_meta.runs import RunLocked, checkpoint_path, locked, save_metrics

from conftest import TINY
from test_trainer import same_metrics, same_weights

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
# A shorter run for the tests that train many times: a checkpoint and a resume state every 10 steps.
SHORT = Config(**{**TINY, "steps": 20, "save_every": 10, "n_checkpoints": 3})


def interrupt_at_evaluation(monkeypatch, n: int) -> None:
    """Make the n-th evaluation of the next training raise KeyboardInterrupt, as a kill would."""
    real, calls = trainer.evaluate, []

    def evaluate(model, sets, *probe):
        calls.append(1)
        if len(calls) == n:
            monkeypatch.setattr(trainer, "evaluate", real)
            raise KeyboardInterrupt
        return real(model, sets, *probe)

    monkeypatch.setattr(trainer, "evaluate", evaluate)


def interrupted_run(cfg, out, monkeypatch, n_evals: int):
    """A run of cfg killed at its n_evals-th evaluation (its resume state is that of the last save before)."""
    interrupt_at_evaluation(monkeypatch, n_evals)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False)
    return out


def garble_tail(path, n: int = 8) -> None:
    """Flip the last n bytes of a file: tensor data, so the file still parses."""
    data = bytearray(path.read_bytes())
    data[-n:] = bytes(b ^ 0xFF for b in data[-n:])
    path.write_bytes(bytes(data))


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def cli_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI, expecting an error exit: the last stderr line, which must be the one-line message."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == code and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"icl-meta {argv[0]}: error: "), line
    return line


# 1. Divergence passes silently.

@pytest.mark.parametrize("field", ["lr", "eps", "alpha", "beta", "p_bursty", "early_stop_factor", "early_stop_acc"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_are_refused(field, value):
    with pytest.raises(ValueError) as err:
        Config(**{field: value}).validate()
    assert str(err.value).startswith(field + " ")


def test_divergence_stops_the_run_resumable_from_its_last_good_state(tiny_run, tiny_cfg, tmp_path, monkeypatch):
    """A loss that turns NaN after step 35 stops training at the step-40 evaluation with an error naming the
    step and the last finite loss; the directory keeps its step-20 state and, resumed without the fault,
    ends bit-identical to an uninterrupted run."""
    real, calls = trainer.loss_and_correct, []

    def poisoned(model, batch):
        calls.append(1)
        loss, correct = real(model, batch)
        return (loss * math.nan if len(calls) > 35 else loss), correct

    monkeypatch.setattr(trainer, "loss_and_correct", poisoned)
    out = tmp_path / "run"
    with pytest.raises(trainer.DivergedError, match="diverged at step 40 .*last finite training loss .* at step 30"):
        train(tiny_cfg, out, progress=False)
    partial = load_run(out)
    assert partial.provenance["finished"] is False and partial.steps[-1] == 20
    weights = [v for s in partial.checkpoint_steps for v in partial.model(s).state_dict().values()]
    assert all(torch.isfinite(v).all() for v in weights)
    monkeypatch.setattr(trainer, "loss_and_correct", real)
    resumed = train(tiny_cfg, out, progress=False)
    assert resumed.provenance["resumed_at"] == [20] and same_metrics(tiny_run.metrics, resumed.metrics)
    # a resumption may run on another machine: it records its own versions and platform beside the start's
    assert resumed.provenance["resume_versions"] == [resumed.provenance["versions"]]
    assert resumed.provenance["resume_platforms"] == [resumed.provenance["platform"]]
    assert same_weights(checkpoint_path(tiny_run.path, 60), checkpoint_path(out, 60))


def test_cli_diverging_lr_exits_non_zero(tmp_path, capsys):
    line = cli_error(capsys, ["train", *TINY_FLAGS, "--lr", "1000", "--out", str(tmp_path / "r"), "--no-progress"], 1)
    assert "diverged at step 10" in line


def test_phases_refuses_a_run_with_non_finite_metrics(tiny_run, tmp_path, capsys):
    """A run written before the guard, with NaN losses, has no phases: `phases` says it diverged."""
    out = shutil.copytree(tiny_run.path, tmp_path / "r")
    metrics = {k: v.copy() for k, v in tiny_run.metrics.items()}
    metrics["loss"][3:] = np.nan
    save_metrics(out / "metrics.safetensors", metrics)
    with pytest.raises(ValueError, match="diverged.*from step 30"):
        load_run(out).phases()
    assert "diverged" in cli_error(capsys, ["phases", str(out)])


# 2. No lock on a run directory.

def test_a_second_writer_is_refused(tiny_cfg, tmp_path, monkeypatch):
    """While a process holds a run, another train() of it is refused naming the directory and the pid."""
    out = interrupted_run(tiny_cfg, tmp_path / "r", monkeypatch, 4)
    with locked(out):
        with pytest.raises(RunLocked, match=f"{out} is being written by process {os.getpid()}"):
            train(tiny_cfg.replace(steps=80), out, progress=False)
    assert train(tiny_cfg, out, progress=False).provenance["finished"]
    assert not (out / ".lock").exists()


def test_a_lock_held_by_another_process_and_a_stale_one(tiny_cfg, tmp_path, monkeypatch):
    """A lock another live process holds refuses; once that process is killed, its lock file is taken over."""
    out = interrupted_run(tiny_cfg, tmp_path / "r", monkeypatch, 4)
    code = ("import sys; from pathlib import Path; from icl_meta.runs import locked\n"
            "with locked(Path(sys.argv[1])):\n print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"process {holder.pid}"):
            train(tiny_cfg, out, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").read_text().strip() == str(holder.pid)  # stale: its owner is dead
    assert train(tiny_cfg, out, progress=False).provenance["finished"]


def test_sweep_skips_a_run_another_process_holds(tmp_path, monkeypatch, capsys):
    """A sweep trains the runs it can and skips, with a line, the one another process is writing."""
    held = tmp_path / "num_tasks-1__seed-0"
    interrupted_run(SHORT.replace(num_tasks=1), held, monkeypatch, 2)
    with locked(held):
        main(["sweep", *TINY_FLAGS, "--steps", "20", "--save-every", "10", "--n-checkpoints", "3", "--grid",
              "num_tasks=1,2", "--jobs", "1", "--out", str(tmp_path), "--no-progress"])
    printed = capsys.readouterr().out
    assert f"{held}: skipped, {held} is being written by process {os.getpid()}" in printed
    assert load_run(tmp_path / "num_tasks-2__seed-0").provenance["finished"]
    assert not load_run(held).provenance["finished"]


# 3. `sweep --grid seed=...` silently overridden by --seeds.

@pytest.mark.parametrize("flags, needle", [(["--grid", "seed=1,2"], "--seeds"),
                                          (["--grid", "num_tasks=1,1"], "--grid must not repeat"),
                                          (["--grid", "eps=0.1", "--grid", "eps=0.2"], "eps twice"),
                                          (["--seeds", "0,0"], "--seeds")])
def test_sweep_refuses_seeds_in_the_grid_and_duplicate_runs(tmp_path, capsys, flags, needle):
    line = cli_error(capsys, ["sweep", *TINY_FLAGS, *flags, "--out", str(tmp_path / "s")])
    assert needle in line
    assert not (tmp_path / "s").exists()


# 4. One kill window bricks a run; and kill injection at each write.

def test_a_kill_before_any_write_completes_leaves_a_run_that_resumes_exactly(tmp_path, monkeypatch):
    """Killed before each of its writes in turn (directory creation, config, instance, provenance, checkpoints,
    metrics, resume states), a run started again ends bit-identical to an uninterrupted one, leaving no
    temporary file or directory behind."""
    straight = train(SHORT, tmp_path / "straight", progress=False)
    names = ("atomic_write_text", "atomic_save_tensors", "save_metrics")
    real = {n: getattr(trainer, n) for n in names}
    writes = []

    def counting(name):
        def write(*args, **kwargs):
            writes.append(name)
            if len(writes) == kill_at:
                raise KeyboardInterrupt
            return real[name](*args, **kwargs)
        return write

    for n in names:
        monkeypatch.setattr(trainer, n, counting(n))
    kill_at = 0
    train(SHORT, tmp_path / "count", progress=False)
    n_writes = len(writes)
    for kill_at in range(1, n_writes + 1):
        writes.clear()
        out = tmp_path / f"k{kill_at}"
        with pytest.raises(KeyboardInterrupt):
            train(SHORT, out, progress=False)
        for n in names:
            monkeypatch.setattr(trainer, n, real[n])
        run = train(SHORT, out, progress=False)
        for n in names:
            monkeypatch.setattr(trainer, n, counting(n))
        assert run.provenance["finished"] and same_metrics(straight.metrics, run.metrics), kill_at
        assert same_weights(checkpoint_path(straight.path, 20), checkpoint_path(out, 20)), kill_at
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp" in p.name or p.name == ".lock"]
    assert leftovers == []


def test_a_directory_an_older_version_left_at_creation_is_accepted(tmp_path):
    """Killed after making checkpoints/ but before config.json, an older version left a directory that was
    refused forever; it now counts as empty."""
    out = tmp_path / "r"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json.tmp").write_text("{")
    assert train(SHORT, out, progress=False).provenance["finished"]


# 5. No integrity check.

def test_a_garbled_or_truncated_checkpoint_is_an_error_naming_it(tiny_run, tmp_path):
    out = shutil.copytree(tiny_run.path, tmp_path / "r")
    garble_tail(checkpoint_path(out, 30))
    truncate(checkpoint_path(out, 40))
    run = load_run(out)
    with pytest.raises(ValueError, match="step_0000030.safetensors is damaged: .*SHA-256"):
        run.model(30)
    with pytest.raises(ValueError, match="step_0000040.safetensors is damaged"):
        run.model(40)
    assert torch.equal(run.model(60).state_dict()["w1"], tiny_run.model(60).state_dict()["w1"])


def test_a_garbled_resume_state_is_refused_not_resumed(tiny_cfg, tmp_path, monkeypatch):
    out = interrupted_run(tiny_cfg, tmp_path / "r", monkeypatch, 4)
    garble_tail(out / "state.safetensors")
    with pytest.raises(ValueError, match="state.safetensors is damaged"):
        train(tiny_cfg, out, progress=False)


@pytest.mark.parametrize("damage", [garble_tail, truncate])
@pytest.mark.parametrize("name", ["instance.safetensors", "checkpoints/step_0000010.safetensors"])
def test_resume_verifies_every_file(tiny_cfg, tmp_path, monkeypatch, damage, name):
    """Resuming checks the checksums of the files it does not read, too (the instance, the checkpoints)."""
    out = interrupted_run(tiny_cfg, tmp_path / "r", monkeypatch, 4)
    damage(out / name)
    with pytest.raises(ValueError, match=f"{name} is damaged"):
        train(tiny_cfg, out, progress=False)


def test_load_run_verifies_metrics_and_run_verifies_its_instance(tiny_run, tmp_path):
    out = shutil.copytree(tiny_run.path, tmp_path / "r")
    garble_tail(out / "instance.safetensors")
    with pytest.raises(ValueError, match="instance.safetensors is damaged"):
        load_run(out).instance()
    garble_tail(out / "metrics.safetensors")
    with pytest.raises(ValueError, match="metrics.safetensors is damaged"):
        load_run(out)


def test_shipped_runs_without_checksums_still_load():
    run = shipped("default")[0]
    assert run.model(run.checkpoint_steps[-1]) is not None and run.instance().table.ndim == 2


# 6. Tracebacks instead of messages.

@pytest.mark.parametrize("changes, name", [({"eps": "0.1"}, "eps"), ({"n_layers": 2.5}, "n_layers"),
                                           ({"w_o": "no"}, "w_o"), ({"instance_seed": 10**23}, "instance_seed"),
                                           ({"seed": -1}, "seed"), ({"masks": ["none", "none"]}, "masks"),
                                           ({"device": 0}, "device"), ({"num_tasks": True}, "num_tasks"),
                                           ({"pos_dim": 65.0}, "pos_dim"), ({"lr": "0.01"}, "lr")])
def test_wrong_types_raise_value_error_naming_the_field(changes, name):
    with pytest.raises(ValueError) as err:
        Config(**changes).validate()
    assert str(err.value).startswith(name + " ")


def test_cli_bad_input_gets_a_one_line_message(tmp_path, tiny_run, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(Config(**TINY).to_json())
    bad_json = shutil.copytree(tiny_run.path, tmp_path / "bad_json")
    (bad_json / "config.json").write_text('{"num_tasks": 3,')
    bad_cfg = shutil.copytree(tiny_run.path, tmp_path / "bad_cfg")
    (bad_cfg / "config.json").write_text(json.dumps({**tiny_run.config.to_dict(), "n_heads": 3}))
    truncated = shutil.copytree(tiny_run.path, tmp_path / "truncated")
    truncate(truncated / "metrics.safetensors")
    cases = [
        (["train", "--threads", "0", "--out", str(tmp_path / "a")], "--threads"),
        (["train", *TINY_FLAGS, "--out", str(afile)], f"out must be a directory, got the file {afile}"),
        (["train", *TINY_FLAGS, "--out", str(afile / "run")], "out must be a path where a directory can be"),
        (["train", "--instance-seed", "1e23", "--out", str(tmp_path / "a")], "--instance-seed"),
        (["train", "--instance-seed", str(10**23), "--out", str(tmp_path / "a")], "instance_seed"),
        (["phases", str(tmp_path / "missing")], "run must be a run directory"),
        (["phases", str(empty)], "has no metrics yet"),
        (["phases", str(bad_json)], f"{bad_json / 'config.json'} is damaged (not valid JSON"),
        (["phases", str(bad_cfg)], f"{bad_cfg / 'config.json'} is not a valid config: n_heads"),
        (["phases", str(truncated)], f"{truncated / 'metrics.safetensors'} is damaged"),
        (["phases", str(tiny_run.path), "--dt", "0"], "--dt"),
        (["sweep", "--grid", "num_classes=abc", "--out", str(tmp_path / "s")], "--grid num_classes values must be"),
        (["sweep", "--seeds", "a", "--out", str(tmp_path / "s")], "--seeds"),
        (["sweep", "--jobs", "0", "--out", str(tmp_path / "s")], "--jobs"),
        (["sweeps", "noise", "--out", str(afile)], "--out must be a directory"),
    ]
    for argv, needle in cases:
        assert needle in cli_error(capsys, argv), argv
    assert not (tmp_path / "a").exists() and not (tmp_path / "s").exists()


def test_grid_values_are_parsed_by_field_type():
    assert parse_grid(["w_o=true,false", "instance_seed=none,3"]) == {"w_o": [True, False], "instance_seed": [None, 3]}
    for item, name in (("w_o=no", "w_o"), ("eps=abc", "eps"), ("instance_seed=1e23", "instance_seed")):
        with pytest.raises(ValueError, match=f"--grid {name} values must be of type"):
            parse_grid([item])


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="run must be a run directory"):
        main(["phases", str(tmp_path / "missing"), "--debug"])


def test_python_api_bad_values(tiny_run, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        train(Config(**TINY), tmp_path / "a", threads=0)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(ValueError, match="out must not be the current directory"):
        train(Config(**TINY), ".")
    with pytest.raises(ValueError, match="steps must be a positive multiple of eval_every = 10"):
        retrain_start(tiny_run, 15)
    with pytest.raises(ValueError, match="is not a valid config: a config must be a JSON object"):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "config.json").write_text("[1, 2]")
        load_run(tmp_path / "b")
    assert not (tmp_path / "a").exists()


# 7. Leftovers.

def test_resume_and_compact_remove_what_killed_writes_left(tiny_cfg, tmp_path, monkeypatch):
    out = interrupted_run(tiny_cfg, tmp_path / "r", monkeypatch, 4)
    junk = [out / ".tmpAb12Cd", out / "metrics.safetensors.tmp", out / "checkpoints" / ".tmpXy34Zw"]
    for p in junk:
        p.write_bytes(b"partial")
    train(tiny_cfg, out, progress=False)
    assert not any(p.exists() for p in junk)
    for p in junk:
        p.write_bytes(b"partial")
    compact(out)
    assert not any(p.exists() for p in junk)


def test_train_without_out_cleans_up(monkeypatch, tmp_path):
    """train(out=None) trains into a temporary directory removed with the returned Run, or at once on an error."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run = train(SHORT, progress=False)
    path = run.path
    assert path.parent == tmp_path and run.model() is not None
    del run
    gc.collect()
    assert not path.exists()
    with pytest.raises(trainer.DivergedError):
        train(SHORT.replace(lr=1000.0), progress=False)
    assert list(tmp_path.iterdir()) == []


# 8. Threads are not recorded.

def test_threads_default_to_one_and_are_recorded_at_start_and_every_resume(tmp_path, monkeypatch):
    seen = []
    real = trainer.evaluate

    def evaluate(model, sets, *probe):
        seen.append(torch.get_num_threads())
        return real(model, sets, *probe)

    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(trainer, "evaluate", evaluate)
        run = train(SHORT.replace(steps=10), tmp_path / "r", progress=False)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        run = train(SHORT, tmp_path / "r", progress=False, threads=2)
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(1)
    assert run.provenance["torch_threads"] == 1 and run.provenance["resume_threads"] == [2]
    assert retrain_start(run, 10, tmp_path / "again", threads=2).provenance["torch_threads"] == 2


def test_cli_records_threads(tmp_path):
    main(["train", *TINY_FLAGS, "--steps", "10", "--threads", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    assert load_run(tmp_path / "r").provenance["torch_threads"] == 2
