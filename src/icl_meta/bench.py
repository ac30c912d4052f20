"""Speed benchmark: training steps/s of the default setting, eager and compiled side by side, the cost of
the evaluations, and how much of this machine's measured single-thread matmul throughput a step reaches.
Run with `icl-meta bench`.

Rates are CPU time of this process (one thread: the same as wall time on an idle core), so that a
benchmark taken beside another busy process still compares its paths fairly.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import Config
from .model import Model, loss_and_correct
from .task import eval_sets, generator, make_instance, sample
from .trainer import evaluate, runnable


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    """fp32 GFLOP/s of an n x n matmul on the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.process_time()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.process_time() - t) / 1e9


def _seconds(fn, reps: int) -> float:
    """CPU seconds per call of fn, after a warm-up of reps // 10 (at least 3) calls."""
    for _ in range(max(reps // 10, 3)):
        fn()
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps


def step_flops(cfg: Config) -> int:
    """FLOPs of one training step (forward and backward), counted by torch's flop counter."""
    inst, model = make_instance(cfg), Model(cfg)
    batch = sample(inst, cfg, cfg.batch_size, generator(0))
    with FlopCounterMode(display=False) as counter:
        loss_and_correct(model, batch)[0].backward()
    return counter.get_total_flops()


def measure(cfg: Config, steps: int, compile: bool) -> dict[str, float]:
    """Seconds of one sampled batch, of one training step (sampling + SGD step) and of one evaluation,
    for the eager model or its compiled forward (compilation itself not counted, but reported)."""
    inst, model = make_instance(cfg), Model(cfg)
    fast = runnable(model, compile)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    g = generator(0)
    sets = eval_sets(inst, cfg)

    def step():
        loss, _ = loss_and_correct(fast, sample(inst, cfg, cfg.batch_size, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()
    evaluate(fast, sets, probe_model=model)
    warmup = time.perf_counter() - t
    return {"sampling": _seconds(lambda: sample(inst, cfg, cfg.batch_size, g), steps), "step": _seconds(step, steps),
            "eval": _seconds(lambda: evaluate(fast, sets, probe_model=model), max(steps // 50, 3)), "warmup": warmup}


def report(steps: int = 300, threads: int = 1, compile: bool = True) -> str:
    """A plain-text benchmark report for the default config: one row per path (eager, compiled)."""
    cfg = Config()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    peak1 = matmul_gflops()
    flops = step_flops(cfg)
    torch.set_num_threads(threads)
    lines = [f"torch {torch.__version__}, {threads} of {default_threads} threads, device {cfg.device}",
             f"single-thread fp32 matmul (1024^3): {peak1:.1f} GFLOP/s",
             f"one training step (default config, batch {cfg.batch_size}): {flops / 1e6:.1f} MFLOP forward+backward",
             f"with eval: steps/s including one evaluation every {cfg.eval_every} steps (as training runs)",
             f"{'path':>9} {'sampling/s':>11} {'steps/s':>8} {'x eager':>8} {'GFLOP/s':>8} {'of peak':>8} "
             f"{'eval ms':>8} {'with eval':>10} {'x eager':>8} {'warm-up s':>10}"]
    base = None
    for path in ("eager", "compiled")[:1 + compile]:
        r = measure(cfg, steps, path == "compiled")
        rate = 1 / r["step"]
        with_eval = cfg.eval_every / (cfg.eval_every * r["step"] + r["eval"])
        base = base or (rate, with_eval)
        achieved = flops * rate / 1e9
        lines.append(f"{path:>9} {1 / r['sampling']:>11.0f} {rate:>8.1f} {rate / base[0]:>8.2f} {achieved:>8.1f} "
                     f"{achieved / peak1:>8.0%} {r['eval'] * 1e3:>8.1f} {with_eval:>10.1f} {with_eval / base[1]:>8.2f} "
                     f"{r['warmup']:>10.1f}")
    torch.set_num_threads(default_threads)
    return "\n".join(lines)
