import numpy as np
import pytest

from kphases.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainingConfig
from kphases.measurement import MEASUREMENT_COLUMNS, measure, read_measurements
from kphases.phases import refit_replicates
from kphases.store import sha256_file
from kphases.training import train
from reproduce.verdicts import collect

TINY = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=300, test_size=100),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration="8it", batch_size=32, learning_rate=0.05),
)
FAST = MeasureConfig(decoders=("linear_exact",), decoder_epochs=1, probe_epochs=2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(TINY, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_measure_writes_tidy_rows_with_protocol_columns(tiny_run):
    frame = measure(tiny_run, FAST, progress=False, log=lambda text: None)
    assert tuple(frame.columns) == MEASUREMENT_COLUMNS
    assert sorted(frame["step"].unique()) == [0, 2, 4, 8]
    instruments = set(frame["instrument"])
    # digits is grayscale and embedded: no colour dominance; the dataset switch goes to embedded MNIST.
    assert instruments == {"linear_exact", "probe", "dataset_switch:mnist"}
    rec = frame[(frame["metric"] == "reconstruction_mse") & (frame["split"] == "test")]
    assert len(rec) == 4 and (rec["update_steps"] == 0).all() and (rec["bn_stats"] == "batch").all()
    assert rec["data"].str.contains("digits/embedded train=300 test=100").all()
    # Normalised digits have per-element variance near 1: an affine decoder from 64 features explains part of it.
    assert ((rec["value"] > 0.05) & (rec["value"] < 1.5)).all()
    probe = frame[(frame["metric"] == "probe_accuracy")]
    assert ((probe["value"] >= 0) & (probe["value"] <= 1)).all() and (probe["update_steps"] == 2 * 3).all()  # 2 epochs of ceil(300/128)


def test_finished_cells_are_not_recomputed_and_new_ones_are_added(tiny_run):
    before = read_measurements(tiny_run)
    messages = []
    again = measure(tiny_run, FAST, progress=False, log=messages.append)
    assert "already measured" in messages[0] and len(again) == len(before)
    stored = before.sort_values(list(before.columns)).reset_index(drop=True)
    assert stored.equals(again.sort_values(list(again.columns)).reset_index(drop=True))
    more = measure(
        tiny_run,
        MeasureConfig(layers=("block5",), decoders=("linear_exact",), probe=False, transfer=(), bn_stats=("stored",)),
        progress=False,
        log=lambda text: None,
    )
    assert len(more) == len(before) + 4 * 4  # 4 steps x (test, train, authors' scale, seconds)
    assert set(more[more["layer"] == "block5"]["bn_stats"]) == {"stored"}


def test_measurement_never_changes_snapshots(tiny_run):
    before = {step: sha256_file(tiny_run.snapshot_path(step)) for step in tiny_run.snapshot_steps()}
    measure(
        tiny_run,
        MeasureConfig(decoders=("linear_exact",), probe=False, transfer=(), bn_stats=("recalibrated", "batch"), steps=(2,)),
        progress=False,
        log=lambda text: None,
    )
    assert before == {step: sha256_file(tiny_run.snapshot_path(step)) for step in tiny_run.snapshot_steps()}


def test_bad_requests_name_the_valid_values(tiny_run):
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['block9'\] for vgg8; valid probe points: \['block1'"):
        measure(tiny_run, MeasureConfig(layers=("block9",)), progress=False)
    with pytest.raises(ValueError, match=r"unknown decoder\(s\) \['pca'\]"):
        measure(tiny_run, MeasureConfig(decoders=("pca",)), progress=False)
    with pytest.raises(ValueError, match="color_dominance needs RGB images; digits has shape"):
        measure(tiny_run, MeasureConfig(transfer=("color_dominance",)), progress=False)
    with pytest.raises(ValueError, match=r"no snapshots at steps \[3\]; it has \[0, 2, 4, 8\]"):
        measure(tiny_run, MeasureConfig(steps=(3,)), progress=False)


def test_decoder_cells_store_per_image_errors_that_the_verdict_resamples(tiny_run):
    import numpy as np

    from kphases.phases import PhaseVerdict
    from kphases.store import read_per_image_errors
    from kphases.verdict_tables import reconstruction_verdict, summary_table

    frame = measure(tiny_run, MeasureConfig(decoders=("linear_ridge",), probe=False, transfer=()), progress=False, log=lambda text: None)
    steps, errors = read_per_image_errors(tiny_run, frame, "penultimate", "linear_ridge", "batch")
    assert steps == [0, 2, 4, 8] and errors.shape == (4, 100) and errors.dtype == np.float32
    test_rows = frame[(frame["metric"] == "reconstruction_mse") & (frame["split"] == "test") & (frame["instrument"] == "linear_ridge")]
    assert np.allclose(errors.astype(np.float64).mean(axis=1), test_rows.sort_values("step")["value"].to_numpy(), rtol=1e-5)
    penalty = frame[frame["metric"] == "ridge_relative_penalty"]
    assert len(penalty) == 4 and (penalty["value"] > 0).all() and (penalty["instrument"] == "linear_ridge").all()
    verdict = reconstruction_verdict(tiny_run, frame, "penultimate", "linear_ridge", "batch")
    assert isinstance(verdict, PhaseVerdict) and verdict.images == 100
    assert "one seed: test-image noise only (100 images, paired bootstrap)" in summary_table(tiny_run, frame)
    # Cells without per-image files (measured before they existed) get no verdict, and the line says why.
    for path in (tiny_run.directory / "per_image_errors").rglob("step-4.npy*"):  # the file and its record
        path.unlink()
    assert read_per_image_errors(tiny_run, frame, "penultimate", "linear_ridge", "batch") is None
    assert reconstruction_verdict(tiny_run, frame, "penultimate", "linear_ridge", "batch") is None
    assert "no verdict: the 4 cells of this curve have no per-image errors" in summary_table(tiny_run, frame)


def test_a_curve_too_short_for_a_verdict_says_why(tiny_run):
    from kphases.verdict_tables import summary_table

    frame = measure(
        tiny_run,
        MeasureConfig(layers=("block4",), decoders=("linear_exact",), probe=False, transfer=(), steps=(0, 8)),
        progress=False,
        log=lambda text: None,
    )
    line = next(line for line in summary_table(tiny_run, frame).splitlines() if "[block4, linear_exact" in line)
    assert "not three phases: only 2 measurement(s) (0: " in line and "three phases need at least 3" in line


# --- decoder refits: the decoder's fitting noise kept beside the per-image errors -------------------


def test_decoder_refits_keep_refits_x_images_per_step_and_leave_the_cell_without_them_unchanged(tmp_path):
    # A run of its own: the module's shared run holds the ridge cells of other tests under other protocols.
    tiny_run = train(TINY, runs_dir=tmp_path / "runs", progress=False)
    plain = MeasureConfig(decoders=("linear_ridge",), probe=False, transfer=())
    refitted = MeasureConfig(decoders=("linear_ridge",), probe=False, transfer=(), decoder_refits=3)
    frame = measure(tiny_run, plain, progress=False, log=lambda text: None)
    frame = measure(tiny_run, refitted, progress=False, log=lambda text: None)
    rows = frame[(frame["metric"] == "reconstruction_mse") & (frame["split"] == "test")]
    protocols = list(dict.fromkeys(rows["protocol"]))
    assert len(protocols) == 2  # refits name a cell of their own; the cell without them keeps its name
    without, with_refits = (rows[rows["protocol"] == protocol].set_index("step")["value"] for protocol in protocols)
    assert without.equals(with_refits)  # the main fit is the same bits
    for step in (0, 8):
        main = tiny_run.read_per_image_errors_file(step, "penultimate", "batch", "linear_ridge", protocols[1])
        refits = tiny_run.read_per_image_errors_file(step, "penultimate", "batch", "linear_ridge", protocols[1], refits=True)
        assert refits.shape == (3, 100) and refits.dtype == np.float32 and main.shape == (100,)
        assert len({tuple(row) for row in refits}) == 3  # three different halves, three different fits
        # halves fit on 150 of the 300 images: worse than the main fit on average, never identical to it
        assert refits.mean() > main.mean() and not np.allclose(refits, main[None])
        assert tiny_run.per_image_errors_problem(step, "penultimate", "batch", "linear_ridge", protocols[0], refits=True) is None
        assert not tiny_run.per_image_errors_path(step, "penultimate", "batch", "linear_ridge", protocols[0], refits=True).exists()
    # the figures' reader hands the verdict replicates whose mean is the main curve
    steps, errors, stored_refits = collect(tiny_run, frame, "tiny", [("penultimate", "linear_ridge", "batch")])[
        "tiny|penultimate|linear_ridge|batch"
    ]
    assert stored_refits.shape == (3, 4, 100) and steps == [0, 2, 4, 8]
    assert np.allclose(refit_replicates(errors, stored_refits).mean(axis=0), errors, atol=1e-6)


def test_decoder_refits_are_refused_where_nothing_would_be_refitted(tiny_run):
    with pytest.raises(ValueError, match=r"decoder_refits=2 refits \['linear_ridge'\], which decoders=\['linear_exact'\] lacks"):
        measure(tiny_run, MeasureConfig(decoders=("linear_exact",), probe=False, transfer=(), decoder_refits=2), progress=False)
    with pytest.raises(ValueError, match="measure.decoder_refits"):
        MeasureConfig(decoder_refits=0)
