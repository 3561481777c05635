"""TensorBoard summaries of training and measurement: written when asked (CLI and Python), read back by tag and step."""

import pytest
import tensorboard  # noqa: F401  (a dependency: tf.summary.scalar is implemented in it)

from kphases.cli import main
from kphases.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainingConfig
from kphases.measurement import measure
from kphases.store import Run
from kphases.tensorboard import read_scalars
from kphases.training import train

TINY_ARGS = [
    "--profile",
    "smoke",
    "--no-progress",
    "--data.name",
    "digits",
    "--data.train-size",
    "200",
    "--data.test-size",
    "60",
    "--training.duration",
    "8it",
    "--training.learning-rate",
    "0.05",
]
TINY = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=200, test_size=60),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration="8it", batch_size=32, learning_rate=0.05, seed=1),
)
FAST = MeasureConfig(decoders=("linear_exact",), probe=False, transfer=(), train_size=200, test_size=60)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Run:
    """`python -m kphases train ... --tensorboard` then `python -m kphases measure <run> --tensorboard`, in process."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "--runs-dir", str(runs), "--tensorboard", *TINY_ARGS]) == 0
    (directory,) = runs.iterdir()
    assert (
        main(
            [
                "measure",
                str(directory),
                "--tensorboard",
                "--no-progress",
                "--profile",
                "smoke",
                "--decoders",
                "linear_exact",
                "--no-probe",
                "--transfer",
                "--train-size",
                "200",
                "--test-size",
                "60",
            ]
        )
        == 0
    )
    return Run.open(directory)


def test_training_writes_loss_learning_rate_and_classifier_metrics(cli_run):
    scalars = read_scalars(cli_run.directory / "tensorboard" / "train")
    assert {
        "loss",
        "learning_rate",
        "classifier_accuracy/train",
        "classifier_accuracy/test",
        "classifier_loss/train",
        "classifier_loss/test",
    } <= set(scalars)
    assert sorted(scalars["loss"]) == list(range(8)) and list(scalars["learning_rate"].values()) == pytest.approx([0.05] * 8)
    assert "loss_scale" not in scalars  # float32 run
    metrics = cli_run.metrics()
    for (split, metric), group in metrics.groupby(["split", "metric"]):
        assert scalars[f"{metric}/{split}"] == pytest.approx(dict(zip(group["step"], group["value"])))


def test_measurement_writes_one_curve_per_cell(cli_run):
    scalars = read_scalars(cli_run.directory / "tensorboard" / "measure")
    frame = measure(cli_run, FAST, progress=False, log=lambda text: None)  # everything is measured: nothing new
    rec = frame[(frame["metric"] == "reconstruction_mse") & (frame["split"] == "test")]
    curve = scalars["reconstruction_mse/penultimate/linear_exact/batch/test"]
    assert sorted(curve) == [0, 2, 4, 8] and curve == pytest.approx(dict(zip(rec["step"], rec["value"])))
    assert {
        "reconstruction_mse/penultimate/linear_exact/batch/train",
        "reconstruction_authors_scale/penultimate/linear_exact/batch/test",
    } <= set(scalars)


def test_a_directory_collects_runs_and_off_writes_nothing(tmp_path):
    run = train(TINY, runs_dir=tmp_path / "runs", progress=False)
    assert not (run.directory / "tensorboard").exists()
    measure(run, FAST, progress=False, log=lambda text: None)
    assert not (run.directory / "tensorboard").exists() and not list(tmp_path.rglob("events.out.tfevents.*"))
    measure(
        run,
        MeasureConfig(layers=("block5",), decoders=("linear_exact",), probe=False, transfer=(), steps=(8,), train_size=200, test_size=60),
        progress=False,
        log=lambda text: None,
        tensorboard=tmp_path / "tb",
    )
    scalars = read_scalars(tmp_path / "tb" / run.name / "measure")
    assert sorted(scalars["reconstruction_mse/block5/linear_exact/batch/test"]) == [8]
    assert not (run.directory / "tensorboard").exists()
