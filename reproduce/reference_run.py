"""Figure `reference_run`: the authors' README run next to ours (VGG-8, CIFAR-10, penultimate layer).

The authors' README lists their published numbers for VGG-8 on CIFAR-10: reconstruction loss of the
penultimate layer (linear decoder, BatchNorm in batch mode), colour-dominance transfer accuracy and
classifier accuracy at iterations 0 ... 65,536. We run the same network and protocol with three
seeds and draw the mean and the min-max band of ours with their numbers as markers on the same
axes. Their reconstruction is a sum of 79 batch-mean MSEs over the 10,000 CIFAR-10 test images;
it is drawn divided by 79 (per-element MSE, our scale).

Ours at `full` scale: VGG-8 on the 30,000-image train split of the JPEG (quality 75) CIFAR-10
copy `cifar10_jpeg_q75.npz` in the offline data directory (60% of the official train set, real
images but JPEG-compressed, so accuracies run a little lower than on the official files), all its
10,000 test images, 2,048 iterations (9 epochs: long enough that train accuracy is still well
below 1 where the reconstruction loss turns up, unlike a 4,000-image copy that is memorised by
iteration 512, and that the rise after it is beyond the noise; `authors_length` goes on to 65,536), 3 seeds. The classifier's accuracies are on the full splits; decoders and the
colour-dominance heads are fitted on a fixed stratified subset of 10,000 train images and
evaluated on a fixed stratified subset of 2,000 test images (the same for every seed and step),
which is what keeps the measurement affordable. Decoder `linear_ridge` for every seed (the
closed-form affine decoder, its ridge penalty chosen by GCV on the train split) and the trained `linear` decoder with the authors'
7,820 updates for seed 0 at iterations 0 and 128, to show the two agree. The file, its JPEG
quality, sizes and fingerprint are in every row's `data` field and the figure's title. Phase
verdict: the suite's verdict across the 3 seeds (`kphases.phases.phase_verdict`, default settings;
hierarchical over the seeds and their test images where the per-image errors are saved), and
the classifier's train accuracy at the step where the increase starts. Without that file in the
data directory the figure is skipped (said so), and its files already in --out are left as they
were. `smoke` uses 256 / 128 images of the lossless `cifar10.npz`; `paper` runs the authors'
settings in full (tfds CIFAR-10).

    python -m reproduce.reference_run [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: full: 3 seeds of VGG-8 on the 30,000 / 10,000-image JPEG q75 copy, 2,048 iterations
(`reproduce.common.REFERENCE_STEPS`: what fits the full profile's budget; the authors' 65,536-iteration
length is its own module); quick has no CIFAR-10 (the embedded MNIST only) and skips this figure,
saying so; smoke: 256 / 128 images of `cifar10.npz` when it is in the data directory. The CSV and
summary.md hold the numbers.

What you should see (full, the committed figure): the accuracies and reconstruction losses per seed beside the authors'
are in `paper_figures/reference_run.csv`; the verdict across the 3 seeds (three phases, the minimum
and the train accuracy there, the rise with its interval) is in `paper_figures/summary.md`.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import re

import pandas as pd

from reproduce import verdicts
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


RECONSTRUCTION = dict(instrument="linear_ridge", bn_stats="batch", layer="penultimate")


def compute(options: Options) -> pd.DataFrame:
    items = work(options)
    if not items:
        reason = (
            "the quick profile trains on the embedded MNIST only (the CIFAR-10 reference runs are in --profile full)"
            if options.profile == "quick"
            else "no cifar10.npz in the offline data directory (set KPHASES_DATA_DIR)"
        )
        print(f"reference_run: skipped: {reason}")
        return pd.DataFrame(columns=["label"])
    return perform_all(items, options, NAME)


def perform_all(items: list[Work], options: Options, name: str) -> pd.DataFrame:
    """Train and measure every seed's work; write the reconstruction's per-image errors beside the
    figure's CSV (`<name>_per_image.csv`) for the verdict; return the tidy rows."""
    tables, per_image = [], {}
    for item in items:
        run, frame = perform(item, options)
        tables.append(tidy_rows(item.planned, run, frame))
        wanted = [(RECONSTRUCTION["layer"], RECONSTRUCTION["instrument"], RECONSTRUCTION["bn_stats"])]
        per_image.update(verdicts.collect(run, frame, item.planned.label, wanted))
    verdicts.write_per_image(options.out, name, per_image)
    return pd.concat(tables, ignore_index=True)


def verdict(by_seed: pd.DataFrame, per_image: dict):
    """The phase verdict on the seeds' reconstruction curves (step x seed, columns the seeds' run labels):
    the one place this figure decides. With >= 3 seeds the suite's verdict across seeds, hierarchical
    over the seeds and their test images (`reproduce.verdicts.across_seeds`); with one seed that
    seed's verdict over its test images (it says so); None with two."""
    labels = [str(label) for label in by_seed.columns]
    if len(labels) == 1:
        return verdicts.verdict(per_image, by_seed.iloc[:, 0].dropna(), labels[0], **RECONSTRUCTION)
    return verdicts.across_seeds(per_image, by_seed, labels, **RECONSTRUCTION)


