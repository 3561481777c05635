"""Reconstruction decoders: known answers for exact, trained-linear and ClaDec decoders."""

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from kphases.decoders import (
    AUTHORS_CIFAR10_UPDATE_STEPS,
    DecoderSettings,
    TorchAdam,
    build_cladec_decoder,
    build_linear_decoder,
    fit_decoder,
    fit_linear_exact_decoder,
)

IMAGE_SHAPE = (4, 4, 2)  # 32 pixels: small enough for hundreds of updates per second
PIXELS = 32


def _images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((count, *IMAGE_SHAPE)) * 0.8 + 0.3).astype(np.float32)


def _invertible_map(seed: int = 0) -> np.ndarray:
    """A well-conditioned invertible 32x32 matrix (orthogonal x singular values in [0.5, 2])."""
    rng = np.random.default_rng(seed)
    orthogonal, _ = np.linalg.qr(rng.standard_normal((PIXELS, PIXELS)))
    return (orthogonal * np.linspace(0.5, 2.0, PIXELS)).astype(np.float32)


def _mean_predictor_mse(train_images: np.ndarray, images: np.ndarray) -> float:
    """Per-element MSE of predicting the mean train image: on the train split, the mean per-pixel variance."""
    return float(np.mean((images.astype(np.float64) - train_images.astype(np.float64).mean(axis=0)) ** 2))


def test_exact_decoder_inverts_an_invertible_linear_map():
    train, test = _images(200, seed=1), _images(50, seed=2)
    mapping = _invertible_map()
    result = fit_decoder("linear_exact", train.reshape(200, -1) @ mapping, train, test.reshape(50, -1) @ mapping, test)
    assert result.mse_per_element_test < 1e-10 and result.mse_per_element_train < 1e-10
    assert (result.update_steps, result.epochs, result.decoder) == (0, 0, "linear_exact")


def test_trained_linear_decoder_inverts_an_invertible_linear_map_given_enough_updates():
    train, test = _images(256, seed=1), _images(64, seed=2)
    mapping = _invertible_map()
    settings = DecoderSettings(learning_rate=1e-2, weight_decay=0.0, min_update_steps=800)
    result = fit_decoder("linear", train.reshape(256, -1) @ mapping, train, test.reshape(64, -1) @ mapping, test, settings)
    baseline = _mean_predictor_mse(train, test)  # ~0.64
    assert result.mse_per_element_test < 1e-8 * baseline
    assert result.update_steps == 800  # 2 batches x 400 epochs


def test_constant_features_give_the_mean_image_whose_loss_is_the_per_pixel_variance():
    train, test = _images(300, seed=3), _images(10, seed=4)
    constant_train, constant_test = np.ones((300, 5), np.float32), np.ones((10, 5), np.float32)
    per_pixel_variance = float(train.astype(np.float64).var(axis=0).mean())
    # Hand-computed reported sum over test batches of 4, 4 and 2 images of the batch-mean MSE.
    batch_mses = [_mean_predictor_mse(train, batch) for batch in (test[:4], test[4:8], test[8:])]
    exact = fit_linear_exact_decoder(constant_train, train, constant_test, test, DecoderSettings(batch_size=4))
    assert exact.mse_per_element_train == pytest.approx(per_pixel_variance, rel=1e-12)
    assert exact.mse_per_element_test == pytest.approx(_mean_predictor_mse(train, test), rel=1e-12)
    assert exact.authors_scale_test == pytest.approx(sum(batch_mses), rel=1e-12)
    # The partial batch counts as a whole batch: not simply 3 x the per-element mean.
    assert abs(exact.authors_scale_test - 3 * exact.mse_per_element_test) > 1e-3

    trained = fit_decoder(
        "linear",
        constant_train,
        train,
        constant_test,
        test,
        DecoderSettings(learning_rate=1e-2, min_update_steps=600),
    )
    assert trained.mse_per_element_train == pytest.approx(per_pixel_variance, rel=0.005)


