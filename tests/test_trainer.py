"""Training runs (Methods §Training) and run directories: files, metrics, determinism, resume, early stop."""

import json
import pickle
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from icl_meta import Config, Model, compact, load_run, make_instance, sample, train, trainer
from icl_meta.runs import checkpoint_path, read_tensors
from icl_meta.task import generator


def same_metrics(a, b):
    """Metric dicts with the same columns and bit-identical values, the wall-clock column aside."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a if k != "time")


def same_weights(path_a, path_b):
    """Two safetensors checkpoints with the same tensors, bit for bit."""
    a, b = load_file(str(path_a)), load_file(str(path_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_layout(tiny_run, tiny_cfg):
    """A finished run holds its config, instance, metrics, provenance and checkpoints at step 0 and the last step."""
    for name in ("config.json", "instance.safetensors", "metrics.safetensors", "provenance.json"):
        assert (tiny_run.path / name).is_file()
    assert tiny_run.config == tiny_cfg
    assert tiny_run.checkpoint_steps[0] == 0 and tiny_run.checkpoint_steps[-1] == 60
    assert all(checkpoint_path(tiny_run.path, s).is_file() for s in tiny_run.checkpoint_steps)
    inst = make_instance(tiny_cfg)
    assert torch.equal(tiny_run.instance().means, inst.means) and torch.equal(tiny_run.instance().table, inst.table)


def test_provenance(tiny_run, tiny_cfg):
    """provenance.json records completion, the four seeds, versions and the git commit."""
    prov = json.loads((tiny_run.path / "provenance.json").read_text())
    assert prov["finished"] is True and prov["final_step"] == 60 and prov["early_stopped"] is False
    assert prov["seeds"] == tiny_cfg.seeds()
    assert "git_commit" in prov
    assert {"icl_meta", "python", "torch", "numpy"} <= set(prov["versions"])


def test_metric_columns_and_rows(tiny_run):
    """Metrics hold training, evaluation and per-layer circuit columns, one row every eval_every steps."""
    m = tiny_run.metrics
    expected = {"step", "time", "train_loss", "train_acc", "loss", "acc", "acc_task0", "acc_task1", "acc_task2",
                "acc_random_label", "acc_in_weights", "acc_copy"}
    expected |= {f"L{layer}H1_{name}" for layer in (1, 2) for name in ("bigram", "label_attention", "chunk_example")}
    assert set(m) == expected
    assert np.array_equal(m["step"], np.arange(0, 61, 10))
    assert all(len(v) == 7 for v in m.values())
    assert np.isnan(m["train_loss"][0]) and np.isfinite(m["train_loss"][1:]).all()
    for k in expected - {"step", "time", "loss", "train_loss"}:
        assert ((m[k][1:] >= 0) & (m[k][1:] <= 1)).all(), k


def test_metrics_match_reevaluation(tiny_run):
    """The last metrics row equals evaluate() of the last checkpoint on the run's evaluation sets."""
    row = trainer.evaluate(tiny_run.model(), tiny_run.eval_sets())
    for k, v in row.items():
        assert tiny_run.metrics[k][-1] == pytest.approx(v, abs=1e-6), k


def test_training_is_plain_sgd_on_the_data_stream(tiny_run, tiny_cfg):
    """Ten steps of vanilla SGD (lr 0.01) on batches from the data seed reproduce the step-10 checkpoint and
    the logged windowed training loss."""
    cfg = tiny_cfg
    inst, model = make_instance(cfg), Model(cfg)
    g = generator(cfg.seeds()["data"])
    losses = []
    for _ in range(10):
        batch = sample(inst, cfg, cfg.batch_size, g)
        loss = F.cross_entropy(model(batch)[:, 0], batch.target)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= cfg.lr * p.grad
        losses.append(loss.item())
    saved = tiny_run.model(10).state_dict()
    assert all(torch.allclose(v, saved[k], atol=1e-6) for k, v in model.state_dict().items())
    assert tiny_run.metrics["train_loss"][1] == pytest.approx(np.mean(losses), rel=1e-5)


