"""The papers' networks as Keras functional models with stable probe-point names.

docs/protocol.md, "Training the classifier (paper profile)": every conv is 3x3, bias-free, padding 1, then an affine
BatchNorm, then ReLU; downsampling is by stride 2 (no pooling); the head is Flatten then
Dense(classes) with bias. The paper's VGG-8/11/13/16 widths and stride flags are in `VGG_LAYOUTS`.

PyTorch equivalence, on purpose, so results compare with the authors':
- padding: PyTorch pads 1 pixel on every side; Keras' padding="same" at stride 2 pads only
  bottom/right, which shifts the sampling grid. Stride-2 convs therefore use an explicit
  ZeroPadding2D(1) and padding="valid"; stride-1 convs use "same", which is identical there.
- initialisation: PyTorch's default conv/dense weights are uniform in +-1/sqrt(fan_in)
  (VarianceScaling(1/3, fan_in, uniform)), dense biases too.
- BatchNorm: PyTorch momentum 0.1 is Keras momentum 0.9; epsilon 1e-5 (Keras' default is 1e-3).

`ModelConfig.initialisation` "open_lth" (the Frankle et al. experiments) instead draws what
open_lth's CIFAR models get by default (`model_init=kaiming_normal`, `batchnorm_init=uniform`):
every Conv2D and Dense kernel from torch.nn.init.kaiming_normal_, an untruncated normal of std
sqrt(2 / fan_in) (Keras' HeNormal is truncated, so VarianceScaling(2, fan_in, untruncated_normal)),
BatchNorm scales uniform in [0, 1) and shifts 0; biases keep PyTorch's default, as there. Like
open_lth's `model.apply(initializer)`, it re-draws the built network's weights.

Probe points, the names every measurement uses: `stem` (ResNets' first conv), `block1` ...
`blockN` (each conv block's or residual block's output after its ReLU), `penultimate` (the
flattened input of the last Dense layer) and `logits`. `probe_points(model)` lists them.

ResNet-10 is in the paper but not in the authors' release; we build the usual CIFAR-style
BasicBlock ResNet (3x3 stem at stride 1, no max-pool, stages [1,1,1,1] of 64/128/256/512; our
inference, not the authors'). ResNet-18 is [2,2,2,2]; ResNet-20 (Frankle et al.) is 3 stages of 3 blocks at
16/32/64. Residual shortcuts that change shape are 1x1 stride-2 convs with BatchNorm.

Speed: every conv is a `Conv2D`, Keras' layer with one change. TensorFlow's CPU kernel for a
convolution's input gradient (Conv2DBackpropInput) was 4-10x slower than the forward convolution
that computes the same numbers on small maps with many channels on one 2-core machine (for VGG-8's
last block most of a training step); on another TensorFlow's kernel was the faster one (CHANGELOG:
the step times of both): the rule below helps or costs by CPU, so it is off by default, never
used on a GPU, and an opt-in ($KPHASES_FORWARD_INPUT_GRADIENT=1) for a CPU where the benchmark
shows it faster. Where on (`FORWARD_INPUT_GRADIENT` below: inputs of at most 6x6, after any ZeroPadding2D, with at least 128
channels) the input
gradient is the forward convolution of the stride-dilated, padded output gradient with the flipped,
transposed kernel; elsewhere TensorFlow's kernel is used. Same weights, same results to float32
rounding (tests/test_models.py); `python -m benchmarks.training` prints both side by side.

Where a conv's output map is 1x1 (every VGG's last conv: 2x2 padded to 4x4, 3x3 kernel, stride 2),
it is one matrix product, on by default on CPUs: the one output position sees only the top-left
3x3 corner of the padded input, so output = flatten(corner) @ flatten(kernel), and TensorFlow's
gradients of a matrix product are two more. Its CPU convolution kernels are slow on that shape
(2.6x the product for the forward and both gradients of VGG-8's block5, CHANGELOG); same weights,
same results to float32 rounding (tests/test_models.py), never used on a GPU (cuDNN), switched off
by $KPHASES_SINGLE_POSITION_PRODUCT=0 or `SINGLE_POSITION_PRODUCT["enabled"] = False`.
"""

from __future__ import annotations

import math
import os
import re

import keras
import tensorflow as tf
from keras import layers

