"""Train the project's Keras "F" net exactly like `theory.simulate`, to check that the two agree.

Serves the claim that the theory's simulator is the paper's single-layer network: the Keras model
is `kphases.models.build_model(ModelConfig(architecture="linear"))` (Flatten "penultimate", then a
bias-free Dense "logits"), started from the simulator's W0 (kernel = W0^T), trained by plain SGD
with full-batch `tf.GradientTape` steps on the mean sparse cross-entropy, in float32. Keras and
TensorFlow are imported inside the function, so `import theory` stays free of TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def train_linear_keras_net(
    inputs: np.ndarray, labels: np.ndarray, initial_weights: np.ndarray, learning_rate: float, steps: Sequence[int]
) -> np.ndarray:
    """(len(steps), C, d) weights W_t of the Keras "F" net, measured before the update of each step."""
    import keras
    import tensorflow as tf

    from kphases.models import ModelConfig, build_model

    num_classes, input_dim = initial_weights.shape
    if inputs.shape[1] != input_dim:
        raise ValueError(f"inputs have {inputs.shape[1]} features but initial_weights expects {input_dim}")
    if list(steps) != sorted(set(steps)) or steps[0] < 0:
        raise ValueError(f"steps must be increasing non-negative integers, got {list(steps)}")
    model = build_model(ModelConfig(architecture="linear"), input_shape=(input_dim, 1, 1), num_classes=num_classes)
    model.get_layer("logits").set_weights([initial_weights.T.astype(np.float32)])
    images = tf.constant(inputs.reshape(-1, input_dim, 1, 1), dtype=tf.float32)
    targets = tf.constant(labels, dtype=tf.int32)
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_steps(count: tf.Tensor) -> None:
        # The loop runs inside one graph: one Python call per measurement interval, not per step.
        for _ in tf.range(count):
            with tf.GradientTape() as tape:
                loss = loss_function(targets, model(images, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    recorded = []
    previous = 0
    for measure_step in steps:
        if measure_step > previous:
            train_steps(tf.constant(measure_step - previous))
        previous = measure_step
        recorded.append(model.get_layer("logits").get_weights()[0].T.astype(np.float64))
    return np.array(recorded)
