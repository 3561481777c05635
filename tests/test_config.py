import json

import pytest

from kphases.config import DataConfig, RunConfig, TrainingConfig, parse_steps, profile


@pytest.mark.parametrize("name", ["smoke", "quick", "paper"])
def test_profiles_round_trip_through_json(name):
    config = profile(name)
    assert RunConfig.from_json(config.to_json()) == config
    assert RunConfig.from_json(config.to_json()).hash() == config.hash()


def test_round_trip_keeps_tuples_and_optionals():
    config = RunConfig(training=TrainingConfig(lr_milestones=("80ep", "120ep")), data=DataConfig(train_size=None, test_size=7))
    again = RunConfig.from_json(config.to_json())
    assert again.training.lr_milestones == ("80ep", "120ep") and again.data.test_size == 7 and again == config


def test_hash_is_stable_and_sensitive():
    # Pinned: changing the canonical JSON (a field, a default, the key order) changes every run directory name.
    assert RunConfig().hash() == RunConfig().hash()
    assert len(RunConfig().hash()) == 12
    assert RunConfig().replace(training=TrainingConfig(seed=1)).hash() != RunConfig().hash()
    assert json.loads(RunConfig().to_json())["training"]["learning_rate"] == 0.002


def test_paper_profile_is_protocol_exactly():
    config = profile("paper")
    assert (config.data.name, config.data.source) == ("cifar10", "tfds")
    assert config.model.architecture == "vgg8" and config.model.width == 1.0
    training = config.training
    assert (training.learning_rate, training.momentum, training.weight_decay, training.batch_size, training.duration) == (0.002, 0.9, 0.0, 128, "257ep")
    assert config.schedule.kind == "doubling"


def test_unknown_fields_and_profiles_are_named():
    with pytest.raises(ValueError, match=r"unknown TrainingConfig field\(s\) \['learning_rat'\]"):
        RunConfig.from_dict({"training": {"learning_rat": 0.1}})
    with pytest.raises(ValueError, match=r"unknown profile 'fast'; valid profiles: \['paper', 'quick', 'smoke'\]"):
        profile("fast")


def test_parse_steps():
    assert parse_steps("257ep", 391) == 100_487
    assert parse_steps("4096it", 391) == 4096
    with pytest.raises(ValueError, match="'12 epochs'"):
        parse_steps("12 epochs", 10)
