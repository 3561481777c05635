"""Figure `transfer`: transfer accuracy against the pre-training iteration the features come from.

The paper's practical consequence: pre-training for transfer should stop well before the source
task's optimum. At every snapshot a fresh linear head is trained on the frozen penultimate features
for a target task (`kphases.probes`, the authors' head optimiser); we plot its target test accuracy.
Settings: colour dominance on CIFAR-10 (3 classes, argmax of the per-channel sums of the normalised
image; the `reference_run` runs, 3 seeds: mean and min-max band; at full VGG-8 on the 30,000-image
JPEG q75 copy for 4,096 iterations, heads fitted on 10,000 of its train images and scored on 2,000
of its test images) and dataset switch (MNIST features ->
Fashion-MNIST labels and back; embedded MNIST -> scikit-learn digits without a data directory).
The table gives per setting the best checkpoint, its accuracy, the final checkpoint's accuracy and
the gain of stopping early (best - final), with the spread over seeds where there are several.

    python -m reproduce.transfer [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: shares every run with `phases` (dataset switch; at full every seed) and `reference_run`
(colour dominance; full only); nothing new to train. Its heads get 20 epochs at quick (640 updates
on the embedded set) and the authors' 7,820 updates at full. The CSV and summary.md hold the numbers.

Numbers you should see (full): colour dominance best at iteration 256 with 0.848, +0.061 over the
final checkpoint (seeds +0.057 .. +0.066); the dataset switches gain +0.000 to +0.027 by stopping
early (one seed each: VGG-8 MNIST -> Fashion best at 512, +0.001; ResNet-10 x1/8 Fashion -> MNIST
best at 512, +0.027).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd

from reproduce import reference_run as reference
from reproduce.common import Options, Work, curve, main_runs, perform, replicas, run_figure, save_figure, tidy_rows
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "transfer"


def work(options: Options) -> list[Work]:
    """The main runs (dataset switch) and the reference run's seeds (colour dominance), each with its own config."""
    return [Work(planned, (planned.measure,)) for _, planned in _main_seeds(options)] + [
        Work(planned, (planned.measure,)) for planned in reference.seeded_runs(options)
    ]


def _main_seeds(options: Options):
    """(the seed-0 main run, it or one of its further seeds) for every main run and seed of the profile."""
    return [(planned, run) for planned in main_runs(options) for run in (planned, *replicas(planned, options))]


def compute(options: Options) -> pd.DataFrame:
    tables = []
    for planned, seeded in _main_seeds(options):  # a setting's seeds are its columns (`settings`)
        table = tidy_rows(seeded, *perform(Work(seeded, (seeded.measure,)), options))
        switch = table[table["instrument"].astype(str).str.startswith("dataset_switch") | (table["instrument"] == "classifier")]
        if (switch["instrument"] != "classifier").any():
            tables.append(
                switch.assign(
                    setting=lambda t: (
                        f"{planned.label} -> "
                        + t["instrument"].astype(str).str.split(":").str[-1].where(t["instrument"] != "classifier", "")
                    )
                )
            )
    for planned in reference.seeded_runs(options):
        table = tidy_rows(planned, *perform(Work(planned, (planned.measure,)), options))
        table = table[(table["instrument"] == "color_dominance") | (table["instrument"] == "classifier")]
        tables.append(table.assign(setting=f"colour dominance / {reference.reference_run(options).label}"))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["setting"])


def settings(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """setting -> transfer test accuracy by step (columns: one per seed/run label)."""
    result = {}
    transfer = table[(table["metric"] == "transfer_accuracy") & (table["split"] == "test") & (table["bn_stats"] == "batch")]
    for setting, group in transfer.groupby("setting", sort=False):
        name = setting.split(" / ", 1)[0] if setting.startswith("colour") else setting
        result[name] = pd.DataFrame({label: curve(group, label, "transfer_accuracy") for label in dict.fromkeys(group["label"])})
    return result


def plot(table: pd.DataFrame, options: Options):
    curves = settings(table)
    if not curves:
        return "no transfer settings measured", "No transfer setting was measured."
    figure, axes = grid(len(curves), columns=min(3, len(curves)), width=3.8)
    lines = [
        "| setting | seeds | best checkpoint | best acc | final checkpoint | final acc | gain (best - final) |",
        "|---|---|---|---|---|---|---|",
    ]
    gains = []
    for axis, (setting, values) in zip(axes, curves.items()):
        mean = values.mean(axis=1)
        if values.shape[1] > 1:
            axis.fill_between(step_position(values.index), values.min(axis=1), values.max(axis=1), color="C1", alpha=0.25, lw=0)
        axis.plot(step_position(values.index), mean, "o-", color="C1", ms=3, label="transfer test acc")
        best = int(mean.idxmax())
        axis.axvline(step_position([best])[0], color="C1", ls=":", lw=1)
        log_step_axis(axis, values.index)
        axis.set_title(setting, fontsize=8)
        axis.set_ylabel("target test accuracy")
        gain = values.loc[best] - values.iloc[-1]
        gains.append(gain.mean())
        spread = f" (seeds {gain.min():+.3f} .. {gain.max():+.3f})" if values.shape[1] > 1 else ""
        lines.append(
            f"| {setting} | {values.shape[1]} | {best} | {mean.loc[best]:.3f} | {int(values.index[-1])} | "
            f"{mean.iloc[-1]:.3f} | {gain.mean():+.3f}{spread} |"
        )
    figure.suptitle(f"Transfer accuracy by pre-training iteration ({options.profile} profile; linear head on frozen penultimate features)")
    figure.tight_layout()
    save_figure(figure, options, NAME)
    best_gain = max(gains)
    return f"best checkpoint beats the final one by up to {best_gain:+.3f} accuracy across {len(curves)} settings", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
