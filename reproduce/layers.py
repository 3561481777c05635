"""Figure `layers`: the reconstruction-loss curve at several probe points of one network.

The paper probes earlier conv blocks as well as the penultimate layer. One panel per probe point of
the first network of the profile (VGG-8 on MNIST in quick), from an early block to the penultimate
layer, with the detected phases shaded and the linear-probe accuracy of the same features. Decoder
`linear_exact` (the exact affine least-squares decoder: block outputs of thousands of dimensions
would need many more updates than the authors' budget to train), BatchNorm in batch mode.
VGG-8's block5 output is 1x1x512, identical to `penultimate`, so it is not repeated; block1
(16x16x32 = 8,192 dimensions) is left out of quick for time (its exact decoder takes ~1 min per
snapshot on 2 cores).

    python -m reproduce.layers [--profile smoke|quick|paper] [--plot-only] [--out DIR]

Runtime: smoke ~1 min; quick 2.6 min after `phases` (measured by reproduce.all on 2 CPU cores, 2026-11-30) (the network is shared); paper: GPU.

Numbers you should see (quick, KPHASES_DATA_DIR set; reproduce.all on a 2-core CPU, 2026-11-30; another CPU moves
the third decimal, README "Reproducing the figures"): three phases at
block4 (constant to 8, -13.3% to 64, +5.3%) and penultimate (-15.2% to 64, +13.1%); none at
block2 (no decrease) and, just, none at block3 (constant to 16, -7.1% to 128, +6.5% against a
threshold of 7.2%; on the machine of 2026-11-23 -7.4% and +7.4%, three phases).
"""
from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd

from reproduce.common import Options, Work, curve, main_runs, perform, run_figure, save_figure, tidy_rows
from reproduce.plotting import grid, log_step_axis, phase_legend_handles, shade_phases, step_position

NAME = "layers"
LAYERS = {"smoke": ("block3", "block4", "penultimate"), "quick": ("block2", "block3", "block4", "penultimate"),
          "paper": ("block1", "block2", "block3", "block4", "penultimate")}


def work(options: Options) -> list[Work]:
    """The first main run, with the exact decoder and the probe at every probe point of the figure."""
    planned = main_runs(options)[0]
    return [Work(planned, (dataclasses.replace(planned.measure, layers=LAYERS[options.profile], decoders=("linear_exact",), transfer=()),))]


def compute(options: Options) -> pd.DataFrame:
    (item,) = work(options)
    table = tidy_rows(item.planned, *perform(item, options))
    return table[table["layer"].isin(LAYERS[options.profile]) | (table["instrument"] == "classifier")]


def plot(table: pd.DataFrame, options: Options):
    from kphases.measurement import describe_phases
    from kphases.phases import detect_phases

    label = table["label"].iloc[0]
    layers = [layer for layer in LAYERS[options.profile] if (table["layer"] == layer).any()]
    figure, axes = grid(len(layers), columns=len(layers) if len(layers) <= 4 else 3, width=3.6)
    lines = ["| layer | phases | minimum at | decrease | increase | final probe acc |", "|---|---|---|---|---|---|"]
    handles = []
    for axis, layer in zip(axes, layers):
        series = curve(table, label, "reconstruction_mse", instrument="linear_exact", layer=layer, bn_stats="batch")
        phases = detect_phases(series.index.tolist(), series.tolist())
        shade_phases(axis, series.index, phases.labels)
        handles = axis.plot(step_position(series.index), series.values, "o-", color="black", ms=3, label="reconstruction (test MSE)")
        probe = curve(table, label, "probe_accuracy", instrument="probe", layer=layer, bn_stats="batch")
        twin = axis.twinx()
        handles += twin.plot(step_position(probe.index), probe.values, "C2-", lw=1, label="linear probe test acc")
        twin.set_ylim(0, 1.02)
        log_step_axis(axis, series.index)
        axis.set_title(f"{layer}: {'three phases' if phases.three_phases else 'not three phases'}")
        lines.append(f"| {layer} | {describe_phases(phases)} | {phases.decrease_end} | {phases.relative_decrease:.1%} | "
                     f"{phases.relative_increase:.1%} | {probe.iloc[-1]:.3f} |")
    axes[0].set_ylabel("reconstruction loss (per-element MSE)")
    legend = handles + phase_legend_handles()
    figure.legend(legend, [h.get_label() for h in legend], loc="lower center", ncol=5, bbox_to_anchor=(0.5, -0.02))
    figure.suptitle(f"{label}: reconstruction by probe point ({options.profile} profile; linear_exact decoder, BatchNorm batch statistics)")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(figure, options, NAME)
    three = [layer for layer, row in zip(layers, lines[2:]) if "| three phases" in row]
    return f"three phases at {len(three)} of {len(layers)} probe points ({', '.join(three) or 'none'})", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
