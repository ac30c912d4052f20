"""Which phases a setting shows: the phase table and the phase maps of the data chapters (SPEC Fig 7,
15, 18, 19); the architecture chapters read their runs the same way (`icl_meta.architecture`).

A run's learned plateaus come from the robust phase rule (chapter 3). Each is named after the Bayes
ceiling its accuracy is nearest to, because the ceilings are what the three circuits can reach:
query only -> Phase 1 (NCC), query + label multiset -> Phase 2 (SCC), full pairs -> Phase 3 (FCC).
Where two ceilings are closer than MIN_GAP, the phase rule could not tell their plateaus apart, and
the higher phase wins: at T = 1 (the query alone decides the label) a single jump to the top reads "3". Adjacent plateaus with the same name are one phase that crept up.
A run still inside a transition when the window ends gets its final accuracy named the same way, in
parentheses: "1 → (2)" climbed past Phase 1 and was nearest the SCC ceiling, still rising, at the end.
Every run is read over the same window of steps, `sweeps.WINDOW`, longer runs (the shipped default
ones) truncated to it, so "not seen" means "not seen within the window".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .bayes import CEILINGS, ceilings
from .config import Config
from .probes import Phase, log_changes, paper_boundaries, phases, robust_boundaries
from .report import Check
from .runs import Run, shipped
from .sweeps import WINDOW, setting_name, sweep

# The sweeps each data chapter reads (10: tasks, classes, noise, Zipf; 11: burstiness, context length),
# and the phase maps of chapter 12 with their axes.
DATA_CHAPTERS = (("tasks", "classes", "noise", "class_zipf", "task_zipf"), ("burstiness", "context"))
MAPS = {"map_classes_noise": "(K, ε)", "map_tasks_context": "(T, N)"}
PHASE_OF_CEILING = dict(zip(CEILINGS, (1, 2, 3)))
# Monte-Carlo samples for the ceilings that name plateaus: fixed, so that every chapter and the intro
# name a plateau the same way (sampling error about 0.003).
N_MC = 20_000
# Config fields that set how long a run is and which seed it draws, not what setting it trains.
RUN_FIELDS = {"seed", "steps", "early_stop_acc", "n_checkpoints"}
# Two ceilings closer than this leave no room for a plateau between them: it is the robust rule's
# smallest transition (probes.robust_boundaries, min_rise), 7 standard errors of a 2048-sequence accuracy.
MIN_GAP = 0.05


def truncated(run: Run, steps: int = WINDOW) -> Run:
    """The run with its metrics cut at `steps` (checkpoints untouched), to compare runs over one window."""
    rows = run.steps <= steps
    return dataclasses.replace(run, metrics={k: v[rows] for k, v in run.metrics.items()})


def name_plateau(level: float, ceil: dict[str, float]) -> int:
    """The phase (1, 2, 3) whose ceiling is nearest to a plateau level, or the highest phase whose ceiling
    lies within MIN_GAP above that one (ceilings that close name one plateau)."""
    nearest = min(CEILINGS, key=lambda c: (abs(level - ceil[c]), -PHASE_OF_CEILING[c]))
    return max(PHASE_OF_CEILING[c] for c in CEILINGS if 0 <= ceil[c] - ceil[nearest] < MIN_GAP)


@dataclass(frozen=True)
class Summary:
    """What one run shows over the window by one variant of the robust rule: transitions, plateaus and
    the phases they are named as; `strict` holds the same by the strict variant (no merging)."""

    run: Run
    ceilings: dict[str, float]
    transitions: list[tuple[int, int]]
    paper_transitions: int  # number of transitions by the paper's fixed-Δt rule
    levels: dict[int, float]  # phase name -> plateau level (the last plateau of that name)
    final_acc: float
    rising: int | None  # name of the final accuracy if a transition was still under way at the end
    strict: "Summary | None" = None

    @property
    def seen(self) -> tuple[int, ...]:
        """Phases seen, the one being climbed into at the end included."""
        return tuple(self.levels) + ((self.rising,) if self.rising is not None else ())

    @property
    def seen_text(self) -> str:
        text = [str(k) for k in self.levels] + ([f"({self.rising})"] if self.rising is not None else [])
        return " → ".join(text) or "none"

    @property
    def both_text(self) -> str:
        """seen_text, and the strict variant's where it differs."""
        if self.strict is None or self.strict.seen_text == self.seen_text:
            return self.seen_text
        return f"{self.seen_text} [strict: {self.strict.seen_text}]"


