"""reproduce.verdicts: the per-image errors a figure's verdicts need round-trip exactly through its CSV."""

import numpy as np
import pytest

from reproduce import verdicts
from reproduce.common import TableError


def test_per_image_errors_round_trip_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    collected = {
        verdicts.curve_key("VGG-8", "penultimate", "linear_ridge", "batch"): ([0, 2, 4], rng.random((3, 5)).astype(np.float32)),
        verdicts.curve_key("ResNet", "block3", "linear_exact", "stored"): ([0, 8], rng.random((2, 4)).astype(np.float32) * 1e-7),
    }
    verdicts.write_per_image(tmp_path, "phases", collected)
    read = verdicts.read_per_image(tmp_path, "phases")
    assert read.keys() == collected.keys()
    for key, (steps, errors) in collected.items():
        assert read[key][0] == steps and np.array_equal(read[key][1], errors)


def test_a_torn_per_image_file_is_refused(tmp_path):
    verdicts.write_per_image(tmp_path, "phases", {"a|b|c|d": ([0, 2], np.ones((2, 3), dtype=np.float32))})
    path = verdicts.per_image_path(tmp_path, "phases")
    path.write_text(path.read_text()[:-7])
    with pytest.raises(TableError, match="cut off"):
        verdicts.read_per_image(tmp_path, "phases")


def test_a_verdict_across_seeds_resamples_each_seeds_images_when_every_seed_has_them():
    import pandas as pd

    steps = [0, 2, 4, 8, 16, 32]
    shape = np.array([1.0, 1.0, 0.8, 0.7, 0.8, 0.9])
    rng = np.random.default_rng(0)
    labels = [f"seed {seed}" for seed in range(3)]
    errors = {label: shape[:, None] * rng.gamma(2.0, 0.5, 50)[None] * (1 + 0.05 * rng.standard_normal((6, 50))) for label in labels}
    per_image = {verdicts.curve_key(label, "penultimate", "linear_ridge", "batch"): (steps, errors[label]) for label in labels}
    curves = pd.DataFrame({label: errors[label].mean(axis=1) for label in labels}, index=steps)
    nested = verdicts.across_seeds(per_image, curves, labels, "penultimate", "linear_ridge", "batch")
    assert (nested.seeds, nested.images) == (3, 50) and "3 seeds x 50 test images (hierarchical" in nested.describe()
    # one seed without per-image errors: the seed curves alone, and the line says so
    del per_image[verdicts.curve_key("seed 2", "penultimate", "linear_ridge", "batch")]
    curves_only = verdicts.across_seeds(per_image, curves, labels, "penultimate", "linear_ridge", "batch")
    assert curves_only.images == 0 and "3 seeds (seed curves; t-interval)" in curves_only.describe()
    assert verdicts.across_seeds(per_image, curves[labels[:2]], labels[:2], "penultimate", "linear_ridge", "batch") is None
