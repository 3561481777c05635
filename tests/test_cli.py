import os
import subprocess
import sys

from kphases.cli import main, parse_train
from kphases.config import profile


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "kphases", *args], capture_output=True, text=True, env=env, timeout=300)


def test_train_help_lists_every_option_with_default():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    text = result.stdout
    for flag in ["--profile", "--runs-dir", "--data-dir", "--checkpoint-every", "--data.name", "--data.source",
                 "--data.train-size", "--model.architecture", "--model.width", "--training.duration",
                 "--training.learning-rate", "--training.momentum", "--training.weight-decay", "--training.seed",
                 "--training.lr-milestones", "--schedule.kind", "--schedule.steps"]:
        assert flag in text, flag
    assert "(default: quick)" in text and "(default: 2048it)" in text


def test_profile_sets_defaults_and_flags_override():
    command = parse_train(["--profile", "paper", "--training.seed", "3"])
    assert command.run_config().data == profile("paper").data
    assert command.run_config().training.seed == 3 and command.run_config().training.learning_rate == 0.002


def test_unknown_command_and_profile_are_named(capsys):
    assert main(["fit"]) == 2
    assert "unknown command 'fit'; valid commands: ['train', 'measure', 'list']" in capsys.readouterr().err
    result = run_cli("train", "--profile", "huge")
    assert result.returncode != 0 and "unknown profile 'huge'" in result.stdout + result.stderr


def test_train_then_list(tmp_path):
    result = run_cli("train", "--profile", "smoke", "--runs-dir", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "complete: 5 snapshots at steps [0, 2, 4, 8, 16]" in result.stdout
    listing = run_cli("list", "--runs-dir", str(tmp_path))
    assert profile("smoke").hash() in listing.stdout and "complete" in listing.stdout


def test_bad_input_is_one_error_line_naming_the_value(tmp_path, capsys):
    assert main(["measure", "0123456789ab", "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "0123456789ab" in error and "Traceback" not in error
