"""Figure `mechanism`: is phase (iii) the cost of fitting the few images far from their class's prototype,
or of memorising anything at all (VGG-8 on real MNIST and CIFAR-10)?

The paper's data model explains phase (iii) by "fitting the few": most images of a class lie near its
prototype and are fitted first; a few lie far from it, nearer another class's prototype, and fitting
them late costs information about the input, so the reconstruction loss rises. `label_noise` agrees
with that, but also with the simpler view that memorising any example raises the loss. Two
experiments tell the two apart; neither is one of the authors' figures.

(a) Natural outliers removed. The outliers are the train images whose cosine to another class's mean
    is larger than to their own class's mean (`kphases.outliers`; figure `data_model`'s measure). On
    MNIST the space is the normalised pixels. In CIFAR-10's pixels most images are outliers (figure
    `data_model`), so the measure says nothing about "a few"; there the space is `whitened`: the top
    principal components of the pixels whitened by the within-class covariance, where the distance to
    a class mean is the Mahalanobis distance of a Gaussian class model with one shared covariance (the
    data model's isotropic noise around a prototype, fitted to real images), needing no pretrained
    network. The summary gives, for both spaces and both datasets, the share of outliers and how well
    the nearest class mean classifies test images (how much the class means mean). One arm trains on
    the train set without the outliers, the other without as many random images, the same number in
    each class (drawn with the subset seed; `DataConfig.remove`); the same three training seeds.
(b) Outliers at controlled positions. A fixed 10% of the train images (`SHARE`; the images
    `label_noise` would flip at 10%, each towards the class it would give) are moved a quarter, half
    and all of the way from their class's mean towards that class's mean, keeping their own label
    (`DataConfig.blend_fraction`, `blend_distance`; the data model's outlier (1 - tau) m_c + tau m_c'
    + noise, the image's own deviation kept); against the same 10% of labels flipped.

Predictions, stated before the runs (what the data says is in summary.md, not here):
- The data model and its regime map (`theory.regime_map`; committed table in the `theory` section of
  summary.md: at 10% outliers no rise at tau = 0.25, a small one at 0.5, a large one at 0.75 and 1):
  (a) a smaller rise without the outliers than without as many random images; (b) no rise beyond
  the clean run's at blend 0.25 (equivalent within the margin), at most a small one at 0.5, a clear
  one at 1.0; flipped labels put an image at another class's prototype relative to its label, so a
  clear rise there too, of the order of blend 1.0's.
- "Any memorisation raises the loss": (a) no difference between removing the outliers and removing
  random images (equivalent within the margin: both remove the same number of images to memorise);
  (b) a rise that grows with how hard the images are to fit (the train accuracy on them at the
  minimum of the loss, reported beside each rise), present wherever images must be memorised.
- What tells them apart: (a) a confidently smaller rise for outliers removed than for random removal
  supports the data model, an equivalence supports memorisation; (b) blend 0.25 equivalent to the
  clean run while its images still take memorising (accuracy on them below the others' at the
  minimum), or a rise at blend 1.0 far above that of flips that are as hard to fit, supports the data
  model; a rise tracking fitting difficulty across blends and flips alike supports memorisation.
  Both predict a rise for flips: flips alone decide nothing.

Statistics. The rise of a curve is (loss at the last step - minimum) / minimum. Each seed's minimum
is at the step where the mean curve of the other seeds is lowest (cross-fitting, as the suite's
verdicts do, so picking the minimum does not bias the rise upwards). Intervals are hierarchical over
the 3 seeds and their test images, in closed form as `kphases.phases` computes them: the seed-to-seed
variance plus each seed's test-image variance (delta method on the per-image errors), Student's t
with seeds - 1 degrees of freedom. Differences between conditions are paired by seed and by test
image (every condition has the same test images). "No difference" is claimed only where the 95%
interval of the difference lies within +-`EQUIVALENCE_MARGIN` (2 points of the rise, the suite's
plateau margin). Each condition's curve also gets the suite's three-phase verdict across its seeds
(`reproduce.verdicts.across_seeds`).

Setting (full): the VGG-8 run of `label_noise` (the `full` profile's VGG-8/MNIST main run: 10,000 /
2,000 real MNIST images from the offline data directory, 1,024 iterations, the authors' training) and
the same network and length on 10,000 / 2,000 images of the 30,000-image JPEG q75 CIFAR-10 copy
(`cifar10_jpeg_q75.npz`); seeds 0, 1, 2; penultimate layer, `linear_ridge`, BatchNorm batch
statistics. MNIST's clean runs are those of `phases` (same configs: trained once); its 10% flipped runs
are the configs `label_noise` has at 10% (the `full` profile's `label_noise` runs only 0% and 20%). Smoke: the smoke network (VGG-8 x1/8, 16 iterations) on 256 / 128 embedded MNIST
images, and on 256 / 128 images of `cifar10.npz` where the data directory has it.

Not part of `python -m reproduce.all` (too long for the `full` budget; `--dry-run` prices it on this
machine with the estimate of `reproduce.all --dry-run`). It resumes from the run store.

    python -m reproduce.mechanism --profile full --out paper_figures [--plot-only]
    python -m reproduce.mechanism --profile full --dry-run
    python -m reproduce.mechanism --profile smoke --out /tmp/x
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from kphases import outliers
from kphases.config import DataConfig, RunConfig, measure_profile, profile
from kphases.data import load_dataset
from kphases.entry import start_tensorflow
from kphases.phases import PLATEAU_MARGIN, VerdictSettings
from reproduce import verdicts
from reproduce.all import estimate_text
from reproduce.common import (
    Options,
    PlannedRun,
    Work,
    curve,
    data_directory,
    main_runs,
    parse_options,
    perform,
    run_figure,
    save_figure,
    tidy_rows,
)
from reproduce.plan import describe, plan
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "mechanism"
SEEDS = (0, 1, 2)
SHARE = 0.1
"""Fraction of the train images blended (and of the labels flipped): the regime map's rho = 0.1 and a level of `label_noise`'s
configurations (`ALL_NOISE_LEVELS`)."""
DISTANCES = (0.25, 0.5, 1.0)
SPACES = {"mnist": "pixels", "cifar10": "whitened"}
"""The space of each dataset's outlier measure (module docstring)."""
CIFAR_FILE = "cifar10_jpeg_q75.npz"
SMOKE_CIFAR_FILE = "cifar10.npz"
CONFIDENCE = 0.95
EQUIVALENCE_MARGIN = PLATEAU_MARGIN
"""A difference in rise whose 95% interval lies within +-this (a fraction of the minimum loss) is "no difference"."""
RECONSTRUCTION = dict(instrument="linear_ridge", bn_stats="batch", layer="penultimate")
PRETTY = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


