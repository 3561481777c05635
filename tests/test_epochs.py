"""An epoch as one graph call (kphases.epochs): the same model as one call per update, bitwise."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kphases.data import batch_bounds
from kphases.epochs import epoch_function, train_epochs


def _problem(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((count, 7)).astype(np.float32)
    targets = rng.standard_normal((count, 3)).astype(np.float32)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    optimizer.build(model.trainable_variables)
    return features, targets, model, optimizer


def _loss(model, features, targets):
    return tf.reduce_mean(tf.square(model(features, training=True) - targets))


@pytest.mark.parametrize("count", [300, 256, 5])  # a partial last batch, whole batches only, one partial batch
def test_graph_epochs_train_the_same_model_as_one_call_per_update(count):
    batch_size, epochs, seed = 64, 3, 11
    features, targets, model, optimizer = _problem(count)

    def update(batch_features, batch_targets):
        with tf.GradientTape() as tape:
            loss = _loss(model, batch_features, batch_targets)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    updates = train_epochs(update, (features, targets), batch_size, epochs, seed, "test model", lambda epoch: 0.01)

    _, _, twin, twin_optimizer = _problem(count)

    @tf.function
    def twin_update(batch_features, batch_targets):
        with tf.GradientTape() as tape:
            loss = _loss(twin, batch_features, batch_targets)
        twin_optimizer.apply_gradients(zip(tape.gradient(loss, twin.trainable_variables), twin.trainable_variables))

    shuffler, twin_updates = np.random.default_rng(seed), 0
    for _ in range(epochs):
        order = shuffler.permutation(count)
        for start, stop in batch_bounds(count, batch_size):
            twin_update(features[order[start:stop]], targets[order[start:stop]])
            twin_updates += 1
    assert updates == twin_updates == epochs * -(-count // batch_size)
    for ours, theirs in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_start_epoch_runs_before_every_epoch_and_a_non_finite_loss_names_its_update():
    started = []

    def update(indices):  # the loss of a batch is its largest index: infinite once index 9 is in it
        largest = tf.reduce_max(indices)
        return tf.where(largest >= 9, np.inf, tf.cast(largest, tf.float32))

    with pytest.raises(FloatingPointError, match=r"probe loss is inf at update (\d+) \(epoch 1\); learning_rate=0.5") as error:
        train_epochs(update, (np.arange(10),), 3, 2, 0, "probe", lambda epoch: started.append(epoch) or 0.5)
    order = np.random.default_rng(0).permutation(10)
    first_bad = next(index for index, (start, stop) in enumerate(batch_bounds(10, 3)) if 9 in order[start:stop]) + 1
    assert f"at update {first_bad} " in str(error.value)
    assert started == [1]
    assert (
        train_epochs(lambda indices: tf.constant(0.0), (np.arange(10),), 3, 2, 0, "probe", lambda epoch: started.append(epoch) or 0.5) == 8
    )
    assert started == [1, 1, 2]


def test_empty_or_mismatched_epochs_are_refused_naming_the_values():
    def zero(*batch):
        return tf.constant(0.0)

    with pytest.raises(ValueError, match=r"got \[\(0, 3\)\] and batch_size=4"):
        epoch_function(zero, [tf.TensorSpec((0, 3), tf.float32)], 4)
    with pytest.raises(ValueError, match=r"got \[\(4,\)\] and batch_size=0"):
        epoch_function(zero, [tf.TensorSpec((4,), tf.float32)], 0)
    with pytest.raises(ValueError, match=r"got \[\(4, 3\), \(5,\)\] and batch_size=2"):
        train_epochs(zero, (np.zeros((4, 3)), np.zeros(5)), 2, 1, 0, "probe", lambda epoch: 0.1)
    with pytest.raises(ValueError, match=r"got \[\] and batch_size=2"):
        epoch_function(zero, [], 2)


def test_the_arrays_are_arguments_of_the_traced_epoch_not_captured_copies():
    # A captured copy per fit stayed in TensorFlow's function registry after the fit (the quick
    # run's peak memory grew from 2.6 to 8.6 GB): the epoch's graph captures nothing of its own.
    rows = np.arange(40, dtype=np.float32).reshape(20, 2)  # row i holds 2i and 2i + 1: sum 4i + 1
    epoch = epoch_function(lambda batch: tf.reduce_sum(batch), [tf.TensorSpec((20, 2), tf.float32)], 8)
    assert len(epoch.get_concrete_function().graph.captures) == 0
    np.testing.assert_array_equal(epoch(tf.range(20, dtype=tf.int64), rows).numpy(), [120, 376, 284])