def test_same_config_same_metrics(tiny_run, tiny_cfg, tmp_path):
    """Two runs of one config in different directories give identical metrics and weights."""
    other = train(tiny_cfg, tmp_path / "b", progress=False)
    assert same_metrics(tiny_run.metrics, other.metrics)
    assert same_weights(checkpoint_path(tiny_run.path, 60), checkpoint_path(other.path, 60))


def test_resume_after_interrupt_is_exact(tiny_run, tiny_cfg, tmp_path, monkeypatch):
    """A run killed after the step-40 evaluation and restarted ends bit-identical to an uninterrupted run."""
    out = tmp_path / "b"
    calls = []
    real = trainer.evaluate

    def interrupting(model, sets, *probe):
        if len(calls) == 5:  # evaluations at steps 0, 10, 20, 30, 40 done; interrupt at 50
            raise KeyboardInterrupt
        calls.append(1)
        return real(model, sets, *probe)

    monkeypatch.setattr(trainer, "evaluate", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg, out, progress=False)
    monkeypatch.setattr(trainer, "evaluate", real)
    partial = load_run(out)
    assert partial.provenance["finished"] is False and partial.metrics["step"][-1] == 40

    resumed = train(tiny_cfg, out, progress=False)
    assert resumed.provenance["finished"] is True and resumed.provenance["resumed_at"] == [40]
    assert same_metrics(tiny_run.metrics, resumed.metrics)
    assert same_weights(checkpoint_path(tiny_run.path, 60), checkpoint_path(out, 60))


def test_finished_run_is_returned_without_training(tiny_run, tiny_cfg, monkeypatch):
    """train() on a finished run of the same config reloads it and writes nothing."""
    metrics_file = tiny_run.path / "metrics.safetensors"
    before = metrics_file.stat().st_mtime_ns
    monkeypatch.setattr(trainer, "evaluate", None)  # any training step would call it
    again = train(tiny_cfg, tiny_run.path, progress=False)
    assert metrics_file.stat().st_mtime_ns == before
    assert same_metrics(tiny_run.metrics, again.metrics)


def test_other_config_in_run_dir_raises(tiny_run, tiny_cfg):
    """A run directory cannot be reused with a different config."""
    with pytest.raises(ValueError, match="another config"):
        train(tiny_cfg.replace(lr=0.02), tiny_run.path, progress=False)


def test_foreign_nonempty_dir_raises(tiny_cfg, tmp_path):
    """A non-empty directory that is not a run is refused."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="out"):
        train(tiny_cfg, tmp_path, progress=False)


def test_run_model_loads_checkpoint(tiny_run):
    """Run.model(step) holds exactly the checkpoint's weights; the default is the last step."""
    for step in (0, 30, 60):
        saved = load_file(str(checkpoint_path(tiny_run.path, step)))
        state = tiny_run.model(step).state_dict()
        assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    last, first = tiny_run.model().state_dict(), tiny_run.model(0).state_dict()
    assert torch.equal(last["w1"], tiny_run.model(60).state_dict()["w1"]) and not torch.equal(last["w1"], first["w1"])


def test_run_model_rejects_unsaved_step(tiny_run):
    """Asking for a step without a checkpoint raises ValueError."""
    with pytest.raises(ValueError, match="step"):
        tiny_run.model(5)


def test_load_run_never_unpickles(tiny_run, monkeypatch):
    """A run is JSON and safetensors only, and loading it and its model works with pickle disabled."""
    files = [p for p in tiny_run.path.rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".json", ".safetensors") for p in files)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    run = load_run(tiny_run.path)
    assert run.model(60) is not None and run.instance().table.shape == (3, 64)


