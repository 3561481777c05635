"""The theory's predictions for one simulated run: phase levels and boundaries (propositions 2-4).

Serves the three-phase tests of tests/theory and the later theory figure (which overlays these
predictions on `theory.simulate` trajectories). What each number is, and how much to trust it:

- `certified_constant_steps` (proposition 2, rigorous): for t up to this, |R(W_t) - R(W0)| is at
  most `certified_change` (worst-case, so much larger than the change actually seen).
- `linearised_reconstruction_loss`, `linearised_constant_end` (proposition 3, approximate): R along
  W0 - eta t G(0), the dynamics with the softmax frozen at p = 1/C. Exact while the logits are
  small (proposition 3(b) bounds the error); it predicts when phase 1 ends and the level R_2 that
  phase 2 heads for.
- `phase2_level` R_2 = R(span(rows of G(0)) + u0), u0 = sum of the rows of W0 (conserved by
  proposition 1): the limit of the linearised dynamics, the majority-fitted level.
- `asymptotic_level` R_inf = R(span(rows of W_mm) + u0), W_mm the multiclass hard-margin
  classifier of the training sample: on separable data the direction of W_t converges to W_mm
  (implicit bias of gradient descent; Soudry et al. 2018, JMLR 19(70), cited, not proved here),
  so R(W_t) -> R_inf, logarithmically slowly. None when the sample is not linearly separable.
- `three_phases_expected`: phase 1 (linearised_constant_end >= 2), phase 2 ((R0 - R_2) / R0 at
  least the detector's threshold) and phase 3 ((R_inf - R_2) / R0 at least the threshold). The
  phase-3 part is asymptotic: a run must be long enough to realise it. Where this is right and
  wrong is measured by `theory.regime_map`: it expects a rise where 2^16 steps do not show one
  (large init_scale, small eta) and expects none on samples that are not separable, where R rises
  anyway (theory/README.md, "What the simulator says about fitting a few").
- `outlier_dominance_step` (proposition 4, measured, not predicted from W0): the first step at
  which the outliers' part of the gradient is at least 45% of the gradient mass (majority +
  outliers). From then on the two parts nearly cancel and the outliers set the direction of
  learning; R's minimum falls within a factor two of it in the three-phase regime. It marks when
  the outliers start to move the rows, not when they are fitted: at the minimum none is, and the
  rise goes on after all are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from kphases.phases import VerdictSettings
from theory.bounds import phase1_certified_steps, phase1_reconstruction_change_bound
from theory.data_model import population_covariance
from theory.reconstruction import reconstruction_loss
from theory.simulate import Trajectory, cross_entropy_gradient

OUTLIER_DOMINANCE_SHARE = 0.45
"""Share of the gradient mass from the outliers that marks the start of phase 3 (see module docstring)."""


@dataclass(frozen=True)
class PhasePrediction:
    """The theory's numbers for one run; see the module docstring for what each one is."""

    initial_level: float
    phase2_level: float
    asymptotic_level: float | None
    eckart_young_minimum: float
    predicted_relative_decrease: float
    asymptotic_relative_increase: float | None
    certified_constant_steps: int
    certified_change: float
    linearised_constant_end: int | None
    linearised_reconstruction_loss: tuple[float, ...]
    outlier_dominance_step: int | None
    three_phases_expected: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def gradient_at_zero(inputs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """G(0) = (1/N) sum_i (1/C - e_{y_i}) x_i^T: minus row c is pi_c mean_c - mean / C (proposition 3(a))."""
    return cross_entropy_gradient(np.zeros((num_classes, inputs.shape[1])), inputs, labels)


def linearised_weights(initial_weights: np.ndarray, gradient_zero: np.ndarray, learning_rate: float, step: int) -> np.ndarray:
    """W0 - eta t G(0): gradient descent with the softmax frozen at the uniform distribution."""
    return initial_weights - learning_rate * step * gradient_zero


def max_margin_classifier(inputs: np.ndarray, labels: np.ndarray, num_classes: int, margin_tolerance: float = 1e-3) -> np.ndarray | None:
    """W_mm = argmin ||W||_F^2 s.t. (w_{y_i} - w_c) . x_i >= 1 for all i and c != y_i (no bias).

    Solved through the dual, a non-negative quadratic programme (L-BFGS-B). Returns None when the
    solution violates a margin by more than margin_tolerance (the sample is not separable).
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    pairs = [(index, other) for index, label in enumerate(labels) for other in range(num_classes) if other != label]
    sample_index = np.array([index for index, _ in pairs])
    other_class = np.array([other for _, other in pairs])
    # Each constraint is <W, (e_y - e_c) x^T> >= 1; its coefficient matrix has class part e_y - e_c.
    class_part = np.zeros((len(pairs), num_classes))
    class_part[np.arange(len(pairs)), labels[sample_index]] = 1.0
    class_part[np.arange(len(pairs)), other_class] -= 1.0
    gram = (class_part @ class_part.T) * (inputs[sample_index] @ inputs[sample_index].T)

    def objective(dual: np.ndarray) -> tuple[float, np.ndarray]:
        product = gram @ dual
        return 0.5 * dual @ product - dual.sum(), product - 1.0

    result = minimize(
        objective,
        np.zeros(len(pairs)),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * len(pairs),
        options={"maxiter": 50_000, "ftol": 1e-16, "gtol": 1e-12},
    )
    weights = (class_part * result.x[:, None]).T @ inputs[sample_index]
    scores = inputs @ weights.T
    margins = scores[np.arange(len(labels)), labels][:, None] - scores
    margins[np.arange(len(labels)), labels] = np.inf
    if margins.min() < 1.0 - margin_tolerance:
        return None
    return weights


_MAX_MARGIN_CACHE: dict[tuple[bytes, bytes, int], np.ndarray | None] = {}


def _cached_max_margin_classifier(inputs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """max_margin_classifier, computed once per training sample: runs that differ only in the
    optimiser (the regime map's learning rate x initial scale plane) share the quadratic programme."""
    key = (np.ascontiguousarray(inputs, dtype=np.float64).tobytes(), np.ascontiguousarray(labels).tobytes(), int(num_classes))
    if key not in _MAX_MARGIN_CACHE:
        _MAX_MARGIN_CACHE[key] = max_margin_classifier(inputs, labels, num_classes)
    return _MAX_MARGIN_CACHE[key]


def predict_phases(trajectory: Trajectory, settings: VerdictSettings = VerdictSettings()) -> PhasePrediction:
    """The theory's prediction for the run `trajectory` (same W0, sample and learning rate), judged with the
    margins of the suite's verdict: the plateau within `plateau_margin`, decrease and increase of at least `min_effect`."""
    model, config, dataset = trajectory.model, trajectory.config, trajectory.dataset
    covariance = population_covariance(model)
    initial = trajectory.weights[0]
    conserved_row_sum = initial.sum(axis=0)
    gradient_zero = gradient_at_zero(dataset.inputs, dataset.labels, model.num_classes)
    initial_level = reconstruction_loss(initial, covariance)
    phase2_level = reconstruction_loss(np.vstack([gradient_zero, conserved_row_sum]), covariance)
    margin_weights = _cached_max_margin_classifier(dataset.inputs, dataset.labels, model.num_classes)
    asymptotic_level = None if margin_weights is None else reconstruction_loss(np.vstack([margin_weights, conserved_row_sum]), covariance)

    linearised = tuple(
        reconstruction_loss(linearised_weights(initial, gradient_zero, config.learning_rate, int(step)), covariance)
        for step in trajectory.steps
    )
    band = settings.plateau_margin * abs(initial_level)
    constant_last = 0
    while constant_last + 1 < len(linearised) and abs(linearised[constant_last + 1] - initial_level) <= band:
        constant_last += 1
    linearised_constant_end = int(trajectory.steps[constant_last]) if constant_last >= 1 else None

    certified_steps = phase1_certified_steps(initial, covariance, dataset.inputs, config.learning_rate, batch_size=config.batch_size)
    certified_change = phase1_reconstruction_change_bound(
        initial, covariance, dataset.inputs, config.learning_rate, certified_steps, batch_size=config.batch_size
    )

    dominated = np.flatnonzero(trajectory.outlier_gradient_share >= OUTLIER_DOMINANCE_SHARE)
    outlier_dominance_step = int(trajectory.steps[dominated[0]]) if dominated.size else None

    relative_decrease = (initial_level - phase2_level) / abs(initial_level)
    relative_increase = None if asymptotic_level is None else (asymptotic_level - phase2_level) / abs(initial_level)
    threshold = settings.min_effect
    expected = (
        linearised_constant_end is not None
        and relative_decrease >= threshold
        and relative_increase is not None
        and relative_increase >= threshold
    )
    return PhasePrediction(
        initial_level=initial_level,
        phase2_level=phase2_level,
        asymptotic_level=asymptotic_level,
        eckart_young_minimum=trajectory.reconstruction_minimum,
        predicted_relative_decrease=float(relative_decrease),
        asymptotic_relative_increase=None if relative_increase is None else float(relative_increase),
        certified_constant_steps=certified_steps,
        certified_change=float(certified_change),
        linearised_constant_end=linearised_constant_end,
        linearised_reconstruction_loss=linearised,
        outlier_dominance_step=outlier_dominance_step,
        three_phases_expected=bool(expected),
    )