def test_exact_decoder_is_never_worse_on_the_train_split_than_the_trained_one():
    rng = np.random.default_rng(5)
    train, test = _images(300, seed=5), _images(40, seed=6)
    mixing = rng.standard_normal((PIXELS, 20)).astype(np.float32)  # 20 noisy features of 32 pixels
    train_features = train.reshape(300, -1) @ mixing + rng.standard_normal((300, 20)).astype(np.float32)
    test_features = test.reshape(40, -1) @ mixing
    settings = DecoderSettings(learning_rate=3e-3, min_update_steps=400)
    exact = fit_decoder("linear_exact", train_features, train, test_features, test, settings)
    trained = fit_decoder("linear", train_features, train, test_features, test, settings)
    assert exact.mse_per_element_train <= trained.mse_per_element_train + 1e-7
    assert exact.mse_per_element_train < _mean_predictor_mse(train, train)  # the features do carry information


def test_exact_decoder_copes_with_rank_deficient_features():
    train, test = _images(50, seed=7), _images(20, seed=8)
    mapping = _invertible_map()
    # Duplicated columns and a dead unit: the covariance is singular, only the ridge makes it solvable.
    features = np.concatenate([train.reshape(50, -1) @ mapping] * 2 + [np.zeros((50, 1), np.float32)], axis=1)
    test_features = np.concatenate([test.reshape(20, -1) @ mapping] * 2 + [np.zeros((20, 1), np.float32)], axis=1)
    result = fit_linear_exact_decoder(features, train, test_features, test)
    assert result.mse_per_element_test < 1e-8


def test_exact_decoder_falls_back_to_eigendecomposition_with_a_warning(monkeypatch):
    train, test = _images(60, seed=7), _images(20, seed=8)
    mapping = _invertible_map()
    features, test_features = train.reshape(60, -1) @ mapping, test.reshape(20, -1) @ mapping
    by_cholesky = fit_linear_exact_decoder(features, train, test_features, test)

    def refuse(*args, **kwargs):
        raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(scipy.linalg, "cho_factor", refuse)
    with pytest.warns(RuntimeWarning, match="32-dimensional feature covariance.*eigendecomposition"):
        by_eigendecomposition = fit_linear_exact_decoder(features, train, test_features, test)
    assert by_eigendecomposition.mse_per_element_test < 1e-10
    assert by_eigendecomposition.mse_per_element_train == pytest.approx(by_cholesky.mse_per_element_train, abs=1e-12)


def test_min_update_steps_raises_the_epochs_and_is_recorded():
    settings = DecoderSettings(epochs=2, batch_size=128, min_update_steps=10)
    assert settings.steps_per_epoch(300) == 3  # 128 + 128 + 44
    assert settings.epochs_for(300) == 4  # ceil(10 / 3)
    assert DecoderSettings(epochs=20).epochs_for(50_000) == 20
    authors_budget = DecoderSettings(min_update_steps=AUTHORS_CIFAR10_UPDATE_STEPS)  # 7,820 updates
    assert authors_budget.epochs_for(50_000) == 20  # 391 batches x 20 epochs: the authors' own count
    assert authors_budget.epochs_for(4_000) == 245  # 32 updates per epoch
    features, images = np.zeros((300, 3), np.float32), _images(300, seed=0)
    result = fit_decoder("linear", features, images, features[:5], images[:5], settings)
    assert (result.epochs, result.update_steps) == (4, 12)
    plain = fit_decoder("linear", features, images, features[:5], images[:5], DecoderSettings(epochs=2))
    assert (plain.epochs, plain.update_steps) == (2, 6)


def test_too_wide_features_raise_before_allocating():
    features = np.zeros((3, 11), np.float32)
    images = _images(3, seed=0)
    with pytest.raises(ValueError, match=r"11 x 11 float64.*exact_max_feature_dim=10"):
        fit_decoder("linear_exact", features, images, features, images, DecoderSettings(exact_max_feature_dim=10))