from kphases.config import ModelConfig

# name -> (conv widths, stride-2 flags); VGG-8's: docs/protocol.md, "Training the classifier (paper profile)".
VGG_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "vgg8": ((32, 64, 128, 256, 512), (1, 1, 1, 1, 1)),
    "vgg11": ((32, 64, 128, 128, 256, 256, 512, 512), (1, 1, 0, 1, 0, 1, 0, 1)),
    "vgg13": ((32, 32, 64, 128, 128, 256, 256, 512, 512, 512), (1, 0, 1, 0, 1, 0, 1, 0, 0, 1)),
    "vgg16": ((32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 512, 512, 512), (0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1)),
}
# name -> (blocks per stage, stage widths)
RESNET_LAYOUTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet10": ((1, 1, 1, 1), (64, 128, 256, 512)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet20": ((3, 3, 3), (16, 32, 64)),
}
SIMPLE_WIDTH = 128
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
PROBE_PATTERN = re.compile(r"^(stem|block\d+|penultimate|logits)$")
# ModelConfig.activation: the paper's relu, or tanh (a saturating nonlinearity, for the information plane).
ACTIVATIONS = ("relu", "tanh")
# ModelConfig.initialisation: PyTorch's layer defaults (the phases paper), or open_lth's (Frankle et al.).
INITIALISATIONS = ("pytorch", "open_lth")


# Where Conv2D computes the input gradient by a forward convolution: inputs of at most this many
# pixels (6x6) with at least this many channels (measured, module docstring). Conv2D's rule is off
# unless enabled ($KPHASES_FORWARD_INPUT_GRADIENT=1, read when this module is imported, or
# FORWARD_INPUT_GRADIENT["enabled"] = True before a step is traced), and never used where TensorFlow
# sees a GPU (cuDNN's kernel is the one to use there).
FORWARD_INPUT_GRADIENT = {"max_pixels": 36, "min_channels": 128, "enabled": os.environ.get("KPHASES_FORWARD_INPUT_GRADIENT", "0") == "1"}
# Where Conv2D has a single output position (a 1x1 map: every VGG's last conv), the convolution is
# one matrix product of the flattened window with the flattened kernel (module docstring). On by
# default on CPUs ($KPHASES_SINGLE_POSITION_PRODUCT=0 switches it off); never used on a GPU.
SINGLE_POSITION_PRODUCT = {"enabled": os.environ.get("KPHASES_SINGLE_POSITION_PRODUCT", "1") != "0"}
# BatchNormalization's training pass as TensorFlow's fused kernel on CPUs (module docstring); on by
# default, $KPHASES_FUSED_BATCHNORM=0 switches it off.
FUSED_BATCHNORM = {"enabled": os.environ.get("KPHASES_FUSED_BATCHNORM", "1") != "0"}


def _dilate(gradient, stride: int):
    """(B, m, m', C) -> (B, (m-1)s+1, (m'-1)s+1, C) with s-1 zeros between neighbouring values."""
    if stride == 1:
        return gradient
    height, width, channels = gradient.shape[1], gradient.shape[2], gradient.shape[3]
    spread = tf.pad(gradient[:, :, None, :, None, :], [[0, 0], [0, 0], [0, stride - 1], [0, 0], [0, stride - 1], [0, 0]])
    spread = tf.reshape(spread, (-1, height * stride, width * stride, channels))
    return spread[:, : (height - 1) * stride + 1, : (width - 1) * stride + 1, :]


def _input_gradient(gradient, kernel, stride: int, size: tuple[int, int], crop: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))):
    """The gradient of a VALID convolution's input of `size` from its output `gradient`, less `crop`
    rows (columns) at each end, as one forward convolution: the stride-dilated gradient, padded by
    kernel - 1 (minus the crop), with the flipped, transposed kernel. (That is also a transposed
    convolution of `gradient`.) Its own input gradient is again a forward convolution."""
    kernel_size = (kernel.shape[0], kernel.shape[1])
    # Rows (columns) of the input the last output does not reach get zero gradient: pad for them too.
    rest = [n - ((m - 1) * stride + k) for n, m, k in zip(size, gradient.shape[1:3], kernel_size)]
    pads = [[k - 1 - before, k - 1 + extra - after] for k, extra, (before, after) in zip(kernel_size, rest, crop)]
    spread = tf.pad(_dilate(gradient, stride), [[0, 0], *pads, [0, 0]])
    return conv2d_valid(spread, tf.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)), 1)


