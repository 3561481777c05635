"""Known answers of the mutual-information estimators, their measurement cells and the information-plane figure."""

import dataclasses
import math

import numpy as np
import pytest

from kphases.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainingConfig
from kphases.information import (
    InformationSettings,
    binning_information,
    discretise,
    entropy_bits,
    kde_information,
    pattern_ids,
    relative_kde_information,
)
from kphases.models import build_model


def gaussian_sample(count=600, dimensions=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dimensions)), rng.integers(0, classes, count)


# --- binning -----------------------------------------------------------------------------------


def test_binning_of_an_injective_layer_equals_the_entropy_of_the_binned_input():
    inputs, labels = gaussian_sample()
    # Independent reference: np.digitize against the layer-wide edges, then the entropy of the row patterns.
    edges = np.linspace(inputs.min(), inputs.max(), 30 + 1)
    reference_codes = np.digitize(inputs, edges[1:-1])
    _, counts = np.unique(reference_codes, axis=0, return_counts=True)
    expected = -(counts / counts.sum() * np.log2(counts / counts.sum())).sum()
    # The same affine map on every neuron keeps the layer-wide bins, so the layer is injective on the bins.
    layer = 3.0 * inputs - 1.0
    estimate = binning_information(layer, labels, bins=30)
    assert estimate.mi_x_t == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < math.log2(len(inputs))  # 3 neurons x 30 bins: some images share a pattern


def test_binning_extremes_one_bin_and_distinct_patterns():
    inputs, labels = gaussian_sample(count=512)
    assert binning_information(inputs, labels, bins=1).mi_x_t == 0.0
    assert binning_information(inputs, labels, bins=1).mi_t_y == 0.0
    # Fine bins separate every image: I(X;T) = H(X) = log2 n, and then I(T;Y) = H(Y).
    fine = binning_information(inputs, labels, bins=100_000)
    assert fine.mi_x_t == pytest.approx(9.0) and fine.mi_t_y == pytest.approx(entropy_bits(labels))


def test_binning_of_a_one_hot_label_layer_recovers_the_label_entropy():
    labels = np.repeat([0, 1, 2, 3], [10, 20, 30, 40])
    layer = np.eye(4)[labels]
    estimate = binning_information(layer, labels, bins=30)
    expected = -sum(p * math.log2(p) for p in (0.1, 0.2, 0.3, 0.4))
    assert estimate.mi_x_t == pytest.approx(expected) and estimate.mi_t_y == pytest.approx(expected)


def test_bins_span_the_layer_or_each_neuron():
    values = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])
    assert discretise(values, 2).tolist() == [[0, 0], [0, 1], [0, 1]]  # layer range 0..20, bin width 10
    assert discretise(values, 2, bin_range="neuron").tolist() == [[0, 0], [1, 1], [1, 1]]
    assert discretise(np.full((3, 2), 5.0), 4).tolist() == [[0, 0]] * 3  # a constant layer: one bin


def test_saturating_tanh_loses_binned_information_although_injective():
    # Saxe et al.'s explanation of the compression phase: tanh(a x) is injective for every a, but as a
    # grows the values pile into the outermost bins and the binned I(X;T) falls.
    inputs, labels = gaussian_sample(count=1000, dimensions=4)
    estimates = [binning_information(np.tanh(scale * inputs), labels, bins=30).mi_x_t for scale in (1, 3, 10)]
    assert estimates[0] > estimates[1] > estimates[2] and estimates[0] - estimates[2] > 2.0


# --- KDE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_to_noise", [0.5, 2.0])
def test_kde_bound_on_gaussian_data_matches_its_closed_form(signal_to_noise):
    # h ~ N(0, I_d) and noise N(0, s2 I_d), r = 1 / s2: the pairwise-KL bound's expectation is
    # d/2 ln(1 + r) + d/2 r / (1 + r) nats, above the true I(X;T) = d/2 ln(1 + r) by the second term.
    dimensions, count = 2, 3000
    inputs, labels = gaussian_sample(count=count, dimensions=dimensions, seed=1)
    noise_variance = 1.0 / signal_to_noise
    estimate = kde_information(inputs, labels, noise_variance)
    r = signal_to_noise
    bound = (dimensions / 2 * math.log(1 + r) + dimensions / 2 * r / (1 + r)) / math.log(2)
    exact = dimensions / 2 * math.log2(1 + r)
    assert estimate.mi_x_t == pytest.approx(bound, rel=0.02)
    assert estimate.mi_x_t > exact


