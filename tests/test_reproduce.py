"""The whole `reproduce.all` at smoke scale: every figure, its CSV and the summary are written to --out.

The smoke run itself is the session fixture `smoke_output` (tests/conftest.py), shared with tests/test_ray.py."""

import re

import pandas as pd
import pytest

from reproduce import all as reproduce_all
from reproduce.common import Options, update_summary


def expected_figures(data_available: bool) -> list[str]:
    names = [
        "data_model",
        "theory",
        "phases",
        "layers",
        "decoders",
        "reconstructions",
        "transfer",
        "early_stopping",
        "early_phase",
        "information_plane",
        "label_noise",
    ]
    return names + (["reference_run"] if data_available else [])


def test_every_figure_and_csv_is_written(smoke_output, request):
    out, _ = smoke_output
    import os
    from pathlib import Path

    data = os.environ.get("KPHASES_DATA_DIR")
    with_cifar = bool(data) and (Path(data) / "cifar10.npz").is_file()
    for name in expected_figures(with_cifar):
        for suffix in ("png", "pdf", "csv"):
            path = out / f"{name}.{suffix}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert len(pd.read_csv(out / f"{name}.csv")) > 0, name
    summary = (out / "summary.md").read_text()
    for name in expected_figures(with_cifar):
        assert f"## {name}\n" in summary


def test_the_trained_decoders_lines_say_why_they_have_no_verdict(smoke_output):
    out, _ = smoke_output
    from reproduce.decoders import TRAINED_WHY

    section = (out / "summary.md").read_text().split("## decoders\n")[1].split("\n## ")[0]
    trained = [line for line in section.splitlines() if line.startswith("| linear (")]
    assert trained and all(TRAINED_WHY in line for line in trained), trained
    assert "measured before they were written" not in section


def test_plot_only_redraws_from_csv_without_training(smoke_output):
    out, runs = smoke_output
    before = sorted(p.name for p in runs.iterdir())
    png = out / "phases.png"
    png.unlink()
    reproduce_all.main(["--profile", "smoke", "--out", str(out), "--runs-dir", str(runs), "--plot-only", "--no-progress"])
    assert png.is_file() and sorted(p.name for p in runs.iterdir()) == before


@pytest.mark.parametrize("runs_in_working_directory", [False, True])
def test_plot_only_without_results_names_the_untrained_run(tmp_path, monkeypatch, capsys, runs_in_working_directory):
    """One error line, no traceback; also after the README's first command made ./runs (an absolute
    run path was once globbed under it, which pathlib refuses)."""
    from reproduce import phases

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KPHASES_RUNS_DIR", raising=False)
    if runs_in_working_directory:
        (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        phases.main(["--profile", "smoke", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "other"), "--plot-only"])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in error and len(error.splitlines()) == 1
    assert re.match(r"error: phases: --plot-only: .* has not been trained", error), error
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_summary_sections_are_replaced_not_duplicated(tmp_path):
    options = Options("smoke", tmp_path, False, None, None, False)
    update_summary(options, "a", "first")
    update_summary(options, "b", "second")
    update_summary(options, "a", "third")
    text = (tmp_path / "summary.md").read_text()
    assert text.count("## a\n") == 1 and "third" in text and "first" not in text and "second" in text


def test_information_plane_table_has_both_activations_and_both_lenses(smoke_output):
    out, _ = smoke_output
    table = pd.read_csv(out / "information_plane.csv")
    assert set(table["activation"]) == {"tanh", "relu"}
    assert {"mi_x_t", "mi_t_y", "reconstruction_mse", "probe_accuracy"} <= set(table["metric"])
    assert (table.loc[table["metric"] == "mi_t_y", "value"] <= 3.33).all()  # I(T;Y) <= H(Y) <= log2(10) bits


def test_early_phase_table_has_every_experiment(smoke_output):
    out, _ = smoke_output
    table = pd.read_csv(out / "early_phase.csv")
    assert {"imp", "perturbation", "pretrain", "data", "statistics"} <= set(table["experiment"])
    imp = table[(table["experiment"] == "imp") & (table["round"] == 1)]
    assert ((imp["sparsity"] - 0.2).abs() < 0.01).all()