def conv2d_valid(inputs, kernel, stride: int):
    """tf.nn.conv2d(inputs, kernel, stride, "VALID") whose input gradient is a forward convolution."""

    @tf.custom_gradient
    def convolve(x, w):
        def gradient(dy):
            dx = _input_gradient(dy, w, stride, (x.shape[1], x.shape[2]))
            dw = tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=[1, stride, stride, 1], padding="VALID"
            )
            return dx, dw

        return tf.nn.conv2d(x, w, stride, "VALID"), gradient

    return convolve(inputs, tf.convert_to_tensor(kernel))


def _same_padding(size: int, kernel_size: int, stride: int) -> list[int]:
    """[before, after] of TensorFlow's "same" padding of one dimension: the extra pixel, if any, after."""
    total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
    return [total // 2, total - total // 2]


def _cpu_only() -> bool:
    """Whether TensorFlow sees no GPU: the CPU speed paths of this module are never used beside one (cuDNN's there)."""
    return not tf.config.list_logical_devices("GPU")


def _forward_input_gradient_applies(layer, inputs, channels: int) -> bool:
    height, width = inputs.shape[1], inputs.shape[2]
    return (
        _cpu_only()
        and None not in (height, width, channels)
        and height * width <= FORWARD_INPUT_GRADIENT["max_pixels"]
        and channels >= FORWARD_INPUT_GRADIENT["min_channels"]
        and layer.data_format == "channels_last"
        and tuple(layer.dilation_rate) == (1, 1)
        and len(set(layer.strides)) == 1
    )


def _single_position(layer, inputs, kernel_size) -> bool:
    """Whether the convolution's output map is 1x1 (then it is one matrix product)."""
    sizes = inputs.shape[1:3]
    if (
        not _cpu_only()
        or None in sizes
        or layer.data_format != "channels_last"
        or tuple(layer.dilation_rate) != (1, 1)
        or layer.groups != 1
    ):
        return False
    if layer.padding == "same":
        return all(-(-size // stride) == 1 for size, stride in zip(sizes, layer.strides))
    return layer.padding == "valid" and all(
        size >= k and (size - k) // stride == 0 for size, k, stride in zip(sizes, kernel_size, layer.strides)
    )


def _single_position_product(layer, inputs, kernel):
    """The 1x1 output of a convolution as (window, flattened) @ (kernel, flattened): the window is the
    top-left kernel-sized corner of the (padded) input, the only pixels the one output position sees."""
    rows, cols, channels, filters = kernel.shape
    if layer.padding == "same":
        pads = [_same_padding(size, k, stride) for size, k, stride in zip(inputs.shape[1:3], (rows, cols), layer.strides)]
        inputs = tf.pad(inputs, [[0, 0], *pads, [0, 0]])
    window = tf.reshape(inputs[:, :rows, :cols, :], (-1, rows * cols * channels))
    return tf.reshape(tf.matmul(window, tf.reshape(kernel, (rows * cols * channels, filters))), (-1, 1, 1, filters))


class Conv2D(layers.Conv2D):
    """keras.layers.Conv2D (channels last) computed as one matrix product where its output map is 1x1
    (on by default on CPUs), and, as an opt-in, with the input gradient on small maps with many
    channels as a forward convolution (module docstring)."""

    def convolution_op(self, inputs, kernel):
        if SINGLE_POSITION_PRODUCT["enabled"] and _single_position(self, inputs, kernel.shape[:2]):
            return _single_position_product(self, inputs, kernel)
        if not (FORWARD_INPUT_GRADIENT["enabled"] and _forward_input_gradient_applies(self, inputs, inputs.shape[3])):
            return super().convolution_op(inputs, kernel)
        stride = self.strides[0]
        if self.padding == "same":
            pads = [_same_padding(size, kernel_size, stride) for size, kernel_size in zip(inputs.shape[1:3], kernel.shape[:2])]
            inputs = tf.pad(inputs, [[0, 0], *pads, [0, 0]])
        return conv2d_valid(inputs, kernel, stride)


class Conv2DTranspose(layers.Conv2DTranspose):
    """keras.layers.Conv2DTranspose whose forward pass on small maps with many channels is the
    forward convolution `_input_gradient` (TensorFlow runs a transposed convolution as the slow
    Conv2DBackpropInput kernel: ClaDec's 1x1x512 -> 2x2x512 -> 4x4x256 stages). Padding "same"
    without output_padding only; anything else is Keras' own."""

    def call(self, inputs):
        channels = inputs.shape[3]
        kernel_size = self.kernel_size[0]
        if (
            self.padding != "same"
            or self.output_padding is not None
            or len(set(self.kernel_size)) != 1
            or kernel_size < self.strides[0]
            or not _forward_input_gradient_applies(self, inputs, channels)
        ):
            return super().call(inputs)
        stride = self.strides[0]
        # TensorFlow's "same" transposed convolution is the input gradient of the "same" convolution
        # of an input stride times larger: that input padded, less its padding.
        sizes = [size * stride for size in inputs.shape[1:3]]
        crop = [_same_padding(size, kernel_size, stride) for size in sizes]
        padded = [size + before + after for size, (before, after) in zip(sizes, crop)]
        outputs = _input_gradient(inputs, tf.convert_to_tensor(self.kernel), stride, padded, crop)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


class BatchNormalization(layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training-mode pass on a CPU is TensorFlow's fused kernel
    (FusedBatchNormV3: statistics, normalisation and their gradient in one op each) for 4-D float32
    channels-last inputs; the same moving-statistics update as Keras' (biased batch variance);
    everything else (inference, masks, renorm, synchronised replicas, other dtypes, a GPU) is
    Keras' own. Same weights and names; same results to float32 rounding (tests/test_models.py).
    $KPHASES_FUSED_BATCHNORM=0 or `FUSED_BATCHNORM["enabled"] = False` switches it off."""

    def call(self, inputs, training=None, mask=None):
        if not (
            FUSED_BATCHNORM["enabled"]
            and training
            and self.trainable
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == "float32"
            and self.center
            and self.scale
            and not self.renorm
            and not self.synchronized
            and _cpu_only()
        ):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta), epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the unbiased (n - 1) variance for the moving average; Keras averages the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * ((count - 1.0) / count)
        self.moving_mean.assign(tf.convert_to_tensor(self.moving_mean) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(tf.convert_to_tensor(self.moving_variance) * self.momentum + variance * (1.0 - self.momentum))
        return outputs


def architectures() -> list[str]:
    """Every valid architecture name (simple<n> stands for any n >= 1)."""
    return [*VGG_LAYOUTS, *RESNET_LAYOUTS, "simple<n>", "linear"]


def _torch_uniform() -> keras.initializers.Initializer:
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): VarianceScaling with scale 1/3 has limit sqrt(3 * (1/3) / fan_in).
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def _scaled(width: int, multiplier: float) -> int:
    return max(1, int(round(width * multiplier)))


def _conv_bn(x, filters: int, stride: int, name: str, relu: bool = True, kernel_size: int = 3, activation: str = "relu"):
    if stride == 2 and kernel_size == 3:
        x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = Conv2D(
        filters, kernel_size, strides=stride, padding=padding, use_bias=False, kernel_initializer=_torch_uniform(), name=f"{name}_conv"
    )(x)
    x = BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=name)(x) if activation == "relu" else layers.Activation(activation, name=name)(x)
    return x


def _head(x, num_classes: int, use_bias: bool = True):
    x = layers.Flatten(name="penultimate")(x)
    fan_in = x.shape[-1]
    bias_limit = 1.0 / math.sqrt(fan_in)
    return layers.Dense(
        num_classes,
        use_bias=use_bias,
        kernel_initializer=_torch_uniform(),
        bias_initializer=keras.initializers.RandomUniform(-bias_limit, bias_limit),
        name="logits",
    )(x)


def _vgg(inputs, name: str, width: float, num_classes: int, activation: str = "relu"):
    widths, strides = VGG_LAYOUTS[name]
    x = inputs
    for index, (filters, stride_two) in enumerate(zip(widths, strides), start=1):
        x = _conv_bn(x, _scaled(filters, width), 2 if stride_two else 1, f"block{index}", activation=activation)
    return _head(x, num_classes)


def _resnet(inputs, name: str, width: float, num_classes: int):
    blocks_per_stage, stage_widths = RESNET_LAYOUTS[name]
    x = _conv_bn(inputs, _scaled(stage_widths[0], width), 1, "stem")
    index = 0
    for stage, (blocks, filters) in enumerate(zip(blocks_per_stage, stage_widths)):
        filters = _scaled(filters, width)
        for block in range(blocks):
            index += 1
            stride = 2 if stage > 0 and block == 0 else 1
            prefix = f"block{index}"
            shortcut = x
            y = _conv_bn(x, filters, stride, f"{prefix}_a")
            y = _conv_bn(y, filters, 1, f"{prefix}_b", relu=False)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = _conv_bn(shortcut, filters, stride, f"{prefix}_shortcut", relu=False, kernel_size=1)
            x = layers.Add(name=f"{prefix}_add")([y, shortcut])
            x = layers.ReLU(name=prefix)(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return _head(x, num_classes)


def _simple(inputs, blocks: int, width: float, num_classes: int, activation: str = "relu"):
    # The paper's "S" nets: 2x2 max-pool on the input, n conv blocks of 128 at stride 1, 8x8 max-pool.
    x = layers.MaxPooling2D(2, name="input_pool")(inputs)
    for index in range(1, blocks + 1):
        x = _conv_bn(x, _scaled(SIMPLE_WIDTH, width), 1, f"block{index}", activation=activation)
    x = layers.MaxPooling2D(8, name="pool")(x)
    return _head(x, num_classes)


def build_model(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The network named by `config.architecture` for images of `input_shape` (H, W, C).

    Weights are drawn from Keras' global seed: call `keras.utils.set_random_seed` first for a
    reproducible initialisation.
    """
    name = config.architecture
    if config.width <= 0:
        raise ValueError(f"width multiplier must be positive, got {config.width}")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {config.activation!r}; valid activations: {list(ACTIVATIONS)}")
    if config.initialisation not in INITIALISATIONS:
        raise ValueError(f"unknown initialisation {config.initialisation!r}; valid initialisations: {list(INITIALISATIONS)}")
    if config.activation != "relu" and not (name in VGG_LAYOUTS or re.fullmatch(r"simple\d+", name)):
        raise ValueError(
            f"activation {config.activation!r} is available for the vgg and simple<n> nets only, "
            f"not {name!r} (ResNets and the linear net use relu)"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if name in VGG_LAYOUTS:
        outputs = _vgg(inputs, name, config.width, num_classes, config.activation)
    elif name in RESNET_LAYOUTS:
        outputs = _resnet(inputs, name, config.width, num_classes)
    elif (match := re.fullmatch(r"simple(\d+)", name)) and int(match.group(1)) >= 1:
        if min(input_shape[:2]) < 16:
            raise ValueError(f"the simple nets need inputs of at least 16x16 (2x2 then 8x8 pooling), got {input_shape}")
        outputs = _simple(inputs, int(match.group(1)), config.width, num_classes, config.activation)
    elif name == "linear":
        outputs = _head(inputs, num_classes, use_bias=False)
    else:
        raise ValueError(f"unknown architecture {name!r}; valid architectures: {architectures()}")
    model = keras.Model(inputs, outputs, name=name)
    if config.initialisation == "open_lth":
        _initialise_as_open_lth(model)
    return model


def _initialise_as_open_lth(model: keras.Model) -> None:
    """Re-draw the weights as open_lth's kaiming_normal + uniform BatchNorm initialisers (module docstring)."""
    kaiming_normal = keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")
    scale = keras.initializers.RandomUniform(0.0, 1.0)
    for layer in model.layers:  # layer order, so a seed gives one network
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            layer.kernel.assign(kaiming_normal(tuple(layer.kernel.shape), dtype=layer.kernel.dtype))
        elif isinstance(layer, layers.BatchNormalization):
            layer.gamma.assign(scale(tuple(layer.gamma.shape), dtype=layer.gamma.dtype))
            layer.beta.assign(tf.zeros_like(layer.beta))


def probe_points(model: keras.Model) -> list[str]:
    """The model's named probe points, in forward order (stem, block1..N, penultimate, logits)."""
    return [layer.name for layer in model.layers if PROBE_PATTERN.match(layer.name)]
