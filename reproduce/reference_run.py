"""Figure `reference_run`: the authors' README run next to ours (VGG-8, CIFAR-10, penultimate layer).

PROTOCOL.md lists the authors' published numbers for VGG-8 on CIFAR-10: reconstruction loss of the
penultimate layer (linear decoder, BatchNorm in batch mode), colour-dominance transfer accuracy and
classifier accuracy at iterations 0 ... 65,536. We run the same network and protocol with three
seeds and draw the mean and the min-max band of ours with their numbers as markers on the same
axes. Their reconstruction is a sum of 79 batch-mean MSEs over the 10,000 CIFAR-10 test images;
it is drawn divided by 79 (per-element MSE, our scale).

Ours at `quick` scale: VGG-8 on the 30,000-image train split of the JPEG (quality 75) CIFAR-10
copy `cifar10_jpeg_q75.npz` in the offline data directory (60% of the official train set, real
images but JPEG-compressed, so accuracies run a little lower than on the official files), all its
10,000 test images, 4,096 iterations (17 epochs: long enough that train accuracy is still well
below 1 where the reconstruction loss turns up, unlike a 4,000-image copy that is memorised by
iteration 512), 3 seeds. The classifier's accuracies are on the full splits; decoders and the
colour-dominance heads are fitted on a fixed stratified subset of 10,000 train images and
evaluated on a fixed stratified subset of 2,000 test images (the same for every seed and step),
which is what keeps the measurement affordable. Decoder `linear_ridge` for every seed (the
closed-form affine decoder, its ridge penalty chosen by GCV on the train split) and the trained `linear` decoder with the authors'
7,820 updates for seed 0 at iterations 0 and 128, to show the two agree. The file, its JPEG
quality, sizes and fingerprint are in every row's `data` field and the figure's title. Phase
verdicts: `kphases.phases.phase_verdict` with seed-level 95% t-intervals across the 3 seeds, and
the classifier's train accuracy at the step where the increase starts. Without that file in the
data directory the figure is skipped (said so), and its files already in --out are left as they
were. `smoke` uses 256 / 128 images of the lossless `cifar10.npz`; `paper` runs the authors'
settings in full (tfds CIFAR-10).

    python -m reproduce.reference_run [--profile smoke|quick|paper] [--plot-only] [--out DIR]

Runtime: quick: 3 runs of 4,096 VGG-8 iterations, each with 13 snapshots scored on all 40,000
images and measured on 12,000: about 13 minutes on 2 CPU cores (CHANGELOG), 7 of them training with
its snapshot scoring. paper: 3 x 257 epochs on a GPU.

Numbers you should see (quick, seed 0; another CPU moves the third decimal): classifier test /
train accuracy 0.452 / 0.490 at iteration 128, 0.558 / 0.669 at 512, 0.586 / 0.816 at 1,024,
0.596 / 0.973 at 2,048, 0.603 / 1.000 at 4,096 (authors, on the 50,000 official images: 0.450 /
0.475, 0.577 / 0.630, 0.614 / 0.718, and 0.666 / 0.989 at 4,096). Seed 0's reconstruction loss
(linear_ridge, per-element test MSE on the 2,000-image subset): 0.601 at 0, 0.527 at 64, 0.505 at
256 (its minimum), 0.522 at 512, 0.545 at 1,024, 0.602 at 2,048, 0.691 at 4,096 (authors / 79:
0.591, 0.510 at 128, 0.528 at 512, 0.521 at 1,024, 0.616 at 4,096). Across the 3 seeds: three
phases, the minimum at 256 where train accuracy is 0.565 (0.553 .. 0.574), the rise 29.7% [25.6,
33.7] of the initial loss. paper_figures/summary.md has the table, the verdict and the seeds.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd

from reproduce.common import Options, PlannedRun, Work, curve, perform, reference_run, run_figure, save_figure, tidy_rows
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "reference_run"
SEEDS = (0, 1, 2)
TRAINED_DECODER_STEPS = (0, 128)
AUTHORS_TEST_BATCHES = 79  # ceil(10,000 / 128)
# docs/protocol.md, section "The authors' published numbers": iteration -> (reconstruction sum of 79 batch MSEs, transfer test acc, test acc, train acc)
AUTHORS = {
    0: (46.71, 0.789, 0.097, 0.098),
    8: (45.62, 0.789, 0.195, 0.195),
    32: (43.48, 0.816, 0.340, 0.347),
    128: (40.32, 0.832, 0.450, 0.475),
    512: (41.72, 0.847, 0.577, 0.630),
    1024: (41.12, 0.853, 0.614, 0.718),
    4096: (48.69, 0.819, 0.666, 0.989),
    8192: (54.74, 0.801, 0.676, 1.000),
    65536: (62.18, 0.772, 0.669, 1.000),
}


def seeded_runs(options: Options) -> list[PlannedRun]:
    base = reference_run(options)
    if base is None:
        return []
    runs = []
    for seed in SEEDS:
        config = base.config.replace(training=dataclasses.replace(base.config.training, seed=seed))
        measure = dataclasses.replace(base.measure, decoders=("linear_ridge",), seed=seed)
        runs.append(PlannedRun(f"seed {seed}", config, measure))
    return runs


def work(options: Options) -> list[Work]:
    """Each seed's run with its own measurement; seed 0 also with the trained decoder at a few steps."""
    items = []
    for planned in seeded_runs(options):
        measures = [planned.measure]
        if planned.measure.seed == 0:
            measures.append(
                dataclasses.replace(planned.measure, decoders=("linear",), probe=False, transfer=(), steps=TRAINED_DECODER_STEPS)
            )
        items.append(Work(planned, tuple(measures)))
    return items


