"""Propositions 1-3 on simulated (S)GD: the gradient's structure, the phase-1 bound, phase-2 alignment.

The bounds of theory.bounds are checked on simulated runs over hypothesis-drawn data models, and
each lemma is also checked to be tight on a construction where it is attained (a bound with a
wrong constant fails one side or the other).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.bounds import (
    alignment_sine_bound,
    gradient_deviation_bound,
    gradient_norm_bound,
    phase1_certified_steps,
    phase1_reconstruction_change_bound,
    projector_perturbation_bound,
)
from theory.data_model import DataModel, population_covariance, sample_dataset
from theory.predictions import gradient_at_zero, linearised_weights
from theory.reconstruction import covariance_square_root, eckart_young_minimum, reconstruction_loss
from theory.simulate import SimulationConfig, cross_entropy_gradient, initial_weights, simulate

seeds = st.integers(0, 2**31 - 1)


@st.composite
def data_models(draw, min_dim: int = 4, max_dim: int = 24) -> DataModel:
    num_classes = draw(st.integers(2, 4))
    return DataModel(
        num_classes=num_classes,
        input_dim=draw(st.integers(max(num_classes + 2, min_dim), max_dim)),
        prototype_norm=draw(st.floats(0.5, 10.0)),
        prototype_cosine=draw(st.floats(0.0, 0.9)),
        noise_scale=draw(st.floats(0.2, 2.0)),
        outlier_fraction=draw(st.floats(0.0, 0.3)),
        outlier_distance=draw(st.floats(0.0, 1.0)),
    )


def stable_learning_rate(model: DataModel, num_train: int, seed: int, fraction: float) -> float:
    """fraction * 2 / lambda_max(M2): below the smoothness limit 4 / lambda_max(M2) of the mean cross-entropy."""
    inputs = sample_dataset(model, num_train, seed=seed).inputs
    return fraction * 2.0 / np.linalg.eigvalsh(inputs.T @ inputs / num_train)[-1]


# --- Proposition 1: every update lies in the span of the data; the row sum is conserved ------------


@settings(max_examples=15)
@given(
    model=data_models(min_dim=30, max_dim=40),
    num_train=st.integers(6, 20),
    fraction=st.floats(0.05, 1.0),
    batch=st.sampled_from([None, 1, 4]),
    seed=seeds,
)
def test_updates_stay_in_the_span_of_the_data_and_conserve_the_row_sum(model, num_train, fraction, batch, seed):
    # N < d, so the data span is a proper subspace and the check can fail.
    config = SimulationConfig(
        learning_rate=stable_learning_rate(model, num_train, seed, fraction),
        last_step=64,
        num_train=num_train,
        num_test=10,
        init_scale=1.0,
        batch_size=batch,
        seed=seed,
    )
    trajectory = simulate(model, config)
    basis, _ = np.linalg.qr(trajectory.dataset.inputs.T)  # d x N, orthonormal basis of the data span
    for weights in trajectory.weights[1:]:
        update = weights - trajectory.weights[0]
        outside = update - (update @ basis) @ basis.T
        assert np.linalg.norm(outside) <= 1e-10 * max(np.linalg.norm(update), 1e-300)
        assert np.linalg.norm(update) > 0
        np.testing.assert_allclose(weights.sum(axis=0), trajectory.weights[0].sum(axis=0), atol=1e-12 * (1 + np.abs(weights).max()))


# --- Proposition 2: phase 1 ---------------------------------------------------------------------


@given(model=data_models(), num_train=st.integers(5, 60), scale=st.floats(0.01, 30.0), batch=st.sampled_from([None, 1, 3]), seed=seeds)
def test_gradient_norm_bound_holds_for_any_weights_and_batch(model, num_train, scale, batch, seed):
    data = sample_dataset(model, num_train, seed=seed)
    rng = np.random.default_rng(seed)
    weights = scale * rng.standard_normal((model.num_classes, model.input_dim)) / np.sqrt(model.input_dim)
    rows = slice(None) if batch is None else rng.choice(num_train, size=min(batch, num_train), replace=False)
    gradient = cross_entropy_gradient(weights, data.inputs[rows], data.labels[rows])
    assert np.linalg.norm(gradient, 2) <= gradient_norm_bound(data.inputs, batch) * (1 + 1e-12)


def test_gradient_norm_bound_is_attained_by_a_confidently_wrong_sample():
    sample = np.array([[3.0, 4.0]])
    weights = 50.0 * np.array([[-0.6, -0.8], [0.6, 0.8]])  # label 0, but class 1 wins by 500 logits
    gradient = cross_entropy_gradient(weights, sample, np.array([0]))
    assert np.linalg.norm(gradient, 2) / gradient_norm_bound(sample) == pytest.approx(1.0, abs=1e-12)


@given(dim=st.integers(2, 10), data=st.data(), size=st.floats(0.0, 0.99), seed=seeds)
def test_projector_perturbation_bound_holds(dim, data, size, seed):
    columns = data.draw(st.integers(1, dim - 1))
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((dim, columns))
    perturbation = rng.standard_normal((dim, columns))
    perturbation *= size * np.linalg.svd(matrix, compute_uv=False)[-1] / np.linalg.norm(perturbation, 2)

    def projector(a):
        basis, _ = np.linalg.qr(a)
        return basis @ basis.T

    actual = np.linalg.norm(projector(matrix + perturbation) - projector(matrix), 2)
    assert actual <= projector_perturbation_bound(matrix, perturbation) + 1e-12


def test_projector_perturbation_bound_is_tight_to_first_order():
    # Rotating the column (s, 0) by a perturbation (0, e): ||Pi_B - Pi_A|| = sin(theta) = e / sqrt(s^2 + e^2).
    matrix, perturbation = np.array([[2.0], [0.0]]), np.array([[0.0], [0.002]])
    actual = 0.002 / math.hypot(2.0, 0.002)
    assert actual / projector_perturbation_bound(matrix, perturbation) == pytest.approx(1.0, abs=1e-6)
    assert projector_perturbation_bound(matrix, np.array([[0.0], [2.0]])) == math.inf


@settings(max_examples=15)
@given(
    model=data_models(),
    num_train=st.integers(10, 60),
    init_scale=st.floats(0.05, 3.0),
    fraction=st.floats(0.001, 0.2),
    batch=st.sampled_from([None, 4]),
    seed=seeds,
)
def test_phase1_bound_holds_on_simulated_runs(model, num_train, init_scale, fraction, batch, seed):
    learning_rate = stable_learning_rate(model, num_train, seed, fraction)
    data = sample_dataset(model, num_train, seed=seed)
    start = initial_weights(model, init_scale, seed)
    covariance = population_covariance(model)
    certified = phase1_certified_steps(start, covariance, data.inputs, learning_rate, batch_size=batch)
    last = min(certified, 200)
    config = SimulationConfig(
        learning_rate=learning_rate,
        last_step=last,
        num_train=num_train,
        num_test=10,
        init_scale=init_scale,
        batch_size=batch,
        seed=seed,
        measure_steps=tuple(range(last + 1)),
    )
    trajectory = simulate(model, config)
    np.testing.assert_array_equal(trajectory.weights[0], start)
    for step, loss in zip(trajectory.steps, trajectory.reconstruction_loss):
        bound = phase1_reconstruction_change_bound(start, covariance, data.inputs, learning_rate, int(step), batch)
        assert abs(loss - trajectory.reconstruction_loss[0]) <= bound * (1 + 1e-9) + 1e-9
    # T_rank is the last step the bound covers: finite there, infinite one step later.
    assert phase1_reconstruction_change_bound(start, covariance, data.inputs, learning_rate, certified, batch) < math.inf
    assert phase1_reconstruction_change_bound(start, covariance, data.inputs, learning_rate, certified + 1, batch) == math.inf


def test_phase1_certified_steps_scale_with_init_over_learning_rate():
    # T_rank = sigma_C(S^(1/2) W0^T) / (eta g ||S||^(1/2)): doubling W0 or halving eta doubles it.
    model = DataModel(input_dim=32, prototype_norm=5.0)
    data = sample_dataset(model, 60, seed=0)
    start = initial_weights(model, 1.0, 0)
    covariance = population_covariance(model)
    smallest = np.linalg.svd(covariance_square_root(covariance) @ start.T, compute_uv=False)[-1]
    speed = gradient_norm_bound(data.inputs) * np.sqrt(np.linalg.eigvalsh(covariance)[-1])
    assert phase1_certified_steps(start, covariance, data.inputs, 1e-4) == math.ceil(smallest / (1e-4 * speed)) - 1
    base = phase1_certified_steps(start, covariance, data.inputs, 1e-4)
    assert abs(phase1_certified_steps(2 * start, covariance, data.inputs, 1e-4) - 2 * base) <= 1
    assert abs(phase1_certified_steps(start, covariance, data.inputs, 5e-5) - 2 * base) <= 1


# --- Proposition 3: phase 2 ----------------------------------------------------------------------


@given(model=data_models(), num_train=st.integers(4, 60), seed=seeds)
def test_gradient_at_uniform_softmax_is_the_centred_class_means(model, num_train, seed):
    data = sample_dataset(model, num_train, seed=seed)
    num_classes = model.num_classes
    grand_mean = data.inputs.mean(axis=0)
    expected = np.array(
        [
            np.mean(data.labels == c) * data.inputs[data.labels == c].mean(axis=0) - grand_mean / num_classes
            if np.any(data.labels == c)
            else -grand_mean / num_classes
            for c in range(num_classes)
        ]
    )
    np.testing.assert_allclose(
        -gradient_at_zero(data.inputs, data.labels, num_classes), expected, atol=1e-12 * (1 + np.abs(expected).max())
    )


@given(model=data_models(), num_train=st.integers(4, 60), scale=st.floats(0.001, 10.0), seed=seeds)
def test_gradient_deviation_bound_holds(model, num_train, scale, seed):
    data = sample_dataset(model, num_train, seed=seed)
    weights = scale * np.random.default_rng(seed).standard_normal((model.num_classes, model.input_dim))
    deviation = cross_entropy_gradient(weights, data.inputs, data.labels) - gradient_at_zero(data.inputs, data.labels, model.num_classes)
    assert np.linalg.norm(deviation) <= gradient_deviation_bound(weights, data.inputs) * (1 + 1e-12)


def test_gradient_deviation_bound_is_tight_for_small_weights():
    # Two classes, one sample x, rows +-eps x/|x|: the softmax moves at its maximal slope 1/2.
    sample = np.array([[3.0, 4.0]])
    weights = 1e-6 * np.array([[0.6, 0.8], [-0.6, -0.8]])
    deviation = cross_entropy_gradient(weights, sample, np.array([0])) - gradient_at_zero(sample, np.array([0]), 2)
    assert np.linalg.norm(deviation) / gradient_deviation_bound(weights, sample) == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=15)
@given(model=data_models(), num_train=st.integers(20, 60), fraction=st.floats(0.05, 1.0), seed=seeds)
def test_early_updates_point_to_the_centred_class_means(model, num_train, fraction, seed):
    # A tiny W0 and 8 steps of at most `budget` total movement keep the softmax near uniform.
    data = sample_dataset(model, num_train, seed=seed)
    mean_square_norm = float(np.mean(np.sum(data.inputs**2, axis=1)))
    towards_means = -gradient_at_zero(data.inputs, data.labels, model.num_classes)
    smallest_row = np.linalg.norm(towards_means, axis=1).min()
    budget = 0.2 * smallest_row / mean_square_norm  # keeps (1/2) max||W|| E||x||^2 <= 0.1 ||G(0)_c||
    learning_rate = fraction * budget / (8 * gradient_norm_bound(data.inputs))
    config = SimulationConfig(
        learning_rate=learning_rate, last_step=8, num_train=num_train, num_test=10, init_scale=0.01 * budget, seed=seed
    )
    trajectory = simulate(model, config)
    largest_norm = max(np.linalg.norm(weights, 2) for weights in trajectory.weights)
    for weights in trajectory.weights[1:]:
        update = weights - trajectory.weights[0]
        for row, target in zip(update, towards_means):
            cosine = row @ target / (np.linalg.norm(row) * np.linalg.norm(target))
            sine_bound = alignment_sine_bound(largest_norm, data.inputs, target)
            assert sine_bound < 0.2  # the bound says something
            assert cosine >= math.sqrt(1 - sine_bound**2) - 1e-12


@given(model=data_models(), num_train=st.integers(10, 60), seed=seeds)
def test_linearised_dynamics_end_at_the_span_of_the_centred_means_and_the_conserved_row_sum(model, num_train, seed):
    data = sample_dataset(model, num_train, seed=seed)
    start = initial_weights(model, 1.0, seed)
    towards = gradient_at_zero(data.inputs, data.labels, model.num_classes)
    covariance = population_covariance(model)
    limit = reconstruction_loss(np.vstack([towards, start.sum(axis=0)]), covariance)
    far = reconstruction_loss(linearised_weights(start, towards, 1.0, 10**7), covariance)
    assert far == pytest.approx(limit, rel=1e-5)
    assert limit >= eckart_young_minimum(covariance, model.num_classes) - 1e-9


@given(model=data_models(max_dim=16), seed=seeds)
def test_phase2_level_tends_to_the_eckart_young_minimum_as_the_sample_grows(model, seed):
    # With many samples the class means approach the prototypes, so R_2 -> (d - C) sigma^2.
    covariance = population_covariance(model)
    minimum = eckart_young_minimum(covariance, model.num_classes)
    start = initial_weights(model, 1.0, seed)
    gaps = []
    for num_train in (30, 30_000):
        data = sample_dataset(model.replace(outlier_fraction=0.0), num_train, seed=seed)
        towards = gradient_at_zero(data.inputs, data.labels, model.num_classes)
        gaps.append(reconstruction_loss(np.vstack([towards, start.sum(axis=0)]), covariance) - minimum)
    assert gaps[1] <= 0.05 * (np.trace(covariance) - minimum)
    assert gaps[1] <= gaps[0] + 1e-9 * np.trace(covariance)
