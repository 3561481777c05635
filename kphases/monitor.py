"""PhaseMonitor: pick the pre-training checkpoint for transfer from the source images alone.

Serves the second half of the first paper's title (Schneider & Prabhushankar 2024, "...and
leveraging the learning phases"): its practical claim is that pre-training for transfer should
stop well before the source task's optimum, near the end of the reconstruction loss's decrease.
The `transfer` figure shows that after the fact with the target task's labels; a researcher
pre-training a network has no target labels yet. The monitor watches pre-training and names the
checkpoint to keep from the source images alone: it uses no labels at all, source or target.

What it does, at every scheduled step (the doubling schedule 0, 2, 4, 8, ... by default, or
every N steps):
1. extract the features of a fixed, seeded subset of the source train and test images at one
   layer (`penultimate` for the suite's networks; for other models the layer before the last);
2. fit the ridge-regularised exact decoder (`kphases.decoders.fit_linear_ridge_decoder`, the
   penalty chosen by GCV on the train subset) and keep its per-image test errors;
3. update the suite's verdict on the curve so far (`kphases.phases.phase_verdict` with its default
   settings: one seed, a paired bootstrap over the monitor's test images) and decide once the
   decrease and the rise after its minimum are both confident at `patience` consecutive measurements.

The decision names the checkpoint at the verdict's minimum (the end of the decrease), records
when (the step it was taken at) and why (the verdict's one-line description), and, with
`stop=True`, stops training. After the decision the monitor measures nothing more.

The rule (`MonitorRule`) is pure and sees only what was measured up to each step, so the
`early_stopping` figure replays it on stored snapshots (`replay_run`) and gets exactly the
decision a live monitor on the same schedule would have taken.

State: `<directory>/monitor/state.json` (settings, steps, mean curve, decision) and
`per_image_errors.npz` (the errors the verdict needs), written atomically after every
measurement, so a resumed training continues the same curve. As a Keras callback it also keeps
the weights of the one measured step a decision can still choose in `monitor/step_<s>.weights.h5`
(the end of the largest fall so far; of the first two steps, both), then only the chosen one
(`chosen.weights.h5`); inside `kphases train --monitor` (`TrainingMonitor`) the run's snapshots are the
checkpoints and nothing is copied.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from threadpoolctl import ThreadpoolController

from kphases.decoders import DecoderSettings, fit_linear_ridge_decoder
from kphases.features import BN_STATS_MODES, batchnorm_layers, extract_features
from kphases.measurement import enable_op_determinism
from kphases.phases import PLATEAU_MARGIN, PhaseVerdict, VerdictSettings, phase_verdict
from kphases.schedule import doubling_schedule, is_doubling_step
from kphases.store import atomic_path, jsonable, write_json_atomic

MONITOR_DIRECTORY = "monitor"
STATE_FILE = "state.json"
ERRORS_FILE = "per_image_errors.npz"
CHOSEN_WEIGHTS = "chosen.weights.h5"
DECODER_BLAS_THREADS = 1
"""BLAS threads of the monitor's ridge fit. Its matrices are small (512 features by default): the
eigendecomposition is bound by matrix-vector products, where a second thread buys little and, on a
shared CPU, makes each thread wait for the other. One thread is faster, and the per-image errors are
the same to float32 (`python -m benchmarks.monitor` prints the speed-up measured in its run)."""


@dataclass(frozen=True)
class MonitorSettings:
    """What the monitor measures and when it decides. Every field is recorded with its decision."""

    layer: str | None = None
    """Layer whose output is decoded; None: `penultimate` if the model has it, else the layer before the last."""
    every: int | None = None
    """Measure every N steps (from step 0); None: the doubling schedule 0, 2, 4, 8, ..."""
    train_subset: int = 1000
    """Size of the fixed, seeded subset of source train images the decoder is fitted on. The feature pass over
    the two subsets is most of a measurement's cost; 1,000 (rather than 2,000) keeps the monitor within 5% of
    the training it watches (`python -m benchmarks.monitor`), and replayed on the `early_stopping` runs it left
    every reading against the final checkpoint as it was (CHANGELOG: both subsets' costs and decisions)."""
    test_subset: int = 1000
    """Size of the fixed, seeded subset of source test images its per-image errors come from."""
    seed: int = 0
    """Seed of the two subsets and of the bootstrap."""
    bn_stats: str | None = None
    """BatchNorm statistics during feature extraction; None: `batch` (the authors') if the model has BatchNorm, else `stored`."""
    confidence: float = 0.95
    """Coverage of the verdict's intervals."""
    min_effect: float = PLATEAU_MARGIN
    """Smallest decrease and rise, as a fraction of the initial loss, that count (the verdict's default)."""
    patience: int = 1
    """Consecutive measurements at which the decrease and the rise must both be confident before deciding."""
    stop: bool = False
    """Stop training at the decision (Keras: `model.stop_training`; `kphases train`: the run ends there)."""
    bootstrap_samples: int = 1000
    """Paired bootstrap resamples of the test images per verdict."""

    def __post_init__(self) -> None:
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise ValueError(f"every must be None (doubling schedule) or an integer >= 1, got {self.every!r}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"patience must be an integer >= 1 (consecutive confident measurements), got {self.patience!r}")
        if self.bn_stats is not None and self.bn_stats not in BN_STATS_MODES:
            raise ValueError(f"bn_stats={self.bn_stats!r} is not valid; valid values: None, {list(BN_STATS_MODES)}")
        self.verdict_settings()  # confidence, min_effect, bootstrap_samples are checked there

    def verdict_settings(self) -> VerdictSettings:
        return VerdictSettings(
            confidence=float(self.confidence), min_effect=self.min_effect, bootstrap_samples=self.bootstrap_samples, seed=self.seed
        )

    def is_scheduled(self, step: int) -> bool:
        if self.every is not None:
            return step % self.every == 0
        return is_doubling_step(step)

    def scheduled_steps(self, last_step: int) -> list[int]:
        if self.every is not None:
            return list(range(0, last_step + 1, self.every))
        return doubling_schedule(last_step)


@dataclass(frozen=True)
class Decision:
    """The monitor's choice: which checkpoint to keep, when it was decided and why."""

    chosen_step: int
    """The checkpoint to keep: the step of the verdict's minimum (the end of the decrease)."""
    decided_at: int
    """The step whose measurement made the decision (training up to here was needed to decide)."""
    reason: str
    """The verdict's one-line description at the decision."""
    verdict: dict
    """The whole verdict at the decision (`PhaseVerdict.to_dict`)."""


class MonitorRule:
    """The monitor's decision rule, fed one measurement at a time; sees nothing of the future."""

    def __init__(self, settings: MonitorSettings = MonitorSettings()):
        self.settings = settings
        self.steps: list[int] = []
        self.errors: list[np.ndarray] = []
        self.confident_in_a_row = 0
        self.decision: Decision | None = None
        self.last_verdict: PhaseVerdict | None = None

    def observe(self, step: int, per_image_errors: np.ndarray) -> Decision | None:
        """Add the per-image test errors measured at `step`; the decision, once taken (then and after)."""
        if self.decision is not None:
            return self.decision
        errors = np.asarray(per_image_errors, dtype=np.float64).reshape(-1)
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"monitor steps must increase: got step {step} after {self.steps[-1]}")
        if self.errors and errors.shape != self.errors[0].shape:
            raise ValueError(
                f"step {step} has {errors.size} per-image errors, earlier steps {self.errors[0].size}: "
                "the monitor's test subset must stay the same"
            )
        if not np.all(np.isfinite(errors)):
            raise ValueError(f"step {step}: the decoder's per-image errors are not finite")
        self.steps.append(int(step))
        self.errors.append(errors)
        if len(self.steps) < 3:
            return None
        verdict = phase_verdict(self.steps, per_image_errors=np.stack(self.errors), settings=self.settings.verdict_settings())
        self.last_verdict = verdict
        self.confident_in_a_row = self.confident_in_a_row + 1 if (verdict.has_decrease and verdict.has_increase) else 0
        if self.confident_in_a_row >= self.settings.patience:
            self.decision = Decision(
                chosen_step=int(verdict.decrease.end_step),
                decided_at=int(step),
                reason=verdict.describe(),
                verdict=jsonable(verdict.to_dict()),
            )
        return self.decision

    # --- state on disk ----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / ERRORS_FILE, ".npz") as temp:
            np.savez(temp, steps=np.asarray(self.steps, dtype=np.int64), errors=np.stack(self.errors) if self.errors else np.zeros((0, 0)))
        curve = [float(row.mean()) for row in self.errors]
        write_json_atomic(
            directory / STATE_FILE,
            {
                "settings": dataclasses.asdict(self.settings),
                "steps": self.steps,
                "reconstruction_mse": curve,
                "confident_in_a_row": self.confident_in_a_row,
                "decision": None if self.decision is None else dataclasses.asdict(self.decision),
            },
        )

    @classmethod
    def load(cls, directory: Path, settings: MonitorSettings) -> "MonitorRule":
        """The rule as saved in `directory`, or a fresh one if nothing is saved; refuses other settings."""
        rule = cls(settings)
        state_path = directory / STATE_FILE
        if not state_path.exists():
            return rule
        try:
            state = json.loads(state_path.read_text())
            with np.load(directory / ERRORS_FILE) as stored:
                steps, errors = stored["steps"].tolist(), stored["errors"]
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"monitor state in {directory} is unreadable ({error}); move the directory aside to start the monitor afresh"
            ) from None
        if state.get("settings") != dataclasses.asdict(settings):
            raise ValueError(
                f"monitor state in {directory} was recorded with other settings ({state.get('settings')}); "
                f"use them, or move the directory aside to start afresh with {dataclasses.asdict(settings)}"
            )
        if steps != state.get("steps"):
            raise ValueError(
                f"monitor state in {directory} is inconsistent: {STATE_FILE} lists steps {state.get('steps')}, "
                f"{ERRORS_FILE} {steps}; move the directory aside to start afresh"
            )
        rule.steps, rule.errors = [int(step) for step in steps], [row for row in errors]
        rule.confident_in_a_row = int(state.get("confident_in_a_row", 0))
        if state.get("decision") is not None:
            rule.decision = Decision(**state["decision"])
        return rule


