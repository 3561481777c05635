"""kphases.early_phase: masked training, rewinding through the run store, pre-training tasks, errors;
kphases.early_phase_verdicts: the seed-level verdicts on synthetic seed results with known answers;
kphases.config.ExperimentConfig: every field names the runs it derives.

One tiny dense run (VGG-8 at width 1/8, 64 embedded digits, 8 iterations with momentum and weight
decay) and one masked lineage run rewound to its iteration 2 are trained once per module; the rest
is hand-built arrays.
"""

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from kphases import early_phase, pruning
from kphases.config import DataConfig, ExperimentConfig, LineageConfig, ModelConfig, RunConfig, ScheduleConfig, TrainingConfig
from kphases.data import Dataset, load_dataset
from kphases.early_phase_verdicts import (
    EQUIVALENCE_MARGIN,
    LEVEL,
    MIN_SEEDS,
    OUTCOMES,
    compare_seeds,
    paired_sign_flip_test,
    paper_verdict,
    premise_holds,
    premise_verdict,
)
from kphases.models import build_model
from kphases.store import Run, StoreError
from kphases.training import Start, train
from reproduce.common import parse_options
from reproduce.early_phase import PAPER_DIRECTION, compare, comparison_rows, experiment, panel_of, perturbation_only, premise_comparison

K = 2  # the rewind point
LAST = 8
BASE = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=64, test_size=32),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration=f"{LAST}it", batch_size=16, learning_rate=0.05, momentum=0.9, weight_decay=1e-4),
    schedule=early_phase.dense_schedule((0, K), LAST),
)
KERNELS = [f"block{i}_conv/kernel" for i in range(1, 6)] + ["logits/kernel"]


def lineage_config(**lineage) -> RunConfig:
    return BASE.replace(schedule=ScheduleConfig(kind="explicit", steps=(K, LAST)), lineage=LineageConfig(**lineage))


def load_weights(run: Run, step: int, classes: int = 10) -> dict[str, np.ndarray]:
    """A snapshot's weights by path, through a freshly built model (independent of early_phase's helpers)."""
    model = build_model(run.config.model, (32, 32, 1), classes)
    run.load_snapshot(model, step)
    return {variable.path: variable.numpy().copy() for variable in model.weights}


def start_by_path(start: Start, classes: int = 10) -> dict[str, np.ndarray]:
    model = build_model(BASE.model, (32, 32, 1), classes)
    assert len(start.weights) == len(model.weights)
    return {variable.path: value for variable, value in zip(model.weights, start.weights)}


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(BASE.data)


@pytest.fixture(scope="module")
def dense(tmp_path_factory, dataset):
    runs_dir = tmp_path_factory.mktemp("runs")
    run = train(BASE, runs_dir=runs_dir, progress=False, dataset=dataset)
    assert run.complete and run.snapshot_steps() == [0, 1, 2, 4, 8]
    return runs_dir, run


@pytest.fixture(scope="module")
def masked(dense, dataset):
    """Round 1 at rewind point K (half the kernels pruned), trained with a callback recording every step."""
    runs_dir, dense_run = dense
    config = lineage_config(rewind_run=dense_run.name, rewind_step=K, mask_run=dense_run.name, prune_fraction=0.5)
    start = early_phase.build_start(config, runs_dir, dataset)
    seen = {}

    def record(run, step, model, optimizer):
        assert len(optimizer.momentums) == len(model.trainable_variables)
        momentum = {variable.path: buffer.numpy().copy() for variable, buffer in zip(model.trainable_variables, optimizer.momentums)}
        seen[step] = ({variable.path: variable.numpy().copy() for variable in model.weights}, momentum)

    run = train(config, runs_dir=runs_dir, progress=False, dataset=dataset, start=start, callbacks=[record])
    return run, start, seen


# --- masks hold under training ----------------------------------------------------------------------


def test_pruned_weights_are_exactly_zero_after_every_update_with_momentum_and_weight_decay(masked):
    run, start, seen = masked
    assert run.complete and sorted(seen) == list(range(K, LAST + 1))  # before update K, ..., after the last one
    assert list(start.masks) == KERNELS
    for step, (weights, _) in seen.items():
        for path, mask in start.masks.items():
            assert np.all(weights[path][mask == 0] == 0.0), f"a pruned weight of {path} moved at step {step}"
    final = load_weights(run, LAST)
    for path, mask in start.masks.items():
        assert np.all(final[path][mask == 0] == 0.0)
    # Not vacuous: the momentum buffer at pruned positions is non-zero, so an update would move them.
    momentum = seen[LAST][1]
    assert sum(np.count_nonzero(momentum[path][mask == 0]) for path, mask in start.masks.items()) > 0


