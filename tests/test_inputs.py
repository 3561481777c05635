"""Bad input, a full disk and Ctrl-C at the command line: one line each, nothing left on disk (docs/guarantees.md).

The subprocess tests count the lines a real `python -m kphases` / `python -m reproduce.*` writes to
stderr: TensorFlow's start-up notices go to file descriptor 2 directly, where pytest's capsys
cannot see them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kphases.cli import main
from kphases.config import DataConfig, LineageConfig, MeasureConfig, ModelConfig, ScheduleConfig, TrainingConfig, profile
from kphases.data import DataError, check_raw_splits
from kphases.entry import START_UP_NOTICES, one_line
from kphases.store import NoSpaceError, Run

REPOSITORY = Path(__file__).resolve().parents[1]


def run_command(*arguments: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "KPHASES_DEBUG")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY), environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def write_npz(path: Path, train_shape=(60, 28, 28), test_shape=(20, 28, 28)) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x_train=rng.integers(0, 256, train_shape, dtype=np.uint8),
        y_train=np.arange(train_shape[0]) % 10,
        x_test=rng.integers(0, 256, test_shape, dtype=np.uint8),
        y_test=np.arange(test_shape[0]) % 10,
    )
    return path.parent


def train_arguments(data_dir: Path, runs_dir: Path, *flags: str) -> list[str]:
    source = ["--data.source", "directory", "--data-dir", str(data_dir), "--data.train-size", "60", "--data.test-size", "20"]
    return ["train", "--profile", "smoke", *source, "--runs-dir", str(runs_dir), "--no-progress", *flags]


# --- numeric config fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field, valid",
    [
        (lambda: TrainingConfig(learning_rate=-0.1), "training.learning_rate = -0.1", "learning_rate > 0"),
        (lambda: TrainingConfig(learning_rate=0.0), "training.learning_rate = 0.0", "learning_rate > 0"),
        (lambda: TrainingConfig(learning_rate=float("nan")), "training.learning_rate = nan", "learning_rate > 0"),
        (lambda: TrainingConfig(batch_size=0), "training.batch_size = 0", "batch_size >= 1, an integer"),
        (lambda: TrainingConfig(momentum=1.0), "training.momentum = 1.0", "0 <= momentum < 1"),
        (lambda: TrainingConfig(momentum=-0.5), "training.momentum = -0.5", "0 <= momentum < 1"),
        (lambda: TrainingConfig(weight_decay=-1e-4), "training.weight_decay = -0.0001", "weight_decay >= 0"),
        (lambda: TrainingConfig(seed=-1), "training.seed = -1", "seed >= 0"),
        (lambda: DataConfig(label_noise=1.0), "data.label_noise = 1.0", "0 <= label_noise < 1"),
        (lambda: DataConfig(train_size=0), "data.train_size = 0", "train_size >= 1, an integer, or None"),
        (lambda: DataConfig(subset_seed=-3), "data.subset_seed = -3", "subset_seed >= 0"),
        (lambda: ModelConfig(width=0.0), "model.width = 0.0", "width > 0"),
        (lambda: ModelConfig(width=float("inf")), "model.width = inf", "width > 0, a finite number"),
        (lambda: ScheduleConfig(kind="explicit", steps=(0, -2)), "schedule.steps = -2", "steps >= 0"),
        (lambda: LineageConfig(prune_fraction=1.0), "lineage.prune_fraction = 1.0", "0 <= prune_fraction < 1"),
        (lambda: MeasureConfig(decoder_epochs=0), "measure.decoder_epochs = 0", "decoder_epochs >= 1"),
        (lambda: MeasureConfig(test_size=-5), "measure.test_size = -5", "test_size >= 1"),
        (lambda: TrainingConfig(batch_size=2.5), "training.batch_size = 2.5 is not an integer", "batch_size >= 1"),
    ],
)
def test_a_numeric_field_out_of_range_is_refused_naming_field_value_and_range(make, field, valid):
    with pytest.raises(ValueError) as refused:
        make()
    assert field in str(refused.value) and f"valid: {valid}" in str(refused.value), str(refused.value)


def test_the_profiles_and_defaults_are_valid():
    for name in ("smoke", "quick", "paper"):
        profile(name)
    TrainingConfig(momentum=0.0, weight_decay=0.0, learning_rate=1e-9)
    DataConfig(label_noise=0.0, train_size=None)
    MeasureConfig(decoder_min_update_steps=None, steps=(0, 2))


def test_a_negative_learning_rate_on_the_command_line_is_one_line_and_creates_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(train_arguments(tmp_path / "data", tmp_path / "runs", "--training.learning-rate", "-0.1"))
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert error.splitlines() == [error.strip()] and error.startswith("error: "), error
    assert "training.learning_rate = -0.1 is out of range; valid: learning_rate > 0" in error
    assert not (tmp_path / "runs").exists()


def test_tyro_framed_error_becomes_one_line():
    framed = (
        "╭─ Invalid choice ──────────────╮\n"
        "│ invalid choice 'nope' for     │\n"
        "│ argument '--profile'.         │\n"
        "│ ───────────────────────────── │\n"
        "│ For full helptext, run prog   │\n"
        "│ --help                        │\n"
        "╰───────────────────────────────╯\n"
    )
    assert one_line(framed) == "invalid choice 'nope' for argument '--profile'."
    ascii_framed = " Invalid choice \n ------------ \n  invalid choice 'nope' for\n  argument '--profile'.\n  ----------\n  For full helptext, run prog --help\n \n"
    assert one_line(ascii_framed) == "invalid choice 'nope' for argument '--profile'."
    assert one_line("\x1b[1m\x1b[31mValue error\x1b[0m\n│ \x1b[31mbad value\x1b[0m │\n") == "bad value"


# --- bad data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "train_shape, test_shape, message",
    [
        ((60, 28, 28, 3), (20, 28, 28, 1), r"train images have shape \(28, 28, 3\), test images \(28, 28, 1\)"),
        ((60, 32, 32), (20, 28, 28), r"train images have shape \(32, 32, 1\), test images \(28, 28, 1\)"),
        ((60, 28, 36), (20, 28, 36), r"images are 28x36 \(height x width\); the networks take square images"),
    ],
)
def test_image_shapes_are_checked_before_anything_is_created(tmp_path, capsys, train_shape, test_shape, message):
    data_dir = write_npz(tmp_path / "data" / "mnist.npz", train_shape, test_shape)
    assert main(train_arguments(data_dir, tmp_path / "runs")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: "), error
    assert __import__("re").search(message, error), error
    assert not (tmp_path / "runs").exists()


def test_raw_splits_of_different_shapes_are_a_data_error():
    images, labels = np.zeros((10, 8, 8, 1), np.uint8), np.arange(10)
    with pytest.raises(DataError, match=r"embedded:digits: train images have shape \(8, 8, 1\), test images \(8, 9, 1\)"):
        check_raw_splits((images, labels, np.zeros((10, 8, 9, 1), np.uint8), labels), "digits", "embedded:digits")


def test_a_text_file_given_as_npz_is_named_as_not_an_npz_archive(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.npz").write_text("x_train,y_train\n1,2\n")
    assert main(train_arguments(tmp_path / "data", tmp_path / "runs")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert f"cannot read {tmp_path / 'data' / 'mnist.npz'}: it is not a valid npz archive" in error and "pickled" not in error, error


# --- one line on stderr, TensorFlow's start-up notices included ---------------------------------------


def test_a_refusal_after_tensorflow_started_is_one_line_on_stderr(tmp_path):
    data_dir = write_npz(tmp_path / "data" / "mnist.npz", (60, 28, 36), (20, 28, 36))
    result = run_command("-m", "kphases", *train_arguments(data_dir, tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "kphases", "train", "--profile", "nope"],
        ["-m", "kphases", "measure", "somerun", "--profile", "nope"],
        ["-m", "reproduce.all", "--profile", "nope"],
        ["-m", "reproduce.phases", "--profile", "nope"],
    ],
)
def test_an_unknown_profile_exits_with_status_2_in_one_line(tmp_path, command):
    result = run_command(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "'nope'" in result.stderr, result.stderr
    assert "quick" in result.stderr  # the valid profiles are named


START_SCRIPT = "import sys; from kphases.entry import start_tensorflow; start_tensorflow(gpu_requested=sys.argv[1] == 'gpu')"


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if START_UP_NOTICES.search(line)]


def test_start_up_notices_are_silenced_unless_a_gpu_is_asked_for(tmp_path):
    plain = run_command("-c", "import tensorflow as tf; tf.config.list_physical_devices()", cwd=tmp_path)
    quiet = run_command("-c", START_SCRIPT, "cpu", cwd=tmp_path)
    asked = run_command("-c", START_SCRIPT, "gpu", cwd=tmp_path)
    assert quiet.returncode == 0 and asked.returncode == 0, quiet.stderr + asked.stderr
    assert quiet.stderr == "", quiet.stderr
    assert len(notices(asked.stderr)) == len(notices(plain.stderr)), (asked.stderr, plain.stderr)


def test_the_notice_filter_matches_tensorflows_start_up_lines_and_nothing_else():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796547661.646935    6735 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical "
        "results due to floating-point round-off errors from different computation orders.",
        "I0000 00:00:1796547661.647333    6735 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
        "I0000 00:00:1796547661.698968    6735 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU "
        "instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
        "E0000 00:00:1733912345.123456   12345 cuda_executor.cc:1228] failed call to cuInit: INTERNAL: CUDA error: Failed call to "
        "cuInit: UNKNOWN ERROR (303)",
    ]
    kept = [
        "E0000 00:00:1733912345.123456   12345 op_kernel.cc:1816] OP_REQUIRES failed at conv_ops.cc:1068 : RESOURCE_EXHAUSTED: OOM",
        "error: train subset size 256 does not fit a split of 40 images (valid: 1..40 or None)",
        "Traceback (most recent call last):",
    ]
    assert all(START_UP_NOTICES.search(line) for line in noise)
    assert not any(START_UP_NOTICES.search(line) for line in kept)


RETRACING_SCRIPT = """
import sys
from kphases.entry import start_tensorflow
if sys.argv[1] == "started":
    start_tensorflow()