def compute(options: Options) -> pd.DataFrame:
    items = work(options)
    if not items:
        file = "cifar10_jpeg_q75.npz" if options.profile == "quick" else "cifar10.npz"
        print(f"reference_run: skipped: no {file} in the offline data directory (set KPHASES_DATA_DIR) and not the paper profile")
        return pd.DataFrame(columns=["label"])
    return pd.concat([tidy_rows(item.planned, *perform(item, options)) for item in items], ignore_index=True)


def verdict(by_seed: pd.DataFrame):
    """The phase verdict on the seeds' reconstruction curves (step x seed): the one place this figure
    decides. `phase_verdict` with seed-level t-intervals; None with fewer than 3 seeds."""
    from kphases.phases import phase_verdict

    curves = by_seed.dropna()
    if curves.shape[1] < 3 or len(curves) < 3:
        return None
    return phase_verdict(curves.index.tolist(), seed_curves=curves.to_numpy().T)


def describe_verdict(result, by_seed: pd.DataFrame) -> str:
    if result is None:
        return f"no verdict: {by_seed.shape[1]} seed(s), the seed-level intervals need at least 3"
    return result.describe()


def seed_curves(table: pd.DataFrame, metric: str, split: str = "test", **selection) -> pd.DataFrame:
    return pd.DataFrame({label: curve(table, label, metric, split, **selection) for label in dict.fromkeys(table["label"])})