class Probe:
    """The monitor's measurement: features of fixed image subsets at one layer, the ridge decoder, per-image errors."""

    def __init__(self, settings: MonitorSettings, train_images: np.ndarray, test_images: np.ndarray):
        enable_op_determinism()  # its numbers then have the same bits in any process, as a measurement's
        self.settings = settings
        rng = np.random.default_rng(settings.seed)
        self.train = _subset(train_images, settings.train_subset, rng, "train")
        self.test = _subset(test_images, settings.test_subset, rng, "test")
        self.seconds = 0.0
        """Time spent measuring (feature extraction, decoder, verdict excluded), for the cost benchmark."""
        self.blas = ThreadpoolController()  # found once: inspecting the loaded libraries costs more than a small fit

    def layer(self, model: keras.Model) -> str:
        if self.settings.layer is not None:
            return self.settings.layer
        names = [layer.name for layer in model.layers]
        if "penultimate" in names:
            return "penultimate"
        if len(names) < 2:
            raise ValueError(f"model {model.name!r} has fewer than two layers; give MonitorSettings(layer=...)")
        return names[-2]

    def bn_stats(self, model: keras.Model) -> str:
        if self.settings.bn_stats is not None:
            return self.settings.bn_stats
        return "batch" if batchnorm_layers(model) else "stored"

    def __call__(self, model: keras.Model) -> np.ndarray:
        start = time.perf_counter()
        layer, mode = self.layer(model), self.bn_stats(model)
        train_features = extract_features(model, layer, self.train, mode)
        test_features = extract_features(model, layer, self.test, mode)
        result = self.fit_decoder(train_features, test_features)
        self.seconds += time.perf_counter() - start
        return np.asarray(result.test_errors_per_image, dtype=np.float64)

    def fit_decoder(self, train_features: np.ndarray, test_features: np.ndarray, blas_threads: int | None = DECODER_BLAS_THREADS):
        """The ridge decoder on the subsets' features with `blas_threads` BLAS threads (None: the process's setting)."""
        if blas_threads is None:
            return fit_linear_ridge_decoder(train_features, self.train, test_features, self.test, DecoderSettings(), train_error=False)
        with self.blas.limit(limits=blas_threads, user_api="blas"):
            return fit_linear_ridge_decoder(train_features, self.train, test_features, self.test, DecoderSettings(), train_error=False)


