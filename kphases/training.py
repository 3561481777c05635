"""The classifier training loop: iteration-exact, snapshotting, deterministic, resumable.

Keras guide style ("Writing a training loop from scratch"): one `tf.GradientTape` step inside
`tf.function`. Like open_lth, the loop itself stays simple (`train`, top to bottom): before a step
it calls each callback with one fixed signature, `callback(run, step, model, optimizer)`;
snapshots, classifier metrics and resume checkpoints are such callbacks, at the schedule's steps
(docs/protocol.md, "The snapshot schedule": the measurement at iteration s happens before update
s, so snapshot 0 is the initial network and snapshot s holds the weights after s updates).
A non-finite loss stops training with an error naming its step.

The steps between two callback points (snapshot and checkpoint steps, learning-rate boundaries,
epoch ends, the steps a callback names in its `steps` attribute; every step for a callback
without one) run in one compiled call of at most `STEPS_PER_CALL` steps: a graph loop gathering
each batch on the device (`kphases.placement.TrainBatches` puts the train set there) and
returning the losses. Each step is the same ops on the same batch as in the one-call-per-step
loop (`train(steps_per_call=1)`, and every run on several devices), so the weights are bitwise
the same on CPU (tests/test_loop.py).

Matching the authors' PyTorch code on purpose:
- batches of an epoch come from a fresh seeded permutation, and the last batch is smaller
  (DataLoader's drop_last=False), so CIFAR-10 has 391 iterations per epoch (`kphases.placement`);
- weight decay is L2 added to the gradient (PyTorch SGD's coupled weight_decay), on every
  trainable variable;
- augmentation (Frankle et al. only, `TrainingConfig.augment`) is open_lth's random crop and flip
  (`kphases.augmentation`).
Departure: Keras' SGD keeps its momentum buffer in units of the learning-rate-scaled step
(m = mu m - lr g) where PyTorch keeps it unscaled (v = mu v + g; w -= lr v). The two are identical
at constant learning rate (the phases paper); at a learning-rate drop (Frankle et al.) Keras'
buffer carries the old rate for the ~10 steps it takes to decay.

Determinism: `keras.utils.set_random_seed` plus `tf.config.experimental.enable_op_determinism`,
so a run on CPU gives bit-identical weights for a seed, and a run resumed from its checkpoint
ends bit-identical to an uninterrupted one (tested by killing a real run). On GPUs
`deterministic=False` skips the latter (docs/gpu.md). `TrainingConfig.jit_compile` compiles the
steps with XLA (same numbers to float32 rounding, not bitwise).

Devices (`train(devices=...)`, `--devices GPU:0,GPU:1`): the model, optimizer and step are built in
a `tf.distribute` strategy's scope (`kphases.placement.make_strategy`). The config's batch size
stays the global batch: each step's batch is split across the replicas, every replica's loss is
its examples' summed cross-entropy over the global batch size, the optimizer all-reduces (sums)
the gradients, and one update is made per global batch. BatchNorm layers are switched to
synchronised statistics over the replicas, so a batch is normalised as one batch and the result
matches a single-device run up to reduction order. The devices are recorded in the run's
provenance.

Mixed precision (`TrainingConfig.precision = "mixed_float16"`): the model is built under Keras'
mixed_float16 policy (float16 activations, float32 variables, so snapshots stay float32), logits and
loss are computed in float32, and the optimizer is wrapped in a `LossScaleOptimizer` (an update
whose scaled gradients overflow is skipped and the scale halved; the step still counts, so the
snapshot steps stay those of the schedule). Allowed on CPU, with a warning: it is slow there.

TensorBoard (`train(tensorboard=True)`, `--tensorboard`): loss and learning rate per step and the
classifier metrics per snapshot, under `<run>/tensorboard/train` (`kphases.tensorboard`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kphases.augmentation import augment_batch, pad_value
from kphases.config import LineageConfig, RunConfig, TrainingConfig, parse_steps
from kphases.data import Dataset, batch_bounds, load_dataset
from kphases.models import build_model
from kphases.placement import (
    DeviceError,
    Devices,
    TrainBatches,
    configure_gpu_memory,
    make_strategy,
    split_across_replicas,
    strategy_devices,
    strategy_name,
)
from kphases.schedule import snapshot_steps
from kphases.store import Run, environment
from kphases.tensorboard import Summaries, TensorBoardOption, training_summaries

Callback = Callable[[Run, int, keras.Model, keras.optimizers.Optimizer], None]
# `take_steps(first, inputs) -> (losses, learning rates, loss scales)`: the updates of one call, from step `first`.
TakeSteps = Callable[[int, tuple], tuple[np.ndarray, np.ndarray, np.ndarray]]
EVAL_BATCH_SIZE = 512
PRECISIONS = ("float32", "mixed_float16")
# Iterations per compiled call at most: long enough that the per-call round trip vanishes against
# the steps (a VGG-8 x1/8 step is ~1 ms on a CPU, a call's host work ~1 ms), short enough that the
# progress bar and TensorBoard move every few seconds even on a CPU.
STEPS_PER_CALL = 64


class TrainingError(RuntimeError):
    """Training cannot go on (for example a NaN loss); the message names the step."""


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


@dataclass
class Loop:
    """The state of one training: what it trains, where it writes, and the step it has reached.

    `model` and `optimizer` live in `strategy`'s scope; `step` is the next update to make (the
    checkpoint's after a resume, a lineage's start step, else 0).
    """

    config: RunConfig
    plan: Plan
    dataset: Dataset
    strategy: tf.distribute.Strategy
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    run: Run | None = None
    step: int = 0


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


def make_optimizer(config: RunConfig, plan: Plan) -> keras.optimizers.Optimizer:
    training = config.training
    learning_rate = training.learning_rate
    if plan.lr_boundaries:
        values = [training.learning_rate / 10**drop for drop in range(len(plan.lr_boundaries) + 1)]
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(list(plan.lr_boundaries), values)
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=training.momentum)
    if training.precision == "mixed_float16":
        # Keras 3 custom loops scale the loss themselves (LossScaleOptimizer.scale_loss, see _make_update).
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


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


def set_determinism(seed: int, deterministic: bool = True) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


# --- evaluation -----------------------------------------------------------------------------------


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
        rows += label_noise_rows(model, dataset, step) + blend_rows(model, dataset, step)
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


def blend_rows(model: keras.Model, dataset: Dataset, step: int) -> list[dict]:
    """Classifier accuracy on the blended and on the other train examples of a run with a blend (splits
    train_blended, train_unblended; both against their own label); no rows without a blend."""
    if dataset.blended is None:
        return []
    predicted = np.concatenate(
        [
            np.argmax(_predict(model, dataset.x_train[start:stop]), axis=-1)
            for start, stop in batch_bounds(len(dataset.y_train), EVAL_BATCH_SIZE)
        ]
    )
    right = predicted == dataset.y_train
    values = {"train_blended": right[dataset.blended].mean(), "train_unblended": right[~dataset.blended].mean()}
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
    not bit-reproducible (docs/gpu.md). `steps_per_call`: iterations per compiled call at
    most (1: one Python call per step, the batch gathered on the host; several devices always go
    one step per call).
    """
    strategy = _checked_strategy(config, start, devices, deterministic, steps_per_call)
    existing = Run.find(runs_dir, config)  # creates nothing: a config refused below leaves no run directory
    if existing is not None and existing.complete:
        return existing  # (find verified its snapshots against the manifest)
    loop = _build(config, dataset or load_dataset(config.data, data_dir), strategy, deterministic)
    run = Run.create(runs_dir, config)  # after every check of the config above
    with run.training_lock():  # a second `train` of this config waits, then finds it complete
        if run.complete:
            return run
        _resume(loop, run, start)
        _record_start(loop, deterministic)
        began = time.perf_counter()
        per_step = strategy.num_replicas_in_sync > 1 or steps_per_call == 1
        calls = _calls(call_points(loop.plan, loop.step, checkpoint_every, callbacks), 1 if per_step else steps_per_call)
        device = None if per_step else strategy_devices(strategy)[0]  # None: each step's batch gathered on the host
        with (
            _summaries(run, tensorboard) as summaries,
            TrainBatches(loop.dataset, config.training.batch_size, config.training.seed, device) as batches,
            _progress_bar(progress, loop) as bar,
        ):
            take_steps = _take_steps(loop, start, per_step, record=summaries is not None)
            everyone = [snapshot_callback(loop.dataset, loop.plan, summaries), checkpoint_callback(loop.plan, checkpoint_every)]
            everyone += [_at_its_steps(callback) for callback in callbacks]
            for first, stop, inputs in batches.feed(calls):
                for callback in everyone:  # each acts at its own steps, all of which begin a call
                    callback(run, first, loop.model, loop.optimizer)
                losses, learning_rates, loss_scales = take_steps(first, inputs)
                finite = _finite_prefix(losses)
                _log_steps(summaries, loop.optimizer, first, losses[:finite], learning_rates, loss_scales)
                if finite < len(losses):
                    raise TrainingError(
                        f"loss is {losses[finite]} at step {first + finite} of run {run.directory} (learning rate "
                        f"{config.training.learning_rate}); stopping: nothing after this step would be meaningful"
                    )
                loop.step = stop
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                bar.update(stop - first)
            for callback in everyone:
                callback(run, loop.plan.last_iteration, loop.model, loop.optimizer)
        _finish(run, began)
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


