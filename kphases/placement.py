"""Where training computes and how its batches get there: devices, strategies and the train set.

Devices (`train(devices=...)`, `--devices GPU:0,GPU:1`): `make_strategy` gives a `tf.distribute`
strategy, `MirroredStrategy` over the named devices or TensorFlow's default strategy. The
config's batch size stays the global batch: `split_across_replicas` hands each replica its share
of a step's batch, so the snapshot steps, the data order and the config hash do not depend on
the devices. GPU memory growth is on unless $KPHASES_GPU_MEMORY_GROWTH=0 (`configure_gpu_memory`).

The data order follows the authors' PyTorch code on purpose: each epoch is a fresh permutation
seeded by (seed, epoch), and the last batch of an epoch is the smaller remainder (DataLoader's
drop_last=False), so CIFAR-10 has 391 iterations per epoch (`batch_indices`).

So that a GPU is not left waiting for Python, `TrainBatches` copies the train set to the compute
device once (up to `DEVICE_DATA_MAX_BYTES`) and hands each compiled call only the matrix of its
iterations' example indices; a larger train set streams instead: each call's examples are
gathered on the host by a worker thread while the device computes the call before it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from kphases.data import Dataset

Devices = str | Sequence[str] | tf.distribute.Strategy | None
MEMORY_GROWTH_VARIABLE = "KPHASES_GPU_MEMORY_GROWTH"
# A train set of at most this many bytes (CIFAR-10's 50,000 normalised images are 614 MB) is copied
# to the compute device once and every batch is gathered there; a larger one streams from the host.
DEVICE_DATA_MAX_BYTES = 2 * 1024**3


class DeviceError(ValueError):
    """The requested devices cannot train this run (unknown, repeated, or more replicas than examples)."""


# --- devices --------------------------------------------------------------------------------------


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


def split_across_replicas(strategy: tf.distribute.Strategy, images, labels) -> tuple:
    """A global batch as per-replica values: consecutive shares, as even as `np.array_split` makes them."""
    replicas = strategy.num_replicas_in_sync
    image_shares, label_shares = np.array_split(np.asarray(images), replicas), np.array_split(np.asarray(labels), replicas)
    return (
        strategy.experimental_distribute_values_from_function(lambda context: tf.constant(image_shares[context.replica_id_in_sync_group])),
        strategy.experimental_distribute_values_from_function(lambda context: tf.constant(label_shares[context.replica_id_in_sync_group])),
    )


# --- the batches ----------------------------------------------------------------------------------


def epoch_permutation(epoch: int, train_size: int, seed: int) -> np.ndarray:
    """The order of the examples in epoch `epoch`: a permutation seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(train_size)


def batch_indices(step: int, train_size: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the examples in iteration `step`: epoch `step // steps_per_epoch` is a seeded permutation."""
    steps_per_epoch = math.ceil(train_size / batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    return epoch_permutation(epoch, train_size, seed)[position * batch_size : (position + 1) * batch_size]


class TrainBatches:
    """The train set of one run and the batches of each call of the training step.

    `prepare(first, stop)` gives `(images, labels, indices)` for iterations first..stop-1 (one epoch,
    one batch size): row i of `indices` picks iteration first + i's examples from `images` and
    `labels` (the order of `batch_indices`). With a `device` and a train set of at most
    `DEVICE_DATA_MAX_BYTES`, `images` and `labels` are the whole train set, copied to the device
    once; otherwise they are the call's examples, gathered on the host. `feed(calls)` prepares each
    call one ahead, on a worker thread when gathering on the host.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device: str | None):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.steps_per_epoch = math.ceil(len(dataset.y_train) / batch_size)
        self.on_device = device is not None and dataset.x_train.nbytes + dataset.y_train.nbytes <= DEVICE_DATA_MAX_BYTES
        self.worker = None
        if self.on_device:
            with tf.device(device):  # a copy on the device (tf.constant alone stays in host memory)
                self.images = tf.identity(tf.constant(dataset.x_train))
                self.labels = tf.identity(tf.constant(dataset.y_train))
        else:
            self.worker = ThreadPoolExecutor(max_workers=1)
        self.epoch, self.permutation = None, None

    def indices(self, first: int, stop: int) -> np.ndarray:
        """(stop - first, batch) example indices of iterations first..stop-1; the epoch's permutation is drawn once."""
        epoch, position = divmod(first, self.steps_per_epoch)
        if epoch != self.epoch:
            self.epoch, self.permutation = epoch, epoch_permutation(epoch, len(self.dataset.y_train), self.seed)
        selected = self.permutation[position * self.batch_size : (position + stop - first) * self.batch_size]
        return selected.reshape(stop - first, -1)

    def prepare(self, first: int, stop: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return self._inputs(self.indices(first, stop))

    def feed(self, calls: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int, tuple[tf.Tensor, tf.Tensor, tf.Tensor]]]:
        """`(first, stop, prepared)` of each call in turn, the next call's batches prepared while this one runs."""
        pending = self._start(*calls[0]) if calls else None
        for number, (first, stop) in enumerate(calls):
            prepared = pending.result()
            if number + 1 < len(calls):
                pending = self._start(*calls[number + 1])
            yield first, stop, prepared

    def _start(self, first: int, stop: int) -> Future:
        indices = self.indices(first, stop)  # on this thread: the permutation cache is not shared
        if self.worker is not None:
            return self.worker.submit(self._inputs, indices)
        ready = Future()
        ready.set_result(self._inputs(indices))
        return ready

    def _inputs(self, indices: np.ndarray) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        if self.on_device:
            return self.images, self.labels, tf.constant(indices.astype(np.int64))
        flat = indices.reshape(-1)
        return (
            tf.constant(self.dataset.x_train[flat]),
            tf.constant(self.dataset.y_train[flat]),
            tf.constant(np.arange(flat.size, dtype=np.int64).reshape(indices.shape)),
        )

    def close(self) -> None:
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TrainBatches:
        return self

    def __exit__(self, *exception) -> None:
        self.close()
