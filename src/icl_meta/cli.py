"""The `icl-meta` command: train, sweep, sweeps, bench, phases.

Every Config field is a `--kebab-case` flag of `train` and `sweep` (booleans as `--flag/--no-flag`,
optional numbers accept `none`, masks as a comma list such as `--masks bigram,bigram`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing as mp
import shlex
import sys
from pathlib import Path

from .config import Config


def _optional(kind):
    return lambda s: None if s.lower() == "none" else kind(s)


def _masks(s: str) -> tuple[str, ...]:
    return tuple(m for m in s.split(",") if m)


PARSERS = {"int": int, "float": float, "str": str, "int | None": _optional(int),
           "float | None": _optional(float), "tuple[str, ...]": _masks}


def field_parser(name: str):
    """The string-to-value parser of one Config field."""
    ftype = {f.name: f.type for f in dataclasses.fields(Config)}[name]
    return PARSERS[ftype]


def add_config_flags(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=PARSERS[f.type], default=f.default, metavar=f.type.split(" ")[0].upper(),
                           help=f"default: {f.default}")


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def _command(argv: list[str]) -> str:
    return "icl-meta " + shlex.join(argv)


def cmd_train(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from .trainer import train

    cfg = config_from_args(args).validate()
    torch.set_num_threads(args.threads)
    run = train(cfg, args.out, progress=args.progress, command=_command(argv))
    print(f"{run.path}: {run.provenance['final_step']} steps in {run.provenance['wall_time_s']:.0f} s, "
          f"final accuracy {run.metrics['acc'][-1]:.3f}")


def parse_grid(items: list[str]) -> dict[str, list]:
    """['num_classes=32,64', 'eps=0.1'] -> {'num_classes': [32, 64], 'eps': [0.1]}."""
    names = {f.name for f in dataclasses.fields(Config)}
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        key = key.replace("-", "_")
        if key not in names or not values:
            raise ValueError(f"--grid must be FIELD=V1,V2,... with FIELD a config field, got {item!r}")
        parse = field_parser(key)
        grid[key] = [parse(v) for v in values.split("|" if key == "masks" else ",")]
    return grid


def _sweep_one(job: tuple[dict, str, int, str]) -> str:
    import torch

    from .trainer import train

    cfg_dict, out, threads, command = job
    torch.set_num_threads(threads)
    run = train(Config.from_dict(cfg_dict), out, progress=False, command=command)
    return f"{out}: final accuracy {run.metrics['acc'][-1]:.3f}"


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> None:
    from .sweeps import setting_name

    base = config_from_args(args)
    grid = parse_grid(args.grid)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = []
    for values in itertools.product(*grid.values(), seeds):
        changes = dict(zip([*grid, "seed"], values))
        cfg = base.replace(**changes).validate()  # every config checked before any run starts
        jobs.append((cfg.to_dict(), str(Path(args.out) / setting_name(changes)), args.threads, _command(argv)))
    _run_pool(jobs, args.jobs, args.progress, f"sweep: {len(jobs)} runs, {args.jobs} at a time, into {args.out}")


def _run_pool(jobs: list[tuple[dict, str, int, str]], processes: int, progress: bool, header: str) -> None:
    """Train the jobs in `processes` spawned worker processes, in order, printing one line per run."""
    from tqdm import tqdm

    print(header, flush=True)
    with mp.get_context("spawn").Pool(processes) as pool:
        for line in tqdm(pool.imap(_sweep_one, jobs), total=len(jobs), disable=not progress):
            print(line, flush=True)


def cmd_sweeps(args: argparse.Namespace, argv: list[str]) -> None:
    from .sweeps import SWEEP_NAMES, plan

    seeds = tuple(int(s) for s in args.seeds.split(","))
    jobs = [(cfg.to_dict(), str(out), args.threads, _command(argv))
            for cfg, out in plan(args.out, tuple(args.names) or SWEEP_NAMES, seeds, args.steps)]
    _run_pool(jobs, args.jobs, args.progress, f"sweeps: {len(jobs)} runs, {args.jobs} at a time, into {args.out}")


def cmd_phases(args: argparse.Namespace, argv: list[str]) -> None:
    from .bayes import ceilings
    from .runs import load_run

    run = load_run(args.run)
    print(f"{run.path}: {len(run.steps)} evaluations, steps {run.steps[0]}..{run.steps[-1]}")
    ceil = ceilings(run.config, run.instance(), n=50_000)
    print("Bayes ceilings: " + ", ".join(f"{k} {v:.3f}" for k, v in ceil.items()))
    for rule, rep in run.phases(args.dt, args.threshold).items():
        tr = ", ".join(f"{a}-{b}" for a, b in rep["transitions"]) or "none"
        print(f"[{rule} rule] transitions (steps): {tr}")
        for ph in rep["phases"]:
            print(f"  phase {ph.index}: steps {ph.start}..{ph.end}, accuracy level {ph.level:.3f}")


def cmd_bench(args: argparse.Namespace, argv: list[str]) -> None:
    from .bench import report

    print(report(args.steps, args.threads))


def add_pool_flags(p: argparse.ArgumentParser, out_help: str) -> None:
    """The flags of the commands that train many runs in a pool of processes."""
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="processes at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def build_parser() -> argparse.ArgumentParser:
    from .sweeps import CAP

    p = argparse.ArgumentParser(prog="icl-meta", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one run into a run directory")
    add_config_flags(t)
    t.add_argument("--out", required=True, help="run directory (resumed if it holds this config)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("sweep", help="train a grid of configs and seeds, several processes at once")
    add_config_flags(s)
    s.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a config field and its values (repeatable; masks values separated by '|')")
    add_pool_flags(s, "directory holding one run directory per grid point")
    s.set_defaults(func=cmd_sweep)
    w = sub.add_parser("sweeps", help="train the declared data-property sweeps (icl_meta.sweeps), resumable")
    w.add_argument("names", nargs="*", help="sweeps to run (default: all; order: icl_meta.sweeps.plan)")
    w.add_argument("--steps", type=int, default=None,
                   help=f"cap of each run; it stops earlier once it holds 99%% (default {CAP:,})")
    add_pool_flags(w, "directory holding one directory per sweep")
    w.set_defaults(func=cmd_sweeps)
    b = sub.add_parser("bench", help="training steps/s and the fraction of matmul throughput reached")
    b.add_argument("--steps", type=int, default=300)
    b.add_argument("--threads", type=int, default=0, help="torch threads for the main figure (0: torch's default)")
    b.set_defaults(func=cmd_bench)
    ph = sub.add_parser("phases", help="print phase transitions and plateau levels of a run")
    ph.add_argument("run")
    ph.add_argument("--dt", type=int, default=100)
    ph.add_argument("--threshold", type=float, default=0.025)
    ph.set_defaults(func=cmd_phases)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        args.func(args, argv)
    except ValueError as e:
        sys.exit(f"icl-meta {args.cmd}: error: {e}")


if __name__ == "__main__":
    main()
