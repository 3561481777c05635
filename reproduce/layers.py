"""Figure `layers`: the reconstruction-loss curve at several probe points of one network.

The paper probes earlier conv blocks as well as the penultimate layer. One panel per probe point of
the first network of the profile (VGG-8 on MNIST), from an early block to the penultimate
layer, with the phases the suite's verdict is confident of shaded (`kphases.phases.phase_verdict`, default
settings; grey band: the 95% interval of each change from step 0) and the linear-probe accuracy of the same
features. Seed 0 is drawn; with 3 seeds (full) the judged decoder's verdict is across them
(`reproduce.verdicts.judge`: hierarchical, seeds then test images; their mean dashed, with the min-max band),
with one seed (quick, and `linear_exact`, measured on seed 0 only) over that seed's test images only. Decoder `linear_ridge` (the closed-form affine decoder with its
ridge chosen by GCV on the train split: block outputs of thousands of dimensions would need many
more updates than the authors' budget to train), drawn beside the unregularised `linear_exact`,
which comes close to interpolating wide block outputs (block2: 4,096-d, train MSE ~0.006) and jumps between snapshots;
BatchNorm in batch mode.
VGG-8's block5 output is 1x1x512, identical to `penultimate`, so it is not repeated; block1
(16x16x32 = 8,192 dimensions) and block2 (4,096 at full width) are left out of quick and full for time
(their eigendecompositions at every snapshot and seed would be the largest cells of the profile).

    python -m reproduce.layers [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: the first main run of the profile. quick: VGG-8 x1/8 on the embedded MNIST at block3,
block4 and the penultimate layer; full: VGG-8 on real MNIST at block3, block4 and the
penultimate layer, 3 seeds; both at 6 of the 11 snapshots (`reproduce.common.measured_steps`) (seed 0 drawn with the probe and `linear_exact`; the further seeds with
the judged decoder); block1 and block2 only at paper, for time. The CSV and summary.md hold the numbers.

What you should see (full, the committed figure): the verdict per probe point and decoder is the table in
`paper_figures/summary.md` (curves in `paper_figures/layers.csv`). The unregularised linear_exact
has far wider intervals where the features are wide (it overfits 10,000 train images).
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd

from reproduce import verdicts
from reproduce.common import Options, Work, curve, main_runs, measured_steps, perform, replicas, run_figure, save_figure, tidy_rows
from reproduce.plotting import draw_seeds, grid, log_step_axis, phase_legend_handles, shade_verdict, step_position

NAME = "layers"
LAYERS = {
    "smoke": ("block3", "block4", "penultimate"),
    "quick": ("block3", "block4", "penultimate"),  # as full: block2's ridge eigendecompositions at every snapshot cost most
    "full": ("block3", "block4", "penultimate"),  # block2 (4,096-d): its eigendecompositions at three seeds were a tenth of full
    "paper": ("block1", "block2", "block3", "block4", "penultimate"),
}


def work(options: Options) -> list[Work]:
    """The first main run, with both closed-form decoders and the probe at every probe point of the figure; its further
    seeds (`replicas`) with the judged decoder only (the probe and the unregularised comparison are drawn for seed 0; the
    seed-level verdicts are on the judged reconstruction, which keeps them cheap)."""
    first = main_runs(options)[0]
    measure = dataclasses.replace(
        first.measure, layers=LAYERS[options.profile], decoders=(INSTRUMENT, UNREGULARISED), transfer=(), steps=measured_steps(options)
    )
    judged_only = dataclasses.replace(measure, decoders=(INSTRUMENT,), probe=False)
    return [Work(first, (measure,))] + [Work(seeded, (judged_only,)) for seeded in replicas(first, options)]


INSTRUMENT, UNREGULARISED = "linear_ridge", "linear_exact"  # judged; drawn beside it for comparison


def compute(options: Options) -> pd.DataFrame:
    wanted = [(layer, instrument, "batch") for layer in LAYERS[options.profile] for instrument in (INSTRUMENT, UNREGULARISED)]
    tables, per_image = [], {}
    for item in work(options):  # seed 0 first (the panels), then the further seeds of the profile
        run, frame = perform(item, options)
        tables.append(tidy_rows(item.planned, run, frame))
        per_image.update(verdicts.collect(run, frame, item.planned.label, wanted))
    verdicts.write_per_image(options.out, NAME, per_image)
    table = pd.concat(tables, ignore_index=True)
    return table[table["layer"].isin(LAYERS[options.profile]) | (table["instrument"] == "classifier")]


def plot(table: pd.DataFrame, options: Options):
    label = table["label"].iloc[0]
    per_image = verdicts.read_per_image(options.out, NAME)
    layers = [layer for layer in LAYERS[options.profile] if (table["layer"] == layer).any()]
    figure, axes = grid(len(layers), columns=len(layers) if len(layers) <= 4 else 3, width=3.6)
    lines = ["| layer | decoder | phases | minimum at | final probe acc |", "|---|---|---|---|---|"]
    handles, judged, band = [], [], []
    for axis, layer in zip(axes, layers):
        phases, seeds = verdicts.judge(per_image, table, label, layer, INSTRUMENT, "batch")  # across seeds where there are >= 3
        series = seeds[label].dropna()
        judged.append(phases)
        if phases is not None:
            shade_verdict(axis, phases.steps, phases)
        handles = axis.plot(
            step_position(series.index), series.values, "o-", color="black", ms=3, label=f"reconstruction, {INSTRUMENT} (test MSE, seed 0)"
        )
        band = draw_seeds(axis, seeds) or band  # in the legend where any panel has seeds
        plain = curve(table, label, "reconstruction_mse", instrument=UNREGULARISED, layer=layer, bn_stats="batch")
        if len(plain):
            handles += axis.plot(
                step_position(plain.index),
                plain.values,
                "x:",
                color="grey",
                ms=3,
                lw=0.8,
                label=f"{UNREGULARISED} (unregularised, test MSE; off scale where it explodes)",
            )
            if len(series) and plain.max() > 3 * series.max():  # it exploded (few train images): keep the judged curve readable
                axis.set_ylim(0, 1.5 * series.max())
            plain_phases, _ = verdicts.judge(per_image, table, label, layer, UNREGULARISED, "batch")  # seed 0 only: it is measured there
            lines.append(
                f"| {layer} | {UNREGULARISED} | {verdicts.describe(plain_phases, plain)} | "
                f"{getattr(plain_phases, 'decrease_end', None)} | |"
            )
        probe = curve(table, label, "probe_accuracy", instrument="probe", layer=layer, bn_stats="batch")
        twin = axis.twinx()
        handles += twin.plot(step_position(probe.index), probe.values, "C2-", lw=1, label="linear probe test acc")
        twin.set_ylim(0, 1.02)
        log_step_axis(axis, series.index)
        axis.set_title(f"{layer}: {phases.in_words if phases is not None else 'not three phases'}")
        lines.append(
            f"| {layer} | {INSTRUMENT} | {verdicts.describe(phases, series)} | {getattr(phases, 'decrease_end', None)} | "
            f"{probe.iloc[-1] if len(probe) else float('nan'):.3f} |"
        )
    axes[0].set_ylabel("reconstruction loss (per-element MSE)")
    legend = handles + band + phase_legend_handles()
    figure.legend(legend, [h.get_label() for h in legend], loc="lower center", ncol=5, bbox_to_anchor=(0.5, -0.02))
    figure.suptitle(
        f"{label}: reconstruction by probe point ({options.profile} profile; {INSTRUMENT} decoder, BatchNorm batch statistics; shaded: confident phases)"
    )
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(figure, options, NAME)
    three = [row.split(" | ")[0].strip("| ") for row in lines[2:] if f"| {INSTRUMENT} | three phases" in row]
    headline = (
        f"three phases at {len(three)} of {len(layers)} probe points ({', '.join(three) or 'none'}; {verdicts.noise_summary(judged)})"
    )
    return headline, "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