@dataclass(frozen=True)
class MechanismOptions(Options):
    """The figure options; only the smoke and full profiles exist for this figure."""

    profile: Literal["smoke", "full"] = "full"
    """smoke (seconds per run, tiny data: the test path) or full (the experiment: real MNIST and CIFAR-10, 3 seeds, hours on 2 CPU cores)."""
    dry_run: bool = False
    """Print the task graph and the estimated seconds on this machine (`reproduce.costs`, as `reproduce.all --dry-run`); train nothing."""


@dataclass(frozen=True)
class Condition:
    """One arm of the experiment: a name and the DataConfig fields it changes."""

    name: str
    changes: tuple[tuple[str, object], ...] = ()
    experiment: str = ""

    def data(self, base: DataConfig, space: str) -> DataConfig:
        changes = dict(self.changes)
        if "remove" in changes:
            changes["outlier_space"] = space
        return dataclasses.replace(base, **changes)


CONDITIONS = (
    Condition("clean", (), "both"),
    Condition("outliers removed", (("remove", "outliers"),), "a"),
    Condition("random removed", (("remove", "random"),), "a"),
    *(Condition(f"blend {distance:g}", (("blend_fraction", SHARE), ("blend_distance", distance)), "b") for distance in DISTANCES),
    Condition("labels flipped", (("label_noise", SHARE),), "b"),
)

# (first, second, what the data model predicts for first - second, what memorisation predicts)
COMPARISONS = (
    ("outliers removed", "random removed", "smaller", "no difference"),
    ("outliers removed", "clean", "smaller", "smaller"),
    ("random removed", "clean", "smaller", "smaller"),
    ("blend 0.25", "clean", "no difference", "larger, by the blended images' fitting difficulty"),
    ("blend 0.5", "clean", "no difference or small", "larger, by their fitting difficulty"),
    ("blend 1", "clean", "larger", "larger, by their fitting difficulty"),
    ("labels flipped", "clean", "larger", "larger"),
    ("blend 1", "blend 0.25", "larger", "larger only if harder to fit"),
    ("labels flipped", "blend 1", "similar (both at another prototype)", "larger if flips are harder to fit"),
)


