"""Feature extraction at a probe point: BatchNorm modes against hand-computed normalisation."""

import keras
import numpy as np
import pytest

from kphases.config import ModelConfig
from kphases.features import (
    BN_STATS_MODES,
    _compiled_forward,
    batchnorm_layers,
    extract_features,
    probe_model,
    recalibrate_batchnorm,
)
from kphases.models import build_model

EPSILON = 1e-5


def _batchnorm_model() -> keras.Model:
    """image (2x2x2) -> BatchNorm named block1 -> Flatten (penultimate) -> Dense (logits)."""
    inputs = keras.Input((2, 2, 2), name="image")
    normalised = keras.layers.BatchNormalization(momentum=0.9, epsilon=EPSILON, name="block1")(inputs)
    flat = keras.layers.Flatten(name="penultimate")(normalised)
    logits = keras.layers.Dense(3, name="logits")(flat)
    model = keras.Model(inputs, logits, name="tiny_bn")
    bn = model.get_layer("block1")
    bn.gamma.assign([2.0, 0.5])
    bn.beta.assign([1.0, -1.0])
    bn.moving_mean.assign([0.3, -0.2])
    bn.moving_variance.assign([1.5, 0.7])
    return model


def _images(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # channel-dependent offsets and scales, so batch and stored statistics differ visibly
    return (rng.standard_normal((count, 2, 2, 2)) * [1.0, 3.0] + [2.0, -1.0]).astype(np.float32)


def _normalise(images: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    gamma, beta = np.array([2.0, 0.5]), np.array([1.0, -1.0])
    return gamma * (images - mean) / np.sqrt(variance + EPSILON) + beta


def _weights_equal(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))


def test_batch_mode_normalises_each_batch_by_its_own_statistics_and_leaves_the_model_untouched():
    model = _batchnorm_model()
    images = _images(6)
    weights_before = [weight.copy() for weight in model.get_weights()]
    features = extract_features(model, "block1", images, "batch", batch_size=4)
    expected = np.concatenate(
        [
            _normalise(batch, batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2)))  # biased variance
            for batch in (images[:4], images[4:])  # the last, partial batch uses its own statistics too
        ]
    )
    assert features.dtype == np.float32 and features.shape == (6, 2, 2, 2)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    assert _weights_equal(model.get_weights(), weights_before)


def test_stored_mode_uses_the_running_statistics():
    model = _batchnorm_model()
    images = _images(5)
    features = extract_features(model, "block1", images, "stored", batch_size=2)
    expected = _normalise(images, np.array([0.3, -0.2]), np.array([1.5, 0.7]))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_recalibration_averages_batch_statistics_over_the_split_without_touching_the_model():
    model = _batchnorm_model()
    weights_before = [weight.copy() for weight in model.get_weights()]
    calibration = _images(6, seed=1)
    batches = (calibration[:4], calibration[4:])  # every batch counts once, the partial one too
    expected_mean = np.mean([batch.mean(axis=(0, 1, 2)) for batch in batches], axis=0)
    expected_variance = np.mean([batch.var(axis=(0, 1, 2)) for batch in batches], axis=0)

    recalibrated = recalibrate_batchnorm(model, calibration, batch_size=4)
    bn = recalibrated.get_layer("block1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expected_variance, rtol=1e-6)
    assert bn.momentum == 0.9 and bn.trainable  # the temporary momentum 0 is undone
    assert _weights_equal(model.get_weights(), weights_before)
    # Everything except the two running statistics is copied unchanged.
    for original, copy in zip(model.layers, recalibrated.layers):
        for original_variable, copied_variable in zip(original.weights, copy.weights):
            if "moving" not in copied_variable.path:
                np.testing.assert_array_equal(original_variable.numpy(), copied_variable.numpy())

    images = _images(3, seed=2)
    features = extract_features(model, "block1", images, "recalibrated", batch_size=4, calibration_images=calibration)
    np.testing.assert_allclose(features, _normalise(images, expected_mean, expected_variance), rtol=1e-5, atol=1e-5)
    assert _weights_equal(model.get_weights(), weights_before)


def test_without_batchnorm_all_three_modes_give_identical_features():
    inputs = keras.Input((4, 4, 1))
    hidden = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="block1")(inputs)
    flat = keras.layers.Flatten(name="penultimate")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(flat))
    images = np.random.default_rng(0).standard_normal((7, 4, 4, 1)).astype(np.float32)
    results = [
        extract_features(model, "penultimate", images, mode, batch_size=3, calibration_images=images if mode == "recalibrated" else None)
        for mode in BN_STATS_MODES
    ]
    assert results[0].shape == (7, 48)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_batch_mode_matches_keras_training_mode_on_a_small_vgg_and_keeps_its_weights():
    keras.utils.set_random_seed(3)
    model = build_model(ModelConfig("vgg8", width=0.125), (32, 32, 3), 10)
    images = np.random.default_rng(0).standard_normal((10, 32, 32, 3)).astype(np.float32)
    weights_before = [weight.copy() for weight in model.get_weights()]
    features = extract_features(model, "penultimate", images, "batch", batch_size=10)
    assert features.shape == (10, 64)
    assert _weights_equal(model.get_weights(), weights_before)
    reference = probe_model(model, "penultimate")(images, training=True).numpy()  # this call does move the statistics
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-5)
    stored = extract_features(model, "penultimate", images, "stored", batch_size=10)
    assert not np.allclose(stored, features, atol=1e-3)  # the modes really differ on a BatchNorm net


