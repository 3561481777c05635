"""The compiled multi-step loop of kphases.training against its one-call-per-step twin, and augmentation.

`train(steps_per_call=1)` gathers each batch on the host and makes one Python call per step, the
Keras guide's loop. Every comparison here is bitwise: weights of every snapshot and every metric.
"""

import numpy as np
import pytest
import tensorflow as tf

import kphases.placement as placement
from kphases import early_phase
from kphases.augmentation import augment_batch, crop_and_flip, pad_value
from kphases.config import DataConfig, LineageConfig, ModelConfig, RunConfig, ScheduleConfig, TrainingConfig, profile
from kphases.data import load_dataset, preprocess
from kphases.models import build_model
from kphases.store import Run
from kphases.tensorboard import read_scalars
from kphases.training import TrainingError, call_points, make_plan, train

# 200 digits at batch 32: 7 iterations per epoch, the last one of 8 examples; two learning-rate drops.
DECAYED = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=200, test_size=60),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration="30it", batch_size=32, learning_rate=0.05, weight_decay=5e-4, lr_milestones=("10it", "20it")),
)


def all_weights(run: Run) -> dict[tuple[int, int], np.ndarray]:
    model = build_model(run.config.model, (32, 32, 1), 10)
    weights = {}
    for step in run.snapshot_steps():
        run.load_snapshot(model, step)
        weights.update({(step, index): value.copy() for index, value in enumerate(model.get_weights())})
    return weights


def assert_same_runs(first: Run, second: Run) -> None:
    assert first.snapshot_steps() == second.snapshot_steps()
    a, b = all_weights(first), all_weights(second)
    assert a.keys() == b.keys()
    different = [key for key in a if not np.array_equal(a[key], b[key])]
    assert not different, f"weights differ at (step, variable) {different[:5]}"
    assert first.metrics().equals(second.metrics())


@pytest.mark.parametrize("config", [profile("smoke"), DECAYED], ids=["smoke", "weight_decay_milestones"])
def test_compiled_loop_equals_the_per_step_loop_bitwise(tmp_path, config):
    compiled = train(config, runs_dir=tmp_path / "compiled", progress=False, checkpoint_every=5, steps_per_call=4)
    per_step = train(config, runs_dir=tmp_path / "per_step", progress=False, checkpoint_every=5, steps_per_call=1)
    assert_same_runs(compiled, per_step)


def test_streamed_data_equals_data_on_the_device(tmp_path, monkeypatch):
    on_device = train(DECAYED, runs_dir=tmp_path / "device", progress=False)
    monkeypatch.setattr(placement, "DEVICE_DATA_MAX_BYTES", 0)
    streamed = train(DECAYED, runs_dir=tmp_path / "streamed", progress=False)
    assert_same_runs(on_device, streamed)


def test_masked_early_phase_run_equals_the_per_step_loop(tmp_path):
    base = RunConfig(
        data=DataConfig(name="digits", source="embedded", train_size=64, test_size=32),
        model=ModelConfig(architecture="vgg8", width=0.125),
        training=TrainingConfig(duration="12it", batch_size=16, learning_rate=0.05, momentum=0.9, weight_decay=1e-4),
        schedule=early_phase.dense_schedule((0, 2), 12),
    )
    dataset = load_dataset(base.data)
    dense = train(base, runs_dir=tmp_path, progress=False, dataset=dataset)
    config = base.replace(
        schedule=ScheduleConfig(kind="explicit", steps=(2, 12)),
        lineage=LineageConfig(rewind_run=dense.name, rewind_step=2, mask_run=dense.name, prune_fraction=0.5),
    )
    start = early_phase.build_start(config, tmp_path, dataset)
    compiled = train(config, runs_dir=tmp_path / "compiled", progress=False, dataset=dataset, start=start)
    per_step = train(config, runs_dir=tmp_path / "per_step", progress=False, dataset=dataset, start=start, steps_per_call=1)
    assert_same_runs(compiled, per_step)
    final = all_weights(compiled)
    kernel = build_model(config.model, (32, 32, 1), 10).get_weights()
    pruned = sum(int(np.sum(final[(12, index)] == 0)) for index in range(len(kernel)))
    assert pruned > 0  # the mask held through the compiled steps


def test_augmented_compiled_loop_equals_the_per_step_loop(tmp_path):
    config = DECAYED.replace(training=TrainingConfig(duration="12it", batch_size=32, learning_rate=0.05, augment=True))
    compiled = train(config, runs_dir=tmp_path / "compiled", progress=False)
    per_step = train(config, runs_dir=tmp_path / "per_step", progress=False, steps_per_call=1)
    assert_same_runs(compiled, per_step)


def test_nan_loss_names_the_same_step_in_both_loops(tmp_path):
    exploding = DECAYED.replace(training=TrainingConfig(duration="30it", batch_size=32, learning_rate=1e12))
    messages = []
    for steps_per_call in (64, 1):
        with pytest.raises(TrainingError, match=r"loss is (nan|inf) at step \d+") as error:
            train(exploding, runs_dir=tmp_path / str(steps_per_call), progress=False, steps_per_call=steps_per_call)
        messages.append(str(error.value).split(" of run ")[0])
    assert messages[0] == messages[1]


