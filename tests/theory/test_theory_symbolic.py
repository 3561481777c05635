"""Symbolic identities of theory.symbolic (sympy.simplify(derived - claimed) == 0), and each
symbolic result evaluated numerically against the NumPy implementation it stands behind."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from theory import symbolic
from theory.data_model import DataModel, population_covariance, prototype_eigenvalue, prototype_span_basis, prototypes
from theory.predictions import gradient_at_zero
from theory.reconstruction import reconstruction_loss
from theory.simulate import cross_entropy_gradient

seeds = st.integers(0, 2**31 - 1)


def is_zero(expression) -> bool:
    if isinstance(expression, sp.MatrixBase):
        return all(sp.simplify(entry) == 0 for entry in expression)
    return sp.simplify(expression) == 0


@pytest.mark.parametrize(
    "derivation",
    [
        symbolic.cross_entropy_gradient,
        symbolic.gradient_row_sum,
        symbolic.gradient_at_uniform_softmax,
        symbolic.softmax_jacobian_norm_two_classes,
        symbolic.row_space_invariance,
        symbolic.tilted_reconstruction_loss,
        symbolic.tilt_derivative,
        symbolic.population_covariance_eigenvalue,
        symbolic.outlier_score_gap,
    ],
    ids=lambda function: function.__name__,
)
def test_derived_expression_equals_the_claimed_closed_form(derivation):
    assert is_zero(derivation().difference())


@pytest.mark.parametrize(("code_dim", "input_dim", "diagonal"), [(2, 3, True), (1, 2, False)])
def test_stationarity_equations_give_the_claimed_decoder_and_loss(code_dim, input_dim, diagonal):
    decoder, loss = symbolic.optimal_decoder(code_dim, input_dim, diagonal)
    assert is_zero(decoder.difference())
    assert is_zero(loss.difference())


def test_a_wrong_claim_is_not_simplified_away():
    # The check itself can fail: dropping the softmax term from the gradient leaves a non-zero difference.
    gradient = symbolic.cross_entropy_gradient(num_classes=2, input_dim=1)
    wrong = symbolic.Derivation(gradient.derived, -sp.Matrix([[1], [0]]) * sp.Matrix([gradient.symbols[-1]]), gradient.symbols)
    assert not is_zero(wrong.difference())


GRADIENT = symbolic.cross_entropy_gradient(num_classes=3, input_dim=2, label=1)
GRADIENT_FUNCTION = sp.lambdify(GRADIENT.symbols, GRADIENT.derived, "numpy")


@given(seed=seeds, scale=st.floats(0.01, 5.0))
def test_differentiated_gradient_equals_the_simulator_gradient(seed, scale):
    rng = np.random.default_rng(seed)
    weights, sample = scale * rng.standard_normal((3, 2)), rng.standard_normal(2)
    expected = np.array(GRADIENT_FUNCTION(*weights.ravel(), *sample), dtype=float)
    np.testing.assert_allclose(cross_entropy_gradient(weights, sample[None, :], np.array([1])), expected, atol=1e-12)


UNIFORM = symbolic.gradient_at_uniform_softmax(labels=(0, 0, 1, 2, 2, 2), num_classes=3, input_dim=2)
UNIFORM_FUNCTION = sp.lambdify(UNIFORM.symbols, UNIFORM.claimed, "numpy")


@given(seed=seeds)
def test_symbolic_gradient_at_zero_equals_the_numeric_one(seed):
    inputs = np.random.default_rng(seed).standard_normal((6, 2))
    expected = np.array(UNIFORM_FUNCTION(*inputs.ravel()), dtype=float)
    np.testing.assert_allclose(-gradient_at_zero(inputs, np.array([0, 0, 1, 2, 2, 2]), 3), expected, atol=1e-12)


TILT = symbolic.tilted_reconstruction_loss()
TILT_FUNCTION = sp.lambdify(TILT.symbols, TILT.claimed, "numpy")


@given(theta=st.floats(0.0, np.pi / 2), lam=st.floats(0.01, 100.0), noise=st.floats(0.01, 10.0))
def test_tilted_loss_formula_equals_the_numeric_loss(theta, lam, noise):
    covariance = np.diag([lam + noise, noise, noise])
    weights = np.array([[np.cos(theta), np.sin(theta), 0.0], [0.0, 0.0, 1.0]])
    assert reconstruction_loss(weights, covariance) == pytest.approx(float(TILT_FUNCTION(theta, lam, noise)), rel=1e-9)


EIGENVALUE = symbolic.population_covariance_eigenvalue(num_classes=3)
EIGENVALUE_FUNCTION = sp.lambdify(EIGENVALUE.symbols, EIGENVALUE.derived, "numpy")


@given(
    norm=st.floats(0.1, 10.0),
    cosine=st.floats(0.0, 0.95),
    fraction=st.floats(0.0, 0.9),
    distance=st.floats(0.0, 1.0),
    noise=st.floats(0.1, 3.0),
    dim=st.integers(4, 12),
)
def test_enumerated_symbolic_eigenvalue_equals_the_numeric_covariance(norm, cosine, fraction, distance, noise, dim):
    model = DataModel(
        num_classes=3,
        input_dim=dim,
        prototype_norm=norm,
        prototype_cosine=cosine,
        noise_scale=noise,
        outlier_fraction=fraction,
        outlier_distance=distance,
    )
    expected = float(EIGENVALUE_FUNCTION(norm, cosine, fraction, distance))
    assert prototype_eigenvalue(model) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    span = prototype_span_basis(model)
    along_span = span.T @ population_covariance(model) @ span
    np.testing.assert_allclose(along_span, (expected + noise**2) * np.eye(2), atol=1e-9 * (1 + norm**2))


GAP = symbolic.outlier_score_gap(num_classes=3)
GAP_FUNCTION = sp.lambdify(GAP.symbols, GAP.claimed, "numpy")


@given(norm=st.floats(0.1, 10.0), cosine=st.floats(0.0, 0.95), distance=st.floats(0.0, 1.0), dim=st.integers(4, 12))
def test_outlier_score_gap_matches_the_numeric_prototypes(norm, cosine, distance, dim):
    model = DataModel(num_classes=3, input_dim=dim, prototype_norm=norm, prototype_cosine=cosine)
    protos = prototypes(model)
    centred = protos - protos.mean(axis=0)
    outlier = (1 - distance) * protos[0] + distance * protos[1]
    scores = centred @ outlier
    expected = float(GAP_FUNCTION(norm, cosine, distance))
    assert scores[1] - scores[0] == pytest.approx(expected, abs=1e-9 * (1 + norm**2))
    if distance > 0.5 + 1e-6:
        assert np.argmax(scores) == 1  # the phase-2 classifier gets it wrong
    elif distance < 0.5 - 1e-6:
        assert np.argmax(scores) == 0
