"""Speed benchmark: training steps/s of the default setting on the previous eager path, the eager path and the
compiled one side by side, the cost of the evaluations, how much of this machine's measured single-thread
matmul throughput a step reaches, and the throughput of the ensemble trainer (runs x steps/s) for E = 1, 4, 16.
Run with `icl-meta bench`.

Rates are CPU time of this process (one thread: the same as wall time on an idle core), and the paths are timed
in interleaved rounds (medians), so that a benchmark taken beside other busy processes still compares its paths
fairly: a change of load then hits every path alike. With `--device cuda` they are wall time, the device
synchronised before each reading of the clock.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .config import Config
from .ensemble import gradient_step, sgd_step, stack_parameters
from .model import Model, loss_and_correct
from .task import Batch, eval_sets, generator, make_instance, sample
from .trainer import check_arguments, compiled_step, eager_step, evaluate, retain_freed_memory, runnable

PATHS = ("previous", "eager", "compiled")
ENSEMBLE_SIZES = (1, 4, 16)


def _previous_logits(model: Model, batch: Batch) -> torch.Tensor:
    """model(batch) as the training path computed it before issue 16: sequence order built by stack and cat
    (Model.embed and Model.embed_proj, unchanged), the fused kernel (scaled_dot_product_attention) in every layer
    but the last, einsums for the last layer's readout rows. Kept as the reference that `report` measures the
    speed-up against and tests/test_speed_paths.py checks the new path with. For a model without gate or Patch."""
    h = model.embed(batch)
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        attn, bias = block.attn, model.bias[i]
        x = block.ln1(h) if block.standard else h
        B, S, d = x.shape
        H = attn.n_heads
        dh = d // H
        scale = dh**-0.5 if attn.scaled else 1.0
        if i == last:
            rows = model.rows
            wq, wk, wv = attn.w_qkv.view(d, 3, H, dh).unbind(1)
            qk = torch.einsum("bhrc,dhc->bhrd", torch.einsum("brd,dhc->bhrc", x[:, rows], wq), wk)
            att = torch.softmax(torch.einsum("bhrd,bsd->bhrs", qk, x) * scale + bias[rows], dim=-1)
            z = torch.einsum("bhrs,bsd->bhrd", att, x)
            out = torch.einsum("bhrd,dhc->brhc", z, wv).reshape(B, len(rows), d)
            h = h[:, rows]
        else:
            qkv = model.embed_proj(batch, attn.w_qkv) if i == 0 and not block.standard else x @ attn.w_qkv
            q, k, v = (t.view(B, S, H, dh).transpose(1, 2) for t in qkv.split(d, -1))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale).transpose(1, 2).reshape(B, S, d)
        if attn.w_o is not None:
            out = out @ attn.w_o
        h = h + out
        if block.standard:
            h = h + F.gelu(block.ln2(h) @ block.w_in + block.b_in) @ block.w_out + block.b_out
    if model.ln_f is not None:
        h = model.ln_f(h)
    return torch.relu(h @ model.w1 + model.b1) @ model.w2 + model.b2


class _Previous(torch.nn.Module):
    """model with _previous_logits as its forward, for the callers of model(batch) (loss_and_correct, evaluate)."""

    def __init__(self, model: Model):
        super().__init__()
        self.model, self.cfg = model, model.cfg

    def forward(self, batch: Batch) -> torch.Tensor:
        return _previous_logits(self.model, batch)


def clock(device: str) -> Callable[[], float]:
    """The clock rates are read with: this process's CPU time on "cpu"; on CUDA, wall time once the device has
    finished what was queued."""
    if not device.startswith("cuda"):
        return time.process_time

    def synchronised() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return synchronised


def matmul_gflops(n: int = 1024, reps: int = 20, device: str = "cpu") -> float:
    """fp32 GFLOP/s of an n x n matmul on device (on "cpu": the current torch thread count)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    now = clock(device)
    t = now()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (now() - t) / 1e9


