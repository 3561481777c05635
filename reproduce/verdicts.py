"""The figures' phase verdicts: per-image errors saved beside each figure's CSV, verdicts drawn from them.

The suite's verdict (`kphases.phases.phase_verdict`, default `VerdictSettings`) resamples the
per-image test errors of each reconstruction curve. Figures read results files only, so `compute`
copies the per-image errors of the curves a figure judges out of the run directories
(`kphases.store.read_per_image_errors`) into `<out>/<figure>_per_image.csv`, next to
`<out>/<figure>.csv`; `plot` (also with `--plot-only`) reads them back. A curve without per-image
errors gets no verdict, and its line says why (`kphases.verdict_tables.describe_phases`). Where the
measurement refitted the decoder (`MeasureConfig.decoder_refits`), the refits' per-image errors are
kept in the same file as curves '<curve>|refit <r>' and enter the verdict as replicates
(`kphases.phases.refit_replicates`): the decoder's fitting noise is then in the intervals.

Where a profile trains further seeds of a run (`reproduce.common.replicas`, labelled '<label> / seed N'),
`judge` gives the verdict across them (hierarchical: seeds, then each seed's test images) once there
are at least 3; with one seed (or two, which give a seed-level interval one degree of freedom) it is
seed 0's verdict over its test images, and `noise_words` says which of the two a line reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kphases.phases import NOISE_IMAGES, PhaseVerdict, VerdictSettings, phase_verdict, refit_replicates
from kphases.store import read_per_image_errors
from kphases.verdict_tables import NOT_WRITTEN, describe_phases
from reproduce.common import SEED_MARK, curve, read_table_file, write_table_file

KEY_SEPARATOR = "|"
REFIT_MARK = "|refit "


def curve_key(label: str, layer: str, instrument: str, bn_stats: str) -> str:
    return KEY_SEPARATOR.join((label, layer, instrument, bn_stats))


def per_image_path(out: Path, name: str) -> Path:
    return Path(out) / f"{name}_per_image.csv"


def collect(run, frame: pd.DataFrame, label: str, curves_wanted: list[tuple[str, str, str]]) -> dict[str, tuple]:
    """key -> (steps, steps x images errors) for each (layer, instrument, bn_stats) of one run that has per-image
    files; (steps, errors, refits x steps x images errors) where every step has decoder refits
    (`MeasureConfig.decoder_refits`)."""
    found = {}
    for layer, instrument, bn_stats in curves_wanted:
        per_image = read_per_image_errors(run, frame, layer, instrument, bn_stats)
        if per_image is None:
            continue
        refits = read_per_image_errors(run, frame, layer, instrument, bn_stats, refits=True)
        key = curve_key(label, layer, instrument, bn_stats)
        found[key] = per_image if refits is None or refits[0] != per_image[0] else (*per_image, refits[1].transpose(1, 0, 2))
    return found


def verdict_errors(stored: tuple) -> np.ndarray:
    """What `phase_verdict` resamples for one seed's stored curve: steps x images, or with refits
    replicates x steps x images (`kphases.phases.refit_replicates`)."""
    return stored[1] if len(stored) == 2 else refit_replicates(stored[1], stored[2])


def write_per_image(out: Path, name: str, collected: dict[str, tuple[list[int], np.ndarray]]) -> Path | None:
    """Write (replace, atomically) the figure's per-image errors as a long CSV (curve, step, image,
    error; float32 values written to round-trip exactly); none when no curve has per-image errors."""
    path = per_image_path(out, name)
    if not collected:
        return None
    Path(out).mkdir(parents=True, exist_ok=True)
    frames = []
    for key, (steps, errors, *refits) in collected.items():
        # A curve's decoder refits are curves of their own, keyed '<curve>|refit <r>'.
        arrays = [(key, errors)] + [(f"{key}{REFIT_MARK}{index}", each) for index, each in enumerate(refits[0] if refits else [])]
        for name, array in arrays:
            array = np.asarray(array, dtype=np.float32)
            step_index, image_index = np.meshgrid(np.asarray(steps, dtype=np.int64), np.arange(array.shape[1]), indexing="ij")
            frames.append(pd.DataFrame({"curve": name, "step": step_index.ravel(), "image": image_index.ravel(), "error": array.ravel()}))

    return write_table_file(path, pd.concat(frames, ignore_index=True), float_format="%.9g")  # atomically, with its record


def read_per_image(out: Path, name: str) -> dict[str, tuple[list[int], np.ndarray]]:
    path = per_image_path(out, name)
    if not path.exists():
        return {}

    table = read_table_file(path)
    result, refits = {}, {}
    for key, group in table.groupby("curve", sort=False):
        wide = group.pivot(index="step", columns="image", values="error").sort_index()
        curve, mark, index = str(key).rpartition(REFIT_MARK)
        if mark and index.isdigit():
            refits.setdefault(curve, []).append((int(index), [int(step) for step in wide.index], wide.to_numpy(dtype=np.float32)))
        else:
            result[str(key)] = ([int(step) for step in wide.index], wide.to_numpy(dtype=np.float32))
    for curve, found in refits.items():
        steps = result[curve][0] if curve in result else None
        if steps is None or any(each_steps != steps for _, each_steps, _ in found):
            raise ValueError(f"{path}: the refits of curve {curve!r} do not have that curve's steps (or the curve is missing)")
        result[curve] = (*result[curve], np.stack([array for _, _, array in sorted(found, key=lambda item: item[0])]))
    return result


def verdict(
    per_image: dict, series: pd.Series, label: str, layer: str, instrument: str, bn_stats: str, settings: VerdictSettings | None = None
) -> PhaseVerdict | None:
    """The curve's `PhaseVerdict` from its per-image errors when they cover exactly its steps; None for fewer
    than 3 measurements or without per-image errors (`describe` then says which)."""
    if len(series) < 3:
        return None
    stored = per_image.get(curve_key(label, layer, instrument, bn_stats))
    if stored is None or list(stored[0]) != [int(step) for step in series.index]:
        return None
    errors = verdict_errors(stored)
    # One seed: replicates are (refits, steps, images), which phase_verdict would read as seeds.
    return phase_verdict(stored[0], errors if errors.ndim == 2 else errors[None], settings=settings or VerdictSettings())


def across_seeds(
    per_image: dict,
    curves: pd.DataFrame,
    labels: list[str],
    layer: str,
    instrument: str,
    bn_stats: str,
    settings: VerdictSettings | None = None,
) -> PhaseVerdict | None:
    """The verdict across seeds on `curves` (step x seed, the seeds' figure labels in `labels`, in column
    order): hierarchical over the seeds and each seed's test images when every seed's per-image errors
    cover the curve's steps with one number of images (and of decoder refits); otherwise from the seed curves alone, and its
    line says "seed curves". None with fewer than 3 seeds or 3 steps."""
    curves = curves.dropna()
    if curves.shape[1] < 3 or len(curves) < 3:
        return None
    steps = [int(step) for step in curves.index]
    settings = settings or VerdictSettings()
    stored = [per_image.get(curve_key(label, layer, instrument, bn_stats)) for label in labels]
    if all(item is not None and list(item[0]) == steps for item in stored):
        errors = [verdict_errors(item) for item in stored]
        # Seeds stack when they agree in images and in refits (a seed with refits and one without do not).
        if len({each.shape for each in errors}) == 1:
            return phase_verdict(steps, np.stack(errors), settings=settings)
    return phase_verdict(steps, seed_curves=curves.to_numpy().T, settings=settings)


def seed_labels(labels, label: str) -> list[str]:
    """`label` (seed 0) and the labels of its further seeds among `labels` ('<label> / seed N'), by seed."""
    prefix = f"{label}{SEED_MARK}"
    further = [str(other) for other in labels if str(other).startswith(prefix) and str(other)[len(prefix) :].isdigit()]
    return [label, *sorted(further, key=lambda other: int(other[len(prefix) :]))]


def seed_curves(table: pd.DataFrame, label: str, layer: str, instrument: str, bn_stats: str) -> pd.DataFrame:
    """The test reconstruction curve of run `label` and of each of its further seeds in a figure table: step x
    seed, columns the seeds' labels (seed 0 first); a seed without the curve has no column."""
    columns = {}
    for seeded in seed_labels(dict.fromkeys(table["label"]), label):
        values = curve(table, seeded, "reconstruction_mse", instrument=instrument, layer=layer, bn_stats=bn_stats)
        if len(values) or seeded == label:
            columns[seeded] = values
    return pd.DataFrame(columns)