def test_the_first_non_finite_loss_stops_training_naming_its_step_and_nothing_after_is_logged(tmp_path):
    def poison(run, step, model, optimizer):
        bias = model.trainable_variables[-1]  # the head's: every logit NaN (a ReLU could swallow an earlier NaN)
        bias.assign(tf.fill(bias.shape, float("nan")))

    poison.steps = (2,)  # steps 2 and 3 run in one compiled call: both losses are NaN, step 2 is named
    for steps_per_call in (64, 1):
        runs = tmp_path / str(steps_per_call)
        with pytest.raises(TrainingError, match=r"^loss is nan at step 2 of run "):
            train(DECAYED, runs_dir=runs, progress=False, callbacks=[poison], steps_per_call=steps_per_call, tensorboard=True)
        (directory,) = runs.iterdir()
        assert sorted(read_scalars(directory / "tensorboard" / "train")["loss"]) == [0, 1]


def test_call_points_cover_snapshots_checkpoints_milestones_and_epoch_ends():
    plan = make_plan(DECAYED, 200)  # 7 iterations per epoch, 30 in all
    points = call_points(plan, 0, 25, ())
    expected = {0, 2, 4, 8, 16, 30} | {10, 20} | {25} | set(range(0, 31, 7)) | set(range(6, 31, 7))
    assert points == sorted(expected)
    assert call_points(plan, 9, 0, ()) == [p for p in sorted((expected - {25}) | {9}) if p >= 9]  # the start is a point

    def every_step(run, step, model, optimizer):
        pass

    def at_three(run, step, model, optimizer):
        pass

    at_three.steps = (3,)
    assert call_points(plan, 0, 0, (every_step,)) == list(range(31))
    assert 3 in call_points(plan, 0, 0, (at_three,)) and 5 not in call_points(plan, 0, 0, (at_three,))


def test_a_callback_with_steps_is_called_there_only(tmp_path):
    seen = []

    def record(run, step, model, optimizer):
        seen.append((step, int(optimizer.iterations.numpy())))

    record.steps = (3, 11)
    for steps_per_call in (64, 1):
        seen.clear()
        train(DECAYED, runs_dir=tmp_path / str(steps_per_call), progress=False, callbacks=[record], steps_per_call=steps_per_call)
        assert seen == [(3, 3), (11, 11)]  # called before update `step`, after `step` updates


# --- augmentation ---------------------------------------------------------------------------------


def test_crops_at_known_offsets_pad_with_black_and_flips_mirror():
    images = np.arange(2 * 6 * 5 * 2, dtype=np.float32).reshape(2, 6, 5, 2)
    fill = np.array([-7.0, -9.0], np.float32)

    def crop(row, col, flip):
        return crop_and_flip(
            tf.constant(images), tf.constant([row, row]), tf.constant([col, col]), tf.constant([flip, flip]), tf.constant(fill)
        ).numpy()

    assert np.array_equal(crop(4, 4, False), images)  # the centred crop is the image
    assert np.array_equal(crop(4, 4, True), images[:, :, ::-1])
    shifted = crop(6, 1, False)  # window starts 2 rows below and 3 columns left of the image's corner
    assert np.array_equal(shifted[:, :4, 3:], images[:, 2:, :2])
    assert np.array_equal(shifted[:, 4:], np.broadcast_to(fill, shifted[:, 4:].shape))
    assert np.array_equal(shifted[:, :, :3], np.broadcast_to(fill, shifted[:, :, :3].shape))
    mirrored = crop(6, 1, True)  # the same window, mirrored left-right
    assert np.array_equal(mirrored, shifted[:, :, ::-1])
    corner = crop(0, 8, False)
    assert np.array_equal(corner[:, 4:, :1], images[:, :2, 4:])


def test_crop_padding_is_a_black_pixel_after_normalisation():
    fill = pad_value("cifar10", 3)
    assert np.array_equal(fill, preprocess(np.zeros((1, 32, 32, 3), np.float32), "cifar10")[0, 0, 0])
    assert np.allclose(fill, -np.array([0.4914, 0.4822, 0.4465]) / np.array([0.2023, 0.1994, 0.2010]))
    assert np.all(fill < 0)  # black is below every channel's mean


def test_augmentation_is_seeded_by_seed_and_step_and_covers_every_offset():
    images = tf.constant(np.random.default_rng(0).normal(size=(2048, 8, 8, 1)).astype(np.float32))
    fill = tf.constant([0.0])
    a, b = augment_batch(images, 5, 0, fill), augment_batch(images, 5, 0, fill)
    assert np.array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), augment_batch(images, 6, 0, fill).numpy())
    assert not np.array_equal(a.numpy(), augment_batch(images, 5, 1, fill).numpy())
    # Recover each image's offset and flip: all 9x9 offsets and both flips occur.
    found = set()
    source = images.numpy()
    for row in range(9):
        for col in range(9):
            for flip in (False, True):
                candidate = crop_and_flip(images, tf.fill([2048], row), tf.fill([2048], col), tf.fill([2048], flip), fill).numpy()
                matches = np.all(candidate.reshape(2048, -1) == a.numpy().reshape(2048, -1), axis=1)
                if matches.any():
                    found.add((row, col, flip))
    assert len(found) == 162
    assert source.shape == a.shape


def test_mixed_precision_compiled_loop_equals_the_per_step_loop(tmp_path):
    import warnings

    config = DECAYED.replace(training=TrainingConfig(duration="9it", batch_size=32, learning_rate=0.05, precision="mixed_float16"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mixed_float16 on a CPU warns that it is slow
        compiled = train(config, runs_dir=tmp_path / "compiled", progress=False, tensorboard=True)
        per_step = train(config, runs_dir=tmp_path / "per_step", progress=False, steps_per_call=1, tensorboard=True)
    assert_same_runs(compiled, per_step)
