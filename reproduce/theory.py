"""Figure `theory`: the single-layer theory's simulation, its three phases, the predicted boundaries and where they hold.

The paper's explanation (`docs/protocol.md`, "The claim under test") is a single-layer network ("F" net, z = W x) on a
"fitting the majority, then a few" data model. `theory/` restates it as our own propositions
(theory/README.md) and simulates gradient descent on the data model (`theory.simulate`). Top row,
one panel per named regime of `theory.regimes` (three seeds each: mean and min-max band):
- with 10% outliers at another class's prototype: constant, decrease, increase;
- without outliers: constant, decrease, no increase;
- with outliers only a quarter of the way to another prototype: no increase.
Each panel shows the reconstruction loss R(W_t) of the best affine decoder (relative to the
Eckart-Young minimum, dotted), train accuracy on the majority and on the outliers, the phases
the suite's verdict (`kphases.phases.phase_verdict` across the seeds, default settings) is confident
of, and the theory's predictions (`theory.predictions`): the
step until which proposition 2 certifies near-constancy and the step at which the outliers'
share of the gradient first reaches 45% (proposition 4). That step is a measured condition, not a
prediction on its own: in the near-outlier regime it is reached too (quick: step 4096) and no
increase follows.

Bottom row, the regime map (`theory.regime_map`, theory/README.md "Regime map"): outlier fraction
x position at eta = 0.001, init_scale = 0.5, and learning rate x initial scale at rho = 0.1,
tau = 1, three seeds per cell. Colour: mean increase after the minimum; box: three phases by
`phase_verdict` across seeds (the networks' rule and defaults: plateau within +-2% of R(W0),
decrease and increase beyond 2%, 95% t-intervals); text: the confident phases, the increase, the
seeds predicted to show three phases. The summary's table adds the intervals, the predictions,
whether they agree with the simulation, and whether the outliers are fitted when R rises.

    KPHASES_DATA_DIR=/work/shared/data python -m reproduce.theory --out /tmp/theory_out --runs-dir /tmp/theory_runs
    python -m reproduce.theory [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: NumPy only, no data or run store. quick: the three named regimes (3 seeds, 2^16 steps) and
a regime map of 12 cells (3 outlier fractions x 2 positions, 2 learning rates x 3 initial scales,
3 seeds each), each plane's three-phase cells and a cell on each side of them, for time;
full and paper: the whole grid (`theory.regime_map.RegimeMapGrid`, 40 cells); smoke: 2^12 steps
and a 2 x 2 map per plane. The CSV and summary.md hold the numbers; `--dry-run` estimates the time.

What you should see (quick): the regimes' verdicts and the map's cells are the tables in
`paper_figures/summary.md` (curves in `paper_figures/theory.csv`); theory/README.md ("Regime map")
states the regime and lists the cells where prediction and simulation disagree.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from kphases.phases import phase_verdict
from reproduce.common import Options, run_figure, save_figure
from reproduce.plotting import log_step_axis, phase_legend_handles, plt, shade_phases, step_position
from theory import regimes as regime_catalogue
from theory.predictions import predict_phases
from theory.regime_map import FRACTION_POSITION, RATE_SCALE, SMALL_RISE_MIN_EFFECT, MapCell, RegimeMapGrid, SeedRun, run_map, summarise_map
from theory.simulate import simulate_many

NAME = "theory"
SEEDS = (0, 1, 2)
COLUMNS = ["regime", "seed", "step", "metric", "value", "outlier_fraction", "outlier_distance", "learning_rate", "init_scale"]
MAP_PREFIX = "map: "
MAP_CURVES = ("reconstruction_loss", "outlier_accuracy", "majority_accuracy")
MAP_SCALARS = (
    "predicted_constant",
    "predicted_three_phases",
    "asymptotic_relative_increase",
    "tilt_in_outlier_noise",
    "tilt_in_outlier_noise_by_chance",
)


def regimes():
    return {
        "10% outliers at another prototype": regime_catalogue.three_phase_regime,
        "no outliers": regime_catalogue.no_outlier_regime,
        "10% outliers a quarter of the way": regime_catalogue.near_outlier_regime,
    }


def map_grid(profile: str):
    """The regime map's grid: the full one (theory.regime_map defaults) except at smoke (2 x 2 cells per plane, 2^12 steps)."""
    if profile == "smoke":
        return RegimeMapGrid(
            outlier_fractions=(0.0, 0.1),
            outlier_distances=(0.25, 1.0),
            learning_rates=(0.001, 0.01),
            init_scales=(0.05, 0.5),
            last_step=2**12,
        )
    if profile == "quick":  # 12 of the full grid's 40 cells, for time: each plane's three-phase cells and a cell on each side
        return RegimeMapGrid(
            outlier_fractions=(0.0, 0.1, 0.2),  # none, the committed 10% and the most
            outlier_distances=(0.5, 1.0),  # halfway and at the other class's prototype
            learning_rates=(1e-4, 1e-3),  # a slower rate and the committed one
            init_scales=(0.05, 0.5, 1.5),  # small, the committed scale, and large
        )
    return RegimeMapGrid()