def profile_of(options: Options) -> str:
    if options.profile not in ("smoke", "full"):
        raise ValueError(f"--profile {options.profile!r}: figure {NAME} has the profiles smoke and full")
    return options.profile


def base_runs(options: Options) -> list[tuple[str, PlannedRun]]:
    """(dataset, its clean run at seed 0) for each dataset of the profile; measured with linear_ridge only, as `label_noise`."""
    if profile_of(options) == "smoke":
        smoke = profile("smoke")
        measure = dataclasses.replace(measure_profile("smoke"), decoders=("linear_ridge",), probe=False, transfer=(), metrics=())
        bases = [("mnist", PlannedRun("MNIST", smoke, measure))]
        directory = data_directory(options)
        if directory is not None and (directory / SMOKE_CIFAR_FILE).is_file():
            data = DataConfig("cifar10", "directory", train_size=256, test_size=128)
            bases.append(("cifar10", PlannedRun("CIFAR-10", smoke.replace(data=data), measure)))
        return bases
    vgg = next(p for p in main_runs(options) if p.config.model.architecture == "vgg8" and p.config.data.name == "mnist")
    measure = dataclasses.replace(vgg.measure, decoders=("linear_ridge",), probe=False, transfer=(), metrics=())
    directory = data_directory(options)
    if directory is None or not (directory / CIFAR_FILE).is_file():
        raise ValueError(f"figure {NAME} at full needs {CIFAR_FILE} in the data directory (--data-dir or KPHASES_DATA_DIR)")
    cifar = vgg.config.replace(data=DataConfig("cifar10", "directory", file=CIFAR_FILE, train_size=10_000, test_size=2_000))
    return [("mnist", PlannedRun("MNIST", vgg.config, measure)), ("cifar10", PlannedRun("CIFAR-10", cifar, measure))]


def run_label(dataset: str, condition: str, seed: int) -> str:
    return f"{PRETTY[dataset]} / {condition} / seed {seed}"


def planned_runs(options: Options) -> list[tuple[str, Condition, int, PlannedRun]]:
    """(dataset, condition, seed, run) for every arm, dataset and seed."""
    runs = []
    for dataset, base in base_runs(options):
        for condition in CONDITIONS:
            data = condition.data(base.config.data, SPACES[dataset])
            for seed in SEEDS:
                config: RunConfig = base.config.replace(data=data, training=dataclasses.replace(base.config.training, seed=seed))
                runs.append((dataset, condition, seed, PlannedRun(run_label(dataset, condition.name, seed), config, base.measure)))
    return runs


def work(options: Options) -> list[Work]:
    return [Work(planned, (planned.measure,)) for _, _, _, planned in planned_runs(options)]


def driver_seconds(options: Options, calibration) -> float:
    """The within-class whitening fits (covariance and eigendecomposition of the pixels) this figure makes
    outside the run store: one per dataset for the summary's statistics, and one per load of a whitened
    removal arm (its training and its measurement each load the data)."""
    calibration.linear_algebra()
    seconds = 0.0
    for dataset, base in base_runs(options):
        count = base.config.data.train_size or 256
        width = 32 * 32 * (3 if dataset == "cifar10" else 1)
        fits = 1 + (2 * 2 * len(SEEDS) if SPACES[dataset] == "whitened" else 0)
        seconds += fits * (
            2.0 * count * width * width / calibration.flops_per_second + width**3 * calibration.eigendecomposition_seconds_per_cubed
        )
    return seconds


def space_rows(dataset: str, base: PlannedRun, options: Options) -> list[dict]:
    """The share of train images closer to another class's mean and the nearest-mean test accuracy, in each space."""
    data = load_dataset(base.config.data, options.data_dir)
    rows = []
    for space in outliers.OUTLIER_SPACES:
        transform = outliers.fit_space(data.x_train, data.y_train, space)
        train_features = transform(data.x_train)
        share = float(outliers.closer_to_other_mean(train_features, data.y_train).mean())
        classes, cosines = outliers.class_cosines(transform(data.x_test), data.y_train, means_of=train_features)
        accuracy = float(np.mean(classes[np.argmax(cosines, axis=1)] == data.y_test))
        for metric, split, value in (("outlier_share", "train", share), ("nearest_mean_accuracy", "test", accuracy)):
            rows.append(dict(label=f"{PRETTY[dataset]} / space {space}", metric=metric, split=split, value=value, dataset=dataset))
    return rows


