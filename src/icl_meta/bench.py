"""Speed benchmark: training steps/s for the default setting, and how much of this machine's measured
single-thread matmul throughput the step reaches. Run with `icl-meta bench`."""

from __future__ import annotations

import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import Config
from .model import Model, loss_and_correct
from .task import generator, make_instance, sample
from .trainer import train


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    """fp32 GFLOP/s of an n x n matmul on the current torch thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _rate(fn, steps: int) -> float:
    for _ in range(max(steps // 10, 5)):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps / (time.perf_counter() - t)


def step_flops(cfg: Config) -> int:
    """FLOPs of one training step (forward and backward), counted by torch's flop counter."""
    inst, model = make_instance(cfg), Model(cfg)
    batch = sample(inst, cfg, cfg.batch_size, generator(0))
    with FlopCounterMode(display=False) as counter:
        loss_and_correct(model, batch)[0].backward()
    return counter.get_total_flops()


def measure(cfg: Config, steps: int) -> dict[str, float]:
    """Steps/s of sampling alone, of sampling + SGD step, and of `train()` with its evaluations."""
    inst, model = make_instance(cfg), Model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    g = generator(0)

    def gen():
        sample(inst, cfg, cfg.batch_size, g)

    def step():
        loss, _ = loss_and_correct(model, sample(inst, cfg, cfg.batch_size, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rates = {"sampling": _rate(gen, steps), "train_step": _rate(step, steps)}
    with tempfile.TemporaryDirectory() as out:
        n = max(steps // cfg.eval_every, 1) * cfg.eval_every
        t = time.perf_counter()
        train(cfg.replace(steps=n, n_checkpoints=0, save_every=n), out, progress=False, command="bench")
        rates["train_with_eval"] = n / (time.perf_counter() - t)
    return rates


def report(steps: int = 300, threads: int = 0) -> str:
    """A plain-text benchmark report for the default config."""
    cfg = Config()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    peak1 = matmul_gflops()
    flops = step_flops(cfg)
    lines = [f"torch {torch.__version__}, {default_threads} threads available",
             f"single-thread fp32 matmul (1024^3): {peak1:.1f} GFLOP/s",
             f"one training step (default config, batch {cfg.batch_size}): {flops / 1e6:.1f} MFLOP forward+backward",
             f"{'threads':>8} {'sampling/s':>11} {'steps/s':>9} {'with eval':>10} {'GFLOP/s':>8} {'of 1-thread peak':>17}"]
    for n in sorted({1, threads or default_threads}):
        torch.set_num_threads(n)
        r = measure(cfg, steps)
        achieved = flops * r["train_step"] / 1e9
        lines.append(f"{n:>8} {r['sampling']:>11.0f} {r['train_step']:>9.1f} {r['train_with_eval']:>10.1f} "
                     f"{achieved:>8.1f} {achieved / peak1:>16.0%}")
    torch.set_num_threads(default_threads)
    return "\n".join(lines)
