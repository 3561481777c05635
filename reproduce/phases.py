"""Figure `phases`: reconstruction loss and accuracy against iteration, with the detected phases shaded.

The paper's central claim (Schneider & Prabhushankar 2024, their Figure 1): the reconstruction loss
of the input from the penultimate layer is first near constant, then falls, then rises, while the
accuracy keeps improving. Each panel is one (architecture, dataset) run: reconstruction loss
(per-element test MSE of the affine decoder with a ridge penalty chosen by GCV on the train split,
`linear_ridge`, features with BatchNorm in batch mode as the authors measure; seed 0 drawn; grey
band: the 95% interval of each point's change from step 0, around the judged curve) on the left
axis, classifier test/train accuracy and linear-probe test accuracy on the right axis; shading marks
only the phases the suite's verdict (`kphases.phases.phase_verdict`, default settings: plateau within
+-2% of the initial loss by an equivalence test, decrease and increase confidently beyond 2%) is
confident of, and each panel prints the sizes with their 95% intervals. With 3 seeds per run (full)
the verdict is across them (`reproduce.verdicts.judge`: hierarchical, seeds then test images; the
judged curve is the seeds' mean, dashed, with their min-max band); with one seed (quick) it is over
that seed's test images only. The summary line says which.

    python -m reproduce.phases [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale (`reproduce.common.main_runs`): quick: VGG-8 x1/8 on the embedded 4,000 / 1,000 MNIST images,
1,024 iterations, one seed (the intervals are over test images only), every snapshot measured; one
panel (the ResNet is at full only), the same run as `information_plane`'s ReLU network, which shows
three phases at this width; the embedded set needs no download. full: VGG-8
and ResNet-10 x1/8 on 10,000 / 2,000 real MNIST and Fashion-MNIST images, 3 seeds each (seed 0
drawn, every seed in the CSV for the seed-level verdicts). paper: 20 runs of 257 epochs, for GPUs.
The CSV and summary.md hold the numbers; `python -m reproduce.all --dry-run` estimates the time.

What you should see (full, the committed figure): the verdict per run, with the plateau's last step
and the sizes with their intervals, is the table in `paper_figures/summary.md` (the curves are in
`paper_figures/phases.csv`, the per-image errors the verdicts resample in `phases_per_image.csv`).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pandas as pd

from reproduce import verdicts
from reproduce.common import SEED_MARK, Options, Work, curve, main_runs, perform, replicas, run_figure, save_figure, tidy_rows
from reproduce.plotting import draw_seeds, grid, log_step_axis, phase_legend_handles, shade_verdict, step_position

NAME = "phases"
DESCRIPTION = __doc__.splitlines()[0]


def work(options: Options) -> list[Work]:
    """Every main run of the profile and its further seeds (`replicas`), each measured with its own config."""
    return [Work(run, (run.measure,)) for planned in main_runs(options) for run in (planned, *replicas(planned, options))]


INSTRUMENT, LAYER, BN_STATS = "linear_ridge", "penultimate", "batch"


def compute(options: Options) -> pd.DataFrame:
    tables, per_image = [], {}
    for item in work(options):
        run, frame = perform(item, options)
        tables.append(tidy_rows(item.planned, run, frame))
        per_image.update(verdicts.collect(run, frame, item.planned.label, [(LAYER, INSTRUMENT, BN_STATS)]))
    verdicts.write_per_image(options.out, NAME, per_image)
    return pd.concat(tables, ignore_index=True)


def phase_rows(table: pd.DataFrame, options: Options, instrument: str = INSTRUMENT, layer: str = LAYER, bn_stats: str = BN_STATS):
    """(label, seed 0's reconstruction curve, verdict, seed curves) per run of a figure table: the verdict across the
    run's seeds where the table has at least 3, else seed 0's (`reproduce.verdicts.judge`)."""
    per_image = verdicts.read_per_image(options.out, NAME)
    results = []
    for label in dict.fromkeys(table["label"]):
        if SEED_MARK in label:  # a further seed: judged with its run
            continue
        phases, seeds = verdicts.judge(per_image, table, label, layer, instrument, bn_stats)
        series = seeds[label].dropna()
        if len(series) >= 3:
            results.append((label, series, phases, seeds))
    return results


def plot(table: pd.DataFrame, options: Options):
    detected = phase_rows(table, options)  # seed 0 drawn, with its seeds' band where there are several
    figure, axes = grid(len(detected), columns=2)
    lines = [
        "| run | phases | plateau until | minimum at | decrease | increase | plateau needs margin | final test acc | final train acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    accuracy_styles = [
        ("classifier_accuracy", "test", None, None, "C0-", "classifier test acc"),
        ("classifier_accuracy", "train", None, None, "C0--", "classifier train acc"),
        ("probe_accuracy", "test", "probe", "batch", "C2-", "linear probe test acc"),
    ]
    handles, band = [], []
    for axis, (label, series, phases, seeds) in zip(axes, detected):
        if phases is not None:
            shade_verdict(axis, phases.steps, phases)
        handles = axis.plot(
            step_position(series.index), series.values, "o-", color="black", ms=3, label="reconstruction (test MSE, seed 0)"
        )
        band = draw_seeds(axis, seeds) or band  # in the legend where any panel has seeds
        axis.set_ylabel("reconstruction loss (per-element MSE)")
        accuracy_axis = axis.twinx()
        for metric, split, instrument, bn_stats, style, name in accuracy_styles:
            values = curve(table, label, metric, split, instrument=instrument, bn_stats=bn_stats)
            values = values[values.index.isin(series.index)]
            handles += accuracy_axis.plot(step_position(values.index), values.values, style, lw=1, label=name)
        accuracy_axis.set_ylim(0, 1.02)
        accuracy_axis.set_ylabel("accuracy")
        log_step_axis(axis, series.index)
        axis.set_title(f"{label}: {_title(phases)}")
        final = {split: curve(table, label, "classifier_accuracy", split).iloc[-1] for split in ("test", "train")}
        lines.append(f"| {label} | {verdicts.describe(phases, series)} | {_cells(phases)} | {final['test']:.3f} | {final['train']:.3f} |")
    legend = handles + band + phase_legend_handles()
    figure.legend(legend, [handle.get_label() for handle in legend], loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.02))
    figure.suptitle(
        f"Reconstruction loss phases ({options.profile} profile; decoder {INSTRUMENT}, BatchNorm batch statistics; shaded: confident phases)"
    )
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(figure, options, NAME)
    judged = [phases for _, _, phases, _ in detected if phases is not None]
    headline = f"three phases in {sum(phases.three_phases for phases in judged)} of {len(detected)} runs"
    if judged:
        headline += (
            f" ({judged[0].settings.describe()}; plateaus until "
            + ", ".join(str(phases.constant_end) if phases.has_constant else "-" for phases in judged)
            + f"; {verdicts.noise_summary(judged)})"
        )
    return headline, "\n".join(lines)


def _title(phases) -> str:
    if phases is None:
        return "no verdict (no per-image errors)"
    plateau = f", constant until {phases.constant_end}" if phases.has_constant else ", no plateau"
    return phases.in_words + plateau


def _cells(phases) -> str:
    """The table's plateau end, minimum, decrease, increase and needed margin of one verdict."""
    if phases is None:
        return "- | - | - | - | -"
    needed = "no room" if phases.plateau_margin_needed == float("inf") else f"{phases.plateau_margin_needed:.2%}"
    return (
        f"{phases.constant_end if phases.has_constant else '-'} | {phases.decrease_end} | {phases.decrease.describe()} | "
        f"{phases.increase.describe()} | {needed}"
    )


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
