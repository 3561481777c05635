"""Nothing lost, nothing silently wrong: kills at exact moments, torn and edited files, bad data, a full disk.

Each test stages one failure a user can meet and checks the suite's answer: resumed bit-identically,
detected and named, or refused in one line with nothing changed on disk. A kill is staged
in-process by raising a BaseException (nothing in kphases catches one) right after the write that
opens the window, or in the middle of a write (half the bytes on disk, then the BaseException); in
a subprocess by os._exit in the middle of a write; a full disk by a free-space reading of a few
bytes, or by the OSError(ENOSPC) a full disk gives a writer. docs/guarantees.md lists which test
checks which guarantee.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kphases.cli import main
from kphases.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, ScheduleConfig, TrainingConfig
from kphases.data import DataError, check_raw_splits
from kphases.measurement import measure
from kphases.models import build_model
from kphases.store import CorruptSnapshotError, DamagedFileError, DamagedFileWarning, NoSpaceError, Run, StoreError, atomic_path, list_runs
from kphases.training import TrainingError, train

TINY = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=200, test_size=60),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration="8it", batch_size=32, learning_rate=0.05),
)
FAST = MeasureConfig(decoders=("linear_exact",), probe_epochs=1, transfer=())
QUIET = {"progress": False}


class Killed(BaseException):
    """A kill at this exact moment: nothing in kphases catches it, so nothing after it runs."""


def weights(run: Run, step: int) -> list[np.ndarray]:
    model = build_model(run.config.model, (32, 32, 1), 10)
    run.load_snapshot(model, step)
    return [w.copy() for w in model.get_weights()]


def assert_same_run(a: Run, b: Run) -> None:
    assert a.snapshot_steps() == b.snapshot_steps() and a.complete and b.complete
    for step in a.snapshot_steps():
        for x, y in zip(weights(a, step), weights(b, step), strict=True):
            assert np.array_equal(x, y), step
    assert a.metrics().equals(b.metrics())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Run:
    """TINY trained without interruption: what every resumed run must equal bit for bit."""
    return train(TINY, runs_dir=tmp_path_factory.mktemp("reference"), **QUIET)


def copy_of(run: Run, tmp_path: Path) -> Run:
    target = tmp_path / "copy" / run.name
    shutil.copytree(run.directory, target)
    return Run.open(target)


def kill_after_snapshot(monkeypatch, step: int) -> None:
    original = Run.save_snapshot

    def save_then_die(self, model, at):
        path = original(self, model, at)
        if at == step:
            raise Killed(f"killed right after snapshot {at} was recorded")
        return path

    monkeypatch.setattr(Run, "save_snapshot", save_then_die)


# --- a kill between a snapshot and its resume state ------------------------------------------


@pytest.mark.parametrize("step", [2, 8])
def test_a_kill_right_after_any_snapshot_resumes_bit_identically(tmp_path, monkeypatch, reference, step):
    with monkeypatch.context() as patch:
        kill_after_snapshot(patch, step)
        with pytest.raises(Killed):
            train(TINY, runs_dir=tmp_path, **QUIET)
    killed = Run.open(tmp_path / TINY.hash())
    assert step in killed.snapshot_steps() and not killed.complete
    assert_same_run(train(TINY, runs_dir=tmp_path, **QUIET), reference)


def test_a_store_without_resume_state_says_exactly_what_to_do(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        kill_after_snapshot(patch, 2)
        with pytest.raises(Killed):
            train(TINY, runs_dir=tmp_path, **QUIET)
    run = Run.open(tmp_path / TINY.hash())
    run.remove_checkpoint()  # what a kphases that wrote the snapshot first left behind
    with pytest.raises(TrainingError, match=rf"snapshots \[0, 2\] but no resume checkpoint .* mv {run.directory} "):
        train(TINY, runs_dir=tmp_path, **QUIET)


# --- bad data and bad configs: one line, nothing created ----------------------------


def write_npz(directory: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "y_train": np.tile(np.arange(10, dtype=np.uint8), 6),
        "x_test": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_test": np.tile(np.arange(10, dtype=np.uint8), 2),
    }
    arrays.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "mnist.npz", **arrays)
    return directory


def train_cli(tmp_path, data_dir, *flags):
    return main(
        [
            "train",
            "--profile",
            "smoke",
            "--data.source",
            "directory",
            "--data-dir",
            str(data_dir),
            "--data.train-size",
            "60",
            "--data.test-size",
            "20",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress",
            *flags,
        ]
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"x_train": np.random.default_rng(1).random((60, 28, 28)).astype(np.float32)},
            r"x_train has dtype float32; the directory source reads uint8 pixels 0..255",
        ),
        (
            {"y_train": np.tile(np.arange(1, 11), 6)},
            r"train labels include \[10\] \(6 labels\); mnist has 10 classes, so labels must be 0..9",
        ),
        ({"y_test": np.full(20, 255, np.uint8)}, r"test labels include \[255\] \(20 labels\)"),
        ({"y_train": np.tile(np.arange(10.0), 6)}, r"train labels have dtype float64; expected integer class labels 0..9"),
    ],
)
def test_bad_data_is_one_line_naming_it_and_creates_no_run(tmp_path, capsys, overrides, message):
    data = write_npz(tmp_path / "data", **overrides)
    assert train_cli(tmp_path, data) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and error.startswith("error: "), error
    assert __import__("re").search(message, error), error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_nan_images_are_named_at_load_not_blamed_on_the_learning_rate():
    images = np.zeros((10, 8, 8, 1), np.float32)
    images[3, 2, 2, 0] = np.nan
    images[4, 1, 1, 0] = np.inf
    labels = np.arange(10)
    with pytest.raises(DataError, match="test images hold 2 NaN or infinite pixel values"):
        check_raw_splits((images[:0], labels[:0], images, labels), "digits", "embedded:digits")


@pytest.mark.parametrize(
    "change",
    [
        {"model": ModelConfig(architecture="vgg99", width=0.125)},
        {"training": TrainingConfig(duration="8it", lr_milestones=("9it",))},
        {"schedule": ScheduleConfig(kind="explicit", steps=(0, 4, 100))},
    ],
)
def test_an_invalid_config_creates_nothing(tmp_path, change):
    with pytest.raises(ValueError):
        train(TINY.replace(**change), runs_dir=tmp_path, **QUIET)
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


# --- torn tables --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured(reference, tmp_path_factory):
    run = Run.open(shutil.copytree(reference.directory, tmp_path_factory.mktemp("measured") / reference.name))
    frame = measure(run, FAST, log=lambda text: None, **QUIET)
    return run, frame, run.measurements_path.read_text()


def rows_of(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["step", "layer", "bn_stats", "instrument", "metric", "split"]
    return frame[frame["metric"] != "seconds"].sort_values(columns).reset_index(drop=True)[columns + ["value"]]


@pytest.mark.parametrize("damage", ["torn last row", "unparsable middle row"])
def test_torn_measurement_rows_are_measured_again_and_the_damaged_file_kept(measured, damage):
    run, frame, text = measured
    lines = text.splitlines(keepends=True)
    if damage == "torn last row":
        damaged = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]  # a kill or a full disk mid-line
    else:
        fields = lines[3].split(",")
        fields[5] = "0.12x"
        damaged = "".join(lines[:3]) + ",".join(fields) + "".join(lines[4:])
    run.measurements_path.write_text(damaged)
    with pytest.warns(DamagedFileWarning, match=r"torn or unparsable row.*a copy of the file is kept as measurements.csv.damaged-"):
        again = measure(run, FAST, log=lambda text: None, **QUIET)
    assert rows_of(again).equals(rows_of(frame))  # every value back, measured again (the decoder is exact, the probe seeded)
    assert not again["value"].isna().any()
    copies = list(run.directory.glob("measurements.csv.damaged-*"))
    assert [copy.read_text() for copy in copies] == [damaged]
    for copy in copies:
        copy.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedFileWarning)
        assert len(run.read_measurements()) == len(frame)  # the rewritten file is whole


def test_metrics_cut_mid_number_is_refused_naming_the_line(reference, tmp_path):
    run = copy_of(reference, tmp_path)
    text = run.metrics_path.read_text()
    run.metrics_path.write_text(text[:-4])  # '...,0.1234567\n' -> '...,0.12345': still a number
    with pytest.raises(DamagedFileError, match=rf"metrics.csv line {len(text.splitlines())} is cut off"):
        run.metrics()


# --- edited configs and files that went missing ----------------------------------------------


def test_an_edited_config_is_refused_by_every_open(reference, tmp_path, capsys):
    run = copy_of(reference, tmp_path)
    edited = TINY.replace(data=DataConfig(name="digits", source="embedded", train_size=100, test_size=60))
    (run.directory / "config.json").write_text(edited.to_json())
    message = rf"hashes to {edited.hash()}, not to its directory's name {run.name}: config.json was edited"
    with pytest.raises(StoreError, match=message):
        Run.open(run.directory)
    with pytest.raises(StoreError, match=message):
        measure(run.directory, FAST, log=lambda text: None, **QUIET)
    with pytest.raises(StoreError, match=message):
        list_runs(run.directory.parent)
    assert main(["measure", str(run.directory), "--no-progress"]) == 2
    assert "config.json was edited" in capsys.readouterr().err
    assert not run.measurements_path.exists()


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_train_on_a_complete_run_checks_its_snapshots(reference, tmp_path, damage):
    run = copy_of(reference, tmp_path)
    path = run.snapshot_path(4)
    if damage == "deleted":
        path.unlink()
    else:
        payload = bytearray(path.read_bytes())
        payload[len(payload) // 2] ^= 0xFF
        path.write_bytes(bytes(payload))
    with pytest.raises(CorruptSnapshotError, match="step_4.weights.h5 (is recorded .* but missing|does not match its manifest record)"):
        train(TINY, runs_dir=run.directory.parent, **QUIET)


def test_measure_on_an_incomplete_run_says_so_and_gives_no_verdict(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        kill_after_snapshot(patch, 4)
        with pytest.raises(Killed):
            train(TINY, runs_dir=tmp_path, **QUIET)
    run = Run.open(tmp_path / TINY.hash())
    config = MeasureConfig(decoders=("linear_exact",), probe=False, transfer=())
    lines = []
    measure(run, config, log=lines.append, **QUIET)
    text = "\n".join(lines)
    assert f"run {run.name} is not complete" in text and "[0, 2, 4], of its schedule [0, 2, 4, 8]" in text
    assert "phases of reconstruction" not in text
    lines.clear()
    measure(run, config, log=lines.append, partial_verdicts=True, **QUIET)
    assert "phases of reconstruction" not in "\n".join(lines)  # every cell measured already: no table printed
    run.measurements_path.unlink()
    measure(run, config, log=lines.append, partial_verdicts=True, **QUIET)
    assert "phases of reconstruction" in "\n".join(lines)


def test_the_cli_gives_partial_verdicts_when_asked(tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        kill_after_snapshot(patch, 4)
        with pytest.raises(Killed):
            train(TINY, runs_dir=tmp_path, **QUIET)
    directory = str(tmp_path / TINY.hash())
    quiet = ["--no-progress", "--decoders", "linear_exact", "--no-probe", "--transfer"]
    assert main(["measure", directory, *quiet]) == 0
    assert "phases of reconstruction" not in capsys.readouterr().out
    Path(directory, "measurements.csv").unlink()
    assert main(["measure", directory, *quiet, "--partial-verdicts"]) == 0
    assert "phases of reconstruction" in capsys.readouterr().out


# --- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_during_train_is_named_and_the_run_resumes(tmp_path, monkeypatch, reference):
    usage = shutil.disk_usage(tmp_path)

    def fill_the_disk(run, step, model, optimizer):
        if step == 5:
            monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))

    with pytest.raises(NoSpaceError, match=rf"not enough space on the disk of {tmp_path / TINY.hash()}.*4.1 KB free; nothing was written"):
        train(TINY, runs_dir=tmp_path, callbacks=[fill_the_disk], **QUIET)
    monkeypatch.undo()
    stopped = Run.open(tmp_path / TINY.hash())
    assert stopped.snapshot_steps() == [0, 2, 4] and stopped.checkpoint_state()["step"] == 4
    assert not [path for path in stopped.directory.rglob("*") if ".tmp" in path.name]
    assert_same_run(train(TINY, runs_dir=tmp_path, **QUIET), reference)


def test_enospc_from_the_weights_writer_is_a_store_error(tmp_path, monkeypatch, reference):
    import keras

    original = keras.Model.save_weights

    def full_at_step_8(self, path, *args, **kwargs):
        if "step_8" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", full_at_step_8)
    with pytest.raises(NoSpaceError, match=rf"no space left on the disk of {tmp_path / TINY.hash()}/checkpoint .* free\) while writing"):
        train(TINY, runs_dir=tmp_path, **QUIET)
    monkeypatch.undo()
    stopped = Run.open(tmp_path / TINY.hash())
    assert stopped.snapshot_steps() == [0, 2, 4]
    assert not [path for path in stopped.directory.rglob("*") if ".tmp" in path.name]
    assert_same_run(train(TINY, runs_dir=tmp_path, **QUIET), reference)


def test_a_full_disk_during_measure_is_one_line_and_changes_nothing(reference, tmp_path, monkeypatch, capsys):
    run = copy_of(reference, tmp_path)
    original = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".measurements.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert (
        main(
            ["measure", str(run.directory), "--profile", "smoke", "--decoders", "linear_exact", "--no-probe", "--transfer", "--no-progress"]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith(f"error: no space left on the disk of {run.directory}"), error
    assert not run.measurements_path.exists() and not list(run.directory.glob(".measurements*"))


# --- paths that are not runs ---------------------------------------------------------------


def test_an_absolute_path_that_is_not_a_run_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # the README's first command makes ./runs
    missing = tmp_path / "absent" / "run"
    with pytest.raises(StoreError, match=rf"'{missing}' is not a run directory \(it does not exist\)"):
        Run.open(missing)
    assert main(["measure", str(missing)]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "Traceback" not in error and len(error.strip().splitlines()) == 1


# --- temp files of killed writers, and permissions ------------------------------------------


def test_temp_files_of_killed_writers_are_removed_on_open_and_live_ones_kept(reference, tmp_path):
    run = copy_of(reference, tmp_path)
    writer = (
        "import os, sys\nfrom pathlib import Path\nfrom kphases.store import atomic_path\n"
        "with atomic_path(Path(sys.argv[1]), suffix='.weights.h5') as temp:\n"
        "    temp.write_bytes(b'half a snapshot')\n    os._exit(9)\n"
    )
    target = run.snapshot_path(16)
    result = subprocess.run([sys.executable, "-c", writer, str(target)], cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 9
    orphans = [path for path in target.parent.iterdir() if ".tmp" in path.name]
    assert len(orphans) == 1 and not target.exists()
    with atomic_path(run.directory / "manifest.json") as live:  # this process, still writing
        Run.open(run.directory)
        assert live.exists()
        live.write_text((run.directory / "manifest.json").read_text())
    assert not [path for path in run.directory.rglob("*") if ".tmp" in path.name]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run = Run.create(tmp_path, TINY)
        run.update_manifest(complete=False)
    finally:
        os.umask(previous)
    for path in (run.directory / "config.json", run.manifest_path):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


# --- figure tables in --out ----------------------------------------------------------------


def test_plot_only_refuses_a_figure_csv_cut_mid_row_naming_it(tmp_path, capsys):
    from reproduce import phases
    from reproduce.common import FIGURES_DIR

    out = tmp_path / "out"
    out.mkdir()
    text = (FIGURES_DIR / "phases.csv").read_text()
    argv = ["--profile", "quick", "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--plot-only", "--no-progress"]
    (out / "phases.csv").write_text(text)
    assert "phases.png" in phases.main(argv)  # the whole table draws
    cut = text[: int(len(text) * 0.6)]
    assert not cut.endswith("\n")
    (out / "phases.csv").write_text(cut)
    with pytest.raises(SystemExit) as exit_info:
        phases.main(argv)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: phases: {out / 'phases.csv'} is cut off"), error


def test_an_invalid_lineage_config_leaves_no_run_directory(tmp_path):
    # A lineage whose parents were never trained is refused before anything is created for it.
    from kphases.config import LineageConfig, profile
    from kphases.early_phase import train_lineage

    config = profile("smoke").replace(lineage=LineageConfig(rewind_run="0123456789ab", rewind_step=4))
    with pytest.raises(Exception):
        train_lineage(config, runs_dir=tmp_path, progress=False)
    assert not (tmp_path / config.hash()).exists()


# --- figures and summaries: written to a temp name and renamed ------------------------------------


def half_then_die(write):
    """A writer that puts half of what it was given on disk, then is killed (the exact write a kill cuts)."""

    def cut(self, data, *args, **kwargs):
        write(self, data[: len(data) // 2], *args, **kwargs)
        raise Killed(f"killed while writing {self.name}")

    return cut


def figure_options(out: Path):
    from reproduce.common import Options

    return Options("smoke", out, plot_only=False, runs_dir=None, data_dir=None, progress=False)


def test_a_kill_while_a_figure_is_saved_leaves_the_old_figure(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from reproduce.common import save_figure

    options = figure_options(tmp_path)
    save_figure(plt.figure(), options, "phases")
    before = {name: (tmp_path / name).read_bytes() for name in ("phases.png", "phases.pdf")}
    original = Figure.savefig

    def savefig_then_die(self, target, *args, **kwargs):
        original(self, target, *args, **kwargs)
        path = Path(target)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the bytes a kill mid-write leaves
        raise Killed(f"killed while saving {path.name}")

    monkeypatch.setattr(Figure, "savefig", savefig_then_die)
    figure = plt.figure()
    figure.gca().plot([0, 1], [1, 0])
    with pytest.raises(Killed):
        save_figure(figure, options, "phases")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_kill_while_summary_md_is_written_leaves_it_whole(tmp_path, monkeypatch):
    from reproduce.common import update_summary

    options = figure_options(tmp_path)
    update_summary(options, "phases", "the phases table")
    update_summary(options, "layers", "the layers table")
    before = (tmp_path / "summary.md").read_text()
    original = Path.write_text
    monkeypatch.setattr(
        Path,
        "write_text",
        lambda self, text, *a, **k: (half_then_die(original) if "summary.md" in self.name else original)(self, text, *a, **k),
    )
    with pytest.raises(Killed):
        update_summary(options, "decoders", "the decoders table")
    monkeypatch.undo()
    assert (tmp_path / "summary.md").read_text() == before


def test_a_run_of_one_figure_never_drops_another_figures_section(tmp_path):
    from reproduce.common import update_summary

    options = figure_options(tmp_path)
    update_summary(options, "phases", "the phases table")
    update_summary(options, "layers", "the layers table")
    (tmp_path / "summary.md").write_text("")  # what a kill during a write in place left
    update_summary(options, "decoders", "the decoders table")
    text = (tmp_path / "summary.md").read_text()
    assert sorted(line for line in text.splitlines() if line.startswith("## ")) == ["## decoders", "## layers", "## phases"], text
    assert "the phases table" in text and "the layers table" in text and "the decoders table" in text


def test_sections_of_a_summary_without_section_files_are_kept(tmp_path):
    from reproduce.common import SUMMARY_HEADER, update_summary

    (tmp_path / "summary.md").write_text(SUMMARY_HEADER + "\n## theory\nthe theory table\n\n## phases\nthe old phases table\n\n")
    update_summary(figure_options(tmp_path), "phases", "the new phases table")
    text = (tmp_path / "summary.md").read_text()
    assert text == SUMMARY_HEADER + "\n## theory\nthe theory table\n\n## phases\nthe new phases table\n\n", text


def test_a_kill_while_headline_csv_is_written_leaves_the_old_one(tmp_path, monkeypatch):
    from reproduce.common import FIGURES_DIR
    from reproduce.compare import HEADLINE_FILE, report

    shutil.copyfile(FIGURES_DIR / "phases.csv", tmp_path / "phases.csv")
    (tmp_path / HEADLINE_FILE).write_text("figure,key,kind,value\nold,old,accuracy,0.5\n")
    before = (tmp_path / HEADLINE_FILE).read_text()
    original = Path.write_bytes
    monkeypatch.setattr(
        Path, "write_bytes", lambda self, data: (half_then_die(original) if HEADLINE_FILE in self.name else original)(self, data)
    )
    with pytest.raises(Killed):
        report(tmp_path, FIGURES_DIR)
    assert (tmp_path / HEADLINE_FILE).read_text() == before


# --- records: rows cut at a line end and edited values are named ----------------------------------


@pytest.mark.parametrize("damage", ["rows cut at a line end", "a value edited"])
def test_measurements_cut_at_a_row_boundary_or_edited_are_refused(measured, capsys, damage):
    run = measured[0]
    text = run.measurements_path.read_text()  # as earlier tests left it, with its record
    lines = text.splitlines(keepends=True)
    if damage == "rows cut at a line end":
        damaged = "".join(lines[:-3])
    else:
        fields = lines[2].split(",")
        fields[5] = repr(float(fields[5]) * 1.5)
        damaged = "".join(lines[:2]) + ",".join(fields) + "".join(lines[3:])
    run.measurements_path.write_text(damaged)
    try:
        found = len(damaged.splitlines()) - 1
        message = (
            rf"{run.measurements_path} holds {found} rows in \d+ bytes, its record measurements.csv.record.json says {len(lines) - 1} rows"
        )
        with pytest.raises(DamagedFileError, match=message):
            measure(run, FAST, log=lambda text: None, **QUIET)
        assert (
            main(["measure", str(run.directory), "--decoders", "linear_exact", "--probe-epochs", "1", "--transfer", "--no-progress"]) == 2
        )
        captured = capsys.readouterr()
        error = captured.err.strip()
        assert len(error.splitlines()) == 1 and "rows were cut or values edited" in error and f"mv {run.measurements_path}" in error, error
        assert "already measured" not in captured.out
    finally:
        run.measurements_path.write_text(text)


def write_figure_table(out: Path) -> Path:
    from reproduce.common import FIGURES_DIR, write_table_file

    return write_table_file(out / "phases.csv", pd.read_csv(FIGURES_DIR / "phases.csv"))


def test_plot_only_refuses_a_figure_csv_cut_at_a_row_boundary(tmp_path, capsys):
    from reproduce import phases

    out = tmp_path / "out"
    path = write_figure_table(out)
    text = path.read_text()
    argv = ["--profile", "quick", "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--plot-only", "--no-progress"]
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))  # whole rows: every line ends, every row has its fields
    with pytest.raises(SystemExit) as exit_info:
        phases.main(argv)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: phases: {path} holds {len(lines) // 2 - 1} rows"), error
    assert "phases.csv.record.json says" in error and "redraw it without --plot-only" in error
    path.write_text(text)
    assert "phases.png" in phases.main(argv)  # the whole table, as its record says, draws


def per_image_file(run: Run, step: int) -> Path:
    [path] = run.directory.glob(f"per_image_errors/linear_exact-*/penultimate/batch/step-{step}.npy")
    return path


@pytest.mark.parametrize("damage", ["edited", "truncated", "record deleted"])
def test_a_damaged_per_image_file_is_named_and_its_cell_measured_again(measured, damage):
    from kphases.store import read_per_image_errors

    run, frame, text = measured
    path = per_image_file(run, 4)
    before = path.read_bytes()
    if damage == "edited":
        np.save(path, np.load(path) * np.float32(1.5))  # one step's errors x1.5: a verdict could flip
    elif damage == "truncated":
        path.write_bytes(before[: len(before) - 40])
    else:
        Path(f"{path}.record.json").unlink()
    expected = {"edited": "holds", "truncated": "holds", "record deleted": "has no record"}[damage]
    with pytest.raises(DamagedFileError, match=rf"{path} {expected}.*python -m kphases measure {run.directory}"):
        read_per_image_errors(run, frame, "penultimate", "linear_exact", "batch")
    lines = []
    again = measure(run, FAST, log=lines.append, **QUIET)
    assert f"{path} {expected}" in lines[0] and "measuring its cell again" in lines[0], lines
    assert path.read_bytes() == before and rows_of(again).equals(rows_of(frame))
    assert len(again) == len(frame)  # the cell's rows replaced, not added
    steps, errors = read_per_image_errors(run, again, "penultimate", "linear_exact", "batch")
    assert steps == [0, 2, 4, 8] and errors.shape[0] == 4


def test_a_deleted_manifest_beside_snapshots_is_named_not_retrained_over(reference, tmp_path):
    run = copy_of(reference, tmp_path)
    snapshots = {path.name: path.read_bytes() for path in run.directory.glob("snapshots/*")}
    run.manifest_path.unlink()
    message = rf"{run.manifest_path} is missing, but 4 snapshot\(s\) are in {run.directory / 'snapshots'}"
    with pytest.raises(StoreError, match=message):
        measure(run.directory, FAST, log=lambda text: None, **QUIET)
    with pytest.raises(StoreError, match=message):
        train(TINY, runs_dir=run.directory.parent, **QUIET)
    assert {path.name: path.read_bytes() for path in run.directory.glob("snapshots/*")} == snapshots
    assert not run.measurements_path.exists()


# --- two measurers, dead writers' leftovers, a complete run's checkpoint --------------------------

WORKTREE = Path(__file__).resolve().parents[1]
MEASURER = """
import sys, time
from pathlib import Path
import kphases.measurement as measurement
from kphases.config import MeasureConfig

