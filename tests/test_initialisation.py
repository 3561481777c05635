"""kphases.models' `initialisation="open_lth"` (the Frankle et al. setting): the distributions of open_lth's
CIFAR models (kaiming_normal kernels, BatchNorm scales uniform in [0, 1), shifts 0), checked on a
full-width VGG-8 whose big kernels make the sample statistics tight; and that the default is unchanged."""

import json

import keras
import numpy as np
import pytest

from kphases.config import LineageConfig, ModelConfig, RunConfig
from kphases.models import build_model

SHAPE = (32, 32, 3)


def _build(initialisation: str, seed: int = 0, architecture: str = "vgg8") -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_model(ModelConfig(architecture=architecture, initialisation=initialisation), SHAPE, 10)


@pytest.fixture(scope="module")
def open_lth():
    return _build("open_lth")


def _kernels(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def test_kernels_are_untruncated_normal_with_std_sqrt_2_over_fan_in(open_lth):
    for layer in _kernels(open_lth):
        kernel = layer.kernel.numpy()
        fan_in = int(np.prod(kernel.shape[:-1]))
        expected = np.sqrt(2.0 / fan_in)
        # Standard error of a sample std is std / sqrt(2 n); 6 of them, and never looser than 5%.
        tolerance = max(6 / np.sqrt(2 * kernel.size), 0.05) if kernel.size >= 2000 else 0.25
        assert abs(kernel.std() / expected - 1) < tolerance, (layer.name, kernel.std(), expected)
        assert abs(kernel.mean()) < 6 * expected / np.sqrt(kernel.size), layer.name
    # Untruncated: the 1.2M-weight block5 kernel has ~75 values beyond 4 std (Keras' HeNormal stops at 2).
    block5 = open_lth.get_layer("block5_conv").kernel.numpy()
    assert np.mean(np.abs(block5) > 4 * np.sqrt(2.0 / (9 * 256))) > 1e-5


def test_batchnorm_scales_are_uniform_on_0_1_and_shifts_zero(open_lth):
    layers = [layer for layer in open_lth.layers if isinstance(layer, keras.layers.BatchNormalization)]
    gammas = np.concatenate([layer.gamma.numpy() for layer in layers])
    assert len(gammas) == 32 + 64 + 128 + 256 + 512
    assert gammas.min() >= 0.0 and gammas.max() < 1.0
    assert abs(gammas.mean() - 0.5) < 6 * np.sqrt(1 / 12 / len(gammas))
    assert abs(np.mean(gammas < 0.25) - 0.25) < 0.05  # uniform, not concentrated
    assert all(np.all(layer.beta.numpy() == 0.0) for layer in layers)
    assert all(np.all(layer.moving_mean.numpy() == 0.0) and np.all(layer.moving_variance.numpy() == 1.0) for layer in layers)


def test_output_bias_keeps_the_pytorch_default_as_open_lth(open_lth):
    bias = open_lth.get_layer("logits").bias.numpy()
    limit = 1 / np.sqrt(512)
    assert np.all(np.abs(bias) <= limit) and np.any(bias != 0)


def test_resnet_shortcuts_are_drawn_too():
    model = _build("open_lth", architecture="resnet20")
    shortcut = model.get_layer("block4_shortcut_conv").kernel.numpy()  # 1x1, 16 -> 32
    assert abs(shortcut.std() / np.sqrt(2.0 / 16) - 1) < 0.25
    assert model.get_layer("stem_bn").gamma.numpy().std() > 0.1


def test_a_seed_gives_one_network_and_seeds_differ():
    first, again, other = _build("open_lth", 3), _build("open_lth", 3), _build("open_lth", 4)
    for a, b, c in zip(first.weights, again.weights, other.weights):
        assert np.array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(first.get_layer("block2_conv").kernel.numpy(), other.get_layer("block2_conv").kernel.numpy())


def test_the_default_stays_pytorch_and_its_hash_unchanged():
    model = _build("pytorch")
    kernel = model.get_layer("block5_conv").kernel.numpy()
    limit = 1 / np.sqrt(9 * 256)
    assert np.abs(kernel).max() <= limit  # PyTorch's uniform +-1/sqrt(fan_in)
    assert np.all(model.get_layer("block1_bn").gamma.numpy() == 1.0)
    assert "initialisation" not in json.loads(RunConfig().to_json()).get("model", {})
    frankle = RunConfig(model=ModelConfig(initialisation="open_lth"))
    assert json.loads(frankle.to_json())["model"]["initialisation"] == "open_lth" and frankle.hash() != RunConfig().hash()
    # The lineage's output-layer rule: left out at its default, in the JSON when set.
    pruned = RunConfig(lineage=LineageConfig(mask_run="abc"))
    assert "prune_output_layer" not in json.loads(pruned.to_json()).get("lineage", {})
    kept = RunConfig(lineage=LineageConfig(mask_run="abc", prune_output_layer=False))
    assert json.loads(kept.to_json())["lineage"]["prune_output_layer"] is False and kept.hash() != pruned.hash()


def test_an_unknown_initialisation_is_named():
    with pytest.raises(ValueError, match="'he'.*valid initialisations.*open_lth"):
        build_model(ModelConfig(initialisation="he"), SHAPE, 10)
