"""Chapter 15's tables and checks: what circuit the default Phase-3 models use (three seeds), and whether the
paper's FCC circuit appears under the control settings.

The control criterion (`analysis.mechanism.fcc_seen`) and the readouts below were fixed before any control run
had finished or been read; the chapter states what each hypothesis predicts for them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..analysis.heads import pattern_thresholds, uniform_metrics
from ..analysis.mechanism import causal_tests, chunk_by_pair, chunk_by_task, fcc_seen, strong_edges
from ..analysis.patching import patched_accuracy, row_edges
from ..analysis.readings import plateau_gaps, run_plateaus
from ..analysis.surgery import cut
from ..probes import attention_maps, attention_weights, task_means
from ..runs import ARTIFACTS, Run, load_run
from ..task import Batch, sample
from ..trainer import accuracy
from .plots import shade_phases
from .report import Check, md_cell

FRESH_SEED = 2025  # the fresh in-distribution sequences every table of the chapter is measured on
# The two controls of the chapter, each the default setting with one change taken from the authors' code.
CONTROLS = {"query_rule-uniform": ("query rule: uniform over all K (authors' code)", {"query_rule": "uniform"}),
            "classifier_init-torch_linear": ("classifier init: nn.Linear default (authors' code)",
                                             {"classifier_init": "torch_linear"})}
CONTROL_SEEDS = 3
# Control (c): the default setting's seed 0 trained on, without early stop, to LONG_STEPS (shipped as
# artifacts/controls/default-long__seed-0 with its log-spaced checkpoints).
LONG_RUN, LONG_STEPS = "default-long", 1_000_000


def fresh_batch(run: Run, n: int) -> Batch:
    """n fresh sequences of the run's training distribution, never seen in training or in its evaluation sets."""
    return sample(run.instance(), run.config, n, torch.Generator().manual_seed(FRESH_SEED))


def _seeds(n: int) -> str:
    return f"{n} seed" + "s" * (n != 1)


def _seed_header(runs: list[Run]) -> str:
    return " | ".join(f"seed {r.config.seed} (step {r.checkpoint_steps[-1]:,})" for r in runs)


def causal_results(runs: list[Run], batches: list[Batch]) -> list[dict[str, float]]:
    """`causal_tests` of each run's last checkpoint on its batch."""
    return [causal_tests(r.model(), b) for r, b in zip(runs, batches)]


def causal_table(runs: list[Run], results: list[dict[str, float]]) -> str:
    """Markdown: accuracy under every intervention of `causal_tests`, one column per run (its last checkpoint)."""
    lines = [f"| intervention | {_seed_header(runs)} |", "|---" * (len(runs) + 1) + "|"]
    lines += [f"| {md_cell(name)} | " + " | ".join(f"{res[name]:.3f}" for res in results) + " |"
              for name in results[0]]
    return "\n".join(lines)


def _span(results: list[dict[str, float]], name: str) -> str:
    values = [r[name] for r in results]
    return f"{min(values):.2f}" if max(values) - min(values) < 0.005 else f"{min(values):.2f}-{max(values):.2f}"


SUMMARY_TESTS = {"none": "none", "cut": "L1 cut label_k → item_k (all k)",
                 "keep": "L1 label rows keep only {item_k, itself}",
                 "v_mean": "L1 values along label_k → item_k: batch_mean",
                 "v_other": "L1 values along label_k → item_k: other",
                 "p_mean": "L1 label rows' pattern: batch_mean", "p_other": "L1 label rows' pattern: other",
                 "p_task": "L1 label rows' pattern: task_mean", "q_labels": "L2 query cut → every label",
                 "q_self": "L2 query cut → itself", "q_items": "L2 query cut → every context item"}


def causal_summary(results: list[dict[str, float]]) -> str:
    """Markdown: the causal tests that carry the chapter's reading, each as its span over the runs."""
    s = {key: _span(results, name) for key, name in SUMMARY_TESTS.items()}
    return (f"Over the {len(results)} seeds, accuracy unedited is {s['none']}. In layer 1, cutting every label's "
            f"edge to its own item gives {s['cut']}, while keeping only that edge and the label itself gives "
            f"{s['keep']}; replacing what flows along the label → item edges by the batch mean gives {s['v_mean']} "
            f"and by another sequence's {s['v_other']}. Replacing the label rows' whole pattern by its batch mean "
            f"gives {s['p_mean']}, by another sequence's {s['p_other']}, by the mean over sequences of the same "
            f"task {s['p_task']}. In layer 2, cutting the query's edges to every label gives {s['q_labels']}, to "
            f"itself {s['q_self']}, to every context item {s['q_items']}.")


