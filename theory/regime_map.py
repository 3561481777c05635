"""Where the single-layer theory gives three phases: a map over the data model and the optimiser.

Serves theory/README.md ("Regime map") and the map panels of the `theory`
figure. The named regimes of `theory.regimes` are single points; this module runs the simulator
over two planes through the committed three-phase regime (C = 3, d = 64, N = 120, r = 10,
sigma = 1, full-batch GD for 2^16 steps) and says, per cell, which phases the seeds show:

- plane "outlier fraction x position": rho x tau at eta = 0.001, init_scale = 0.5. rho = 0 has
  no outliers, so its position is irrelevant: it is one cell (outlier_distance None).
- plane "learning rate x initial scale": eta x init_scale at rho = 0.1, tau = 1.

Verdicts. The simulator is deterministic per seed, so the noise that matters is seed to seed (the
training sample, the test sample and W0 change with the seed). Each cell's verdict is the suite's
one verdict, `kphases.phases.phase_verdict` on the seeds' curves with its default settings (the
same rule as the networks': plateau within +-2% of R(W0) by an equivalence test, decrease and
increase beyond 2%, 95% t-intervals across seeds). Beside it: whether a smaller rise is confident
(the same verdict with minimum effect `SMALL_RISE_MIN_EFFECT` = 1%), and the theory's per-seed
predictions from `theory.predictions.predict_phases` (judged with the same margins).

Mechanism measurements (what the simulator says about "fitting a few"), per seed, after the
measured minimum of R:
- outlier train accuracy at the minimum and at the last step;
- `rise_before_outliers_fitted`: the share of the rise (minimum -> last step) already realised at
  the first measured step where every outlier is classified correctly (1.0 if that never happens);
- `tilt_in_outlier_noise`: the share of the growth of the rows' differences outside the prototype
  span, minimum -> last step, that lies in the span of the outliers' own noise vectors; a random
  direction would put `tilt_in_outlier_noise_by_chance` = n_outliers / (d - C) there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from kphases.phases import PhaseVerdict, VerdictSettings, phase_verdict
from theory.data_model import DataModel, prototypes
from theory.predictions import predict_phases
from theory.regimes import BASE_CONFIG, BASE_MODEL
from theory.simulate import SimulationConfig, Trajectory, simulate_many

FRACTION_POSITION = "outlier fraction x position"
RATE_SCALE = "learning rate x initial scale"
PLANES = (FRACTION_POSITION, RATE_SCALE)

SMALL_RISE_MIN_EFFECT = 0.01
"""The minimum effect of `CellSummary.small_rise_confident`: a rise of at least 1% of R(W0), confident across seeds."""


@dataclass(frozen=True)
class RegimeMapGrid:
    """The two planes' axes, the seeds per cell and the run length (defaults: the quick profile)."""

    outlier_fractions: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2)
    outlier_distances: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    init_scales: tuple[float, ...] = (0.05, 0.15, 0.5, 1.5)
    seeds: tuple[int, ...] = (0, 1, 2)
    """At least 3: the verdict's t-intervals are across seeds."""
    last_step: int = 2**16
    fraction_plane_rate: float = BASE_CONFIG.learning_rate
    fraction_plane_scale: float = BASE_CONFIG.init_scale
    rate_plane_fraction: float = 0.1
    rate_plane_distance: float = 1.0

    def __post_init__(self) -> None:
        for name in ("outlier_fractions", "outlier_distances", "learning_rates", "init_scales", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must be a non-empty tuple of distinct values, got {values!r}")
        if len(self.seeds) < 3:
            raise ValueError(f"seeds must hold at least 3 seeds (the verdict's intervals are across seeds), got {self.seeds!r}")
        if not all(0 <= value < 1 for value in self.outlier_fractions):
            raise ValueError(f"outlier_fractions must lie in [0, 1), got {self.outlier_fractions!r}")
        if not all(0 <= value <= 1 for value in self.outlier_distances):
            raise ValueError(f"outlier_distances must lie in [0, 1], got {self.outlier_distances!r}")
        if not all(value > 0 for value in self.learning_rates + self.init_scales):
            raise ValueError(f"learning_rates and init_scales must be > 0, got {self.learning_rates!r} and {self.init_scales!r}")

    def replace(self, **changes) -> "RegimeMapGrid":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class MapCell:
    """One cell of a plane: the four parameters it fixes (outlier_distance None when there are no outliers)."""

    plane: str
    outlier_fraction: float
    outlier_distance: float | None
    learning_rate: float
    init_scale: float

    def run(self, seed: int, last_step: int) -> tuple[DataModel, SimulationConfig]:
        distance = 1.0 if self.outlier_distance is None else self.outlier_distance  # irrelevant without outliers
        model = BASE_MODEL.replace(outlier_fraction=self.outlier_fraction, outlier_distance=distance)
        return model, BASE_CONFIG.replace(learning_rate=self.learning_rate, init_scale=self.init_scale, seed=seed, last_step=last_step)


def map_cells(grid: RegimeMapGrid) -> list[MapCell]:
    """Every cell of both planes, fraction plane first (rows rho, columns tau), then rate plane (rows eta, columns init)."""
    cells = []
    for fraction in grid.outlier_fractions:
        distances = (None,) if fraction == 0 else grid.outlier_distances
        cells += [
            MapCell(FRACTION_POSITION, fraction, distance, grid.fraction_plane_rate, grid.fraction_plane_scale) for distance in distances
        ]
    cells += [
        MapCell(RATE_SCALE, grid.rate_plane_fraction, grid.rate_plane_distance, rate, scale)
        for rate in grid.learning_rates
        for scale in grid.init_scales
    ]
    return cells


@dataclass(frozen=True)
class SeedRun:
    """One seed of one cell: the measured curves and the per-seed numbers computed from weights and data."""

    cell: MapCell
    seed: int
    steps: tuple[int, ...]
    reconstruction_loss: tuple[float, ...]
    outlier_accuracy: tuple[float, ...]
    """NaN at every step when there are no outliers."""
    majority_accuracy: tuple[float, ...]
    predicted_constant: bool
    """Proposition 3's linearised dynamics stay within the 5% band through step 2 or later."""
    predicted_three_phases: bool
    """`PhasePrediction.three_phases_expected` (phase 3 from the max-margin asymptote)."""
    asymptotic_relative_increase: float
    """(R_inf - R_2) / R0 of proposition 4(c); NaN when the sample is not linearly separable."""
    tilt_in_outlier_noise: float
    """See the module docstring; NaN without outliers or when R's minimum is the last step."""
    tilt_in_outlier_noise_by_chance: float


def tilt_in_outlier_noise(trajectory: Trajectory) -> tuple[float, float]:
    """(share of the rows' out-of-prototype growth after R's minimum in the outliers' noise span, chance share)."""
    model, dataset = trajectory.model, trajectory.dataset
    outlier = dataset.is_outlier
    basis, _ = np.linalg.qr(prototypes(model).T)  # the C prototype directions (the noise is what lies outside)
    outside = np.eye(model.input_dim) - basis @ basis.T
    if not outlier.any():
        return math.nan, math.nan
    noise_span = scipy.linalg.orth((dataset.inputs[outlier] @ outside).T)
    chance = noise_span.shape[1] / (model.input_dim - model.num_classes)
    minimum = int(np.argmin(trajectory.reconstruction_loss))
    if minimum == len(trajectory.steps) - 1:
        return math.nan, chance

    # Differences of rows (the conserved row sum removed), outside the prototype directions.
    def centred_outside(weights: np.ndarray) -> np.ndarray:
        return (weights - weights.mean(axis=0)) @ outside

    growth = centred_outside(trajectory.weights[-1]) - centred_outside(trajectory.weights[minimum])
    total = float(np.sum(growth**2))
    return (float(np.sum((growth @ noise_span) ** 2)) / total if total > 0 else math.nan), chance


def run_map(grid: RegimeMapGrid = RegimeMapGrid()) -> list[SeedRun]:
    """Simulate every cell for every seed (one stack, `simulate_many`) and measure it."""
    cells = map_cells(grid)
    pairs = [(cell, seed) for cell in cells for seed in grid.seeds]
    # A run shared by both planes (the committed regime cell) is simulated once.
    distinct = list(dict.fromkeys(cell.run(seed, grid.last_step) for cell, seed in pairs))
    simulated = dict(zip(distinct, simulate_many(distinct)))
    results = []
    for cell, seed in pairs:
        trajectory = simulated[cell.run(seed, grid.last_step)]
        prediction = predict_phases(trajectory)
        tilt, chance = tilt_in_outlier_noise(trajectory)
        results.append(
            SeedRun(
                cell=cell,
                seed=seed,
                steps=tuple(int(step) for step in trajectory.steps),
                reconstruction_loss=tuple(float(value) for value in trajectory.reconstruction_loss),
                outlier_accuracy=tuple(float(value) for value in trajectory.outlier_accuracy),
                majority_accuracy=tuple(float(value) for value in trajectory.majority_accuracy),
                predicted_constant=prediction.linearised_constant_end is not None,
                predicted_three_phases=prediction.three_phases_expected,
                asymptotic_relative_increase=math.nan
                if prediction.asymptotic_relative_increase is None
                else prediction.asymptotic_relative_increase,
                tilt_in_outlier_noise=tilt,
                tilt_in_outlier_noise_by_chance=chance,
            )
        )
    return results


@dataclass(frozen=True)
class CellSummary:
    """A cell's verdicts over its seeds and the means of the per-seed numbers."""

    cell: MapCell
    seeds: int
    verdict: PhaseVerdict
    """phase_verdict across seeds, default settings."""
    small_rise_confident: bool
    """A rise of at least SMALL_RISE_MIN_EFFECT after the minimum is confident (the same verdict, that minimum effect)."""
    seeds_predicted_three_phases: int
    seeds_predicted_constant: int
    asymptotic_relative_increase: float
    """Mean over the seeds whose sample is separable (NaN when none is)."""
    separable_seeds: int
    outlier_accuracy_at_minimum: float
    outlier_accuracy_final: float
    rise_before_outliers_fitted: float
    tilt_in_outlier_noise: float
    tilt_in_outlier_noise_by_chance: float

    @property
    def three_phases(self) -> bool:
        return self.verdict.three_phases


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float(np.mean(array[np.isfinite(array)])) if np.isfinite(array).any() else math.nan


def rise_before_outliers_fitted(reconstruction_loss: Sequence[float], outlier_accuracy: Sequence[float]) -> float:
    """Share of the rise (R's minimum -> last step) realised when every outlier is first classified
    correctly (1.0: never within the run); NaN without outliers or without a rise."""
    loss, accuracy = np.asarray(reconstruction_loss), np.asarray(outlier_accuracy)
    if np.isnan(accuracy).all():
        return math.nan
    minimum = int(np.argmin(loss))
    rise = loss[-1] - loss[minimum]
    if rise <= 0:
        return math.nan
    fitted = np.flatnonzero(accuracy[minimum:] >= 1.0)
    return 1.0 if fitted.size == 0 else float((loss[minimum + fitted[0]] - loss[minimum]) / rise)


def summarise_cell(runs: Sequence[SeedRun], settings: VerdictSettings = VerdictSettings()) -> CellSummary:
    """The verdicts and means of one cell's seeds (all runs must share the cell and the steps)."""
    if len({run.cell for run in runs}) != 1 or len({run.steps for run in runs}) != 1:
        raise ValueError(
            f"summarise_cell needs the seeds of one cell measured at the same steps, got cells {sorted({str(r.cell) for r in runs})}"
        )
    steps = list(runs[0].steps)
    curves = np.array([run.reconstruction_loss for run in runs])
    verdict = phase_verdict(steps, seed_curves=curves, settings=settings)
    small_rise = phase_verdict(
        steps, seed_curves=curves, settings=dataclasses.replace(settings, min_effect=SMALL_RISE_MIN_EFFECT)
    ).has_increase
    minima = [int(np.argmin(run.reconstruction_loss)) for run in runs]
    return CellSummary(
        cell=runs[0].cell,
        seeds=len(runs),
        verdict=verdict,
        small_rise_confident=bool(small_rise),
        seeds_predicted_three_phases=sum(run.predicted_three_phases for run in runs),
        seeds_predicted_constant=sum(run.predicted_constant for run in runs),
        asymptotic_relative_increase=_nanmean([run.asymptotic_relative_increase for run in runs]),
        separable_seeds=sum(math.isfinite(run.asymptotic_relative_increase) for run in runs),
        outlier_accuracy_at_minimum=_nanmean([run.outlier_accuracy[index] for run, index in zip(runs, minima)]),
        outlier_accuracy_final=_nanmean([run.outlier_accuracy[-1] for run in runs]),
        rise_before_outliers_fitted=_nanmean([rise_before_outliers_fitted(run.reconstruction_loss, run.outlier_accuracy) for run in runs]),
        tilt_in_outlier_noise=_nanmean([run.tilt_in_outlier_noise for run in runs]),
        tilt_in_outlier_noise_by_chance=_nanmean([run.tilt_in_outlier_noise_by_chance for run in runs]),
    )


def summarise_map(runs: Sequence[SeedRun], settings: VerdictSettings = VerdictSettings()) -> list[CellSummary]:
    """`summarise_cell` for every cell of `runs`, in the order the cells first appear."""
    by_cell: dict[MapCell, list[SeedRun]] = {}
    for run in runs:
        by_cell.setdefault(run.cell, []).append(run)
    return [summarise_cell(cell_runs, settings) for cell_runs in by_cell.values()]