def test_unpruned_weights_do_train(masked):
    _, start, seen = masked
    first, last = seen[K][0], seen[LAST][0]
    for path, mask in start.masks.items():
        alive = mask > 0
        assert 0 < alive.sum() < alive.size
        assert np.mean(first[path][alive] != last[path][alive]) > 0.9, path
    assert not np.array_equal(first["block2_bn/gamma"], last["block2_bn/gamma"])  # BatchNorm trains unmasked


# --- rewinding ----------------------------------------------------------------------------------------


def test_build_start_is_the_iteration_k_snapshot_on_survivors_of_a_global_magnitude_mask(dense, masked):
    _, dense_run = dense
    _, start, _ = masked
    assert start.step == K
    final, at_k = load_weights(dense_run, LAST), load_weights(dense_run, K)
    # The mask prunes half of all kernel weights, the smallest final magnitudes over all layers together.
    total = sum(final[path].size for path in KERNELS)
    assert pruning.remaining(start.masks) == total - round(0.5 * total)
    pruned = np.concatenate([np.abs(final[path])[start.masks[path] == 0] for path in KERNELS])
    kept = np.concatenate([np.abs(final[path])[start.masks[path] > 0] for path in KERNELS])
    assert pruned.max() <= kept.min()
    # Layers differ in how much they lose (the threshold is global, not per layer).
    per_layer = [1 - start.masks[path].mean() for path in KERNELS]
    assert max(per_layer) - min(per_layer) > 0.1
    weights = start_by_path(start)
    assert set(weights) == set(at_k)
    for path, value in weights.items():
        if path in start.masks:
            alive = start.masks[path] > 0
            assert np.array_equal(value[alive], at_k[path][alive]) and np.all(value[~alive] == 0.0), path
        else:  # BatchNorm parameters and statistics, the output bias: iteration-k values
            assert np.array_equal(value, at_k[path]), path


def test_lineage_run_snapshot_at_its_start_step_is_the_masked_rewound_network(dense, masked):
    _, dense_run = dense
    run, start, _ = masked
    assert run.snapshot_steps() == [K, LAST]
    assert run.manifest()["last_iteration"] == LAST
    stored, at_k = load_weights(run, K), load_weights(dense_run, K)
    for path, value in stored.items():
        expected = at_k[path] * start.masks[path] if path in start.masks else at_k[path]
        assert np.array_equal(value, expected), path
    # Retraining continues at step K: the data order and schedule of the dense run, not a restart.
    metrics = run.metrics()
    assert sorted(set(metrics["step"])) == [K, LAST]


def test_a_second_round_prunes_the_fraction_of_what_the_first_round_kept(dense, masked, dataset):
    runs_dir, dense_run = dense
    first, start, _ = masked
    config = lineage_config(rewind_run=dense_run.name, rewind_step=K, mask_run=first.name, prune_fraction=0.5)
    masks = early_phase.lineage_masks(config, runs_dir, dataset)
    alive_before = pruning.remaining(start.masks)
    assert pruning.remaining(masks) == alive_before - round(0.5 * alive_before)
    final = load_weights(first, LAST)
    for path in KERNELS:
        assert not (masks[path] > start.masks[path]).any()
    removed = np.concatenate([np.abs(final[p])[(start.masks[p] > 0) & (masks[p] == 0)] for p in KERNELS])
    kept = np.concatenate([np.abs(final[p])[masks[p] > 0] for p in KERNELS])
    assert removed.max() <= kept.min()
    assert early_phase._sparsity(first, runs_dir, dataset) == pytest.approx(pruning.sparsity(start.masks))


@pytest.mark.parametrize("kind", ["shuffle", "reinit_signs"])
def test_perturbed_start_keeps_its_defining_property_and_the_mask(kind, dense, masked, dataset):
    runs_dir, dense_run = dense
    _, unperturbed, _ = masked
    config = lineage_config(
        rewind_run=dense_run.name, rewind_step=K, mask_run=dense_run.name, prune_fraction=0.5, perturbation=kind, perturbation_seed=3
    )
    start = early_phase.build_start(config, runs_dir, dataset)
    at_k, weights = load_weights(dense_run, K), start_by_path(start)
    assert start.step == K and all(np.array_equal(start.masks[p], unperturbed.masks[p]) for p in KERNELS)
    for path in KERNELS:
        alive = start.masks[path] > 0
        assert np.all(weights[path][~alive] == 0.0)
        if kind == "shuffle":
            assert np.array_equal(np.sort(weights[path][alive]), np.sort(at_k[path][alive]))
        else:
            assert np.array_equal(np.sign(weights[path][alive]), np.sign(at_k[path][alive]))
        assert np.mean(weights[path][alive] != at_k[path][alive]) > 0.5, path
    assert np.array_equal(weights["block1_bn/gamma"], at_k["block1_bn/gamma"])