def test_compiled_forward_is_traced_once_and_follows_new_weights():
    model = _batchnorm_model()
    images = _images(5)
    extract_features(model, "block1", images, "stored", batch_size=2)  # batches of 2, 2 and 1
    model.get_layer("block1").moving_mean.assign([1.0, 1.0])
    features = extract_features(model, "block1", images[:3], "stored", batch_size=3)
    assert _compiled_forward(model, "block1", False).experimental_get_tracing_count() == 1
    np.testing.assert_allclose(features, _normalise(images[:3], np.array([1.0, 1.0]), np.array([1.5, 0.7])), rtol=1e-5, atol=1e-5)


def test_unknown_layer_names_the_layer_and_lists_the_probe_points():
    model = _batchnorm_model()
    with pytest.raises(ValueError, match=r"'block7'.*\['block1', 'penultimate', 'logits'\]"):
        probe_model(model, "block7")
    inputs = keras.Input((3,), name="x")
    unnamed = keras.Model(inputs, keras.layers.Dense(2, name="dense_out")(inputs))
    with pytest.raises(ValueError, match=r"valid probe points: \['x', 'dense_out'\]"):
        extract_features(unnamed, "block1", np.zeros((1, 3), np.float32), "stored")


@pytest.mark.parametrize(
    "bn_stats, calibration, message",
    [
        ("running", None, r"bn_stats='running'.*\['batch', 'stored', 'recalibrated'\]"),
        ("recalibrated", None, "needs calibration_images"),
        ("batch", np.zeros((2, 2, 2, 2), np.float32), "only used with bn_stats='recalibrated'"),
    ],
)
def test_invalid_bn_stats_arguments_are_rejected(bn_stats, calibration, message):
    with pytest.raises(ValueError, match=message):
        extract_features(_batchnorm_model(), "block1", _images(2), bn_stats, calibration_images=calibration)


def test_bad_images_and_batch_size_are_rejected():
    model = _batchnorm_model()
    with pytest.raises(ValueError, match=r"shape \(2, 3, 3, 2\).*expects \(n, 2, 2, 2\)"):
        extract_features(model, "block1", np.zeros((2, 3, 3, 2), np.float32), "stored")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        extract_features(model, "block1", _images(2), "stored", batch_size=0)


def test_batch_mode_refuses_frozen_batchnorm():
    model = _batchnorm_model()
    model.get_layer("block1").trainable = False
    with pytest.raises(ValueError, match=r"\['block1'\] are frozen"):
        extract_features(model, "block1", _images(2), "batch")


def test_batchnorm_layers_are_found_inside_nested_models():
    inner_input = keras.Input((2, 2, 2))
    inner = keras.Model(inner_input, keras.layers.BatchNormalization(name="inner_bn")(inner_input), name="inner")
    outer_input = keras.Input((2, 2, 2))
    hidden = keras.layers.BatchNormalization(name="outer_bn")(inner(outer_input))
    outer = keras.Model(outer_input, hidden)
    assert sorted(layer.name for layer in batchnorm_layers(outer)) == ["inner_bn", "outer_bn"]
