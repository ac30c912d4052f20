"""Which phases a setting shows: each run's plateaus named after the phase they reach, and the phase
maps of the data chapters (paper Fig. 7, 15, 18, 19; Methods §Phase rules). The book's checks of these
readings against the paper are `icl_meta.book.sweep_claims` and `icl_meta.book.architecture_claims`.

A run's learned plateaus come from the plateau rule (`probes.plateaus`, chapter 3), the rule of every
verdict; the robust rule's reading is kept beside it (`Summary.robust`). Each plateau is named after the Bayes
ceiling its accuracy is nearest to, because the ceilings are what the three circuits can reach:
query only -> Phase 1 (NCC), query + label multiset -> Phase 2 (SCC), full pairs -> Phase 3 (FCC).
Where two ceilings are closer than MIN_GAP, the phase rule could not tell their plateaus apart, and
the higher phase wins: at T = 1 (the query alone decides the label) a single jump to the top reads "3".
Adjacent plateaus with the same name are one phase that crept up.
A run still inside a transition when it ends gets its final accuracy named the same way, in
parentheses: "1 → (2)" climbed past Phase 1 and was nearest the SCC ceiling, still rising, at the end.
Every run is read to its end: a sweep setting's full-length run (held 99%, or cut at the 400,000-step
cap) where it is shipped, else its 60,000-step one (`runs.shipped_sweep`), and the shipped default runs
whole; so "not seen" means "not seen by the run's end", which each check's seeds column states.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..bayes import CEILINGS, ceilings
from ..config import Config
from ..probes import Phase, Plateau, log_changes, paper_boundaries, phases, plateaus, robust_boundaries
from ..runs import Run, shipped, shipped_sweep
from ..sweeps import CAP, sweep
from .readings import end_slope, final_level

PHASE_OF_CEILING = dict(zip(CEILINGS, (1, 2, 3)))
# Monte-Carlo samples for the ceilings that name plateaus: fixed, so that every chapter and the intro
# name a plateau the same way (sampling error about 0.003).
N_MC = 20_000
# Config fields that set how long a run is and which seed it draws, not what setting it trains.
RUN_FIELDS = {"seed", "steps", "early_stop_acc", "n_checkpoints"}
# Two ceilings closer than this leave no room for a plateau between them: it is the robust rule's
# smallest transition (probes.robust_boundaries, min_rise), 7 standard errors of a 2048-sequence accuracy.
MIN_GAP = 0.05


def truncated(run: Run, steps: int) -> Run:
    """The run with its metrics cut at `steps` (checkpoints untouched), to compare runs over common steps."""
    rows = run.steps <= steps
    return dataclasses.replace(run, metrics={k: v[rows] for k, v in run.metrics.items()})


def settled(run: Run) -> bool:
    """Whether a run stopped at the full-length cap (sweeps.CAP) without climbing: at the slope of its accuracy
    over its last quarter (readings.end_slope), another CAP steps would add less than MIN_GAP. Such a run is read
    as finished, so a phase it had not reached is not seen; a run cut at the 60,000-step window never is (Methods
    §Choices, a rule of 2026-12-02: only runs still climbing at the cap leave a verdict open)."""
    return bool(run.steps[-1] >= CAP and end_slope(run) * CAP / 1e5 < MIN_GAP)


def name_plateau(level: float, ceil: dict[str, float], start: float | None = None) -> int:
    """The phase (1, 2, 3) whose ceiling is nearest to a plateau level, or the highest phase whose ceiling
    lies within MIN_GAP above that one (ceilings that close name one plateau). With `start`, the untrained
    model's accuracy, a level nearer to it than to every ceiling is 0: a pause before any phase (e.g. a
    bump from chance to 0.1 long before the query-only ceiling), not Phase 1."""
    if start is not None and all(abs(level - start) < abs(level - ceil[c]) for c in CEILINGS):
        return 0
    nearest = min(CEILINGS, key=lambda c: (abs(level - ceil[c]), -PHASE_OF_CEILING[c]))
    return max(PHASE_OF_CEILING[c] for c in CEILINGS if 0 <= ceil[c] - ceil[nearest] < MIN_GAP)


@dataclass(frozen=True)
class Summary:
    """What one run shows by one phase rule: its climbs (the plateau rule) or transitions
    (the robust rule), its learned plateaus named after the phase they reach, and the phases seen; `robust`
    holds the robust rule's reading beside the plateau rule's (Methods §Phase rules)."""

    run: Run
    ceilings: dict[str, float]
    rule: str  # "plateau" (every verdict) or "robust" (shown beside it)
    transitions: list[tuple[int, int]]  # the rises: climbs between plateaus, or the robust rule's transitions
    plateaus: list[Phase]  # learned plateaus, `index` set to the phase each is named as
    paper_transitions: int  # number of transitions by the paper's fixed-Δt rule
    levels: dict[int, float]  # phase name -> plateau level (the last plateau of that name)
    final_acc: float
    rising: int | None  # name of the final accuracy if the run was still climbing at the end
    robust: "Summary | None" = None

    @property
    def reached_top(self) -> bool:
        """The run ended within MIN_GAP of the full-pairs ceiling: no further phase can come."""
        return self.final_acc >= self.ceilings["full_pairs"] - MIN_GAP

    @property
    def finished(self) -> bool:
        """No later phase can come after the run's end: it reached the top, or ended flat at the cap (`settled`).
        A phase it has not shown by then is not seen; a run not finished leaves such a verdict open."""
        return self.reached_top or settled(self.run)

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
        """seen_text, and the robust rule's where it differs."""
        if self.robust is None or self.robust.seen_text == self.seen_text:
            return self.seen_text
        return f"{self.seen_text} [robust: {self.robust.seen_text}]"


