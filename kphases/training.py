"""The classifier training loop: iteration-exact, snapshotting, deterministic, resumable.

Keras guide style ("Writing a training loop from scratch"): one `tf.GradientTape` step inside
`tf.function`. Like open_lth, the loop itself stays simple: before a step it calls each callback
with one fixed signature, `callback(run, step, model, optimizer)`; snapshots, classifier metrics
and resume checkpoints are such callbacks, at the schedule's steps (PROTOCOL.md: the measurement
at iteration s happens before update s, so snapshot 0 is the initial network and snapshot s holds
the weights after s updates).

So that a GPU is not left waiting for Python, the train set is copied to the device once (up to
`DEVICE_DATA_MAX_BYTES`; a larger one streams from the host, one call ahead), each epoch's
permutation is drawn once, and the steps between two callback points (snapshot and checkpoint
steps, learning-rate boundaries, epoch ends, the steps a callback names in its `steps`
attribute; every step for a callback without one) run in one compiled call of at most
`STEPS_PER_CALL` steps, a graph loop gathering each batch on the device and returning the
losses. Each step is the same ops on the same batch as a one-call-per-step loop, so the weights
are bitwise the same on CPU (tests/test_loop.py; `train(steps_per_call=1)` is that loop). A
non-finite loss stops training naming its step, as before.

Matching the authors' PyTorch code on purpose:
- batches of an epoch come from a fresh seeded permutation, and the last batch is smaller
  (DataLoader's drop_last=False), so CIFAR-10 has 391 iterations per epoch;
- weight decay is L2 added to the gradient (PyTorch SGD's coupled weight_decay), on every
  trainable variable.
- augmentation (Frankle et al. only, `TrainingConfig.augment`): open_lth's torchvision
  RandomCrop(32, padding=4) and RandomHorizontalFlip: crops pad with black (0 before
  normalisation, -mean/std after), drawn on the device by stateless Philox ops from (seed, step).
  The draws are not torch's, so augmented runs match open_lth in distribution, not per image.
Departure: Keras' SGD keeps its momentum buffer in units of the learning-rate-scaled step
(m = mu m - lr g) where PyTorch keeps it unscaled (v = mu v + g; w -= lr v). The two are identical
at constant learning rate (the phases paper); at a learning-rate drop (Frankle et al.) Keras'
buffer carries the old rate for the ~10 steps it takes to decay.

Determinism: `keras.utils.set_random_seed` plus `tf.config.experimental.enable_op_determinism`,
so a run on CPU gives bit-identical weights for a seed, and a run resumed from its checkpoint
ends bit-identical to an uninterrupted one (tested by killing a real run). On GPUs
`deterministic=False` skips the latter (docs/gpu.md); GPU memory growth is on unless
$KPHASES_GPU_MEMORY_GROWTH=0. `TrainingConfig.jit_compile` compiles the steps with XLA (same
numbers to float32 rounding, not bitwise).

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
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kphases.config import LineageConfig, RunConfig, parse_steps
from kphases.data import IMAGE_SIZE, Dataset, batch_bounds, load_dataset, preprocess
from kphases.models import build_model
from kphases.schedule import snapshot_steps
from kphases.store import Run, environment
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


def epoch_permutation(epoch: int, train_size: int, seed: int) -> np.ndarray:
    """The order of the examples in epoch `epoch`: a permutation seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(train_size)


