"""kphases.pruning on hand-built weight dictionaries: global magnitude pruning, rewinding, perturbations.

Training with masks and the lineage plumbing (`build_start`) are in tests/test_early_phase.py.
"""

import numpy as np
import pytest

from kphases import pruning
from kphases.config import ModelConfig
from kphases.models import build_model


def _pruned(masks: dict) -> int:
    return sum(int(mask.size - mask.sum()) for mask in masks.values())


# --- which weights are prunable ----------------------------------------------------------------------


def test_prunable_paths_are_the_conv_and_dense_kernels_only():
    model = build_model(ModelConfig(architecture="vgg8", width=0.125), (32, 32, 1), 10)
    paths = pruning.prunable_paths(model)
    assert paths == [f"block{i}_conv/kernel" for i in range(1, 6)] + ["logits/kernel"]
    every = {variable.path for variable in model.weights}
    left_out = every - set(paths)
    # BatchNorm parameters and statistics and the output bias exist in the model and are never prunable.
    assert "logits/bias" in left_out
    assert {f"block3_bn/{name}" for name in ("gamma", "beta", "moving_mean", "moving_variance")} <= left_out
    assert all(path.endswith(("/gamma", "/beta", "/moving_mean", "/moving_variance", "/bias")) for path in left_out)


def test_prunable_paths_include_resnet_shortcuts():
    model = build_model(ModelConfig(architecture="resnet20", width=0.25), (32, 32, 1), 10)
    paths = pruning.prunable_paths(model)
    assert {"stem_conv/kernel", "block4_shortcut_conv/kernel", "block7_shortcut_conv/kernel", "logits/kernel"} <= set(paths)
    assert len(paths) == 1 + 9 * 2 + 2 + 1  # stem, 9 blocks of two convs, two shortcuts, head
    assert not any("_bn/" in path or path.endswith("/bias") for path in paths)


def test_the_output_layer_is_left_out_on_request_and_only_it():
    # open_lth prunes its ResNets' output layer and not its VGGs' (pruning_layers_to_ignore='fc.weight').
    model = build_model(ModelConfig(architecture="vgg8", width=0.125), (32, 32, 1), 10)
    without = pruning.prunable_paths(model, include_output=False)
    assert without == [f"block{i}_conv/kernel" for i in range(1, 6)]
    assert pruning.prunable_paths(model) == without + ["logits/kernel"]
    resnet = build_model(ModelConfig(architecture="resnet20", width=0.25), (32, 32, 1), 10)
    assert set(pruning.prunable_paths(resnet)) - set(pruning.prunable_paths(resnet, include_output=False)) == {"logits/kernel"}


# --- global magnitude pruning ------------------------------------------------------------------------


def test_one_round_prunes_the_globally_smallest_even_if_they_are_all_in_one_layer():
    rng = np.random.default_rng(0)
    small = rng.uniform(0.001, 0.1, size=(5, 4)) * rng.choice([-1.0, 1.0], size=(5, 4))  # 20 small weights
    large = rng.uniform(0.5, 2.0, size=(3, 10)) * rng.choice([-1.0, 1.0], size=(3, 10))  # 30 large, many negative
    weights = {
        "a/kernel": large.astype(np.float32),
        "b/kernel": small.astype(np.float32),
        "b/bias": np.full(4, 1e-6, np.float32),
    }  # a tiny bias: not in the masks, never pruned
    masks = pruning.dense_masks(weights, ["a/kernel", "b/kernel"])
    assert set(masks) == {"a/kernel", "b/kernel"} and pruning.remaining(masks) == 50

    pruned = pruning.prune_globally(weights, masks, 0.2)  # round(0.2 * 50) = 10, all from the small layer
    assert pruning.remaining(pruned) == 40 and set(pruned) == set(masks)
    assert pruned["a/kernel"].all() and int((pruned["b/kernel"] == 0).sum()) == 10
    # Exactly the 10 smallest magnitudes of the small layer are gone.
    threshold = np.sort(np.abs(small).ravel())[9]
    assert np.array_equal(pruned["b/kernel"] == 0, np.abs(small) <= threshold)
    assert pruned["b/kernel"].dtype == np.float32 and pruned["b/kernel"].shape == (5, 4)

    # A larger fraction reaches into the large layer only after the small one is empty.
    pruned = pruning.prune_globally(weights, masks, 0.5)  # 25: all 20 small, then the 5 smallest large
    assert not pruned["b/kernel"].any()
    gone = pruned["a/kernel"] == 0
    assert gone.sum() == 5 and np.abs(large)[gone].max() < np.abs(large)[~gone].min()


