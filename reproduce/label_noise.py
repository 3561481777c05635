"""Figure `label_noise`: does phase 3 grow with the number of hard-to-fit examples (VGG-8, real MNIST)?

The paper's data model explains phase (iii) by "fitting the few": most examples of a class sit near
its prototype and are fitted first; a few sit far from it and are fitted last, and fitting them
costs information about the input, so the reconstruction loss rises. Flipped labels are such
examples on real data: an image whose label names another class cannot be fitted from its class's
prototype. If the mechanism is right, phase (iii) grows with the number of flipped labels, and it
coincides with the network fitting them. This is a test of the authors' explanation, not one of
their figures (they train on clean labels only).

Setting (full): the VGG-8/MNIST run of figure `phases` (10,000 train / 2,000 test real
MNIST images from the offline data directory, 1,024 iterations, the authors' training), with 0%,
10% and 20% of the train labels replaced by another class (`DataConfig.label_noise`: exactly that
fraction, the same in every class, fixed by the subset seed; the test labels are never changed),
3 seeds each. The 0% / seed 0 run is the `phases` run itself (same config: trained once). Measured:
reconstruction loss of the penultimate layer (`linear_ridge`, BatchNorm batch statistics, as in
`phases`) and, at every snapshot, the classifier's accuracy on the test split, on the clean train
examples and on the flipped ones (against the flipped label: how many it has fitted; and against
the true label). The verdict on each noise level's reconstruction curve is the
suite's verdict across the 3 seeds (`kphases.phases.phase_verdict`, default settings; hierarchical
over the seeds and their test images where the per-image errors are saved); the rise of each
noise level over the clean one is a paired (by seed) t-interval of the per-seed rise from the
minimum to the last step.

    python -m reproduce.label_noise [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: the VGG-8/MNIST main run of the profile with flipped labels. quick: 0% and 20% (the ends of
the range) on the embedded MNIST with VGG-8 x1/8, one seed, at 6 snapshots (`measured_steps`), for
time: each level's verdict is over that seed's test images and its rise has no interval across seeds
(the table says so). full: 0% and 20% on 10,000 / 2,000 real MNIST images at 6 snapshots, 3 seeds per level
(10% flipped at full scale is an arm of figure `mechanism`)
(the seed-level intervals need 3; its clean runs are the `phases` runs' seeds: trained once). The 0% /
seed 0 run is the `phases` run in every profile. The CSV and summary.md hold the numbers.

What you should see (full, the committed figure): the verdict and the rise per noise level, with their intervals, and the
accuracies on clean and flipped labels are the table in `paper_figures/summary.md` (curves in
`paper_figures/label_noise.csv`); phase (iii) grows with the number of flipped labels.
"""

from __future__ import annotations

import dataclasses
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from kphases.phases import VerdictSettings
from reproduce import verdicts
from reproduce.common import Options, PlannedRun, Work, curve, main_runs, measured_steps, perform, run_figure, save_figure, tidy_rows
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "label_noise"
NOISE_LEVELS = {"quick": (0.0, 0.2), "full": (0.0, 0.2)}
"""Fractions of flipped train labels per profile (others: 0%, 10% and 20%); quick and full keep the ends, for time
(figure `mechanism` trains 10% at full scale)."""
ALL_NOISE_LEVELS = (0.0, 0.1, 0.2)
SEEDS = {"quick": (0,)}
"""Training seeds per profile (others: 0, 1, 2, which the seed-level intervals need); quick one, for time: its
verdicts are over that seed's test images and its rises have no interval, and the table says so."""
ALL_SEEDS = (0, 1, 2)
CONFIDENCE = 0.95
RECONSTRUCTION = dict(instrument="linear_ridge", bn_stats="batch", layer="penultimate")


def base_run(options: Options) -> PlannedRun:
    """The profile's VGG-8/MNIST main run (figure `phases`): the 0% / seed 0 run of this figure."""
    for planned in main_runs(options):
        if planned.config.model.architecture == "vgg8" and planned.config.data.name == "mnist":
            return planned
    raise RuntimeError(f"profile {options.profile} has no VGG-8/MNIST main run; its runs: {[p.label for p in main_runs(options)]}")


def planned_runs(options: Options) -> list[PlannedRun]:
    """One run per (noise level, seed); labelled 'noise 10% / seed 1'. Measured with linear_ridge only."""
    base = base_run(options)
    # The closed-form decoder only: the probe and transfer heads are not what this figure asks about.
    measure = dataclasses.replace(
        base.measure, decoders=("linear_ridge",), probe=False, transfer=(), metrics=(), steps=measured_steps(options)
    )
    runs = []
    for level in NOISE_LEVELS.get(options.profile, ALL_NOISE_LEVELS):
        for seed in SEEDS.get(options.profile, ALL_SEEDS):
            config = base.config.replace(
                data=dataclasses.replace(base.config.data, label_noise=level), training=dataclasses.replace(base.config.training, seed=seed)
            )
            runs.append(PlannedRun(f"noise {level:.0%} / seed {seed}", config, measure))
    return runs