def climbs(found: list[Plateau], steps: np.ndarray) -> list[tuple[int, int]]:
    """The rises of a run by the plateau rule (`probes.plateaus` output `found`, index 0 on every plateau
    before the first phase): from the first evaluation to the first plateau when the untrained stretch is
    not one, between consecutive plateaus unless both precede the first phase (a plateau and a higher one
    that abuts it still make a rise), and into the end of a run that ended climbing."""
    rises = [(a.end, b.end if b.climbing else max(a.end, b.start)) for a, b in zip(found, found[1:])
             if a.index or b.index]
    if found and found[0].index >= 1:
        first = int(steps[steps > 0][0])
        rises.insert(0, (first, max(first, found[0].start)))
    return rises


def summarise(run: Run, ceil: dict[str, float] | None = None, n_mc: int = N_MC, rule: str = "plateau") -> Summary:
    """The run's phases to its end (ceilings of its own instance unless given; `truncated` reads fewer steps) by
    the plateau rule, with the robust rule's reading beside it in `robust` (rule "robust": that reading alone)."""
    if rule not in ("plateau", "robust"):
        raise ValueError(f"rule must be 'plateau' or 'robust', got {rule!r}")
    ceil = ceilings(run.config, run.instance(), n=n_mc) if ceil is None else ceil
    steps, acc = run.steps, run.metrics["acc"]
    start = float(acc[0])  # the untrained model's accuracy: plateaus nearer to it are no phase (name_plateau)

    def named(found: list[Phase]) -> list[Phase]:
        return [p if p.index == 0 or getattr(p, "climbing", False) else
                dataclasses.replace(p, index=name_plateau(p.level, ceil, start)) for p in found]

    if rule == "plateau":
        found = named(plateaus(steps, acc))
        rises, ended_climbing = climbs(found, steps), found[-1].climbing
    else:
        rises = robust_boundaries(steps, acc)
        found = named(phases(steps, acc, rises))
        ended_climbing = bool(rises) and rises[-1][1] >= steps[-1] * 0.99  # the last rise runs into the end
    learned = [p for p in found if p.index >= 1 and not getattr(p, "climbing", False)]
    levels: dict[int, float] = {}
    for p in learned:
        levels.pop(p.index, None)  # a repeated name moves to the end, where the plateau settled
        levels[p.index] = p.level
    final = final_level(run, frac=0.05)
    rising = None
    if ended_climbing:
        rising = name_plateau(final, ceil, start) or None
        if rising in levels and rising == list(levels)[-1]:
            rising = None  # still creeping up within the phase it is in
    robust = summarise(run, ceil, n_mc, rule="robust") if rule == "plateau" else None
    return Summary(run, ceil, rule, rises, learned, len(paper_boundaries(steps, acc)), levels, final, rising, robust)


def setting_label(cfg: Config, fields: tuple[str, ...]) -> str:
    """'T=2, N=8' style label of the given fields."""
    short = {"num_tasks": "T", "num_classes": "K", "num_seq": "N", "eps": "ε", "alpha": "α", "beta": "β",
             "burstiness": "B", "p_bursty": "p_B", "n_heads": "H", "n_layers": "layers"}
    return ", ".join(f"{short.get(f, f)}={getattr(cfg, f)}" for f in fields)


def changed_label(cfg: Config) -> str:
    """The fields a config changes from the defaults, run length and seed aside ('default' if none)."""
    default = Config()
    changed = [f for f in cfg.to_dict() if f not in RUN_FIELDS and getattr(cfg, f) != getattr(default, f)]
    return setting_label(cfg, tuple(changed)) if changed else "default"


def max_jump(run: Run) -> float:
    """The largest rise of the log-smoothed accuracy between neighbouring points of the robust rule's
    grid (10 a decade): how abrupt the steepest transition looks on a log axis."""
    return float(log_changes(run.steps, run.metrics["acc"]).max())


def phase2_gap(ceil: dict[str, float]) -> float:
    """How far the SCC ceiling stands from its neighbours (ceil: bayes.ceilings of a setting):
    min(label multiset - query only, full pairs - label multiset). Below MIN_GAP the ceilings predict
    Phase 2 cannot show as a plateau of its own."""
    return min(ceil["label_multiset"] - ceil["query_only"], ceil["full_pairs"] - ceil["label_multiset"])


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
    predicted = np.array([[phase2_gap(ceilings(default.replace(**{x: xv, y: yv}), n=n_mc)) >= MIN_GAP for xv in xs]
                          for yv in ys])
    return xs, ys, cells, predicted


def sweep_summaries(names: tuple[str, ...], n_mc: int = N_MC) -> list[Summary]:
    """Summaries of the shipped runs of the named sweeps (`runs.shipped_sweep`: full-length where shipped) plus
    the shipped default runs (the setting every sweep varies away from), each read to its end, sorted by setting
    then seed."""
    def key(r: Run) -> tuple:
        return sorted((k, v) for k, v in r.config.to_dict().items() if k not in RUN_FIELDS), r.config.seed

    runs = [r for name in names for r in shipped_sweep(name)] + shipped("default")
    return [summarise(r, n_mc=n_mc) for r in sorted(runs, key=key)]


def varied(summaries: list[Summary], fields: tuple[str, ...]) -> list[Summary]:
    """The summaries whose config differs from the default in no field but `fields` (and seed/length)."""
    default = Config().to_dict()
    ignore = set(fields) | RUN_FIELDS
    return [s for s in summaries if all(v == default[k] for k, v in s.run.config.to_dict().items() if k not in ignore)]
