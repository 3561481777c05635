import numpy as np
import pytest

from kphases.config import ModelConfig
from kphases.models import build_model, probe_points

# Trainable parameters (convs without bias + BatchNorm gamma/beta + Dense with bias), on 32x32x3 inputs
# and 10 classes; by hand: VGG-8 = convs 1,567,584 + BN 1,984 + dense 5,130; VGG-11 = 4,664,160 + 3,776
# + 5,130. ResNet-18 equals the common
# CIFAR ResNet-18 (11,173,962).
TRAINABLE = {
    "vgg8": 1_574_698,
    "vgg11": 4_673_066,
    "vgg13": 7_042_666,
    "vgg16": 7_817_706,
    "resnet10": 4_903_242,
    "resnet18": 11_173_962,
    "resnet20": 272_474,
    "simple3": 304_266,
    "linear": 30_720,
}
LAST_BLOCK = {
    "vgg8": "block5",
    "vgg11": "block8",
    "vgg13": "block10",
    "vgg16": "block13",
    "resnet10": "block4",
    "resnet18": "block8",
    "resnet20": "block9",
    "simple3": "block3",
}


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


# --- Conv2D's forward-convolution input gradient ------------------------------------------------


@pytest.fixture
def forward_input_gradient(monkeypatch):
    """The rule is off by default (an opt-in): these tests switch it on."""
    from kphases.models import FORWARD_INPUT_GRADIENT

    monkeypatch.setitem(FORWARD_INPUT_GRADIENT, "enabled", True)


def _assert_matches_keras(ours, theirs, x, rng, variables):
    """Same output, input gradient and gradients of `variables` as Keras' layer, for a random linear loss."""
    import tensorflow as tf

    target = tf.constant(rng.normal(size=theirs.compute_output_shape(x.shape)).astype(np.float32))
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * target)
        results.append([layer(x), *tape.gradient(loss, [x, *(getattr(layer, name) for name in variables)])])
    for mine, reference in zip(*results):
        assert mine.shape == reference.shape
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-4, atol=1e-4)


def _build_alike(ours, theirs, x, rng) -> None:
    """Build both layers for `x` with the same weights, the bias (second weight) nonzero."""
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = ours.get_weights()
    weights[1] = rng.normal(size=weights[1].shape).astype(np.float32)
    ours.set_weights(weights)
    theirs.set_weights(weights)


@pytest.mark.parametrize(
    "size, channels, filters, kernel_size, stride, padding",
    [
        (4, 256, 16, 3, 2, "valid"),  # VGG-8's last block (2x2 after its ZeroPadding2D(1))
        (6, 128, 8, 3, 2, "valid"),  # VGG-8's block4
        (3, 128, 8, 3, 2, "valid"),  # odd size: the last row and column of x reach no output
        (4, 128, 8, 3, 1, "same"),  # ResNet stage-4 convs
        (3, 128, 8, 3, 2, "same"),  # TensorFlow's asymmetric "same" at stride 2
        (6, 128, 8, 1, 2, "same"),  # a 1x1 stride-2 shortcut
        (5, 128, 8, 3, 1, "valid"),
    ],
)
def test_conv2d_gradients_equal_keras(size, channels, filters, kernel_size, stride, padding, forward_input_gradient):
    import keras
    import tensorflow as tf

    from kphases.models import FORWARD_INPUT_GRADIENT, Conv2D

    assert size * size <= FORWARD_INPUT_GRADIENT["max_pixels"] and channels >= FORWARD_INPUT_GRADIENT["min_channels"]
    rng = np.random.default_rng(size + 10 * stride)
    x = tf.constant(rng.normal(size=(5, size, size, channels)).astype(np.float32))
    ours = Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=False)
    theirs = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=False)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    _assert_matches_keras(ours, theirs, x, rng, ("kernel",))


