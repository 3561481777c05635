import numpy as np
import pytest

from kphases.config import ModelConfig
from kphases.models import build_model, probe_points

# Trainable parameters (convs without bias + BatchNorm gamma/beta + Dense with bias), on 32x32x3 inputs
# and 10 classes; by hand: VGG-8 = convs 1,567,584 + BN 1,984 + dense 5,130; VGG-11 = 4,664,160 + 3,776
# + 5,130. ResNet-18 equals the common
# CIFAR ResNet-18 (11,173,962).
TRAINABLE = {
    "vgg8": 1_574_698, "vgg11": 4_673_066, "vgg13": 7_042_666, "vgg16": 7_817_706,
    "resnet10": 4_903_242, "resnet18": 11_173_962, "resnet20": 272_474, "simple3": 304_266, "linear": 30_720,
}
LAST_BLOCK = {"vgg8": "block5", "vgg11": "block8", "vgg13": "block10", "vgg16": "block13",
              "resnet10": "block4", "resnet18": "block8", "resnet20": "block9", "simple3": "block3"}


def trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


@pytest.mark.parametrize("architecture", sorted(TRAINABLE))
def test_parameter_count_and_shapes(architecture):
    model = build_model(ModelConfig(architecture), (32, 32, 3), 10)
    assert trainable(model) == TRAINABLE[architecture]
    assert model.get_layer("logits").output.shape == (None, 10)
    points = probe_points(model)
    assert points[-2:] == ["penultimate", "logits"]
    if architecture != "linear":
        assert LAST_BLOCK[architecture] in points
    out = model(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert out.shape == (2, 10)


@pytest.mark.parametrize("architecture", ["vgg8", "vgg11", "vgg13", "vgg16"])
def test_every_vgg_ends_at_1x1x512(architecture):
    model = build_model(ModelConfig(architecture), (32, 32, 1), 10)
    assert model.get_layer(LAST_BLOCK[architecture]).output.shape == (None, 1, 1, 512)
    assert model.get_layer("penultimate").output.shape == (None, 512)


def test_width_multiplier_scales_convs():
    model = build_model(ModelConfig("vgg8", width=0.5), (32, 32, 3), 10)
    assert [model.get_layer(f"block{i}").output.shape[-1] for i in range(1, 6)] == [16, 32, 64, 128, 256]


def test_pytorch_conventions():
    model = build_model(ModelConfig("vgg8"), (32, 32, 3), 10)
    bn = model.get_layer("block1_bn")
    assert (bn.momentum, bn.epsilon, bn.center, bn.scale) == (0.9, 1e-5, True, True)
    conv = model.get_layer("block1_conv")
    assert not conv.use_bias
    limit = 1 / np.sqrt(3 * 3 * 3)  # PyTorch default: U(+-1/sqrt(fan_in))
    kernel = conv.kernel.numpy()
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    # stride-2 convs pad one pixel on every side, like PyTorch's padding=1
    assert model.get_layer("block1_pad").padding == ((1, 1), (1, 1))


def test_linear_net_is_single_bias_free_dense():
    model = build_model(ModelConfig("linear"), (32, 32, 1), 10)
    dense = model.get_layer("logits")
    assert not dense.use_bias and dense.kernel.shape == (1024, 10)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg9'; valid architectures: \['vgg8'"):
        build_model(ModelConfig("vgg9"), (32, 32, 3), 10)
