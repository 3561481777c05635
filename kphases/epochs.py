"""One epoch of minibatch updates as one TensorFlow graph call.

The measurement instruments (linear probe and transfer heads in `kphases.probes`, trained decoders
in `kphases.decoders`) are small models trained for thousands of updates at every snapshot. Run
as one Python call per update, the round trip (argument conversion, dispatch, fetching the loss)
costs as much as the update itself. `epoch_function` runs an epoch's updates in a graph loop
instead: the same batches in the same order with the same ops, so the trained model is bitwise
the one the per-update loop gives (tests/test_epochs.py), and the round trip is paid once per
epoch (`python -m benchmarks.measure` times the instruments).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf


def epoch_function(update: Callable[..., tf.Tensor], specs: Sequence[tf.TensorSpec], batch_size: int) -> Callable[..., tf.Tensor]:
    """A traced `epoch(order, *arrays) -> losses`: `update(*batch)` on consecutive batches of `order`.

    `arrays` match `specs` (same leading size `count`); `order` is a permutation of the `count`
    examples (int64, shape (count,)). Each batch gathers `batch_size` consecutive entries of
    `order` from every array (the last batch the remainder, PyTorch's drop_last=False); `update`
    applies one optimiser update to it and returns the batch loss. The epoch returns the losses of
    its updates in order (float32, one per update). The arrays are arguments, not captured
    constants, so a finished training run leaves no copy of its data behind in TensorFlow's
    function registry (a captured copy would stay there, one per fit, for the life of the process).
    """
    count = specs[0].shape[0] if specs else None
    if count is None or count < 1 or batch_size < 1 or any(spec.shape[0] != count for spec in specs):
        raise ValueError(
            f"an epoch needs arrays with the same number of examples >= 1 and batch_size >= 1, "
            f"got {[tuple(spec.shape) for spec in specs]} and batch_size={batch_size}"
        )
    full_batches, remainder = divmod(count, batch_size)

    def batch(arrays, indices):
        return update(*(tf.gather(array, indices) for array in arrays))

    @tf.function(input_signature=[tf.TensorSpec((count,), tf.int64), *specs])
    def epoch(order, *arrays):
        losses = tf.TensorArray(tf.float32, size=full_batches + (1 if remainder else 0))
        for index in tf.range(full_batches):
            losses = losses.write(index, tf.cast(batch(arrays, order[index * batch_size : (index + 1) * batch_size]), tf.float32))
        if remainder:
            losses = losses.write(full_batches, tf.cast(batch(arrays, order[full_batches * batch_size :]), tf.float32))
        return losses.stack()

    return epoch


def train_epochs(
    update: Callable[..., tf.Tensor],
    arrays: Sequence[np.ndarray],
    batch_size: int,
    epochs: int,
    seed: int,
    what: str,
    start_epoch: Callable[[int], float],
    epoch_updates: Callable[..., tf.Tensor] | None = None,
) -> int:
    """`epochs` epochs of `update(*batch)` over the examples of `arrays` (same first dimension),
    each over a fresh permutation drawn from `seed` (numpy's default_rng); return the number of updates.

    `start_epoch(epoch)` (1-based) runs before each epoch and returns its learning rate (it may set
    it: the optimiser reads its learning-rate variable inside the traced loop, no retrace). Raises
    FloatingPointError naming `what`, the update and the epoch at which the loss stopped being finite.
    `epoch_updates`: an `epoch_function(update, ...)` traced earlier for arrays of these shapes and this
    batch size (None: traced here), so that a caller fitting many models of one shape traces once.
    """
    tensors = [tf.convert_to_tensor(array) for array in arrays]
    if epoch_updates is None:
        epoch_updates = epoch_function(update, [tf.TensorSpec(tensor.shape, tensor.dtype) for tensor in tensors], batch_size)
    count = int(tensors[0].shape[0])
    shuffler = np.random.default_rng(seed)
    update_steps = 0
    for epoch in range(1, epochs + 1):
        learning_rate = start_epoch(epoch)
        losses = epoch_updates(shuffler.permutation(count), *tensors).numpy()
        finite = np.isfinite(losses)
        if not finite.all():
            raise FloatingPointError(
                f"{what} loss is {losses[~finite][0]} at update {update_steps + int(np.argmin(finite)) + 1} "
                f"(epoch {epoch}); learning_rate={learning_rate}"
            )
        update_steps += len(losses)
    return update_steps
