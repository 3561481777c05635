"""Figure `information_plane`: the information-bottleneck lens beside reconstruction, on the same snapshots.

Shwartz-Ziv & Tishby (2017) read training off the information plane, I(X;T) against
I(T;Y) for each layer T: first both rise ("fitting"), then I(X;T) falls ("compression"). Saxe et
al. (ICLR 2018) found the compression with saturating tanh nets only and traced it to the binning
estimator. Schneider & Prabhushankar's reconstruction loss asks the same question (how much of
the input does the layer keep?) with a decoder. This figure puts the two accounts side by side
for one network trained twice, with tanh and with ReLU after every BatchNorm (VGG-8 at width 1/8,
so that the penultimate layer has 64 dimensions and the logits 10). Per activation (one row):
- information plane by binning (30 uniform bins over the layer's observed range), and
- information plane by the Kolchinsky-Tracey KDE upper bound (noise variance 0.1, Saxe et al.), and
- information plane by the same bound with the noise scaled to each layer and snapshot (variance
  0.1 x the layer's total variance: invariant to the activations' scale, `kphases.information`),
  one trajectory per probe point in each, points coloured by iteration (bits, a stratified 1,000
  image subset of the measurement test split);
- I(X;T) of each estimator against iteration, on the same log2 axis as
- the reconstruction loss of the penultimate layer (affine decoder with its ridge chosen by GCV on
  the train split, `linear_ridge`, test MSE; shaded: the phases the suite's verdict is confident of:
  across the seeds where there are 3, `reproduce.verdicts.judge`, hierarchical over seeds then test
  images, their mean dashed with the min-max band; over one seed's test images otherwise), and the
  linear-probe and classifier test accuracies. The information-plane panels are seed 0's.
Features are taken with BatchNorm in batch mode, as every other figure measures them.

    python -m reproduce.information_plane [--profile smoke|quick|full|paper] [--plot-only] [--out DIR] [--data-dir DIR]

Scale: VGG-8 x1/8 with tanh and with ReLU, 1,024 iterations: quick on the embedded 4,000 / 1,000
MNIST images (one seed, at 6 snapshots, `reproduce.common.measured_steps`; the ReLU network is the
quick main run of `phases`, trained once), full on 10,000 / 2,000 real MNIST images (3 seeds, seed 0 drawn, at the same 6 snapshots); smoke: 16
iterations on 256 embedded images; paper: full width on tfds MNIST for 257 epochs (GPU). The CSV
and summary.md hold the numbers.

What you should see (full, the committed figure): the information-plane trajectories are in
`paper_figures/information_plane.csv`, the compression counts and the reconstruction verdicts
(`kphases.phases.phase_verdict`, default settings) in `paper_figures/summary.md`. In words (full):
binning and the fixed-noise KDE sit at their ceiling (log2 of the images, log2 10 for I(T;Y)) for
block4 and penultimate at every snapshot, tanh and ReLU alike, so they cannot see training on
layers this wide, and only the KDE on the 10 logits moves; the scale-free KDE shows I(X;T) falling
from the first iterations in every layer while I(T;Y) rises, with no rise of I(X;T) before it.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, measure_profile, profile
from reproduce import verdicts as figure_verdicts
from reproduce.common import (
    SEED_MARK,
    Options,
    PlannedRun,
    Work,
    curve,
    has_offline,
    measured_steps,
    perform,
    replicas,
    run_figure,
    save_figure,
    tidy_rows,
)
from reproduce.plotting import draw_seeds, log_step_axis, phase_legend_handles, shade_verdict, step_position

NAME = "information_plane"
ACTIVATIONS = ("tanh", "relu")
WIDTH = 0.125  # VGG-8 x1/8: penultimate 64-d, small enough that the estimators are not all pinned at log2 n
DECODER_LAYER = "penultimate"
DECODER = "linear_ridge"  # the reconstruction curve beside the information plane
INFORMATION_LAYERS = {
    "smoke": ("penultimate", "logits"),
    "quick": ("block4", "penultimate", "logits"),
    "full": ("block4", "penultimate", "logits"),
    "paper": ("block3", "block4", "penultimate", "logits"),
}
RELATIVE_NOISE = 0.1  # the scale-free KDE: noise variance 0.1 x the layer's total variance (kphases.information)
ESTIMATORS = ("binning", "kde", "kde_relative")
# A compression phase: I(X;T) ends at least this far (bits) below its maximum, reached before the last snapshot.
COMPRESSION_BITS = 0.1


def planned_runs(options: Options) -> list[PlannedRun]:
    """The tanh and ReLU variant of one network at the profile's scale, measured for this figure."""
    name = options.profile
    measure = dataclasses.replace(
        measure_profile(name),
        decoders=(DECODER,),
        transfer=(),
        layers=(DECODER_LAYER,),
        metrics=("mutual_information",),
        mi_relative_noise=RELATIVE_NOISE,
        steps=measured_steps(options),
    )
    if name == "smoke":
        base = profile("smoke")
        data, training, pretty = base.data, base.training, "MNIST (embedded)"
        measure = dataclasses.replace(measure, mi_samples=128)
    elif name == "quick":
        training = TrainingConfig(duration="1024it")
        data, pretty = DataConfig(name="mnist", source="embedded"), "MNIST (embedded)"
    elif name == "full":
        training = TrainingConfig(duration="1024it")
        if not has_offline("mnist", options):
            raise ValueError("information_plane full: needs mnist.npz in the data directory (--data-dir or KPHASES_DATA_DIR)")
        data, pretty = DataConfig(name="mnist", source="directory", train_size=10_000, test_size=2_000), "MNIST 10k"
    else:
        paper = profile("paper")
        data, training, pretty = DataConfig(name="mnist", source="tfds"), paper.training, "MNIST"
    width = 1.0 if name == "paper" else WIDTH
    runs = []
    for activation in ACTIVATIONS:
        config = RunConfig(data=data, model=ModelConfig("vgg8", width=width, activation=activation), training=training)
        runs.append(PlannedRun(f"VGG-8 x{width:g} {activation} / {pretty}", config, measure))
    return runs