calls, barrier, run_dir, me = sys.argv[1:5]
fit = measurement.fit_decoder

def counted(*args, **kwargs):  # each fit is recorded, and slow enough that the two measurers overlap
    with open(calls, "a") as handle:
        handle.write(me + "\\n")
    time.sleep(1.0)
    return fit(*args, **kwargs)

measurement.fit_decoder = counted
Path(barrier, me).touch()
while len(list(Path(barrier).iterdir())) < 2:
    time.sleep(0.02)
config = MeasureConfig(decoders=("linear_exact",), probe=False, transfer=())
measurement.measure(run_dir, config, progress=False, log=lambda text: None)
"""


def python(*args: str, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(WORKTREE), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, *args], cwd=WORKTREE, env=environment, **kwargs)


def test_two_measurers_of_one_run_measure_and_write_each_cell_once(reference, tmp_path):
    run = copy_of(reference, tmp_path)
    calls, barrier = tmp_path / "calls.txt", tmp_path / "barrier"
    barrier.mkdir()
    measurers = [python("-c", MEASURER, str(calls), str(barrier), str(run.directory), name) for name in ("a", "b")]
    assert [process.wait(timeout=600) for process in measurers] == [0, 0]
    stored = run.read_measurements()
    cells = stored[["step", "layer", "bn_stats", "instrument", "protocol"]].drop_duplicates()
    assert len(cells) == 4 and sorted(cells["step"]) == [0, 2, 4, 8]
    assert len(calls.read_text().splitlines()) == 4, calls.read_text()  # each cell fitted once, by one of the two
    assert not stored.duplicated(["step", "layer", "bn_stats", "instrument", "protocol", "metric", "split"]).any()


def test_a_dead_writers_partial_per_image_file_is_removed_on_open(measured, tmp_path):
    run, frame, text = measured
    target = per_image_file(run, 2)
    before = target.read_bytes()
    killed_writer = (
        "import os, sys\nfrom pathlib import Path\nimport numpy as np\nfrom kphases.store import Run\n"
        "write = Path.write_bytes\n"
        "def die(self, data):\n    write(self, data[: len(data) // 2])\n    os._exit(9)\n"
        "Path.write_bytes = die\n"
        "Run.open(sys.argv[1]).write_per_image_errors(2, 'penultimate', 'batch', sys.argv[2], sys.argv[3], np.ones(60))\n"
    )
    instrument, protocol = target.parts[-4].rsplit("-", 1)
    assert python("-c", killed_writer, str(run.directory), instrument, protocol).wait(timeout=300) == 9
    [partial] = [path for path in target.parent.iterdir() if ".tmp-" in path.name]
    assert partial.name.startswith(".step-2.npy.tmp-") and partial.stat().st_size > 0
    older = target.parent / f".step-2.npy.{2**22 + 17}.partial"  # a temp name that records no host: an orphan by its age
    older.write_bytes(b"half an array")
    os.utime(older, (1e9, 1e9))
    Run.open(run.directory)
    assert not partial.exists() and not older.exists()
    assert target.read_bytes() == before
    assert run.per_image_errors_problem(2, "penultimate", "batch", instrument, protocol) is None


def test_a_kill_between_marking_a_run_complete_and_removing_its_checkpoint(tmp_path, monkeypatch, reference):
    original = Run.update_manifest

    def mark_then_die(self, **changes):
        original(self, **changes)
        if changes.get("complete"):
            raise Killed("killed right after the run was marked complete")

    with monkeypatch.context() as patch:
        patch.setattr(Run, "update_manifest", mark_then_die)
        with pytest.raises(Killed):
            train(TINY, runs_dir=tmp_path, **QUIET)
    directory = tmp_path / TINY.hash()
    assert (directory / "checkpoint").is_dir()
    run = Run.open(directory)
    assert run.complete and not run.checkpoint_dir.exists()
    assert_same_run(train(TINY, runs_dir=tmp_path, **QUIET), reference)


# --- op determinism wherever numbers are computed ------------------------------------------------

RESUMER = """
import sys
from kphases.config import MeasureConfig
from kphases.measurement import measure

