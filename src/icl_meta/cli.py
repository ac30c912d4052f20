"""The `icl-meta` command: train, sweep, sweeps, bench, phases.

Every Config field is a `--kebab-case` flag of `train` and `sweep` (booleans as `--flag/--no-flag`,
optional numbers accept `none`, masks as a comma list such as `--masks bigram,bigram`).
An error is one line, `icl-meta CMD: error: ...`, exit status 2 for bad input (flags, files, a run another
process holds) and 1 for a run that diverged, a failing disk or a sweep with failed runs (the others run to their
end); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import shlex
import sys
from concurrent.futures import Executor
from pathlib import Path

from .config import Config, field_docs
from .executors import EXECUTORS, Job


def _optional(kind):
    def parse(s: str):
        return None if s.lower() == "none" else kind(s)
    parse.__name__ = f"{kind.__name__} or 'none'"  # argparse names the type in its message
    return parse


def _int_at_least(low: int):
    """An argparse type: an integer >= low."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {s!r}")
        return v
    return parse


def _seed_list(s: str) -> list[int]:
    """An argparse type: a comma list of distinct integers >= 0."""
    try:
        seeds = [int(v) for v in s.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"must be a comma list of distinct integers >= 0, got {s!r}")
    return seeds


def _nonnegative_float(s: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s!r}")
    return v


def _masks(s: str) -> tuple[str, ...]:
    return tuple(m for m in s.split(",") if m)


def _bool(s: str) -> bool:
    """'true' or 'false' (a --grid value of a boolean field; the flags themselves are --x/--no-x)."""
    if s.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {s!r}")
    return s.lower() == "true"


PARSERS = {"int": int, "float": float, "str": str, "bool": _bool, "int | None": _optional(int),
           "float | None": _optional(float), "tuple[str, ...]": _masks}


def field_parser(name: str):
    """The string-to-value parser of one Config field."""
    ftype = {f.name: f.type for f in dataclasses.fields(Config)}[name]
    return PARSERS[ftype]


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per Config field, grouped by the sections of Config and helped by its field comments."""
    docs, groups = field_docs(), {}
    for f in dataclasses.fields(Config):
        section, doc = docs[f.name]
        group = groups.get(section) or groups.setdefault(section, p.add_argument_group(f"config: {section}"))
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                               help=doc.replace("%", "%%"))
        else:
            metavar = "NAME,NAME" if f.type.startswith("tuple") else f.type.split(" ")[0].upper()
            group.add_argument(flag, type=PARSERS[f.type], default=f.default, metavar=metavar,
                               help=f"{doc} (default: {f.default})".replace("%", "%%").lstrip(" "))


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def _command(argv: list[str]) -> str:
    return "icl-meta " + shlex.join(argv)


def cmd_train(args: argparse.Namespace, argv: list[str]) -> None:
    from .trainer import train

    cfg = config_from_args(args).validate()
    run = train(cfg, args.out, progress=args.progress, command=_command(argv), threads=args.threads,
                compile=args.compile)
    print(f"{run.path}: {run.provenance['final_step']} steps in {run.provenance['wall_time_s']:.0f} s, "
          f"final accuracy {run.metrics['acc'][-1]:.3f}")


def parse_grid(items: list[str]) -> dict[str, list]:
    """['num_classes=32,64', 'eps=0.1'] -> {'num_classes': [32, 64], 'eps': [0.1]}. Seeds come from --seeds."""
    types = {f.name: f.type for f in dataclasses.fields(Config)}
    grid = {}
    for item in items:
        key, _, values = item.partition("=")
        key = key.replace("-", "_")
        if key not in types or key == "seed" or not values:
            raise ValueError(f"--grid must be FIELD=V1,V2,... with FIELD a config field other than seed (use "
                             f"--seeds), got {item!r}")
        if key in grid:
            raise ValueError(f"--grid must name each field once, got {key} twice")
        parse = field_parser(key)
        try:
            grid[key] = [parse(v) for v in values.split("|" if key == "masks" else ",")]
        except ValueError:
            raise ValueError(f"--grid {key} values must be of type {types[key]}, got {values!r}") from None
    return grid


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> None:
    from .sweeps import setting_name

    base = config_from_args(args)
    grid = parse_grid(args.grid)
    jobs = []
    for values in itertools.product(*grid.values(), args.seeds):
        changes = dict(zip([*grid, "seed"], values))
        cfg = base.replace(**changes).validate()  # every config checked before any run starts
        jobs.append(Job(cfg.to_dict(), str(Path(args.out) / setting_name(changes)), args.threads, args.compile,
                        _command(argv)))
    dirs = [job.out for job in jobs]
    if len(set(dirs)) < len(dirs):
        raise ValueError(f"--grid must not repeat a value: two runs would share {max(dirs, key=dirs.count)}")
    _make_out(args.out)
    _run_all(jobs, args, f"sweep: {len(jobs)} runs into {args.out}")


def _make_out(out: str) -> None:
    """Create the --out directory of a pool command, or refuse it with a message before any run starts."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out must be a directory that can be created, got {out} ({e})") from e
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out must be a directory this user can write in, got {out}")