def _calls(points: Sequence[int], steps_per_call: int) -> list[tuple[int, int]]:
    """(first, stop) of each call of the step: from each point up to the next, at most `steps_per_call` steps at a time."""
    return [
        (first, min(first + steps_per_call, following))
        for here, following in zip(points, points[1:])
        for first in range(here, following, steps_per_call)
    ]


def _at_its_steps(callback: Callback) -> Callback:
    """`callback` itself, or, if it names its `steps`, a callback that calls it there only."""
    if getattr(callback, "steps", None) is None:
        return callback
    named = {int(step) for step in callback.steps}

    def at_named_steps(run: Run, step: int, model: keras.Model, optimizer) -> None:
        if step in named:
            callback(run, step, model, optimizer)

    return at_named_steps


def _finite_prefix(losses: np.ndarray) -> int:
    """How many losses from the first are finite."""
    finite = np.isfinite(losses)
    return len(losses) if finite.all() else int(np.argmin(finite))


def _log_steps(summaries: Summaries | None, optimizer, first: int, losses, learning_rates, loss_scales) -> None:
    """TensorBoard's per-step scalars of steps first, first + 1, ...: one per loss."""
    if summaries is None:
        return
    for offset, loss in enumerate(losses):
        values = {"loss": float(loss), "learning_rate": float(learning_rates[offset])}
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            values["loss_scale"] = float(loss_scales[offset])
        summaries.scalars(first + offset, values)


