"""Linear probes and transfer heads on frozen features: how usable a layer's output is.

docs/protocol.md, "What is measured at each snapshot" (linear probe, transfer heads): at every snapshot a fresh
linear head (Flatten, then Dense(classes) with bias) is trained on the frozen layer output, for
the source task (the probe: how linearly decodable the labels are, the accuracy curve beside the
reconstruction curve) or for a target task (the transfer head: colour dominance, or a switch of
dataset). The transfer accuracy over training is the paper's argument that pre-training should
stop well before the source optimum.

We follow the authors' probe (their getEvClassifier/getTaClassifier): PyTorch's default
initialisation, cross-entropy, batch 128 reshuffled every epoch, SGD with momentum 0.9, learning
rate 0.01 for epochs 1-10 and 0.001 for epochs 11-20 (their rule "multiply by 0.1 when
(epoch + 1) % (E // 3 + E // 10 + 2) == 0" gives exactly one drop, after epoch 10, for E = 20;
we state the drop epoch instead of the rule), no weight decay; accuracy and mean cross-entropy
on both splits afterwards. `TorchSGD` keeps PyTorch's momentum convention (the buffer sums raw
gradients and the learning rate multiplies at the update), which differs from Keras' SGD right
after the learning-rate drop. Departure: float32 throughout (the authors train under autocast).

Update count: 20 epochs of a small subset are far fewer SGD updates than the authors' heads had
(391 batches x 20 epochs = 7,820 on CIFAR-10's 50,000 images; 20 epochs of 10,000 images are
1,580). `ProbeSettings.min_update_steps` raises the epochs until the count is reached, with the
learning-rate drop moved to the same fraction of training; every measured row states the count it got.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from kphases.data import batch_bounds
from kphases.epochs import epoch_function, train_epochs
from kphases.optimizers import TorchSGD  # noqa: F401 (re-exported: kphases.probes.TorchSGD)

COLOR_DOMINANCE_CLASSES = ("red", "green", "blue")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How a linear head is trained (defaults: the authors' probe and transfer head)."""

    epochs: int = 20  # authors: 20 epochs
    lr_drop_epoch: int = 10  # learning rate x lr_drop_factor from the epoch after this one (epochs 11-20)
    learning_rate: float = 0.01  # authors: 0.01, then 0.001
    momentum: float = 0.9  # authors: SGD momentum 0.9
    batch_size: int = 128  # authors: 128
    seed: int = 0  # head initialisation and the per-epoch shuffles
    lr_drop_factor: float = 0.1  # authors: x 0.1
    min_update_steps: int | None = (
        None  # raise the epochs until at least this many updates (authors' CIFAR-10 count: 7820); None: epochs as given
    )

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}"),
            (
                isinstance(self.lr_drop_epoch, int) and self.lr_drop_epoch >= 0,
                f"lr_drop_epoch must be an integer >= 0 (0: the dropped rate from the start), got {self.lr_drop_epoch!r}",
            ),
            (self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate!r}"),
            (0 < self.momentum < 1, f"momentum must be in (0, 1), got {self.momentum!r}"),
            (
                isinstance(self.batch_size, int) and self.batch_size >= 1,
                f"batch_size must be an integer >= 1, got {self.batch_size!r}",
            ),
            (self.lr_drop_factor > 0, f"lr_drop_factor must be positive, got {self.lr_drop_factor!r}"),
            (
                self.min_update_steps is None or (isinstance(self.min_update_steps, int) and self.min_update_steps >= 1),
                f"min_update_steps must be None or an integer >= 1, got {self.min_update_steps!r}",
            ),
        ]
        for passed, message in checks:
            if not passed:
                raise ValueError(message)

    def learning_rate_in_epoch(self, epoch: int, num_train_samples: int | None = None) -> float:
        """The learning rate during `epoch` (counted from 1); with `num_train_samples`, the drop of `drop_epoch_for`."""
        drop = self.lr_drop_epoch if num_train_samples is None else self.drop_epoch_for(num_train_samples)
        return self.learning_rate if epoch <= drop else self.learning_rate * self.lr_drop_factor

    def epochs_for(self, num_train_samples: int) -> int:
        """`epochs`, raised if needed so that the head gets at least `min_update_steps` updates."""
        if self.min_update_steps is None:
            return self.epochs
        return max(self.epochs, math.ceil(self.min_update_steps / math.ceil(num_train_samples / self.batch_size)))

    def drop_epoch_for(self, num_train_samples: int) -> int:
        """`lr_drop_epoch`, stretched with the epochs when `min_update_steps` raised them: the drop stays
        at the same fraction of training (the authors': after half)."""
        epochs = self.epochs_for(num_train_samples)
        return self.lr_drop_epoch if epochs == self.epochs else round(self.lr_drop_epoch * epochs / self.epochs)

    def protocol_dict(self, instrument: str) -> dict:
        """The fields hashed into a head cell's protocol; min_update_steps only when set, so cells measured
        before the field existed keep their protocol."""
        values = dataclasses.asdict(self)
        if self.min_update_steps is None:
            del values["min_update_steps"]
        return values