def batch_indices(step: int, train_size: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the examples in iteration `step`: epoch `step // steps_per_epoch` is a seeded permutation."""
    steps_per_epoch = math.ceil(train_size / batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    return epoch_permutation(epoch, train_size, seed)[position * batch_size : (position + 1) * batch_size]


CROP_PADDING = 4


def pad_value(dataset_name: str, channels: int) -> np.ndarray:
    """The normalised value of a black pixel, per channel: what a crop pads with (torchvision pads the raw image with 0)."""
    return preprocess(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, channels), np.float32), dataset_name)[0, 0, 0]


def crop_and_flip(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor, flips: tf.Tensor, fill: tf.Tensor) -> tf.Tensor:
    """Each image padded by CROP_PADDING pixels of `fill` (per channel), cropped back to its size at
    offset (rows[i], cols[i]) of the padded image (0..2*CROP_PADDING), then mirrored left-right if
    flips[i]. Pure copies (no arithmetic on pixel values): a gather with a mask for the padding."""
    height, width = images.shape[1], images.shape[2]
    row_index = rows[:, None] + tf.range(height)[None, :] - CROP_PADDING  # (B, H) rows of the unpadded image
    columns = tf.range(width)[None, :]
    columns = tf.where(flips[:, None], width - 1 - columns, columns)  # flip after the crop = read the window mirrored
    col_index = cols[:, None] + columns - CROP_PADDING
    inside = ((row_index >= 0) & (row_index < height))[:, :, None] & ((col_index >= 0) & (col_index < width))[:, None, :]
    gathered = tf.gather(images, tf.clip_by_value(row_index, 0, height - 1), axis=1, batch_dims=1)
    gathered = tf.gather(gathered, tf.clip_by_value(col_index, 0, width - 1), axis=2, batch_dims=1)
    return tf.where(inside[:, :, :, None], gathered, tf.cast(fill, images.dtype))


def augment_batch(images: tf.Tensor, step, seed: int, fill) -> tf.Tensor:
    """Random horizontal flips and 4-pixel crops padded with black (`fill`, see `pad_value`), as open_lth's
    torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip; drawn by stateless Philox ops from
    (seed, step), so an iteration's augmentation is the same on any device and after a resume."""
    count = tf.shape(images)[0]
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    offsets = tf.random.stateless_uniform([2, count], seed=key, minval=0, maxval=2 * CROP_PADDING + 1, dtype=tf.int32, alg="philox")
    flips = (
        tf.random.stateless_uniform(
            [count], seed=key + tf.constant([0, 1 << 40], tf.int64), minval=0, maxval=2, dtype=tf.int32, alg="philox"
        )
        > 0
    )
    return crop_and_flip(images, offsets[0], offsets[1], flips, fill)


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
    name = name[position + len("device:") :] if position >= 0 else name.lstrip("/")
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
        raise DeviceError(
            f"unknown device(s) {unknown}; visible devices: {visible} "
            "(give them as GPU:0,GPU:1; for several CPU devices see tf.config.set_logical_device_configuration)"
        )
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

    def cross_entropy_sum(batch_labels, logits) -> float:
        return float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(batch_labels, logits, from_logits=True)))

    return classifier_metrics(lambda batch: _predict(model, batch), images, labels, cross_entropy_sum)