def _subset(images: np.ndarray, size: int, rng: np.random.Generator, split: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim < 2 or len(images) < 2:
        raise ValueError(f"monitor {split} images must be an array of at least 2 images, got shape {images.shape}")
    if len(images) <= size:
        return images.astype(np.float32, copy=False)
    return images[np.sort(rng.choice(len(images), size, replace=False))].astype(np.float32, copy=False)


class PhaseMonitor(keras.callbacks.Callback):
    """Keras callback: watch pre-training in `model.fit`, save and name the checkpoint to keep for transfer.

        monitor = kphases.PhaseMonitor("runs/pretrain", x_train, x_test, stop=True)
        model.fit(x_train, y_train, epochs=50, callbacks=[monitor])
        monitor.decision            # Decision(chosen_step=..., decided_at=..., reason=...)
        model.load_weights(monitor.chosen_weights)

    `train_images` / `test_images` are the source images as the model takes them (no labels are
    used). Steps are optimiser updates (`model.optimizer.iterations`), taken before the update,
    as `SnapshotCallback` counts them. Keyword arguments are `MonitorSettings` fields.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        train_images: np.ndarray,
        test_images: np.ndarray,
        settings: MonitorSettings | None = None,
        log: Callable[[str], None] | None = print,
        **fields: Any,
    ):
        super().__init__()
        self.settings = dataclasses.replace(settings or MonitorSettings(), **fields)
        self.directory = Path(directory) / MONITOR_DIRECTORY
        self.probe = Probe(self.settings, train_images, test_images)
        self.rule = MonitorRule.load(self.directory, self.settings)
        self.log = log or (lambda message: None)

    @property
    def decision(self) -> Decision | None:
        return self.rule.decision

    @property
    def chosen_weights(self) -> Path | None:
        """The saved weights of the chosen checkpoint (None before the decision)."""
        return self.directory / CHOSEN_WEIGHTS if self.rule.decision is not None else None

    def on_train_begin(self, logs=None) -> None:
        if self.rule.decision is not None and self.settings.stop:
            self.log(f"monitor: decided earlier (keep step {self.rule.decision.chosen_step}); stopping")
            self.model.stop_training = True

    def on_train_batch_begin(self, batch, logs=None) -> None:
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.observe(step, self.model, save=self._save_weights)

    def on_train_end(self, logs=None) -> None:
        # The network after the last update has not been seen by a batch-begin hook.
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.observe(step, self.model, save=self._save_weights)

    def _save_weights(self, step: int, model: keras.Model) -> None:
        with atomic_path(self.directory / f"step_{step}.weights.h5", ".weights.h5") as temp:
            model.save_weights(temp)

    def observe(self, step: int, model: keras.Model, save: Callable[[int, keras.Model], None] | None = None) -> Decision | None:
        """Measure `model` at `step` if the schedule says so and nothing is decided yet; the decision if taken."""
        if self.rule.decision is not None or not self.settings.is_scheduled(step) or step in self.rule.steps:
            return self.rule.decision
        if self.rule.steps and step < self.rule.steps[-1]:
            return None  # a resumed fit replaying steps the monitor has already seen
        decision = self.rule.observe(step, self.probe(model))
        candidate = self._candidate()
        if save is not None and candidate in (None, step):
            save(step, model)
        if decision is not None:
            self._keep_only_chosen(decision)
            self.log(f"monitor: at step {decision.decided_at} keep the checkpoint of step {decision.chosen_step}: {decision.reason}")
            if self.settings.stop:
                model.stop_training = True
        elif candidate is not None:
            self._keep_only(candidate)
        self.rule.save(self.directory)
        return decision

    def _candidate(self) -> int | None:
        """The one measured step a decision can still choose; None while every one can (no verdict yet).

        A decision keeps the end of the verdict's largest fall. Among the steps measured so far that
        pair is fixed (a new measurement adds pairs and leaves the old ones' sizes as they were), so a
        later decision chooses it or a step not yet measured: the weights of every other step need not be
        written, and saving a VGG-8's weights costs about as much as its features.
        """
        verdict = self.rule.last_verdict
        if verdict is None or self.rule.steps[-1] != verdict.steps[-1]:
            return None
        return verdict.decrease.end_step

    def _keep_only(self, step: int) -> None:
        for stored in self.directory.glob("step_*.weights.h5"):
            if stored.name != f"step_{step}.weights.h5":
                stored.unlink()

    def _keep_only_chosen(self, decision: Decision) -> None:
        chosen = self.directory / f"step_{decision.chosen_step}.weights.h5"
        if chosen.exists():
            os.replace(chosen, self.directory / CHOSEN_WEIGHTS)
        elif not (self.directory / CHOSEN_WEIGHTS).exists():
            warnings.warn(
                f"monitor: the weights of the chosen step {decision.chosen_step} are not in {self.directory} "
                "(deleted, or the state was copied without them); monitor.chosen_weights names a missing file",
                RuntimeWarning,
                stacklevel=2,
            )
        for leftover in self.directory.glob("step_*.weights.h5"):
            leftover.unlink()


class TrainingMonitor:
    """The monitor inside `kphases train` (`--monitor`): a training-loop callback, called at its steps only.

    The run's snapshots are its checkpoints (the doubling schedule is the snapshot schedule), so
    nothing is copied: the decision names the snapshot step to keep. The run trains to the length
    its config names (its config, and so its directory, stays that of the whole run); to stop at
    the decision, use `PhaseMonitor(stop=True)` in `model.fit`. State lives in `<run>/monitor/` and
    survives resume: a resumed run continues the same curve.
    """

    def __init__(
        self,
        train_images: np.ndarray,
        test_images: np.ndarray,
        last_step: int,
        settings: MonitorSettings = MonitorSettings(),
        log: Callable[[str], None] | None = print,
    ):
        if settings.stop:
            raise ValueError(
                "MonitorSettings(stop=True) is for model.fit (PhaseMonitor); kphases train records the decision "
                "and trains the run to the length its config names"
            )
        self.settings = settings
        self.steps = tuple(settings.scheduled_steps(last_step))
        """The steps the training loop calls this at (and returns to Python for)."""
        self.probe = Probe(settings, train_images, test_images)
        self.rule: MonitorRule | None = None
        self.log = log or (lambda message: None)

    def __call__(self, run, step: int, model: keras.Model, optimizer) -> None:
        directory = run.directory / MONITOR_DIRECTORY
        if self.rule is None:
            self.rule = MonitorRule.load(directory, self.settings)
        rule = self.rule
        if rule.decision is not None or step in rule.steps or (rule.steps and step < rule.steps[-1]):
            return
        decision = rule.observe(step, self.probe(model))
        rule.save(directory)
        if decision is not None:
            self.log(f"monitor: at step {decision.decided_at} keep the snapshot of step {decision.chosen_step}: {decision.reason}")

    @property
    def decision(self) -> Decision | None:
        return None if self.rule is None else self.rule.decision


def replay_run(
    run,
    model: keras.Model,
    train_images: np.ndarray,
    test_images: np.ndarray,
    settings: MonitorSettings = MonitorSettings(),
    directory: Path | None = None,
) -> MonitorRule:
    """The monitor replayed on a run's stored snapshots, in step order, stopping at its decision.

    `model` is a network of the run's architecture to load the snapshots into. Each decision uses
    only the snapshots up to its step, so it is the decision a live monitor on the same schedule
    would have taken. The monitor's steps must be among the run's snapshot steps (the doubling
    schedule is the suite's default); a scheduled step without a snapshot is an error naming both.
    With `directory`, the rule's state is saved there after every step and a replay resumes from it.
    """
    stored = run.snapshot_steps()
    wanted = settings.scheduled_steps(max(stored))
    missing = [step for step in wanted if step not in stored]
    if missing:
        raise ValueError(
            f"run {run.name} has no snapshots at the monitor's steps {missing} (snapshots: {stored}); "
            "use a monitor schedule within the snapshot steps (the doubling schedule, or every= their spacing)"
        )
    rule = MonitorRule.load(directory, settings) if directory is not None else MonitorRule(settings)
    probe = None
    for step in wanted:
        if rule.decision is not None:
            break
        if step in rule.steps:
            continue
        probe = probe or Probe(settings, train_images, test_images)
        run.load_snapshot(model, step)
        rule.observe(step, probe(model))
        if directory is not None:
            rule.save(directory)
    return rule
