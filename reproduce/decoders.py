"""Figure `decoders`: how much of the three-phase shape comes from the measurement protocol.

One network (the profile's first: VGG-8 on MNIST), its penultimate-layer reconstruction
loss measured with every decoder and BatchNorm mode the suite has:
- decoders: `linear_exact` (the exact affine least-squares decoder), `linear` trained with the
  authors' 7,820 Adam updates, `linear` trained for 20 epochs only (what the authors' epoch count
  gives on a subset: far fewer updates), and `cladec` (deconvolution decoder; smoke and paper
  profiles only: an update costs 0.54 s on 2 CPU cores at batch 128 for 512-d features to 32x32x1 images
  (`python -m benchmarks.measure`; the CHANGELOG records it on other machines), so 20
  epochs of 10,000 images (1,580 updates) take 14 minutes per snapshot and BatchNorm mode, and the
  authors' 7,820 updates 70 minutes; the quick and full figures omit it and say so);
- BatchNorm statistics while extracting features: `batch` (the authors' protocol: each batch of 128
  normalised by its own statistics), `stored` (inference mode with the snapshot's running
  statistics, which have not warmed up near iteration 0) and `recalibrated` (running statistics
  recomputed on the train split, weights untouched).
- `linear_ridge` (the closed-form decoder with its ridge chosen by GCV on the train split) beside
  the unregularised `linear_exact`.
Each curve is labelled with its verdict: the closed-form decoders' by the suite's verdict
(`kphases.phases.phase_verdict`, default settings; band: the 95% interval of each point's change
from step 0; with 3 seeds (full) across them, `reproduce.verdicts.judge`: hierarchical, seeds then
test images, the band around their mean (dashed); with one seed (quick) over its test images only,
and the summary line says which; seed 0 drawn); the trained ones (a few steps, two update budgets)
get no verdict, and their line says why. The table in summary.md states which phases survive which
control.

    python -m reproduce.decoders [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: the first main run of the profile. The trained `linear` decoder with the authors' 7,820
updates at iterations 0, 64 and 1,024: quick and full in the authors' BatchNorm mode only (`BUDGET_MODES`,
for time), paper in all three; the closed-form decoders at 6 of the 11 snapshots at quick and full
(`reproduce.common.measured_steps`) and, at full, for every seed (seed 0 drawn). quick's network is
VGG-8 x1/8 on the embedded MNIST, one seed. The CSV and summary.md hold the numbers.

What you should see (quick): the numbers are in `paper_figures/decoders.csv` and the verdicts in
`paper_figures/summary.md`; the shape survives batch and recalibrated statistics with either
closed-form decoder, and stored statistics (inference mode) change the early part of the curve.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import matplotlib.pyplot as plt
import pandas as pd

from kphases import verdict_tables
from kphases.config import AUTHORS_DECODER_UPDATE_STEPS
from kphases.decoders import DecoderSettings
from reproduce import verdicts
from reproduce.common import SEED_MARK, Options, Work, main_runs, measured_steps, perform, replicas, run_figure, save_figure, tidy_rows
from reproduce.plotting import draw_seeds, log_step_axis, step_position

NAME = "decoders"
MODES = ("batch", "stored", "recalibrated")
CLOSED_FORM = ("linear_ridge", "linear_exact")
"""The decoders whose per-image errors are collected and judged; the trained ones are not (`TRAINED_WHY`)."""
# Steps at which the expensive trained decoders run, per profile (linear_exact runs at every snapshot).
TRAINED_STEPS = {"smoke": (0, 4, 16), "quick": (0, 64, 1024), "full": (0, 64, 1024), "paper": (0, 8, 128, 1024, 8192, 65536)}
CLADEC_STEPS = {"smoke": (0, 4, 16), "quick": (), "full": (), "paper": (0, 128, 8192, 65536)}  # (): not in this profile
CLADEC_EPOCHS = {"smoke": 1, "quick": 2, "full": 2, "paper": 20}
BUDGET_MODES = {"quick": ("batch",), "full": ("batch",)}
"""BatchNorm modes of the trained decoder with the authors' 7,820 updates (others: all three); quick and full: the
authors' mode only, for time (at full its three cells under the other two modes were about a twentieth of the profile)."""
TRAINED_WHY = (
    "not collected: the trained decoder's two update budgets share one per-image file per cell, so its errors would mix "
    "them; its values are drawn beside the judged closed-form decoders"
)
"""Why the trained decoders' curves have no verdict (the line summary.md prints for them)."""
CLADEC_SECONDS_PER_UPDATE = 0.54  # python -m benchmarks.measure on a 2-core CPU (the CHANGELOG records other machines)


def work(options: Options) -> list[Work]:
    """The first main run under every decoder variant (exact, trained with and without the update budget, ClaDec)."""
    planned = main_runs(options)[0]
    base = dataclasses.replace(
        planned.measure, layers=("penultimate",), probe=False, transfer=(), bn_stats=MODES, steps=measured_steps(options)
    )
    budget = AUTHORS_DECODER_UPDATE_STEPS if options.profile != "smoke" else None
    variants = [
        dataclasses.replace(base, decoders=CLOSED_FORM),
        dataclasses.replace(
            base,
            decoders=("linear",),
            decoder_min_update_steps=budget,
            steps=TRAINED_STEPS[options.profile],
            bn_stats=BUDGET_MODES.get(options.profile, MODES),
        ),
        dataclasses.replace(
            base,
            decoders=("linear",),
            decoder_min_update_steps=None,
            decoder_epochs=20 if options.profile != "smoke" else 1,
            steps=TRAINED_STEPS[options.profile],
            bn_stats=("stored", "recalibrated"),
        ),
    ]
    if CLADEC_STEPS[options.profile]:
        variants.append(
            dataclasses.replace(
                base,
                decoders=("cladec",),
                decoder_min_update_steps=None,
                decoder_epochs=CLADEC_EPOCHS[options.profile],
                steps=CLADEC_STEPS[options.profile],
                bn_stats=("stored", "recalibrated"),
            )
        )
    # The further seeds of the profile with the closed-form decoders (the trained ones are seed 0 only).
    return [Work(planned, tuple(variants))] + [Work(seeded, variants[:1]) for seeded in replicas(planned, options)]


