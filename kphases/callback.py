"""Bring your own model: record the learning-phase snapshots of any Keras `model.fit` in a kphases run.

    run_dir = "runs/my_model"
    model.fit(x, y, epochs=..., callbacks=[kphases.SnapshotCallback(run_dir)])
    kphases.measure(run_dir, layers=["my_layer"], train_data=(x, y), test_data=(x_test, y_test))

`SnapshotCallback` writes the same run store as `kphases train` (`kphases.store`): the weights at
the schedule's iterations (`snapshots/step_<s>.weights.h5`, with sha256 records in
`manifest.json`), `config.json`, `provenance.json` and, when evaluation data is given,
classifier accuracy and loss at every snapshot in `metrics.csv`. It adds `model.json`, the
architecture (`model.to_json()`), so `kphases.measure` rebuilds the network without the user's
code; custom layers must be registered (`@keras.saving.register_keras_serializable()`) and their
module imported before measuring, which the callback checks before the first update by
rebuilding the model from `model.json`.

Iterations are optimiser updates, read from `model.optimizer.iterations` (which counts real
updates under gradient accumulation): iteration s is the network after s updates, taken before
update s + 1, the convention of `kphases train` (snapshot 0 is the initial network). The schedule
is the suite's (`kphases.schedule`): doubling, 0, 2, 4, 8, ..., or explicit steps. Counting
updates, not batches x epochs, keeps the schedule exact when the batch size does not divide the
dataset, across epochs and across several `fit` calls.

Keras calls batch callbacks once per `steps_per_execution` updates, so the weights between those
calls cannot be saved: the callback refuses `steps_per_execution` other than 1 (and refuses any
other jump of the iteration counter past a scheduled step).

Resuming: fit again on the same `run_dir` after an interruption with the weights and optimizer
state restored (`keras.callbacks.BackupAndRestore`, or `load_weights` of a compiled model's
checkpoint, which includes the optimizer). Existing snapshots are kept (never rewritten or
deleted) and the missing ones are added. Before the first update of every fit, the callback
checks that the directory holds this architecture and, if a snapshot of the current iteration
exists, that the model's weights equal it: a fresh, un-restored model on a used directory is
refused rather than mixed into the old run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kphases.config import RUN_KIND, ModelRunConfig, ScheduleConfig  # noqa: F401 (ModelRunConfig, RUN_KIND: re-exported)
from kphases.data import fingerprint
from kphases.schedule import explicit_schedule, is_scheduled, steps_up_to
from kphases.store import Run, StoreError, environment, jsonable, write_text_atomic
from kphases.training import classifier_metrics

ARCHITECTURE_FILE = "model.json"
DEFAULT_EVAL_SAMPLES = 2048
DEFAULT_MAX_SAMPLES = 10_000
REGISTRATION_ADVICE = (
    "custom layers (and custom models) must be registered with @keras.saving.register_keras_serializable() "
    "and implement get_config() covering their constructor arguments, and their module must be imported "
    "before measuring (or pass custom_objects={'Name': cls} to kphases.measure)"
)


# --- the run config (kphases.config.ModelRunConfig) -----------------------------------------------


def is_model_run(run: Run) -> bool:
    """True for a run recorded by `SnapshotCallback` (a user's model), False for a `kphases train` run."""
    return isinstance(run.config, ModelRunConfig)


# --- schedules ----------------------------------------------------------------------------------


def schedule_config(schedule: str | Sequence[int] | ScheduleConfig) -> ScheduleConfig:
    """'doubling' (0, 2, 4, 8, ...), a sequence of iterations, or a ScheduleConfig."""
    if isinstance(schedule, ScheduleConfig):
        config = schedule
    elif isinstance(schedule, str):
        if schedule != "doubling":
            raise ValueError(f"unknown schedule {schedule!r}; valid: 'doubling' or a sequence of iterations, e.g. [0, 10, 100]")
        config = ScheduleConfig()
    else:
        try:
            steps = tuple(int(step) for step in schedule)
        except (TypeError, ValueError):
            raise ValueError(f"schedule must be 'doubling' or a sequence of iterations, got {schedule!r}") from None
        config = ScheduleConfig(kind="explicit", steps=tuple(sorted(steps)))
    if config.kind == "explicit":
        explicit_schedule(config.steps, max(config.steps, default=0))  # non-empty, non-negative, no repeats
    elif config.kind != "doubling" or config.steps:
        raise ValueError(f"a schedule is doubling (no steps) or explicit, got {config}")
    return config


# --- architecture -------------------------------------------------------------------------------


def architecture_json(model: keras.Model) -> str:
    """`model.to_json()` without its compile config (optimizer and loss are provenance, not architecture)."""
    config = json.loads(model.to_json())
    config.pop("compile_config", None)
    return json.dumps(config)


def _rebuild(architecture: str, custom_objects: dict | None = None) -> keras.Model:
    return keras.models.model_from_json(architecture, custom_objects=custom_objects)


def _short_error(error: Exception) -> str:
    """Keras' deserialisation message without the object config it dumps (often kilobytes)."""
    text = str(error)
    if "Exception encountered:" in text:
        text = text[text.rindex("Exception encountered:") + len("Exception encountered:") :]
    for marker in (" Full object config", "\n\nconfig="):
        if marker in text:
            text = text[: text.index(marker)]
    text = text.strip()
    return text if len(text) <= 400 else text[:400] + " ..."


def load_run_model(run: Run, custom_objects: dict | None = None) -> keras.Model:
    """The network of a `SnapshotCallback` run, rebuilt from its `model.json` (weights: load a snapshot)."""
    path = run.directory / ARCHITECTURE_FILE
    if not path.is_file():
        raise StoreError(
            f"run {run.directory} has no {ARCHITECTURE_FILE}: it was not written by kphases.SnapshotCallback, or is incomplete"
        )
    try:
        return _rebuild(path.read_text(), custom_objects)
    except Exception as error:  # deserialisation raises TypeError/ValueError/KeyError... depending on what is missing
        raise StoreError(
            f"cannot rebuild the model of run {run.directory} from {path}: {_short_error(error)}\nNote: {REGISTRATION_ADVICE}."
        ) from error


def layer_names(model: keras.Model) -> list[str]:
    """The names `kphases.measure` accepts for a user's model: every top-level layer but the inputs, in order."""
    return [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _weight_signature(model: keras.Model) -> list[tuple[str, tuple, str]]:
    return [(variable.path, tuple(variable.shape), str(variable.dtype)) for variable in model.weights]


def _name_neutral(architecture: str) -> dict:
    """The architecture config with the model's and every layer's name replaced by its position.

    Layer names generated by Keras (dense, dense_1, ...) depend on what else the session built, so
    the same network rebuilt after an interruption may carry other names; the structure does not.
    """
    config = json.loads(architecture)
    layers = config.get("config", {}).get("layers", [])
    names = [config.get("config", {}).get("name")] + [layer.get("config", {}).get("name") for layer in layers]
    mapping = {name: f"<layer {index}>" for index, name in enumerate(names) if isinstance(name, str)}

    def neutral(value):
        if isinstance(value, dict):
            return {key: neutral(item) for key, item in value.items()}
        if isinstance(value, list):
            return [neutral(item) for item in value]
        return mapping.get(value, value) if isinstance(value, str) else value

    return neutral(config)


def _architecture_difference(stored: str, current: str) -> str | None:
    """None if the two architectures agree up to layer names, else a sentence naming the first difference."""
    a, b = _name_neutral(stored), _name_neutral(current)
    if a == b:
        return None
    layers_a, layers_b = a.get("config", {}).get("layers", []), b.get("config", {}).get("layers", [])
    names_a = [layer.get("config", {}).get("name") for layer in json.loads(stored).get("config", {}).get("layers", [])]
    names_b = [layer.get("config", {}).get("name") for layer in json.loads(current).get("config", {}).get("layers", [])]
    if a.get("class_name") != b.get("class_name"):
        return f"the stored model is a {a.get('class_name')}, this one a {b.get('class_name')}"
    if len(layers_a) != len(layers_b):
        return f"the stored model has {len(layers_a)} layers {names_a}, this one {len(layers_b)} {names_b}"
    for index, (layer_a, layer_b) in enumerate(zip(layers_a, layers_b)):
        if layer_a != layer_b:
            keys = sorted(
                key
                for key in set(layer_a.get("config", {})) | set(layer_b.get("config", {}))
                if layer_a.get("config", {}).get(key) != layer_b.get("config", {}).get(key)
            )
            return (
                f"layer {index} differs: stored {layer_a.get('class_name')} {names_a[index]!r}, this model's "
                f"{layer_b.get('class_name')} {names_b[index]!r}" + (f" (config keys {keys})" if keys else " (connections)")
            )
    return "the model-level config differs (inputs, outputs or settings)"


# --- data -----------------------------------------------------------------------------------------


def as_arrays(
    data, what: str, input_shape: Sequence[int | None] | None = None, max_samples: int = DEFAULT_MAX_SAMPLES
) -> tuple[np.ndarray, np.ndarray, str]:
    """(x float32, y int64 class labels, source) from (x, y) arrays or a finite tf.data dataset of (x, y).

    A dataset may yield batches or single examples (told apart by the rank of x against
    `input_shape`, the model's input without the batch axis); at most `max_samples` examples are
    read (more is cut, with a warning). Labels may be integers, (n, 1) or one-hot.
    """
    x, y, source = read_pairs(data, what, input_shape, max_samples)
    return x, class_labels(y, what), source


def read_pairs(
    data, what: str, input_shape: Sequence[int | None] | None = None, max_samples: int = DEFAULT_MAX_SAMPLES, warn: bool = True
) -> tuple[np.ndarray, np.ndarray, str]:
    """(x float32, y as given, source) of `as_arrays`, with the checks on x, without converting y.

    `warn`: warn when more than `max_samples` examples were given (False: the bound is the intent)."""
    if not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        source = "arrays"
        if len(x) > max_samples:
            if warn:
                warnings.warn(f"{what}: using the first {max_samples} of {len(x)} examples (max_samples)", stacklevel=3)
            x, y = x[:max_samples], y[:max_samples]
    elif _is_tf_dataset(data):
        x, y = _materialise(data, what, input_shape, max_samples, warn)
        source = "tf.data"
    else:
        raise TypeError(f"{what} must be a pair (x, y) of arrays or a tf.data.Dataset yielding (x, y) batches, got {type(data).__name__}")
    if x.dtype == object or y.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what}: x and y must be numeric arrays (single-input, single-output data), got dtypes {x.dtype}, {y.dtype}")
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"{what}: x and y must hold one row per example, got shapes {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError(f"{what} is empty")
    if input_shape is not None:
        expected = tuple(input_shape)
        if x.ndim != len(expected) + 1 or any(size is not None and size != actual for size, actual in zip(expected, x.shape[1:])):
            raise ValueError(f"{what}: x has shape {x.shape}; the model takes (n, {', '.join(str(size) for size in expected)})")
    return x.astype(np.float32, copy=False), y, source


def _is_tf_dataset(data) -> bool:
    return isinstance(data, tf.data.Dataset)


def _materialise(dataset, what: str, input_shape, max_samples: int, warn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(f"{what} is an infinite tf.data dataset (repeat()); pass a finite one, e.g. dataset.take(n)")
    xs, ys, count, truncated = [], [], 0, False
    for element in dataset.as_numpy_iterator():
        if count >= max_samples:
            truncated = True
            break
        if not isinstance(element, tuple) or len(element) not in (2, 3):
            raise ValueError(f"{what} must yield (x, y) pairs (or (x, y, sample_weight)), got an element of type {type(element).__name__}")
        x, y = np.asarray(element[0]), np.asarray(element[1])
        if input_shape is not None and x.ndim == len(input_shape):  # single examples, not batches
            x, y = x[None], y[None]
        if count + len(x) > max_samples:
            x, y, truncated = x[: max_samples - count], y[: max_samples - count], True
        xs.append(x)
        ys.append(y)
        count += len(x)
    if not xs:
        raise ValueError(f"{what} is empty")
    if truncated and warn:
        warnings.warn(f"{what}: read the first {count} examples only (max_samples={max_samples})", stacklevel=4)
    return np.concatenate(xs), np.concatenate(ys)


def class_labels(y: np.ndarray, what: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        y = np.argmax(y, axis=1)  # one-hot (or probabilities)
    if y.ndim != 1:
        raise ValueError(f"{what}: y must hold class labels, (n,), (n, 1) or one-hot (n, classes); got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{what}: y must hold integer class labels, got non-integer values of dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{what}: class labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


# --- the callback -----------------------------------------------------------------------------


class SnapshotCallback(keras.callbacks.Callback):
    """Write kphases snapshots of the model being fitted into `run_dir` (see the module docstring).

    Args:
        run_dir: the run directory: new or empty, or one this callback wrote for the same model
            (fitting again continues the run). A directory of another kind is refused.
        schedule: "doubling" (iterations 0, 2, 4, 8, ..., the suite's) or a sequence of iterations.
        train_data, test_data: optional (x, y) arrays or tf.data datasets of (x, y); when given,
            classifier accuracy (argmax) and loss (the compiled loss) on them are written to
            `metrics.csv` at every snapshot, like `kphases train` does (at most
            `eval_samples` examples each).
        eval_samples: the first this many examples of each of train_data and test_data are used.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        schedule: str | Sequence[int] = "doubling",
        *,
        train_data=None,
        test_data=None,
        eval_samples: int = DEFAULT_EVAL_SAMPLES,
    ):
        super().__init__()
        self.run_dir = Path(run_dir).expanduser()
        self.schedule = schedule_config(schedule)
        self._eval_sources = {split: data for split, data in (("train", train_data), ("test", test_data)) if data is not None}
        self.eval_samples = eval_samples
        self.run: Run | None = None
        self._shadow: keras.Model | None = None  # the rebuilt architecture: what snapshots are saved from
        self._reference: keras.Model | None = None  # a second copy to load stored snapshots into for comparison
        self._eval: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._pending_start = False
        self._last_iteration: int | None = None
        self._start_iteration: int | None = None
        self._initial_epoch: int | None = None
        self._fit_began = 0.0

    # --- keras hooks ---------------------------------------------------------------------------
    def on_train_begin(self, logs=None) -> None:
        model = self.model
        steps_per_execution = getattr(model, "steps_per_execution", 1)
        if steps_per_execution != 1:
            raise ValueError(
                f"kphases.SnapshotCallback needs steps_per_execution=1, the model was compiled with "
                f"steps_per_execution={steps_per_execution!r}: Keras then runs {steps_per_execution} optimiser updates per "
                "callback call, so the weights at the schedule's iterations (2, 4, 8, ...) cannot be saved exactly. "
                "Compile with steps_per_execution=1 (the default) for the fits you snapshot."
            )
        if getattr(model, "optimizer", None) is None:
            raise ValueError("kphases.SnapshotCallback counts iterations with model.optimizer.iterations: compile the model first")
        if not model.built or not model.weights:
            raise ValueError(
                f"model {model.name!r} is not built, so its initial weights (snapshot 0) do not exist yet: start it with "
                "keras.Input(shape=...) (Sequential or Functional), or call model.build(input_shape) before fit"
            )
        architecture = architecture_json(model)
        self._shadow = self._rebuild_checked(model, architecture)
        input_shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
        self._eval = {}
        for split, data in self._eval_sources.items():
            what = f"SnapshotCallback {split}_data"
            x, y, _ = read_pairs(data, what, input_shape, self.eval_samples, warn=False)
            self._eval[split] = (x, y, class_labels(y, what))
        self.run = self._open_or_create(model, architecture)
        self._pending_start = True
        self._initial_epoch = None
        self._last_iteration = None
        self._fit_began = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if self._pending_start and self._initial_epoch is None:
            self._initial_epoch = int(epoch)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        if not self._pending_start:
            return
        self._pending_start = False
        # Deferred to here, after every callback's on_train_begin (BackupAndRestore restores there),
        # and before the first update. Nothing of the run is changed before this check passes.
        step = self._iteration()
        self._last_iteration = self._start_iteration = step
        recorded = self.run.snapshot_steps()
        if step in recorded:
            difference = self._difference_from_snapshot(step)
            if difference is not None:
                raise StoreError(
                    f"{self.run_dir} holds another training run: its snapshot at iteration {step} differs from the weights of "
                    f"the model being fitted, now at optimizer.iterations={step} (largest difference {difference:.3g}). "
                    "To resume an interrupted fit, restore the weights and the optimizer state (keras.callbacks.BackupAndRestore, "
                    "or load_weights of a compiled model's checkpoint) so optimizer.iterations continues; otherwise use a new "
                    "run_dir. Existing snapshots are never overwritten."
                )
        elif step > 0 and not recorded:
            warnings.warn(
                f"the optimizer has already made {step} updates; {self.run_dir} gets no snapshot before iteration "
                f"{step} (iterations are counted by model.optimizer.iterations)",
                stacklevel=2,
            )
        self._record_provenance(self.model, start_iteration=step)
        self.run.update_manifest(complete=False, schedule_kind=self.schedule.kind)
        self._maybe_snapshot(step)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.run is None or self._last_iteration is None:
            return
        step = self._iteration()
        previous = self._last_iteration
        if step == previous:  # gradient accumulation: no update in this batch
            return
        if step < previous:
            raise RuntimeError(
                f"optimizer.iterations went back from {previous} to {step} during fit; snapshots of {self.run_dir} "
                "are labelled by it, so it must only grow"
            )
        missed = [s for s in steps_up_to(self.schedule, step - 1) if s > previous]
        if missed:
            raise RuntimeError(
                f"optimizer.iterations jumped from {previous} to {step} within one callback call, past the scheduled snapshot "
                f"iteration(s) {missed} of {self.run_dir}: kphases.SnapshotCallback needs one optimiser update per batch "
                f"callback (steps_per_execution=1, and a train_step with a single optimizer update)"
            )
        self._last_iteration = step
        self._maybe_snapshot(step)

    def on_train_end(self, logs=None) -> None:
        if self.run is None or self._last_iteration is None:  # no batch ran: nothing was recorded
            return
        step = self._iteration()
        last = max(step, int(self.run.manifest().get("last_iteration", 0)))  # a fit re-traversing old steps never shortens the run
        self.run.update_manifest(
            schedule=steps_up_to(self.schedule, last),
            last_iteration=last,
            steps_per_epoch=self.params.get("steps") if self.params else None,
            complete=True,
        )
        self._update_fit(end_iteration=step, finished=True, seconds=round(time.perf_counter() - self._fit_began, 3))

    # --- helpers -------------------------------------------------------------------------------
    def _iteration(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _rebuild_checked(self, model: keras.Model, architecture: str) -> keras.Model:
        try:
            rebuilt = _rebuild(architecture)
        except Exception as error:
            raise ValueError(
                f"kphases.SnapshotCallback saves the architecture of model {model.name!r} as JSON so kphases.measure can rebuild it "
                f"without your code, and rebuilding it from model.to_json() failed: {_short_error(error)}\nSupported: Keras 3 Functional and "
                f"Sequential models; {REGISTRATION_ADVICE}."
            ) from error
        if [signature[1:] for signature in _weight_signature(rebuilt)] != [signature[1:] for signature in _weight_signature(model)]:
            raise ValueError(
                f"model {model.name!r} rebuilt from model.to_json() has other weights than the model itself "
                f"({len(rebuilt.weights)} vs {len(model.weights)} variables): a custom layer's get_config() misses constructor "
                f"arguments; {REGISTRATION_ADVICE}."
            )
        return rebuilt

    def _open_or_create(self, model: keras.Model, architecture: str) -> Run:
        directory = self.run_dir
        config_path = directory / "config.json"
        if config_path.exists():
            try:
                run = Run.open(directory)
            except StoreError as error:
                raise StoreError(
                    f"{directory} holds a config.json kphases cannot read ({error}); give SnapshotCallback a new or empty run_dir"
                ) from error
            if not is_model_run(run):
                raise StoreError(
                    f"{directory} holds a run of another kind (trained by `kphases train`: "
                    f"{run.config.model.architecture} on {run.config.data.name}), not one recorded by "
                    "kphases.SnapshotCallback; give the callback its own run_dir (existing runs are never overwritten)"
                )
            stored_path = directory / ARCHITECTURE_FILE
            if not stored_path.is_file():
                raise StoreError(f"{directory} is a SnapshotCallback run without its {ARCHITECTURE_FILE}; it cannot be continued")
            stored = stored_path.read_text()
            if stored != architecture:
                difference = _architecture_difference(stored, architecture)
                if difference is not None:
                    raise StoreError(
                        f"{directory} holds the snapshots of a different model than {model.name!r}: {difference}. "
                        "Use a new run_dir for a new model (existing snapshots are never overwritten)."
                    )
                warnings.warn(
                    f"model {model.name!r} has other layer names than the model recorded in {directory} "
                    f"(same structure); measurement uses the recorded names in {stored_path}",
                    stacklevel=3,
                )
            if run.config.schedule != self.schedule:
                raise StoreError(
                    f"{directory} was recorded with schedule {run.config.schedule}, this callback asks for "
                    f"{self.schedule}; use the recorded schedule or a new run_dir"
                )
            return run
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"run_dir {directory} exists and is not a directory")
        if directory.is_dir() and any(directory.iterdir()):
            present = sorted(path.name for path in directory.iterdir())
            raise StoreError(
                f"{directory} is not empty and holds no kphases run (no config.json; it holds {present[:6]}); "
                "give SnapshotCallback a new or empty run_dir"
            )
        config = ModelRunConfig(
            model_name=model.name,
            model_class=type(model).__name__,
            architecture_sha256=hashlib.sha256(architecture.encode()).hexdigest(),
            input_shapes=tuple(tuple(tensor.shape[1:]) for tensor in model.inputs),
            output_shapes=tuple(tuple(tensor.shape[1:]) for tensor in model.outputs),
            schedule=self.schedule,
        )
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / ARCHITECTURE_FILE, architecture)
        write_text_atomic(config_path, config.to_json() + "\n")  # last: config.json marks a complete run directory
        return Run(directory, config)

    def _record_provenance(self, model: keras.Model, start_iteration: int) -> None:
        optimizer = model.optimizer
        try:
            compile_config = model.get_compile_config()
        except Exception as error:  # a compile argument Keras cannot serialise: record that, do not fail the fit
            compile_config = {"unavailable": repr(error)}
        provenance = self.run.provenance()
        fits = provenance.get("fits", [])
        fits.append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "params": jsonable(dict(self.params or {})),
                "initial_epoch": self._initial_epoch,
                "start_iteration": start_iteration,
                "steps_per_execution": getattr(model, "steps_per_execution", 1),
                "finished": False,
            }
        )
        values = {
            "recorded_by": "kphases.SnapshotCallback",
            **environment(),
            "model": {
                "name": model.name,
                "class": type(model).__name__,
                "parameters": int(model.count_params()),
                "layers": layer_names(model),
            },
            "optimizer": jsonable({"class": type(optimizer).__name__, "config": optimizer.get_config()}),
            "compile": jsonable(compile_config),
            "fits": fits,
        }
        if self._eval:
            values["eval_data"] = {
                split: {"examples": len(y), "input_shape": list(x.shape[1:]), "fingerprint": fingerprint(x, y)}
                for split, (x, y, _) in self._eval.items()
            }
        self.run.update_provenance(**values)

    def _update_fit(self, **values) -> None:
        fits = self.run.provenance().get("fits") or [{}]
        fits[-1].update(values)
        self.run.update_provenance(fits=fits)

    def _maybe_snapshot(self, step: int) -> None:
        if not is_scheduled(self.schedule, step):
            return
        run = self.run
        if str(step) in run.manifest()["snapshots"]:
            if step != self._start_iteration:  # (the start was compared before the first update)
                difference = self._difference_from_snapshot(step)
                if difference is not None:
                    warnings.warn(
                        f"iteration {step}: the weights differ from the stored snapshot in {self.run_dir} (largest "
                        f"difference {difference:.3g}); the stored snapshot is kept (snapshots are never rewritten)",
                        stacklevel=3,
                    )
            return
        path = run.snapshot_path(step)
        if path.exists():  # written by a process killed before it recorded the file: keep it aside, never overwrite it
            aside = path.with_name(f"{path.name}.unrecorded-{time.strftime('%Y%m%dT%H%M%S')}")
            path.rename(aside)
            warnings.warn(f"{path} was not in the manifest (a killed process?); moved to {aside.name}", stacklevel=3)
        for target, source in zip(self._shadow.weights, self.model.weights, strict=True):
            target.assign(source.value)
        rows = []
        for split, (x, y, labels) in self._eval.items():
            for metric, value in _classifier_metrics(self._shadow, self.model, x, y, labels).items():
                rows.append({"step": step, "split": split, "metric": f"classifier_{metric}", "value": value})
        if rows:
            run.append_metrics(rows)
        run.save_snapshot(self._shadow, step)  # last: a recorded snapshot implies its metrics are written
        self._update_fit(last_snapshot=step)

    def _difference_from_snapshot(self, step: int) -> float | None:
        """None if the model's weights equal the stored snapshot of `step` exactly, else the largest absolute difference."""
        if self._reference is None:
            self._reference = _rebuild(architecture_json(self.model))
        self.run.load_snapshot(self._reference, step)  # checks the file against its sha256 record
        largest = 0.0
        for stored, current in zip(self._reference.weights, self.model.weights, strict=True):
            a, b = np.asarray(keras.ops.convert_to_numpy(stored.value)), np.asarray(keras.ops.convert_to_numpy(current.value))
            if a.shape != b.shape:
                return float("inf")
            if not np.array_equal(a, b):
                largest = max(largest, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        return largest if largest > 0 else None


def _classifier_metrics(network: keras.Model, compiled: keras.Model, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (argmax of the output against the class labels) and the compiled loss on y as given, in inference mode."""
    loss_function = _loss_function(getattr(compiled, "loss", None))
    predict = getattr(network, "_kphases_predict", None)
    if predict is None:
        predict = tf.function(lambda batch: network(batch, training=False), reduce_retracing=True)
        network._kphases_predict = predict

    def loss_sum(targets, outputs) -> float:
        return float(np.mean(keras.ops.convert_to_numpy(loss_function(targets, outputs)))) * len(targets)

    return classifier_metrics(
        lambda batch: np.asarray(predict(batch)), x, labels, loss_sum if loss_function is not None else None, loss_targets=y
    )


def _loss_function(loss):
    if loss is None or isinstance(loss, (dict, list, tuple)):
        return None
    try:
        return keras.losses.get(loss) if isinstance(loss, str) else loss if callable(loss) else None
    except (ValueError, TypeError):
        return None