def _run_all(jobs: list[Job], args: argparse.Namespace, header: str) -> None:
    """Train the jobs, in order, on the executor the flags choose, printing one line per run (runs another
    process is training are skipped, with a line saying so)."""
    from .executors import dask_executor, group_jobs, local_executor, run_jobs, slurm_executor

    if args.executor == "local":
        executor, where = local_executor(args.jobs), f"{args.jobs} local processes at a time"
    elif args.executor == "slurm":
        executor = slurm_executor(args.slurm_folder, args.slurm_partition, args.slurm_minutes, args.threads)
        where = f"SLURM jobs (logs in {args.slurm_folder})"
    elif args.dask_address:
        executor, where = dask_executor(args.dask_address), f"the Dask cluster at {args.dask_address}"
    else:
        raise ValueError("--dask-address must name the Dask scheduler (e.g. tcp://host:8786) with --executor dask")
    work = group_jobs(jobs, args.ensemble)
    if len(work) < len(jobs):
        where += f", compatible runs as ensembles of up to {args.ensemble} ({len(work)} jobs)"
    print(f"{header}, on {where}", flush=True)
    if isinstance(executor, Executor):
        with executor:
            run_jobs(work, executor, args.progress)
    else:
        run_jobs(work, executor, args.progress)


def cmd_sweeps(args: argparse.Namespace, argv: list[str]) -> None:
    from .sweeps import SWEEP_NAMES, plan

    from .trainer import check_arguments

    runs = plan(args.out, tuple(args.names) or SWEEP_NAMES, tuple(args.seeds), args.steps, args.device)
    if args.status:
        print_status([out for _, out in runs])
        return
    check_arguments(runs[0][0], args.threads)  # a device this machine lacks is refused before any run
    jobs = [Job(cfg.to_dict(), str(out), args.threads, args.compile, _command(argv)) for cfg, out in runs]
    _make_out(args.out)
    _run_all(jobs, args, f"sweeps: {len(jobs)} runs into {args.out}")


def print_status(runs: list[Path]) -> None:
    """One line per run directory, in queue order, saying where it stands (runs.run_state), then the count of
    runs in each state: what a resumed regeneration will train next, without training anything."""
    from .runs import RUN_STATES, run_state

    states = [run_state(out) for out in runs]
    names = [f"{out.parent.name}/{out.name}" for out in runs]
    width = max(map(len, names))
    for name, (_, words) in zip(names, states):
        print(f"{name:<{width}}  {words}")
    counts = [(sum(kind == k for kind, _ in states), k) for k in RUN_STATES]
    print(f"{len(runs)} runs: " + ", ".join(f"{n} {k}" for n, k in counts if n))


