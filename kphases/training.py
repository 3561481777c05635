"""The classifier training loop: iteration-exact, snapshotting, deterministic, resumable.

Keras guide style ("Writing a training loop from scratch"): one `tf.GradientTape` step inside
`tf.function`. Like open_lth, the loop itself stays simple: before every step it calls each
callback with one fixed signature, `callback(run, step, model, optimizer)`; snapshots, classifier
metrics and resume checkpoints are such callbacks, at the schedule's steps (PROTOCOL.md: the
measurement at iteration s happens before update s, so snapshot 0 is the initial network and
snapshot s holds the weights after s updates).

Matching the authors' PyTorch code on purpose:
- batches of an epoch come from a fresh seeded permutation, and the last batch is smaller
  (DataLoader's drop_last=False), so CIFAR-10 has 391 iterations per epoch;
- weight decay is L2 added to the gradient (PyTorch SGD's coupled weight_decay), on every
  trainable variable.
Departure: Keras' SGD keeps its momentum buffer in units of the learning-rate-scaled step
(m = mu m - lr g) where PyTorch keeps it unscaled (v = mu v + g; w -= lr v). The two are identical
at constant learning rate (the phases paper); at a learning-rate drop (Frankle et al.) Keras'
buffer carries the old rate for the ~10 steps it takes to decay.

Determinism: `keras.utils.set_random_seed` plus `tf.config.experimental.enable_op_determinism`,
so a run on CPU gives bit-identical weights for a seed, and a run resumed from its checkpoint
ends bit-identical to an uninterrupted one (tested by killing a real run).

Devices (`train(devices=...)`, `--devices GPU:0,GPU:1`): the model, optimizer and step are built in
a `tf.distribute` strategy's scope, `MirroredStrategy` over the named devices or the default
strategy. The config's batch size stays the global batch: each step's batch is split across the
replicas, every replica's loss is its examples' summed cross-entropy over the global batch size, the
optimizer all-reduces (sums) the gradients, and one update is made per global batch, so the
snapshot steps, the data order and the config hash do not depend on the devices. BatchNorm layers
are switched to synchronised statistics over the replicas, so a batch is normalised as one batch
and the result matches a single-device run up to reduction order. The devices are recorded in the
run's provenance.

Mixed precision (`TrainingConfig.precision = "mixed_float16"`): the model is built under Keras'
mixed_float16 policy (float16 activations, float32 variables, so snapshots stay float32), logits and
loss are computed in float32, and the optimizer is wrapped in a `LossScaleOptimizer` (an update
whose scaled gradients overflow is skipped and the scale halved; the step still counts, so the
snapshot steps stay those of the schedule). Allowed on CPU, with a warning: it is slow there.

TensorBoard (`train(tensorboard=True)`, `--tensorboard`): loss and learning rate per step and the
classifier metrics per snapshot, under `<run>/tensorboard/train` (`kphases.tensorboard`).
"""
from __future__ import annotations

import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kphases.config import LineageConfig, RunConfig, parse_steps
from kphases.data import Dataset, batch_bounds, load_dataset
from kphases.models import build_model
from kphases.schedule import snapshot_steps
from kphases.store import Run
from kphases.tensorboard import Summaries, TensorBoardOption, training_summaries

Callback = Callable[[Run, int, keras.Model, keras.optimizers.Optimizer], None]
EVAL_BATCH_SIZE = 512
PRECISIONS = ("float32", "mixed_float16")
Devices = str | Sequence[str] | tf.distribute.Strategy | None


class TrainingError(RuntimeError):
    """Training cannot go on (for example a NaN loss); the message names the step."""


class DeviceError(ValueError):
    """The requested devices cannot train this run (unknown, repeated, or more replicas than examples)."""


@dataclass(frozen=True)
class Plan:
    """The iteration arithmetic of a run, derived from its config and dataset size."""

    steps_per_epoch: int
    last_iteration: int
    snapshot_steps: tuple[int, ...]
    lr_boundaries: tuple[int, ...]