def by_task_table(runs: list[Run], batches: list[Batch]) -> str:
    """Markdown: layer 1's Chunk Example and layer 2's Label Attention per task, with their uniform values."""
    u = uniform_metrics(runs[0].config.num_seq)
    rows = {}
    for r, b in zip(runs, batches):
        for metric, values in chunk_by_task(r.model(), b).items():
            for t, v in enumerate(values, start=1):
                rows.setdefault((metric, t), []).append(v)
    lines = [f"| metric | task | uniform | {_seed_header(runs)} |", "|---" * (len(runs) + 3) + "|"]
    for (metric, t), values in rows.items():
        base = u[metric.split(" ", 1)[1]]
        lines.append(f"| {metric} | {t} | {base:.3f} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def by_pair_table(runs: list[Run], batches: list[Batch]) -> str:
    """Markdown: per pair k, label k's mean weight on its own item and how often that item is its top cell."""
    per_run = [chunk_by_pair(r.model(), b) for r, b in zip(runs, batches)]
    N = runs[0].config.num_seq
    lines = [f"| label k | uniform weight | {_seed_header(runs)} |", "|---" * (len(runs) + 2) + "|"]
    for k in range(N):
        cells = [f"{p['weight on own item'][k]:.3f} (top in {p['own item on top'][k]:.0%})" for p in per_run]
        lines.append(f"| {k + 1} | {1 / (2 * k + 2):.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def edges_table(runs: list[Run], batches: list[Batch]) -> str:
    """Markdown: every edge above uniform in any run's batch-mean map, with its weight in each run ("–": not
    above uniform there), layer 1 then layer 2, in the order of the first run's strongest edges."""
    edges = [strong_edges(attention_maps(r.model(), b), r.config.num_seq) for r, b in zip(runs, batches)]
    found = [{e[:3]: e[3] for e in per_run} for per_run in edges]
    uniform = {e[:3]: e[4] for per_run in edges for e in per_run}
    keys = sorted(uniform, key=lambda k: (k[0], -max(f.get(k, 0.0) for f in found)))
    lines = [f"| layer | row → column | uniform | {_seed_header(runs)} |", "|---" * (len(runs) + 3) + "|"]
    for key in keys:
        weights = " | ".join(f"{f[key]:.2f}" if key in f else "–" for f in found)
        lines.append(f"| {key[0]} | {key[1]} → {key[2]} | {uniform[key]:.2f} | {weights} |")
    return "\n".join(lines)


@torch.no_grad()
def task_maps(run: Run, batch: Batch) -> dict[str, list[torch.Tensor]]:
    """{"task t": per-layer [1, S, S] mean attention of head 1 over the batch's sequences of task t}."""
    weights = attention_weights(run.model(), batch)
    T = run.config.num_tasks
    means = [task_means(w[:, :1], batch.task, T) for w in weights]  # per layer [T, 1, S, S]
    return {f"task {t + 1}": [m[t] for m in means] for t in range(T)}


@torch.no_grad()
def along_training(run: Run, batch: Batch) -> dict[str, np.ndarray]:
    """At every checkpoint of run: layer 1's Chunk Example per task [steps, T] and over the batch [steps], and
    the accuracy unedited, with every label_k → item_k edge of layer 1 cut, and with layer 1's label rows
    patched by the batch-mean and by the task-mean pattern."""
    N = run.config.num_seq
    labels = [2 * k + 1 for k in range(N)]
    own = torch.zeros(2 * N + 1, 2 * N + 1, dtype=torch.bool)
    own[labels, [lab - 1 for lab in labels]] = True
    out = {k: [] for k in ("step", "by_task", "batch", "none", "cut", "batch_mean", "task_mean")}
    for step in run.checkpoint_steps:
        model = run.model(step)
        weights = attention_weights(model, batch)
        out["step"].append(step)
        out["by_task"].append(chunk_by_task(model, batch, weights)["L1 chunk_example"])
        out["batch"].append(np.mean(chunk_by_pair(model, batch, weights)["weight on own item"]))
        out["none"].append(accuracy(model, batch))
        out["cut"].append(accuracy(cut(model, 1, own), batch))
        for source in ("batch_mean", "task_mean"):
            out[source].append(patched_accuracy(model, batch, 1, row_edges(labels, N), "pattern", source))
    return {k: np.array(v) for k, v in out.items()}


def control_runs(name: str) -> list[Run]:
    """The shipped runs of one control (artifacts/controls/<name>__seed-<s>), by seed; none while untrained."""
    root = ARTIFACTS / "controls"
    paths = sorted(root.glob(f"{name}__seed-*")) if root.is_dir() else []
    return sorted((load_run(p) for p in paths), key=lambda r: r.config.seed)


def control_readouts(runs: list[Run], n: int) -> str:
    """Markdown: the readouts fixed before the control runs, one row per run."""
    lines = ["| run | last step | accuracy | copy-set accuracy | L1 Chunk Example by task | above uniform in every "
             "task | value patch label→item (batch mean) costs | FCC seen |", "|---" * 8 + "|"]
    u = uniform_metrics(runs[0].config.num_seq)["chunk_example"] if runs else 0.0
    for r in runs:
        b = fresh_batch(r, n)
        model = r.model()
        seen = fcc_seen(model, b)
        by_task = seen["L1 chunk_example by task"]
        N = r.config.num_seq
        own = [(2 * k + 1, 2 * k) for k in range(N)]
        cost = accuracy(model, b) - patched_accuracy(model, b, 1, own, "value", "batch_mean")
        lines.append(f"| seed {r.config.seed} | {r.steps[-1]:,.0f} | {r.metrics['acc'][-1]:.3f} | "
                     f"{r.metrics['acc_copy'][-1]:.3f} | " + ", ".join(f"{v:.2f}" for v in by_task) + " | "
                     f"{'yes' if min(by_task) > u else 'no'} | {cost:+.3f} | {'yes' if seen['seen'] else 'no'} |")
    return "\n".join(lines)


def control_verdicts(n: int) -> dict[str, int | None]:
    """{control: in how many of its seeds the paper's FCC circuit appears (fcc_seen on n fresh sequences at the
    last checkpoint)}, None while fewer than CONTROL_SEEDS seeds are shipped or a run has not reached Phase 3
    (accuracy 0.99)."""
    out: dict[str, int | None] = {}
    for name in CONTROLS:
        runs = control_runs(name)
        if len(runs) < CONTROL_SEEDS or any(r.metrics["acc"][-1] < 0.99 for r in runs):
            out[name] = None
        else:
            out[name] = sum(bool(fcc_seen(r.model(), fresh_batch(r, n))["seen"]) for r in runs)
    return out


def control_checks(n: int, verdicts: dict[str, int | None] | None = None) -> list[Check]:
    """One row per control from control_verdicts(n) (or the verdicts given): open while a control is still
    training, matched when every seed shows the paper's FCC circuit, not matched otherwise."""
    verdicts = control_verdicts(n) if verdicts is None else verdicts
    out = []
    for name, (label, _) in CONTROLS.items():
        what, seen = f"the paper's FCC circuit appears under the control '{label}'", verdicts[name]
        if seen is None:
            shipped = len(control_runs(name))
            out.append(Check(what, "FCC in Phase 3 (Table 1)", f"{shipped} of {CONTROL_SEEDS} seeds trained to "
                             "Phase 3", _seeds(shipped), None, "the control runs are still training"))
            continue
        out.append(Check(what, "FCC in Phase 3 (Table 1)", f"seen in {seen} of {CONTROL_SEEDS} seeds",
                         _seeds(CONTROL_SEEDS), seen == CONTROL_SEEDS,
                         "" if seen == CONTROL_SEEDS else "layer 1's Chunk Example stays below threshold in some task"))
    return out


def long_run() -> Run | None:
    """Control (c) once shipped at LONG_STEPS; None while it trains."""
    runs = control_runs(LONG_RUN)
    return runs[0] if runs and runs[0].steps[-1] >= LONG_STEPS else None


def long_run_check(n: int) -> Check:
    """Control (c): does the paper's FCC circuit appear once the default (seed 0) trains on to LONG_STEPS?
    fcc_seen on n fresh sequences at its last checkpoint; open while the run trains."""
    what = f"the paper's FCC circuit appears under the control 'the default trained on to {LONG_STEPS:,} steps'"
    run = long_run()
    if run is None:
        return Check(what, "FCC in Phase 3 (Table 1)", "not shipped yet", "seed 0", None,
                     "the control run is still training")
    seen = bool(fcc_seen(run.model(), fresh_batch(run, n))["seen"])
    return Check(what, "FCC in Phase 3 (Table 1)", f"{'seen' if seen else 'not seen'} at step {run.steps[-1]:,}",
                 "seed 0", seen, "" if seen else "layer 1's Chunk Example stays below threshold in some task")


def chunk_along(run: Run, batch: Batch) -> str:
    """Markdown: layer 1's Chunk Example per task at every checkpoint of run from step 10^5 on (the question of
    control (c): does it keep rising, in every task, after the early-stop point?), with its uniform value and
    the pattern threshold."""
    N = run.config.num_seq
    steps = [s for s in run.checkpoint_steps if s >= 100_000]
    lines = [f"| step | L1 Chunk Example by task (uniform {uniform_metrics(N)['chunk_example']:.2f}, threshold "
             f"{pattern_thresholds(N)['chunk_example']:.2f}) |", "|---|---|"]
    for step in steps:
        model = run.model(step)
        by_task = chunk_by_task(model, batch, attention_weights(model, batch))["L1 chunk_example"]
        lines.append(f"| {step:,} | " + ", ".join(f"{v:.2f}" for v in by_task) + " |")
    return "\n".join(lines)


def controls_conclusion(verdicts: dict[str, int | None], long_seen: bool | None = None) -> str:
    """Markdown: what the verdicts of controls (a) and (b), and of (c) (long_seen: does the paper's circuit appear
    at its last checkpoint, None while it trains), say about the cause, and what follows for Table 1, Fig. 4 and
    Fig. 6, read by the predictions the chapter wrote down before the runs (a change that brings the paper's
    circuit in every seed explains the difference; one that brings it in none does not)."""
    label = {name: f"**{text.split(':')[0]}**" for name, (text, _) in CONTROLS.items()}
    training = [label[c] for c, v in verdicts.items() if v is None]
    if training:
        return (f"**Not decided yet:** {' and '.join(training)} still training; the verdict and what follows "
                "for Table 1, Fig. 4 and Fig. 6 are written here once (a) and (b) each have three seeds in Phase 3.")
    every = [label[c] for c, v in verdicts.items() if v == CONTROL_SEEDS]
    some = [f"{label[c]} ({v} of {CONTROL_SEEDS} seeds)" for c, v in verdicts.items() if 0 < v < CONTROL_SEEDS]
    if every:
        return (f"**Verdict.** The paper's FCC circuit appears in every seed under {' and '.join(every)}: that "
                "change to our default is enough to make the circuit the paper's. Table 1's FCC row and Fig. 4's "
                "layer-1 Chunk Example are then to be read on those runs, and Fig. 6's random-label accuracy with "
                "them.")
    found = (f"The paper's circuit appears in some seeds only, under {' and '.join(some)}: the change makes it "
             "possible, not certain." if some else "Neither (a) nor (b) brings the paper's FCC circuit: in every seed "
             "of both, layer 1's Chunk Example stays below threshold in some task (the readouts above show how it "
             "splits by task).")
    rest = {None: "what is left is what the last prediction named: how long the authors trained (control (c), the "
                  "table's last row, still training) or the batch their metric averaged.",
            False: f"nor does training on to {LONG_STEPS:,} steps (control (c), the table's last row): at its last "
                   "checkpoint layer 1's Chunk Example is still below threshold in some task, so by the prediction "
                   "written before the run the gate, not the chunk, is where this run's training leads within "
                   f"{LONG_STEPS:,} steps (Figure 15.3 shows how the per-task values moved after the early-stop "
                   "point). What is left is the last prediction's other candidate, the batch the authors' metric "
                   "averaged, or a difference none of the three controls changes.",
            True: f"training on to {LONG_STEPS:,} steps does (control (c), the table's last row): the difference "
                  "is how long the authors trained, past the point where our runs stop once 99% has held."}[long_seen]
    table1 = ("the FCC row stays not matched in our setting; the model uses the FCC's edges, as a gate rather than a "
              "chunk." if long_seen is not True else "the FCC row is not matched at our early stop; the circuit "
              f"appears when the default trains on to {LONG_STEPS:,} steps (seed 0).")
    return (f"**Verdict.** {found} Neither the query rule nor the classifier's initialisation explains, alone, why "
            f"our Phase-3 circuit differs from the paper's; {rest}\n\n"
            f"**What follows.** *Table 1:* {table1} *Fig. 4:* the batch-mean layer-1 Chunk Example does not rise with "
            "Phase 3 in our runs because the gate's per-task weights average out; split by task (Figure 15.2) it "
            "rises in some task and falls in another. *Fig. 6:* the fall of random-label accuracy in Phase 3 "
            "(chapter 6) is consistent with the gate: its weights are computed from (item, label) pairs, and "
            "shuffled pairs give false evidence about the task, where a circuit reading only the label multiset "
            "would be unaffected.")


def default_check(runs: list[Run], batches: list[Batch]) -> Check:
    """The same criterion on the default setting's last checkpoints."""
    found = [fcc_seen(r.model(), b) for r, b in zip(runs, batches)]
    seen = sum(bool(f["seen"]) for f in found)
    by_task = [v for f in found for v in f["L1 chunk_example by task"]]
    why = (f"layer 1's Chunk Example per task spans {min(by_task):.2f}-{max(by_task):.2f} against a threshold of "
           f"{found[0]['thresholds'][0]:.2f}: the label rows weight their own item differently in each task")
    return Check("the paper's FCC circuit appears in the default setting (every task above threshold)",
                 "FCC in Phase 3 (Table 1)", f"seen in {seen} of {len(runs)} seeds", _seeds(len(runs)),
                 seen == len(runs), "" if seen == len(runs) else why)


def plot_along_training(axes, run: Run, along: dict[str, np.ndarray]) -> None:
    """Two panels over seed `run`'s checkpoints, its plateaus shaded: layer 1's Chunk Example per task (and over
    the batch) against its uniform value and threshold; accuracy unedited and under the layer-1 interventions."""
    found = run_plateaus(run)
    keep = along["step"] > 0
    steps = along["step"][keep]
    top, bottom = axes
    for ax in axes:
        shade_phases(ax, [p for p in found if not p.climbing], plateau_gaps(found), label=ax is bottom)
        ax.set_xscale("log")
    for t in range(along["by_task"].shape[1]):
        top.plot(steps, along["by_task"][keep, t], "o-", ms=3, lw=1.2, label=f"task {t + 1}")
    top.plot(steps, along["batch"][keep], "k--", lw=1.5, label="over the batch (the paper's metric)")
    num_seq = run.config.num_seq
    top.axhline(uniform_metrics(num_seq)["chunk_example"], color="grey", ls=":", lw=1, label="uniform")
    top.axhline(pattern_thresholds(num_seq)["chunk_example"], color="grey", ls="-.", lw=1, label="pattern threshold")
    top.set_ylabel("layer-1 Chunk Example")
    top.legend(loc="upper left", ncol=2)
    for key, style, label in (("none", "k-", "unedited"), ("cut", "C3-", "L1: cut label_k → item_k"),
                              ("batch_mean", "C4--", "L1 label rows: batch-mean pattern"),
                              ("task_mean", "C2--", "L1 label rows: task-mean pattern")):
        bottom.plot(steps, along[key][keep], style, marker="o", ms=3, lw=1.2, label=label)
    bottom.set_ylabel("accuracy (fresh sequences)")
    bottom.set_xlabel("training step")
    bottom.set_ylim(0, 1.02)
    bottom.legend(loc="upper left")
