"""Reconstruction loss of the input from a single layer's output h = W x, in closed form.

Serves the theory's propositions 2-5 and the simulator (theory/README.md). The paper measures
reconstruction with a trained affine decoder (`docs/protocol.md`, "What is measured at each snapshot"); here the decoder is
its population optimum, so the loss is a function of W and the input covariance S alone:

    decoder      x_hat = mu + D (h - W mu),   D = S W^T (W S W^T)^+
    loss         R(W)  = E ||x - x_hat||^2 = tr S - tr(S W^T (W S W^T)^+ W S)
                       = tr((I - Pi) S),  Pi = projector onto the column space of S^(1/2) W^T.

R is a sum over input coordinates (the paper's per-element MSE is R / d). The last form shows that R
depends on W only through its row space. `reconstruction_loss` evaluates it through an SVD of
S^(1/2) W^T (stable when W's rows differ in scale by many orders, as they do late in training);
`reconstruction_loss_closed_form` is the pseudo-inverse formula, kept as an independent check.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def _check_weights_and_covariance(weights: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    covariance = np.asarray(covariance, dtype=np.float64)
    dim = weights.shape[1]
    if covariance.shape != (dim, dim):
        raise ValueError(f"covariance must have shape ({dim}, {dim}) to match weights of shape {weights.shape}, got {covariance.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError("weights contain NaN or infinite entries")
    return weights, covariance


def covariance_square_root(covariance: np.ndarray) -> np.ndarray:
    """S^(1/2) of a symmetric positive semi-definite S (negative round-off eigenvalues clipped to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def reconstruction_loss(weights: np.ndarray, covariance: np.ndarray, rank_tolerance: float = 1e-12) -> float:
    """R(W) = tr((I - Pi) S), Pi the projector onto col(S^(1/2) W^T); singular values below
    rank_tolerance times the largest one count as zero (so R is defined for rank-deficient W)."""
    weights, covariance = _check_weights_and_covariance(weights, covariance)
    whitened = covariance_square_root(covariance) @ weights.T
    left, singular, _ = np.linalg.svd(whitened, full_matrices=False)
    if singular.size == 0 or singular[0] == 0.0:
        return float(np.trace(covariance))
    basis = left[:, singular > rank_tolerance * singular[0]]
    captured = np.trace(basis.T @ covariance @ basis)
    return float(np.trace(covariance) - captured)


def reconstruction_loss_closed_form(weights: np.ndarray, covariance: np.ndarray) -> float:
    """tr S - tr(S W^T (W S W^T)^+ W S), literally (numpy's pseudo-inverse)."""
    weights, covariance = _check_weights_and_covariance(weights, covariance)
    gram = weights @ covariance @ weights.T
    return float(np.trace(covariance) - np.trace(covariance @ weights.T @ np.linalg.pinv(gram, hermitian=True) @ weights @ covariance))


def optimal_affine_decoder(weights: np.ndarray, mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, b) with x_hat = D h + b the population-optimal affine decoder of x from h = W x."""
    weights, covariance = _check_weights_and_covariance(weights, covariance)
    gram = weights @ covariance @ weights.T
    decoder = covariance @ weights.T @ np.linalg.pinv(gram, hermitian=True)
    offset = np.asarray(mean, dtype=np.float64) - decoder @ weights @ mean
    return decoder, offset


def fit_affine_decoder(outputs: np.ndarray, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, b) fitted by least squares on samples: inputs (N, d) ~ outputs (N, k) @ D^T + b."""
    design = np.hstack([outputs, np.ones((outputs.shape[0], 1))])
    solution, *_ = np.linalg.lstsq(design, inputs, rcond=None)
    return solution[:-1].T, solution[-1]


def decoder_squared_error(decoder: np.ndarray, offset: np.ndarray, outputs: np.ndarray, inputs: np.ndarray) -> float:
    """Mean over samples of ||x - (D h + b)||^2 (summed over coordinates, like R)."""
    residual = inputs - (outputs @ decoder.T + offset)
    return float(np.mean(np.sum(residual**2, axis=1)))


def eckart_young_minimum(covariance: np.ndarray, rank: int) -> float:
    """min over maps of rank <= k of R: the sum of all but the k largest eigenvalues of S."""
    eigenvalues = np.sort(np.clip(np.linalg.eigvalsh(covariance), 0.0, None))[::-1]
    if not 0 <= rank:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return float(eigenvalues[rank:].sum())


def principal_angles(weights: np.ndarray, span_basis: np.ndarray) -> np.ndarray:
    """Principal angles (radians, descending) between the row space of W and span(span_basis columns)."""
    return scipy.linalg.subspace_angles(np.atleast_2d(weights).T, span_basis)


def reconstruction_loss_from_angles(
    angles: np.ndarray, prototype_eigenvalue: float, noise_variance: float, input_dim: int, num_classes: int, rank: int
) -> float:
    """R for S = s^2 I + lambda Pi_P (dim P = C - 1) from the principal angles theta_j between a
    rank-k row space V and P (proposition 3 in theory/README.md):

        R = d s^2 + (C - 1) lambda - sum_j cap(theta_j) - (k - #angles) s^2,
        cap(theta) = lambda + 2 s^2 - (lambda + s^2) s^2 / ((lambda + s^2) cos^2 theta + s^2 sin^2 theta).

    For k = C this is R = (d - C) s^2 + sum_j s^2 lambda sin^2 theta_j / ((lambda + s^2) cos^2 theta_j + s^2 sin^2 theta_j).
    """
    angles = np.asarray(angles, dtype=np.float64)
    lam, s2 = float(prototype_eigenvalue), float(noise_variance)
    if angles.size > min(rank, num_classes - 1):
        raise ValueError(f"got {angles.size} principal angles, but a rank-{rank} space has at most min({rank}, {num_classes - 1}) with P")
    cos2, sin2 = np.cos(angles) ** 2, np.sin(angles) ** 2
    captured_pairs = lam + 2 * s2 - (lam + s2) * s2 / ((lam + s2) * cos2 + s2 * sin2)
    return float(input_dim * s2 + (num_classes - 1) * lam - captured_pairs.sum() - (rank - angles.size) * s2)