def compute(options: Options) -> pd.DataFrame:
    tables, per_image = [], {}
    for dataset, condition, seed, planned in planned_runs(options):
        run, frame = perform(Work(planned, (planned.measure,)), options)
        table = tidy_rows(planned, run, frame)
        tables.append(table.assign(dataset=dataset, condition=condition.name, seed=seed))
        wanted = [(RECONSTRUCTION["layer"], RECONSTRUCTION["instrument"], RECONSTRUCTION["bn_stats"])]
        per_image.update(verdicts.collect(run, frame, planned.label, wanted))
    verdicts.write_per_image(options.out, NAME, per_image)
    for dataset, base in base_runs(options):
        tables.append(pd.DataFrame(space_rows(dataset, base, options)))
    return pd.concat(tables, ignore_index=True)


# --- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rises:
    """One condition's rises: per seed, their test-image variance, and each image's linearised contribution."""

    steps: list[int]
    per_seed: np.ndarray
    within: np.ndarray
    contributions: np.ndarray | None
    """seeds x images (None without per-image errors): rise_s ~ mean over images of these, to first order."""


def minimum_steps(curves: np.ndarray) -> list[int]:
    """Each seed's minimum: the step index where the other seeds' mean curve is lowest (its own with one seed)."""
    if len(curves) == 1:
        return [int(np.argmin(curves[0]))]
    return [int(np.argmin(np.delete(curves, seed, axis=0).mean(axis=0))) for seed in range(len(curves))]


def rises(curves: pd.DataFrame, errors: np.ndarray | None) -> Rises:
    """The rises of one condition's curves (step x seed) and, with per-image errors (seeds x steps x images), their image noise."""
    values = curves.to_numpy().T
    minima = minimum_steps(values)
    per_seed = np.array([(row[-1] - row[low]) / row[low] for row, low in zip(values, minima)])
    if errors is None:
        return Rises([int(step) for step in curves.index], per_seed, np.zeros(len(per_seed)), None)
    contributions = []
    for seed_errors, low in zip(errors, minima):
        last, lowest = seed_errors[-1].mean(), seed_errors[low].mean()
        # delta method: d(a/b) = da/b - a db/b^2, with a, b the mean errors at the last step and the minimum
        contributions.append(seed_errors[-1] / lowest - last * seed_errors[low] / lowest**2)
    contributions = np.asarray(contributions)
    within = contributions.var(axis=1, ddof=1) / contributions.shape[1]
    return Rises([int(step) for step in curves.index], per_seed, within, contributions)


def interval(per_seed: np.ndarray, within: np.ndarray) -> tuple[float, float, float]:
    """Mean and hierarchical CONFIDENCE interval over seeds (seed variance plus mean within-seed variance); nan bounds for one seed."""
    mean = float(per_seed.mean())
    if len(per_seed) < 2:
        return mean, math.nan, math.nan
    critical = float(student_t.ppf(0.5 + CONFIDENCE / 2, len(per_seed) - 1))
    half = critical * math.sqrt((float(per_seed.var(ddof=1)) + float(within.mean())) / len(per_seed))
    return mean, mean - half, mean + half


def difference(first: Rises, second: Rises) -> tuple[float, float, float]:
    """first - second, paired by seed and (where both have per-image errors) by test image."""
    per_seed = first.per_seed - second.per_seed
    if first.contributions is not None and second.contributions is not None:
        paired = first.contributions - second.contributions
        within = paired.var(axis=1, ddof=1) / paired.shape[1]
    else:
        within = first.within + second.within
    return interval(per_seed, within)


def reading(low: float, high: float) -> str:
    """What an interval of a difference says: its sign where it excludes 0, and equivalence where it lies within the margin."""
    if math.isnan(low):
        return "no interval (one seed)"
    equivalent = -EQUIVALENCE_MARGIN < low and high < EQUIVALENCE_MARGIN
    if low > 0:
        return "larger" + (" (by less than the margin)" if equivalent else "")
    if high < 0:
        return "smaller" + (" (by less than the margin)" if equivalent else "")
    return (
        f"no difference (equivalent within +-{EQUIVALENCE_MARGIN:.0%})"
        if equivalent
        else "undecided (neither a difference nor equivalence)"
    )