def test_successive_rounds_remove_round_of_fraction_times_remaining_over_all_layers():
    rng = np.random.default_rng(1)
    # Distinct magnitudes in layers of different sizes and scales, some weights negative.
    weights = {
        "conv/kernel": rng.normal(0, 0.05, size=(3, 3, 4, 8)),
        "dense/kernel": rng.normal(0, 1.0, size=(64, 10)),
        "out/kernel": rng.normal(0, 0.3, size=(10, 3)),
    }
    masks = pruning.dense_masks(weights, list(weights))
    counts = [pruning.remaining(masks)]
    for fraction in (0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.35, 0.5):
        new = pruning.prune_globally(weights, masks, fraction)
        alive = counts[-1]
        assert pruning.remaining(new) == alive - round(fraction * alive)
        # Once pruned, always pruned (a new mask only removes weights).
        for path in masks:
            assert not (new[path] > masks[path]).any()
        # The weights removed this round are the smallest alive, globally.
        removed = np.concatenate([np.abs(weights[p])[(masks[p] > 0) & (new[p] == 0)] for p in masks])
        kept = np.concatenate([np.abs(weights[p])[new[p] > 0] for p in masks])
        assert removed.max() < kept.min()
        masks = new
        counts.append(pruning.remaining(masks))
    # 288 + 640 + 30 = 958 weights; hand-computed round(0.2 * n) steps, then 0.35 and 0.5.
    assert counts == [958, 766, 613, 490, 392, 314, 251, 163, 81]
    assert pruning.sparsity(masks) == pytest.approx(1 - 81 / 958)


def test_pruning_ignores_the_magnitude_of_already_pruned_weights():
    weights = {"a": np.array([5.0, 4.0, 0.1, 0.2, 0.3, 3.0]), "b": np.array([0.05, 2.0, 1.0, 0.4])}
    masks = {"a": np.array([0, 0, 1, 1, 1, 1], np.float32), "b": np.array([1, 1, 1, 0], np.float32)}  # 7 alive
    new = pruning.prune_globally(weights, masks, 0.3)  # round(2.1) = 2: b[0] = 0.05 and a[2] = 0.1
    assert new["a"].tolist() == [0, 0, 0, 1, 1, 1] and new["b"].tolist() == [0, 1, 1, 0]