@dataclasses.dataclass(frozen=True)
class HeadResult:
    """A linear head trained on frozen features: accuracy and mean cross-entropy on both splits."""

    test_accuracy: float
    train_accuracy: float
    test_loss: float  # mean cross-entropy per sample, natural log
    train_loss: float
    update_steps: int  # SGD updates
    epochs: int


def build_linear_head(feature_shape: tuple[int, ...], num_classes: int, seed: int = 0) -> keras.Model:
    """Flatten, then Dense(num_classes) with bias, initialised like PyTorch's nn.Linear (+-1/sqrt(fan_in))."""
    inputs = keras.Input(shape=tuple(feature_shape), name="features")
    flat = keras.layers.Flatten(name="flatten")(inputs)
    fan_in = int(flat.shape[-1])
    bound = 1.0 / math.sqrt(fan_in)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed + 1),
        name="logits",
    )(flat)
    return keras.Model(inputs, logits, name="linear_head")


def train_linear_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    settings: ProbeSettings = ProbeSettings(),
) -> HeadResult:
    """Train a fresh linear head on the train split's features and labels; evaluate both splits.

    Features are (n, ...) floats (flattened by the head), labels integers in [0, num_classes).
    Raises FloatingPointError naming the update at which the loss stopped being finite.
    """
    train_features, train_labels = _check_split("train", train_features, train_labels, num_classes)
    test_features, test_labels = _check_split("test", test_features, test_labels, num_classes)
    if train_features.shape[1:] != test_features.shape[1:]:
        raise ValueError(f"train features {train_features.shape[1:]} and test features {test_features.shape[1:]} differ in shape")
    trainer = _head_trainer(train_features.shape, num_classes, settings)
    num_train = len(train_features)
    epochs = settings.epochs_for(num_train)

    def start_epoch(epoch):
        # The learning rate is a variable read by the traced loop: changing it does not retrace.
        trainer.optimizer.learning_rate = settings.learning_rate_in_epoch(epoch, num_train)
        return settings.learning_rate_in_epoch(epoch, num_train)

    # One call per epoch, its updates in a graph loop (kphases.epochs): bitwise the same head as
    # one call per batch, 2.3x faster for 1,580 updates of a 512-d head on 2 CPU cores (measured).
    update_steps = train_epochs(
        trainer.train_step,
        (train_features, train_labels),
        settings.batch_size,
        epochs,
        settings.seed,
        "linear head",
        start_epoch,
        trainer.epoch_updates,
    )

    def evaluate(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        correct_total, loss_total = 0.0, 0.0
        for start, stop in batch_bounds(len(features), settings.batch_size):
            correct, loss_sum = trainer.evaluate_batch(features[start:stop], labels[start:stop])
            correct_total += float(correct)
            loss_total += float(loss_sum)
        return correct_total / len(features), loss_total / len(features)

    test_accuracy, test_loss = evaluate(test_features, test_labels)
    train_accuracy, train_loss = evaluate(train_features, train_labels)
    return HeadResult(
        test_accuracy=test_accuracy,
        train_accuracy=train_accuracy,
        test_loss=test_loss,
        train_loss=train_loss,
        update_steps=update_steps,
        epochs=epochs,
    )


class _HeadTrainer:
    """A linear head, its optimiser and their traced epoch and evaluation, reset to a fresh start per fit.

    Tracing the epoch loop costs more than a thousand updates of a small head, and every snapshot, layer
    and target trains a head of the same shape: the same traced functions are reused, with the head's
    weights set back to their seeded initial values and the optimiser's momentum and update count to zero
    before each fit, which is exactly the state of a newly built head and optimiser (tests/test_probes.py
    checks the results are bitwise those of a fresh trace).
    """

    def __init__(self, train_shape: tuple[int, ...], num_classes: int, settings: ProbeSettings):
        self.head = build_linear_head(train_shape[1:], num_classes, seed=settings.seed)
        self.initial_weights = self.head.get_weights()
        self.optimizer = TorchSGD(learning_rate=settings.learning_rate, momentum=settings.momentum)
        self.optimizer.build(self.head.trainable_variables)
        feature_spec = tf.TensorSpec((None, *train_shape[1:]), tf.float32)
        label_spec = tf.TensorSpec((None,), tf.int32)
        head, optimizer = self.head, self.optimizer

        def train_step(features, labels):
            with tf.GradientTape() as tape:
                logits = head(features, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            gradients = tape.gradient(loss, head.trainable_variables)
            optimizer.apply_gradients(zip(gradients, head.trainable_variables))
            return loss

        @tf.function(input_signature=[feature_spec, label_spec])
        def evaluate_batch(features_batch, labels_batch):
            logits = head(features_batch, training=False)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels_batch, logits=logits)
            # argmax returns the first maximal class on ties, as torch.max does in the authors' code.
            correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels_batch)
            return tf.reduce_sum(tf.cast(correct, tf.float64)), tf.reduce_sum(tf.cast(losses, tf.float64))

        self.train_step = train_step
        self.evaluate_batch = evaluate_batch
        self.epoch_updates = epoch_function(
            train_step, [tf.TensorSpec(train_shape, tf.float32), tf.TensorSpec(train_shape[:1], tf.int32)], settings.batch_size
        )

    def reset(self) -> None:
        self.head.set_weights(self.initial_weights)
        for momentum in self.optimizer.momentums:
            momentum.assign(tf.zeros_like(momentum))
        self.optimizer.iterations.assign(0)