@dataclass(frozen=True)
class Start:
    """A run that does not begin at the seed's initialisation (kphases.early_phase builds these).

    `weights` (in `model.get_weights()` order) replace the fresh network; training continues at
    `step` (learning-rate schedule and data order, as open_lth's rewinding does); `masks` maps a
    variable's path to a 0/1 array that is multiplied in after every optimiser update, so a pruned
    weight is exactly zero at every step.
    """

    weights: list[np.ndarray]
    step: int = 0
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def make_plan(config: RunConfig, train_size: int) -> Plan:
    training = config.training
    if training.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {training.batch_size}")
    steps_per_epoch = math.ceil(train_size / training.batch_size)
    last_iteration = parse_steps(training.duration, steps_per_epoch)
    if last_iteration < 1:
        raise ValueError(f"duration {training.duration!r} gives {last_iteration} iterations; a run needs at least 1")
    boundaries = tuple(parse_steps(milestone, steps_per_epoch) for milestone in training.lr_milestones)
    if list(boundaries) != sorted(set(boundaries)) or any(not 0 < b < last_iteration for b in boundaries):
        raise ValueError(f"lr_milestones {training.lr_milestones} must be increasing steps inside the run (1..{last_iteration - 1})")
    if training.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {training.precision!r}; valid precisions: {list(PRECISIONS)}")
    return Plan(steps_per_epoch, last_iteration, tuple(snapshot_steps(config.schedule, last_iteration)), boundaries)


