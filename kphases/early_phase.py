"""The early-phase experiments of Frankle, Schwab & Morcos (ICLR 2020), on the run store.

Every training is an ordinary run of `kphases.training.train` whose `RunConfig.lineage` says where
its start comes from: which run's snapshot it is rewound to, which run's final weights were pruned
for its mask, which perturbation was applied, which task it learns. The lineage names its parent
runs by their hashes, so the whole ancestry is in the hash of each run: a finished run is reused
by any later experiment that needs it, and a changed parent gives a new child. Drivers:

- `experiment_runs`: iterative magnitude pruning with rewinding to iteration k. Round 0 is the dense
  run; round r is trained from the dense run's iteration-k snapshot under the mask that prunes
  `prune_fraction` of what round r-1 kept (magnitudes of round r-1's final weights). Retraining
  continues at step k with the same schedule and data order (open_lth's rewinding); k = 0 is the
  lottery-ticket baseline.
- perturbations: the round-r run of rewind point k, with the iteration-k weights perturbed before
  the same mask is applied (`kphases.pruning.perturb`).
- `pretrain_config` / data dependence: k iterations from the dense run's initialisation on random
  labels, blurred images or rotation prediction (a 4-class head of its own, dropped afterwards:
  the class head comes from the initialisation), then the round-r mask of rewind point k and
  retraining from those weights. Departure from the paper, for the compute budget: the paper runs
  IMP afresh from each pre-trained network; we reuse the unperturbed lineage's mask.
- the output layer: `ExperimentConfig.prune_output_layer` (open_lth prunes it for its ResNets
  and not for its VGGs); the pruned layers are also the ones a perturbation changes. A lineage
  prunes one set of layers from its first round to its last (a mixed chain is refused by name).
- `early_statistics`: from the dense run's snapshots, the change of the first iterations: relative
  distance from initialisation, fraction of signs flipped since initialisation, change per
  iteration since the previous snapshot, gradient norm on a fixed batch, and train/test accuracy.

The experiment's config is `kphases.config.ExperimentConfig`; its verdicts (a start against
another over seeds, and Frankle et al.'s premise) are in `kphases.early_phase_verdicts`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from kphases import pruning
from kphases.config import TASKS, ExperimentConfig, LineageConfig, RunConfig, ScheduleConfig, TrainingConfig
from kphases.data import Dataset, load_dataset
from kphases.models import build_model
from kphases.store import Run, StoreError, resolve_runs_dir
from kphases.training import Start, make_plan, train

BLUR_FACTOR = 4  # blurred images: 4x4 block means, repeated back to full size
ROTATION_CLASSES = 4  # 0, 90, 180, 270 degrees


# --- data of the pre-training tasks ------------------------------------------------------------


def rotate_images(images: np.ndarray, quarter_turns: np.ndarray) -> np.ndarray:
    """Each NHWC image rotated counter-clockwise by its number of quarter turns (0..3), exactly (np.rot90)."""
    quarter_turns = np.asarray(quarter_turns)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"rotation needs square images, got {images.shape[1]}x{images.shape[2]}")
    if quarter_turns.shape != (len(images),) or not np.isin(quarter_turns, range(ROTATION_CLASSES)).all():
        raise ValueError(f"quarter_turns must be one of 0..3 per image ({len(images)}), got {quarter_turns}")
    return np.stack([np.rot90(image, turns, axes=(0, 1)) for image, turns in zip(images, quarter_turns)]) if len(images) else images.copy()


def blur_images(images: np.ndarray, factor: int = BLUR_FACTOR) -> np.ndarray:
    """Downsample by `factor` (block means) and upsample back by repetition: the detail below `factor` pixels is gone."""
    count, height, width, channels = images.shape
    if height % factor or width % factor:
        raise ValueError(f"blur factor {factor} must divide the image size {height}x{width}")
    blocks = images.reshape(count, height // factor, factor, width // factor, factor, channels).mean(axis=(2, 4))
    return np.repeat(np.repeat(blocks, factor, axis=1), factor, axis=2).astype(images.dtype)


def task_dataset(dataset: Dataset, task: str, seed: int) -> Dataset:
    """The dataset relabelled or transformed for a pre-training task (train and test alike)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")
    if task == "classes":
        return dataset
    rng = np.random.default_rng([seed, TASKS.index(task)])
    if task == "random_labels":
        return dataclasses.replace(
            dataset,
            y_train=rng.integers(0, dataset.num_classes, len(dataset.y_train)),
            y_test=rng.integers(0, dataset.num_classes, len(dataset.y_test)),
            fingerprint=f"{dataset.fingerprint}+random_labels{seed}",
        )
    if task == "blur":
        return dataclasses.replace(
            dataset,
            x_train=blur_images(dataset.x_train),
            x_test=blur_images(dataset.x_test),
            fingerprint=f"{dataset.fingerprint}+blur{BLUR_FACTOR}",
        )
    if task == "rotation":
        train_turns = rng.integers(0, ROTATION_CLASSES, len(dataset.y_train))
        test_turns = rng.integers(0, ROTATION_CLASSES, len(dataset.y_test))
        return dataclasses.replace(
            dataset,
            x_train=rotate_images(dataset.x_train, train_turns),
            y_train=train_turns,
            x_test=rotate_images(dataset.x_test, test_turns),
            y_test=test_turns,
            num_classes=ROTATION_CLASSES,
            fingerprint=f"{dataset.fingerprint}+rotation{seed}",
        )
    raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")