def classifier_metrics(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    loss_sum: Callable[[np.ndarray, np.ndarray], float] | None = None,
    loss_targets: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy and mean loss over batches of EVAL_BATCH_SIZE: the one evaluation of `kphases train` and
    `kphases.SnapshotCallback`. `predict(batch)` gives the outputs; accuracy is the argmax of 2-D
    outputs against the class `labels` (left out for any other output); the loss is
    `loss_sum(targets, outputs)` summed over the batches over the count (left out without
    `loss_sum`), the targets being `loss_targets` as the loss wants them (default: `labels`)."""
    loss_targets = labels if loss_targets is None else loss_targets
    correct, total, accuracy_defined = 0, 0.0, True
    for start, stop in batch_bounds(len(labels), EVAL_BATCH_SIZE):
        outputs = predict(images[start:stop])
        if outputs.ndim == 2 and outputs.shape[1] > 1:
            correct += int(np.sum(np.argmax(outputs, axis=-1) == labels[start:stop]))
        else:
            accuracy_defined = False
        if loss_sum is not None:
            total += loss_sum(loss_targets[start:stop], outputs)
    metrics = {}
    if accuracy_defined:
        metrics["accuracy"] = correct / len(labels)
    if loss_sum is not None:
        metrics["loss"] = total / len(labels)
    return metrics


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
        if step > 0:
            # The resume state of this step first, then the snapshot: a kill at any moment leaves no
            # snapshot beyond the resume state, which could not be continued (no optimizer state).
            run.save_checkpoint(model, [variable.numpy() for variable in optimizer.variables], step)
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
    predicted = np.concatenate(
        [np.argmax(_predict(model, dataset.x_train[start:stop]), axis=-1) for start, stop in batch_bounds(len(flipped), EVAL_BATCH_SIZE)]
    )
    values = {
        "train_clean": np.mean(predicted[~flipped] == dataset.y_train[~flipped]),
        "train_flipped": np.mean(predicted[flipped] == dataset.y_train[flipped]),
        "train_flipped_true": np.mean(predicted[flipped] == dataset.y_train_clean[flipped]),
    }
    return [{"step": step, "split": split, "metric": "classifier_accuracy", "value": float(value)} for split, value in values.items()]


def checkpoint_callback(plan: Plan, every: int) -> Callback:
    """Resume state at every schedule step and every `every` steps (0: schedule steps only).

    At a schedule step the snapshot callback has normally written it already (before its snapshot)."""
    scheduled = set(plan.snapshot_steps)

    def callback(run: Run, step: int, model: keras.Model, optimizer) -> None:
        if step == 0 or step == plan.last_iteration:
            return
        if step in scheduled or (every and step % every == 0):
            state = run.checkpoint_state()
            if state is None or state["step"] != step:
                run.save_checkpoint(model, [variable.numpy() for variable in optimizer.variables], step)

    return callback


# --- the loop -------------------------------------------------------------------------------------

# A train set of at most this many bytes (CIFAR-10's 50,000 normalised images are 614 MB) is copied
# to the compute device once and every batch is gathered there; a larger one streams: each call's
# batches are gathered on the host, one call ahead of the device.
DEVICE_DATA_MAX_BYTES = 2 * 1024**3
# Iterations per compiled call at most: long enough that the per-call round trip vanishes against
# the steps (a VGG-8 x1/8 step is ~1 ms on a CPU, a call's host work ~1 ms), short enough that the
# progress bar and TensorBoard move every few seconds even on a CPU.
STEPS_PER_CALL = 64
MEMORY_GROWTH_VARIABLE = "KPHASES_GPU_MEMORY_GROWTH"


def configure_gpu_memory() -> None:
    """GPU memory growth on (unless $KPHASES_GPU_MEMORY_GROWTH=0), so several runs can share a GPU.

    TensorFlow otherwise reserves nearly all of every visible GPU's memory in the first process.
    Must run before TensorFlow initialises the GPUs; if they already are, it changes nothing.
    """
    growth = os.environ.get(MEMORY_GROWTH_VARIABLE, "1") != "0"
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, growth)
        except RuntimeError:  # already initialised (an earlier run in this process): keep its setting
            pass


def set_determinism(seed: int, deterministic: bool = True) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def train(
    config: RunConfig,
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    checkpoint_every: int = 1000,
    callbacks: Sequence[Callback] = (),
    dataset: Dataset | None = None,
    start: Start | None = None,
    devices: Devices = None,
    tensorboard: TensorBoardOption = False,
    deterministic: bool = True,
    steps_per_call: int = STEPS_PER_CALL,
) -> Run:
    """Train the run `config` describes into its run directory; return the run.

    A complete run is returned as it is; a partial one resumes from its checkpoint. `dataset`
    (already loaded from `config.data`) avoids loading the same data twice. `start`: weights,
    first step and masks of a run with a lineage (built by `kphases.early_phase.train_lineage`).
    `devices`: train data-parallel on these devices ('GPU:0,GPU:1', a list, or a
    `tf.distribute.Strategy`); None: the default strategy. The result does not depend on them
    beyond reduction order (see the module docstring). `tensorboard`: True writes summaries to
    `<run>/tensorboard/train`, a directory to `<directory>/<run hash>/train` (`kphases.tensorboard`).
    `callbacks` are called before every step, unless a callback has a `steps` attribute (the
    steps it acts at): then only there, and the loop runs the steps between in one compiled call.
    `deterministic=False` (GPUs only) skips `enable_op_determinism`: faster cuDNN kernels, runs
    no longer bit-reproducible (docs/gpu.md). `steps_per_call`: iterations per compiled call at
    most (1: one Python call per step, the loop as it was; several devices always go one step per call).
    """
    if (config.lineage != LineageConfig()) != (start is not None):
        raise ValueError(
            f"a run with a lineage ({config.lineage}) needs its start (kphases.early_phase.train_lineage builds it), "
            f"and only such a run takes one; got start={'given' if start is not None else 'None'}"
        )
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    configure_gpu_memory()  # before anything touches the GPUs
    strategy = make_strategy(devices)  # before anything else: an unknown device is named before any work
    compute_devices = strategy_devices(strategy)
    if not deterministic and not any(device.startswith("GPU") for device in compute_devices):
        raise DeviceError(
            f"deterministic=False is for GPUs (cuDNN's faster non-deterministic kernels); the devices {compute_devices} "
            "have none, and on a CPU it gains nothing and loses bitwise reproducibility"
        )
    existing = Run.find(runs_dir, config)  # creates nothing: a config refused below leaves no run directory
    if existing is not None and existing.complete:
        return existing  # (find verified its snapshots against the manifest)
    dataset = dataset or load_dataset(config.data, data_dir)
    plan = make_plan(config, len(dataset.y_train))
    training = config.training
    replicas = strategy.num_replicas_in_sync
    smallest_batch = len(dataset.y_train) % training.batch_size or training.batch_size
    if smallest_batch < replicas:
        raise DeviceError(
            f"the smallest batch of an epoch has {smallest_batch} examples, fewer than the {replicas} replicas "
            f"({strategy_devices(strategy)}): every replica needs at least one; use fewer devices"
        )
    if training.precision == "mixed_float16" and not any(device.startswith("GPU") for device in compute_devices):
        warnings.warn(
            f"precision mixed_float16 on {compute_devices}: float16 is slow on CPUs (no float16 units); it is meant for GPUs", stacklevel=2
        )
    set_determinism(training.seed, deterministic)
    with strategy.scope():
        model = build_training_model(config, dataset.image_shape, dataset.num_classes)
        if replicas > 1:
            _synchronise_batchnorm(model)
        optimizer = make_optimizer(config, plan)
        optimizer.build(model.trainable_variables)

    run = Run.create(runs_dir, config)  # after every check of the config above
    with run.training_lock():  # a second `train` of this config waits, then finds it complete (issue 20 item 16)
        if run.complete:
            return run
        return _train_locked(
            run,
            config,
            plan,
            dataset,
            model,
            optimizer,
            start,
            strategy,
            compute_devices,
            progress,
            checkpoint_every,
            callbacks,
            tensorboard,
            deterministic,
            steps_per_call,
        )


def _train_locked(
    run: Run,
    config: RunConfig,
    plan: Plan,
    dataset: Dataset,
    model: keras.Model,
    optimizer,
    start: Start | None,
    strategy: tf.distribute.Strategy,
    compute_devices: list[str],
    progress: bool,
    checkpoint_every: int,
    callbacks: Sequence[Callback],
    tensorboard: TensorBoardOption,
    deterministic: bool,
    steps_per_call: int,
) -> Run:
    training, replicas = config.training, strategy.num_replicas_in_sync
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
            raise TrainingError(
                f"run {run.directory} has snapshots {run.snapshot_steps()} but no resume checkpoint (a kphases older than this one "
                "was killed between a snapshot and its checkpoint): without the optimizer state it cannot continue. Move it out of "
                f"the runs directory (for example: mv {run.directory} ./{run.name}.unresumable) and train again, which starts afresh"
            )
    run.update_manifest(
        schedule=list(plan.snapshot_steps), last_iteration=plan.last_iteration, steps_per_epoch=plan.steps_per_epoch, complete=False
    )
    run.update_provenance(
        data=dataset.describe(),
        **environment(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        strategy=strategy_name(strategy),
        devices=compute_devices,
        replicas=replicas,
        precision=training.precision,
        deterministic=deterministic,
        jit_compile=training.jit_compile,
    )

    masks = start.masks if start else None
    fill = pad_value(dataset.name, dataset.image_shape[-1]) if training.augment else None
    summaries = training_summaries(run, tensorboard)
    try:
        all_callbacks = [snapshot_callback(dataset, plan, summaries), checkpoint_callback(plan, checkpoint_every), *callbacks]
        began = time.perf_counter()
        bar = _progress_bar(progress, plan.last_iteration, start_step, run.name)
        if replicas > 1 or steps_per_call == 1:
            with strategy.scope():
                step_function = _make_step(model, optimizer, training.weight_decay, masks, strategy, training.jit_compile)
            _train_per_step(run, plan, training, dataset, model, optimizer, step_function, all_callbacks, start_step, fill, summaries, bar)
        else:
            points = call_points(plan, start_step, checkpoint_every, callbacks)
            chunks = _Chunks(model, optimizer, training, masks, fill, dataset, compute_devices[0])
            _train_chunked(run, plan, training, chunks, all_callbacks, start_step, points, steps_per_call, summaries, bar, model, optimizer)
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


def call_points(plan: Plan, start_step: int, checkpoint_every: int, callbacks: Sequence[Callback] = ()) -> list[int]:
    """The steps, from `start_step` to the last, at which the loop returns to Python and calls the callbacks.

    Snapshot steps, checkpoint steps, learning-rate boundaries, the steps of the callbacks that name
    theirs (every step if one does not), every epoch's first step, and the step of an epoch's smaller
    last batch (so that one compiled call sees one batch shape). The steps between two points run
    in compiled calls of at most `steps_per_call`.
    """
    last = plan.last_iteration
    if any(getattr(callback, "steps", None) is None for callback in callbacks):
        return list(range(start_step, last + 1))
    points = {start_step, last, *plan.snapshot_steps, *plan.lr_boundaries}
    if checkpoint_every:
        points.update(range(0, last + 1, checkpoint_every))
    for callback in callbacks:
        points.update(int(step) for step in callback.steps)
    spe = plan.steps_per_epoch
    points.update(range(0, last + 1, spe))
    points.update(range(spe - 1, last + 1, spe))  # an epoch's last batch (the smaller one, if any) alone
    return sorted(point for point in points if start_step <= point <= last)


def _train_chunked(run, plan, training, chunks, all_callbacks, start_step, points, steps_per_call, summaries, bar, model, optimizer):
    """Callbacks at each point; the steps up to the next point in compiled calls of at most `steps_per_call`."""
    bounds = []
    for here, following in zip(points, points[1:]):
        bounds.extend((begin, min(begin + steps_per_call, following)) for begin in range(here, following, steps_per_call))
    callback_steps = set(points)
    call = _caller(all_callbacks, run, model, optimizer)
    pending = chunks.prepare(*bounds[0]) if bounds else None
    for number, (first, stop) in enumerate(bounds):
        if first in callback_steps:
            call(first)
        prepared = pending.result() if hasattr(pending, "result") else pending
        if number + 1 < len(bounds):
            pending = chunks.prepare(*bounds[number + 1])  # streaming: gathered on the host while the device computes
        losses, rates, scales = (values.numpy() for values in chunks.run(first, prepared))
        finite = np.isfinite(losses)
        done = len(losses) if finite.all() else int(np.argmin(finite)) + 1
        if summaries is not None:
            for offset in range(done - (0 if finite.all() else 1)):
                values = {"loss": float(losses[offset]), "learning_rate": float(rates[offset])}
                if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                    values["loss_scale"] = float(scales[offset])
                summaries.scalars(first + offset, values)
        if not finite.all():
            chunks.close()
            raise TrainingError(
                f"loss is {losses[done - 1]} at step {first + done - 1} of run {run.directory} (learning rate "
                f"{training.learning_rate}); stopping: nothing after this step would be meaningful"
            )
        if bar is not None:
            bar.update(len(losses))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    chunks.close()
    call(plan.last_iteration)


def _caller(all_callbacks, run, model, optimizer) -> Callable[[int], None]:
    """`call(step)`: every callback, except that one naming its `steps` is called there only."""
    named = {
        id(callback): {int(step) for step in callback.steps} for callback in all_callbacks if getattr(callback, "steps", None) is not None
    }

    def call(step: int) -> None:
        for callback in all_callbacks:
            if id(callback) not in named or step in named[id(callback)]:
                callback(run, step, model, optimizer)

    return call


def _train_per_step(run, plan, training, dataset, model, optimizer, step_function, all_callbacks, start_step, fill, summaries, bar):
    """One Python call per step, the batch gathered on the host (several devices; steps_per_call=1)."""
    call = _caller(all_callbacks, run, model, optimizer)
    for step in range(start_step, plan.last_iteration + 1):
        call(step)
        if step == plan.last_iteration:
            break
        indices = batch_indices(step, len(dataset.y_train), training.batch_size, training.seed)
        images = dataset.x_train[indices]
        if training.augment:
            images = augment_batch(tf.constant(images), step, training.seed, fill).numpy()
        if summaries is not None:
            learning_rate = float(tf.convert_to_tensor(optimizer.learning_rate))  # the rate of this update (read before it)
        loss = float(step_function(images, dataset.y_train[indices]))
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss is {loss} at step {step} of run {run.directory} (learning rate {training.learning_rate}); "
                "stopping: nothing after this step would be meaningful"
            )
        if summaries is not None:
            values = {"loss": loss, "learning_rate": learning_rate}
            if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                values["loss_scale"] = float(tf.convert_to_tensor(optimizer.dynamic_scale))
            summaries.scalars(step, values)
        if bar is not None:
            bar.update(1)
            if step % 16 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")


class _Chunks:
    """The compiled multi-step calls of one run (one device) and the data they read.

    The train set is copied to `device` once when it fits `DEVICE_DATA_MAX_BYTES`; then a call
    gets the (steps, batch) index matrix of its iterations and gathers each batch on the device.
    Otherwise a call gets its iterations' images, gathered on the host by a worker thread one call
    ahead. The epoch's permutation is drawn once per epoch (`epoch_permutation`, the same order as
    `batch_indices`).
    """

    def __init__(self, model, optimizer, training, masks, fill, dataset: Dataset, device: str):
        self.training, self.dataset = training, dataset
        self.steps_per_epoch = math.ceil(len(dataset.y_train) / training.batch_size)
        self.on_device = dataset.x_train.nbytes + dataset.y_train.nbytes <= DEVICE_DATA_MAX_BYTES
        if self.on_device:
            with tf.device(device):  # a copy on the device (tf.constant alone stays in host memory)
                self.images = tf.identity(tf.constant(dataset.x_train))
                self.labels = tf.identity(tf.constant(dataset.y_train))
            self.worker = None
        else:
            from concurrent.futures import ThreadPoolExecutor

            self.worker = ThreadPoolExecutor(max_workers=1)
        self.functions: dict[int, Callable] = {}
        self.make = lambda batch: _make_chunk(
            model,
            optimizer,
            training.weight_decay,
            masks,
            fill,
            training.seed,
            batch,
            dataset.x_train.shape[1:],
            dataset.y_train.dtype,
            training.jit_compile,
        )
        self.epoch, self.permutation = None, None

    def indices(self, first: int, stop: int) -> np.ndarray:
        """(stop - first, batch) example indices of iterations first..stop-1 (one epoch, one batch size)."""
        epoch, position = divmod(first, self.steps_per_epoch)
        if epoch != self.epoch:
            self.epoch, self.permutation = epoch, epoch_permutation(epoch, len(self.dataset.y_train), self.training.seed)
        batch = self.training.batch_size
        selected = self.permutation[position * batch : (position + stop - first) * batch]
        return selected.reshape(stop - first, -1)

    def _gather(self, indices: np.ndarray):
        flat = indices.reshape(-1)
        return (
            tf.constant(self.dataset.x_train[flat]),
            tf.constant(self.dataset.y_train[flat]),
            tf.constant(np.arange(flat.size, dtype=np.int64).reshape(indices.shape)),
        )

    def prepare(self, first: int, stop: int):
        indices = self.indices(first, stop)
        if self.on_device:
            return self.images, self.labels, tf.constant(indices.astype(np.int64))
        return self.worker.submit(self._gather, indices)

    def run(self, first: int, prepared):
        images, labels, indices = prepared
        batch = int(indices.shape[1])
        if batch not in self.functions:
            self.functions[batch] = self.make(batch)
        return self.functions[batch](images, labels, indices, tf.constant(first, tf.int64))

    def close(self) -> None:
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)


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


def _make_update(model: keras.Model, optimizer: keras.optimizers.Optimizer, weight_decay: float, replicas: int):
    """`update(images, labels, global_size) -> loss`: one replica's optimiser update (inside a traced function)."""
    variables = model.trainable_variables
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

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

    return replica_step


