"""Figure `transfer`: transfer accuracy against the pre-training iteration the features come from.

The paper's practical consequence: pre-training for transfer should stop well before the source
task's optimum. At every snapshot a fresh linear head is trained on the frozen penultimate features
for a target task (`kphases.probes`, the authors' head optimiser); we plot its target test accuracy.
Settings: colour dominance on CIFAR-10 (3 classes, argmax of the per-channel sums of the normalised
image; the `reference_run` runs, 3 seeds: mean and min-max band; at full VGG-8 on the 30,000-image
JPEG q75 copy for 2,048 iterations, heads fitted on 10,000 of its train images and scored on 2,000
of its test images), dataset switch (MNIST features -> Fashion-MNIST labels and back; embedded MNIST
-> scikit-learn digits without a data directory) and class split (`class_split_runs`: VGG-8
pre-trained on CIFAR-10 classes 0-4, its head on classes 5-9; smoke: MNIST digits 0-4 -> 5-9).
The table gives per setting the best checkpoint, its accuracy, the final checkpoint's accuracy and
the gain of stopping early (best - final), with the spread over seeds where there are several.

    python -m reproduce.transfer [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: shares every run with `phases` (dataset switch; at full every seed) and `reference_run`
(colour dominance; full only); the class split adds 3 VGG-8 runs of 1,024 iterations on about
2,000 CIFAR-10 images at full (the `--dry-run` estimate gives their cost on this machine). Heads get 20
epochs at quick (640 updates on the embedded set), the authors' 7,820 updates on the reference
runs and 1,580 on the full main runs and class split. The CSV and summary.md hold the numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import dataclasses

import pandas as pd

from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, measure_profile, profile
from kphases.data import DATA_DIR_VARIABLE
from reproduce import reference_run as reference
from reproduce.common import (
    MAIN_STEPS,
    Options,
    PlannedRun,
    Work,
    curve,
    data_directory,
    has_offline,
    main_runs,
    perform,
    replicas,
    run_figure,
    save_figure,
    tidy_rows,
)
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "transfer"


SPLIT_CLASSES = (0, 1, 2, 3, 4)
"""Source half of the class split; the target is the other half (5-9). On CIFAR-10 each half holds vehicles and
animals (0-4: airplane, automobile, bird, cat, deer; 5-9: dog, frog, horse, ship, truck), so the target needs
the vehicle/animal and animal/animal distinctions the source teaches, on classes the network never saw: a
semantic target, unlike colour dominance, a pixel-linear function of the image. The standard split-CIFAR-10 halves."""
SPLIT_FILE = "cifar10.npz"
"""The lossless 4,000 / 1,000-image copy: about 2,000 / 500 images per half. The rise needs the train set fitted, which
takes 1,024 iterations on 2,000 images but about 4,096 on the 15,000 of a half of the JPEG copy (`reference_run`): 4x the
training of three seeds, for a target test set of 500 images per seed that the seed-level intervals do not need."""
SPLIT_HEAD_UPDATES = 1_580
"""Transfer-head updates on the split (20 epochs of ~2,000 images would be 320): as many as the full main runs' heads get
(20 epochs of 10,000 images), so the two kinds of switch are read with heads fitted alike."""


def class_split_runs(options: Options) -> list[PlannedRun]:
    """VGG-8 pre-trained on one half of a class split (`SPLIT_CLASSES`), its transfer head on the other half, at every
    seed of the profile. full: CIFAR-10 (`SPLIT_FILE`), 1,024 iterations; smoke: embedded MNIST digits 0-4 -> 5-9 (no data
    directory); paper: CIFAR-10 from tfds with the paper's training; quick: none (it reads no CIFAR-10)."""
    name = options.profile
    if name == "quick":
        return []
    measure = dataclasses.replace(measure_profile(name), decoders=(), probe=False, transfer=("dataset_switch",))
    if name == "smoke":
        smoke = profile("smoke")
        planned = PlannedRun(
            "VGG-8 x1/8 / MNIST digits 0-4 (embedded, smoke)",
            smoke.replace(data=dataclasses.replace(smoke.data, classes=SPLIT_CLASSES)),
            measure,
        )
    elif name == "paper":
        paper = profile("paper")
        planned = PlannedRun(
            "VGG-8 / CIFAR-10 classes 0-4", paper.replace(data=dataclasses.replace(paper.data, classes=SPLIT_CLASSES)), measure
        )
    else:
        if not has_offline(SPLIT_FILE.removesuffix(".npz"), options):
            raise ValueError(
                f"profile {name} needs {SPLIT_FILE} in the data directory (--data-dir or {DATA_DIR_VARIABLE}) for the CIFAR-10 "
                f"class split; not found in {data_directory(options)}"
            )
        config = RunConfig(
            data=DataConfig("cifar10", "directory", file=SPLIT_FILE, classes=SPLIT_CLASSES),
            model=ModelConfig("vgg8"),
            training=TrainingConfig(duration=MAIN_STEPS),
        )
        planned = PlannedRun(
            "VGG-8 / CIFAR-10 classes 0-4 (4,000 / 1,000 copy)",
            config,
            dataclasses.replace(measure, probe_min_update_steps=SPLIT_HEAD_UPDATES),
        )
    return [planned, *replicas(planned, options)]


def work(options: Options) -> list[Work]:
    """The main runs (dataset switch), the class-split runs and the reference run's seeds (colour dominance), each with its own config."""
    return [Work(planned, (planned.measure,)) for _, planned in _switch_seeds(options)] + [
        Work(planned, (planned.measure,)) for planned in reference.seeded_runs(options)
    ]


def _switch_seeds(options: Options):
    """(the seed-0 run, it or one of its further seeds) for every main run and class-split run and seed of the profile."""
    main = [(planned, run) for planned in main_runs(options) for run in (planned, *replicas(planned, options))]
    split = class_split_runs(options)
    return main + [(split[0], run) for run in split]


def compute(options: Options) -> pd.DataFrame:
    tables = []
    for planned, seeded in _switch_seeds(options):  # a setting's seeds are its columns (`settings`)
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
