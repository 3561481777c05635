"""TensorBoard summaries of training and measurement, written with `tf.summary` (off by default).

Asked for with `--tensorboard` (`python -m kphases train ... --tensorboard`, `python -m kphases
measure <run> --tensorboard`) or `tensorboard=True` (`kphases.training.train`, `kphases.measurement.measure`),
a run writes event files under

    <run>/tensorboard/train      loss and learning_rate at every step (the mini-batch of update s+1
                                 at step s), classifier_accuracy/<split> and classifier_loss/<split>
                                 at every snapshot step, loss_scale under mixed precision
    <run>/tensorboard/measure    <metric>/<layer>/<instrument>/<bn_stats>/<split> at every measured
                                 snapshot step, e.g. reconstruction_mse/penultimate/linear/batch/test

so `tensorboard --logdir runs` shows every run's curves while they are being written. Instead of
True, a directory may be given: the summaries then go to `<directory>/<run hash>/{train,measure}`.

When off, nothing is created or written. The event files are TensorBoard's own format,
written by `tf.summary.create_file_writer`; `tf.summary.scalar` needs the `tensorboard` package
(`pip install tensorboard`, which also gives the `tensorboard` command).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

TensorBoardOption = bool | str | os.PathLike | None
TRAIN, MEASURE = "train", "measure"
# Flush at least this often, so a live `tensorboard --logdir runs` sees new points within seconds.
FLUSH_MILLIS = 5000


def log_dir(run, tensorboard: TensorBoardOption, kind: str) -> Path | None:
    """Where `kind` ('train' or 'measure') summaries of `run` go; None when TensorBoard is off."""
    if tensorboard is None or tensorboard is False:
        return None
    if tensorboard is True:
        return Path(run.directory) / "tensorboard" / kind
    return Path(tensorboard).expanduser() / Path(run.directory).name / kind


class Summaries:
    """One TensorBoard event-file writer: scalars by tag and step."""

    def __init__(self, directory: str | os.PathLike):
        if importlib.util.find_spec("tensorboard") is None:
            raise RuntimeError(
                "TensorBoard summaries need the tensorboard package (tf.summary.scalar is implemented there): pip install tensorboard"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(str(self.directory), flush_millis=FLUSH_MILLIS)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        with self._writer.as_default(step=int(step)):
            for tag, value in values.items():
                tf.summary.scalar(tag, float(value))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def training_summaries(run, tensorboard: TensorBoardOption) -> Summaries | None:
    """The writer of a training's summaries, or None when TensorBoard is off."""
    directory = log_dir(run, tensorboard, TRAIN)
    return None if directory is None else Summaries(directory)


def measurement_tag(row: Mapping[str, Any]) -> str:
    """`<metric>/<layer>/<instrument>/<bn_stats>/<split>` of one tidy measurement row."""
    return "/".join(str(row[key]) for key in ("metric", "layer", "instrument", "bn_stats", "split"))


# One writer per measurement log directory for the life of the process: a new writer would start a
# new event file for every (snapshot, BatchNorm mode, layer) group.
_MEASUREMENT_WRITERS: dict[Path, Summaries] = {}


def write_measurements(run, rows: Iterable[Mapping[str, Any]], tensorboard: TensorBoardOption) -> None:
    """Write measurement rows (the tidy rows of `kphases.measurement`) as scalars; nothing when off."""
    directory = log_dir(run, tensorboard, MEASURE)
    if directory is None:
        return
    key = directory.resolve()
    writer = _MEASUREMENT_WRITERS.get(key)
    if writer is None or not writer.directory.is_dir():
        writer = _MEASUREMENT_WRITERS[key] = Summaries(directory)
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), {})[measurement_tag(row)] = float(row["value"])
    for step, values in sorted(by_step.items()):
        writer.scalars(step, values)
    writer.flush()


def read_scalars(directory: str | os.PathLike) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the event files under `directory` (for tests and scripts)."""
    result: dict[str, dict[int, float]] = {}
    for path in sorted(Path(directory).rglob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):  # what tf.compat.v1.train.summary_iterator reads, undeprecated
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else float(value.simple_value)
                result.setdefault(value.tag, {})[int(event.step)] = number
    return result