def test_vgg8_uses_forward_input_gradient_only_on_its_small_wide_blocks(forward_input_gradient):
    import tensorflow as tf

    from kphases.models import Conv2D

    model = build_model(ModelConfig("vgg8", 1.0), (32, 32, 1), 10)
    assert [layer.name for layer in model.layers if isinstance(layer, Conv2D)] == [f"block{i}_conv" for i in range(1, 6)]

    def gradients(x):
        return tf.gradients(tf.reduce_sum(model(x, training=True)), [w.value for w in model.trainable_weights])

    graph = tf.function(gradients).get_concrete_function(tf.TensorSpec((2, 32, 32, 1))).graph

    def layers_with(kind):
        return sorted(op.name.split("/")[2].removesuffix("_1") for op in graph.get_operations() if op.type == kind)

    # block1..3 (inputs 34x34x1, 18x18x32, 10x10x64 padded): TensorFlow's kernel; block4 (6x6x128):
    # the forward convolution; block5 (4x4x256 to 1x1): a matrix product, no conv kernel at all.
    # (block1's input gradient is built here but pruned when run.)
    assert layers_with("Conv2DBackpropInput") == ["block1_conv", "block2_conv", "block3_conv"]
    assert layers_with("Conv2DBackpropFilter") == [f"block{i}_conv" for i in range(1, 5)]


@pytest.mark.parametrize(
    "size, channels, filters, kernel_size, stride",
    [
        (1, 128, 16, 4, 2),  # ClaDec's first stage (1x1x512 -> 2x2x512 at 512-d features)
        (2, 256, 8, 4, 2),
        (3, 128, 8, 3, 2),  # odd kernel: TensorFlow's extra padding pixel at the bottom/right
        (4, 128, 8, 3, 1),
    ],
)
def test_conv2d_transpose_equals_keras(size, channels, filters, kernel_size, stride):
    import keras
    import tensorflow as tf

    from kphases.models import Conv2DTranspose

    rng = np.random.default_rng(size + 10 * kernel_size)
    x = tf.constant(rng.normal(size=(5, size, size, channels)).astype(np.float32))
    ours = Conv2DTranspose(filters, kernel_size, strides=stride, padding="same", activation="relu")
    theirs = keras.layers.Conv2DTranspose(filters, kernel_size, strides=stride, padding="same", activation="relu")
    _build_alike(ours, theirs, x, rng)
    _assert_matches_keras(ours, theirs, x, rng, ("kernel", "bias"))


def test_forward_input_gradient_is_off_by_default():
    import tensorflow as tf

    from kphases.models import FORWARD_INPUT_GRADIENT

    assert not FORWARD_INPUT_GRADIENT["enabled"]
    model = build_model(ModelConfig("vgg8", 1.0), (32, 32, 1), 10)
    graph = (
        tf.function(lambda x: tf.gradients(tf.reduce_sum(model(x, training=True)), [w.value for w in model.trainable_weights]))
        .get_concrete_function(tf.TensorSpec((2, 32, 32, 1)))
        .graph
    )
    # TensorFlow's input-gradient kernel in every block but the last, whose 1x1 output is a matrix
    # product (block1's is built, then pruned when run).
    assert sorted({op.name.split("/")[2].removesuffix("_1") for op in graph.get_operations() if op.type == "Conv2DBackpropInput"}) == [
        f"block{i}_conv" for i in range(1, 5)
    ]


@pytest.mark.parametrize(
    "size, channels, filters, kernel_size, stride, padding",
    [
        (4, 64, 16, 3, 2, "valid"),  # every VGG's last conv (2x2 after its ZeroPadding2D(1))
        (4, 8, 4, 3, 3, "valid"),  # the last row and column reach no output
        (3, 8, 4, 3, 1, "valid"),
        (1, 16, 4, 3, 1, "same"),  # only the kernel's centre sees the image
        (2, 16, 4, 3, 2, "same"),  # TensorFlow's asymmetric "same" at stride 2
        (3, 8, 4, 1, 4, "same"),
    ],
)
def test_conv2d_with_one_output_position_equals_keras(size, channels, filters, kernel_size, stride, padding):
    import keras
    import tensorflow as tf

    from kphases.models import Conv2D, _single_position

    rng = np.random.default_rng(size + 10 * stride + channels)
    x = tf.constant(rng.normal(size=(5, size, size, channels)).astype(np.float32))
    ours = Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=True)
    theirs = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=True)
    _build_alike(ours, theirs, x, rng)
    assert _single_position(ours, x, ours.kernel.shape[:2])
    _assert_matches_keras(ours, theirs, x, rng, ("kernel", "bias"))