def _seconds(fns: dict[str, Callable[[], object]], reps: int, rounds: int = 5,
             now: Callable[[], float] = time.process_time) -> dict[str, float]:
    """Median seconds (read from `now`: CPU time by default) per call of each fn, timed in `rounds` interleaved
    rounds of reps // rounds calls after a warm-up of reps // 10 (at least 3) calls each."""
    for fn in fns.values():
        for _ in range(max(reps // 10, 3)):
            fn()
    n = max(reps // rounds, 1)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = now()
            for _ in range(n):
                fn()
            times[k].append((now() - t) / n)
    return {k: statistics.median(v) for k, v in times.items()}


def step_flops(cfg: Config) -> int:
    """FLOPs of one training step (forward and backward) on the eager path, counted by torch's flop counter. The
    previous path computed the same products (its fused attention kernel escapes the counter)."""
    inst, model = make_instance(cfg), Model(cfg)
    batch = sample(inst, cfg, cfg.batch_size, generator(0))
    with FlopCounterMode(display=False) as counter:
        loss_and_correct(model, batch)[0].backward()
    return counter.get_total_flops()


def _path(cfg: Config, path: str) -> tuple[Callable[[], None], Callable[[], object], float]:
    """A training step (sampling + SGD step) and an evaluation of a fresh model on one path, and the seconds that
    the first of each took (compilation included). The compiled path is what `train(..., compile=True)` runs:
    trainer.compiled_step, the evaluation through the compiled forward."""
    inst, model = make_instance(cfg), Model(cfg).to(cfg.device)
    fast = _Previous(model) if path == "previous" else runnable(model, path == "compiled")
    train_step = compiled_step(model) if path == "compiled" else eager_step(model, fast)
    g = generator(0, cfg.device)
    sets = eval_sets(inst, cfg)

    def step():
        train_step(sample(inst, cfg, cfg.batch_size, g))

    def evaluation():
        return evaluate(fast, sets, probe_model=model)

    now = clock(cfg.device)
    t = now()
    step()
    evaluation()
    return step, evaluation, now() - t


def measure(cfg: Config, steps: int, paths: tuple[str, ...] = PATHS) -> dict[str, dict[str, float]]:
    """Per path: CPU seconds of one training step and of one evaluation, and the warm-up seconds (the first step
    and evaluation, compilation included); plus the seconds of one sampled batch under "sampling"."""
    built = {p: _path(cfg, p) for p in paths}
    now = clock(cfg.device)
    step = _seconds({p: b[0] for p, b in built.items()}, steps, now=now)
    evals = _seconds({p: b[1] for p, b in built.items()}, max(steps // 50, 3), rounds=3, now=now)
    inst, g = make_instance(cfg), generator(0, cfg.device)
    sampling = _seconds({"sampling": lambda: sample(inst, cfg, cfg.batch_size, g)}, steps, now=now)["sampling"]
    out = {p: {"step": step[p], "eval": evals[p], "warmup": built[p][2], "faults": _faults(built[p][0])}
           for p in paths}
    return {**out, "sampling": {"step": sampling}}


def ensemble_seconds(cfg: Config, size: int, steps: int) -> float:
    """CPU seconds of one step of an ensemble of `size` runs of cfg (seeds 0..size-1) as the ensemble trainer
    takes it: every member's batch sampled from its own stream, one vmapped gradient, one update of them all."""
    members = [cfg.replace(seed=s) for s in range(size)]
    insts, gens = [make_instance(c) for c in members], [generator(c.seeds()["data"], cfg.device) for c in members]
    params = stack_parameters([Model(c).to(cfg.device) for c in members])
    grad = gradient_step(Model(cfg).to(cfg.device))

    def step():
        sgd_step(grad, params, [sample(i, c, c.batch_size, g) for i, c, g in zip(insts, members, gens)], cfg.lr)

    return _seconds({"ensemble": step}, max(steps // size, 10), rounds=3, now=clock(cfg.device))["ensemble"]


def _faults(fn: Callable[[], object], reps: int = 50) -> float:
    """Minor page faults of this process per call of fn (fresh pages the kernel had to map and zero)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / reps


def report(steps: int = 300, threads: int = 1, compile: bool = True, retain_memory: bool = True,
           device: str = "cpu") -> str:
    """A plain-text benchmark report for the default config on device: one row per path (previous eager, eager,
    compiled), then the ensemble trainer's throughput for each of ENSEMBLE_SIZES.
    retain_memory: let glibc keep freed memory first, as training does (trainer.retain_freed_memory); False
    measures the allocator's defaults (run the two in separate processes: the setting lasts for the process)."""
    cfg = Config(device=device)
    check_arguments(cfg, threads)
    retained = retain_freed_memory() if retain_memory else False
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    size = 1024 if device == "cpu" else 4096
    peak1 = matmul_gflops(size, device=device)
    flops = step_flops(Config())
    torch.set_num_threads(threads)
    r = measure(cfg, steps, PATHS if compile else PATHS[:2])
    time_kind = "CPU time" if device == "cpu" else "wall time, the device synchronised"
    lines = [f"torch {torch.__version__}, {threads} of {default_threads} threads, device {cfg.device}",
             f"{'single-thread ' if device == 'cpu' else ''}fp32 matmul ({size}^3): {peak1:.1f} GFLOP/s",
             f"one training step (default config, batch {cfg.batch_size}): {flops / 1e6:.1f} MFLOP forward+backward; "
             f"sampling its batch {r['sampling']['step'] * 1e3:.2f} ms",
             f"previous: the eager path before issue 16 (bench._previous_logits); rates are {time_kind}, medians "
             "of interleaved rounds",
             f"with eval: steps/s including one evaluation every {cfg.eval_every} steps (as training runs)",
             "faults: minor page faults per training step (fresh pages the kernel maps and zeroes)",
             "allocator: " + ("glibc keeps freed memory, as in training (trainer.retain_freed_memory)" if retained
                              else "the C library's defaults"),
             f"{'path':>9} {'steps/s':>8} {'x prev':>7} {'x eager':>8} {'GFLOP/s':>8} {'of peak':>8} "
             f"{'eval ms':>8} {'x prev':>7} {'with eval':>10} {'x prev':>7} {'warm-up s':>10} {'faults':>7}"]
    prev, eager = r["previous"], r["eager"]
    for path in PATHS[:2 + compile]:
        p = r[path]
        rate = 1 / p["step"]
        with_eval = cfg.eval_every / (cfg.eval_every * p["step"] + p["eval"])
        prev_with_eval = cfg.eval_every / (cfg.eval_every * prev["step"] + prev["eval"])
        achieved = flops * rate / 1e9
        lines.append(f"{path:>9} {rate:>8.1f} {prev['step'] / p['step']:>7.2f} {eager['step'] / p['step']:>8.2f} "
                     f"{achieved:>8.1f} {achieved / peak1:>8.0%} {p['eval'] * 1e3:>8.1f} "
                     f"{prev['eval'] / p['eval']:>7.2f} {with_eval:>10.1f} {with_eval / prev_with_eval:>7.2f} "
                     f"{p['warmup']:>10.1f} {p['faults']:>7.0f}")
    lines += ["ensemble (icl_meta.ensemble, eager): E runs in one process, runs x steps/s against the eager "
              "path's steps/s", f"{'E':>9} {'runs x steps/s':>15} {'x eager':>8}"]
    for size in ENSEMBLE_SIZES:
        rate = size / ensemble_seconds(cfg, size, steps)
        lines.append(f"{size:>9} {rate:>15.1f} {rate * eager['step']:>8.2f}")
    torch.set_num_threads(default_threads)
    return "\n".join(lines)