def driver_seconds(options: Options, calibration) -> float:
    """This figure's simulation time on this machine (`reproduce.costs`): a one-cell map (one cell per plane, 3 seeds)
    timed at two lengths, the difference giving the time per step, scaled by the profile's cells and steps."""

    def seconds(last_step: int) -> float:
        grid = RegimeMapGrid(
            outlier_fractions=(0.1,), outlier_distances=(1.0,), learning_rates=(1e-3,), init_scales=(0.5,), last_step=last_step
        )
        began = time.perf_counter()
        list(run_map(grid))
        return (time.perf_counter() - began) / 2  # per cell: the grid has one cell per plane

    short, long = seconds(2**9), seconds(2**11)
    per_step = max(long - short, 0.0) / (2**11 - 2**9)
    per_cell = max(short - per_step * 2**9, 0.0)
    grid = map_grid(options.profile)
    map_cells = len(grid.outlier_fractions) * len(grid.outlier_distances) + len(grid.learning_rates) * len(grid.init_scales)
    named_steps = 2**12 if options.profile == "smoke" else 2**16
    return (map_cells + len(regimes())) * per_cell + per_step * (map_cells * grid.last_step + len(regimes()) * named_steps)


def compute(options: Options) -> pd.DataFrame:
    rows = []
    named = [(regime, seed, *make(seed)) for regime, make in regimes().items() for seed in SEEDS]
    if options.profile == "smoke":
        named = [(regime, seed, model, config.replace(last_step=2**12)) for regime, seed, model, config in named]
    for (regime, seed, model, config), trajectory in zip(named, simulate_many([(model, config) for _, _, model, config in named])):
        parameters = (model.outlier_fraction, model.outlier_distance, config.learning_rate, config.init_scale)
        prediction = predict_phases(trajectory)
        for index, step in enumerate(trajectory.steps):
            for metric in ("reconstruction_loss", "majority_accuracy", "outlier_accuracy", "test_accuracy"):
                rows.append((regime, seed, int(step), metric, float(getattr(trajectory, metric)[index]), *parameters))
        for metric, value in (
            ("eckart_young_minimum", trajectory.reconstruction_minimum),
            ("trace_covariance", trajectory.reconstruction_maximum),
            ("predicted_certified_constant_steps", prediction.certified_constant_steps),
            ("predicted_outlier_dominance_step", prediction.outlier_dominance_step),
            ("predicted_three_phases", float(prediction.three_phases_expected)),
        ):
            rows.append((regime, seed, -1, metric, np.nan if value is None else float(value), *parameters))
    for run in run_map(map_grid(options.profile)):
        cell = run.cell
        parameters = (
            cell.outlier_fraction,
            np.nan if cell.outlier_distance is None else cell.outlier_distance,
            cell.learning_rate,
            cell.init_scale,
        )
        for metric in MAP_CURVES:
            rows += [
                (MAP_PREFIX + cell.plane, run.seed, step, metric, value, *parameters)
                for step, value in zip(run.steps, getattr(run, metric))
            ]
        rows += [(MAP_PREFIX + cell.plane, run.seed, -1, metric, float(getattr(run, metric)), *parameters) for metric in MAP_SCALARS]
    return pd.DataFrame(rows, columns=COLUMNS)