def test_ties_are_broken_by_layer_order_then_position_deterministically():
    weights = {"first": np.full((2, 3), 0.5), "second": np.full((4,), -0.5), "third": np.array([0.1, 0.9])}
    masks = pruning.dense_masks(weights, list(weights))  # 12 weights
    new = pruning.prune_globally(weights, masks, 0.5)  # 6: third[0], then five of the ten tied at |0.5|
    assert new["third"].tolist() == [0, 1]
    assert new["first"].ravel().tolist() == [0, 0, 0, 0, 0, 1] and new["second"].tolist() == [1, 1, 1, 1]
    for _ in range(3):
        again = pruning.prune_globally(weights, masks, 0.5)
        assert all(np.array_equal(again[path], new[path]) for path in new)
    # Layer order is the masks' order: listing "second" first makes its weights go first.
    reordered = pruning.prune_globally(weights, {path: masks[path] for path in ("second", "first", "third")}, 0.5)
    assert reordered["second"].tolist() == [0, 0, 0, 0] and reordered["first"].ravel().tolist() == [0, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_prune_fraction_outside_the_open_unit_interval_is_refused(fraction):
    weights = {"a": np.ones(4)}
    with pytest.raises(ValueError, match=rf"prune fraction must be in \(0, 1\), got {fraction}"):
        pruning.prune_globally(weights, pruning.dense_masks(weights, ["a"]), fraction)


# --- rewinding ---------------------------------------------------------------------------------------


def test_rewind_gives_the_rewind_point_values_on_survivors_and_zero_elsewhere():
    rng = np.random.default_rng(2)
    at_k = {
        "c/kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
        "c_bn/gamma": rng.normal(size=4).astype(np.float32),
        "d/kernel": rng.normal(size=(8, 5)).astype(np.float32),
        "d/bias": rng.normal(size=5).astype(np.float32),
    }
    final = {path: value * 10 + 1 for path, value in at_k.items()}
    masks = pruning.prune_globally(final, pruning.dense_masks(final, ["c/kernel", "d/kernel"]), 0.6)
    rewound = pruning.rewind(at_k, masks)
    assert set(rewound) == set(at_k)
    for path in ("c/kernel", "d/kernel"):
        alive = masks[path] > 0
        assert 0 < alive.sum() < alive.size
        assert np.array_equal(rewound[path][alive], at_k[path][alive])  # exactly, bit for bit
        assert np.all(rewound[path][~alive] == 0.0)
        assert rewound[path].dtype == np.float32
    for path in ("c_bn/gamma", "d/bias"):  # not prunable: the rewind-point values as they are
        assert np.array_equal(rewound[path], at_k[path])
    # The inputs are not modified.
    assert np.count_nonzero(at_k["c/kernel"]) == at_k["c/kernel"].size


# --- perturbations -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perturbation_case():
    """Iteration-k weights of a large and a small layer (plus unpruned BatchNorm and bias), a 60%-sparse mask, a fresh draw."""
    rng = np.random.default_rng(3)
    weights = {
        "big/kernel": rng.normal(0.02, 0.1, size=(200, 150)).astype(np.float32),
        "small/kernel": rng.normal(0, 1.0, size=(3, 3, 2, 4)).astype(np.float32),
        "big_bn/gamma": rng.normal(1, 0.1, size=150).astype(np.float32),
        "small/bias": rng.normal(size=4).astype(np.float32),
    }
    paths = ["big/kernel", "small/kernel"]
    masks = {path: (rng.random(weights[path].shape) < 0.4).astype(np.float32) for path in paths}
    fresh = {path: rng.uniform(-0.3, 0.3, size=value.shape).astype(np.float32) for path, value in weights.items()}
    init_std = {"big/kernel": 0.05, "small/kernel": 0.7}
    return weights, masks, fresh, init_std


def _perturbed(kind, case, seed=0, weights=None):
    original, masks, fresh, init_std = case
    out = pruning.perturb(kind, original if weights is None else weights, masks, seed, fresh=fresh, init_std=init_std)
    return out, pruning.rewind(out, masks)


@pytest.mark.parametrize("kind", pruning.PERTURBATIONS)
def test_every_perturbation_leaves_pruned_positions_zero_and_unprunable_weights_alone(kind, perturbation_case):
    weights, masks, _, _ = perturbation_case
    out, rewound = _perturbed(kind, perturbation_case)
    for path, mask in masks.items():
        assert np.all(rewound[path][mask == 0] == 0.0)
        assert np.count_nonzero(rewound[path][mask > 0]) == int(mask.sum())
        assert out[path].shape == weights[path].shape and out[path].dtype == weights[path].dtype
    for path in ("big_bn/gamma", "small/bias"):
        assert np.array_equal(out[path], weights[path])
    changed = any(not np.array_equal(out[path], weights[path]) for path in masks)
    assert changed == (kind != "none")
    # One seed, one result.
    again, _ = _perturbed(kind, perturbation_case)
    assert all(np.array_equal(again[path], out[path]) for path in out)


def test_reinit_signs_keeps_every_surviving_sign_and_takes_fresh_magnitudes(perturbation_case):
    weights, masks, fresh, _ = perturbation_case
    _, rewound = _perturbed("reinit_signs", perturbation_case)
    for path, mask in masks.items():
        alive = mask > 0
        assert np.array_equal(np.sign(rewound[path][alive]), np.sign(weights[path][alive]))
        assert np.array_equal(np.abs(rewound[path][alive]), np.abs(fresh[path][alive]))
    # The fresh draw's signs disagree with the original ones about half the time: the signs really were kept.
    big = masks["big/kernel"] > 0
    assert 0.3 < np.mean(np.sign(fresh["big/kernel"][big]) != np.sign(weights["big/kernel"][big])) < 0.7


def test_shuffle_keeps_each_layers_surviving_values_and_moves_them(perturbation_case):
    weights, masks, _, _ = perturbation_case
    _, rewound = _perturbed("shuffle", perturbation_case)
    for path, mask in masks.items():
        alive = mask > 0
        assert np.array_equal(np.sort(rewound[path][alive]), np.sort(weights[path][alive]))  # same multiset, per layer
    big = masks["big/kernel"] > 0
    assert np.mean(rewound["big/kernel"][big] != weights["big/kernel"][big]) > 0.99
    other, _ = _perturbed("shuffle", perturbation_case, seed=1)
    assert not np.array_equal(other["big/kernel"], rewound["big/kernel"])


def test_shuffle_signs_keeps_signs_in_place_and_each_layers_magnitudes(perturbation_case):
    weights, masks, _, _ = perturbation_case
    _, rewound = _perturbed("shuffle_signs", perturbation_case)
    for path, mask in masks.items():
        alive = mask > 0
        assert np.array_equal(np.sign(rewound[path][alive]), np.sign(weights[path][alive]))
        assert np.array_equal(np.sort(np.abs(rewound[path][alive])), np.sort(np.abs(weights[path][alive])))
    big = masks["big/kernel"] > 0
    assert np.mean(np.abs(rewound["big/kernel"][big]) != np.abs(weights["big/kernel"][big])) > 0.99


def test_noise_has_each_layers_requested_standard_deviation(perturbation_case):
    weights, masks, _, init_std = perturbation_case
    out, _ = _perturbed("noise", perturbation_case)
    noise = (out["big/kernel"] - weights["big/kernel"]).astype(np.float64)  # 30,000 draws
    assert np.std(noise) == pytest.approx(init_std["big/kernel"], rel=0.03)
    assert abs(np.mean(noise)) < 0.002
    small = (out["small/kernel"] - weights["small/kernel"]).astype(np.float64)  # 72 draws at a 14x larger scale
    assert 0.45 < np.std(small) < 1.0
    assert not np.array_equal(_perturbed("noise", perturbation_case, seed=5)[0]["big/kernel"], out["big/kernel"])


def test_reinit_is_the_fresh_draw_whatever_the_original_values(perturbation_case):
    weights, masks, fresh, _ = perturbation_case
    _, rewound = _perturbed("reinit", perturbation_case)
    scrambled = {path: -3 * value + 7 for path, value in weights.items()}
    _, from_other = _perturbed("reinit", perturbation_case, weights=scrambled)
    for path, mask in masks.items():
        assert np.array_equal(rewound[path], fresh[path] * mask)
        assert np.array_equal(from_other[path], rewound[path])


def test_perturbation_errors_name_the_value(perturbation_case):
    weights, masks, fresh, init_std = perturbation_case
    with pytest.raises(ValueError, match=r"unknown perturbation 'flip'; valid perturbations: \['none', 'reinit'"):
        pruning.perturb("flip", weights, masks, 0, fresh=fresh, init_std=init_std)
    with pytest.raises(ValueError, match="'reinit_signs' needs `fresh`"):
        pruning.perturb("reinit_signs", weights, masks, 0, init_std=init_std)
    with pytest.raises(ValueError, match="'noise' needs `init_std`"):
        pruning.perturb("noise", weights, masks, 0, fresh=fresh)
    wrong = {**fresh, "small/kernel": np.zeros((4, 3))}
    with pytest.raises(ValueError, match=r"fresh weights for 'small/kernel' have shape \(4, 3\), expected \(3, 3, 2, 4\)"):
        pruning.perturb("reinit", weights, masks, 0, fresh=wrong)


def test_weights_list_names_a_missing_or_misshapen_path():
    model = build_model(ModelConfig(architecture="linear"), (4, 4, 1), 3)
    weights = pruning.weights_by_path(model)
    assert [w.shape for w in pruning.weights_list(model, weights)] == [w.shape for w in model.get_weights()]
    with pytest.raises(KeyError, match="no weights for 'logits/kernel'"):
        pruning.weights_list(model, {})
    with pytest.raises(ValueError, match=r"weights for 'logits/kernel' have shape \(3, 3\), the model needs \(16, 3\)"):
        pruning.weights_list(model, {"logits/kernel": np.zeros((3, 3))})
