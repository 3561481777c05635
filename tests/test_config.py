import dataclasses
import json

import pytest

from kphases.config import DataConfig, LineageConfig, ModelConfig, RunConfig, TrainingConfig, canonical_dict, parse_steps, profile


@pytest.mark.parametrize("name", ["smoke", "quick", "full", "paper"])
def test_profiles_round_trip_through_json(name):
    config = profile(name)
    assert RunConfig.from_json(config.to_json()) == config
    assert RunConfig.from_json(config.to_json()).hash() == config.hash()


def test_round_trip_keeps_tuples_and_optionals():
    config = RunConfig(training=TrainingConfig(lr_milestones=("80ep", "120ep")), data=DataConfig(train_size=None, test_size=7))
    again = RunConfig.from_json(config.to_json())
    assert again.training.lr_milestones == ("80ep", "120ep") and again.data.test_size == 7 and again == config


def test_hash_is_stable_and_sensitive():
    assert RunConfig().hash() == RunConfig().hash()
    assert len(RunConfig().hash()) == 12
    assert RunConfig().replace(training=TrainingConfig(seed=1)).hash() != RunConfig().hash()
    assert json.loads(RunConfig().replace(training=TrainingConfig(learning_rate=0.01)).to_json()) == {"training": {"learning_rate": 0.01}}


def test_quick_profile_hash_is_pinned():
    # Pinned: changing the canonical JSON (a default, the key order, the digest) renames every run directory.
    assert json.loads(profile("quick").to_json()) == {"training": {"duration": "2048it"}}
    assert profile("quick").hash() == "2c7e859928f2"
    assert profile("smoke").hash() == "e090cb384af3"


def test_only_non_default_fields_are_written_and_omitted_ones_read_back_as_defaults():
    assert RunConfig().to_dict() == {} and RunConfig.from_dict({}) == RunConfig()
    config = RunConfig(model=ModelConfig(activation="tanh"), lineage=LineageConfig(rewind_run="0123456789ab", rewind_step=4))
    assert config.to_dict() == {"model": {"activation": "tanh"}, "lineage": {"rewind_run": "0123456789ab", "rewind_step": 4}}
    assert RunConfig.from_json(config.to_json()) == config


def test_adding_a_field_with_a_default_renames_no_run():
    # A later version of TrainingConfig with one more field (as jit_compile, label noise, ... were added).
    training = profile("quick").training
    Extended = dataclasses.make_dataclass(
        "TrainingConfig", [("future_option", bool, dataclasses.field(default=True))], bases=(TrainingConfig,), frozen=True
    )
    extended = Extended(**{spec.name: getattr(training, spec.name) for spec in dataclasses.fields(TrainingConfig)})
    assert profile("quick").replace(training=extended).hash() == profile("quick").hash()
    assert profile("quick").replace(training=dataclasses.replace(extended, future_option=False)).hash() != profile("quick").hash()
    # A whole new section at its default (nested dataclasses are omitted recursively).
    Section = dataclasses.make_dataclass("NoiseConfig", [("label_noise", float, dataclasses.field(default=0.0))], frozen=True)
    Later = dataclasses.make_dataclass(
        "RunConfig", [("noise", Section, dataclasses.field(default_factory=Section))], bases=(RunConfig,), frozen=True
    )
    later = Later(data=profile("smoke").data, model=profile("smoke").model, training=profile("smoke").training)
    assert later.hash() == profile("smoke").hash()
    assert Later(noise=Section(label_noise=0.1)).to_dict() == {"noise": {"label_noise": 0.1}}


def test_a_nested_section_is_written_relative_to_its_own_defaults():
    Inner = dataclasses.make_dataclass(
        "Inner", [("a", int, dataclasses.field(default=0)), ("b", int, dataclasses.field(default=0))], frozen=True
    )
    # The parent's default for the section is not Inner(): a value equal to Inner() must still be written.
    Outer = dataclasses.make_dataclass("Outer", [("inner", Inner, dataclasses.field(default_factory=lambda: Inner(a=1)))], frozen=True)
    assert canonical_dict(Outer()) == {}
    assert canonical_dict(Outer(inner=Inner())) == {"inner": {}}
    assert canonical_dict(Outer(inner=Inner(a=1, b=2))) == {"inner": {"a": 1, "b": 2}}


def test_paper_profile_is_protocol_exactly():
    config = profile("paper")
    assert (config.data.name, config.data.source) == ("cifar10", "tfds")
    assert config.model.architecture == "vgg8" and config.model.width == 1.0
    training = config.training
    assert (training.learning_rate, training.momentum, training.weight_decay, training.batch_size, training.duration) == (
        0.002,
        0.9,
        0.0,
        128,
        "257ep",
    )
    assert config.schedule.kind == "doubling"


def test_unknown_fields_and_profiles_are_named():
    with pytest.raises(ValueError, match=r"unknown TrainingConfig field\(s\) \['learning_rat'\]"):
        RunConfig.from_dict({"training": {"learning_rat": 0.1}})
    with pytest.raises(ValueError, match=r"unknown profile 'fast'; valid profiles: \['full', 'paper', 'quick', 'smoke'\]"):
        profile("fast")


def test_parse_steps():
    assert parse_steps("257ep", 391) == 100_487
    assert parse_steps("4096it", 391) == 4096
    with pytest.raises(ValueError, match="'12 epochs'"):
        parse_steps("12 epochs", 10)
