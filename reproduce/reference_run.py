"""Figure `reference_run`: the authors' README run next to ours (VGG-8, CIFAR-10, penultimate layer).

PROTOCOL.md lists the authors' published numbers for VGG-8 on CIFAR-10: reconstruction loss of the
penultimate layer (linear decoder, BatchNorm in batch mode), colour-dominance transfer accuracy and
classifier accuracy at iterations 0 ... 65,536. We run the same network and protocol with three
seeds and draw the mean and the min-max band of ours with their numbers as markers on the same
axes. Their reconstruction is a sum of 79 batch-mean MSEs over the 10,000 CIFAR-10 test images;
it is drawn divided by 79 (per-element MSE, our scale).

Ours at `quick` scale: the lossless 4,000 / 1,000-image CIFAR-10 copy in the offline data
directory (8% of the train set), 1,024 iterations; decoder `linear_exact` for every seed (the exact
minimiser of the authors' decoder objective) and the trained `linear` decoder with the authors'
7,820 updates for seed 0 at iterations 0 and 128, to show the two agree. Without a CIFAR-10 copy the
figure is skipped (said so), and its files already in --out are left as they were. `paper` runs the authors' settings in full (tfds CIFAR-10).

    python -m reproduce.reference_run [--profile quick|paper] [--plot-only] [--out DIR]

Runtime: quick 4.4 min (measured by reproduce.all on 2 CPU cores, 2026-11-30); paper: 3 x 257 epochs on a GPU.

Numbers you should see (quick, KPHASES_DATA_DIR set; reproduce.all on a 2-core CPU, 2026-11-30; another CPU moves
the third decimal, README "Reproducing the figures"): mean
per-element test MSE over 3 seeds 0.678 at 0 -> 0.626 at 32 (the minimum) -> 0.790 at 1,024
(authors: 0.591 -> 0.510 at 128 -> 0.521); three phases in 1 of 3 seeds (seed 0: constant to 8,
-7.1% to 64, +25.0%), not in the mean (no decrease above the detector's threshold, +24.2%); test
accuracy 0.444 at 1,024 (authors 0.614), train accuracy 1.0 from 512.
"""
from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd

from reproduce.common import (Options, PlannedRun, curve, reference_run, run_figure, save_figure, tidy_rows,
                              Work, perform)
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "reference_run"
SEEDS = (0, 1, 2)
TRAINED_DECODER_STEPS = (0, 128)
AUTHORS_TEST_BATCHES = 79  # ceil(10,000 / 128)
# PROTOCOL.md, authors' README: iteration -> (reconstruction sum of 79 batch MSEs, transfer test acc, test acc, train acc)
AUTHORS = {0: (46.71, 0.789, 0.097, 0.098), 8: (45.62, 0.789, 0.195, 0.195), 32: (43.48, 0.816, 0.340, 0.347),
           128: (40.32, 0.832, 0.450, 0.475), 512: (41.72, 0.847, 0.577, 0.630), 1024: (41.12, 0.853, 0.614, 0.718),
           4096: (48.69, 0.819, 0.666, 0.989), 8192: (54.74, 0.801, 0.676, 1.000), 65536: (62.18, 0.772, 0.669, 1.000)}


def seeded_runs(options: Options) -> list[PlannedRun]:
    base = reference_run(options)
    if base is None:
        return []
    runs = []
    for seed in SEEDS:
        config = base.config.replace(training=dataclasses.replace(base.config.training, seed=seed))
        measure = dataclasses.replace(base.measure, decoders=("linear_exact",), seed=seed)
        runs.append(PlannedRun(f"seed {seed}", config, measure))
    return runs


def work(options: Options) -> list[Work]:
    """Each seed's run with its own measurement; seed 0 also with the trained decoder at a few steps."""
    items = []
    for planned in seeded_runs(options):
        measures = [planned.measure]
        if planned.measure.seed == 0:
            measures.append(dataclasses.replace(planned.measure, decoders=("linear",), probe=False, transfer=(),
                                                steps=TRAINED_DECODER_STEPS))
        items.append(Work(planned, tuple(measures)))
    return items


def compute(options: Options) -> pd.DataFrame:
    items = work(options)
    if not items:
        print("reference_run: skipped: no cifar10.npz in the offline data directory (set KPHASES_DATA_DIR) and not the paper profile")
        return pd.DataFrame(columns=["label"])
    return pd.concat([tidy_rows(item.planned, *perform(item, options)) for item in items], ignore_index=True)


