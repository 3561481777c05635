"""The theory's data model, "fitting the majority, then a few" (paper section on the single-layer theory).

Serves `theory/` (the propositions, the simulator and their tests) and the later theory figure.
The paper's own data model is described only in words in what we have ("most samples of a class
lie close to a class prototype, a few lie far from it"); the concrete model below is ours:

- C classes with equiangular prototypes m_c = r (sqrt(1 - gamma) q_c + sqrt(gamma) q_0), where
  q_0, ..., q_C are the first C + 1 standard basis vectors of R^d: every prototype has norm r and
  every pair has cosine gamma. The noise is isotropic, so fixing the basis loses no generality.
- Labels are balanced. A majority sample of class c is m_c + sigma xi, xi ~ N(0, I_d).
- A fraction rho of the samples (the "few") sit on the segment from their own prototype towards
  the prototype of another class c' (uniform over the others): (1 - tau) m_c + tau m_c' + sigma xi.
  tau is the outlier distance in units of the prototype spacing: tau = 0 is an ordinary sample,
  tau = 1 a sample lying at another class's prototype. For tau > 1/2 the sample is closer to the
  other prototype, so a classifier fitted to the majority gets it wrong and must memorise it.

Because the class structure is symmetric, the population covariance is exactly
S = sigma^2 I + lambda Pi_P, where P = span{m_c - mean(m)} is the (C - 1)-dimensional centred
prototype span and lambda = r^2 (1 - gamma) / C * ((1 - rho) + rho ((1 - tau)^2 + tau^2
- 2 tau (1 - tau) / (C - 1))) (derived in `theory.symbolic.population_covariance_eigenvalue`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DataModel:
    """Parameters of the data model; every field is validated on construction."""

    num_classes: int = 3
    """C, the number of classes (>= 2)."""
    input_dim: int = 64
    """d, the input dimension (>= C + 1, so that the prototypes and the common direction fit)."""
    prototype_norm: float = 6.0
    """r, the norm of every prototype."""
    prototype_cosine: float = 0.0
    """gamma in [0, 1): the cosine between any two prototypes (their shared component)."""
    noise_scale: float = 1.0
    """sigma: standard deviation of the isotropic Gaussian noise per input coordinate."""
    outlier_fraction: float = 0.0
    """rho in [0, 1): fraction of samples that sit towards another class's prototype."""
    outlier_distance: float = 1.0
    """tau in [0, 1]: how far along the segment to the other class's prototype an outlier sits."""

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        if not isinstance(self.input_dim, (int, np.integer)) or self.input_dim < self.num_classes + 1:
            raise ValueError(f"input_dim must be an integer >= num_classes + 1 = {self.num_classes + 1}, got {self.input_dim!r}")
        if not self.prototype_norm > 0:
            raise ValueError(f"prototype_norm must be > 0, got {self.prototype_norm!r}")
        if not 0 <= self.prototype_cosine < 1:
            raise ValueError(f"prototype_cosine must lie in [0, 1), got {self.prototype_cosine!r}")
        if not self.noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale!r}")
        if not 0 <= self.outlier_fraction < 1:
            raise ValueError(f"outlier_fraction must lie in [0, 1), got {self.outlier_fraction!r}")
        if not 0 <= self.outlier_distance <= 1:
            raise ValueError(f"outlier_distance must lie in [0, 1], got {self.outlier_distance!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "DataModel":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Dataset:
    """A finite sample from the data model."""

    inputs: np.ndarray
    """(N, d) float64 inputs x_i."""
    labels: np.ndarray
    """(N,) int labels y_i in 0..C-1."""
    is_outlier: np.ndarray
    """(N,) bool: True for the few samples placed towards another class's prototype."""


def prototypes(model: DataModel) -> np.ndarray:
    """(C, d) prototypes m_c: norm r, pairwise cosine gamma (see the module docstring)."""
    num_classes, dim = model.num_classes, model.input_dim
    basis = np.eye(dim)
    specific = basis[1 : num_classes + 1]  # q_1..q_C
    common = basis[0]  # q_0, shared by all prototypes
    gamma = model.prototype_cosine
    return model.prototype_norm * (np.sqrt(1.0 - gamma) * specific + np.sqrt(gamma) * common)


def prototype_span_basis(model: DataModel) -> np.ndarray:
    """(d, C - 1) orthonormal basis of P = span{m_c - mean(m)}, the centred prototype span."""
    centred = prototypes(model) - prototypes(model).mean(axis=0)
    left, singular, _ = np.linalg.svd(centred.T, full_matrices=False)
    return left[:, : model.num_classes - 1]


def prototype_eigenvalue(model: DataModel) -> float:
    """lambda: the variance the class structure adds along every direction of P (closed form)."""
    num_classes = model.num_classes
    rho, tau = model.outlier_fraction, model.outlier_distance
    between = model.prototype_norm**2 * (1.0 - model.prototype_cosine) / num_classes
    outlier_factor = (1.0 - tau) ** 2 + tau**2 - 2.0 * tau * (1.0 - tau) / (num_classes - 1)
    return between * ((1.0 - rho) + rho * outlier_factor)


def population_covariance(model: DataModel) -> np.ndarray:
    """(d, d) exact covariance S of x under the data model, by enumerating its mixture components.

    Computed from the component means, not from the closed form in the module docstring, so that
    tests can compare the two.
    """
    protos = prototypes(model)
    num_classes, rho, tau = model.num_classes, model.outlier_fraction, model.outlier_distance
    means, weights = [], []
    for own in range(num_classes):
        means.append(protos[own])
        weights.append((1.0 - rho) / num_classes)
        for other in range(num_classes):
            if other != own:
                means.append((1.0 - tau) * protos[own] + tau * protos[other])
                weights.append(rho / (num_classes * (num_classes - 1)))
    means_array, weights_array = np.array(means), np.array(weights)
    grand_mean = weights_array @ means_array
    centred = means_array - grand_mean
    between = (centred * weights_array[:, None]).T @ centred
    return between + model.noise_scale**2 * np.eye(model.input_dim)


def population_mean(model: DataModel) -> np.ndarray:
    """(d,) mean of x: the mean prototype (the outliers' offsets cancel by symmetry)."""
    return prototypes(model).mean(axis=0)


def sample_dataset(model: DataModel, num_samples: int, seed: int | tuple[int, ...]) -> Dataset:
    """N samples: balanced labels, exactly round(rho N) outliers, Gaussian noise; deterministic in seed."""
    if num_samples < model.num_classes:
        raise ValueError(f"num_samples must be >= num_classes = {model.num_classes}, got {num_samples}")
    rng = np.random.default_rng(seed)
    protos = prototypes(model)
    labels = rng.permutation(np.arange(num_samples) % model.num_classes)
    num_outliers = int(round(model.outlier_fraction * num_samples))
    is_outlier = np.zeros(num_samples, dtype=bool)
    is_outlier[rng.choice(num_samples, size=num_outliers, replace=False)] = True
    # The other class of an outlier: uniform over the C - 1 classes that are not its own.
    others = (labels + rng.integers(1, model.num_classes, size=num_samples)) % model.num_classes
    tau = np.where(is_outlier, model.outlier_distance, 0.0)[:, None]
    centres = (1.0 - tau) * protos[labels] + tau * protos[others]
    inputs = centres + model.noise_scale * rng.standard_normal((num_samples, model.input_dim))
    return Dataset(inputs=inputs, labels=labels, is_outlier=is_outlier)
