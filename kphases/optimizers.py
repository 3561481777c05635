"""The PyTorch-matching optimisers: torch.optim.Adam and torch.optim.SGD's updates as Keras optimisers.

The authors train their decoders with torch.optim.Adam (coupled L2 weight decay) and their probe
and transfer heads with torch.optim.SGD (momentum in PyTorch's convention). Keras' own Adam and
SGD differ from those in where epsilon and weight decay enter and in how momentum meets a
changing learning rate, so the decoders (`kphases.decoders`) and heads (`kphases.probes`) use
these instead. Both run TensorFlow's fused kernels (TensorFlow backend only); the docstrings say
how each maps onto PyTorch's update.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class TorchAdam(keras.optimizers.Adam):
    """torch.optim.Adam(lr, betas, eps, weight_decay) as a Keras optimizer (amsgrad=False).

    Per variable p with gradient g, at update t = 1, 2, ...:
        g <- g + l2_coefficient * p        (coupled L2: PyTorch's Adam weight_decay)
        m <- beta_1 m + (1 - beta_1) g;  v <- beta_2 v + (1 - beta_2) g^2
        p <- p - learning_rate / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)
    Keras' own `weight_decay` (decoupled, AdamW-style) is deliberately not used.

    The update runs as TensorFlow's fused ResourceApplyAdam kernel (one pass over each variable:
    a whole linear-decoder step is 1.5x faster than with Keras' Adam on two CPU cores). That
    kernel adds its epsilon before the bias correction, as Keras does; passing it
    epsilon * sqrt(1 - beta_2^t) turns its update into PyTorch's exactly. TensorFlow backend only.
    """

    def __init__(
        self,
        learning_rate: float = 3e-4,
        l2_coefficient: float = 1e-5,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,  # PyTorch's default (Keras' is 1e-7)
        name: str = "torch_adam",
        **kwargs,
    ) -> None:
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name, **kwargs)
        self.l2_coefficient = l2_coefficient

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = tf.cast(gradient, dtype) + tf.cast(self.l2_coefficient, dtype) * tf.convert_to_tensor(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), step)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype) * tf.sqrt(1 - beta_2_power),
            grad=gradient,
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "l2_coefficient": self.l2_coefficient}


class TorchSGD(keras.optimizers.SGD):
    """torch.optim.SGD(lr, momentum) as a Keras optimizer (no dampening, no Nesterov, no decay).

    PyTorch: buffer <- momentum * buffer + g; p <- p - learning_rate * buffer, which is exactly
    TensorFlow's fused ResourceApplyMomentum kernel, used here (TensorFlow backend only).
    Keras' SGD keeps velocity <- momentum * velocity - learning_rate * g instead; the two agree
    while the learning rate is constant and differ for a few dozen updates after it changes.
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9, name: str = "torch_sgd", **kwargs) -> None:
        if momentum <= 0:
            raise ValueError(f"TorchSGD needs a positive momentum, got {momentum!r}; use keras.optimizers.SGD without momentum")
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyMomentum(
            var=variable.handle,
            accum=self.momentums[self._get_variable_index(variable)].handle,
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
        )
