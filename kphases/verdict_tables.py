"""The phase verdicts of a measured run, as the tables `kphases measure` prints and the figures quote.

Sits above measurement: it reads a run's measurement rows and per-image errors
(`kphases.store.read_per_image_errors`) and judges each reconstruction curve with the suite's
one verdict, `kphases.phases.phase_verdict`, at its default `VerdictSettings`. A curve whose cells
have no per-image errors gets no verdict, and its line says why, instead of a verdict without
measured noise.
"""

from __future__ import annotations

import pandas as pd

from kphases.phases import PhaseVerdict, VerdictSettings, phase_verdict
from kphases.store import Run, read_per_image_errors


def curves(frame: pd.DataFrame, metric: str = "reconstruction_mse", split: str = "test") -> dict[tuple[str, str, str], pd.Series]:
    """(layer, instrument, bn_stats) -> the metric's value per step (one protocol per key: the latest rows)."""
    selected = frame[(frame["metric"] == metric) & (frame["split"] == split)]
    result = {}
    for key, group in selected.groupby(["layer", "instrument", "bn_stats"], sort=True):
        series = group.drop_duplicates("step", keep="last").set_index("step")["value"].sort_index()
        result[key] = series
    return result


def reconstruction_verdict(
    run: Run, frame: pd.DataFrame, layer: str, instrument: str, bn_stats: str, settings: VerdictSettings | None = None
) -> PhaseVerdict | None:
    """The `PhaseVerdict` of one reconstruction curve from its per-image errors (one seed: test-image noise
    only); None when the curve has fewer than 3 steps or its cells have no per-image errors."""
    per_image = read_per_image_errors(run, frame, layer, instrument, bn_stats)
    if per_image is None or len(per_image[0]) < 3:
        return None
    return phase_verdict(per_image[0], per_image_errors=per_image[1], settings=settings or VerdictSettings())


def describe_too_short(series: pd.Series) -> str:
    """The line for a curve too short for any verdict (three phases need at least three measurements)."""
    values = ", ".join(f"{step}: {value:.4f}" for step, value in series.items())
    return f"not three phases: only {len(series)} measurement(s) ({values}); three phases need at least 3"


NOT_WRITTEN = "measured before they were written; measure them again to get a verdict with intervals"
"""Why a curve's cells lack per-image errors unless the caller knows better: cells of an older version of the store."""


def describe_without_noise(series: pd.Series, why: str = NOT_WRITTEN) -> str:
    """The line for a curve whose cells have no per-image errors: no verdict without measured noise, and `why`."""
    return f"no verdict: the {len(series)} cells of this curve have no per-image errors ({why})"


def describe_phases(verdict: PhaseVerdict | None, series: pd.Series, why_no_noise: str = NOT_WRITTEN) -> str:
    """The verdict's line (`PhaseVerdict.describe`), or why the curve has none."""
    if verdict is not None:
        return verdict.describe()
    return describe_too_short(series) if len(series) < 3 else describe_without_noise(series, why_no_noise)


def summary_table(run: Run, frame: pd.DataFrame, verdicts: bool = True) -> str:
    """Steps x metrics, one column per (layer, instrument, bn_stats), plus classifier accuracy, and (`verdicts`)
    the phase verdict of every reconstruction curve (`reconstruction_verdict`)."""
    columns: dict[str, pd.Series] = {}
    classifier = run.metrics()
    if len(classifier):
        for split in ("test", "train"):
            picked = classifier[(classifier["metric"] == "classifier_accuracy") & (classifier["split"] == split)]
            columns[f"classifier_{split}_acc"] = picked.set_index("step")["value"]
    for metric, label in (
        ("reconstruction_mse", "rec"),
        ("probe_accuracy", "probe_acc"),
        ("transfer_accuracy", "transfer_acc"),
        ("mi_x_t", "I(X;T)"),
        ("mi_t_y", "I(T;Y)"),
    ):
        for (layer, instrument, mode), series in curves(frame, metric).items():
            columns[f"{label}[{layer},{instrument},{mode}]"] = series
    table = pd.DataFrame(columns)
    table = table[table.index.isin(frame["step"].unique())]
    lines = [f"run {run.name}: test split (reconstruction: per-element MSE)", table.to_string(float_format=lambda v: f"{v:.4f}")]
    if verdicts:
        for (layer, instrument, mode), series in curves(frame, "reconstruction_mse").items():
            verdict = reconstruction_verdict(run, frame, layer, instrument, mode)
            lines.append(f"phases of reconstruction [{layer}, {instrument}, bn={mode}]: {describe_phases(verdict, series)}")
    return "\n".join(lines)