# --- building a run's start from its lineage -----------------------------------------------------


def _open_parent(runs_dir, name: str, what: str) -> Run:
    directory = resolve_runs_dir(runs_dir) / name
    if not (directory / "config.json").is_file():
        raise StoreError(f"{what} run {name!r} is not under {str(resolve_runs_dir(runs_dir))!r}; train it first")
    return Run.open(directory)


def _model(config: RunConfig, dataset: Dataset, seed: int | None = None) -> keras.Model:
    # A fresh network of the config's task (`dataset`: the base dataset, for the image shape and
    # number of classes), from the run's seed (its initialisation) unless another seed is given.
    keras.utils.set_random_seed(config.training.seed if seed is None else seed)
    classes = ROTATION_CLASSES if config.lineage.task == "rotation" else dataset.num_classes
    return build_model(config.model, dataset.image_shape, classes)


def snapshot_weights(run: Run, step: int, dataset: Dataset) -> pruning.Weights:
    """The weights (by path) of `run`'s snapshot at `step`."""
    model = _model(run.config, dataset)
    run.load_snapshot(model, step)
    return pruning.weights_by_path(model)


def final_weights(run: Run, dataset: Dataset) -> pruning.Weights:
    last = run.manifest().get("last_iteration")
    if not run.complete or last not in run.snapshot_steps():
        raise StoreError(
            f"run {run.name} is not complete with a snapshot at its last iteration ({last}); snapshots: {run.snapshot_steps()}"
        )
    return snapshot_weights(run, last, dataset)


def lineage_masks(config: RunConfig, runs_dir, dataset: Dataset) -> pruning.Masks | None:
    """The mask a config's lineage implies: its mask run's own mask pruned further by magnitude; None if dense."""
    lineage = config.lineage
    if not lineage.mask_run:
        return None
    parent = _open_parent(runs_dir, lineage.mask_run, "mask")
    weights = final_weights(parent, dataset)
    paths = pruning.prunable_paths(_model(parent.config, dataset), include_output=lineage.prune_output_layer)
    masks = lineage_masks(parent.config, runs_dir, dataset) or pruning.dense_masks(weights, paths)
    if sorted(masks) != sorted(paths):
        raise ValueError(
            f"mask run {parent.name} pruned {sorted(masks)} but this lineage prunes {sorted(paths)} "
            f"(prune_output_layer={lineage.prune_output_layer}): one lineage prunes one set of layers"
        )
    return pruning.prune_globally(weights, masks, lineage.prune_fraction)