def batch_indices(step: int, train_size: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the examples in iteration `step`: epoch `step // steps_per_epoch` is a seeded permutation."""
    steps_per_epoch = math.ceil(train_size / batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    permutation = np.random.default_rng([seed, epoch]).permutation(train_size)
    return permutation[position * batch_size:(position + 1) * batch_size]


def augment_batch(images: np.ndarray, step: int, seed: int) -> np.ndarray:
    """Random horizontal flips and 4-pixel crops (zero-padded), seeded by the step (Frankle et al.)."""
    rng = np.random.default_rng([seed, step, 1])
    count, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    rows, cols = rng.integers(0, 9, size=count), rng.integers(0, 9, size=count)
    flips = rng.random(count) < 0.5
    out = np.empty_like(images)
    for index in range(count):
        crop = padded[index, rows[index]:rows[index] + height, cols[index]:cols[index] + width]
        out[index] = crop[:, ::-1] if flips[index] else crop
    return out


def make_optimizer(config: RunConfig, plan: Plan) -> keras.optimizers.Optimizer:
    training = config.training
    learning_rate = training.learning_rate
    if plan.lr_boundaries:
        values = [training.learning_rate / 10**drop for drop in range(len(plan.lr_boundaries) + 1)]
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(list(plan.lr_boundaries), values)
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=training.momentum)
    if training.precision == "mixed_float16":
        # Keras 3 custom loops scale the loss themselves (LossScaleOptimizer.scale_loss, see _make_step).
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


# --- devices and precision -------------------------------------------------------------------------

def visible_devices() -> list[str]:
    """The logical devices TensorFlow sees, as 'CPU:0', 'GPU:1', ..."""
    return [_device_name(device.name) for device in tf.config.list_logical_devices()]


def _device_name(text: str) -> str:
    name = text.strip()
    position = name.lower().rfind("device:")  # '/job:localhost/replica:0/task:0/device:CPU:0' -> 'CPU:0'
    name = name[position + len("device:"):] if position >= 0 else name.lstrip("/")
    kind, _, index = name.rpartition(":")
    return f"{kind.upper()}:{index}" if kind else name.upper()


# One MirroredStrategy per device set for the life of the process: two strategies over the same devices
# number their collective all-reduces alike, and TensorFlow's collective executor then matches a new
# run's all-reduce with an old run's of another shape ("Shape mismatch in the collective instance").
_MIRRORED_STRATEGIES: dict[tuple[str, ...], tf.distribute.Strategy] = {}


def make_strategy(devices: Devices = None) -> tf.distribute.Strategy:
    """MirroredStrategy over `devices` ('GPU:0,GPU:1' or a list; a strategy is returned as it is), else the default.

    An unknown or repeated device is an error listing the visible ones.
    """
    if isinstance(devices, tf.distribute.Strategy):
        return devices
    if isinstance(devices, str):
        devices = devices.split(",")
    requested = [device for device in (devices or ()) if str(device).strip()]
    if not requested:
        return tf.distribute.get_strategy()
    names = [_device_name(str(device)) for device in requested]
    visible = visible_devices()
    unknown = [str(device).strip() for device, name in zip(requested, names) if name not in visible]
    if unknown:
        raise DeviceError(f"unknown device(s) {unknown}; visible devices: {visible} "
                          "(give them as GPU:0,GPU:1; for several CPU devices see tf.config.set_logical_device_configuration)")
    if len(set(names)) != len(names):
        raise DeviceError(f"devices {names} name a device more than once")
    key = tuple(names)
    if key not in _MIRRORED_STRATEGIES:
        _MIRRORED_STRATEGIES[key] = tf.distribute.MirroredStrategy(devices=[f"/device:{name}" for name in names])
    return _MIRRORED_STRATEGIES[key]


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """'default' for TensorFlow's default (no-op) strategy, else the class name, e.g. 'MirroredStrategy'."""
    name = type(strategy).__name__
    return "default" if name == "_DefaultDistributionStrategy" else name


def strategy_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """The devices a strategy computes on ('CPU:0', ...); the default strategy: where TensorFlow places ops."""
    if strategy_name(strategy) == "default":
        return ["GPU:0"] if tf.config.list_logical_devices("GPU") else ["CPU:0"]
    return [_device_name(device) for device in strategy.extended.worker_devices]


def build_training_model(config: RunConfig, image_shape, num_classes: int) -> keras.Model:
    """The run's network under its precision's dtype policy (the global policy is restored afterwards)."""
    precision = config.training.precision
    if precision == "float32":
        return build_model(config.model, image_shape, num_classes)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return build_model(config.model, image_shape, num_classes)
    finally:
        keras.config.set_dtype_policy(previous)


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Classifier accuracy and mean cross-entropy in inference mode (stored BatchNorm statistics)."""
    correct, loss_sum = 0, 0.0
    for start, stop in batch_bounds(len(labels), EVAL_BATCH_SIZE):
        logits = _predict(model, images[start:stop])
        batch_labels = labels[start:stop]
        loss_sum += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(batch_labels, logits, from_logits=True)))
        correct += int(np.sum(np.argmax(logits, axis=-1) == batch_labels))
    return {"accuracy": correct / len(labels), "loss": loss_sum / len(labels)}


def _predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    # One traced inference function per model, reused across batches and snapshots.
    function = getattr(model, "_kphases_predict", None)
    if function is None:
        function = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), reduce_retracing=True)
        model._kphases_predict = function
    return function(images).numpy()


# --- standard callbacks ---------------------------------------------------------------------------

def snapshot_callback(dataset: Dataset, plan: Plan, summaries: Summaries | None = None) -> Callback:
    """At each schedule step: save the weights and log classifier train/test accuracy and loss (also to TensorBoard)."""
    scheduled = set(plan.snapshot_steps)

    def callback(run: Run, step: int, model: keras.Model, optimizer) -> None:
        if step not in scheduled or step in run.snapshot_steps():
            return
        rows = []
        for split, images, labels in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
            for metric, value in evaluate(model, images, labels).items():
                rows.append({"step": step, "split": split, "metric": f"classifier_{metric}", "value": value})
        rows += label_noise_rows(model, dataset, step)
        run.append_metrics(rows)
        run.save_snapshot(model, step)
        if summaries is not None:
            summaries.scalars(step, {f"{row['metric']}/{row['split']}": row["value"] for row in rows})
            summaries.flush()

    return callback


def label_noise_rows(model: keras.Model, dataset: Dataset, step: int) -> list[dict]:
    """Classifier accuracy on the clean and on the flipped train examples of a run with label noise
    (splits train_clean, train_flipped: against the label trained on; train_flipped_true: against the
    true label); no rows without label noise. One extra inference pass over the train split."""
    if dataset.y_train_clean is None:
        return []
    flipped = dataset.flipped
    predicted = np.concatenate([np.argmax(_predict(model, dataset.x_train[start:stop]), axis=-1)
                                for start, stop in batch_bounds(len(flipped), EVAL_BATCH_SIZE)])
    values = {"train_clean": np.mean(predicted[~flipped] == dataset.y_train[~flipped]),
              "train_flipped": np.mean(predicted[flipped] == dataset.y_train[flipped]),
              "train_flipped_true": np.mean(predicted[flipped] == dataset.y_train_clean[flipped])}
    return [{"step": step, "split": split, "metric": "classifier_accuracy", "value": float(value)} for split, value in values.items()]


def checkpoint_callback(plan: Plan, every: int) -> Callback:
    """Resume state at every schedule step and every `every` steps (0: schedule steps only)."""
    scheduled = set(plan.snapshot_steps)

    def callback(run: Run, step: int, model: keras.Model, optimizer) -> None:
        if step == 0 or step == plan.last_iteration:
            return
        if step in scheduled or (every and step % every == 0):
            run.save_checkpoint(model, [variable.numpy() for variable in optimizer.variables], step)

    return callback


# --- the loop -------------------------------------------------------------------------------------

def set_determinism(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(config: RunConfig, runs_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
          progress: bool = True, checkpoint_every: int = 1000, callbacks: Sequence[Callback] = (),
          dataset: Dataset | None = None, start: Start | None = None, devices: Devices = None,
          tensorboard: TensorBoardOption = False) -> Run:
    """Train the run `config` describes into its run directory; return the run.

    A complete run is returned as it is; a partial one resumes from its checkpoint. `dataset`
    (already loaded from `config.data`) avoids loading the same data twice. `start`: weights,
    first step and masks of a run with a lineage (built by `kphases.early_phase.train_lineage`).
    `devices`: train data-parallel on these devices ('GPU:0,GPU:1', a list, or a
    `tf.distribute.Strategy`); None: the default strategy. The result does not depend on them
    beyond reduction order (see the module docstring). `tensorboard`: True writes summaries to
    `<run>/tensorboard/train`, a directory to `<directory>/<run hash>/train` (`kphases.tensorboard`).
    """
    if (config.lineage != LineageConfig()) != (start is not None):
        raise ValueError(f"a run with a lineage ({config.lineage}) needs its start (kphases.early_phase.train_lineage builds it), "
                         f"and only such a run takes one; got start={'given' if start is not None else 'None'}")
    strategy = make_strategy(devices)  # before anything else: an unknown device is named before any work
    run = Run.create(runs_dir, config)
    if run.complete:
        return run
    dataset = dataset or load_dataset(config.data, data_dir)
    plan = make_plan(config, len(dataset.y_train))
    training = config.training
    replicas = strategy.num_replicas_in_sync
    smallest_batch = len(dataset.y_train) % training.batch_size or training.batch_size
    if smallest_batch < replicas:
        raise DeviceError(f"the smallest batch of an epoch has {smallest_batch} examples, fewer than the {replicas} replicas "
                         f"({strategy_devices(strategy)}): every replica needs at least one; use fewer devices")
    compute_devices = strategy_devices(strategy)
    if training.precision == "mixed_float16" and not any(device.startswith("GPU") for device in compute_devices):
        warnings.warn(f"precision mixed_float16 on {compute_devices}: float16 is slow on CPUs (no float16 units); "
                      "it is meant for GPUs", stacklevel=2)
    set_determinism(training.seed)
    with strategy.scope():
        model = build_training_model(config, dataset.image_shape, dataset.num_classes)
        if replicas > 1:
            _synchronise_batchnorm(model)
        optimizer = make_optimizer(config, plan)
        optimizer.build(model.trainable_variables)

    start_step = 0
    if start is not None:
        model.set_weights(start.weights)
        _apply_masks(model, start.masks)
        start_step = start.step
        optimizer.iterations.assign(start.step)  # the learning-rate schedule continues from the start step
    resumed = run.load_checkpoint(model)
    if resumed is not None:
        start_step, optimizer_variables = resumed
        for variable, value in zip(optimizer.variables, optimizer_variables, strict=True):
            variable.assign(value)
    elif run.snapshot_steps():
        # Snapshots without a checkpoint: only possible if the run died right after snapshot 0.
        if run.snapshot_steps() != [start_step]:
            raise TrainingError(f"run {run.directory} has snapshots {run.snapshot_steps()} but no resume checkpoint")
    run.update_manifest(schedule=list(plan.snapshot_steps), last_iteration=plan.last_iteration,
                        steps_per_epoch=plan.steps_per_epoch, complete=False)
    run.update_provenance(data=dataset.describe(), python=platform.python_version(), tensorflow=tf.__version__,
                          keras=keras.__version__, numpy=np.__version__, machine=platform.node(),
                          cpu_count=os.cpu_count(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          strategy=strategy_name(strategy), devices=compute_devices, replicas=replicas, precision=training.precision)

    with strategy.scope():
        step_function = _make_step(model, optimizer, training.weight_decay, start.masks if start else None, strategy)
    summaries = training_summaries(run, tensorboard)
    try:
        all_callbacks = [snapshot_callback(dataset, plan, summaries), checkpoint_callback(plan, checkpoint_every), *callbacks]
        began = time.perf_counter()
        bar = _progress_bar(progress, plan.last_iteration, start_step, run.name)
        for step in range(start_step, plan.last_iteration + 1):
            for callback in all_callbacks:
                callback(run, step, model, optimizer)
            if step == plan.last_iteration:
                break
            indices = batch_indices(step, len(dataset.y_train), training.batch_size, training.seed)
            images = dataset.x_train[indices]
            if training.augment:
                images = augment_batch(images, step, training.seed)
            if summaries is not None:
                learning_rate = float(tf.convert_to_tensor(optimizer.learning_rate))  # the rate of this update (read before it)
            loss = float(step_function(images, dataset.y_train[indices]))
            if not math.isfinite(loss):
                raise TrainingError(f"loss is {loss} at step {step} of run {run.directory} (learning rate {training.learning_rate}); "
                                    "stopping: nothing after this step would be meaningful")
            if summaries is not None:
                values = {"loss": loss, "learning_rate": learning_rate}
                if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                    values["loss_scale"] = float(tf.convert_to_tensor(optimizer.dynamic_scale))
                summaries.scalars(step, values)
            if bar is not None:
                bar.update(1)
                if step % 16 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}")
        if bar is not None:
            bar.close()
    finally:
        if summaries is not None:
            summaries.close()
    provenance = run.provenance()
    run.update_provenance(train_seconds=provenance.get("train_seconds", 0.0) + time.perf_counter() - began)
    run.update_manifest(complete=True)
    run.remove_checkpoint()  # resume state of a complete run is dead weight (the snapshots stay)
    return run


def _apply_masks(model: keras.Model, masks: dict[str, np.ndarray]) -> None:
    by_path = {variable.path: variable for variable in model.trainable_variables}
    unknown = sorted(set(masks) - set(by_path))
    if unknown:
        raise ValueError(f"masks for unknown variables {unknown}; the model's trainable variables: {sorted(by_path)}")
    for path, mask in masks.items():
        by_path[path].assign(by_path[path].numpy() * mask)


def _synchronise_batchnorm(model: keras.Model) -> None:
    """Batch statistics over the global batch (all replicas), as on one device: Keras' synchronized=True.

    Set before the step is traced; it changes no weight, only how a training batch is normalised.
    """
    def layers(parent):
        for layer in getattr(parent, "layers", ()):
            yield layer
            yield from layers(layer)

    for layer in layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _make_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, weight_decay: float,
               masks: dict[str, np.ndarray] | None = None, strategy: tf.distribute.Strategy | None = None):
    """`step(images, labels) -> mean loss`: one optimiser update on one global batch, under `strategy`.

    One replica (the default strategy): the batch's mean cross-entropy, as in the Keras guide. Several:
    the batch is split across the replicas; each replica's loss is its examples' summed cross-entropy
    over the global batch size, so the optimizer's all-reduce (a sum) gives the global mean gradient.
    Build it in `strategy.scope()`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    variables = model.trainable_variables
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    # Momentum and weight decay would move a pruned weight off zero: re-zero it after every update.
    masked = [(variable, tf.constant(masks[variable.path], dtype=variable.dtype)) for variable in variables
              if masks and variable.path in masks]

    def replica_step(images, labels, global_size):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)  # float32 logits and loss under mixed precision
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.reduce_mean(per_example) if replicas == 1 else tf.reduce_sum(per_example) / global_size
            objective = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(objective, variables)
        if weight_decay:
            # L2 on the gradient; in the units of the scaled gradient, and once over the summed replicas.
            decay = weight_decay
            if scaled:
                decay = decay * optimizer.dynamic_scale
            if replicas > 1:
                decay = decay / replicas
            gradients = [gradient + decay * variable for gradient, variable in zip(gradients, variables)]
        if scaled and replicas > 1:
            gradients = _agree_on_overflow(gradients)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    @tf.function(reduce_retracing=True)
    def step_function(images, labels, global_size):
        losses = strategy.run(replica_step, args=(images, labels, global_size))
        for variable, mask in masked:
            variable.assign(variable * mask)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None) if replicas > 1 else losses

    def step(images, labels):
        global_size = tf.constant(float(len(labels)), tf.float32)
        if replicas == 1:
            return step_function(images, labels, global_size)
        image_shards, label_shards = np.array_split(np.asarray(images), replicas), np.array_split(np.asarray(labels), replicas)
        distributed_images = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(image_shards[context.replica_id_in_sync_group]))
        distributed_labels = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(label_shards[context.replica_id_in_sync_group]))
        return step_function(distributed_images, distributed_labels, global_size)

    return step


def _agree_on_overflow(gradients):
    """Make every replica see non-finite gradients if any replica's are, so all skip the update together.

    LossScaleOptimizer judges a replica's own gradients before they are all-reduced (under
    MirroredStrategy: the first replica's), so an overflow on another replica would be summed into
    the update, or replicas that disagreed would wait for each other's all-reduce.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(gradient)) for gradient in gradients])
    overflowed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.float32))
    poison = tf.where(overflowed > 0, tf.constant(float("nan")), tf.constant(0.0))
    return [gradient + tf.cast(poison, gradient.dtype) for gradient in gradients]


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {name}", unit="it", dynamic_ncols=True)
