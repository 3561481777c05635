"""Figure `early_stopping`: does `kphases.PhaseMonitor` pick a good pre-training checkpoint for transfer?

The first paper's practical claim is that pre-training for transfer should stop well before the
source task's optimum. `kphases.PhaseMonitor` turns that into a rule that needs no target labels
(it decodes source images from the penultimate layer and stops once the decrease and the rise
after it are both confident, `kphases.monitor`). This figure tests it on every transfer setting of
the `transfer` figure: colour dominance on the CIFAR-10 reference runs (a pixel-linear target: the
argmax of the channel sums, close to what the reconstruction loss itself measures) and the semantic
targets, whose labels are classes of images the network never saw: the dataset switches (MNIST ->
Fashion-MNIST and back, VGG-8 and ResNet-10 x1/8) and the CIFAR-10 class split (pre-trained on
classes 0-4, transferred to 5-9; `reproduce.transfer.class_split_runs`), 3 seeds each at full. It
compares the target test accuracy of the linear transfer head on the features of four checkpoints
of the same run:

- monitor: the checkpoint the monitor keeps (the final one where it never decides), replayed on the stored snapshots in step order
  (`kphases.monitor.replay_run`: each decision sees only snapshots up to its step, exactly as a
  live monitor on the doubling schedule would);
- oracle: the best checkpoint in hindsight (chosen with the target test labels: an upper bound);
- final: the last checkpoint;
- validation loss: the checkpoint with the lowest source classifier loss, i.e. standard early
  stopping on the source task (the source test split serves as its validation split here, which
  favours this baseline, if anything).

Plus the fraction of pre-training compute saved had training stopped at the monitor's decision
(1 - decision step / final step). Intervals (95%): over seeds (Student t) where a setting has
several; for a single seed (smoke, quick), a binomial interval of the accuracy difference over the
target test images (unpaired, so conservative). The reading (`reading`) per target: "helps" where
the interval of monitor - final lies above 0; "does not help" where the monitor never decided or the
interval's upper end is below a margin of one accuracy point (`EQUIVALENCE_MARGIN`), "equivalent"
only where the whole interval lies inside +-margin; "undecided" otherwise: an interval that includes
0 and reaches the margin does not show the two checkpoints equal, so it is never read as "no
difference". The summary section says it per target in words, with the numbers computed from the
CSV's rows (`verdict_text`).

    python -m reproduce.early_stopping [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: shares every run and measurement with `transfer`; the monitor replay loads each snapshot
up to its decision and fits one ridge decoder on the monitor's subsets (`MonitorSettings.train_subset`
/ `test_subset`); `--dry-run` prices every scheduled snapshot (`driver_seconds`). The CSV and summary.md hold the numbers; the README's "When to stop pre-training" quotes them."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import dataclasses
import hashlib
import json
import math
import re

import pandas as pd
import scipy.stats

from kphases.data import load_dataset
from kphases.measurement import run_model
from kphases.monitor import MonitorRule, MonitorSettings, replay_run
from kphases.training import make_plan
from reproduce import reference_run as reference
from reproduce.common import Options, Work, main_runs, perform, replicas, run_figure, save_figure
from reproduce.plan import split_sizes
from reproduce.plotting import grid
from reproduce.transfer import class_split_runs

NAME = "early_stopping"
MONITOR = MonitorSettings()
CHECKPOINTS = ("monitor", "oracle", "final", "validation_loss")
EQUIVALENCE_MARGIN = 0.01
"""One point of target test accuracy: a difference smaller than this would not make anyone prefer one checkpoint to another,
so an interval inside +-margin reads as equivalent, and one whose upper end is below it as "does not help"."""
HELPS, DOES_NOT_HELP, UNDECIDED = "helps", "does not help", "undecided"


def work(options: Options) -> list[Work]:
    """The same runs and measurements as `transfer` (nothing new to train or measure)."""
    return [Work(planned, (planned.measure,)) for planned in _settings(options)]


def _settings(options: Options):
    """Every main run and its further seeds (`replicas`), the class-split runs' seeds, then the reference run's seeds."""
    main = [run for planned in main_runs(options) for run in (planned, *replicas(planned, options))]
    return main + class_split_runs(options) + reference.seeded_runs(options)


def driver_seconds(options: Options, calibration) -> float:
    """The monitor's replays on this machine (`reproduce.costs`): per run, its network built and, at every
    scheduled snapshot, the snapshot loaded, the features of the monitor's subsets extracted and its ridge
    decoder fitted. A replay stops at its decision, which no estimate knows beforehand, so it measures fewer
    snapshots than are priced here; the figure's reading of the shared runs is not priced."""
    seconds = 0.0
    for planned in _settings(options):
        config = planned.config
        train, test = split_sizes(config.data, options)
        plan = make_plan(config, train)
        measured = [step for step in MONITOR.scheduled_steps(plan.last_iteration) if step in plan.snapshot_steps]
        key = calibration.network(config.model, config.data, config.training.batch_size)
        build, load = calibration.run_setup(key)
        cell = calibration.ridge_cell(key, MONITOR.layer or "penultimate", min(train, MONITOR.train_subset), min(test, MONITOR.test_subset))
        seconds += build + len(measured) * (load + cell)
    return seconds