def build_start(config: RunConfig, runs_dir, dataset: Dataset) -> Start:
    """The weights, first step and masks of a run with a lineage (`dataset`: the base dataset of `config.data`)."""
    lineage = config.lineage
    model = _model(config, dataset)
    weights = pruning.weights_by_path(model)  # the seed's initialisation
    if lineage.rewind_run:
        parent = _open_parent(runs_dir, lineage.rewind_run, "rewind")
        rewound = snapshot_weights(parent, lineage.rewind_step, dataset)
        for path, value in weights.items():
            source = rewound.get(path)
            if source is not None and source.shape == value.shape:
                weights[path] = source
            elif not path.startswith("logits/"):
                raise ValueError(
                    f"rewind run {parent.name} has no weights of shape {value.shape} for {path!r}: "
                    "only the output layer may differ (a task with another number of classes)"
                )
            # else: the output layer of another task (rotation's 4 classes): keep this run's initial head
    elif lineage.rewind_step:
        raise ValueError(f"rewind_step {lineage.rewind_step} needs a rewind_run to take the weights from")
    masks = lineage_masks(config, runs_dir, dataset)
    if lineage.perturbation != "none":
        if masks is None:
            raise ValueError(f"perturbation {lineage.perturbation!r} acts on a pruned network; give a mask_run")
        fresh = pruning.weights_by_path(_model(config, dataset, seed=10_000 + lineage.perturbation_seed))
        init_std = {path: float(np.std(fresh[path])) for path in masks}  # the pruned layers are the perturbed ones
        weights = pruning.perturb(lineage.perturbation, weights, masks, lineage.perturbation_seed, fresh=fresh, init_std=init_std)
    if masks is not None:
        weights = pruning.rewind(weights, masks)
    return Start(weights=pruning.weights_list(model, weights), step=lineage.rewind_step, masks=masks or {})


def train_lineage(
    config: RunConfig,
    runs_dir=None,
    data_dir=None,
    progress: bool = False,
    dataset: Dataset | None = None,
    read_only: bool = False,
    callbacks=(),
) -> Run:
    """Train (or reuse) the run of `config`, building its start from its lineage; parents must be trained.

    `read_only`: never train; the run must be complete already (StoreError naming it otherwise).
    """
    if read_only:
        directory = resolve_runs_dir(runs_dir) / config.hash()
        if not (directory / "config.json").is_file() or not Run.open(directory).complete:
            raise StoreError(f"run {directory} ({config.lineage}) is not trained; run without --plot-only first")
        return Run.open(directory)
    if config.lineage == LineageConfig():
        return train(config, runs_dir=runs_dir, data_dir=data_dir, progress=progress, dataset=dataset, callbacks=callbacks)
    existing = Run.find(runs_dir, config)  # creates nothing: train() creates the directory after checking the config
    if existing is not None and existing.complete:
        return existing
    base = dataset or load_dataset(config.data, data_dir)
    start = build_start(config, runs_dir, base)
    data = task_dataset(base, config.lineage.task, config.training.seed)
    return train(config, runs_dir=runs_dir, data_dir=data_dir, progress=progress, dataset=data, start=start, callbacks=callbacks)


# --- the experiment -------------------------------------------------------------------------------


def dense_schedule(rewind_steps, last_iteration: int) -> ScheduleConfig:
    """Doubling steps plus 1, every rewind step and the last iteration: the dense run's snapshots."""
    steps = {0, 1, last_iteration, *rewind_steps}
    power = 2
    while power < last_iteration:
        steps.add(power)
        power *= 2
    return ScheduleConfig(kind="explicit", steps=tuple(sorted(steps)))


def retrain_config(experiment: ExperimentConfig, last_iteration: int, lineage: LineageConfig) -> RunConfig:
    # Snapshots at the start (the rewound, masked network) and at the end only: the figure needs the end.
    steps = tuple(sorted({lineage.rewind_step, last_iteration}))
    return experiment.base.replace(schedule=ScheduleConfig(kind="explicit", steps=steps), lineage=lineage)


def pretrain_config(experiment: ExperimentConfig, dense: str, task: str) -> RunConfig:
    """k iterations on `task` from the dense run's (hash `dense`) initialisation, at the base run's learning rate."""
    steps = experiment.pretrain_steps
    training: TrainingConfig = experiment.base.training
    training = dataclasses.replace(training, duration=f"{steps}it", lr_milestones=())
    return experiment.base.replace(
        training=training,
        schedule=ScheduleConfig(kind="explicit", steps=(0, steps)),
        lineage=LineageConfig(task=task, rewind_run=dense, rewind_step=0),
    )


