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
"""
from __future__ import annotations

import math
import os
import platform
import time
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

Callback = Callable[[Run, int, keras.Model, keras.optimizers.Optimizer], None]
EVAL_BATCH_SIZE = 512


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
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=training.momentum)


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
        function = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._kphases_predict = function
    return function(images).numpy()


# --- standard callbacks ---------------------------------------------------------------------------

def snapshot_callback(dataset: Dataset, plan: Plan) -> Callback:
    """At each schedule step: save the weights and log classifier train/test accuracy and loss."""
    scheduled = set(plan.snapshot_steps)

    def callback(run: Run, step: int, model: keras.Model, optimizer) -> None:
        if step not in scheduled or step in run.snapshot_steps():
            return
        rows = []
        for split, images, labels in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
            for metric, value in evaluate(model, images, labels).items():
                rows.append({"step": step, "split": split, "metric": f"classifier_{metric}", "value": value})
        run.append_metrics(rows)
        run.save_snapshot(model, step)

    return callback


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
          dataset: Dataset | None = None, start: Start | None = None) -> Run:
    """Train the run `config` describes into its run directory; return the run.

    A complete run is returned as it is; a partial one resumes from its checkpoint. `dataset`
    (already loaded from `config.data`) avoids loading the same data twice. `start`: weights,
    first step and masks of a run with a lineage (built by `kphases.early_phase.train_lineage`).
    """
    if (config.lineage != LineageConfig()) != (start is not None):
        raise ValueError(f"a run with a lineage ({config.lineage}) needs its start (kphases.early_phase.train_lineage builds it), "
                         f"and only such a run takes one; got start={'given' if start is not None else 'None'}")
    run = Run.create(runs_dir, config)
    if run.complete:
        return run
    dataset = dataset or load_dataset(config.data, data_dir)
    plan = make_plan(config, len(dataset.y_train))
    set_determinism(config.training.seed)
    model = build_model(config.model, dataset.image_shape, dataset.num_classes)
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
                          cpu_count=os.cpu_count(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    step_function = _make_step(model, optimizer, config.training.weight_decay, start.masks if start else None)
    all_callbacks = [snapshot_callback(dataset, plan), checkpoint_callback(plan, checkpoint_every), *callbacks]
    training = config.training
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
        loss = float(step_function(images, dataset.y_train[indices]))
        if not math.isfinite(loss):
            raise TrainingError(f"loss is {loss} at step {step} of run {run.directory} (learning rate {training.learning_rate}); "
                                "stopping: nothing after this step would be meaningful")
        if bar is not None:
            bar.update(1)
            if step % 16 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
    if bar is not None:
        bar.close()
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


def _make_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, weight_decay: float,
               masks: dict[str, np.ndarray] | None = None):
    variables = model.trainable_variables
    # Momentum and weight decay would move a pruned weight off zero: re-zero it after every update.
    masked = [(variable, tf.constant(masks[variable.path], dtype=variable.dtype)) for variable in variables
              if masks and variable.path in masks]

    @tf.function(reduce_retracing=True)
    def step_function(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        gradients = tape.gradient(loss, variables)
        if weight_decay:
            gradients = [gradient + weight_decay * variable for gradient, variable in zip(gradients, variables)]
        optimizer.apply_gradients(zip(gradients, variables))
        for variable, mask in masked:
            variable.assign(variable * mask)
        return loss

    return step_function


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {name}", unit="it", dynamic_ncols=True)