def plot(table: pd.DataFrame, options: Options, name: str = NAME):
    panels = [
        (
            "reconstruction_mse",
            dict(instrument="linear_ridge", bn_stats="batch", layer="penultimate"),
            0,
            "reconstruction (per-element test MSE)",
            1 / AUTHORS_TEST_BATCHES,
        ),
        (
            "transfer_accuracy",
            dict(instrument="color_dominance", bn_stats="batch", layer="penultimate"),
            1,
            "colour-dominance transfer test acc",
            1,
        ),
        ("classifier_accuracy", {}, 2, "classifier test acc", 1),
        ("classifier_accuracy", {}, 3, "classifier train acc", 1),
    ]
    figure, axes = grid(len(panels), columns=4, width=3.4, height=3.0)
    rows = []
    for axis, (metric, selection, column, title, scale) in zip(axes, panels):
        split = "train" if "train acc" in title else "test"
        values = seed_curves(table, metric, split, **selection)
        steps = values.index
        axis.fill_between(step_position(steps), values.min(axis=1), values.max(axis=1), color="C0", alpha=0.25, lw=0)
        axis.plot(
            step_position(steps), values.mean(axis=1), "o-", color="C0", ms=3, label=f"ours: mean, min-max of {values.shape[1]} seeds"
        )
        theirs = {step: numbers[column] * scale for step, numbers in AUTHORS.items() if step <= steps.max()}
        axis.plot(step_position(list(theirs)), list(theirs.values()), "s", color="C3", ms=5, mfc="none", label="authors' README run")
        if metric == "reconstruction_mse":
            trained = curve(table, "seed 0", metric, instrument="linear", bn_stats="batch", layer="penultimate")
            if len(trained):
                updates = table[(table["instrument"] == "linear") & (table["metric"] == metric)]["update_steps"].iloc[0]
                axis.plot(
                    step_position(trained.index),
                    trained.values,
                    "x",
                    color="black",
                    ms=6,
                    label=f"ours, trained linear decoder ({int(float(updates)):,} updates), seed 0",
                )
        log_step_axis(axis, steps)
        axis.set_title(title)
        for step, numbers in AUTHORS.items():
            if step in values.index:
                ours = values.loc[step]
                rows.append((step, title, numbers[column] * scale, ours.mean(), ours.min(), ours.max()))
    handles = [h for axis in axes[:1] for h in axis.get_lines()]
    figure.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.03))
    data = table["data"].dropna().iloc[-1] if "data" in table else ""
    figure.suptitle(
        f"Authors' README run vs ours ({options.profile} profile: VGG-8, {data.split(' fingerprint')[0]}, "
        f"{int(table['step'].max())} iterations; BatchNorm batch statistics)"
    )
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(figure, options, name)
    lines = ["| iteration | quantity | authors | ours (mean over seeds) | ours min | ours max |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {step} | {title} | {theirs:.4f} | {mean:.4f} | {low:.4f} | {high:.4f} |"
        for step, title, theirs, mean, low, high in sorted(rows)
    ]
    by_seed = seed_curves(table, "reconstruction_mse", instrument="linear_ridge", bn_stats="batch", layer="penultimate")
    train_accuracy = seed_curves(table, "classifier_accuracy", "train")
    reconstruction = by_seed.mean(axis=1)
    minimum = int(reconstruction.idxmin())
    result = verdict(by_seed)
    lines += [
        "",
        "Phases of the reconstruction loss (linear_ridge, batch BatchNorm, penultimate), mean of the seeds:",
        "",
        f"- {describe_verdict(result, by_seed)}",
    ]
    if result is not None and result.increase.start_step is not None:
        start = result.increase.start_step
        accuracy = train_accuracy.loc[start]
        lines.append(
            f"- classifier train accuracy where the increase starts (iteration {start}): {accuracy.mean():.3f} "
            f"(seeds {accuracy.min():.3f} .. {accuracy.max():.3f}); at the last step {train_accuracy.iloc[-1].mean():.3f}"
        )
    headline = (
        f"reconstruction minimum at iteration {minimum} (authors: 128 of their 17 points), "
        f"{reconstruction.iloc[0]:.3f} -> {reconstruction.min():.3f} -> {reconstruction.iloc[-1]:.3f} (mean of {by_seed.shape[1]} seeds); "
        + (
            ("three phases" if result.three_phases else "not three phases")
            + f" (increase {result.increase.describe()} of the initial loss, seed-level 95% interval)"
            if result is not None
            else "no verdict (fewer than 3 seeds)"
        )
    )
    return headline, "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
