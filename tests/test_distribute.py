"""Training under tf.distribute (MirroredStrategy over two logical CPUs) and in mixed precision.

Two logical CPU devices must be configured before TensorFlow initialises its devices, so the
distributed trainings run in a subprocess (`python -c SCRIPT`) and report back as JSON; the rest of
the test session keeps its single CPU.
"""

import json
import os
import subprocess
import sys

import pytest

from kphases.cli import main
from kphases.config import RunConfig, TrainingConfig
from kphases.training import DeviceError, make_strategy

SCRIPT = r"""
import json, os, sys, warnings
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import h5py
import keras
import numpy as np

from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig
from kphases.models import build_model
from kphases.training import train

runs = sys.argv[1]
TINY = RunConfig(data=DataConfig(name="digits", source="embedded", train_size=200, test_size=60),
                 model=ModelConfig(architecture="vgg8", width=0.125),
                 training=TrainingConfig(duration="8it", batch_size=32, learning_rate=0.05, weight_decay=5e-4))


def weights(run, step):
    model = build_model(run.config.model, (32, 32, 1), 10)
    run.load_snapshot(model, step)
    return model.get_weights()


single = train(TINY, runs_dir=runs + "/single", progress=False)
mirrored = train(TINY, runs_dir=runs + "/mirrored", progress=False, devices="CPU:0,CPU:1")
difference = max(float(np.max(np.abs(a - b))) for a, b in zip(weights(single, 8), weights(mirrored, 8)))
scale = max(float(np.max(np.abs(a))) for a in weights(single, 8))

seen = {}


def probe(run, step, model, optimizer):
    if step == 8:
        block = keras.Model(model.inputs, model.get_layer("block2").output)
        seen["activation"] = str(block(np.zeros((2, 32, 32, 1), np.float32)).dtype.name)
        seen["logits"] = str(model(np.zeros((2, 32, 32, 1), np.float32)).dtype.name)
        seen["variables"] = sorted({str(variable.dtype) for variable in model.weights})
        seen["optimizer"] = type(optimizer).__name__


mixed_config = TINY.replace(training=TrainingConfig(duration="8it", batch_size=32, learning_rate=0.05, weight_decay=5e-4,
                                                    precision="mixed_float16"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mixed = train(mixed_config, runs_dir=runs + "/mixed", progress=False, devices=["CPU:0", "CPU:1"], callbacks=[probe],
                  tensorboard=True)
snapshot_dtypes = set()
with h5py.File(mixed.snapshot_path(8)) as handle:
    handle.visititems(lambda name, item: snapshot_dtypes.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
from kphases.tensorboard import read_scalars

print(json.dumps({
    "schedule": [single.manifest()["schedule"], single.snapshot_steps(), mirrored.snapshot_steps(), mixed.snapshot_steps()],
    "same_directory_name": single.directory.name == mirrored.directory.name,
    "difference": difference, "scale": scale,
    "metrics": [single.metrics()["value"].tolist(), mirrored.metrics()["value"].tolist()],
    "provenance": [single.provenance(), mirrored.provenance()],
    "mixed": {**seen, "snapshot_dtypes": sorted(snapshot_dtypes), "global_policy": keras.config.dtype_policy().name,
              "warnings": [str(w.message) for w in caught if "mixed_float16" in str(w.message)],
              "loss_scale_steps": sorted(read_scalars(mixed.directory / "tensorboard" / "train").get("loss_scale", {})),
              "final_train_accuracy": float(mixed.metrics().query("step == 8 and split == 'train' and metric == 'classifier_accuracy'")["value"].iloc[0]), "hash": mixed.directory.name},
}))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("runs"))], capture_output=True, text=True, env=env, timeout=240
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_training_keeps_the_schedule_and_matches_one_device(report):
    schedule, single_steps, mirrored_steps, mixed_steps = report["schedule"]
    assert schedule == single_steps == mirrored_steps == mixed_steps == [0, 2, 4, 8]
    assert report["same_directory_name"]  # the devices are not part of the config hash
    # Same data order, global batch and synchronised BatchNorm: equal up to reduction order.
    assert report["difference"] < 1e-4 * report["scale"], report
    assert report["metrics"][0] == pytest.approx(report["metrics"][1], abs=1e-4)
    single, mirrored = report["provenance"]
    assert (single["strategy"], single["devices"], single["replicas"]) == ("default", ["CPU:0"], 1)
    assert (mirrored["strategy"], mirrored["devices"], mirrored["replicas"]) == ("MirroredStrategy", ["CPU:0", "CPU:1"], 2)


def test_mixed_precision_computes_in_float16_and_stores_float32(report):
    mixed = report["mixed"]
    assert mixed["activation"] == "float16" and mixed["logits"] == "float16"  # the step casts logits to float32 for the loss
    assert mixed["variables"] == ["float32"] and mixed["snapshot_dtypes"] == ["float32"]
    assert mixed["optimizer"] == "LossScaleOptimizer" and mixed["global_policy"] == "float32"  # the policy is restored
    assert mixed["warnings"] and "slow" in mixed["warnings"][0]
    assert mixed["loss_scale_steps"] == list(range(8)) and mixed["final_train_accuracy"] > 0.2


def test_precision_is_hash_neutral_at_its_default():
    config = RunConfig()
    assert "precision" not in config.to_dict().get("training", {})
    mixed = config.replace(training=TrainingConfig(precision="mixed_float16"))
    assert mixed.to_dict()["training"]["precision"] == "mixed_float16" and mixed.hash() != config.hash()
    assert RunConfig.from_json(mixed.to_json()) == mixed


def test_unknown_devices_are_named_with_the_visible_ones(tmp_path, capsys):
    with pytest.raises(DeviceError, match=r"unknown device\(s\) \['GPU:7'\]; visible devices: \['CPU:0'"):
        make_strategy("CPU:0,GPU:7")
    with pytest.raises(DeviceError, match="more than once"):
        make_strategy(["cpu:0", "/device:CPU:0"])
    assert make_strategy(None).num_replicas_in_sync == 1
    assert main(["train", "--profile", "smoke", "--runs-dir", str(tmp_path), "--devices", "TPU:3", "--no-progress"]) == 2
    assert "unknown device(s) ['TPU:3']; visible devices: ['CPU:0'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was written