def last_iteration(config: RunConfig, dataset: Dataset) -> int:
    return make_plan(config, len(dataset.y_train)).last_iteration


@dataclasses.dataclass(frozen=True)
class ExperimentRun:
    """One run of the experiment and the row of the figure it gives."""

    config: RunConfig
    experiment: str
    """"imp" (the dense run and the IMP lineages), "perturbation", "pretrain" or "data"."""
    variant: str
    rewind_step: int
    round: int
    step: int
    """The iteration whose test accuracy is the row's value (the run's last)."""

    def describe(self, sparsity: float, accuracy: float) -> str:
        where = f"k={self.rewind_step}, round {self.round}, sparsity {sparsity:.3f}"
        if self.variant == "dense":
            where = "dense"
        elif self.experiment == "pretrain":
            where = f"{self.step} iterations on its own task"
        return f"{self.experiment} {self.variant} ({where}): test accuracy {accuracy:.4f} [{self.config.hash()}]"


def experiment_runs(experiment: ExperimentConfig, last: int) -> list[ExperimentRun]:
    """Every run of the experiment, parents first, in the order `run_experiment` trains them (`last`:
    the dense run's last iteration). A run's parents are its lineage's `rewind_run` and `mask_run`
    (run hashes), so this list is also the experiment's task graph (`reproduce.plan`)."""
    base = experiment.base
    dense = base.hash()
    runs = [ExperimentRun(base, "imp", "dense", 0, 0, last)]

    def lineage(rewind_run: str, rewind_step: int, mask_run: str, **extra) -> LineageConfig:
        return LineageConfig(
            rewind_run=rewind_run,
            rewind_step=rewind_step,
            mask_run=mask_run,
            prune_fraction=experiment.prune_fraction,
            prune_output_layer=experiment.prune_output_layer,
            **extra,
        )

    chains: dict[int, list[str]] = {}
    for rewind_step in experiment.rewind_steps:
        parent, chains[rewind_step] = dense, []
        for round_index in range(1, experiment.rounds + 1):
            config = retrain_config(experiment, last, lineage(dense, rewind_step, parent))
            runs.append(ExperimentRun(config, "imp", f"rewind k={rewind_step}", rewind_step, round_index, last))
            parent = config.hash()
            chains[rewind_step].append(parent)

    def mask_parent(k: int, round_index: int) -> str:
        return dense if round_index == 1 else chains[k][round_index - 2]

    k = experiment.perturbation_rewind_step
    for round_index in experiment.perturbation_rounds:
        for kind in experiment.perturbations:
            # each seed of the experiment its own draw
            config = retrain_config(
                experiment, last, lineage(dense, k, mask_parent(k, round_index), perturbation=kind, perturbation_seed=base.training.seed)
            )
            runs.append(ExperimentRun(config, "perturbation", kind, k, round_index, last))
    k = experiment.pretrain_steps
    for task in experiment.tasks:
        pretrained = pretrain_config(experiment, dense, task)
        runs.append(ExperimentRun(pretrained, "pretrain", task, k, 0, k))  # accuracy on the pre-training task itself
        for round_index in experiment.data_rounds:
            config = retrain_config(experiment, last, lineage(pretrained.hash(), k, mask_parent(k, round_index)))
            runs.append(ExperimentRun(config, "data", task, k, round_index, last))
    return runs


def run_experiment(
    experiment: ExperimentConfig,
    runs_dir=None,
    data_dir=None,
    progress: bool = False,
    log=print,
    dataset: Dataset | None = None,
    read_only: bool = False,
) -> pd.DataFrame:
    """Train (or reuse) every run of the experiment; tidy rows of its results (`dataset`: already loaded base data).

    `read_only`: train nothing, every run must be in the store (drawing from a shared run directory).
    """
    base = experiment.base
    dataset = dataset or load_dataset(base.data, data_dir)
    last = last_iteration(base, dataset)
    if experiment.pretrain_steps >= last or max(experiment.rewind_steps) >= last:
        raise ValueError(f"rewind steps {experiment.rewind_steps} must be below the last iteration {last}")
    wanted = dense_schedule(experiment.rewind_steps, last)
    if base.schedule != wanted:
        raise ValueError(f"the dense run's schedule must be {wanted} (kphases.early_phase.dense_schedule), got {base.schedule}")
    rows: list[dict] = []
    runs = {}
    for planned in experiment_runs(experiment, last):
        run = runs[planned.config.hash()] = train_lineage(planned.config, runs_dir, data_dir, progress, dataset, read_only)
        sparsity = _sparsity(run, runs_dir, dataset)
        rows.append(_result(planned, sparsity, run))
        log(planned.describe(sparsity, rows[-1]["value"]))
    dense = runs[base.hash()]
    statistics = early_statistics(dense, dataset, pruning.prunable_paths(_model(base, dataset)), experiment.statistics_examples)
    return pd.concat([pd.DataFrame(rows), statistics], ignore_index=True)