def map_runs(table: pd.DataFrame):
    """The regime map's SeedRuns rebuilt from the figure's rows (figures read results, never live runs)."""
    part = table[table["regime"].str.startswith(MAP_PREFIX)]
    runs = []
    keys = ["regime", "outlier_fraction", "outlier_distance", "learning_rate", "init_scale", "seed"]
    for key, rows in part.groupby(keys, dropna=False, sort=False):
        regime, fraction, distance, rate, scale, seed = key
        cell = MapCell(
            regime[len(MAP_PREFIX) :], float(fraction), None if pd.isna(distance) else float(distance), float(rate), float(scale)
        )
        curves = rows[rows["step"] >= 0].pivot(index="step", columns="metric", values="value").sort_index()
        scalars = rows[rows["step"] < 0].set_index("metric")["value"]
        runs.append(
            SeedRun(
                cell=cell,
                seed=int(seed),
                steps=tuple(int(step) for step in curves.index),
                **{metric: tuple(float(v) for v in curves[metric]) for metric in MAP_CURVES},
                predicted_constant=bool(scalars["predicted_constant"]),
                predicted_three_phases=bool(scalars["predicted_three_phases"]),
                **{metric: float(scalars[metric]) for metric in MAP_SCALARS[2:]},
            )
        )
    return runs


def _format(value: float, pattern: str = "{:.2f}") -> str:
    return "-" if not math.isfinite(value) else pattern.format(value)


