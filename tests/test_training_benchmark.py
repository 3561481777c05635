"""`python -m benchmarks.training` stays runnable and prints what it promises: the device, each network's row, the estimate."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_benchmark_prints_device_rows_and_ratios():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.training", "--steps", "3", "--batch-size", "16", "--networks", "vgg8x0.125,resnet20x0.25"],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("device: CPU")
    for name in ("vgg8 x0.125", "resnet20 x0.25"):
        row = next((line for line in lines if line.startswith(name)), None)
        assert row is not None, result.stdout
        step, loop, ratio, host, old = (float(value) for value in row[len(name) :].split())
        assert step > 0 and loop > 0 and host >= 0 and old > 0
        # The ratio is of the unrounded times; step and loop are printed to 0.05 ms, the ratio to 0.005.
        assert (loop - 0.05) / (step + 0.05) - 0.005 <= ratio <= (loop + 0.05) / (step - 0.05) + 0.005, row