import tensorflow as tf
for scale in range(8):  # one traced function per "model", as kphases.training makes them
    function = tf.function(lambda x, scale=scale: x * scale)
    function(tf.constant([1.0] * (scale + 1)))
tf.get_logger().warning("another warning")
"""


def test_tensorflows_retracing_advice_is_dropped_and_its_other_warnings_kept(tmp_path):
    plain = run_command("-c", RETRACING_SCRIPT, "plain", cwd=tmp_path)
    started = run_command("-c", RETRACING_SCRIPT, "started", cwd=tmp_path)
    assert plain.returncode == 0 and started.returncode == 0, plain.stderr + started.stderr
    assert "triggered tf.function retracing" in plain.stderr  # the script provokes the advice
    assert "triggered tf.function retracing" not in started.stderr, started.stderr
    assert "another warning" in started.stderr


# --- a full disk ---------------------------------------------------------------------------------------


def no_room(monkeypatch, free: int = 0) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))


def test_a_full_disk_before_a_run_starts_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    no_room(monkeypatch)
    assert main(["train", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert f"not enough space on the disk of {tmp_path / 'runs' / profile('smoke').hash()}" in error
    assert "needs about 1.0 MB, 0 bytes free" in error
    assert not (tmp_path / "runs").exists()


def test_a_per_image_file_on_a_full_disk_names_the_space_and_leaves_nothing(tmp_path, monkeypatch):
    run = Run.create(tmp_path, profile("smoke"))
    no_room(monkeypatch, free=4096)
    with pytest.raises(NoSpaceError, match=r"not enough space on the disk of .*per_image_errors.*needs about .* 4.1 KB free"):
        run.write_per_image_errors(0, "penultimate", "batch", "linear_ridge", "abc", np.zeros(128, np.float32))
    assert sorted(path.name for path in run.directory.iterdir()) == ["config.json"]


def test_a_write_failing_for_lack_of_space_names_the_directory_and_leaves_no_temp_file(tmp_path, monkeypatch):
    run = Run.create(tmp_path, profile("smoke"))

    def disk_full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(NoSpaceError, match=r"no space left on the disk of .*batch \(.* free\) while writing step-0.npy"):
        run.write_per_image_errors(0, "penultimate", "batch", "linear_ridge", "abc", np.zeros(128, np.float32))
    assert [path.name for path in run.directory.rglob("*") if path.is_file()] == ["config.json"]


# --- Ctrl-C -------------------------------------------------------------------------------------------


def interrupt_when(command: list[str], ready, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Start `command`, send it SIGINT once `ready()` is true, and return what it printed."""
    environment = {key: value for key, value in os.environ.items() if key != "KPHASES_DEBUG"}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY), environment.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background jobs with SIGINT ignored; the child must take it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    began = time.monotonic()
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - began < timeout, "the command never reached the point to interrupt"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_naming_the_run_and_its_last_snapshot(tmp_path):
    runs = tmp_path / "runs"
    command = ["-m", "kphases", "train", "--profile", "smoke", "--training.duration", "100000it", "--runs-dir", str(runs), "--no-progress"]
    result = interrupt_when(command, lambda: any(runs.glob("*/snapshots/step_8.weights.h5")), tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    (directory,) = runs.iterdir()
    run = Run.open(directory)
    checkpoint = run.checkpoint_state()["step"]
    assert result.stderr.startswith(f"interrupted: training of run {directory} stopped (last snapshot at step {run.snapshot_steps()[-1]}")
    assert f"resume state at step {checkpoint} of 100000): run the same command again to resume from step {checkpoint}" in result.stderr


@pytest.mark.slow
def test_ctrl_c_during_a_figure_run_is_one_line_and_status_130(tmp_path):
    runs = tmp_path / "runs"
    command = ["-m", "reproduce.all", "--profile", "smoke", "--figures", "phases", "--runs-dir", str(runs), "--out", str(tmp_path / "out")]
    result = interrupt_when([*command, "--no-progress"], lambda: any(runs.glob("*/manifest.json")), tmp_path)
    assert result.returncode == 130, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"interrupted during figure phases: training of run {runs}"), lines[0]
    assert "run the same command again to resume from step" in lines[0], lines[0]