def map_table(summaries) -> list[str]:
    """The map's markdown table: one line per cell, both planes."""
    lines = [
        f"Regime map (`theory.regime_map`; {summaries[0].seeds} seeds per cell; verdict: `phase_verdict` across seeds, "
        f"{summaries[0].verdict.settings.describe()}; prediction: `predict_phases` with the same margins):",
        "",
        f"| plane | rho | tau | eta | init | verdict (C/D/I confident) | plateau until | increase [95%] | rise >= {SMALL_RISE_MIN_EFFECT:.0%} confident | "
        "seeds 3 phases predicted | prediction agrees | seeds phase 1 predicted | predicted asymptotic increase (separable seeds) | "
        "outlier acc at min / final | rise done before outliers fitted | tilt in outlier noise (chance) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        cell, verdict = summary.cell, summary.verdict
        phases = "".join(
            letter if present else "-"
            for letter, present in (("C", verdict.has_constant), ("D", verdict.has_decrease), ("I", verdict.has_increase))
        )
        lines.append(
            f"| {cell.plane} | {cell.outlier_fraction:g} | {'-' if cell.outlier_distance is None else f'{cell.outlier_distance:g}'} | "
            f"{cell.learning_rate:g} | {cell.init_scale:g} | {'**three phases**' if verdict.three_phases else phases} | "
            f"{verdict.constant_end if verdict.has_constant else '-'} | "
            f"{verdict.increase.describe()} | {'yes' if summary.small_rise_confident else 'no'} | "
            f"{summary.seeds_predicted_three_phases} of {summary.seeds} | {'yes' if prediction_agrees(summary) else '**no**'} | "
            f"{summary.seeds_predicted_constant} of {summary.seeds} | "
            f"{_format(summary.asymptotic_relative_increase, '{:.1%}')} ({summary.separable_seeds}) | "
            f"{_format(summary.outlier_accuracy_at_minimum)} / {_format(summary.outlier_accuracy_final)} | "
            f"{_format(summary.rise_before_outliers_fitted)} | "
            f"{_format(summary.tilt_in_outlier_noise)} ({_format(summary.tilt_in_outlier_noise_by_chance)}) |"
        )
    return lines


def prediction_agrees(summary) -> bool:
    """The propositions predict three phases in most of the cell's seeds exactly when the verdict finds them."""
    return (2 * summary.seeds_predicted_three_phases > summary.seeds) == summary.verdict.three_phases


def draw_map(axis, summaries, plane: str, figure) -> None:
    """One plane as a heatmap: colour = mean relative increase; text = confident phases; box = three phases."""
    cells = [s for s in summaries if s.cell.plane == plane]
    if plane == FRACTION_POSITION:
        rows = sorted({s.cell.outlier_fraction for s in cells})
        columns = sorted({s.cell.outlier_distance for s in cells if s.cell.outlier_distance is not None})
        position = {(s.cell.outlier_fraction, s.cell.outlier_distance): s for s in cells}
        lookup = lambda r, c: position.get((r, c), position.get((r, None)))  # rho = 0: one cell for every tau
        row_label, column_label = "outlier fraction rho", "outlier position tau (1 = at another prototype)"
    else:
        rows = sorted({s.cell.learning_rate for s in cells})
        columns = sorted({s.cell.init_scale for s in cells})
        position = {(s.cell.learning_rate, s.cell.init_scale): s for s in cells}
        lookup = lambda r, c: position[(r, c)]
        row_label, column_label = "learning rate eta", "initial row norm (init_scale)"
    values = np.array([[lookup(r, c).verdict.increase.estimate for c in columns] for r in rows])
    image = axis.imshow(values, origin="lower", cmap="Reds", vmin=0.0, vmax=max(0.15, float(np.nanmax(values))), aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            summary = lookup(r, c)
            verdict = summary.verdict
            phases = "".join(
                letter if present else "-"
                for letter, present in (("C", verdict.has_constant), ("D", verdict.has_decrease), ("I", verdict.has_increase))
            )
            axis.text(
                j,
                i,
                f"{phases}\n{verdict.increase.estimate:.1%}\n{summary.seeds_predicted_three_phases}/{summary.seeds} pred.",
                ha="center",
                va="center",
                fontsize=6,
            )
            if verdict.three_phases:
                axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    axis.set_xticks(range(len(columns)), [f"{c:g}" for c in columns])
    axis.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    axis.set_xlabel(column_label)
    axis.set_ylabel(row_label)
    figure.colorbar(image, ax=axis, label="increase after the minimum (fraction of R(W0))", shrink=0.9)


def plot(table: pd.DataFrame, options: Options):
    named = table[~table["regime"].str.startswith(MAP_PREFIX)]
    names = list(dict.fromkeys(named["regime"]))
    figure = plt.figure(figsize=(4.0 * len(names), 3.2 + 4.2))
    layout = figure.add_gridspec(2, 2 * len(names), height_ratios=(3.2, 4.2))
    axes = [figure.add_subplot(layout[0, 2 * i : 2 * i + 2]) for i in range(len(names))]
    lines = [
        "| regime | verdict across the seeds | theory expects three phases | R: initial -> min -> final (seed 0) | outliers reach 45% of the gradient at step (seed 0) |",
        "|---|---|---|---|---|",
    ]
    handles = []
    for axis, regime in zip(axes, names):
        part = named[named["regime"] == regime]
        wide = part[part["step"] >= 0].pivot_table(index="step", columns=["metric", "seed"], values="value")
        loss = wide["reconstruction_loss"]
        verdict = phase_verdict(loss.index.tolist(), seed_curves=loss.to_numpy().T)
        shade_phases(axis, loss.index, verdict.labels)
        axis.fill_between(step_position(loss.index), loss.min(axis=1), loss.max(axis=1), color="black", alpha=0.15, lw=0)
        handles = axis.plot(step_position(loss.index), loss.mean(axis=1), "o-", color="black", ms=2, label="R(W_t), mean of 3 seeds")
        scalars = part[part["step"] < 0].pivot(index="seed", columns="metric", values="value")
        handles += [axis.axhline(scalars["eckart_young_minimum"].mean(), color="grey", ls=":", lw=1, label="Eckart-Young minimum")]
        twin = axis.twinx()
        for metric, style, name in (
            ("majority_accuracy", "C0-", "train acc, majority"),
            ("outlier_accuracy", "C3-", "train acc, outliers"),
        ):
            if metric in wide and not wide[metric].isna().all().all():
                handles += twin.plot(step_position(wide.index), wide[metric].mean(axis=1), style, lw=1, label=name)
        twin.set_ylim(0, 1.02)
        certified = scalars["predicted_certified_constant_steps"].iloc[0]
        dominance = scalars["predicted_outlier_dominance_step"].iloc[0]
        if certified >= 1:
            handles += [axis.axvline(certified, color="C2", ls="--", lw=1, label="certified constant until (prop. 2)")]
        if np.isfinite(dominance):
            handles += [axis.axvline(max(dominance, 1), color="C3", ls="--", lw=1, label="outliers dominate the gradient (prop. 4)")]
        log_step_axis(axis, loss.index)
        axis.set_title(f"{regime}\n{verdict.in_words} across {loss.shape[1]} seeds", fontsize=8)
        first = loss[loss.columns[0]]
        lines.append(
            f"| {regime} | {verdict.describe()} | {'yes' if scalars['predicted_three_phases'].iloc[0] else 'no'} | "
            f"{first.iloc[0]:.2f} -> {first.min():.2f} -> {first.iloc[-1]:.2f} | "
            f"{'none' if not np.isfinite(dominance) else int(dominance)} |"
        )
    axes[0].set_ylabel("reconstruction loss R(W) (sum over inputs)")
    unique = {h.get_label(): h for h in handles + phase_legend_handles()}
    figure.legend(list(unique.values()), list(unique), loc="upper center", ncol=5, bbox_to_anchor=(0.5, 0.0), fontsize=7)

    if "outlier_fraction" not in table.columns or not table["regime"].str.startswith(MAP_PREFIX).any():
        raise SystemExit(
            f"{options.out / (NAME + '.csv')} has no regime-map rows (written before the map existed): "
            f"run python -m reproduce.theory without --plot-only"
        )
    summaries = summarise_map(map_runs(table))
    half = len(names)
    for index, plane in enumerate((FRACTION_POSITION, RATE_SCALE)):
        axis = figure.add_subplot(layout[1, index * half : (index + 1) * half])
        draw_map(axis, summaries, plane, figure)
        fixed = "eta = 0.001, init_scale = 0.5" if plane == FRACTION_POSITION else "rho = 0.1, tau = 1"
        axis.set_title(
            f"map: {plane} ({fixed}); box: three phases\n"
            "text: confident phases C/D/I (95% across seeds; plateau +-2%, effects > 2%),\n"
            "mean increase, seeds predicted to show three phases",
            fontsize=7,
        )
    figure.suptitle(f"Single-layer theory: gradient descent on the data model ({options.profile} profile)")
    figure.tight_layout(rect=(0, 0, 1, 0.97), h_pad=4.0)
    save_figure(figure, options, NAME)
    in_map = sum(s.three_phases for s in summaries)
    regimes = "; ".join(line.split(" | ")[0].lstrip("| ") + ": " + line.split(" | ")[1].split(":")[0] for line in lines[2:])
    disagree = sum(not prediction_agrees(summary) for summary in summaries)
    headline = (
        f"{regimes}; regime map: three phases in {in_map} of {len(summaries)} cells "
        f"({summaries[0].verdict.settings.describe()}); prediction disagrees in {disagree}"
    )
    return headline, "\n".join(lines + [""] + map_table(summaries))


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