def work(options: Options) -> list[Work]:
    return [Work(planned, (planned.measure,)) for planned in planned_runs(options)]


def compute(options: Options) -> pd.DataFrame:
    tables, per_image = [], {}
    for item in work(options):
        run, frame = perform(item, options)
        table = tidy_rows(item.planned, run, frame)
        tables.append(table.assign(label_noise=item.planned.config.data.label_noise, seed=item.planned.config.training.seed))
        wanted = [(RECONSTRUCTION["layer"], RECONSTRUCTION["instrument"], RECONSTRUCTION["bn_stats"])]
        per_image.update(verdicts.collect(run, frame, item.planned.label, wanted))
    verdicts.write_per_image(options.out, NAME, per_image)
    return pd.concat(tables, ignore_index=True)


# --- statistics ----------------------------------------------------------------------------------


def by_seed(table: pd.DataFrame, level: float, metric: str, split: str = "test", **selection) -> pd.DataFrame:
    """step x seed values of one noise level."""
    rows = table[np.isclose(table["label_noise"].astype(float), level)]
    return pd.DataFrame(
        {int(seed): curve(rows, label, metric, split, **selection) for label, seed in dict.fromkeys(zip(rows["label"], rows["seed"]))}
    ).sort_index()


def verdict(curves: pd.DataFrame, per_image: dict, labels: list[str]):
    """The phase verdict on one noise level's curves (step x seed, the seeds' run labels in `labels`): the
    one place this figure decides. With >= 3 seeds: the suite's verdict across seeds, hierarchical over the
    seeds and their test images (`reproduce.verdicts.across_seeds`). With one seed (quick): that seed's
    verdict over its test images (`reproduce.verdicts.verdict`; its line says "one seed"). With two there is
    no interval across seeds, and None is returned (the table says so rather than giving a verdict without one)."""
    settings = VerdictSettings(confidence=CONFIDENCE)
    if curves.shape[1] == 1:
        return verdicts.verdict(per_image, curves.iloc[:, 0].dropna(), labels[0], **RECONSTRUCTION, settings=settings)
    return verdicts.across_seeds(per_image, curves, labels, **RECONSTRUCTION, settings=settings)


def seed_labels(table: pd.DataFrame, level: float, seeds) -> list[str]:
    """The run labels of one noise level's seeds, in the order of `seeds`."""
    rows = table[np.isclose(table["label_noise"].astype(float), level)]
    by_seed_label = {int(seed): label for label, seed in zip(rows["label"], rows["seed"])}
    return [by_seed_label[int(seed)] for seed in seeds]


def t_interval(values) -> tuple[float, float, float]:
    """Mean and the two-sided CONFIDENCE Student-t interval of the mean (nan bounds for < 2 values)."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(student_t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1)) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def rise_per_seed(curves: pd.DataFrame) -> pd.Series:
    """Each seed's rise from its minimum to the last step, as a fraction of its initial loss."""
    return (curves.iloc[-1] - curves.min()) / curves.iloc[0].abs()


# --- figure ----------------------------------------------------------------------------------------


