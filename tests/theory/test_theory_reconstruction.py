"""Proposition 5 and the closed form of R: the reconstruction loss of the best affine decoder.

Every test compares two independent computations (closed form vs a decoder fitted on samples,
SVD vs pseudo-inverse, the principal-angle formula vs the trace formula) or checks a bound
against an exact known answer.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.data_model import (
    DataModel,
    population_covariance,
    population_mean,
    prototype_eigenvalue,
    prototype_span_basis,
    sample_dataset,
)
from theory.reconstruction import (
    decoder_squared_error,
    eckart_young_minimum,
    fit_affine_decoder,
    optimal_affine_decoder,
    principal_angles,
    reconstruction_loss,
    reconstruction_loss_closed_form,
    reconstruction_loss_from_angles,
)


@st.composite
def data_models(draw, max_dim: int = 16) -> DataModel:
    num_classes = draw(st.integers(2, 4))
    return DataModel(
        num_classes=num_classes,
        input_dim=draw(st.integers(num_classes + 2, max_dim)),
        prototype_norm=draw(st.floats(0.5, 10.0)),
        prototype_cosine=draw(st.floats(0.0, 0.9)),
        noise_scale=draw(st.floats(0.2, 2.0)),
        outlier_fraction=draw(st.floats(0.0, 0.5)),
        outlier_distance=draw(st.floats(0.0, 1.0)),
    )


def random_covariance(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A well-conditioned SPD matrix with a spread-out spectrum."""
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (basis * np.exp(rng.uniform(-2, 2, dim))) @ basis.T


settings_seeds = st.integers(0, 2**31 - 1)


@given(dim=st.integers(2, 12), data=st.data(), seed=settings_seeds)
def test_svd_form_equals_the_pseudo_inverse_formula(dim, data, seed):
    rows = data.draw(st.integers(1, dim))
    rng = np.random.default_rng(seed)
    covariance, weights = random_covariance(dim, rng), rng.standard_normal((rows, dim))
    # The pseudo-inverse squares the condition number of W S^(1/2): allow round-off relative to tr S.
    assert reconstruction_loss(weights, covariance) == pytest.approx(
        reconstruction_loss_closed_form(weights, covariance), rel=1e-8, abs=1e-8 * np.trace(covariance)
    )


@settings(max_examples=10)
@given(model=data_models(), seed=settings_seeds)
def test_closed_form_matches_a_decoder_fitted_on_samples(model, seed):
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((model.num_classes, model.input_dim))
    covariance = population_covariance(model)
    train = sample_dataset(model, 20_000, seed=(seed, 0)).inputs
    test = sample_dataset(model, 20_000, seed=(seed, 1)).inputs
    fitted = fit_affine_decoder(train @ weights.T, train)
    optimal = optimal_affine_decoder(weights, population_mean(model), covariance)
    expected = reconstruction_loss(weights, covariance)
    assert decoder_squared_error(*fitted, test @ weights.T, test) == pytest.approx(expected, rel=0.04)
    assert decoder_squared_error(*optimal, test @ weights.T, test) == pytest.approx(expected, rel=0.04)


def test_fitted_decoder_reaches_zero_loss_on_an_invertible_map():
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((500, 5))
    mixing = rng.standard_normal((5, 5))
    decoder = fit_affine_decoder(inputs @ mixing.T, inputs)
    assert decoder_squared_error(*decoder, inputs @ mixing.T, inputs) < 1e-20
    assert reconstruction_loss(mixing, random_covariance(5, rng)) == pytest.approx(0.0, abs=1e-9)


@given(dim=st.integers(2, 12), data=st.data(), seed=settings_seeds)
def test_invertible_mixing_of_the_rows_leaves_the_loss_unchanged(dim, data, seed):
    rows = data.draw(st.integers(1, dim))
    rng = np.random.default_rng(seed)
    covariance, weights = random_covariance(dim, rng), rng.standard_normal((rows, dim))
    rotation, _ = np.linalg.qr(rng.standard_normal((rows, rows)))
    mixing = rotation * np.exp(rng.uniform(-2, 2, rows))  # condition number up to e^4
    assert reconstruction_loss(mixing @ weights, covariance) == pytest.approx(
        reconstruction_loss(weights, covariance), rel=1e-7, abs=1e-10 * np.trace(covariance)
    )


@given(dim=st.integers(2, 12), data=st.data(), seed=settings_seeds)
def test_loss_lies_between_zero_and_the_total_variance_and_extra_rows_never_raise_it(dim, data, seed):
    rows = data.draw(st.integers(1, dim - 1))
    rng = np.random.default_rng(seed)
    covariance, weights = random_covariance(dim, rng), rng.standard_normal((rows, dim))
    loss = reconstruction_loss(weights, covariance)
    assert -1e-12 * np.trace(covariance) <= loss <= np.trace(covariance) * (1 + 1e-12)
    extended = np.vstack([weights, rng.standard_normal((1, dim))])
    assert reconstruction_loss(extended, covariance) <= loss + 1e-9 * np.trace(covariance)
    # The extra row helps strictly unless it lies in the row space (here it does not, almost surely).
    assert reconstruction_loss(extended, covariance) < loss


