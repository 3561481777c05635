"""The NumPy simulator is the project's Keras "F" net: same W0, same data, same weights after training."""

from __future__ import annotations

import numpy as np
import pytest

from theory.data_model import population_covariance
from theory.reconstruction import reconstruction_loss
from theory.regimes import three_phase_regime
from theory.simulate import simulate

pytest.importorskip("tensorflow")


def test_keras_f_net_follows_the_simulator():
    from theory.keras_check import train_linear_keras_net

    model, config = three_phase_regime(seed=0)
    trajectory = simulate(model, config.replace(last_step=256))
    keras_weights = train_linear_keras_net(
        trajectory.dataset.inputs, trajectory.dataset.labels, trajectory.weights[0], config.learning_rate, trajectory.steps.tolist()
    )
    simulated = trajectory.weights
    relative = np.linalg.norm(keras_weights - simulated, axis=(1, 2)) / np.linalg.norm(simulated, axis=(1, 2))
    assert relative.max() < 1e-4  # float32 Keras against float64 NumPy
    covariance = population_covariance(model)
    losses = [reconstruction_loss(weights, covariance) for weights in keras_weights]
    np.testing.assert_allclose(losses, trajectory.reconstruction_loss, rtol=1e-4)
    # not vacuous: over these steps the weights moved and R fell well below its initial value
    assert np.linalg.norm(simulated[-1] - simulated[0]) > 0.3 * np.linalg.norm(simulated[0])
    assert losses[-1] < 0.9 * losses[0]


def test_keras_check_rejects_mismatched_shapes():
    from theory.keras_check import train_linear_keras_net

    with pytest.raises(ValueError, match="features"):
        train_linear_keras_net(np.zeros((4, 3)), np.zeros(4, dtype=int), np.zeros((2, 5)), 0.1, [0, 1])