def test_torch_adam_adds_the_l2_term_to_the_gradient_like_pytorch():
    """Three updates against torch.optim.Adam's recurrence, written out by hand.

    The first gradient is zero, so only the coupled L2 term drives the first update: it moves the
    weight by about the full learning rate, where decoupled decay (AdamW, Keras' weight_decay)
    would move it by learning_rate x weight_decay x weight, a million times less.
    """
    learning_rate, l2, beta_1, beta_2, epsilon = 3e-4, 1e-5, 0.9, 0.999, 1e-8
    weight = keras.Variable(np.array([0.5, -2.0, 1e-3], np.float32))
    optimizer = TorchAdam(learning_rate=learning_rate, l2_coefficient=l2)
    optimizer.build([weight])
    gradients = [np.zeros(3), np.array([0.1, -0.3, 2e-6]), np.array([-0.2, 0.05, 0.0])]
    expected = weight.numpy().astype(np.float64)
    first_moment, second_moment = np.zeros(3), np.zeros(3)
    for step, gradient in enumerate(gradients, start=1):
        optimizer.apply_gradients([(tf.constant(gradient, tf.float32), weight)])
        coupled = gradient + l2 * expected
        first_moment = beta_1 * first_moment + (1 - beta_1) * coupled
        second_moment = beta_2 * second_moment + (1 - beta_2) * coupled**2
        denominator = np.sqrt(second_moment) / np.sqrt(1 - beta_2**step) + epsilon
        expected = expected - learning_rate / (1 - beta_1**step) * first_moment / denominator
        if step == 1:
            assert abs(weight.numpy()[0] - 0.5) > 0.9 * learning_rate
        np.testing.assert_allclose(weight.numpy(), expected, rtol=2e-5, atol=1e-9)  # float32 rounding


def test_cladec_architecture_follows_the_authors_code():
    flat = build_cladec_decoder((512,), (32, 32, 3))
    assert [tuple(layer.output.shape[1:]) for layer in flat.layers[-6:]] == [
        (1, 1, 512),
        (2, 2, 512),
        (4, 4, 256),
        (8, 8, 128),
        (16, 16, 64),
        (32, 32, 3),
    ]
    # Dense 512x512 and ConvTranspose 4x4 512->512, 512->256, 256->128, 128->64, 64->3, all with biases.
    assert flat.count_params() == 262_656 + 4_194_816 + 2_097_408 + 524_416 + 131_136 + 3_075 == 7_213_507
    spatial = build_cladec_decoder((8, 8, 16), (32, 32, 3))
    assert [layer.name for layer in spatial.layers[1:]] == ["stem", "upsample1", "image"]
    assert [tuple(layer.output.shape[1:]) for layer in spatial.layers[1:]] == [(8, 8, 16), (16, 16, 64), (32, 32, 3)]
    full_size = build_cladec_decoder((32, 32, 8), (32, 32, 1))  # features at image size: one 3x3 conv
    assert [layer.name for layer in full_size.layers[1:]] == ["image"] and full_size.count_params() == 9 * 8 + 1
    small_flat = build_cladec_decoder((16,), (8, 8, 1))  # Dense to max(16, 64) = 64 channels
    assert tuple(small_flat.get_layer("stem").output.shape[1:]) == (64,)


@pytest.mark.parametrize(
    "feature_shape, image_shape, message",
    [
        ((12, 12, 4), (32, 32, 3), "power of two"),
        ((8, 4, 4), (32, 32, 3), "square feature maps"),
        ((16,), (32, 16, 3), "square images"),
        ((4, 4), (32, 32, 3), "flat"),
    ],
)
def test_cladec_rejects_shapes_it_cannot_upsample_exactly(feature_shape, image_shape, message):
    with pytest.raises(ValueError, match=message):
        build_cladec_decoder(feature_shape, image_shape)