def work(options: Options) -> list[Work]:
    """Both activations' runs: decoder and probe on the penultimate layer, the (cheap) estimators on every probe point."""
    items = []
    for planned in [run for first in planned_runs(options) for run in (first, *replicas(first, options))]:
        extra = [layer for layer in INFORMATION_LAYERS[options.profile] if layer != DECODER_LAYER]
        information_only = dataclasses.replace(planned.measure, layers=tuple(extra), decoders=(), probe=False)
        items.append(Work(planned, (planned.measure, information_only)))
    return items


def compute(options: Options) -> pd.DataFrame:
    tables, per_image = [], {}
    for item in work(options):
        run, frame = perform(item, options)
        table = tidy_rows(item.planned, run, frame)
        table["activation"] = item.planned.config.model.activation
        tables.append(table)
        per_image.update(figure_verdicts.collect(run, frame, item.planned.label, [(DECODER_LAYER, DECODER, "batch")]))
    figure_verdicts.write_per_image(options.out, NAME, per_image)
    return pd.concat(tables, ignore_index=True)


def information_curves(table: pd.DataFrame, label: str, estimator: str) -> dict[str, pd.DataFrame]:
    """layer -> DataFrame(step, mi_x_t, mi_t_y) for one run and estimator prefix ("binning" or "kde")."""
    part = table[
        (table["label"] == label)
        & table["instrument"].astype(str).str.startswith(estimator + ":")
        & table["metric"].isin(["mi_x_t", "mi_t_y"])
    ]
    result = {}
    for layer, group in part.groupby("layer", sort=False):
        wide = group.drop_duplicates(["step", "metric"], keep="last").pivot(index="step", columns="metric", values="value")
        result[layer] = wide.sort_index()
    return result


def compression(series: pd.Series) -> tuple[float, int]:
    """(bits I(X;T) falls from its maximum to the last snapshot, step of the maximum)."""
    peak_step = int(series.idxmax())
    return float(series.max() - series.iloc[-1]), peak_step


