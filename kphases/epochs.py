"""One epoch of minibatch updates as one TensorFlow graph call.

The measurement instruments (linear probe and transfer heads in `kphases.probes`, trained decoders
in `kphases.decoders`) are small models trained for thousands of updates at every snapshot. Run
as one Python call per update, the round trip (argument conversion, dispatch, fetching the loss)
costs as much as the update itself. `epoch_function` runs an epoch's updates in a graph loop
instead: the same batches in the same order with the same ops, so the trained model is bitwise
the one the per-update loop gives (tests/test_epochs.py), about twice as fast for the instruments'
sizes on 2 CPU cores (`python -m benchmarks.measure`: the authors' linear decoder, 7,840 updates,
47 s before, 24 s after).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def epoch_function(update: Callable[[tf.Tensor], tf.Tensor], count: int, batch_size: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """A traced `epoch(order) -> losses`: `update(indices)` on consecutive batches of `order`.

    `order` is a permutation of `count` examples (int64, shape (count,)); batches have
    `batch_size` examples, the last one the remainder (PyTorch's drop_last=False). `update`
    gathers its batch by the indices, applies one optimiser update and returns the batch loss;
    the epoch returns the losses of its updates in order (float32, one per update).
    """
    if count < 1 or batch_size < 1:
        raise ValueError(f"an epoch needs count >= 1 and batch_size >= 1, got count={count}, batch_size={batch_size}")
    full_batches, remainder = divmod(count, batch_size)

    @tf.function(input_signature=[tf.TensorSpec((count,), tf.int64)])
    def epoch(order):
        losses = tf.TensorArray(tf.float32, size=full_batches + (1 if remainder else 0))
        for index in tf.range(full_batches):
            losses = losses.write(index, tf.cast(update(order[index * batch_size:(index + 1) * batch_size]), tf.float32))
        if remainder:
            losses = losses.write(full_batches, tf.cast(update(order[full_batches * batch_size:]), tf.float32))
        return losses.stack()

    return epoch


def train_epochs(update: Callable[[tf.Tensor], tf.Tensor], count: int, batch_size: int, epochs: int, seed: int,
                 what: str, start_epoch: Callable[[int], float]) -> int:
    """`epochs` epochs of `update` over `count` examples, each over a fresh permutation drawn from
    `seed` (numpy's default_rng); return the number of updates.

    `start_epoch(epoch)` (1-based) runs before each epoch and returns its learning rate (it may set
    it: the optimiser reads its learning-rate variable inside the traced loop, no retrace). Raises
    FloatingPointError naming `what`, the update and the epoch at which the loss stopped being finite.
    """
    epoch_updates = epoch_function(update, count, batch_size)
    shuffler = np.random.default_rng(seed)
    update_steps = 0
    for epoch in range(1, epochs + 1):
        learning_rate = start_epoch(epoch)
        losses = epoch_updates(shuffler.permutation(count)).numpy()
        finite = np.isfinite(losses)
        if not finite.all():
            raise FloatingPointError(f"{what} loss is {losses[~finite][0]} at update {update_steps + int(np.argmin(finite)) + 1} "
                                     f"(epoch {epoch}); learning_rate={learning_rate}")
        update_steps += len(losses)
    return update_steps