def test_early_stop(tiny_cfg, tmp_path):
    """With a level the run already holds and factor 1, training stops early, checkpoints and says so."""
    run = train(tiny_cfg.replace(early_stop_acc=0.0001, early_stop_factor=1.0), tmp_path / "es", progress=False)
    final = run.provenance["final_step"]
    assert final < 60 and run.provenance["early_stopped"] is True and run.provenance["finished"] is True
    assert run.metrics["step"][-1] == final and run.checkpoint_steps[-1] == final


def test_checkpoint_steps_log_spaced():
    """Checkpoints: step 0, the last step and log-spaced multiples of eval_every in between."""
    steps = trainer.checkpoint_steps(Config(steps=100_000, eval_every=100))
    assert steps[0] == 0 and steps[-1] == 100_000 and len(steps) <= 20
    assert all(s % 100 == 0 for s in steps) and steps == sorted(set(steps))
    ratios = np.array(steps[2:]) / np.array(steps[1:-1])
    assert (ratios > 1.2).all() and (ratios < 2.1).all()
    assert trainer.checkpoint_steps(Config(n_checkpoints=0)) == []


def test_extending_a_run_equals_training_longer(tiny_cfg, tmp_path):
    """A finished run resumed with more steps continues its data stream: same metrics as one longer run."""
    short = train(tiny_cfg, tmp_path / "a", progress=False)
    longer_cfg = tiny_cfg.replace(steps=tiny_cfg.steps + 20)
    extended = train(longer_cfg, tmp_path / "a", progress=False)
    straight = train(longer_cfg, tmp_path / "b", progress=False)
    assert extended.config == longer_cfg and extended.provenance["resumed_at"] == [short.steps[-1]]
    for col in ("loss", "acc", "train_loss", "L1H1_bigram"):
        assert np.array_equal(extended.metrics[col], straight.metrics[col], equal_nan=True), col


def test_resume_cannot_change_what_is_computed_or_go_back(tiny_cfg, tmp_path):
    """Resuming with another lr, or with fewer steps than were saved, raises before training."""
    train(tiny_cfg, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="another config"):
        train(tiny_cfg.replace(lr=0.02), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="steps must be >="):
        train(tiny_cfg.replace(steps=tiny_cfg.steps - 20), tmp_path / "a", progress=False)


def test_interrupted_extension_is_not_taken_for_finished(tiny_cfg, tmp_path, monkeypatch):
    """An extension killed midway leaves an unfinished run, and the same call completes it exactly."""
    train(tiny_cfg, tmp_path / "a", progress=False)
    longer = tiny_cfg.replace(steps=tiny_cfg.steps + 40)
    real = trainer.evaluate

    def interrupting(model, sets, *probe):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "evaluate", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(longer, tmp_path / "a", progress=False)
    monkeypatch.setattr(trainer, "evaluate", real)
    assert load_run(tmp_path / "a").provenance["finished"] is False
    extended = train(longer, tmp_path / "a", progress=False)
    straight = train(longer, tmp_path / "b", progress=False)
    assert extended.steps[-1] == longer.steps and same_metrics(straight.metrics, extended.metrics)