def test_kde_separated_clusters_and_identical_points():
    classes, per_class = 5, 40
    labels = np.repeat(np.arange(classes), per_class)
    centres = 100.0 * np.eye(classes)
    clusters = centres[labels] + 1e-3 * np.random.default_rng(0).normal(size=(len(labels), classes))
    estimate = kde_information(clusters, labels, noise_variance=0.1)
    # Each image sees only its own cluster: I(X;T) = log2 5, and the clusters are the classes: I(T;Y) = H(Y).
    assert estimate.mi_x_t == pytest.approx(math.log2(classes), abs=1e-3)
    assert estimate.mi_t_y == pytest.approx(math.log2(classes), abs=1e-3)
    same = kde_information(np.ones((50, 3)), labels[:50], noise_variance=0.1)
    assert same.mi_x_t == pytest.approx(0.0, abs=1e-12) and same.mi_t_y == pytest.approx(0.0, abs=1e-12)


def test_kde_batching_does_not_change_the_answer():
    inputs, labels = gaussian_sample(count=300, dimensions=5)
    whole = kde_information(inputs, labels, 0.5)
    batched = kde_information(inputs, labels, 0.5, rows_per_batch=7)
    assert batched.mi_x_t == pytest.approx(whole.mi_x_t, abs=1e-10) and batched.mi_t_y == pytest.approx(whole.mi_t_y, abs=1e-10)


# --- both --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_information_about_the_label_never_exceeds_its_entropy(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(20, 400))
    labels = rng.integers(0, int(rng.integers(2, 10)), count)
    layer = rng.normal(size=(count, int(rng.integers(1, 6)))) * rng.uniform(0.1, 10) + labels[:, None] * rng.uniform(0, 3)
    h_y = entropy_bits(labels)
    for estimate in (
        binning_information(layer, labels, bins=int(rng.integers(1, 50))),
        kde_information(layer, labels, float(rng.uniform(0.01, 2))),
    ):
        assert estimate.mi_t_y <= h_y + 1e-9
        assert 0 <= estimate.mi_x_t <= math.log2(count) + 1e-9


def test_estimates_are_invariant_to_permuting_neurons():
    inputs, labels = gaussian_sample(count=400, dimensions=6)
    layer = np.tanh(inputs @ np.random.default_rng(2).normal(size=(6, 8)))
    permuted = layer[:, np.random.default_rng(3).permutation(8)]
    for estimator, kwargs in ((binning_information, {"bins": 10}), (kde_information, {"noise_variance": 0.1})):
        original, shuffled = estimator(layer, labels, **kwargs), estimator(permuted, labels, **kwargs)
        assert shuffled.mi_x_t == pytest.approx(original.mi_x_t, abs=1e-9)
        assert shuffled.mi_t_y == pytest.approx(original.mi_t_y, abs=1e-9)
    assert len(np.unique(pattern_ids(discretise(layer, 10)))) == len(np.unique(pattern_ids(discretise(permuted, 10))))


def test_relative_kde_is_the_kde_at_a_noise_tied_to_the_layer_spread_and_ignores_scale():
    inputs, labels = gaussian_sample(count=300, dimensions=5)
    layer = np.maximum(inputs @ np.random.default_rng(4).normal(size=(5, 40)), 0.0)  # a wide ReLU layer
    total_variance = float(layer.var(axis=0).sum())
    relative = relative_kde_information(layer, labels, ratio=0.1)
    absolute = kde_information(layer, labels, noise_variance=0.1 * total_variance)
    assert (relative.mi_x_t, relative.mi_t_y) == pytest.approx((absolute.mi_x_t, absolute.mi_t_y), abs=1e-12)
    assert relative.estimator == "kde_relative:0.1"
    for scale in (1e-3, 7.0, 1e4):  # the fixed-noise bound moves with the scale, the relative one does not
        scaled = relative_kde_information(scale * layer, labels, ratio=0.1)
        assert (scaled.mi_x_t, scaled.mi_t_y) == pytest.approx((relative.mi_x_t, relative.mi_t_y), abs=1e-9)
    assert kde_information(1e4 * layer, labels, 0.1).mi_x_t == pytest.approx(math.log2(300), abs=1e-6)  # saturated
    assert kde_information(1e-3 * layer, labels, 0.1).mi_x_t < 0.01  # drowned in the noise
    assert 0.0 < relative.mi_x_t < math.log2(300) - 0.5  # between the two at the relative resolution