def test_an_unpruned_output_layer_keeps_its_rewound_weights_and_the_conv_kernels_carry_the_pruning(dense, dataset):
    runs_dir, dense_run = dense
    config = lineage_config(rewind_run=dense_run.name, rewind_step=K, mask_run=dense_run.name, prune_fraction=0.5, prune_output_layer=False)
    start = early_phase.build_start(config, runs_dir, dataset)
    weights, at_k, final = start_by_path(start), load_weights(dense_run, K), load_weights(dense_run, LAST)
    assert sorted(start.masks) == sorted(KERNELS[:-1])  # no mask on logits/kernel
    assert np.array_equal(weights["logits/kernel"], at_k["logits/kernel"])
    convs = KERNELS[:-1]
    assert pruning.remaining(start.masks) == sum(final[p].size for p in convs) - round(0.5 * sum(final[p].size for p in convs))
    # A child that would prune the output layer under a mask that never did is refused by name.
    child = train(config, runs_dir=runs_dir, progress=False, dataset=dataset, start=start)
    mixed = lineage_config(rewind_run=dense_run.name, rewind_step=K, mask_run=child.name, prune_fraction=0.5)
    with pytest.raises(ValueError, match="prune_output_layer=True"):
        early_phase.lineage_masks(mixed, runs_dir, dataset)


def test_paired_sign_flip_test_on_hand_counted_patterns():
    # Differences 1, -2, 3: the 8 sign patterns give sums 6, 4, 2, 0, 0, -2, -4, -6; observed 2.
    test = paired_sign_flip_test([1.0, 0.0, 3.0], [0.0, 2.0, 0.0])
    assert test.seeds == 3 and test.mean_difference == pytest.approx(2 / 3)
    assert (test.smallest_difference, test.largest_difference) == (-2.0, 3.0)
    assert test.p_value == 6 / 8 and test.p_lower == 6 / 8 and test.smallest_p_value == 0.25
    # Every seed lower: the most extreme of 2^n patterns, so p is exactly the resolution 2 / 2^n.
    three = paired_sign_flip_test([0.48, 0.47, 0.49], [0.50, 0.51, 0.52])
    assert three.p_value == 0.25 and three.p_lower == 0.125
    six = paired_sign_flip_test(np.arange(6.0), np.arange(6.0) + [1, 2, 3, 4, 5, 6])
    assert six.p_value == 2 / 64 and six.p_lower == 1 / 64 and six.smallest_p_value == 2 / 64
    assert paired_sign_flip_test([0.5, 0.5], [0.5, 0.5]).p_value == 1.0


