"""The paper profile end to end, as a GPU user first runs it, on tensorflow-datasets' mock CIFAR-10.

`kphases train --profile paper` with only the duration shortened (2 epochs of the mock split's 300
images: 3 iterations per epoch, the last one smaller, as CIFAR-10's 391st): the paper's network
(VGG-8 at full width), batch size, learning rate, momentum, doubling schedule (0, 2, 4 of 6 iterations here) and tfds source,
through the compiled loop with the data on the device.
"""

import json

import numpy as np

from kphases.cli import command_train, parse_train
from kphases.config import profile
from kphases.models import build_model
from kphases.store import Run

MOCK_EXAMPLES = 300


def test_paper_profile_trains_end_to_end_from_mock_tfds(tmp_path, capsys):
    import tensorflow_datasets as tfds

    args = ["--profile", "paper", "--training.duration", "2ep", "--runs-dir", str(tmp_path), "--no-progress"]
    config = parse_train(args).run_config()
    paper = profile("paper")
    assert config.replace(training=paper.training) == paper  # only the duration differs from the profile
    assert config.training.batch_size == 128 and config.model.architecture == "vgg8" and config.model.width == 1.0
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        assert command_train(args) == 0
    assert "complete: 3 snapshots at steps [0, 2, 4]" in capsys.readouterr().out

    run = Run.open(tmp_path / config.hash())
    manifest = json.loads((run.directory / "manifest.json").read_text())
    assert run.complete and manifest["steps_per_epoch"] == 3 and manifest["last_iteration"] == 6
    provenance = run.provenance()
    assert provenance["data"]["source"] == "tfds" and provenance["data"]["train_size"] == MOCK_EXAMPLES
    assert provenance["data"]["image_shape"] == [32, 32, 3]
    metrics = run.metrics()
    assert np.isfinite(metrics["value"]).all() and sorted(set(metrics["step"])) == [0, 2, 4]
    model = build_model(config.model, (32, 32, 3), 10)
    run.load_snapshot(model, 0)
    initial = [w.copy() for w in model.get_weights()]
    run.load_snapshot(model, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(initial, model.get_weights()))  # it trained
