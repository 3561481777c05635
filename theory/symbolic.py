"""Symbolic derivations (sympy) behind the propositions of theory/README.md.

Serves tests/theory/test_theory_symbolic.py, which checks every identity as
`sympy.simplify(derived - claimed) == 0`, and the numeric modules, whose closed forms these are.
Each function derives a quantity from first principles (differentiation, solving the stationarity
equations, enumerating a mixture) and returns it next to the closed form claimed in the README,
as a `Derivation`. Dimensions are small and fixed (a symbolic proof for general C and d is
not attempted); the numeric property tests cover general dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class Derivation:
    """A derived expression and the closed form it should equal."""

    derived: sp.Expr | sp.MatrixBase
    claimed: sp.Expr | sp.MatrixBase
    symbols: tuple[sp.Symbol, ...]
    """The free symbols, in the order the claim is stated (for lambdify)."""

    def difference(self) -> sp.Expr | sp.MatrixBase:
        """derived - claimed, simplified (zero when the claim holds)."""
        return sp.simplify(self.derived - self.claimed)


def weight_matrix(num_classes: int, input_dim: int) -> sp.Matrix:
    """W with entries w_{c,j}."""
    return sp.Matrix(num_classes, input_dim, lambda c, j: sp.Symbol(f"w_{c}_{j}", real=True))


def input_vector(input_dim: int, name: str = "x") -> sp.Matrix:
    return sp.Matrix(input_dim, 1, lambda j, _: sp.Symbol(f"{name}_{j}", real=True))


def softmax(logits: sp.Matrix) -> sp.Matrix:
    exponentials = logits.applyfunc(sp.exp)
    return exponentials / sum(exponentials)


def reconstruction_loss_expression(weights: sp.MatrixBase, covariance: sp.MatrixBase) -> sp.Expr:
    """R(W) = tr S - tr(S W^T (W S W^T)^{-1} W S) for full row rank W (our closed form)."""
    gram = weights * covariance * weights.T
    return covariance.trace() - (covariance * weights.T * gram.inv() * weights * covariance).trace()


# --- Proposition 1: the gradient -------------------------------------------------------------


def cross_entropy_gradient(num_classes: int = 3, input_dim: int = 2, label: int = 0) -> Derivation:
    """d/dW of -log softmax(W x)_y, by differentiation, against (p - e_y) x^T."""
    weights, inputs = weight_matrix(num_classes, input_dim), input_vector(input_dim)
    probabilities = softmax(weights * inputs)
    loss = -sp.log(probabilities[label])
    derived = sp.Matrix(num_classes, input_dim, lambda c, j: sp.diff(loss, weights[c, j]))
    one_hot = sp.Matrix(num_classes, 1, lambda c, _: 1 if c == label else 0)
    claimed = (probabilities - one_hot) * inputs.T
    return Derivation(derived, claimed, tuple(weights) + tuple(inputs))


def gradient_row_sum(num_classes: int = 3, input_dim: int = 2, label: int = 0) -> Derivation:
    """sum_c dL/dw_c by differentiation, against 0: the row sum of W is conserved by (S)GD."""
    gradient = cross_entropy_gradient(num_classes, input_dim, label)
    derived = sp.ones(1, num_classes) * gradient.derived
    return Derivation(derived, sp.zeros(1, input_dim), gradient.symbols)


def gradient_at_uniform_softmax(labels: Sequence[int] = (0, 0, 1, 2, 2, 2), num_classes: int = 3, input_dim: int = 2) -> Derivation:
    """-grad L(0) of the mean cross-entropy over symbolic samples, by differentiation at W = 0,
    against rows pi_c mean_c - mean / C (proposition 3(a)); pi_c = class frequency."""
    weights = weight_matrix(num_classes, input_dim)
    samples = [input_vector(input_dim, f"x{index}") for index in range(len(labels))]
    loss = sum(-sp.log(softmax(weights * sample)[label]) for sample, label in zip(samples, labels)) / len(labels)
    at_zero = {symbol: 0 for symbol in weights}
    derived = sp.Matrix(num_classes, input_dim, lambda c, j: -sp.diff(loss, weights[c, j]).subs(at_zero))
    mean = sum(samples, sp.zeros(input_dim, 1)) / len(labels)
    rows = []
    for c in range(num_classes):
        members = [sample for sample, label in zip(samples, labels) if label == c]
        frequency = sp.Rational(len(members), len(labels))
        class_mean = sum(members, sp.zeros(input_dim, 1)) / len(members) if members else sp.zeros(input_dim, 1)
        rows.append((frequency * class_mean - mean / num_classes).T)
    symbols = tuple(symbol for sample in samples for symbol in sample)
    return Derivation(derived, sp.Matrix.vstack(*rows), symbols)


def softmax_jacobian_norm_two_classes() -> Derivation:
    """Largest eigenvalue of diag(p) - p p^T for C = 2, against 2 p (1 - p); the margin to 1/2 is
    (2p - 1)^2 / 2 >= 0, the C = 2 case of the bound ||J|| <= 1/2 used in proposition 3(b)."""
    p = sp.Symbol("p", positive=True)
    jacobian = sp.diag(p, 1 - p) - sp.Matrix([p, 1 - p]) * sp.Matrix([[p, 1 - p]])
    # Its eigenvalues are 0 (direction (1, 1): softmax ignores a common shift) and one other.
    (nonzero,) = [value for value in jacobian.eigenvals() if sp.simplify(value) != 0]
    return Derivation(sp.Rational(1, 2) - nonzero, (2 * p - 1) ** 2 / 2, (p,))


# --- Propositions 3 and 5: the reconstruction loss ---------------------------------------------


def optimal_decoder(code_dim: int = 2, input_dim: int = 3, diagonal_covariance: bool = True) -> tuple[Derivation, Derivation]:
    """The decoder D minimising E||x - D W x||^2 for centred x with covariance S, derived by solving
    the stationarity equations, against D* = S W^T (W S W^T)^{-1}; and the loss at D*, against
    tr S - tr(S W^T (W S W^T)^{-1} W S). (An affine decoder's offset only removes the mean.)"""
    weights = weight_matrix(code_dim, input_dim)
    if diagonal_covariance:
        covariance = sp.diag(*[sp.Symbol(f"s_{j}", positive=True) for j in range(input_dim)])
    else:
        covariance = sp.Matrix(input_dim, input_dim, lambda i, j: sp.Symbol(f"s_{min(i, j)}_{max(i, j)}", real=True))
    decoder = sp.Matrix(input_dim, code_dim, lambda i, j: sp.Symbol(f"D_{i}_{j}", real=True))
    # E||x - D W x||^2 = tr S - 2 tr(D W S) + tr(D W S W^T D^T) for E[x x^T] = S.
    objective = (
        covariance.trace() - 2 * (decoder * weights * covariance).trace() + (decoder * weights * covariance * weights.T * decoder.T).trace()
    )
    solution = sp.solve([sp.diff(objective, entry) for entry in decoder], list(decoder), dict=True)[0]
    derived_decoder = decoder.subs(solution)
    claimed_decoder = covariance * weights.T * (weights * covariance * weights.T).inv()
    symbols = tuple(weights) + tuple(covariance.free_symbols)
    decoder_derivation = Derivation(derived_decoder, claimed_decoder, symbols)
    loss_derivation = Derivation(objective.subs(solution), reconstruction_loss_expression(weights, covariance), symbols)
    return decoder_derivation, loss_derivation


def row_space_invariance(code_dim: int = 2, input_dim: int = 3) -> Derivation:
    """R(A W) against R(W) for a symbolic invertible A (code_dim x code_dim), diagonal S."""
    weights = weight_matrix(code_dim, input_dim)
    mixing = sp.Matrix(code_dim, code_dim, lambda i, j: sp.Symbol(f"a_{i}_{j}", real=True))
    covariance = sp.diag(*[sp.Symbol(f"s_{j}", positive=True) for j in range(input_dim)])
    derived = reconstruction_loss_expression(mixing * weights, covariance)
    claimed = reconstruction_loss_expression(weights, covariance)
    return Derivation(derived, claimed, tuple(weights) + tuple(mixing) + tuple(covariance.diagonal()))


def tilted_reconstruction_loss() -> Derivation:
    """Proposition 3(c)/4(a) in its smallest case: d = 3, C = 2, S = diag(lambda + s, s, s)
    (P = e_1, noise variance s), W with rows (cos t, sin t, 0) and (0, 0, 1). The general formula,
    against R = (d - C) s + s lambda sin^2 t / ((lambda + s) cos^2 t + s sin^2 t)."""
    theta = sp.Symbol("theta", real=True)
    lam, noise = sp.symbols("lambda s", positive=True)
    covariance = sp.diag(lam + noise, noise, noise)
    weights = sp.Matrix([[sp.cos(theta), sp.sin(theta), 0], [0, 0, 1]])
    derived = reconstruction_loss_expression(weights, covariance)
    claimed = noise + noise * lam * sp.sin(theta) ** 2 / ((lam + noise) * sp.cos(theta) ** 2 + noise * sp.sin(theta) ** 2)
    return Derivation(derived, claimed, (theta, lam, noise))


def tilt_derivative() -> Derivation:
    """dR/dtheta of the tilted loss, against 2 s lambda (lambda + s) sin t cos t / D^2 (> 0 on
    (0, pi/2)): tilting the learned rows out of P always raises R (proposition 4(a))."""
    tilted = tilted_reconstruction_loss()
    theta, lam, noise = tilted.symbols
    denominator = (lam + noise) * sp.cos(theta) ** 2 + noise * sp.sin(theta) ** 2
    claimed = 2 * noise * lam * (lam + noise) * sp.sin(theta) * sp.cos(theta) / denominator**2
    return Derivation(sp.diff(tilted.claimed, theta), claimed, tilted.symbols)


# --- The data model ---------------------------------------------------------------------------


def _prototypes(num_classes: int, norm: sp.Symbol, cosine: sp.Symbol) -> list[sp.Matrix]:
    basis = sp.eye(num_classes + 1)
    return [norm * (sp.sqrt(1 - cosine) * basis[:, c + 1] + sp.sqrt(cosine) * basis[:, 0]) for c in range(num_classes)]


def population_covariance_eigenvalue(num_classes: int = 3) -> Derivation:
    """The variance of the data model's mixture means along P, by enumerating the mixture (C
    majority components, C (C - 1) outlier components), against the closed form of
    theory.data_model: r^2 (1 - g) / C ((1 - rho) + rho ((1 - tau)^2 + tau^2 - 2 tau (1 - tau) / (C - 1)))."""
    norm, cosine, fraction, distance = sp.symbols("r gamma rho tau", nonnegative=True)
    protos = _prototypes(num_classes, norm, cosine)
    means, weights = [], []
    for own in range(num_classes):
        means.append(protos[own])
        weights.append((1 - fraction) / num_classes)
        for other in range(num_classes):
            if other != own:
                means.append((1 - distance) * protos[own] + distance * protos[other])
                weights.append(fraction / (num_classes * (num_classes - 1)))
    grand_mean = sum((w * m for w, m in zip(weights, means)), sp.zeros(num_classes + 1, 1))
    between = sum(((w * (m - grand_mean) * (m - grand_mean).T) for w, m in zip(weights, means)), sp.zeros(num_classes + 1, num_classes + 1))
    direction = sp.zeros(num_classes + 1, 1)
    direction[1], direction[2] = 1 / sp.sqrt(2), -1 / sp.sqrt(2)  # q_1 - q_2, a unit vector of P
    derived = (direction.T * between * direction)[0, 0]
    claimed = (
        norm**2
        * (1 - cosine)
        / num_classes
        * ((1 - fraction) + fraction * ((1 - distance) ** 2 + distance**2 - 2 * distance * (1 - distance) / (num_classes - 1)))
    )
    return Derivation(derived, claimed, (norm, cosine, fraction, distance))


def outlier_score_gap(num_classes: int = 3) -> Derivation:
    """Score of the other class minus the own class for an outlier (1 - tau) m_0 + tau m_1 under
    the phase-2 classifier with rows m_c - mean(m), against r^2 (1 - gamma)(2 tau - 1):
    positive (misclassified, so it must be memorised) exactly when tau > 1/2 (proposition 4(b))."""
    norm, cosine, distance = sp.symbols("r gamma tau", nonnegative=True)
    protos = _prototypes(num_classes, norm, cosine)
    mean = sum(protos, sp.zeros(num_classes + 1, 1)) / num_classes
    outlier = (1 - distance) * protos[0] + distance * protos[1]
    derived = ((protos[1] - mean).T * outlier)[0, 0] - ((protos[0] - mean).T * outlier)[0, 0]
    return Derivation(derived, norm**2 * (1 - cosine) * (2 * distance - 1), (norm, cosine, distance))
