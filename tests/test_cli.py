import dataclasses
import os
import subprocess
import sys

from kphases.cli import main, parse_measure, parse_train
from kphases.config import measure_profile, profile


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # Without the test session's TF_CPP_MIN_LOG_LEVEL: the entry point's own setting is what is tested.
    env = {**{key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "kphases", *args], capture_output=True, text=True, env=env, timeout=300)


def test_train_help_lists_every_option_with_default():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    text = result.stdout
    for flag in [
        "--profile",
        "--runs-dir",
        "--data-dir",
        "--checkpoint-every",
        "--data.name",
        "--data.source",
        "--data.train-size",
        "--model.architecture",
        "--model.width",
        "--training.duration",
        "--training.learning-rate",
        "--training.momentum",
        "--training.weight-decay",
        "--training.seed",
        "--training.lr-milestones",
        "--schedule.kind",
        "--schedule.steps",
    ]:
        assert flag in text, flag
    assert "(default: quick)" in text and "(default: 2048it)" in text


def test_profile_sets_defaults_and_flags_override():
    command = parse_train(["--profile", "paper", "--training.seed", "3"])
    assert command.run_config().data == profile("paper").data
    assert command.run_config().training.seed == 3 and command.run_config().training.learning_rate == 0.002


def test_measure_takes_the_options_it_shares_with_train():
    command = parse_measure(
        ["abc", "--profile", "smoke", "--runs-dir", "r", "--data-dir", "d", "--no-progress", "--tensorboard", "--ray", "--layers", "block1"]
    )
    assert (command.run, command.profile, command.runs_dir, command.data_dir, command.progress, command.tensorboard, command.ray) == (
        "abc",
        "smoke",
        "r",
        "d",
        False,
        True,
        "local",
    )
    assert command.measure == dataclasses.replace(measure_profile("smoke"), layers=("block1",))


def test_unknown_command_and_profile_are_named(capsys):
    assert main(["fit"]) == 2
    assert "unknown command 'fit'; valid commands: ['train', 'measure', 'list', 'export-data']" in capsys.readouterr().err
    result = run_cli("train", "--profile", "huge")
    assert result.returncode != 0 and "unknown profile 'huge'" in result.stdout + result.stderr


def test_train_then_list(tmp_path, capsys):
    result = run_cli("train", "--profile", "smoke", "--runs-dir", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "complete: 5 snapshots at steps [0, 2, 4, 8, 16]" in result.stdout and "already complete" not in result.stdout
    assert "cuInit" not in result.stderr and "cuda_platform" not in result.stderr  # TensorFlow's start-up log is silenced
    # The same config again is the same finished run: said, not retrained.
    assert main(["train", "--profile", "smoke", "--runs-dir", str(tmp_path), "--no-progress"]) == 0
    assert "was already complete: returned as it is, not trained again" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--profile",
                "smoke",
                "--runs-dir",
                str(tmp_path),
                "--no-progress",
                "--training.seed",
                "1",
                "--training.duration",
                "2it",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "differs in" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:]}
    seed1 = profile("smoke").replace(training=dataclasses.replace(profile("smoke").training, seed=1, duration="2it"))
    assert (
        rows[profile("smoke").hash()].rstrip().endswith("training.duration=16it training.seed=0")
        and "complete" in rows[profile("smoke").hash()]
    )
    assert rows[seed1.hash()].rstrip().endswith("training.duration=2it training.seed=1")


def test_bad_input_is_one_error_line_naming_the_value(tmp_path, capsys):
    assert main(["measure", "0123456789ab", "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "0123456789ab" in error and "Traceback" not in error