def test_bad_parameters_name_the_value():
    inputs, labels = gaussian_sample(count=10)
    with pytest.raises(ValueError, match=r"bins must be a positive integer .*got 0"):
        binning_information(inputs, labels, bins=0)
    with pytest.raises(ValueError, match=r"bins must be a positive integer .*got 2.5"):
        binning_information(inputs, labels, bins=2.5)
    with pytest.raises(ValueError, match=r"noise_variance must be a positive finite number .*got -0.1"):
        kde_information(inputs, labels, noise_variance=-0.1)
    with pytest.raises(ValueError, match=r"bin_range='column' is not valid; valid values: \['layer', 'neuron'\]"):
        binning_information(inputs, labels, bin_range="column")
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        kde_information(inputs, labels[:5])
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 10 rows"):
        binning_information(np.where(np.arange(10)[:, None] == 3, np.nan, inputs), labels)
    with pytest.raises(ValueError, match="samples must be an integer >= 2, got 1"):
        InformationSettings(samples=1)
    with pytest.raises(ValueError, match=r"relative_noise must be a positive finite number .*got 0"):
        relative_kde_information(inputs, labels, ratio=0)
    with pytest.raises(ValueError, match=r"relative_noise must be a positive finite number .*got nan"):
        InformationSettings(relative_noise=float("nan"))
    with pytest.raises(ValueError, match=r"the layer is constant on this sample \(total variance 0\)"):
        relative_kde_information(np.ones((10, 3)), labels)


# --- models, config, measurement, figure -------------------------------------------------------


def test_tanh_variant_has_the_relu_parameters_and_tanh_outputs():
    relu = build_model(ModelConfig("vgg8", width=0.125), (32, 32, 1), 10)
    tanh = build_model(ModelConfig("vgg8", width=0.125, activation="tanh"), (32, 32, 1), 10)
    assert relu.count_params() == tanh.count_params()
    assert tanh.get_layer("block3").get_config()["activation"] == "tanh"
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; valid activations: \['relu', 'tanh'\]"):
        build_model(ModelConfig("vgg8", activation="gelu"), (32, 32, 1), 10)
    with pytest.raises(ValueError, match="activation 'tanh' is available for the vgg and simple<n> nets only, not 'resnet10'"):
        build_model(ModelConfig("resnet10", activation="tanh"), (32, 32, 1), 10)


def test_the_default_activation_leaves_every_run_hash_unchanged():
    config = RunConfig()
    assert "activation" not in config.to_dict().get("model", {})
    tanh = config.replace(model=ModelConfig(activation="tanh"))
    assert tanh.to_dict()["model"]["activation"] == "tanh" and tanh.hash() != config.hash()
    assert RunConfig.from_json(tanh.to_json()) == tanh and RunConfig.from_json(config.to_json()) == config


TINY = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=200, test_size=100),
    model=ModelConfig(architecture="vgg8", width=0.125, activation="tanh"),
    training=TrainingConfig(duration="4it", batch_size=32, learning_rate=0.05),
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from kphases.training import train

    return train(TINY, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_measure_adds_mutual_information_rows(tiny_run):
    from kphases.measurement import measure

    config = MeasureConfig(
        layers=("logits",),
        decoders=(),
        probe=False,
        transfer=(),
        metrics=("mutual_information",),
        mi_bins=20,
        mi_noise_variance=0.5,
        mi_samples=60,
    )
    frame = measure(tiny_run, config, progress=False, log=lambda text: None)
    rows = frame[frame["metric"].isin(["mi_x_t", "mi_t_y"])]
    assert set(rows["instrument"]) == {"binning:20", "kde:0.5"} and sorted(rows["step"].unique()) == [0, 2, 4]
    assert len(rows) == 3 * 2 * 2 and (rows["update_steps"] == 0).all() and (rows["split"] == "test").all()
    relative = measure(tiny_run, dataclasses.replace(config, mi_relative_noise=0.2), progress=False, log=lambda text: None)
    added = relative[relative["metric"].isin(["mi_x_t", "mi_t_y"]) & (relative["instrument"] == "kde_relative:0.2")]
    assert len(added) == 3 * 2 and len(relative) == len(frame) + len(added) + 3  # only the new cells (and their seconds)
    assert rows["data"].str.contains("mi_samples=60").all()
    assert ((rows["value"] >= 0) & (rows["value"] <= math.log2(60) + 1e-9)).all()
    assert (rows.loc[rows["metric"] == "mi_t_y", "value"] <= math.log2(10) + 1e-9).all()
    again = measure(tiny_run, config, progress=False, log=lambda text: None)
    assert len(again) == len(relative)  # resumable: nothing recomputed (every row of the run is returned)


def test_measure_rejects_unknown_metrics_and_bad_settings(tiny_run):
    from kphases.measurement import measure

    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['entropy'\]; valid metrics: \['mutual_information'\]"):
        measure(tiny_run, MeasureConfig(metrics=("entropy",)), progress=False)
    with pytest.raises(ValueError, match="bins must be a positive integer .*got 0"):
        measure(tiny_run, MeasureConfig(metrics=("mutual_information",), mi_bins=0), progress=False)
    with pytest.raises(ValueError, match="noise_variance must be a positive finite number .*got -1"):
        measure(tiny_run, MeasureConfig(metrics=("mutual_information",), mi_noise_variance=-1.0), progress=False)