def plot(table: pd.DataFrame, options: Options):
    levels = sorted(float(level) for level in table["label_noise"].unique())
    figure, axes = grid(3, columns=3, width=4.0, height=3.3)
    reconstruction_axis, accuracy_axis, rise_axis = axes[:3]
    per_image = verdicts.read_per_image(options.out, NAME)
    lines = [
        "| label noise | seeds | verdict (95% intervals: across seeds, or one seed's test images) | rise min->last per seed, mean [95% CI] | "
        "rise minus 0%'s, paired by seed [95% CI] | train acc clean / flipped at the minimum | final test acc | "
        "final train acc clean | flipped fitted (final) | flipped predicted as true class (final) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rises = {}
    headline_parts = []
    for index, level in enumerate(levels):
        colour = f"C{index}"
        curves = by_seed(table, level, "reconstruction_mse", **RECONSTRUCTION)
        mean = curves.mean(axis=1)
        result = verdict(curves, per_image, seed_labels(table, level, curves.columns))
        band = (result.curve_low, result.curve_high) if result is not None else (curves.min(axis=1), curves.max(axis=1))
        reconstruction_axis.fill_between(step_position(curves.index), *band, color=colour, alpha=0.2, lw=0)
        reconstruction_axis.plot(step_position(curves.index), mean, "o-", color=colour, ms=3, label=f"{level:.0%} flipped")
        clean = by_seed(table, level, "classifier_accuracy", "train_clean" if level else "train")
        flipped = by_seed(table, level, "classifier_accuracy", "train_flipped") if level else None
        flipped_true = by_seed(table, level, "classifier_accuracy", "train_flipped_true") if level else None
        test = by_seed(table, level, "classifier_accuracy", "test")
        accuracy_axis.plot(step_position(clean.index), clean.mean(axis=1), "-", color=colour, lw=1.2, label=f"{level:.0%}: clean train")
        if flipped is not None:
            accuracy_axis.plot(
                step_position(flipped.index),
                flipped.mean(axis=1),
                "--",
                color=colour,
                lw=1.2,
                label=f"{level:.0%}: flipped train (own label)",
            )
        accuracy_axis.plot(step_position(test.index), test.mean(axis=1), ":", color=colour, lw=1, label=f"{level:.0%}: test")
        rise = rise_per_seed(curves)
        rises[level] = rise
        rise_mean, rise_low, rise_high = t_interval(rise)
        rise_axis.errorbar(
            [level * 100],
            [rise_mean * 100],
            yerr=[[(rise_mean - rise_low) * 100], [(rise_high - rise_mean) * 100]] if not math.isnan(rise_low) else None,
            fmt="o",
            color=colour,
            capsize=4,
        )
        difference = "-"
        if level and 0.0 in rises:
            paired = (rise - rises[0.0]).dropna()
            d_mean, d_low, d_high = t_interval(paired)
            difference = f"{d_mean:+.1%} [{d_low:+.1%}, {d_high:+.1%}]" if len(paired) > 1 else f"{d_mean:+.1%} (1 seed)"
        minimum = int(mean.idxmin())
        at_minimum = f"{clean.mean(axis=1).loc[minimum]:.3f} / " + (
            f"{flipped.mean(axis=1).loc[minimum]:.3f}" if flipped is not None else "-"
        )
        rise_text = f"{rise_mean:.1%} " + (f"[{rise_low:.1%}, {rise_high:.1%}]" if not math.isnan(rise_low) else "(one seed: no interval)")
        described = (
            result.describe() if result is not None else f"no verdict: {curves.shape[1]} seeds, intervals need 1 (its test images) or >= 3"
        )
        lines.append(
            f"| {level:.0%} | {curves.shape[1]} | {described} | {rise_text} | "
            f"{difference} | {at_minimum} (iteration {minimum}) | {test.mean(axis=1).iloc[-1]:.3f} | "
            f"{clean.mean(axis=1).iloc[-1]:.3f} | "
            + (f"{flipped.mean(axis=1).iloc[-1]:.3f} | {flipped_true.mean(axis=1).iloc[-1]:.3f} |" if flipped is not None else "- | - |")
        )
        headline_parts.append(
            f"{level:.0%}: rise {rise_mean:.1%}" + (f" [{rise_low:.1%}, {rise_high:.1%}]" if not math.isnan(rise_low) else "")
        )
    reconstruction_axis.set_ylabel("reconstruction loss (per-element test MSE)")
    reconstruction_axis.set_title("penultimate layer, linear_ridge (mean; band: 95% seed interval)", fontsize=8)
    reconstruction_axis.legend(fontsize=7)
    log_step_axis(reconstruction_axis, curves.index)
    accuracy_axis.set_ylim(0, 1.02)
    accuracy_axis.set_ylabel("classifier accuracy (mean over seeds)")
    accuracy_axis.set_title("train accuracy on clean and flipped examples", fontsize=8)
    accuracy_axis.legend(fontsize=6)
    log_step_axis(accuracy_axis, clean.index)
    rise_axis.axhline(0, color="grey", lw=0.8)
    rise_axis.set_xlabel("train labels flipped (%)")
    rise_axis.set_ylabel("rise min -> last step (% of initial loss)")
    rise_axis.set_title("phase (iii) size per seed: mean, 95% t-interval", fontsize=8)
    rise_axis.set_xticks([level * 100 for level in levels])
    data = table["data"].dropna()
    described_data = (
        data[data.str.contains("train=")].iloc[0].split(" label_noise")[0].split(" train=")[0] if data.str.contains("train=").any() else ""
    )
    figure.suptitle(
        f"Phase (iii) against flipped train labels ({options.profile} profile: VGG-8, {described_data}, "
        f"{int(table['step'].max())} iterations)",
        fontsize=9,
    )
    figure.tight_layout()
    save_figure(figure, options, NAME)
    return "; ".join(headline_parts), "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