def seeds_words(count: int) -> str:
    """What a headline's mean is over: "one seed" or "mean of <count> seeds"."""
    return "one seed" if count == 1 else f"mean of {count} seeds"


def describe_verdict(result, by_seed: pd.DataFrame) -> str:
    if result is None:
        return (
            f"no verdict: {by_seed.shape[1]} seed(s); one seed gets a verdict over its test images, intervals across seeds need at least 3"
        )
    return result.describe()


def data_sizes(table: pd.DataFrame) -> str:
    """'<file>: trained on T / scored on S images; decoders and heads on t / s' from the rows' `data` fields
    (the classifier rows carry the run's splits, the measurement rows the subsets they were fitted on)."""

    def sizes(rows: pd.Series) -> tuple[str, str] | None:
        found = rows.dropna().astype(str).str.extract(r"train=(\d+) test=(\d+)").dropna()
        return (f"{int(found.iloc[0, 0]):,}", f"{int(found.iloc[0, 1]):,}") if len(found) else None

    classifier = table["instrument"] == "classifier"
    trained, measured = sizes(table.loc[classifier, "data"]), sizes(table.loc[~classifier, "data"])
    source = re.split(r" train=| \(", str(table.loc[classifier, "data"].dropna().iloc[0]))[0] if classifier.any() else "CIFAR-10"
    text = source + (f": classifier trained on {trained[0]}, scored on {trained[1]} test images" if trained else "")
    return text + (f"; decoders and heads on {measured[0]} / {measured[1]}" if measured else "")


def seed_curves(table: pd.DataFrame, metric: str, split: str = "test", **selection) -> pd.DataFrame:
    return pd.DataFrame({label: curve(table, label, metric, split, **selection) for label in dict.fromkeys(table["label"])})


def plot(table: pd.DataFrame, options: Options, name: str = NAME, scale: str | None = None):
    """Draw and summarise; `name` and `scale` (the title's words for the run's scale, default the profile) let
    `reproduce.authors_length` draw its own run with the same panels."""
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
    figure.suptitle(
        f"Authors' README run vs ours ({scale or options.profile + ' profile'}: VGG-8, {data_sizes(table)}, "
        f"{int(table['step'].max())} iterations; BatchNorm batch statistics)"
    )
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(figure, options, name)
    lines = ["| iteration | quantity | authors | ours (mean over seeds) | ours min | ours max |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {step} | {title} | {theirs:.4f} | {mean:.4f} | {low:.4f} | {high:.4f} |"
        for step, title, theirs, mean, low, high in sorted(rows)
    ]
    by_seed = seed_curves(table, "reconstruction_mse", **RECONSTRUCTION)
    train_accuracy = seed_curves(table, "classifier_accuracy", "train")
    reconstruction = by_seed.mean(axis=1)
    minimum = int(reconstruction.idxmin())
    per_image = verdicts.read_per_image(options.out, name)
    result = verdict(by_seed, per_image)
    lines += [
        "",
        "Phases of the reconstruction loss (linear_ridge, batch BatchNorm, penultimate), mean of the seeds:",
        "",
        f"- {describe_verdict(result, by_seed)}",
    ]
    alone = {}
    if result is None and by_seed.shape[1] == 2:  # no interval across two seeds: each seed's own, over its test images
        for label in by_seed.columns:
            alone[label] = verdict(by_seed[[label]], per_image)
            lines.append(f"- {label} alone (95% intervals over its test images): {describe_verdict(alone[label], by_seed[[label]])}")
    if result is not None and result.increase.start_step is not None:
        start = result.increase.start_step
        accuracy = train_accuracy.loc[start]
        lines.append(
            f"- classifier train accuracy where the increase starts (iteration {start}): {accuracy.mean():.3f} "
            f"(seeds {accuracy.min():.3f} .. {accuracy.max():.3f}); at the last step {train_accuracy.iloc[-1].mean():.3f}"
        )
    headline = (
        f"reconstruction minimum at iteration {minimum} (authors: 128 of their 17 points), "
        f"{reconstruction.iloc[0]:.3f} -> {reconstruction.min():.3f} -> {reconstruction.iloc[-1]:.3f} ({seeds_words(by_seed.shape[1])}); "
        + (
            result.in_words
            + f" (increase {result.increase.describe()} of the initial loss, 95% interval "
            + ("over one seed's test images)" if by_seed.shape[1] == 1 else "across seeds)")
            if result is not None
            else "no verdict across two seeds (intervals across seeds need 3); each alone: "
            + "; ".join(
                f"{label} {found.in_words} (increase {found.increase.describe()})" if found is not None else f"{label} no verdict"
                for label, found in alone.items()
            )
        )
    )
    return headline, "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
