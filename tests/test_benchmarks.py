"""The benchmarks stay runnable: `benchmarks.measure` at the smoke profile prints every instrument and both ratios."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_measure_benchmark_prints_each_instrument_and_the_ratios():
    result = subprocess.run([sys.executable, "-m", "benchmarks.measure", "--profile", "smoke", "--skip-cladec"], cwd=ROOT,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"}, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for label in ("features batch (train+test)", "decoder linear_ridge", "decoder linear_exact", "decoder linear ", "linear probe", "mutual information binning",
                  "mutual information kde ", "mutual information kde_relative"):
        row = next((line for line in lines if line.startswith(label)), None)
        assert row is not None, f"no line for {label!r} in:\n{result.stdout}"
        assert float(row[len(label):].split()[0]) >= 0.0  # seconds, a number
    assert any(line.startswith("default measurement") and "x the training time" in line for line in lines)
    assert any(line.startswith("linear_ridge / linear_exact: ") for line in lines)
    assert any(line.startswith("mutual information (binning, kde, kde_relative) per snapshot") for line in lines)


def test_monitor_benchmark_measures_every_scheduled_step_and_prints_the_ratio():
    result = subprocess.run([sys.executable, "-m", "benchmarks.monitor", "--profile", "smoke"], cwd=ROOT,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"}, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any("16 updates" in line for line in lines), result.stdout
    monitor = next(line for line in lines if line.startswith("monitor ("))
    assert monitor.startswith("monitor (5 measurements)"), monitor  # 0, 2, 4, 8, 16: the doubling schedule of 16 updates
    training = float(next(line for line in lines if line.startswith("training")).split()[-6])
    ratio = float(next(line for line in lines if line.startswith("monitor / training")).split()[3])
    assert training > 0 and ratio > 0
    assert abs(ratio - float(monitor.split()[3]) / training) < 1e-2 * ratio + 1e-3