def condition_curves(
    table: pd.DataFrame, dataset: str, condition: str, metric: str = "reconstruction_mse", split: str = "test", **selection
):
    """step x seed values of one condition, and the seeds' run labels."""
    rows = table[(table["dataset"] == dataset) & (table["condition"] == condition)]
    labels = {int(seed): label for label, seed in dict.fromkeys(zip(rows["label"], rows["seed"]))}
    frame = pd.DataFrame({seed: curve(rows, label, metric, split, **selection) for seed, label in sorted(labels.items())}).sort_index()
    return frame, [labels[seed] for seed in sorted(labels)]


def seed_errors(per_image: dict, labels: list[str], steps: list[int]) -> np.ndarray | None:
    """seeds x steps x images per-image errors of the labels' reconstruction curves (None unless every seed has them at these steps)."""
    keys = [
        verdicts.curve_key(label, RECONSTRUCTION["layer"], RECONSTRUCTION["instrument"], RECONSTRUCTION["bn_stats"]) for label in labels
    ]
    stored = [per_image.get(key) for key in keys]
    if any(item is None or list(item[0]) != steps for item in stored) or len({item[1].shape[1] for item in stored}) != 1:
        return None
    return np.stack([item[1] for item in stored]).astype(np.float64)


# --- figure ----------------------------------------------------------------------------------------


def _format(mean: float, low: float, high: float) -> str:
    return f"{mean:+.1%}" + (f" [{low:+.1%}, {high:+.1%}]" if not math.isnan(low) else "")


def condition_line(table: pd.DataFrame, dataset: str, condition: Condition, per_image: dict) -> tuple[str, Rises, pd.DataFrame]:
    curves, labels = condition_curves(table, dataset, condition.name, **RECONSTRUCTION)
    result = verdicts.across_seeds(per_image, curves, labels, **RECONSTRUCTION, settings=VerdictSettings(confidence=CONFIDENCE))
    steps = [int(step) for step in curves.index]
    found = rises(curves, seed_errors(per_image, labels, steps))
    minimum = steps[minimum_steps(curves.to_numpy().T.mean(axis=0, keepdims=True))[0]]
    hard_split = {"labels flipped": "train_flipped"}.get(condition.name, "train_blended" if condition.name.startswith("blend") else None)
    hard = "-"
    if hard_split:
        accuracy, _ = condition_curves(table, dataset, condition.name, "classifier_accuracy", hard_split)
        hard = f"{accuracy.mean(axis=1).loc[minimum]:.3f} / {accuracy.mean(axis=1).iloc[-1]:.3f}"
    train, _ = condition_curves(table, dataset, condition.name, "classifier_accuracy", "train")
    test, _ = condition_curves(table, dataset, condition.name, "classifier_accuracy", "test")
    sizes = table[(table["dataset"] == dataset) & (table["condition"] == condition.name)]["data"].dropna()
    size = next((part.split("=")[1] for text in sizes for part in text.split() if part.startswith("train=")), "?")
    described = result.describe() if result is not None else f"no verdict ({curves.shape[1]} seed(s))"
    line = (
        f"| {condition.name} | {size} | {curves.shape[1]} | {_format(*interval(found.per_seed, found.within))} | {minimum} | {hard} | "
        f"{train.mean(axis=1).iloc[-1]:.3f} | {test.mean(axis=1).iloc[-1]:.3f} | {described} |"
    )
    return line, found, curves