def _monitor_directory(run) -> "os.PathLike":
    key = hashlib.sha256(json.dumps(dataclasses.asdict(MONITOR), sort_keys=True).encode()).hexdigest()[:12]
    return run.directory / "monitor_replay" / key


def _replay(run, planned, options: Options):
    """The monitor's decision on this run (replayed once, then read from the run directory)."""
    directory = _monitor_directory(run)
    if options.plot_only:
        rule = MonitorRule.load(directory, MONITOR)
        if not rule.steps:
            raise ValueError(
                f"--plot-only: the monitor has not been replayed on {planned.label} ({run.directory}); run without --plot-only"
            )
        return rule
    dataset = load_dataset(planned.config.data, options.data_dir)
    model, _ = run_model(run, dataset)
    return replay_run(run, model, dataset.x_train, dataset.x_test, MONITOR, directory=directory)


def compute(options: Options) -> pd.DataFrame:
    rows = []
    for planned in _settings(options):
        run, frame = perform(Work(planned, (planned.measure,)), options)
        transfer = frame[(frame["metric"] == "transfer_accuracy") & (frame["split"] == "test") & (frame["bn_stats"] == "batch")]
        if transfer.empty:
            continue
        rule = _replay(run, planned, options)
        metrics = run.metrics()
        source_loss = metrics[(metrics["metric"] == "classifier_loss") & (metrics["split"] == "test")].set_index("step")["value"]
        for instrument, group in transfer.groupby("instrument", sort=False):
            accuracy = group.drop_duplicates("step", keep="last").set_index("step")["value"].sort_index()
            test_images = _test_size(group["data"].iloc[0])
            if instrument == "color_dominance":
                setting = "colour dominance / " + reference.reference_run(options).label
            else:
                setting = f"{planned.label.split(' / seed ')[0]} -> {str(instrument).split(':')[-1]}"
            final = int(accuracy.index[-1])
            chosen = {
                # undecided: a user of the monitor trains to the end and keeps the final checkpoint
                "monitor": rule.decision.chosen_step if rule.decision is not None else final,
                "oracle": int(accuracy.idxmax()),
                "final": final,
                "validation_loss": int(source_loss.reindex(accuracy.index).idxmin()),
            }
            for checkpoint, step in chosen.items():
                rows.append(
                    {
                        "setting": setting,
                        "label": planned.label,
                        "run": run.name,
                        "seed": planned.config.training.seed,
                        "checkpoint": checkpoint,
                        "step": step,
                        "target_accuracy": float(accuracy.loc[step]),
                        "decided_at": rule.decision.decided_at if rule.decision is not None else None,
                        "final_step": final,
                        "target_test_images": test_images,
                        "monitor_steps_seen": len(rule.steps),
                        "monitor": f"layer={MONITOR.layer or 'penultimate'} train={MONITOR.train_subset} test={MONITOR.test_subset} "
                        f"seed={MONITOR.seed} confidence={MONITOR.confidence} min_effect={MONITOR.min_effect} "
                        f"patience={MONITOR.patience} decoder=linear_ridge schedule=doubling",
                    }
                )
    return pd.DataFrame(rows)


def _test_size(data: str) -> int:
    match = re.search(r"test=(\d+)", str(data))
    if not match:
        raise ValueError(f"measurement rows' data field {data!r} does not name the test size")
    return int(match.group(1))