def test_the_single_position_product_switches_off_and_leaves_larger_outputs_alone(monkeypatch):
    import tensorflow as tf

    from kphases.models import SINGLE_POSITION_PRODUCT, Conv2D, _single_position

    assert SINGLE_POSITION_PRODUCT["enabled"]  # the default
    layer = Conv2D(4, 3, strides=2, padding="valid")
    assert not _single_position(layer, tf.zeros((1, 5, 5, 2)), (3, 3))  # a 2x2 output
    assert not _single_position(Conv2D(4, 3, padding="same"), tf.zeros((1, 2, 2, 2)), (3, 3))
    monkeypatch.setitem(SINGLE_POSITION_PRODUCT, "enabled", False)
    model = build_model(ModelConfig("vgg8", 0.25), (32, 32, 1), 10)
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(tf.TensorSpec((2, 32, 32, 1))).graph
    assert sum(op.type == "Conv2D" for op in graph.get_operations()) == 5 and not any(
        op.type == "MatMul" and "block5" in op.name for op in graph.get_operations()
    )


# --- BatchNormalization's fused training pass ---------------------------------------------------


def test_fused_batchnorm_equals_keras_in_training_and_inference():
    import keras
    import tensorflow as tf

    from kphases.models import BN_EPSILON, BN_MOMENTUM, BatchNormalization

    rng = np.random.default_rng(11)
    x = tf.constant((3.0 + 2.0 * rng.normal(size=(6, 5, 4, 7))).astype(np.float32))
    ours, theirs = (kind(momentum=BN_MOMENTUM, epsilon=BN_EPSILON) for kind in (BatchNormalization, keras.layers.BatchNormalization))
    for layer in (ours, theirs):
        layer.build(x.shape)
    weights = [rng.uniform(0.5, 1.5, 7), rng.normal(size=7), rng.normal(size=7), rng.uniform(0.5, 2.0, 7)]
    for layer in (ours, theirs):
        layer.set_weights([w.astype(np.float32) for w in weights])
    target = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * target)
        gradients = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([layer(x, training=False), *gradients, layer.moving_mean, layer.moving_variance])
    for mine, reference in zip(*results):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(reference), rtol=1e-5, atol=1e-5)
    # stateless (the measurement's batch-statistics features): the same outputs and moving statistics
    outputs = [layer.stateless_call(layer.trainable_variables, layer.non_trainable_variables, x, training=True) for layer in (ours, theirs)]
    np.testing.assert_allclose(outputs[0][0].numpy(), outputs[1][0].numpy(), rtol=1e-5, atol=1e-5)
    for mine, reference in zip(outputs[0][1], outputs[1][1]):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(reference), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(outputs[0][1][0]), np.asarray(ours.moving_mean))  # it updated the copy, not the layer


def test_fused_batchnorm_is_in_the_networks_and_switches_off(monkeypatch):
    import tensorflow as tf

    from kphases.models import FUSED_BATCHNORM

    assert FUSED_BATCHNORM["enabled"]  # the default

    def fused_ops(model):
        graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(tf.TensorSpec((2, 32, 32, 1))).graph
        return sum(op.type == "FusedBatchNormV3" for op in graph.get_operations())

    assert fused_ops(build_model(ModelConfig("vgg8", 0.25), (32, 32, 1), 10)) == 5
    monkeypatch.setitem(FUSED_BATCHNORM, "enabled", False)
    assert fused_ops(build_model(ModelConfig("vgg8", 0.25), (32, 32, 1), 10)) == 0