def test_known_answers_zero_map_and_coordinate_projection():
    covariance = np.diag([4.0, 3.0, 2.0, 1.0])
    assert reconstruction_loss(np.zeros((2, 4)), covariance) == 10.0
    assert reconstruction_loss(np.eye(4)[:2], covariance) == pytest.approx(3.0)  # keeps 4 and 3
    assert reconstruction_loss(np.eye(4)[2:], covariance) == pytest.approx(7.0)  # keeps 2 and 1


@given(dim=st.integers(2, 12), data=st.data(), seed=settings_seeds)
def test_eckart_young_lower_bound_holds_and_is_reached_by_the_top_eigenvectors(dim, data, seed):
    rank = data.draw(st.integers(1, dim))
    rng = np.random.default_rng(seed)
    covariance = random_covariance(dim, rng)
    minimum = eckart_young_minimum(covariance, rank)
    assert reconstruction_loss(rng.standard_normal((rank, dim)), covariance) >= minimum - 1e-12 * np.trace(covariance)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    top = eigenvectors[:, ::-1][:, :rank].T
    assert reconstruction_loss(top, covariance) == pytest.approx(minimum, rel=1e-9, abs=1e-12 * np.trace(covariance))
    assert minimum == pytest.approx(np.sort(eigenvalues)[: dim - rank].sum(), abs=1e-12 * np.trace(covariance))


@given(model=data_models())
def test_population_covariance_is_isotropic_noise_plus_lambda_on_the_prototype_span(model):
    span = prototype_span_basis(model)
    closed_form = model.noise_scale**2 * np.eye(model.input_dim) + prototype_eigenvalue(model) * span @ span.T
    np.testing.assert_allclose(population_covariance(model), closed_form, atol=1e-10 * (1 + model.prototype_norm**2))
    assert eckart_young_minimum(population_covariance(model), model.num_classes) == pytest.approx(
        (model.input_dim - model.num_classes) * model.noise_scale**2, rel=1e-9
    )


@settings(max_examples=10)
@given(model=data_models(max_dim=10), seed=settings_seeds)
def test_sampler_follows_the_population_covariance(model, seed):
    inputs = sample_dataset(model, 100_000, seed=seed).inputs
    covariance = population_covariance(model)
    error = np.linalg.norm(np.cov(inputs.T) - covariance) / np.linalg.norm(covariance)
    assert error < 0.05
    np.testing.assert_allclose(inputs.mean(axis=0), population_mean(model), atol=0.05 * np.sqrt(np.trace(covariance)))


@given(model=data_models(max_dim=20), data=st.data(), seed=settings_seeds)
def test_principal_angle_formula_equals_the_trace_formula(model, data, seed):
    rank = data.draw(st.integers(1, model.num_classes + 1))
    rng = np.random.default_rng(seed)
    span = prototype_span_basis(model)
    # Rows mixing P and its complement at random strengths, so every angle from 0 to pi/2 occurs.
    weights = rng.standard_normal((rank, model.num_classes - 1)) @ span.T * rng.uniform(0, 3) + rng.standard_normal((rank, model.input_dim))
    angles = principal_angles(weights, span)
    from_angles = reconstruction_loss_from_angles(
        angles, prototype_eigenvalue(model), model.noise_scale**2, model.input_dim, model.num_classes, rank
    )
    assert from_angles == pytest.approx(reconstruction_loss(weights, population_covariance(model)), rel=1e-7)


@given(model=data_models(max_dim=20), seed=settings_seeds)
def test_rows_containing_the_prototype_span_reach_the_rank_c_minimum(model, seed):
    # Phase 2's end point: C - 1 rows spanning P plus any row outside P (the conserved row sum u0).
    rng = np.random.default_rng(seed)
    span = prototype_span_basis(model)
    weights = np.vstack(
        [rng.standard_normal((model.num_classes - 1, model.num_classes - 1)) @ span.T, rng.standard_normal((1, model.input_dim))]
    )
    covariance = population_covariance(model)
    assert reconstruction_loss(weights, covariance) == pytest.approx(eckart_young_minimum(covariance, model.num_classes), rel=1e-8)


@given(model=data_models())
def test_outliers_at_another_prototype_leave_the_input_covariance_unchanged(model):
    at_other_prototype = model.replace(outlier_distance=1.0)
    without_outliers = model.replace(outlier_fraction=0.0)
    np.testing.assert_allclose(
        population_covariance(at_other_prototype), population_covariance(without_outliers), atol=1e-9 * model.prototype_norm**2
    )
    # Elsewhere on the segment they do change it (the known factor of the closed form is < 1).
    if model.outlier_fraction > 0.05 and 0.1 < model.outlier_distance < 0.9:
        assert prototype_eigenvalue(model) < prototype_eigenvalue(without_outliers)
