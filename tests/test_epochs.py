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
    constant_features, constant_targets = tf.constant(features), tf.constant(targets)

    def update(indices):
        with tf.GradientTape() as tape:
            loss = _loss(model, tf.gather(constant_features, indices), tf.gather(constant_targets, indices))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    updates = train_epochs(update, count, batch_size, epochs, seed, "test model", lambda epoch: 0.01)

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
        train_epochs(update, 10, 3, 2, 0, "probe", lambda epoch: started.append(epoch) or 0.5)
    order = np.random.default_rng(0).permutation(10)
    first_bad = next(index for index, (start, stop) in enumerate(batch_bounds(10, 3)) if 9 in order[start:stop]) + 1
    assert f"at update {first_bad} " in str(error.value)
    assert started == [1]
    assert train_epochs(lambda indices: tf.constant(0.0), 10, 3, 2, 0, "probe", lambda epoch: started.append(epoch) or 0.5) == 8
    assert started == [1, 1, 2]


def test_empty_epochs_are_refused_naming_the_values():
    with pytest.raises(ValueError, match="count=0, batch_size=4"):
        epoch_function(lambda indices: tf.constant(0.0), 0, 4)
    with pytest.raises(ValueError, match="count=4, batch_size=0"):
        epoch_function(lambda indices: tf.constant(0.0), 4, 0)