def _final(run: Run, split: str, step: int | None = None) -> float:
    metrics = run.metrics()
    step = run.manifest()["last_iteration"] if step is None else step
    chosen = metrics[(metrics["step"] == step) & (metrics["split"] == split) & (metrics["metric"] == "classifier_accuracy")]
    if chosen.empty:
        raise StoreError(f"run {run.name} has no {split} accuracy at step {step}")
    return float(chosen["value"].iloc[-1])


def _sparsity(run: Run, runs_dir, dataset: Dataset) -> float:
    masks = lineage_masks(run.config, runs_dir, dataset)
    return 0.0 if masks is None else pruning.sparsity(masks)


def _result(planned: ExperimentRun, sparsity: float, run: Run) -> dict:
    return {
        "experiment": planned.experiment,
        "variant": planned.variant,
        "rewind_step": planned.rewind_step,
        "round": planned.round,
        "sparsity": sparsity,
        "step": planned.step,
        "metric": "test_accuracy",
        "split": "test",
        "value": _final(run, "test", planned.step),
        "run": run.name,
    }


def gradient_norm(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Global L2 norm of the mean cross-entropy's gradient over all trainable variables (training-mode BatchNorm)."""
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    return float(tf.linalg.global_norm(gradients))


def early_statistics(dense: Run, dataset: Dataset, paths: list[str], examples: int) -> pd.DataFrame:
    """Per-snapshot change of the dense run's prunable weights and its gradient norm and accuracy."""
    steps = dense.snapshot_steps()
    model = _model(dense.config, dataset)
    images, labels = dataset.x_train[:examples], dataset.y_train[:examples]
    metrics = dense.metrics()
    rows, initial, previous, previous_step = [], None, None, None
    for step in steps:
        dense.load_snapshot(model, step)
        weights = np.concatenate([_variable(model, path).ravel() for path in paths])
        if initial is None:
            initial = weights
        values = {
            "distance_from_init": float(np.linalg.norm(weights - initial) / np.linalg.norm(initial)),
            "sign_flips_since_init": float(np.mean(np.sign(weights) != np.sign(initial))),
            "change_per_iteration": (
                float(np.linalg.norm(weights - previous) / np.linalg.norm(initial) / (step - previous_step))
                if previous is not None
                else np.nan
            ),
            "gradient_norm": gradient_norm(model, images, labels),
        }
        for split in ("train", "test"):
            chosen = metrics[(metrics["step"] == step) & (metrics["split"] == split) & (metrics["metric"] == "classifier_accuracy")]
            values[f"{split}_accuracy"] = float(chosen["value"].iloc[-1]) if not chosen.empty else np.nan
        for metric, value in values.items():
            rows.append(
                {
                    "experiment": "statistics",
                    "variant": "dense",
                    "rewind_step": 0,
                    "round": 0,
                    "sparsity": 0.0,
                    "step": step,
                    "metric": metric,
                    "split": "train" if metric != "test_accuracy" else "test",
                    "value": value,
                    "run": dense.name,
                }
            )
        previous, previous_step = weights, step
    return pd.DataFrame(rows)


def _variable(model: keras.Model, path: str) -> np.ndarray:
    for variable in model.weights:
        if variable.path == path:
            return variable.numpy()
    raise KeyError(f"model has no variable {path!r}")


__all__ = [
    "run_experiment",
    "experiment_runs",
    "ExperimentRun",
    "train_lineage",
    "build_start",
    "lineage_masks",
    "rotate_images",
    "blur_images",
    "task_dataset",
    "early_statistics",
    "dense_schedule",
]
