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