def test_paired_test_refuses_unpaired_or_missing_values():
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        paired_sign_flip_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        paired_sign_flip_test([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        paired_sign_flip_test([], [])


def test_the_figure_pairs_by_seed_not_by_row_order():

    treated = pd.Series([0.40, 0.50, 0.60], index=[2, 0, 1])  # seed 0: 0.50, 1: 0.60, 2: 0.40
    control = pd.Series([0.51, 0.61, 0.41, 0.99], index=[0, 1, 2, 3])  # seed 3 has no partner
    test = compare(treated, control)
    assert test.seeds == 3 and test.mean_difference == pytest.approx(-0.01) and test.sign_flip_p == 0.25
    assert test.smallest_difference == pytest.approx(-0.01) and test.largest_difference == pytest.approx(-0.01)


def test_the_frankle_profiles_follow_open_lth():
    for profile, architecture, prune_output in (("smoke", "vgg8", False), ("quick", "vgg8", False), ("paper", "resnet20", True)):
        planned, _ = experiment(parse_options("", ["--profile", profile]))
        assert planned.base.model.architecture == architecture and planned.base.model.initialisation == "open_lth"
        assert planned.prune_output_layer is prune_output
    part = perturbation_only(experiment(parse_options("", ["--profile", "quick"]))[0])
    assert part.rewind_steps == (32,) and part.rounds == 2 and part.tasks == ()
    assert part.perturbations == ("shuffle_signs",)


def test_rotation_pretraining_start_keeps_the_trunk_and_its_own_four_class_head(dense, dataset):
    runs_dir, dense_run = dense
    config = BASE.replace(lineage=LineageConfig(task="rotation", rewind_run=dense_run.name, rewind_step=0))
    start = early_phase.build_start(config, runs_dir, dataset)
    weights, at_0 = start_by_path(start, classes=4), load_weights(dense_run, 0)
    assert start.masks == {} and start.step == 0
    assert weights["logits/kernel"].shape[-1] == 4 and at_0["logits/kernel"].shape[-1] == 10
    for path in KERNELS[:-1]:
        assert np.array_equal(weights[path], at_0[path])


def test_early_statistics_start_at_zero_change_and_grow(dense, dataset):
    _, dense_run = dense
    table = early_phase.early_statistics(dense_run, dataset, KERNELS, examples=32)
    value = table.set_index(["step", "metric"])["value"]
    assert sorted(set(table["step"])) == [0, 1, 2, 4, 8]
    assert value[(0, "distance_from_init")] == 0 and value[(0, "sign_flips_since_init")] == 0
    assert math.isnan(value[(0, "change_per_iteration")]) and value[(1, "change_per_iteration")] > 0
    assert 0 < value[(2, "distance_from_init")] < value[(8, "distance_from_init")]
    assert all(value[(step, "gradient_norm")] > 0 for step in (0, 1, 2, 4, 8))


# --- pre-training tasks -------------------------------------------------------------------------------


def _dataset(images: np.ndarray, labels: np.ndarray, classes: int = 10) -> Dataset:
    return Dataset("hand", "test", images, labels, images[:7].copy(), labels[:7].copy(), classes, "hand0")


def test_rotation_moves_a_corner_pixel_counter_clockwise_by_quarter_turns():
    image = np.zeros((1, 5, 5, 2), np.float32)
    image[0, 0, 0] = [1.0, 2.0]  # top-left corner, both channels
    image[0, 0, 1] = [0.5, 0.5]  # its right neighbour on the top row
    corners = {0: (0, 0), 1: (4, 0), 2: (4, 4), 3: (0, 4)}  # counter-clockwise: top-left -> bottom-left -> ...
    neighbours = {0: (0, 1), 1: (3, 0), 2: (4, 3), 3: (1, 4)}
    for turns in range(4):
        rotated = early_phase.rotate_images(image, np.array([turns]))
        assert rotated.shape == image.shape
        assert rotated[0][corners[turns]].tolist() == [1.0, 2.0]
        assert rotated[0][neighbours[turns]].tolist() == [0.5, 0.5]
        assert np.count_nonzero(rotated[..., 0]) == 2
    with pytest.raises(ValueError, match=r"quarter_turns must be one of 0\.\.3 per image \(1\), got \[4\]"):
        early_phase.rotate_images(image, np.array([4]))
    with pytest.raises(ValueError, match="rotation needs square images, got 4x5"):
        early_phase.rotate_images(np.zeros((1, 4, 5, 1)), np.array([1]))


def test_rotation_task_labels_are_the_turns_applied():
    count = 40
    images = np.zeros((count, 8, 8, 1), np.float32)
    images[:, 0, 0, 0] = 1.0  # every image: one bright pixel in the top-left corner
    task = early_phase.task_dataset(_dataset(images, np.zeros(count, int)), "rotation", seed=4)
    corner = {0: (0, 0), 1: (7, 0), 2: (7, 7), 3: (0, 7)}
    assert task.num_classes == 4 and set(task.y_train.tolist()) == {0, 1, 2, 3}
    for split_images, labels in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        for image, label in zip(split_images, labels):
            assert image[corner[int(label)] + (0,)] == 1.0 and image.sum() == 1.0
    again = early_phase.task_dataset(_dataset(images, np.zeros(count, int)), "rotation", seed=4)
    assert np.array_equal(again.y_train, task.y_train) and task.fingerprint != "hand0"


def test_blur_removes_detail_below_the_factor_and_keeps_block_means():
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)  # 2x2 blocks of 4x4 pixels, 2 channels
    smooth = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    checker = np.where((np.indices((8, 8)).sum(axis=0) % 2) == 0, 1.0, -1.0)[None, :, :, None].astype(np.float32)
    detailed = smooth + 0.5 * checker  # detail at the pixel scale, zero mean in every 4x4 block
    blurred = early_phase.blur_images(detailed)
    assert blurred.shape == detailed.shape and blurred.dtype == np.float32
    np.testing.assert_allclose(blurred, smooth, atol=1e-6)
    np.testing.assert_allclose(early_phase.blur_images(smooth), smooth, rtol=1e-6)  # nothing below the factor: unchanged
    np.testing.assert_allclose(early_phase.blur_images(blurred), blurred, rtol=1e-6)  # idempotent
    noisy = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    means = noisy.reshape(2, 2, 4, 2, 4, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(early_phase.blur_images(noisy)[:, ::4, ::4], means, atol=1e-6)
    with pytest.raises(ValueError, match="blur factor 3 must divide the image size 8x8"):
        early_phase.blur_images(noisy, factor=3)
    task = early_phase.task_dataset(_dataset(detailed, np.arange(3)), "blur", seed=0)
    np.testing.assert_allclose(task.x_train, smooth, atol=1e-6)
    assert np.array_equal(task.y_train, np.arange(3))


def test_random_labels_are_in_range_and_deterministic_per_seed():
    images = np.zeros((500, 4, 4, 1), np.float32)
    labels = np.arange(500) % 10
    base = _dataset(images, labels)
    first, same, other = (early_phase.task_dataset(base, "random_labels", seed) for seed in (1, 1, 2))
    assert np.array_equal(first.y_train, same.y_train) and np.array_equal(first.y_test, same.y_test)
    assert not np.array_equal(first.y_train, other.y_train)
    assert set(first.y_train.tolist()) == set(range(10)) and len(first.y_train) == 500 and len(first.y_test) == 7
    assert first.y_train.min() >= 0 and first.y_train.max() < 10
    assert np.mean(first.y_train == labels) < 0.2  # not the class labels
    assert first.x_train is images and first.fingerprint != other.fingerprint
    assert early_phase.task_dataset(base, "classes", 1) is base


# --- clear errors -------------------------------------------------------------------------------------


def test_unknown_task_or_perturbation_names_the_value():
    base = _dataset(np.zeros((8, 4, 4, 1), np.float32), np.zeros(8, int))
    with pytest.raises(ValueError, match=r"unknown task 'jigsaw'; valid tasks: \['classes', 'random_labels', 'blur', 'rotation'\]"):
        early_phase.task_dataset(base, "jigsaw", 0)
    with pytest.raises(ValueError, match=r"unknown pre-training tasks \['jigsaw'\]"):
        ExperimentConfig(base=BASE, tasks=("blur", "jigsaw"))
    with pytest.raises(ValueError, match=r"unknown perturbations \['flip'\]"):
        ExperimentConfig(base=BASE, perturbations=("shuffle", "flip"))


def test_rewind_steps_beyond_the_last_iteration_are_refused(tmp_path, dataset, dense):
    experiment = ExperimentConfig(
        base=BASE,
        rewind_steps=(0, 20),
        perturbation_rewind_step=20,
        pretrain_steps=20,
        rounds=1,
        perturbation_rounds=(1,),
        data_rounds=(1,),
    )
    with pytest.raises(ValueError, match=r"rewind steps \(0, 20\) must be below the last iteration 8"):
        early_phase.run_experiment(experiment, runs_dir=tmp_path, dataset=dataset, log=lambda _: None)
    assert not any(tmp_path.iterdir())  # refused before anything was trained
    # A lineage rewinding past its parent's snapshots names the step and the steps there are.
    runs_dir, dense_run = dense
    config = lineage_config(rewind_run=dense_run.name, rewind_step=20)
    with pytest.raises(StoreError, match=rf"run {dense_run.name} has no snapshot at step 20; it has steps \[0, 1, 2, 4, 8\]"):
        early_phase.build_start(config, runs_dir, dataset)
    with pytest.raises(ValueError, match="rewind_step 2 needs a rewind_run"):
        early_phase.build_start(lineage_config(rewind_step=K), runs_dir, dataset)


def test_a_parent_that_is_not_trained_is_named(tmp_path, dataset):
    missing = "0123456789ab"
    with pytest.raises(StoreError, match=f"rewind run '{missing}' is not under .*; train it first"):
        early_phase.train_lineage(lineage_config(rewind_run=missing, rewind_step=K), runs_dir=tmp_path, dataset=dataset)
    with pytest.raises(StoreError, match=f"mask run '{missing}' is not under"):
        early_phase.build_start(lineage_config(mask_run=missing), tmp_path, dataset)
    # A parent whose directory exists but whose training never finished.
    unfinished = Run.create(tmp_path, BASE)
    with pytest.raises(StoreError, match=f"run {unfinished.name} is not complete"):
        early_phase.train_lineage(lineage_config(mask_run=unfinished.name), runs_dir=tmp_path, dataset=dataset)


def test_perturbation_without_a_mask_is_refused(dense, dataset):
    runs_dir, dense_run = dense
    config = lineage_config(rewind_run=dense_run.name, rewind_step=K, perturbation="noise")
    with pytest.raises(ValueError, match="perturbation 'noise' acts on a pruned network; give a mask_run"):
        early_phase.build_start(config, runs_dir, dataset)


def test_train_refuses_a_lineage_without_its_start_and_a_start_without_a_lineage(tmp_path, dataset):
    config = lineage_config(rewind_run="0123456789ab", rewind_step=K)
    with pytest.raises(ValueError, match=r"a run with a lineage \(LineageConfig\(.*rewind_run='0123456789ab'.*\) needs its start"):
        train(config, runs_dir=tmp_path, progress=False, dataset=dataset)
    with pytest.raises(ValueError, match="got start=given"):
        train(BASE, runs_dir=tmp_path, progress=False, dataset=dataset, start=Start(weights=[]))
    assert not any(tmp_path.iterdir())


# --- verdicts over seeds: synthetic seed results with known answers ------------------------------

REWIND_0 = np.array([0.50, 0.52, 0.49, 0.51, 0.53, 0.48])  # rewinding to 0, one accuracy per seed
JITTER = np.array([0.002, -0.001, 0.001, -0.002, 0.0, 0.001])  # seed-to-seed noise far below the margin
NOISE = np.array([0.03, -0.02, 0.025, -0.03, 0.02, -0.025])  # seed-to-seed noise well above it
REWIND_K = REWIND_0 + 0.05 + JITTER  # a premise that holds: k beats 0 by 0.05 in every seed


def test_premise_holds_and_a_start_within_the_margin_is_equivalent_and_against_the_paper():
    premise = compare_seeds(REWIND_K, REWIND_0)
    assert premise.outcome == "higher" and premise_holds(premise)
    assert premise_verdict(premise).startswith("the premise holds")
    perturbed = REWIND_K + JITTER[::-1]  # keeps what rewinding to k gives, to +-0.002
    test = compare_seeds(perturbed, REWIND_K)
    assert test.outcome == "equivalent" and test.describe() == f"equivalent: 90% interval inside +-{EQUIVALENCE_MARGIN:.3f}"
    assert -EQUIVALENCE_MARGIN < test.interval_low < 0 < test.interval_high < EQUIVALENCE_MARGIN
    verdict = paper_verdict(premise, test, "lower")
    assert verdict == f"against the paper: equivalent within +-{EQUIVALENCE_MARGIN:.3f}, the paper finds it lower"


def test_premise_holds_and_a_clearly_worse_start_is_as_the_paper():
    premise = compare_seeds(REWIND_K, REWIND_0)
    test = compare_seeds(REWIND_K - 0.05 + JITTER[::-1], REWIND_K)
    assert test.outcome == "lower" and test.interval_high < -EQUIVALENCE_MARGIN
    assert paper_verdict(premise, test, "lower") == "as the paper"
    assert paper_verdict(premise, test, "higher") == "against the paper: lower, the paper finds it higher"
    noisy = compare_seeds(REWIND_K + NOISE, REWIND_K)  # neither a loss nor equivalence is shown
    assert noisy.outcome == "undecided" and paper_verdict(premise, noisy, "lower") == "undecided (the paper: lower)"


@pytest.mark.parametrize("rewind_k", [REWIND_0 + JITTER, REWIND_0 + NOISE, REWIND_0 - 0.05 + JITTER], ids=["equal", "noisy", "worse"])
def test_where_the_premise_fails_no_perturbation_is_read_against_the_paper(rewind_k):
    premise = compare_seeds(rewind_k, REWIND_0)
    assert not premise_holds(premise)
    assert premise_verdict(premise).startswith("the premise does not hold at this scale")
    for perturbed in (rewind_k - 0.05 + JITTER[::-1], rewind_k + JITTER[::-1]):  # clearly worse, and equivalent
        test = compare_seeds(perturbed, rewind_k)
        assert test.outcome in ("lower", "equivalent")  # the scale's own reading is still given
        for paper in ("lower", "higher"):
            assert paper_verdict(premise, test, paper) == "not tested: the premise does not hold at this scale"


def test_too_few_seeds_are_said_so():
    two = compare_seeds(REWIND_K[:2], REWIND_0[:2])
    assert two.seeds == 2 == MIN_SEEDS - 1 and two.outcome == "too few seeds"
    assert two.describe() == f"too few seeds (2; a verdict needs {MIN_SEEDS})"
    assert premise_verdict(two) == f"premise not tested: too few seeds (2; needs {MIN_SEEDS})"
    assert paper_verdict(two, compare_seeds(REWIND_K, REWIND_0), "lower") == "not tested: too few seeds (2) to test the premise"
    premise = compare_seeds(REWIND_K, REWIND_0)
    assert paper_verdict(premise, compare_seeds(REWIND_K[:2] - 0.1, REWIND_K[:2]), "lower") == "not tested: too few seeds (2)"
    one = compare_seeds([0.4], [0.5])
    assert one.outcome == "too few seeds" and math.isnan(one.interval_low) and math.isnan(one.p_equivalent)


def test_a_difference_that_is_not_significant_is_never_called_no_difference():
    texts = []
    for differences in (NOISE, JITTER, JITTER - 0.05, JITTER + 0.05, NOISE[:2]):
        control = REWIND_0[: len(differences)]
        test = compare_seeds(control + differences, control)
        assert test.outcome in OUTCOMES
        premise = compare_seeds(REWIND_K, REWIND_0)
        texts += [test.describe(), paper_verdict(premise, test, "lower"), premise_verdict(test)]
    assert not any("no difference" in text or "costs nothing" in text for text in texts)
    assert compare_seeds(REWIND_0 + NOISE, REWIND_0).describe().startswith("undecided")


def test_t_tests_and_tost_match_the_formulas_and_the_interval():
    differences = np.array([0.004, -0.002, 0.006, 0.001, -0.003, 0.002])
    test = compare_seeds(REWIND_0 + differences, REWIND_0)
    count, mean = len(differences), differences.mean()
    error = differences.std(ddof=1) / math.sqrt(count)
    t = scipy.stats.t(count - 1)
    half = t.ppf(1 - LEVEL) * error
    assert test.interval_low == pytest.approx(mean - half) and test.interval_high == pytest.approx(mean + half)
    assert test.p_lower == pytest.approx(t.cdf(mean / error)) and test.p_higher == pytest.approx(t.sf(mean / error))
    tost = max(t.sf((mean + EQUIVALENCE_MARGIN) / error), t.cdf((mean - EQUIVALENCE_MARGIN) / error))
    assert test.p_equivalent == pytest.approx(tost)
    # TOST at LEVEL and the (1 - 2 LEVEL) interval inside the margin are one decision: move the margin across the interval's edge.
    edge = max(abs(test.interval_low), abs(test.interval_high))
    assert compare_seeds(REWIND_0 + differences, REWIND_0, margin=edge * 1.01).outcome == "equivalent"
    assert compare_seeds(REWIND_0 + differences, REWIND_0, margin=edge * 0.99).outcome != "equivalent"
    # More seeds of the same kind of noise can only make equivalence easier to show.
    assert compare_seeds(np.tile(REWIND_0 + differences, 3), np.tile(REWIND_0, 3)).p_equivalent < test.p_equivalent


def test_identical_differences_have_an_exact_verdict_and_bad_margins_are_refused():
    same = compare_seeds([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.outcome == "equivalent" and (same.p_lower, same.p_higher, same.p_equivalent) == (1.0, 1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns of cancellation on differences equal up to float rounding
        worse = compare_seeds([0.45, 0.55, 0.65], [0.5, 0.6, 0.7])
    assert worse.outcome == "lower" and worse.interval_low == pytest.approx(-0.05) == worse.interval_high
    with pytest.raises(ValueError, match="equivalence margin must be a positive number, got -0.01"):
        compare_seeds([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], margin=-0.01)
    with pytest.raises(ValueError, match="paper direction must be 'lower', 'higher' or '', got 'worse'"):
        paper_verdict(worse, worse, "worse")


COMMITTED = Path(__file__).resolve().parents[1] / "paper_figures" / "early_phase.csv"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "early_phase.md"


def test_what_the_docs_say_in_words_is_what_the_committed_figure_shows():
    """docs/early_phase.md states the rule's constants and the committed figure's readings in words (its numbers are in summary.md)."""
    docs = " ".join(DOCS.read_text().split())
    assert f"`EQUIVALENCE_MARGIN` = {EQUIVALENCE_MARGIN} test accuracy" in docs and f"fewer than `MIN_SEEDS` ({MIN_SEEDS}) seeds" in docs
    table = pd.read_csv(COMMITTED)
    full = table[table["full_experiment"].astype(bool)]
    panel = panel_of(table, full, "perturbation", {}, "(b) perturbed at iteration k")
    premise = premise_comparison(panel)
    assert panel.rewind_step == 64 and not premise_holds(premise)
    assert "at this scale rewinding to k = 64 does not beat rewinding to 0, so the premise does not hold" in docs
    for variant in ("reinit", "shuffle"):  # "Destroying the signs (random reinit, shuffle) still loses accuracy"
        assert compare(panel.treated[variant][1], panel.rewound).outcome == "lower", variant
    assert all(row.endswith("| not tested: the premise does not hold at this scale |") for row in comparison_rows(panel, premise)[1:5])


def test_the_figure_reads_the_perturbations_only_under_its_premise():
    """The figure's table from a synthetic CSV: the premise row first; rows against the paper only where it holds."""

    def table(rewind_k):
        rows = []
        for seed in range(6):
            for experiment_name, variant, value in (
                ("imp", "rewind k=0", REWIND_0[seed]),
                ("imp", "rewind k=64", rewind_k[seed]),
                ("perturbation", "reinit_signs", rewind_k[seed] + JITTER[::-1][seed]),
                ("perturbation", "shuffle", rewind_k[seed] - 0.05 + JITTER[seed]),
            ):
                rows.append(
                    {
                        "experiment": experiment_name,
                        "variant": variant,
                        "rewind_step": 64,
                        "round": 3,
                        "sparsity": 0.875,
                        "value": value,
                        "seed": seed,
                        "full_experiment": True,
                    }
                )
        return pd.DataFrame(rows)

    for rewind_k, holds in ((REWIND_K, True), (REWIND_0 + JITTER, False)):
        data = table(rewind_k)
        panel = panel_of(data, data, "perturbation", {"reinit_signs": "reinit, signs kept", "shuffle": "shuffle in layer"}, "(b) x")
        premise = premise_comparison(panel)
        rows = comparison_rows(panel, premise)
        assert rows[0].startswith("| rewind k=64 - rewind k=0 (the premise) | 6 |") and len(rows) == 3
        assert PAPER_DIRECTION["reinit_signs"] == PAPER_DIRECTION["shuffle"] == "lower"
        if holds:
            assert rows[1].endswith("| against the paper: equivalent within +-0.010, the paper finds it lower |")
            assert rows[2].endswith("| as the paper |")
        else:
            assert all(row.endswith("| not tested: the premise does not hold at this scale |") for row in rows[1:])


# --- every field of an experiment names its runs ---------------------------------------------------

DEFAULT_EXPERIMENT = ExperimentConfig(base=BASE)
EXPERIMENT_LAST = 1000  # the defaults rewind to 500: a dense run longer than that
CHANGED = {  # one valid non-default value per field (base: another seed of the dense run)
    "base": BASE.replace(training=dataclasses.replace(BASE.training, seed=1)),
    "rewind_steps": (0, 250, 500),
    "rounds": 11,
    "prune_fraction": 0.3,
    "perturbations": ("reinit", "shuffle"),
    "perturbation_rewind_step": 0,
    "perturbation_rounds": (6,),
    "tasks": ("blur",),
    "pretrain_steps": 0,
    "data_rounds": (6,),
    "statistics_examples": 256,
    "prune_output_layer": False,
}
NAMES_NO_RUN = {"statistics_examples"}  # picks the batch the statistics are recomputed on from stored snapshots


def derived_runs(experiment) -> list[tuple]:
    return [
        (run.experiment, run.variant, run.rewind_step, run.round, run.config.hash())
        for run in early_phase.experiment_runs(experiment, EXPERIMENT_LAST)
    ]


def test_every_field_of_an_experiment_changes_the_runs_it_derives():
    assert set(CHANGED) == {spec.name for spec in dataclasses.fields(ExperimentConfig)}  # a new field needs its entry here
    before = derived_runs(DEFAULT_EXPERIMENT)
    for name, value in CHANGED.items():
        assert value != getattr(DEFAULT_EXPERIMENT, name), name
        after = derived_runs(dataclasses.replace(DEFAULT_EXPERIMENT, **{name: value}))
        if name in NAMES_NO_RUN:
            assert after == before, name
        else:
            assert after != before, name
    # Another dense run (here: another seed) renames every run derived from it.
    reseeded = derived_runs(dataclasses.replace(DEFAULT_EXPERIMENT, base=CHANGED["base"]))
    assert not {row[-1] for row in reseeded} & {row[-1] for row in before}


def test_every_lineage_field_an_experiment_sets_enters_its_runs_hash():
    seed = 3
    experiment = dataclasses.replace(
        DEFAULT_EXPERIMENT,
        base=BASE.replace(training=dataclasses.replace(BASE.training, seed=seed)),
        prune_fraction=0.5,
        prune_output_layer=False,
    )
    runs = early_phase.experiment_runs(experiment, EXPERIMENT_LAST)
    # Each seed draws its own perturbation.
    assert {run.config.lineage.perturbation_seed for run in runs if run.experiment == "perturbation"} == {seed}
    default, checked = LineageConfig(), set()
    for run in runs:
        lineage = run.config.lineage
        for spec in dataclasses.fields(LineageConfig):
            if getattr(lineage, spec.name) != getattr(default, spec.name):
                reset = run.config.replace(lineage=dataclasses.replace(lineage, **{spec.name: getattr(default, spec.name)}))
                assert reset.hash() != run.config.hash(), f"{spec.name} of {run.variant} round {run.round} does not name its run"
                checked.add(spec.name)
    assert checked == {spec.name for spec in dataclasses.fields(LineageConfig)}  # every lineage field was set somewhere
