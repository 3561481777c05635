"""Linear probes and transfer heads: separable features, random labels, the colour-dominance target."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from kphases.probes import ProbeSettings, TorchSGD, build_linear_head, color_dominance_labels, train_linear_head


def _separable(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes around the corners of a simplex in 6 dimensions, noise 0.3: linearly separable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    centres = np.eye(3, 6) * 3.0
    return (centres[labels] + 0.3 * rng.standard_normal((count, 6))).astype(np.float32), labels


def test_probe_reaches_full_accuracy_on_linearly_separable_features():
    train_features, train_labels = _separable(600, seed=0)
    test_features, test_labels = _separable(300, seed=1)
    result = train_linear_head(train_features, train_labels, test_features, test_labels, num_classes=3)
    assert result.test_accuracy >= 0.99 and result.train_accuracy >= 0.99
    assert result.test_loss < 0.1 and result.train_loss < 0.1
    assert (result.epochs, result.update_steps) == (20, 20 * 5)  # ceil(600 / 128) = 5 batches per epoch


def test_probe_is_at_chance_on_the_test_split_for_random_labels():
    rng = np.random.default_rng(2)
    train_features = rng.standard_normal((512, 64)).astype(np.float32)
    test_features = rng.standard_normal((2000, 64)).astype(np.float32)
    train_labels, test_labels = rng.integers(0, 4, 512), rng.integers(0, 4, 2000)
    result = train_linear_head(train_features, train_labels, test_features, test_labels, num_classes=4)
    assert abs(result.test_accuracy - 0.25) < 0.04  # chance; the standard error is about 0.01
    assert result.train_accuracy > 0.4  # it does fit (memorise) the train split


def test_uninformative_features_give_the_cross_entropy_of_the_class_frequencies():
    """Zero features: only the bias learns, and the optimum predicts the class frequencies, loss ln 3."""
    labels = np.tile([0, 1, 2], 1000)
    features = np.zeros((3000, 4), np.float32)
    result = train_linear_head(features, labels, features[:300], labels[:300], num_classes=3)
    assert result.train_loss == pytest.approx(math.log(3), abs=1e-5)
    assert result.test_loss == pytest.approx(math.log(3), abs=1e-5)


def test_learning_rate_schedule_is_the_authors():
    settings = ProbeSettings()
    assert [settings.learning_rate_in_epoch(epoch) for epoch in (1, 10, 11, 20)] == pytest.approx([0.01, 0.01, 0.001, 0.001])


def test_torch_sgd_keeps_pytorch_momentum_across_a_learning_rate_drop():
    """buffer <- 0.9 buffer + g; p <- p - lr buffer, with lr dropping from 0.01 to 0.001 after two updates."""
    weight = keras.Variable(np.array([1.0, -1.0], np.float32))
    optimizer = TorchSGD(learning_rate=0.01, momentum=0.9)
    optimizer.build([weight])
    gradients = [np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.array([0.0, 0.0])]
    learning_rates = [0.01, 0.01, 0.001]
    expected, buffer = np.array([1.0, -1.0]), np.zeros(2)
    for gradient, learning_rate in zip(gradients, learning_rates):
        optimizer.learning_rate = learning_rate
        optimizer.apply_gradients([(tf.constant(gradient, tf.float32), weight)])
        buffer = 0.9 * buffer + gradient
        expected = expected - learning_rate * buffer
    # Keras' SGD would give 1 - 0.01 - 0.014 - 0.9 * 0.014 = 0.9634 for the first weight: not this.
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    assert expected[0] == pytest.approx(1 - 0.01 - 0.014 - 0.001 * 1.26)


def test_head_initialisation_is_pytorch_default_and_seeded():
    head = build_linear_head((5, 2), num_classes=3, seed=4)
    kernel, bias = head.get_weights()
    assert kernel.shape == (10, 3) and np.abs(kernel).max() <= 1 / np.sqrt(10) and np.abs(bias).max() <= 1 / np.sqrt(10)
    np.testing.assert_array_equal(build_linear_head((5, 2), 3, seed=4).get_weights()[0], kernel)


def test_color_dominance_labels_on_hand_built_images():
    images = np.zeros((6, 2, 2, 3), np.float32)
    images[0, ..., 0] = 1.0  # red
    images[1, 0, 0, 1] = 0.1  # green, by a single pixel
    images[2, ..., 2] = -1.0
    images[2, ..., :2] = -2.0  # all channels below average: blue is the least negative
    images[3, ..., 0] = images[3, ..., 1] = 0.5  # red-green tie: the lower index, red
    images[4, ..., 1] = images[4, ..., 2] = 0.5  # green-blue tie: green
    images[5, :, :, 0] = [[3.0, -3.0], [0.0, 0.0]]  # red sums to 0, green and blue too: all tie, red
    np.testing.assert_array_equal(color_dominance_labels(images), [0, 1, 2, 0, 1, 0])


@pytest.mark.parametrize("shape", [(2, 4, 4, 1), (2, 4, 4, 4), (4, 4, 3)])
def test_color_dominance_needs_rgb_images(shape):
    with pytest.raises(ValueError, match="RGB.*" + re.escape(str(shape))):
        color_dominance_labels(np.zeros(shape, np.float32))


def test_invalid_labels_and_settings_name_the_bad_value():
    features = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"train_labels must lie in \[0, 3\).*from 0 to 3"):
        train_linear_head(features, np.array([0, 1, 2, 3]), features, np.zeros(4, int), num_classes=3)
    with pytest.raises(ValueError, match=r"test_labels must have shape \(4,\)"):
        train_linear_head(features, np.zeros(4, int), features, np.zeros(3, int), num_classes=3)
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\), got 1.5"):
        ProbeSettings(momentum=1.5)


def test_min_update_steps_raises_the_epochs_and_moves_the_learning_rate_drop_with_them():
    settings = ProbeSettings(min_update_steps=7820)
    # 10,000 images: 79 batches per epoch, 99 epochs = 7,821 updates; the drop stays at half (after epoch 50).
    assert (settings.epochs_for(10_000), settings.drop_epoch_for(10_000)) == (99, 50)
    assert settings.learning_rate_in_epoch(50, 10_000) == 0.01 and settings.learning_rate_in_epoch(51, 10_000) == pytest.approx(0.001)
    assert ProbeSettings().epochs_for(10_000) == 20 and ProbeSettings().drop_epoch_for(10_000) == 10
    train_features, train_labels = _separable(600, seed=0)
    result = train_linear_head(train_features, train_labels, train_features[:50], train_labels[:50], 3, ProbeSettings(min_update_steps=300))
    assert (result.epochs, result.update_steps) == (60, 300)  # 5 batches per epoch
    assert "min_update_steps" not in ProbeSettings().protocol_dict("probe")  # unset: old cells keep their protocol
    assert ProbeSettings(min_update_steps=7820).protocol_dict("probe")["min_update_steps"] == 7820
    with pytest.raises(ValueError, match="min_update_steps must be None or an integer >= 1, got 0"):
        ProbeSettings(min_update_steps=0)


def test_a_head_of_a_shape_fitted_before_gives_bitwise_the_results_of_a_fresh_trace():
    from kphases import probes

    first, first_labels = _separable(300, seed=5)
    other, other_labels = _separable(300, seed=6)
    test, test_labels = _separable(100, seed=7)
    settings = ProbeSettings(epochs=3, lr_drop_epoch=1)

    def fit(features, labels):
        result = train_linear_head(features, labels, test, test_labels, 3, settings)
        (trainer,) = probes._head_trainers.values()
        return result, [weight.copy() for weight in trainer.head.get_weights()]

    probes.clear_head_trainers()
    fresh, fresh_weights = fit(first, first_labels)
    fit(other, other_labels)  # the same traced head, trained on other data in between
    reused, reused_weights = fit(first, first_labels)
    assert len(probes._head_trainers) == 1  # traced once
    assert reused == fresh
    for ours, theirs in zip(reused_weights, fresh_weights):
        np.testing.assert_array_equal(ours, theirs)