def dataset_section(table: pd.DataFrame, dataset: str, per_image: dict, axes) -> tuple[str, list[str]]:
    """The markdown of one dataset (spaces, conditions, comparisons), drawing its panels; and its headline parts."""
    spaces = table[(table["dataset"] == dataset) & table["label"].str.contains(" / space ")]
    lines = [
        f"### {PRETTY[dataset]} (outlier space: {SPACES[dataset]})",
        "",
        "| space | train images closer to another class's mean | nearest-mean test accuracy |",
        "|---|---|---|",
    ]
    for space in outliers.OUTLIER_SPACES:
        rows = spaces[spaces["label"] == f"{PRETTY[dataset]} / space {space}"].set_index("metric")["value"]
        lines.append(f"| {space} | {rows.get('outlier_share', math.nan):.1%} | {rows.get('nearest_mean_accuracy', math.nan):.3f} |")
    lines += [
        "",
        "| condition | train images | seeds | rise (last - min) / min, mean [95% hierarchical CI] | minimum at | train acc of the moved/flipped images at min / last | final train acc | final test acc | three-phase verdict across seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    found = {}
    for condition in CONDITIONS:
        line, found[condition.name], curves = condition_line(table, dataset, condition, per_image)
        lines.append(line)
        axis = axes[0] if condition.experiment in ("a", "both") else None
        for target in (axis, axes[1] if condition.experiment in ("b", "both") else None):
            if target is not None:
                target.plot(step_position(curves.index), curves.mean(axis=1), "o-", ms=2.5, lw=1, label=condition.name)
    lines += [
        "",
        "| comparison (rise difference) | data model predicts | memorisation predicts | difference [95% CI] | the data |",
        "|---|---|---|---|---|",
    ]
    headline = []
    for first, second, model, memorisation in COMPARISONS:
        mean, low, high = difference(found[first], found[second])
        lines.append(f"| {first} - {second} | {model} | {memorisation} | {_format(mean, low, high)} | {reading(low, high)} |")
        if (first, second) in (("outliers removed", "random removed"), ("blend 0.25", "clean"), ("blend 1", "clean")):
            headline.append(f"{PRETTY[dataset]} {first} - {second} {_format(mean, low, high)}")
    positions = np.arange(len(CONDITIONS))
    for position, condition in zip(positions, CONDITIONS):
        mean, low, high = interval(found[condition.name].per_seed, found[condition.name].within)
        error = None if math.isnan(low) else [[(mean - low) * 100], [(high - mean) * 100]]
        axes[2].errorbar([position], [mean * 100], yerr=error, fmt="o", color=f"C{position}", capsize=3)
    axes[2].set_xticks(positions, [condition.name for condition in CONDITIONS], rotation=45, ha="right", fontsize=6)
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_ylabel("rise (% of the minimum)")
    for axis, title in zip(axes[:2], ("(a) outliers removed vs random", "(b) blends towards another class vs flips")):
        axis.set_title(f"{PRETTY[dataset]}: {title}", fontsize=8)
        axis.set_ylabel("reconstruction loss (test MSE)")
        axis.legend(fontsize=6)
        log_step_axis(axis, curves.index)
    return "\n".join(lines), headline


def plot(table: pd.DataFrame, options: Options):
    datasets = [dataset for dataset in SPACES if dataset in set(table["dataset"].dropna())]
    figure, axes = grid(3 * len(datasets), columns=3, width=4.0, height=3.2)
    per_image = verdicts.read_per_image(options.out, NAME)
    sections, headline = [], []
    for index, dataset in enumerate(datasets):
        section, parts = dataset_section(table, dataset, per_image, axes[3 * index : 3 * index + 3])
        sections.append(section)
        headline += parts
    figure.suptitle(
        f"The mechanism against memorisation ({options.profile} profile: VGG-8, penultimate layer, linear_ridge; mean of the seeds)",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, options, NAME)
    note = (
        f"Rise = (loss at the last step - minimum) / minimum, each seed's minimum where the other seeds' mean is lowest; 95% intervals "
        f"hierarchical over seeds and test images; 'no difference' only where the interval lies within +-{EQUIVALENCE_MARGIN:.0%}. "
        "Predictions: the module docstring of `reproduce.mechanism`."
    )
    return "; ".join(headline), note + "\n\n" + "\n\n".join(sections)


def main(argv: Sequence[str] | Options | None = None) -> str:
    options = argv if isinstance(argv, Options) else parse_options(__doc__, argv, MechanismOptions, prog=f"python -m reproduce.{NAME}")
    if getattr(options, "dry_run", False):
        return dry_run(options)
    return run_figure(NAME, compute, plot, options, __doc__)


def dry_run(options: Options) -> str:
    """The figure's task graph and its calibrated estimate, by the machinery of `python -m reproduce.all --dry-run`."""
    start_tensorflow()
    modules = {NAME: sys.modules[__name__]}
    text = f"profile {options.profile}:\n{describe(plan(modules, options))}\n\n{estimate_text(modules, options)[1]}"
    print(text)
    return text


if __name__ == "__main__":
    main()