def test_compact_drops_resume_state_and_optionally_checkpoints(tiny_cfg, tmp_path):
    """compact removes the resume state and stores the metrics as float32 (read back as float64, equal to float32
    rounding); "last" keeps the final checkpoint, "none" none, and the dropped steps are recorded."""
    run = train(tiny_cfg, tmp_path / "r", progress=False)
    before = run.checkpoint_steps
    compact(run.path, checkpoints="last")
    after = load_run(run.path)
    assert not (run.path / "state.safetensors").exists()
    assert after.checkpoint_steps == before[-1:]
    assert after.provenance["dropped_checkpoints"] == before[:-1]
    stored = read_tensors(run.path / "metrics.safetensors", "np")  # float32 on disk, float64 when read
    assert {v.dtype for v in stored.values()} == {np.dtype(np.float32)}
    assert {v.dtype for v in after.metrics.values()} == {np.dtype(np.float64)}
    assert after.metrics.keys() == run.metrics.keys()
    assert all(np.allclose(after.metrics[k], v, rtol=1e-6, equal_nan=True) for k, v in run.metrics.items())
    compact(run.path, checkpoints="none")
    assert load_run(run.path).checkpoint_steps == [] and load_run(run.path).provenance["dropped_checkpoints"] == before
    with pytest.raises(ValueError, match="checkpoints must be one of"):
        compact(run.path, checkpoints="some")
    with pytest.raises(ValueError, match="or an int >= 2"):
        compact(run.path, checkpoints=1)
    prov = json.loads((run.path / "provenance.json").read_text())
    prov["finished"] = False
    (run.path / "provenance.json").write_text(json.dumps(prov))
    with pytest.raises(ValueError, match="path must be a finished run"):
        compact(run.path)


def test_compact_keeps_k_checkpoints_spread_over_the_run(tiny_cfg, tmp_path):
    """An int keeps that many checkpoints, evenly over the log-spaced ones, the first and the last included."""
    run = train(tiny_cfg.replace(n_checkpoints=6), tmp_path / "r", progress=False)
    before = run.checkpoint_steps
    compact(run.path, checkpoints=3)
    kept = load_run(run.path).checkpoint_steps
    assert len(kept) == 3 and kept[0] == before[0] and kept[-1] == before[-1] and kept[1] in before[1:-1]
    assert sorted(kept + load_run(run.path).provenance["dropped_checkpoints"]) == before


def test_compiled_training_is_the_same_run_to_float_rounding(tiny_run, tiny_cfg, tmp_path):
    """compile=True trains through torch.compile's forward: the metrics are the eager run's up to rounding (as
    the shipped-run check allows), and provenance says how the run was made."""
    fast = train(tiny_cfg, tmp_path / "compiled", progress=False, compile=True)
    assert fast.provenance["compiled"] and not tiny_run.provenance["compiled"]
    for col, ref in tiny_run.metrics.items():
        if col != "time":
            atol = 3 / tiny_cfg.eval_size if col.startswith(("acc", "train_acc")) else 1e-4
            np.testing.assert_allclose(fast.metrics[col], ref, atol=atol, rtol=1e-4, err_msg=col)


def test_retained_memory_keeps_freed_heap_pages():
    """After trainer.retain_freed_memory (which train calls) memory freed to glibc's heap stays mapped: filling
    100 MB of blocks again maps no fresh page, where with the allocator's defaults the freed top of the heap goes
    back to the OS and every page faults again. Each mode in its own process: the setting lasts for the process.
    The blocks come from libc directly, so that nothing else lands on the heap between them. (A count of page faults
    per training step, as `icl-meta bench` reports, is no test: with glibc's dynamic thresholds the default's count
    ranges from none to hundreds between processes, and a CI machine once counted a fifth of what it counts here.)"""
    script = """
import ctypes, resource, sys
from icl_meta import trainer
applied = trainer.retain_freed_memory() if sys.argv[1] == "retain" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def cycle(n=1000, size=100_000):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(size) for _ in range(n)]  # each below the mmap threshold: from the heap
    for b in blocks:
        ctypes.memset(b, 1, size)
    for b in blocks:
        libc.free(b)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, *[cycle() for _ in range(3)])
"""
    out = {}
    for mode in ("retain", "default"):
        res = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        applied, *faults = res.stdout.split()
        out[mode] = (applied == "True", [int(f) for f in faults])
    pages = 1000 * 100_000 // resource.getpagesize()
    assert out["retain"][0] and not out["default"][0]
    assert all(f > pages / 2 for f in out["default"][1]), out  # every cycle maps its pages afresh (here: 24,300)
    assert out["retain"][1][0] > pages / 2 and max(out["retain"][1][1:]) < pages / 100, out  # here: 24,300, 0, 0