def summarise(run: Run, ceil: dict[str, float] | None = None, window: int = WINDOW, n_mc: int = N_MC,
              merge_gap: int = 1) -> Summary:
    """The run's phases over the first `window` steps (ceilings of its own instance unless given), by
    the robust rule with merge_gap (default: chapter 3's), and by its strict variant (merge_gap 0: two
    rises one grid point apart stay two, so a plateau as short as a tenth of a decade counts)."""
    run = truncated(run, window)
    ceil = ceilings(run.config, run.instance(), n=n_mc) if ceil is None else ceil
    steps, acc = run.steps, run.metrics["acc"]
    tr = robust_boundaries(steps, acc, merge_gap=merge_gap)
    levels: dict[int, float] = {}
    for ph in phases(steps, acc, tr):
        if ph.index >= 1:
            name = name_plateau(ph.level, ceil)
            levels.pop(name, None)  # a repeated name moves to the end, where the plateau settled
            levels[name] = ph.level
    final = float(np.median(acc[-max(len(acc) // 20, 1):]))
    rising = None
    if tr and tr[-1][1] >= steps[-1] * 0.99:  # the last transition runs into the window's end
        rising = name_plateau(final, ceil)
        if rising in levels and rising == list(levels)[-1]:
            rising = None  # still creeping up within the phase it is in
    strict = summarise(run, ceil, window, merge_gap=0) if merge_gap else None
    return Summary(run, ceil, tr, len(paper_boundaries(steps, acc)), levels, final, rising, strict)


def named_phases(s: Summary) -> list[Phase]:
    """The run's learned plateaus (robust rule) with `index` set to the phase each is named as, for
    shading a run whose plateaus are not the paper's first, second and third (plots.shade_phases)."""
    learned = [ph for ph in phases(s.run.steps, s.run.metrics["acc"], s.transitions) if ph.index >= 1]
    return [dataclasses.replace(ph, index=name_plateau(ph.level, s.ceilings)) for ph in learned]


def setting_label(cfg: Config, fields: tuple[str, ...]) -> str:
    """'T=2, N=8' style label of the given fields."""
    short = {"num_tasks": "T", "num_classes": "K", "num_seq": "N", "eps": "ε", "alpha": "α", "beta": "β",
             "burstiness": "B", "p_bursty": "p_B", "n_heads": "H", "n_layers": "layers"}
    return ", ".join(f"{short.get(f, f)}={getattr(cfg, f)}" for f in fields)


# The paper's reading of each sweep setting (SPEC §6) as a claim about the phases seen, and its words.
# ("sequence", seq): exactly these phases; ("skips", ks): none of ks is a plateau, a later phase is
# reached; ("skips any", ks): at least one of ks is missing, a later phase is reached.
THREE = ("sequence", (1, 2, 3))
PAPER_SEEN = {
    "tasks": {"num_tasks-1": (("sequence", (3,)), "single jump"), "num_tasks-2": (THREE, "three phases"),
              "num_tasks-3": (THREE, "three phases"), "num_tasks-4": (THREE, "three phases"),
              "num_tasks-6": (THREE, "jumps persist"), "num_tasks-12": (THREE, "jumps persist, later")},
    "classes": {"num_classes-32": (("skips", (1,)), "small K skips Phase 1"),
                "num_classes-1024": (("skips", (2,)), "large K skips Phase 2")},
    "noise": {"eps-0.5": (("skips", (2,)), "larger ε skips Phase 2"),
              "eps-1.0": (("skips", (1, 2)), "ε = 1 skips Phases 1 and 2")},
    "class_zipf": {"alpha-1.0": (("skips any", (1, 2)), "larger α skips Phase 1 or 2")},
    "burstiness": {"burstiness-2__p_bursty-0.25": (("skips", (1,)), "larger B skips Phase 1")},
    "context": {"num_seq-2": (THREE, "phases"), "num_seq-8": (THREE, "phases up to N = 8"),
                "num_seq-16": (("sequence", (3,)), "single phase at N ≥ 16")},
}
TOP_CEILING = {k: c for c, k in PHASE_OF_CEILING.items()}


def changed_label(cfg: Config) -> str:
    """The fields a config changes from the defaults, run length and seed aside ('default' if none)."""
    default = Config()
    changed = [f for f in cfg.to_dict() if f not in RUN_FIELDS and getattr(cfg, f) != getattr(default, f)]
    return setting_label(cfg, tuple(changed)) if changed else "default"


def phase_table(summaries: list[Summary], name: str | None = None, words: dict[str, str] | None = None) -> str:
    """Markdown: setting -> phases seen -> Phase-1 and Phase-2 plateaus against their Bayes ceilings.
    For one sweep (name), settings are labelled by its fields, next to what the paper reports for them
    (`words` by setting name, default: the words of PAPER_SEEN); without a name, by what they change
    from the defaults."""
    fields = sweep(name).fields if name else None
    if words is None:
        words = {k: w for k, (_, w) in PAPER_SEEN.get(name, {}).items()}
    lines = ["| setting | seed | phases seen | strict rule | transitions (robust / paper rule) | Phase-1 plateau / "
             "ceiling | Phase-2 plateau / ceiling | accuracy at the end | paper |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        cfg = s.run.config
        cells = []
        for k, c in ((1, "query_only"), (2, "label_multiset")):
            cells.append(f"{s.levels[k]:.3f} / {s.ceilings[c]:.3f}" if k in s.levels else f"– / {s.ceilings[c]:.3f}")
        label = setting_label(cfg, fields) if fields else changed_label(cfg)
        paper = words.get(setting_name({f: getattr(cfg, f) for f in fields}), "") if fields else ""
        strict = s.strict.seen_text if s.strict else "–"
        lines.append(f"| {label} | {cfg.seed} | {s.seen_text} | {strict} | {len(s.transitions)} / {s.paper_transitions} "
                     f"| {cells[0]} | {cells[1]} | {s.final_acc:.3f} | {paper} |")
    return "\n".join(lines)


def judge(s: Summary, claim: tuple[str, tuple[int, ...]]) -> bool | None:
    """One run against a PAPER_SEEN claim: True, False, or None when the window ended too early to tell.
    Skips are judged on plateaus (a phase only passed through while climbing is not a plateau)."""
    kind, ks = claim
    if kind == "sequence":
        if s.seen == ks:
            return True
        early = s.seen == ks[:len(s.seen)] and s.final_acc < s.ceilings[TOP_CEILING[ks[-1]]] - MIN_GAP
        return None if early else False
    beyond = bool(s.seen) and max(s.seen) > max(ks)
    present = [k in s.levels for k in ks]
    missing = not any(present) if kind == "skips" else not all(present)
    if not missing:
        return False
    return True if beyond else None


def paper_check(what: str, summaries: list[Summary], claim: tuple[str, tuple[int, ...]], paper: str) -> Check:
    """A PAPER_SEEN claim over every seed of a setting, by the robust rule and its strict variant:
    matched if both match for every seed, not matched if both fail for some seed, else not comparable."""
    robust = [judge(s, claim) for s in summaries]
    strict = [judge(s.strict or s, claim) for s in summaries]
    ours = "; ".join(s.both_text for s in summaries)
    if robust != strict:
        ours += " (the two rules disagree)"
    elif None in robust and False not in robust:
        ours += " (window ended before it could tell)"
    verdicts = [r if r == st else None for r, st in zip(robust, strict)]
    return Check(what, paper, ours, seeds_text(len(summaries)), over_seeds(verdicts))


def over_seeds(verdicts: list[bool | None]) -> bool | None:
    """One verdict from the seeds': not matched if any seed fails, else not comparable if any seed
    gives no verdict, else matched."""
    return False if False in verdicts else (None if None in verdicts else True)


def seeds_text(n: int, window: bool = True) -> str:
    """'3 seeds, 60,000 steps': the seeds column of a sweep check."""
    return f"{n} seed{'s' * (n > 1)}" + (f", {WINDOW:,} steps" if window else "")


def sweep_checks(name: str, summaries: list[Summary]) -> list[Check]:
    """One check per setting of a sweep that the paper reads (PAPER_SEEN), over the setting's seeds."""
    fields = sweep(name).fields
    checks = []
    for key, (claim, paper) in PAPER_SEEN.get(name, {}).items():
        same = [s for s in summaries if setting_name({f: getattr(s.run.config, f) for f in fields}) == key]
        if same:
            checks.append(paper_check(setting_label(same[0].run.config, fields), same, claim, paper))
    return checks


def first_plateau_checks(summaries: list[Summary]) -> list[Check]:
    """Paper Fig. 7a, 18: the first plateau sits near 1/T. Ours: its level by the robust rule and the
    strict variant, next to the query-only ceiling, which is what a memorised query can reach (a
    little above 1/T: tasks can share a class's label). Not comparable where the rules disagree."""
    def fmt(v):
        return "none" if v is None else f"{v:.3f}"

    checks = []
    for T in sorted({s.run.config.num_tasks for s in summaries if s.run.config.num_tasks > 1}):
        same = [s for s in summaries if s.run.config.num_tasks == T]
        robust = [s.levels.get(1) for s in same]
        strict = [(s.strict or s).levels.get(1) for s in same]
        ours = ", ".join(fmt(r) if fmt(r) == fmt(st) else f"{fmt(r)} [strict: {fmt(st)}]" for r, st in zip(robust, strict))
        ceil = np.mean([s.ceilings["query_only"] for s in same])
        near = [[v is not None and abs(v - 1 / T) <= 0.05 for v in vals] for vals in (robust, strict)]
        ok = all(near[0]) if near[0] == near[1] else None
        checks.append(Check(f"T={T}: Phase-1 plateau", f"≈ 1/T = {1 / T:.3f}", f"{ours} (query-only ceiling {ceil:.3f})",
                            seeds_text(len(same), window=False), ok))
    return checks


def task_order_check(run: Run, level: float = 0.9) -> Check:
    """Paper Fig. 7e: with Zipf-distributed tasks the most frequent one (task 0) is learned first.
    Ours: the step at which each task's accuracy first reaches `level`."""
    from .claims import steps_to

    firsts = [steps_to(run, level, f"acc_task{t}") for t in range(run.config.num_tasks)]
    ours = ", ".join(f"task {t}: {'never' if v is None else f'{v:,}'}" for t, v in enumerate(firsts))
    done = [v for v in firsts[1:] if v is not None]
    ok = firsts[0] is not None and all(firsts[0] < v for v in done)
    return Check(f"β={run.config.beta}: first task to reach {level:.0%}", "the most frequent (task 0)", ours,
                 f"seed {run.config.seed}, {WINDOW:,} steps", ok)


def max_jump(run: Run) -> float:
    """The largest rise of the log-smoothed accuracy between neighbouring points of the robust rule's
    grid (10 a decade): how abrupt the steepest transition looks on a log axis."""
    return float(log_changes(run.steps, run.metrics["acc"]).max())


def smoothing_check(summaries: list[Summary], field: str) -> Check:
    """Paper Fig. 15: a larger p_B smooths the curve. Ours: the steepest log-axis jump (max_jump) of
    each setting, seeds averaged, must not grow with the field's value."""
    values = sorted({getattr(s.run.config, field) for s in summaries})
    jumps = [np.mean([max_jump(s.run) for s in summaries if getattr(s.run.config, field) == v]) for v in values]
    ours = ", ".join(f"{v}: {j:.3f}" for v, j in zip(values, jumps))
    ok = bool(np.all(np.diff(jumps) <= 0.01)) if len(values) > 1 else None
    return Check(f"steepest rise in a tenth of a decade as {field} grows", "smaller (smoother)", ours,
                 f"{len(summaries)} runs", ok)


def data_checks(names: tuple[str, ...], summaries: list[Summary]) -> list[Check]:
    """Every check of the named 1-D sweeps (their chapters' "Did it reproduce?" rows)."""
    by_sweep = {name: varied(summaries, sweep(name).fields) for name in names}
    checks = [c for name in names for c in sweep_checks(name, by_sweep[name])]
    if "tasks" in names:
        checks += first_plateau_checks(by_sweep["tasks"])
    if "task_zipf" in names:
        checks += [task_order_check(s.run) for s in by_sweep["task_zipf"] if s.run.config.beta > 0]
    if "burstiness" in names:
        checks.append(smoothing_check([s for s in by_sweep["burstiness"] if s.run.config.burstiness == 1], "p_bursty"))
    return checks


def phase2_gap(cfg: Config, n_mc: int = N_MC) -> float:
    """How far the SCC ceiling stands from its neighbours: min(label multiset - query only, full pairs -
    label multiset). Below MIN_GAP the ceilings predict Phase 2 cannot show as a plateau of its own."""
    c = ceilings(cfg, n=n_mc)
    return min(c["label_multiset"] - c["query_only"], c["full_pairs"] - c["label_multiset"])


def phase_map(name: str, summaries: list[Summary], n_mc: int = N_MC) -> tuple[list, list, list, np.ndarray]:
    """The 2-D phase map of a map sweep: axis values (the sweep's values and the default), cells[y][x]
    holding the summaries of every seed run at that setting (on-axis ones come from the 1-D sweeps and
    the default runs), and predicted[y, x]: whether the Bayes ceilings leave Phase 2 a plateau of its
    own there (phase2_gap >= MIN_GAP, on a fresh instance of the setting)."""
    x, y = sweep(name).fields
    default = Config()
    xs = sorted({c[x] for c in sweep(name).settings} | {getattr(default, x)})
    ys = sorted({c[y] for c in sweep(name).settings} | {getattr(default, y)})
    mine = varied(summaries, (x, y))
    cells = [[[s for s in mine if getattr(s.run.config, x) == xv and getattr(s.run.config, y) == yv] for xv in xs]
             for yv in ys]
    predicted = np.array([[phase2_gap(default.replace(**{x: xv, y: yv}), n_mc) >= MIN_GAP for xv in xs] for yv in ys])
    return xs, ys, cells, predicted


def map_checks(label: str, cells: list[list[list[Summary]]], predicted: np.ndarray) -> list[Check]:
    """Ours, not the paper's: does the ceilings' prediction say where Phase 2 shows? Judged on the runs
    that reached Phase 3 within the window (only there is a missing Phase 2 a skip, not a wait)."""
    agree, decided = 0, 0
    for j, row in enumerate(cells):
        for i, cell in enumerate(row):
            for s in cell:
                if 3 in s.seen:
                    decided += 1
                    agree += (2 in s.seen) == bool(predicted[j, i])
    return [Check(f"{label}: Phase 2 seen exactly where the ceilings leave it room", "– (not in the paper)",
                  f"{agree} of {decided} runs that reached Phase 3", "all seeds", None if not decided else agree == decided)]


def sweep_summaries(names: tuple[str, ...], n_mc: int = N_MC, window: int = WINDOW) -> list[Summary]:
    """Summaries of the shipped runs of the named sweeps plus the shipped default runs (the setting every
    sweep varies away from), sorted by setting then seed."""
    runs = [r for name in names for r in shipped(name)] + shipped("default")
    key = lambda r: (sorted((k, v) for k, v in r.config.to_dict().items() if k not in RUN_FIELDS), r.config.seed)
    return [summarise(r, n_mc=n_mc, window=window) for r in sorted(runs, key=key)]


def varied(summaries: list[Summary], fields: tuple[str, ...]) -> list[Summary]:
    """The summaries whose config differs from the default in no field but `fields` (and seed/length)."""
    default = Config().to_dict()
    ignore = set(fields) | RUN_FIELDS
    return [s for s in summaries if all(v == default[k] for k, v in s.run.config.to_dict().items() if k not in ignore)]