def cmd_phases(args: argparse.Namespace, argv: list[str]) -> None:
    from .bayes import ceilings
    from .runs import load_run

    run = load_run(args.run)
    reports = run.phases(args.dt, args.threshold)  # before any output: refuses a run without finite metrics
    print(f"{run.path}: {len(run.steps)} evaluations, steps {run.steps[0]}..{run.steps[-1]}")
    ceil = ceilings(run.config, run.instance(), n=50_000)
    print("Bayes ceilings: " + ", ".join(f"{k} {v:.3f}" for k, v in ceil.items()))
    for rule, rep in reports.items():
        tr = ", ".join(f"{a}-{b}" for a, b in rep["transitions"]) or "none"
        print(f"[{rule} rule] transitions (steps): {tr}")
        for ph in rep["phases"]:
            print(f"  phase {ph.index}: steps {ph.start}..{ph.end}, accuracy level {ph.level:.3f}")


def cmd_bench(args: argparse.Namespace, argv: list[str]) -> None:
    from .bench import report

    print(report(args.steps, args.threads, args.compile, args.retain_memory, args.device))


def add_pool_flags(p: argparse.ArgumentParser, out_help: str) -> None:
    """The flags of the commands that train many runs in a pool of processes."""
    p.add_argument("--seeds", type=_seed_list, default=[0], help="comma list of seeds (default 0)")
    p.add_argument("--jobs", type=_int_at_least(1), default=2, help="processes at once (default 2)")
    p.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads per process (default 1)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="train through the compiled step: ~1.5x faster after about a minute of compiling")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where runs train: local processes (default), SLURM (submitit) or a Dask cluster")
    p.add_argument("--slurm-folder", default="slurm-logs", help="submitit's folder for job files and logs")
    p.add_argument("--slurm-partition", default=None, help="SLURM partition (default: the cluster's)")
    p.add_argument("--slurm-minutes", type=_int_at_least(1), default=24 * 60, help="time limit of each job")
    p.add_argument("--dask-address", default=None, help="address of the Dask scheduler (with --executor dask)")
    p.add_argument("--ensemble", type=_int_at_least(1), default=1,
                   help="train up to this many compatible runs as one batched model per job (icl_meta.ensemble, "
                        "eager): pays on a GPU, not on one CPU core (see icl-meta bench); default 1, each run alone")


def build_parser() -> argparse.ArgumentParser:
    from .sweeps import CAP

    p = argparse.ArgumentParser(prog="icl-meta", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one run into a run directory")
    add_config_flags(t)
    t.add_argument("--out", required=True, help="run directory (resumed if it holds this config)")
    t.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads (default 1)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="train through the compiled step: ~1.5x faster after about a minute of compiling")
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
    w.add_argument("--steps", type=_int_at_least(1), default=None,
                   help=f"cap of each run; it stops earlier once it holds 99%% (default {CAP:,})")
    w.add_argument("--device", default="cpu", help='"cpu" (default) or a CUDA device such as "cuda"')
    w.add_argument("--status", action="store_true",
                   help="train nothing: print where each planned run stands (finished, being trained, stopped, "
                        "not started), in queue order")
    add_pool_flags(w, "directory holding one directory per sweep")
    w.set_defaults(func=cmd_sweeps)
    b = sub.add_parser("bench", help="training steps/s and the fraction of matmul throughput reached")
    b.add_argument("--steps", type=_int_at_least(1), default=300)
    b.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads (default 1)")
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="add the compiled path beside the eager one (default on)")
    b.add_argument("--retain-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="let glibc keep freed memory, as training does (default on; off: the allocator's defaults)")
    b.add_argument("--device", default="cpu", help='"cpu" (default) or a CUDA device such as "cuda"')
    b.set_defaults(func=cmd_bench)
    ph = sub.add_parser("phases", help="print phase transitions and plateau levels of a run")
    ph.add_argument("run")
    ph.add_argument("--dt", type=_int_at_least(1), default=100)
    ph.add_argument("--threshold", type=_nonnegative_float, default=0.025)
    ph.set_defaults(func=cmd_phases)
    for cmd in (t, s, w, b, ph):
        cmd.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        args.func(args, argv)
    except Exception as e:
        from .executors import RunsFailed
        from .trainer import DivergedError

        if args.debug or not isinstance(e, (ValueError, OSError, DivergedError, RunsFailed)):
            raise
        print(f"icl-meta {args.cmd}: error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ValueError) else 1)


if __name__ == "__main__":
    main()