def _progress_bar(enabled: bool, loop: Loop) -> tqdm:
    """A bar over the run's steps, from the one it starts at (a bar that shows nothing unless `enabled`)."""
    return tqdm(
        total=loop.plan.last_iteration, initial=loop.step, desc=f"train {loop.run.name}", unit="it", dynamic_ncols=True, disable=not enabled
    )


@contextlib.contextmanager
def _summaries(run: Run, tensorboard: TensorBoardOption) -> Iterator[Summaries | None]:
    summaries = training_summaries(run, tensorboard)
    try:
        yield summaries
    finally:
        if summaries is not None:
            summaries.close()


# --- before and after the loop --------------------------------------------------------------------


def _checked_strategy(config: RunConfig, start: Start | None, devices: Devices, deterministic: bool, steps_per_call: int):
    """The strategy to train under, after the checks that need no data (so a bad request fails at once)."""
    if (config.lineage != LineageConfig()) != (start is not None):
        raise ValueError(
            f"a run with a lineage ({config.lineage}) needs its start (kphases.early_phase.train_lineage builds it), "
            f"and only such a run takes one; got start={'given' if start is not None else 'None'}"
        )
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    configure_gpu_memory()  # before anything touches the GPUs
    strategy = make_strategy(devices)  # before any work: an unknown device is named first
    compute_devices = strategy_devices(strategy)
    if not deterministic and not any(device.startswith("GPU") for device in compute_devices):
        raise DeviceError(
            f"deterministic=False is for GPUs (cuDNN's faster non-deterministic kernels); the devices {compute_devices} "
            "have none, and on a CPU it gains nothing and loses bitwise reproducibility"
        )
    return strategy


