"""The early_stopping figure's comparison: differences, intervals and readings on known tables."""

import math

import pandas as pd
import pytest

from reproduce.early_stopping import compare, reading


def _rows(setting, seed, accuracies, decided_at=64, final_step=1024, test_images=1000):
    steps = {"monitor": 64 if decided_at is not None else final_step, "oracle": 128, "final": final_step, "validation_loss": 512}
    return [
        {
            "setting": setting,
            "seed": seed,
            "checkpoint": checkpoint,
            "step": steps[checkpoint],
            "target_accuracy": accuracy,
            "decided_at": decided_at,
            "final_step": final_step,
            "target_test_images": test_images,
        }
        for checkpoint, accuracy in accuracies.items()
    ]


def test_three_seeds_give_a_t_interval_and_the_compute_saved():
    rows = []
    for seed, gain in enumerate([0.04, 0.05, 0.06]):
        rows += _rows("colour", seed, {"monitor": 0.80 + gain, "oracle": 0.87, "final": 0.80, "validation_loss": 0.81}, decided_at=256)
    result = compare(pd.DataFrame(rows)).iloc[0]
    assert result["monitor_minus_final"] == pytest.approx(0.05)
    half = 4.30265 * 0.01 / math.sqrt(3)  # t(0.975, 2 dof) x sd / sqrt(n)
    assert result["monitor_minus_final_low"] == pytest.approx(0.05 - half, rel=1e-5)
    assert result["monitor_minus_final_high"] == pytest.approx(0.05 + half, rel=1e-5)
    assert result["compute_saved"] == pytest.approx(1 - 256 / 1024)
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], result["decided_in"]) == "helps"


def test_one_seed_gives_a_binomial_interval():
    rows = _rows("switch", 0, {"monitor": 0.70, "oracle": 0.75, "final": 0.72, "validation_loss": 0.72}, test_images=2000)
    result = compare(pd.DataFrame(rows)).iloc[0]
    half = 1.96 * math.sqrt(0.70 * 0.30 / 2000 + 0.72 * 0.28 / 2000)
    assert result["monitor_minus_final"] == pytest.approx(-0.02)
    assert (result["monitor_minus_final_low"], result["monitor_minus_final_high"]) == pytest.approx((-0.02 - half, -0.02 + half))
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], 1) == "undecided (interval includes 0)"


def test_an_undecided_monitor_keeps_the_final_checkpoint_and_saves_nothing():
    rows = _rows("switch", 0, {"monitor": 0.72, "oracle": 0.75, "final": 0.72, "validation_loss": 0.72}, decided_at=None)
    result = compare(pd.DataFrame(rows)).iloc[0]
    assert result["compute_saved"] == 0.0 and result["decided_in"] == 0
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], 0).startswith("no decision")


def test_a_confident_loss_reads_hurts():
    rows = []
    for seed, loss in enumerate([0.10, 0.11, 0.12]):
        rows += _rows("colour", seed, {"monitor": 0.80 - loss, "oracle": 0.85, "final": 0.80, "validation_loss": 0.80})
    result = compare(pd.DataFrame(rows)).iloc[0]
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], 3) == "hurts"