def compare(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the mean accuracy of each checkpoint, the monitor's differences with intervals, compute saved."""
    results = []
    for setting, group in table.groupby("setting", sort=False):
        wide = group.pivot_table(index="seed", columns="checkpoint", values="target_accuracy", aggfunc="first")
        decided = group[group["checkpoint"] == "monitor"]
        seeds = len(wide)
        row = {"setting": setting, "seeds": seeds, "decided_in": int(decided["decided_at"].notna().sum())}
        for checkpoint in CHECKPOINTS:
            row[checkpoint] = float(wide[checkpoint].mean()) if checkpoint in wide else math.nan
        # undecided seeds trained to the end: nothing saved
        saved = (1 - decided["decided_at"].astype(float) / decided["final_step"].astype(float)).fillna(0.0)
        row["compute_saved"] = float(saved.mean())
        row["chosen_steps"] = ",".join(
            str(int(step)) if decided_at == decided_at else f"{int(step)} (undecided: final)"
            for step, decided_at in zip(decided["step"], decided["decided_at"].astype(float))
        )
        for other in ("final", "oracle", "validation_loss"):
            difference = (wide["monitor"] - wide[other]).dropna() if "monitor" in wide else pd.Series(dtype=float)
            low, high = _interval(difference, group, other)
            row[f"monitor_minus_{other}"] = float(difference.mean()) if len(difference) else math.nan
            row[f"monitor_minus_{other}_low"], row[f"monitor_minus_{other}_high"] = low, high
        results.append(row)
    return pd.DataFrame(results)


def _interval(difference: pd.Series, group: pd.DataFrame, other: str) -> tuple[float, float]:
    if len(difference) == 0:
        return math.nan, math.nan
    if len(difference) >= 2:
        half = float(scipy.stats.t.ppf(0.975, len(difference) - 1)) * float(difference.std(ddof=1)) / math.sqrt(len(difference))
        return float(difference.mean()) - half, float(difference.mean()) + half
    # one seed: binomial standard errors of the two accuracies on the target test images (unpaired)
    monitor = group[group["checkpoint"] == "monitor"].iloc[0]
    baseline = group[group["checkpoint"] == other].iloc[0]
    size = float(monitor["target_test_images"])
    p, q = float(monitor["target_accuracy"]), float(baseline["target_accuracy"])
    half = 1.96 * math.sqrt(p * (1 - p) / size + q * (1 - q) / size)
    return p - q - half, p - q + half


def reading(low: float, high: float, decided: int, margin: float = EQUIVALENCE_MARGIN) -> str:
    """The verdict on the monitor against another checkpoint from the 95% interval [low, high] of their accuracy
    difference (monitor - other), beginning with one of three words:

    - "helps": the interval lies above 0;
    - "does not help": the monitor never decided (`decided` = 0: it kept the final checkpoint), or the interval's upper
      end is below `margin` (a gain of a margin or more is excluded), said as "worse" where it lies below 0 and as
      "equivalent within +-margin" where it lies inside (-margin, +margin);
    - "undecided": the interval includes 0 and reaches a gain of the margin: the seeds cannot tell.
    """
    if decided == 0:
        return f"{DOES_NOT_HELP} (never decided: kept the final checkpoint)"
    if low > 0:
        return HELPS
    if high < 0:
        return f"{DOES_NOT_HELP} (worse)"
    if high < margin:
        if low > -margin:
            return f"{DOES_NOT_HELP} (equivalent within +-{margin:g})"
        return f"{DOES_NOT_HELP} (a gain of {margin:g} or more is excluded)"
    return f"{UNDECIDED} (the interval includes 0 and a gain of {margin:g})"


def verdict_text(summary: pd.DataFrame, margin: float = EQUIVALENCE_MARGIN) -> list[str]:
    """Per target, in words, where the monitor helps and where it does not: its difference to the final checkpoint, to
    the oracle and to source-loss stopping with their intervals, and the compute it saved (numbers from `compare`)."""
    lines = []
    for _, row in summary.iterrows():

        def difference(other: str) -> str:
            return f"{row[f'monitor_minus_{other}']:+.3f} [{row[f'monitor_minus_{other}_low']:+.3f}, {row[f'monitor_minus_{other}_high']:+.3f}]"

        versus_final = reading(row["monitor_minus_final_low"], row["monitor_minus_final_high"], row["decided_in"], margin)
        # an undecided monitor kept the final checkpoint: against source-loss stopping its interval still says something
        versus_loss = reading(row["monitor_minus_validation_loss_low"], row["monitor_minus_validation_loss_high"], row["seeds"], margin)
        if row["monitor_minus_oracle_high"] < -margin:
            oracle = f"more than {margin:g} below it"
        elif row["monitor_minus_oracle_low"] > -margin:
            oracle = f"within {margin:g} of it"
        else:
            oracle = f"not shown to be within {margin:g} of it"
        lines.append(
            f"- {row['setting']} ({row['seeds']} seed{'s' if row['seeds'] != 1 else ''}, decided in {row['decided_in']}): "
            f"against the final checkpoint: {versus_final}, {difference('final')}; against the oracle: "
            f"{difference('oracle')}, {oracle}; against source-loss stopping: {versus_loss}, {difference('validation_loss')}; "
            f"compute saved {row['compute_saved']:.0%}."
        )
    return lines


def plot(table: pd.DataFrame, options: Options):
    summary = compare(table)
    figure, axes = grid(len(summary), columns=min(3, len(summary)), width=3.8)
    for axis, (_, row) in zip(axes, summary.iterrows()):
        group = table[table["setting"] == row["setting"]]
        for offset, checkpoint in enumerate(CHECKPOINTS):
            values = group[group["checkpoint"] == checkpoint]["target_accuracy"].dropna()
            axis.scatter([offset] * len(values), values, color=f"C{offset}", s=14, alpha=0.7)
            if len(values):
                axis.hlines(values.mean(), offset - 0.3, offset + 0.3, color=f"C{offset}")
        axis.set_xticks(range(len(CHECKPOINTS)), ["monitor", "oracle", "final", "val. loss"], fontsize=7)
        axis.set_ylabel("target test accuracy")
        steps = row["chosen_steps"] or "none"
        axis.set_title(f"{row['setting']}\nmonitor kept step {steps}; saved {row['compute_saved']:.0%} of compute", fontsize=7)
    figure.suptitle(
        f"Which checkpoint to keep for transfer ({options.profile} profile): PhaseMonitor against hindsight, "
        "the end of training and source-loss early stopping",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, options, NAME)
    lines = [
        "| setting | seeds | decided | monitor kept | monitor acc | oracle | final | val. loss | monitor - final [95%] | "
        "monitor - oracle [95%] | monitor - val. loss [95%] | compute saved | reading vs final |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    readings = []
    for _, row in summary.iterrows():

        def diff(other):
            return (
                (
                    f"{row[f'monitor_minus_{other}']:+.3f} [{row[f'monitor_minus_{other}_low']:+.3f}, "
                    f"{row[f'monitor_minus_{other}_high']:+.3f}]"
                )
                if not math.isnan(row[f"monitor_minus_{other}"])
                else "-"
            )

        verdict = reading(row["monitor_minus_final_low"], row["monitor_minus_final_high"], row["decided_in"])
        readings.append(verdict)
        saved = f"{row['compute_saved']:.0%}"
        lines.append(
            f"| {row['setting']} | {row['seeds']} | {row['decided_in']} of {row['seeds']} | {row['chosen_steps'] or '-'} | "
            f"{row['monitor']:.3f} | {row['oracle']:.3f} | {row['final']:.3f} | {row['validation_loss']:.3f} | "
            f"{diff('final')} | {diff('oracle')} | {diff('validation_loss')} | {saved} | {verdict} |"
        )
    lines.append("")
    lines.append(
        f"Monitor: {table['monitor'].iloc[0]}. Intervals: 95%, Student t over seeds where a setting has several, else a "
        "binomial interval over the target test images (unpaired). Where the monitor did not decide, a user trains to the end "
        "and keeps the final checkpoint: that is its checkpoint here, with no compute saved."
    )
    lines += [
        "",
        f"Where the monitor helps and where it does not (the rule of `reproduce.early_stopping.reading`: helps where the "
        f"interval lies above 0; does not help where the monitor never decided or the interval's upper end is below a "
        f"margin of {EQUIVALENCE_MARGIN:g} accuracy, equivalent where it lies inside +-{EQUIVALENCE_MARGIN:g}; undecided "
        "otherwise):",
        "",
        *verdict_text(summary),
    ]
    counts = {word: sum(verdict.startswith(word) for verdict in readings) for word in (HELPS, DOES_NOT_HELP, UNDECIDED)}
    headline = (
        ", ".join(f"{word} in {count}" for word, count in counts.items() if count)
        + f" of {len(readings)} targets (monitor against the final checkpoint, margin {EQUIVALENCE_MARGIN:g})"
    )
    return headline, "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
