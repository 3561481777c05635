"""The benchmarks stay runnable and print numbers that add up: `benchmarks.measure` at the smoke profile."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"(\d+(?:\.\d+)?)"


def test_measure_benchmark_prints_each_instrument_and_consistent_ratios():
    from kphases.config import measure_profile, profile
    from kphases.measurement import decoder_settings, probe_settings
    from kphases.training import make_plan

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", "--profile", "smoke", "--skip-cladec"],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("profile smoke: vgg8 on mnist/embedded (256 train / 128 test), layer penultimate")

    training = re.fullmatch(
        rf"training: {NUMBER} ms/step x (\d+) steps = (\d+) s", next(line for line in lines if line.startswith("training:"))
    )
    assert training, result.stdout
    step_seconds, steps = float(training[1]) / 1000, int(training[2])
    plan = make_plan(profile("smoke"), 256)
    assert steps == plan.last_iteration == 16 and step_seconds > 0
    assert abs(int(training[3]) - step_seconds * steps) <= 0.5 + 0.0001 * steps

    # Every instrument row: seconds >= 0 and "x train step" = seconds / step time (up to the printed rounding).
    rows = {}
    for label in (
        "features batch (train+test)",
        "features stored (train+test)",
        "features recalibrated (train+test)",
        "decoder linear_ridge",
        "decoder linear_exact",
        "decoder linear",
        "linear probe",
        "mutual information binning",
        "mutual information kde",
        "mutual information kde_relative",
    ):
        line = next((line for line in lines if line.startswith(label) and line[len(label)] == " "), None)
        assert line is not None, f"no line for {label!r} in:\n{result.stdout}"
        seconds, ratio, note = float(line[38:47]), float(line[47:61]), line[61:].strip()
        assert seconds >= 0
        # Rounding: the ratio to 1, the seconds to 0.01, the step time to 0.1 ms.
        assert abs(ratio - seconds / step_seconds) <= 0.5 + 0.005 / step_seconds + ratio * 0.05 / float(training[1]), line
        rows[label] = (seconds, note)
    for label in ("features batch (train+test)", "decoder linear", "linear probe"):
        assert rows[label][0] > 0, label
    measure_config = measure_profile("smoke")
    decoder, probe = decoder_settings(measure_config), probe_settings(measure_config)
    assert rows["decoder linear"][1] == f"{decoder.epochs_for(256) * decoder.steps_per_epoch(256)} updates"
    assert rows["linear probe"][1] == f"{probe.epochs * math.ceil(256 / probe.batch_size)} updates"
    assert rows["decoder linear_exact"][1] == "closed form, unregularised"
    assert rows["decoder linear_ridge"][1].startswith("GCV over ")
    assert rows["mutual information kde"][1] == "128 test images, 64 features"

    default = re.fullmatch(
        rf"default measurement \(batch features, linear_ridge \+ linear decoders, probe\) per snapshot: {NUMBER} s; "
        rf"x (\d+) snapshots = (\d+) s = {NUMBER} x the training time",
        next(line for line in lines if line.startswith("default measurement")),
    )
    assert default, result.stdout
    per_snapshot, snapshots = float(default[1]), int(default[2])
    parts = sum(rows[label][0] for label in ("features batch (train+test)", "decoder linear_ridge", "decoder linear", "linear probe"))
    assert snapshots == len(plan.snapshot_steps) == 5
    assert abs(per_snapshot - parts) <= 0.05 + 0.02
    assert abs(int(default[3]) - per_snapshot * snapshots) <= 0.5 + 0.05 * snapshots
    expected_ratio = per_snapshot * snapshots / (step_seconds * steps)
    # The printed ratio is taken before rounding: allow the rounding of the printed seconds and ms.
    assert abs(float(default[4]) - expected_ratio) <= expected_ratio * (0.05 / per_snapshot + 0.05 / float(training[1])) + 0.005

    information = re.fullmatch(
        rf"mutual information \(binning, kde, kde_relative\) per snapshot and layer: {NUMBER} s = {NUMBER} x "
        r"the default measurement of that snapshot",
        next(line for line in lines if line.startswith("mutual information (binning")),
    )
    assert information, result.stdout
    total = sum(rows[f"mutual information {name}"][0] for name in ("binning", "kde", "kde_relative"))
    assert abs(float(information[1]) - total) <= 0.02
    share = float(information[2])
    assert abs(share - float(information[1]) / per_snapshot) <= (0.005 + 0.05 * share) / per_snapshot + 0.0005
    assert any(line.startswith("linear_ridge / linear_exact alone: ") for line in lines)
    # each speed-up is printed as a ratio measured in this run
    for prefix in (
        "linear_ridge without the train predictions",
        "linear_exact after linear_ridge on the same features, moments shared",
        "linear probe with the head traced by an earlier cell of the same shape",
    ):
        ratio = re.match(rf"{re.escape(prefix)}.*?: ({NUMBER}) x faster", next(line for line in lines if line.startswith(prefix)))
        assert ratio and float(ratio[1]) > 0, result.stdout


def test_monitor_benchmark_measures_every_scheduled_step_and_prints_the_ratio():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.monitor", "--profile", "smoke", "--train-subset", "100", "--test-subset", "50"],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any("16 updates" in line for line in lines), result.stdout
    assert "monitor subsets: 100 train / 50 test images" in lines, result.stdout  # the flags reach the monitor's settings
    monitor = next(line for line in lines if line.startswith("monitor ("))
    assert monitor.startswith("monitor (5 measurements)"), monitor  # 0, 2, 4, 8, 16: the doubling schedule of 16 updates
    training = float(next(line for line in lines if line.startswith("training")).split()[-6])
    ratio = float(next(line for line in lines if line.startswith("monitor / training")).split()[3])
    assert training > 0 and ratio > 0
    assert abs(ratio - float(monitor.split()[3]) / training) < 1e-2 * ratio + 1e-3
    written = re.fullmatch(
        r"weights written: (\d+) of 5 measured steps", next(line for line in lines if line.startswith("weights written"))
    )
    assert written and 2 <= int(written[1]) <= 5, result.stdout  # the first two steps always, later ones only as the fall's end
    speed_up = re.fullmatch(
        rf"decoder fit with 1 BLAS thread\(s\) against \d+: {NUMBER} x faster \({NUMBER} s -> {NUMBER} s\)",
        next(line for line in lines if line.startswith("decoder fit with")),
    )
    assert speed_up, result.stdout
    ratio, before, after = (float(speed_up[index]) for index in (1, 2, 3))
    assert ratio > 0 and after > 0 and abs(ratio - before / after) <= 0.01 + ratio * (0.00005 / after + 0.00005 / before), result.stdout