def compute(options: Options) -> pd.DataFrame:
    # The trained decoders are measured under two update budgets in the same cells' key: their
    # per-image errors would mix them, so only the closed-form decoders' curves get a noise interval (`TRAINED_WHY`).
    wanted = [("penultimate", instrument, mode) for instrument in CLOSED_FORM for mode in MODES]
    tables, per_image = [], {}
    for item in work(options):
        run, frame = perform(item, options)
        tables.append(tidy_rows(item.planned, run, frame))
        per_image.update(verdicts.collect(run, frame, item.planned.label, wanted))
    verdicts.write_per_image(options.out, NAME, per_image)
    table = pd.concat(tables, ignore_index=True)
    table = table[(table["layer"] == "penultimate") & (table["metric"] == "reconstruction_mse")]
    return table.assign(
        decoder=lambda t: t["instrument"] + t["update_steps"].map(lambda n: f" ({int(float(n)):,} updates)" if float(n) > 0 else "")
    )


def curves(table: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    test = table[table["split"] == "test"]
    return {
        (decoder, mode): group.drop_duplicates("step", keep="last").set_index("step")["value"].sort_index()
        for (decoder, mode), group in test.groupby(["decoder", "bn_stats"], sort=True)
    }


def plot(table: pd.DataFrame, options: Options):
    label = table["label"].iloc[0]
    found = curves(table[~table["label"].str.contains(SEED_MARK, regex=False)])  # seed 0 drawn; the further seeds are in the CSV
    per_image = verdicts.read_per_image(options.out, NAME)
    decoders = sorted(
        {decoder for decoder, _ in found}, key=lambda d: (not d.startswith("linear_ridge"), not d.startswith("linear_exact"), d)
    )
    figure, axes = plt.subplots(1, len(MODES), figsize=(4.4 * len(MODES), 3.6), sharey=True, squeeze=False)
    lines = ["| decoder | BatchNorm | phases |", "|---|---|---|"]
    survivors, judged = {}, []
    for axis, mode in zip(axes[0], MODES):
        for index, decoder in enumerate(decoders):
            series = found.get((decoder, mode))
            if series is None or len(series) == 0:
                continue
            # The closed-form decoders' curves carry per-image errors and get the suite's verdict; the
            # trained ones (two update budgets at a few steps, one per-image file per cell would mix
            # them) get none, and their line says why.
            instrument = decoder.split(" (")[0]
            phases, seeds = verdicts.judge(per_image, table, label, "penultimate", instrument, mode)  # across seeds where there are >= 3
            verdict = phases.in_words if phases is not None else "not three phases"
            axis.plot(step_position(series.index), series.values, "o-", color=f"C{index}", ms=3, lw=1.2, label=f"{decoder}: {verdict}")
            if phases is not None:
                axis.fill_between(step_position(phases.steps), phases.curve_low, phases.curve_high, color=f"C{index}", alpha=0.2, lw=0)
                draw_seeds(axis, seeds, f"C{index}")
                judged.append(phases)
            values = ", ".join(f"{step}: {value:.4f}" for step, value in series.items())
            why = verdict_tables.NOT_WRITTEN if instrument in CLOSED_FORM else TRAINED_WHY
            lines.append(f"| {decoder} | {mode} | {verdicts.describe(phases, series, why)}; values {values} |")
            if phases is not None:
                survivors[(decoder, mode)] = phases.three_phases
        all_steps = sorted({step for (decoder, m), s in found.items() if m == mode for step in s.index})
        if all_steps:
            log_step_axis(axis, all_steps)
        axis.set_title(f"BatchNorm statistics: {mode}" + (" (authors' protocol)" if mode == "batch" else ""))
        axis.legend(loc="best")
    axes[0][0].set_ylabel("reconstruction loss (per-element test MSE)")
    omitted = (
        ""
        if any(d.startswith("cladec") for d in decoders)
        else f"; cladec not run in this profile ({CLADEC_SECONDS_PER_UPDATE} s per update on CPU)"
    )
    figure.suptitle(f"{label}, penultimate layer: reconstruction by decoder and BatchNorm mode ({options.profile} profile{omitted})")
    if omitted:
        authors = DecoderSettings(epochs=20)  # their epochs and batch size, on 10,000 images
        updates = authors.epochs * authors.steps_per_epoch(10_000)
        lines.append(
            f"\ncladec is not in the {options.profile} profile: one update costs {CLADEC_SECONDS_PER_UPDATE} s on 2 CPU cores (measured), "
            f"{updates * CLADEC_SECONDS_PER_UPDATE / 60:.0f} minutes per snapshot and BatchNorm mode for 20 epochs of 10,000 images "
            f"({updates:,} updates); it runs in the smoke and paper profiles."
        )
    figure.tight_layout()
    save_figure(figure, options, NAME)
    kept = [f"{decoder}/{mode}" for (decoder, mode), three in survivors.items() if three]
    headline = f"three phases under {len(kept)} of {len(survivors)} decoder x BatchNorm controls with per-image errors" + (
        f" ({', '.join(kept)})" if kept else ""
    )
    return f"{headline} ({verdicts.noise_summary(judged)})", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