def _build(config: RunConfig, dataset: Dataset, strategy: tf.distribute.Strategy, deterministic: bool) -> Loop:
    """The plan, network and optimizer of a run, built in the strategy's scope from the seed."""
    plan = make_plan(config, len(dataset.y_train))
    training, replicas, compute_devices = config.training, strategy.num_replicas_in_sync, strategy_devices(strategy)
    smallest_batch = len(dataset.y_train) % training.batch_size or training.batch_size
    if smallest_batch < replicas:
        raise DeviceError(
            f"the smallest batch of an epoch has {smallest_batch} examples, fewer than the {replicas} replicas "
            f"({compute_devices}): every replica needs at least one; use fewer devices"
        )
    if training.precision == "mixed_float16" and not any(device.startswith("GPU") for device in compute_devices):
        warnings.warn(
            f"precision mixed_float16 on {compute_devices}: float16 is slow on CPUs (no float16 units); it is meant for GPUs", stacklevel=3
        )
    set_determinism(training.seed, deterministic)
    with strategy.scope():
        model = build_training_model(config, dataset.image_shape, dataset.num_classes)
        if replicas > 1:
            _synchronise_batchnorm(model)
        optimizer = make_optimizer(config, plan)
        optimizer.build(model.trainable_variables)
    return Loop(config, plan, dataset, strategy, model, optimizer)


def _resume(loop: Loop, run: Run, start: Start | None) -> None:
    """Set the network, the optimizer and `loop.step` to where `run` goes on: its checkpoint, else `start`, else step 0."""
    loop.run = run
    if start is not None:
        loop.model.set_weights(start.weights)
        _apply_masks(loop.model, start.masks)
        loop.step = start.step
        loop.optimizer.iterations.assign(start.step)  # the learning-rate schedule continues from the start step
    resumed = run.load_checkpoint(loop.model)
    if resumed is not None:
        loop.step, optimizer_variables = resumed
        for variable, value in zip(loop.optimizer.variables, optimizer_variables, strict=True):
            variable.assign(value)
    elif run.snapshot_steps() and run.snapshot_steps() != [loop.step]:
        # Snapshots without a checkpoint are only possible if the run died right after its first snapshot.
        raise TrainingError(
            f"run {run.directory} has snapshots {run.snapshot_steps()} but no resume checkpoint (a kphases older than this one "
            "was killed between a snapshot and its checkpoint): without the optimizer state it cannot continue. Move it out of "
            f"the runs directory (for example: mv {run.directory} ./{run.name}.unresumable) and train again, which starts afresh"
        )


