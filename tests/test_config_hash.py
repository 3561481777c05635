"""Every field of every config names what it configures: no field can silently stop entering the identity.

- `RunConfig` (and each of its sections): a run's directory is `config.hash()`. Changing any one
  field, from the defaults and from each profile, must change the hash; otherwise two different
  runs would share one directory and the second would be read as the first.
- `MeasureConfig`: a measured cell is (step, layer, bn_stats, instrument, protocol hash). Changing
  any one field must change the set of cells the config asks for; otherwise a finished cell measured
  under the old value would be returned for the new one. Checked through `measure` itself: one
  measurement with every instrument on, then each changed config asked read-only
  (`compute_missing=False`): it must either name cells not measured yet or return another set.

The fields are enumerated from the dataclasses, recursively, so a field added later is covered
without editing this file; `_changed` makes a valid different value from a field's type (a field
whose type it cannot vary is an error naming it, never a skip).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from kphases.config import PROFILES, MeasureConfig, RunConfig

# Strings (and string tuples) whose valid values the type does not say: a valid other value each.
_VALID_OTHER: dict[str, Any] = {
    "architecture": "resnet10",
    "activation": "tanh",
    "initialisation": "open_lth",
    "duration": "300it",
    "file": "mnist_copy.npz",
    "rewind_run": "0123456789ab",
    "mask_run": "ba9876543210",
    "lr_milestones": ("8it",),
    "layers": ("block4",),
    "decoders": ("linear_ridge",),
    "bn_stats": ("stored",),
    "transfer": (),
    "switch_dataset": "mnist",  # the embedded source has mnist and digits; digits is the default target
    "metrics": (),
    "steps": (4,),
    "classes": (0, 1),  # a class subset of every profile's dataset
}


def _changed(name: str, hint: Any, value: Any) -> Any:
    """A valid value of type `hint` for field `name` that differs from `value`."""
    if name in _VALID_OTHER and _VALID_OTHER[name] != value:
        return _VALID_OTHER[name]
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return next(option for option in arguments if option != value)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in arguments if option is not type(None)]
        if value is not None:
            return None
        return _changed(name, options[0], {int: 1, float: 0.5, str: "x"}.get(options[0]))
    if hint is bool:
        return not value
    if hint is int:
        return value + 1
    if hint is float:
        return value + 0.25 if value < 0.5 else value / 2  # stays in [0, 1) where fractions must
    raise AssertionError(f"field {name!r} of type {hint!r}: no valid different value known; add one to _VALID_OTHER")


def _leaf_changes(config: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(dotted field name, `config` with that one field changed) for every non-dataclass field, recursively."""
    hints = typing.get_type_hints(type(config))
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            for name, changed in _leaf_changes(value, (*path, spec.name)):
                yield name, dataclasses.replace(config, **{spec.name: changed})
        else:
            yield ".".join((*path, spec.name)), dataclasses.replace(config, **{spec.name: _changed(spec.name, hints[spec.name], value)})


@pytest.mark.parametrize("base_name", ["defaults", *PROFILES])
def test_every_run_config_field_changes_the_run_hash(base_name):
    base = RunConfig() if base_name == "defaults" else PROFILES[base_name]()
    changes = dict(_leaf_changes(base))
    sections = {spec.name for spec in dataclasses.fields(RunConfig)}
    assert {name.split(".")[0] for name in changes} == sections  # every section was walked
    same = sorted(name for name, changed in changes.items() if changed.hash() == base.hash())
    assert not same, f"changing these fields leaves the run hash {base.hash()} unchanged: {same}"
    # and the changed configs are all different runs, not two changes that collide on one name
    assert len({changed.hash() for changed in changes.values()}) == len(changes)


def test_a_changed_field_survives_the_round_trip_through_json():
    for name, changed in _leaf_changes(RunConfig()):
        assert RunConfig.from_json(changed.to_json()) == changed, name


# --- MeasureConfig --------------------------------------------------------------------------------

# Every instrument that reads a setting is on (decoders trained and closed-form, probe, dataset
# switch, mutual information with the relative KDE bound), on one snapshot of a smoke run, so each
# setting has a cell whose protocol it enters. Small sizes keep the one real measurement to seconds.
_MEASURE_BASE = MeasureConfig(
    layers=("penultimate",),
    decoders=("linear_ridge", "linear"),
    transfer=("dataset_switch",),
    steps=(0,),
    train_size=200,
    test_size=100,
    decoder_epochs=1,
    probe_epochs=2,
    metrics=("mutual_information",),
    mi_bins=10,
    mi_relative_noise=0.5,
    mi_samples=50,
)


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    from kphases.config import profile
    from kphases.measurement import measure
    from kphases.training import train

    runs = tmp_path_factory.mktemp("runs")
    run = train(profile("smoke"), runs_dir=runs, progress=False)
    frame = measure(run, _MEASURE_BASE, progress=False, log=lambda text: None, requested_only=True)
    return run, _cells(frame)


def _cells(frame) -> set[tuple]:
    return set(zip(frame["step"].astype(int), frame["layer"], frame["bn_stats"], frame["instrument"], frame["protocol"]))


def _requested_cells(run, config: MeasureConfig) -> set[tuple] | str:
    """The cells `config` asks for, read-only; 'not measured' when it asks for one the base did not measure."""
    from kphases.measurement import MissingMeasurementError, measure

    try:
        frame = measure(run, config, progress=False, log=lambda text: None, compute_missing=False, requested_only=True)
    except MissingMeasurementError:
        return "not measured"
    return _cells(frame)


@pytest.mark.slow
def test_every_measure_config_field_changes_the_measured_cells(measured_run):
    run, base_cells = measured_run
    assert _requested_cells(run, _MEASURE_BASE) == base_cells  # the read-only path returns what was measured
    unchanged = []
    for name, changed in _leaf_changes(_MEASURE_BASE):
        if _requested_cells(run, changed) == base_cells:
            unchanged.append(name)
    assert not unchanged, f"changing these MeasureConfig fields leaves the measured cells unchanged: {unchanged}"