def plot(table: pd.DataFrame, options: Options):
    labels = [label for label in dict.fromkeys(table["label"]) if SEED_MARK not in label]  # seed 0 drawn; the further seeds are in the CSV
    per_image = figure_verdicts.read_per_image(options.out, NAME)
    columns = len(ESTIMATORS) + 2
    figure, axes = plt.subplots(len(labels), columns, figsize=(4.5 * columns, 4.0 * len(labels) + 0.8), squeeze=False, layout="constrained")
    steps = sorted(int(step) for step in table["step"].unique())
    norm = LogNorm(vmin=1, vmax=max(steps[-1], 2))
    cmap = plt.get_cmap("viridis")
    markers = dict(zip(["block3", "block4", "penultimate", "logits"], ["s", "^", "o", "D"]))
    lines = [
        "| run | layer | estimator | I(X;T) step 0 -> max (step) -> last | I(T;Y) step 0 -> last | compression |",
        "|---|---|---|---|---|---|",
    ]
    verdicts, handles, judged, band = [], [], [], []
    for row, label in enumerate(labels):
        for column, estimator in enumerate(ESTIMATORS):
            axis = axes[row][column]
            for layer, wide in information_curves(table, label, estimator).items():
                x, y = wide["mi_x_t"].values, wide["mi_t_y"].values
                axis.plot(x, y, "-", color="grey", lw=0.6, zorder=1)
                axis.scatter(
                    x,
                    y,
                    c=step_position(wide.index),
                    cmap=cmap,
                    norm=norm,
                    marker=markers.get(layer, "o"),
                    s=22,
                    edgecolors="black",
                    linewidths=0.3,
                    zorder=2,
                    label=layer,
                )
                drop, peak = compression(wide["mi_x_t"])
                compressed = drop >= COMPRESSION_BITS and peak != wide.index[-1]
                verdicts.append((label, layer, estimator, compressed))
                lines.append(
                    f"| {label} | {layer} | {estimator} | {wide['mi_x_t'].iloc[0]:.2f} -> {wide['mi_x_t'].max():.2f} ({peak}) -> "
                    f"{wide['mi_x_t'].iloc[-1]:.2f} | {wide['mi_t_y'].iloc[0]:.2f} -> {wide['mi_t_y'].iloc[-1]:.2f} | "
                    f"{f'yes, {drop:.2f} bits after step {peak}' if compressed else f'no ({drop:.2f} bits)'} |"
                )
            samples = table.loc[table["label"] == label, "data"].astype(str).str.extract(r"mi_samples=(\d+)")[0].dropna()
            if len(samples):  # the ceilings: I(X;T) <= log2 n (n distinct images), I(T;Y) <= H(Y) <= log2 classes
                axis.axvline(np.log2(int(samples.iloc[0])), color="grey", ls=":", lw=1)
                axis.axhline(np.log2(10), color="grey", ls=":", lw=1)
            instrument = next(iter(table.loc[table["instrument"].astype(str).str.startswith(estimator + ":"), "instrument"]), estimator)
            axis.set_xlabel("I(X;T) (bits)")
            axis.set_ylabel("I(T;Y) (bits)")
            axis.set_title(f"{label}\ninformation plane, {instrument} (dotted: log2 n, log2 10)", fontsize=8)
            axis.legend(loc="lower right", fontsize=6)
        # I(X;T) against iteration, both estimators, every layer.
        axis = axes[row][len(ESTIMATORS)]
        for estimator, style in zip(ESTIMATORS, ("-", "--", ":")):
            for index, (layer, wide) in enumerate(information_curves(table, label, estimator).items()):
                axis.plot(
                    step_position(wide.index),
                    wide["mi_x_t"].values,
                    style,
                    color=f"C{index}",
                    marker=markers.get(layer, "o"),
                    ms=3,
                    lw=1,
                    label=f"{layer}, {estimator}",
                )
        log_step_axis(axis, steps)
        axis.set_ylabel("I(X;T) (bits)")
        axis.set_title("I(X;T) against iteration", fontsize=8)
        axis.legend(fontsize=6)
        # Reconstruction and accuracy: the other account of the same snapshots.
        axis = axes[row][len(ESTIMATORS) + 1]
        phases, seeds = figure_verdicts.judge(per_image, table, label, DECODER_LAYER, DECODER, "batch")  # across seeds where there are >= 3
        series = seeds[label].dropna()
        judged.append(phases)
        if phases is not None:
            shade_verdict(axis, phases.steps, phases)
        lines_phase = figure_verdicts.describe(phases, series)
        handles = axis.plot(
            step_position(series.index),
            series.values,
            "o-",
            color="black",
            ms=3,
            label=f"reconstruction, {DECODER_LAYER} (test MSE, seed 0)",
        )
        band = draw_seeds(axis, seeds) or band  # in the legend where any panel has seeds
        axis.set_ylabel("reconstruction loss (per-element MSE)")
        twin = axis.twinx()
        for metric, split, instrument, style, name in (
            ("classifier_accuracy", "test", None, "C0-", "classifier test acc"),
            ("probe_accuracy", "test", "probe", "C2-", "linear probe test acc"),
        ):
            values = curve(table, label, metric, split, instrument=instrument)
            values = values[values.index.isin(series.index)]
            handles += twin.plot(step_position(values.index), values.values, style, lw=1, label=name)
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("accuracy")
        log_step_axis(axis, steps)
        axis.set_title(f"reconstruction: {lines_phase.split(':')[0]}", fontsize=8)
        lines.append(f"| {label} | {DECODER_LAYER} | reconstruction ({DECODER}) | {lines_phase} | | |")
    colourbar = figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[:, len(ESTIMATORS) - 1], shrink=0.9, pad=0.01)
    colourbar.set_label("iteration (step 0 drawn at 1)")
    legend = handles + band + phase_legend_handles()
    figure.legend(legend, [h.get_label() for h in legend], loc="outside lower center", ncol=5)
    figure.suptitle(
        f"Information plane (binning, KDE, scale-free KDE) beside reconstruction ({options.profile} profile; BatchNorm batch statistics; bits)"
    )
    save_figure(figure, options, NAME)
    compressed = [f"{label.split(' / ')[0].split()[-1]} {layer} {estimator}" for label, layer, estimator, yes in verdicts if yes]
    headline = (
        f"compression (I(X;T) falls >= {COMPRESSION_BITS} bits after its peak) in {len(compressed)} of {len(verdicts)} "
        f"(activation, layer, estimator) trajectories" + (f": {', '.join(compressed)}" if compressed else "")
    )
    headline += f"; reconstruction verdicts: {figure_verdicts.noise_summary(judged)}"
    return headline, "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