measure(sys.argv[1], MeasureConfig(decoders=("linear_exact",), probe_epochs=1, transfer=()), progress=False, log=lambda text: None)
"""


def test_a_measurement_resumed_in_another_process_equals_an_uninterrupted_one_bitwise(measured, tmp_path, monkeypatch):
    run, frame, text = measured
    resumed = copy_of(run, tmp_path)
    shutil.rmtree(resumed.directory / "per_image_errors")
    for path in resumed.directory.glob("measurements.csv*"):
        path.unlink()
    original = Run.append_measurements

    def append_then_die(self, rows):
        original(self, rows)
        raise Killed("killed right after the first group's rows were written")

    with monkeypatch.context() as patch:
        patch.setattr(Run, "append_measurements", append_then_die)
        with pytest.raises(Killed):
            measure(resumed, FAST, log=lambda text: None, **QUIET)
    assert 0 < len(resumed.read_measurements()) < len(frame)
    # A process that never trained: op determinism is on only if measuring switches it on.
    assert python("-c", RESUMER, str(resumed.directory)).wait(timeout=600) == 0
    again = resumed.read_measurements()
    assert np.array_equal(rows_of(again)["value"].to_numpy(), rows_of(frame)["value"].to_numpy())
    assert rows_of(again).drop(columns="value").equals(rows_of(frame).drop(columns="value"))


# --- a figure finished before: redrawn only from CSVs its records still accept ---------------------------


def test_a_finished_figure_is_redrawn_only_from_csvs_its_records_accept(tmp_path, capsys):
    from kphases.store import accepted_sha256, record_path
    from reproduce.common import COMPLETION_SUFFIX, run_figure, write_table_file

    computed = []

    def compute(options):
        computed.append(1)
        return pd.DataFrame({"metric": ["a"], "value": [1.0]})

    def plot(table, options):
        return "drawn", "summary"

    options = figure_options(tmp_path)
    csv = tmp_path / "theory.csv"
    run_figure("theory", compute, plot, options, "figure")
    # One checksum per file: the completion record lists what the CSV's own record accepts.
    finished = json.loads((tmp_path / f"theory{COMPLETION_SUFFIX}").read_text())
    assert finished["files"] == {"theory.csv": accepted_sha256(csv)} and accepted_sha256(csv) is not None
    run_figure("theory", compute, plot, options, "figure")
    assert len(computed) == 1
    record_path(csv).unlink()  # an unchecked CSV is not drawn as finished
    run_figure("theory", compute, plot, options, "figure")
    assert len(computed) == 2
    record_path(csv).write_text('{"sha256": ')  # a torn record: not finished, and named when the CSV is written again
    with pytest.raises(SystemExit):
        run_figure("theory", compute, plot, options, "figure")
    assert "theory.csv.record.json is not a record" in capsys.readouterr().err and csv.read_text() == "metric,value\na,1.0\n"
    record_path(csv).unlink()
    run_figure("theory", compute, plot, options, "figure")
    assert len(computed) == 4
    write_table_file(csv, pd.DataFrame({"metric": ["a"], "value": [2.0]}))  # replaced with its record: another table
    run_figure("theory", compute, plot, options, "figure")
    assert len(computed) == 5 and pd.read_csv(csv)["value"].tolist() == [1.0]