def _by_seed(table: pd.DataFrame, metric: str, split: str = "test", **selection) -> pd.DataFrame:
    return pd.DataFrame({label: curve(table, label, metric, split, **selection) for label in dict.fromkeys(table["label"])})


def plot(table: pd.DataFrame, options: Options):
    panels = [("reconstruction_mse", dict(instrument="linear_exact", bn_stats="batch", layer="penultimate"), 0,
               "reconstruction (per-element test MSE)", 1 / AUTHORS_TEST_BATCHES),
              ("transfer_accuracy", dict(instrument="color_dominance", bn_stats="batch", layer="penultimate"), 1,
               "colour-dominance transfer test acc", 1),
              ("classifier_accuracy", {}, 2, "classifier test acc", 1),
              ("classifier_accuracy", {}, 3, "classifier train acc", 1)]
    figure, axes = grid(len(panels), columns=4, width=3.4, height=3.0)
    rows = []
    for axis, (metric, selection, column, title, scale) in zip(axes, panels):
        split = "train" if "train acc" in title else "test"
        values = _by_seed(table, metric, split, **selection)
        steps = values.index
        axis.fill_between(step_position(steps), values.min(axis=1), values.max(axis=1), color="C0", alpha=0.25, lw=0)
        axis.plot(step_position(steps), values.mean(axis=1), "o-", color="C0", ms=3, label=f"ours: mean, min-max of {values.shape[1]} seeds")
        theirs = {step: numbers[column] * scale for step, numbers in AUTHORS.items() if step <= steps.max()}
        axis.plot(step_position(list(theirs)), list(theirs.values()), "s", color="C3", ms=5, mfc="none", label="authors' README run")
        if metric == "reconstruction_mse":
            trained = curve(table, "seed 0", metric, instrument="linear", bn_stats="batch", layer="penultimate")
            if len(trained):
                updates = table[(table["instrument"] == "linear") & (table["metric"] == metric)]["update_steps"].iloc[0]
                axis.plot(step_position(trained.index), trained.values, "x", color="black", ms=6,
                          label=f"ours, trained linear decoder ({int(float(updates)):,} updates), seed 0")
        log_step_axis(axis, steps)
        axis.set_title(title)
        for step, numbers in AUTHORS.items():
            if step in values.index:
                ours = values.loc[step]
                rows.append((step, title, numbers[column] * scale, ours.mean(), ours.min(), ours.max()))
    handles = [h for axis in axes[:1] for h in axis.get_lines()]
    figure.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.03))
    data = table["data"].dropna().iloc[-1] if "data" in table else ""
    figure.suptitle(f"Authors' README run vs ours ({options.profile} profile: VGG-8, {data.split(' fingerprint')[0]}, "
                    f"{int(table['step'].max())} iterations; BatchNorm batch statistics)")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(figure, options, NAME)
    lines = ["| iteration | quantity | authors | ours (mean over seeds) | ours min | ours max |", "|---|---|---|---|---|---|"]
    lines += [f"| {step} | {title} | {theirs:.4f} | {mean:.4f} | {low:.4f} | {high:.4f} |" for step, title, theirs, mean, low, high in sorted(rows)]
    from kphases.measurement import describe_phases
    from kphases.phases import detect_phases

    by_seed = _by_seed(table, "reconstruction_mse", instrument="linear_exact", bn_stats="batch", layer="penultimate")
    reconstruction = by_seed.mean(axis=1)
    minimum = int(reconstruction.idxmin())
    # The phase detector on each seed's curve and on the mean: a mean can look like three phases when few seeds have them.
    verdicts = {str(column): detect_phases(by_seed.index.tolist(), by_seed[column].tolist()) for column in by_seed.columns}
    detected = sum(result.three_phases for result in verdicts.values())
    verdicts["mean of the seeds"] = detect_phases(reconstruction.index.tolist(), reconstruction.tolist())
    lines += ["", "Phases of the reconstruction loss (linear_exact, batch BatchNorm, penultimate):", "",
              "| curve | phases |", "|---|---|"] + [f"| {name} | {describe_phases(result)} |" for name, result in verdicts.items()]
    headline = (f"reconstruction minimum at iteration {minimum} (authors: 128 of their 17 points), "
                f"{reconstruction.iloc[0]:.3f} -> {reconstruction.min():.3f} -> {reconstruction.iloc[-1]:.3f} (mean of {len(SEEDS)} seeds); "
                f"three phases detected in {detected} of {len(by_seed.columns)} seeds")
    return headline, "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