_HEAD_TRAINERS_KEPT = 8  # shapes kept traced: a figure measures a handful of widths and targets
_head_trainers: "collections.OrderedDict[tuple, _HeadTrainer]" = collections.OrderedDict()


def _head_trainer(train_shape: tuple[int, ...], num_classes: int, settings: ProbeSettings) -> _HeadTrainer:
    """The traced trainer for heads of this shape and these settings, reset to a fresh start."""
    key = (tuple(train_shape), int(num_classes), settings.seed, settings.learning_rate, settings.momentum, settings.batch_size)
    trainer = _head_trainers.pop(key, None)
    if trainer is None:
        trainer = _HeadTrainer(tuple(train_shape), num_classes, settings)
    else:
        trainer.reset()
    _head_trainers[key] = trainer
    while len(_head_trainers) > _HEAD_TRAINERS_KEPT:
        _head_trainers.popitem(last=False)
    return trainer


def clear_head_trainers() -> None:
    """Forget the traced heads (`benchmarks.measure` times a fit with and without them)."""
    _head_trainers.clear()


def color_dominance_labels(images: np.ndarray) -> np.ndarray:
    """The colour-dominance target: 0, 1 or 2 for the channel (R, G, B) with the largest sum.

    The sum is over all pixels of each channel of the image as given, which in the protocol is
    the NORMALISED image (x - mean) / std, NHWC, as in the authors' code: their labels are
    computed from the loader's normalised tensors, so an image is "red" when its red channel is
    the most above the dataset's average red, not when it is the reddest in raw pixels. Ties go
    to the lowest channel index (R before G before B), numpy's and torch.argmax's rule. Sums are
    taken in float64, so labels of near-ties may differ from the authors' float32/float16 sums.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"colour dominance needs RGB images of shape (n, H, W, 3), got shape {images.shape}")
    channel_sums = images.sum(axis=(1, 2), dtype=np.float64)
    return np.argmax(channel_sums, axis=1).astype(np.int64)


def _check_split(split: str, features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim < 2:
        raise ValueError(f"{split}_features must be (n, ...) with one row per sample, got shape {features.shape}")
    if labels.shape != (len(features),):
        raise ValueError(f"{split}_labels must have shape ({len(features)},) to match {split}_features, got {labels.shape}")
    if len(features) == 0:
        raise ValueError(f"the {split} split is empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{split}_labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{split}_labels must lie in [0, {num_classes}) for num_classes={num_classes}, got values from {labels.min()} to {labels.max()}"
        )
    if not np.issubdtype(features.dtype, np.floating) or not np.isfinite(np.sum(features, dtype=np.float64)):
        raise ValueError(f"{split}_features must be finite floats, got dtype {features.dtype} (or NaN/inf values)")
    return features.astype(np.float32, copy=False), labels.astype(np.int32)