def test_keras_same_transposed_convolution_is_pytorch_padding_one():
    """ConvTranspose2d(kernel 4, stride 2, padding 1): out[2i - 1 + a, 2j - 1 + b] += x[i, j] K[a, b]."""
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((1, 3, 3, 1)).astype(np.float32)
    kernel = rng.standard_normal((4, 4)).astype(np.float32)
    layer = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False)
    layer.build((1, 3, 3, 1))
    layer.kernel.assign(kernel.reshape(4, 4, 1, 1))
    padded = np.zeros((8, 8))  # full output 2 * 3 + 2, then drop the first and last row and column
    for i in range(3):
        for j in range(3):
            padded[2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += inputs[0, i, j, 0] * kernel
    np.testing.assert_allclose(layer(inputs).numpy()[0, :, :, 0], padded[1:7, 1:7], rtol=1e-5, atol=1e-6)


def test_cladec_learns_a_reconstruction_better_than_the_mean_image():
    rng = np.random.default_rng(9)
    images = np.repeat(np.repeat(rng.standard_normal((96, 2, 2, 1)), 4, axis=1), 4, axis=2).astype(np.float32)
    features = images[:, ::4, ::4, 0].reshape(96, 4)  # the 4 block values determine the 8x8 image
    settings = DecoderSettings(learning_rate=1e-3, batch_size=32, min_update_steps=150)
    result = fit_decoder("cladec", features[:64], images[:64], features[64:], images[64:], settings)
    assert result.update_steps == 150 and result.epochs == 75
    assert result.mse_per_element_train < 0.05 * _mean_predictor_mse(images[:64], images[:64])
    assert result.mse_per_element_test < 0.1 * _mean_predictor_mse(images[:64], images[64:])


def test_linear_decoder_initialisation_is_pytorch_default_and_seeded():
    decoder = build_linear_decoder((50,), IMAGE_SHAPE, seed=1)
    kernel, bias = (weight.numpy() for weight in decoder.get_layer("dense").weights)
    bound = 1 / np.sqrt(50)
    assert kernel.shape == (50, PIXELS) and np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound
    np.testing.assert_array_equal(build_linear_decoder((50,), IMAGE_SHAPE, seed=1).get_weights()[0], kernel)
    assert not np.array_equal(build_linear_decoder((50,), IMAGE_SHAPE, seed=2).get_weights()[0], kernel)


def test_non_finite_loss_raises_with_the_update_number():
    features = np.full((4, 3), 1e20, np.float32)  # finite, but the squared error overflows float32
    images = _images(4, seed=0)
    with pytest.raises(FloatingPointError, match="at update 1 "):
        fit_decoder("linear", features, images, features, images, DecoderSettings(epochs=1))


def test_invalid_arguments_name_the_bad_value():
    features, images = np.zeros((4, 3), np.float32), _images(4, seed=0)
    with pytest.raises(ValueError, match=r"'pca'.*\['linear', 'linear_exact', 'linear_ridge', 'cladec'\]"):
        fit_decoder("pca", features, images, features, images)
    with pytest.raises(ValueError, match="train_features has 3 rows but train_images has 4"):
        fit_decoder("linear", features[:3], images, features, images)
    with pytest.raises(ValueError, match="test_features contain NaN"):
        fit_decoder("linear_exact", features, images, np.full((4, 3), np.nan, np.float32), images)
    with pytest.raises(ValueError, match="min_update_steps must be None or an integer >= 1, got 0"):
        DecoderSettings(min_update_steps=0)


# --- linear_ridge: the penalty chosen by GCV on the train split ------------------------------------


def _wide_noisy_problem(seed: int = 11):
    """Features much wider than informative: 32 pixels mixed into 150 noisy features, 200 train images."""
    rng = np.random.default_rng(seed)
    train, test = _images(200, seed=seed), _images(400, seed=seed + 1)
    mixing = rng.standard_normal((PIXELS, 150)).astype(np.float32)
    noisy = lambda images: images.reshape(len(images), -1) @ mixing + 4.0 * rng.standard_normal((len(images), 150)).astype(np.float32)
    return noisy(train), train, noisy(test), test


def _gcv_by_brute_force(features: np.ndarray, images: np.ndarray, relative: float) -> tuple[float, float]:
    """(GCV score, train per-element MSE) of the ridge decoder at one relative penalty, from the explicit hat matrix."""
    features = features.astype(np.float64).reshape(len(features), -1)
    targets = images.astype(np.float64).reshape(len(images), -1)
    centred = features - features.mean(axis=0)
    covariance = centred.T @ centred
    penalty = relative * np.trace(covariance) / features.shape[1]
    hat = centred @ np.linalg.solve(covariance + penalty * np.eye(len(covariance)), centred.T) + 1.0 / len(features)
    residual = targets - hat @ targets
    count = len(features)
    mse = float(np.mean(residual**2))
    return mse / (1 - np.trace(hat) / count) ** 2, mse


def test_ridge_decoder_picks_the_gcv_minimiser_over_its_grid():
    train_features, train, test_features, test = _wide_noisy_problem()
    settings = DecoderSettings(ridge_grid_points=13, ridge_grid_low=1e-4, ridge_grid_high=1e2)
    result = fit_decoder("linear_ridge", train_features, train, test_features, test, settings)
    scores = [_gcv_by_brute_force(train_features, train, relative)[0] for relative in settings.ridge_grid()]
    assert result.ridge_relative_penalty == pytest.approx(settings.ridge_grid()[int(np.argmin(scores))])
    assert result.mse_per_element_train == pytest.approx(
        _gcv_by_brute_force(train_features, train, result.ridge_relative_penalty)[1], rel=1e-9
    )
    assert 0 < result.ridge_effective_parameters < 150 and result.ridge_penalty > 0


def test_ridge_decoder_generalises_where_the_unregularised_one_overfits():
    train_features, train, test_features, test = _wide_noisy_problem()
    ridge = fit_decoder("linear_ridge", train_features, train, test_features, test)
    exact = fit_decoder("linear_exact", train_features, train, test_features, test)
    assert exact.mse_per_element_train < ridge.mse_per_element_train  # the unregularised one fits the train split closer
    assert ridge.mse_per_element_test < 0.8 * exact.mse_per_element_test  # and generalises worse
    assert ridge.decoder == "linear_ridge" and exact.ridge_penalty is None


def test_ridge_decoder_barely_regularises_a_noiseless_invertible_map():
    train, test = _images(200, seed=1), _images(50, seed=2)
    mapping = _invertible_map()
    result = fit_decoder("linear_ridge", train.reshape(200, -1) @ mapping, train, test.reshape(50, -1) @ mapping, test)
    assert result.ridge_relative_penalty == DecoderSettings().ridge_grid_low  # the smallest candidate
    assert result.mse_per_element_test < 1e-6 * _mean_predictor_mse(train, test)


@pytest.mark.parametrize("kind", ["linear_exact", "linear_ridge", "linear"])
def test_per_image_errors_average_to_the_reported_test_mse(kind):
    train_features, train, test_features, test = _wide_noisy_problem(seed=3)
    result = fit_decoder(kind, train_features, train, test_features, test, DecoderSettings(min_update_steps=20))
    assert result.test_errors_per_image.shape == (len(test),) and result.test_errors_per_image.dtype == np.float32
    assert float(result.test_errors_per_image.astype(np.float64).mean()) == pytest.approx(result.mse_per_element_test, rel=1e-5)
    by_hand = np.mean((test.reshape(len(test), -1).astype(np.float64) - test.reshape(len(test), -1).mean()) ** 2, axis=1)
    assert not np.allclose(result.test_errors_per_image, by_hand)  # per image, not one number repeated


def test_only_the_ridge_decoder_hashes_the_ridge_grid():
    settings = DecoderSettings()
    assert "ridge_grid_points" in settings.protocol_dict("linear_ridge")
    for kind in ("linear", "linear_exact", "cladec"):
        assert not any(name.startswith("ridge_") for name in settings.protocol_dict(kind))
    with pytest.raises(ValueError, match="need 0 < ridge_grid_low < ridge_grid_high, got 1.0 and 0.1"):
        DecoderSettings(ridge_grid_low=1.0, ridge_grid_high=0.1)
