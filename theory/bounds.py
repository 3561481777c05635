"""The explicit bounds of propositions 2 (phase 1) and 3 (phase 2) in theory/README.md.

Serves the property tests of tests/theory and `theory.predictions`. Every function returns the
right-hand side of an inequality that the README proves; the tests check the inequality on
simulated runs and check that the lemmas are tight (a wrong constant would fail them).

Notation: inputs X (N x d), second moment M2 = X^T X / N, covariance S, W0 the initial weights,
A0 = S^(1/2) W0^T (d x C), sigma_C(A0) its smallest singular value, K_2C(S) the sum of the 2C
largest eigenvalues of S, g a bound on the gradient's spectral norm.
"""

from __future__ import annotations

import math

import numpy as np

from theory.reconstruction import covariance_square_root


def gradient_norm_bound(inputs: np.ndarray, batch_size: int | None = None) -> float:
    """g >= ||G||_2 for every W and every batch (lemma A).

    Full batch: ||G||_2 <= sqrt(2) sqrt(lambda_max(M2)), since G = R^T X / N with residual rows
    r_i = p_i - e_{y_i}, ||r_i||^2 = (1 - p_y)^2 + sum_{c != y} p_c^2 <= 2 (1 - p_y)^2 <= 2.
    Batches of any size (SGD): ||G_B||_2 <= sqrt(2) max_i ||x_i||.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    if batch_size is None:
        second_moment = inputs.T @ inputs / len(inputs)
        return math.sqrt(2.0 * max(np.linalg.eigvalsh(second_moment)[-1], 0.0))
    return math.sqrt(2.0) * float(np.max(np.linalg.norm(inputs, axis=1)))


def projector_perturbation_bound(matrix: np.ndarray, perturbation: np.ndarray) -> float:
    """||Pi_{A+E} - Pi_A||_2 <= ||E||_2 / sigma_min(A) when ||E||_2 < sigma_min(A) (lemma B); else inf.

    A has full column rank. Proof: both projectors have the same rank, so ||Pi_B - Pi_A|| =
    ||(I - Pi_B) Pi_A|| = ||(I - Pi_B)(B - E) A^+|| = ||(I - Pi_B) E A^+|| <= ||E|| / sigma_min(A).
    """
    smallest = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)[-1]
    size = np.linalg.norm(np.asarray(perturbation, dtype=np.float64), 2)
    return float(size / smallest) if size < smallest else math.inf


def _phase1_constants(
    initial_weights: np.ndarray, covariance: np.ndarray, inputs: np.ndarray, batch_size: int | None
) -> tuple[float, float, float]:
    """(sigma_C(A0), K_2C(S), g ||S||^(1/2)) for proposition 2."""
    num_classes = initial_weights.shape[0]
    smallest = np.linalg.svd(covariance_square_root(covariance) @ initial_weights.T, compute_uv=False)[-1]
    eigenvalues = np.sort(np.clip(np.linalg.eigvalsh(covariance), 0.0, None))[::-1]
    top_sum = float(eigenvalues[: 2 * num_classes].sum())
    speed = gradient_norm_bound(inputs, batch_size) * math.sqrt(eigenvalues[0])
    return float(smallest), top_sum, speed


def phase1_reconstruction_change_bound(
    initial_weights: np.ndarray,
    covariance: np.ndarray,
    inputs: np.ndarray,
    learning_rate: float,
    step: int,
    batch_size: int | None = None,
) -> float:
    """Proposition 2: |R(W_t) - R(W0)| <= K_2C(S) eps_t / sigma_C(A0), eps_t = eta t g ||S||^(1/2).

    Valid while eps_t < sigma_C(A0) (the row space cannot lose rank); inf after that.
    Proof: ||W_t - W0||_2 <= eta t g (lemma A), so E = S^(1/2)(W_t - W0)^T has ||E|| <= eps_t;
    lemma B bounds ||Pi_t - Pi_0||; and |tr((Pi_t - Pi_0) S)| <= ||Pi_t - Pi_0|| K_2C(S) because
    Pi_t - Pi_0 has rank <= 2C (Ky Fan).
    """
    smallest, top_sum, speed = _phase1_constants(initial_weights, covariance, inputs, batch_size)
    epsilon = learning_rate * step * speed
    return top_sum * epsilon / smallest if epsilon < smallest else math.inf


def phase1_certified_steps(
    initial_weights: np.ndarray,
    covariance: np.ndarray,
    inputs: np.ndarray,
    learning_rate: float,
    projector_tolerance: float = 1.0,
    batch_size: int | None = None,
) -> int:
    """The number of steps T proposition 2 covers: the largest t with eps_t < sigma_C(A0) and
    eps_t / sigma_C(A0) <= projector_tolerance, so that |R(W_t) - R(W0)| <= projector_tolerance K_2C(S)
    for all t <= T. With projector_tolerance = 1 this is T_rank = sigma_C(A0) / (eta g ||S||^(1/2)),
    rounded down (strictly below)."""
    if not projector_tolerance > 0:
        raise ValueError(f"projector_tolerance must be > 0, got {projector_tolerance!r}")
    smallest, _, speed = _phase1_constants(initial_weights, covariance, inputs, batch_size)
    per_step = learning_rate * speed
    rank_steps = math.ceil(smallest / per_step) - 1  # largest t with t * per_step < smallest
    return max(min(rank_steps, math.floor(projector_tolerance * smallest / per_step)), 0)


def gradient_deviation_bound(weights: np.ndarray, inputs: np.ndarray) -> float:
    """Proposition 3(b): ||G(W) - G(0)||_F <= (1/2) ||W||_2 mean_i ||x_i||^2.

    The softmax Jacobian diag(p) - p p^T has spectral norm <= 1/2 (v^T J v is the variance of v
    under p, at most (max v - min v)^2 / 4 <= 1/2 for a unit v), so ||p(W x) - p(0)|| <= ||W x|| / 2.
    """
    inputs = np.asarray(inputs, dtype=np.float64)
    return 0.5 * float(np.linalg.norm(weights, 2)) * float(np.mean(np.sum(inputs**2, axis=1)))


def alignment_sine_bound(largest_weight_norm: float, inputs: np.ndarray, gradient_at_zero_row: np.ndarray) -> float:
    """Proposition 3(b), corollary: after t steps with max_s ||W_s||_2 <= largest_weight_norm, the
    sine of the angle between row c of W_t - W0 and row c of -G(0) is at most this (1 = no bound)."""
    inputs = np.asarray(inputs, dtype=np.float64)
    deviation = 0.5 * largest_weight_norm * float(np.mean(np.sum(inputs**2, axis=1)))
    return min(1.0, deviation / float(np.linalg.norm(gradient_at_zero_row)))