def judge(
    per_image: dict, table: pd.DataFrame, label: str, layer: str, instrument: str, bn_stats: str, settings: VerdictSettings | None = None
) -> tuple[PhaseVerdict | None, pd.DataFrame]:
    """(verdict, seed curves) of run `label`'s reconstruction curve: across its seeds (`across_seeds`: hierarchical
    over the seeds, then their test images) where `table` has it for at least 3 seeds; otherwise seed 0's verdict
    over its test images (`verdict`), whose noise says "one seed"."""
    seeds = seed_curves(table, label, layer, instrument, bn_stats)
    if seeds.shape[1] >= 3:
        result = across_seeds(per_image, seeds, list(seeds.columns), layer, instrument, bn_stats, settings)
        if result is not None:
            return result, seeds
    return verdict(per_image, seeds[label].dropna(), label, layer, instrument, bn_stats, settings), seeds


def noise_words(result: PhaseVerdict | None) -> str:
    """Which noise a verdict's intervals carry, short enough for a summary line."""
    if result is None:
        return "no verdict"
    if result.noise_source == NOISE_IMAGES:
        return "one seed: test-image noise only" + (f" and {result.replicates} decoder refits" if result.replicates > 1 else "")
    if result.images == 0:
        return f"{result.seeds} seeds: seed curves only (no per-image errors)"
    return f"{result.seeds} seeds, hierarchical: seeds then test images"


def noise_summary(results) -> str:
    """The distinct `noise_words` of the verdicts given (those that exist), in order."""
    return "; ".join(dict.fromkeys(noise_words(result) for result in results if result is not None)) or "no verdict"


def describe(result: PhaseVerdict | None, series: pd.Series, why_no_noise: str = NOT_WRITTEN) -> str:
    """The verdict's line, or why the curve has none (too short, or no per-image errors, for the reason `why_no_noise`)."""
    return describe_phases(result, series, why_no_noise)