def test_a_skipped_figure_leaves_earlier_results_in_out_as_they_were(tmp_path):
    """reference_run without a CIFAR-10 copy measures nothing: it must not replace the CSV, figure and
    summary section an earlier run wrote to --out (an empty CSV beside the old PNG lost the data)."""
    from reproduce import reference_run

    out, empty_data = tmp_path / "out", tmp_path / "data"
    out.mkdir()
    empty_data.mkdir()
    earlier = {
        "reference_run.csv": "label,step,metric,value\nseed 0,0,reconstruction_mse,0.5\n",
        "reference_run.png": "an earlier figure",
        "reference_run.pdf": "an earlier figure",
    }
    for name, text in earlier.items():
        (out / name).write_text(text)
    update_summary(
        Options("smoke", out, plot_only=False, runs_dir=None, data_dir=None, progress=False), "reference_run", "the earlier run's table"
    )
    summary = (out / "summary.md").read_text()

    line = reference_run.main(
        ["--profile", "smoke", "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(empty_data), "--no-progress"]
    )

    assert "skipped" in line and "reference_run.png" not in line
    assert {name: (out / name).read_text() for name in earlier} == earlier
    assert (out / "summary.md").read_text() == summary


def test_label_noise_table_has_every_level_and_clean_and_flipped_accuracies(smoke_output):
    from kphases.store import Run
    from reproduce import label_noise, phases
    from reproduce.common import parse_options

    out, runs = smoke_output
    table = pd.read_csv(out / "label_noise.csv")
    assert sorted(table["label_noise"].unique()) == [0.0, 0.1, 0.2]
    assert table.groupby("label_noise")["seed"].nunique().tolist() == [3, 3, 3]
    options = parse_options("", ["--profile", "smoke", "--runs-dir", str(runs)])
    # The 0% / seed 0 run is the phases figure's VGG-8/MNIST run (trained once, shared).
    zero = [p for p in label_noise.planned_runs(options) if p.label == "noise 0% / seed 0"][0]
    assert zero.config.hash() in {item.planned.config.hash() for item in phases.work(options)}
    accuracy = table[(table["metric"] == "classifier_accuracy") & (table["instrument"] == "classifier")]
    for (level, seed), rows in accuracy.groupby(["label_noise", "seed"]):
        splits = set(rows["split"])
        run = Run.open(runs / rows["run"].iloc[0])
        data = run.provenance()["data"]
        if level == 0:
            assert splits == {"train", "test"} and "flipped_train_labels" not in data
            continue
        assert {"train_clean", "train_flipped", "train_flipped_true"} <= splits
        flipped = data["flipped_train_labels"]
        assert flipped == round(level * data["train_size"])  # 26 and 51 of 256
        # Clean and flipped accuracies are the two parts of the train accuracy, at every snapshot.
        by_split = rows.pivot_table(index="step", columns="split", values="value")
        combined = ((data["train_size"] - flipped) * by_split["train_clean"] + flipped * by_split["train_flipped"]) / data["train_size"]
        assert (combined - by_split["train"]).abs().max() < 1e-9, (level, seed)
        assert len(by_split) == len(run.snapshot_steps())
    summary = (out / "summary.md").read_text().split("## label_noise\n")[1]
    for level in ("| 0% | 3 |", "| 10% | 3 |", "| 20% | 3 |"):
        assert level in summary


def test_early_stopping_table_has_four_checkpoints_per_setting_and_seed(smoke_output):
    out, runs = smoke_output
    table = pd.read_csv(out / "early_stopping.csv")
    counts = table.groupby(["setting", "seed"])["checkpoint"].apply(sorted)
    assert all(value == ["final", "monitor", "oracle", "validation_loss"] for value in counts)
    final = table[table["checkpoint"] == "final"]
    assert (final["step"] == final["final_step"]).all()
    oracle = table[table["checkpoint"] == "oracle"].set_index(["setting", "seed"])["target_accuracy"]
    for checkpoint in ("monitor", "final", "validation_loss"):
        other = table[table["checkpoint"] == checkpoint].set_index(["setting", "seed"])["target_accuracy"]
        assert (other <= oracle + 1e-12).all(), f"{checkpoint} beats the hindsight oracle"
    assert list(runs.glob("*/monitor_replay/*/state.json")), "the monitor replay keeps its state in the run directory"


def test_phases_table_holds_the_run_stores_own_rows(smoke_output):
    """Every row of phases.csv is a row of its run's metrics.csv or measurements.csv, with the same
    value; every snapshot step has its classifier rows; accuracies are fractions."""
    from kphases.measurement import read_measurements
    from kphases.store import Run

    out, runs = smoke_output
    table = pd.read_csv(out / "phases.csv")
    assert set(table["run"]) and len(table) > 0
    for name, rows in table.groupby("run"):
        run = Run.open(runs / name)
        classifier = rows[rows["instrument"] == "classifier"]
        stored = run.metrics()
        assert sorted(set(classifier["step"])) == run.snapshot_steps() == sorted(set(stored["step"]))
        joined = classifier.merge(stored, on=["step", "split", "metric"], suffixes=("", "_stored"), validate="one_to_one")
        assert len(joined) == len(classifier) == len(stored)
        assert (joined["value"] - joined["value_stored"]).abs().max() < 1e-12
        measured = rows[rows["instrument"] != "classifier"]
        keys = ["step", "layer", "metric", "split", "instrument", "bn_stats"]
        store_rows = read_measurements(run)
        joined = measured.merge(
            store_rows[keys + ["value"]].drop_duplicates(keys, keep="last"), on=keys, suffixes=("", "_stored"), validate="one_to_one"
        )
        assert len(joined) == len(measured) and {"linear_ridge", "probe"} <= set(measured["instrument"])
        assert (joined["value"] - joined["value_stored"]).abs().max() < 1e-12
        accuracy = rows[rows["metric"].str.endswith("accuracy")]["value"]
        assert ((accuracy >= 0) & (accuracy <= 1)).all()
        mse = measured[measured["metric"] == "reconstruction_mse"]["value"]
        assert (mse > 0).all()


def test_theory_table_has_the_known_answers(smoke_output):
    """The simulation's numbers (NumPy, deterministic): the data model's Eckart-Young minimum 61 and
    tr S 392/3 with outliers at another prototype; R(W_0) 107.854 and its minimum 65.879 (seed 0),
    reached before 2^12 steps, then an increase; without outliers R stays at its minimum."""
    import numpy as np

    out, _ = smoke_output
    table = pd.read_csv(out / "theory.csv")
    table = table[~table["regime"].str.startswith("map: ")]  # the named regimes; the map cells are tested in tests/theory
    scalars = table[table["step"] < 0].pivot_table(index=["regime", "seed"], columns="metric", values="value")
    curves = table[table["step"] >= 0].pivot_table(index=["regime", "seed", "step"], columns="metric", values="value")
    joined = curves.join(scalars)
    assert (
        (joined["reconstruction_loss"] >= joined["eckart_young_minimum"] - 1e-9)
        & (joined["reconstruction_loss"] <= joined["trace_covariance"] + 1e-9)
    ).all()
    three = "10% outliers at another prototype"
    assert scalars.loc[(three, 0), "eckart_young_minimum"] == pytest.approx(61.0)
    assert scalars.loc[(three, 0), "trace_covariance"] == pytest.approx(392 / 3)
    assert scalars.loc[(three, 0), "predicted_outlier_dominance_step"] == 512
    assert scalars.loc[(three, 0), "predicted_three_phases"] == 1 and scalars.loc[("no outliers", 0), "predicted_three_phases"] == 0
    loss = curves.loc[(three, 0), "reconstruction_loss"]
    assert loss.loc[0] == pytest.approx(107.8543, abs=1e-4) and loss.min() == pytest.approx(65.8786, abs=1e-4)
    assert loss.iloc[-1] > loss.min() + 2.0
    flat = curves.loc[("no outliers", 0), "reconstruction_loss"]
    assert flat.loc[0] == pytest.approx(107.8543, abs=1e-4) and flat.iloc[-1] == pytest.approx(flat.min(), abs=1e-6)
    assert curves.loc[("no outliers", 0), "outlier_accuracy"].isna().all()
    accuracy = curves[["majority_accuracy", "test_accuracy"]].to_numpy()
    assert np.all((accuracy >= 0) & (accuracy <= 1))