def _mask_pairs(model: keras.Model, masks: dict[str, np.ndarray] | None):
    # Momentum and weight decay would move a pruned weight off zero: re-zero it after every update.
    return [
        (variable, tf.constant(masks[variable.path], dtype=variable.dtype))
        for variable in model.trainable_variables
        if masks and variable.path in masks
    ]


def _make_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    weight_decay: float,
    masks: dict[str, np.ndarray] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
):
    """`step(images, labels) -> mean loss`: one optimiser update on one global batch, under `strategy`.

    One replica (the default strategy): the batch's mean cross-entropy, as in the Keras guide. Several:
    the batch is split across the replicas; each replica's loss is its examples' summed cross-entropy
    over the global batch size, so the optimizer's all-reduce (a sum) gives the global mean gradient.
    Build it in `strategy.scope()`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    replica_step = _make_update(model, optimizer, weight_decay, replicas)
    masked = _mask_pairs(model, masks)

    @tf.function(reduce_retracing=True, jit_compile=jit_compile or None)
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
            lambda context: tf.constant(image_shards[context.replica_id_in_sync_group])
        )
        distributed_labels = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(label_shards[context.replica_id_in_sync_group])
        )
        return step_function(distributed_images, distributed_labels, global_size)

    return step


def _make_chunk(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    weight_decay: float,
    masks: dict[str, np.ndarray] | None,
    fill: np.ndarray | None,
    seed: int,
    batch_size: int,
    image_shape,
    label_dtype,
    jit_compile: bool = False,
):
    """`chunk(images, labels, indices, first_step) -> (losses, learning rates, loss scales)`: one replica.

    Row i of `indices` (steps, batch_size) picks iteration first_step + i's batch from `images` and
    `labels`; each iteration is the same update as `_make_step`'s (same ops on the same batch, so
    the same numbers), augmented on the device when `fill` is given. Returns each iteration's loss,
    the learning rate it used and the loss scale after it (1 without loss scaling).
    """
    update = _make_update(model, optimizer, weight_decay, 1)
    masked = _mask_pairs(model, masks)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    fill_tensor = None if fill is None else tf.constant(fill, tf.float32)
    signature = [
        tf.TensorSpec((None, *image_shape), tf.float32),
        tf.TensorSpec((None,), tf.as_dtype(label_dtype)),
        tf.TensorSpec((None, batch_size), tf.int64),
        tf.TensorSpec((), tf.int64),
    ]

    @tf.function(input_signature=signature, jit_compile=jit_compile or None)
    def chunk(images, labels, indices, first_step):
        steps = tf.shape(indices)[0]
        losses = tf.TensorArray(tf.float32, size=steps, element_shape=())
        rates = tf.TensorArray(tf.float32, size=steps, element_shape=())
        scales = tf.TensorArray(tf.float32, size=steps, element_shape=())
        global_size = tf.constant(float(batch_size), tf.float32)
        for index in tf.range(steps):
            batch_images = tf.gather(images, indices[index])
            if fill_tensor is not None:
                batch_images = augment_batch(batch_images, first_step + tf.cast(index, tf.int64), seed, fill_tensor)
            rates = rates.write(index, tf.cast(tf.convert_to_tensor(optimizer.learning_rate), tf.float32))
            loss = update(batch_images, tf.gather(labels, indices[index]), global_size)
            for variable, mask in masked:
                variable.assign(variable * mask)
            losses = losses.write(index, tf.cast(loss, tf.float32))
            scales = scales.write(index, tf.cast(optimizer.dynamic_scale, tf.float32) if scaled else tf.constant(1.0))
        return losses.stack(), rates.stack(), scales.stack()

    return chunk


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