def _record_start(loop: Loop, deterministic: bool) -> None:
    """The run's manifest (its schedule, not yet complete) and provenance (data, machine, devices, precision)."""
    plan, training, strategy = loop.plan, loop.config.training, loop.strategy
    loop.run.update_manifest(
        schedule=list(plan.snapshot_steps), last_iteration=plan.last_iteration, steps_per_epoch=plan.steps_per_epoch, complete=False
    )
    loop.run.update_provenance(
        data=loop.dataset.describe(),
        **environment(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        strategy=strategy_name(strategy),
        devices=strategy_devices(strategy),
        replicas=strategy.num_replicas_in_sync,
        precision=training.precision,
        deterministic=deterministic,
        jit_compile=training.jit_compile,
    )


def _finish(run: Run, began: float) -> None:
    provenance = run.provenance()
    run.update_provenance(train_seconds=provenance.get("train_seconds", 0.0) + time.perf_counter() - began)
    run.update_manifest(complete=True)
    run.remove_checkpoint()  # resume state of a complete run is dead weight (the snapshots stay)


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


# --- the steps ------------------------------------------------------------------------------------


def _take_steps(loop: Loop, start: Start | None, per_step: bool, record: bool) -> TakeSteps:
    """The loop's `take_steps`: one step per call (several replicas, or steps_per_call=1), else compiled calls."""
    masks = start.masks if start else None
    training = loop.config.training
    if per_step:
        return one_step_per_call(loop.model, loop.optimizer, training, loop.dataset, masks, loop.strategy, record)
    return compiled_steps(loop.model, loop.optimizer, training, loop.dataset, masks)


def compiled_steps(model: keras.Model, optimizer, training: TrainingConfig, dataset: Dataset, masks=None) -> TakeSteps:
    """`take_steps(first, inputs)` running a call's updates in one compiled graph loop on one device.

    `inputs` are `kphases.placement.TrainBatches.prepare`'s; one traced function per batch size.
    """
    fill = pad_value(dataset.name, dataset.image_shape[-1]) if training.augment else None
    functions: dict[int, Callable] = {}

    def take_steps(first: int, inputs: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images, labels, indices = inputs
        batch_size = int(indices.shape[1])
        if batch_size not in functions:
            functions[batch_size] = _make_chunk(
                model, optimizer, training, masks, fill, batch_size, dataset.x_train.shape[1:], dataset.y_train.dtype
            )
        losses, learning_rates, loss_scales = functions[batch_size](images, labels, indices, tf.constant(first, tf.int64))
        return losses.numpy(), learning_rates.numpy(), loss_scales.numpy()

    return take_steps


def one_step_per_call(
    model: keras.Model, optimizer, training: TrainingConfig, dataset: Dataset, masks, strategy: tf.distribute.Strategy, record: bool
) -> TakeSteps:
    """`take_steps(step, inputs)` making update `step` in one call, its batch split across the strategy's replicas.

    `inputs` are `kphases.placement.TrainBatches.prepare`'s for one step, gathered on the host. The
    learning rate and loss scale are read only if `record` (NaN and 1 otherwise): each read waits
    for the device.
    """
    fill = pad_value(dataset.name, dataset.image_shape[-1]) if training.augment else None
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    with strategy.scope():
        step_function = _make_step(model, optimizer, training.weight_decay, masks, strategy, training.jit_compile)

    def take_steps(step: int, inputs: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images, labels, _ = inputs
        if fill is not None:
            images = augment_batch(images, step, training.seed, fill)
        learning_rate = float(tf.convert_to_tensor(optimizer.learning_rate)) if record else math.nan  # this update's: read before it
        loss = float(step_function(images, labels))
        loss_scale = float(tf.convert_to_tensor(optimizer.dynamic_scale)) if scaled and record else 1.0
        return np.array([loss]), np.array([learning_rate]), np.array([loss_scale])

    return take_steps


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
        distributed_images, distributed_labels = split_across_replicas(strategy, images, labels)
        return step_function(distributed_images, distributed_labels, global_size)

    return step


def _make_chunk(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    training: TrainingConfig,
    masks: dict[str, np.ndarray] | None,
    fill: np.ndarray | None,
    batch_size: int,
    image_shape,
    label_dtype,
):
    """`chunk(images, labels, indices, first_step) -> (losses, learning rates, loss scales)`: one replica.

    Row i of `indices` (steps, batch_size) picks iteration first_step + i's batch from `images` and
    `labels`; each iteration is the same update as `_make_step`'s (same ops on the same batch, so
    the same numbers), augmented on the device when `fill` is given. Returns each iteration's loss,
    the learning rate it used and the loss scale after it (1 without loss scaling).
    """
    update = _make_update(model, optimizer, training.weight_decay, 1)
    masked = _mask_pairs(model, masks)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    fill_tensor = None if fill is None else tf.constant(fill, tf.float32)
    signature = [
        tf.TensorSpec((None, *image_shape), tf.float32),
        tf.TensorSpec((None,), tf.as_dtype(label_dtype)),
        tf.TensorSpec((None, batch_size), tf.int64),
        tf.TensorSpec((), tf.int64),
    ]

    @tf.function(input_signature=signature, jit_compile=training.jit_compile or None)
    def chunk(images, labels, indices, first_step):
        steps = tf.shape(indices)[0]
        losses = tf.TensorArray(tf.float32, size=steps, element_shape=())
        rates = tf.TensorArray(tf.float32, size=steps, element_shape=())
        scales = tf.TensorArray(tf.float32, size=steps, element_shape=())
        global_size = tf.constant(float(batch_size), tf.float32)
        for index in tf.range(steps):
            batch_images = tf.gather(images, indices[index])
            if fill_tensor is not None:
                batch_images = augment_batch(batch_images, first_step + tf.cast(index, tf.int64), training.seed, fill_tensor)
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
