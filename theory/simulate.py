"""NumPy simulator of (S)GD on the theory's single-layer network, measured on the doubling schedule.

Serves the property tests of theory/ and the later theory figure. The network is the paper's "F"
net: logits z = W x, W in R^{C x d}, no bias, mean softmax cross-entropy, plain (S)GD with a
constant learning rate from W0 with i.i.d. N(0, init_scale^2 / d) entries (rows of norm about
init_scale). At every step of the doubling schedule 0, 2, 4, ..., 2^k (before that step's update,
like the authors' measurements, `docs/protocol.md`, "The snapshot schedule") it records the population reconstruction loss
R(W_t) of `theory.reconstruction` and the quantities the propositions talk about.

The update is W <- W - eta G, G = (1 / |B|) sum_{i in B} (softmax(W x_i) - e_{y_i}) x_i^T
(proposition 1), in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from theory.data_model import DataModel, Dataset, population_covariance, prototype_span_basis, sample_dataset
from theory.reconstruction import eckart_young_minimum, principal_angles, reconstruction_loss


@dataclass(frozen=True)
class SimulationConfig:
    """Everything besides the data model that fixes a simulated run."""

    learning_rate: float = 0.05
    """eta, constant."""
    last_step: int = 2**16
    """Run until this step (the last measurement is at the largest power of two <= last_step)."""
    num_train: int = 120
    """N, training samples."""
    num_test: int = 2000
    """Fresh samples for the test accuracy."""
    init_scale: float = 0.1
    """Expected row norm of W0 (entries N(0, init_scale^2 / d))."""
    batch_size: int | None = None
    """None: full-batch gradient descent; otherwise SGD on batches drawn by a seeded permutation per epoch."""
    seed: int = 0
    """Seeds the training sample, the test sample, W0 and the batch order (independent streams)."""
    measure_steps: tuple[int, ...] | None = None
    """None: the doubling schedule up to last_step; otherwise exactly these steps (sorted, <= last_step)."""

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.last_step < 0:
            raise ValueError(f"last_step must be >= 0, got {self.last_step!r}")
        if self.init_scale < 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale!r}")
        if self.measure_steps is not None:
            steps = list(self.measure_steps)
            if not steps or steps != sorted(set(steps)) or steps[0] < 0 or steps[-1] > self.last_step:
                raise ValueError(
                    f"measure_steps must be distinct increasing steps in 0..last_step={self.last_step}, got {self.measure_steps!r}"
                )
        if self.batch_size is not None and not 1 <= self.batch_size <= self.num_train:
            raise ValueError(f"batch_size must be None (full batch) or in 1..num_train={self.num_train}, got {self.batch_size!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "SimulationConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Trajectory:
    """One simulated run, measured at `steps` (arrays are indexed like `steps`)."""

    steps: np.ndarray
    """Measurement steps: 0, 2, 4, ..., 2^k (or the config's measure_steps)."""
    reconstruction_loss: np.ndarray
    """R(W_t) with the population covariance (sum over the d input coordinates)."""
    train_accuracy: np.ndarray
    majority_accuracy: np.ndarray
    """Train accuracy on the majority samples."""
    outlier_accuracy: np.ndarray
    """Train accuracy on the outliers (NaN when there are none)."""
    test_accuracy: np.ndarray
    train_loss: np.ndarray
    """Mean cross-entropy on the training sample."""
    outlier_gradient_share: np.ndarray
    """||outliers' part of G||_F / (||majority part||_F + ||outliers' part||_F) (proposition 4)."""
    prototype_angles: np.ndarray
    """(steps, C - 1) principal angles between the row space of W_t and the prototype span P."""
    weights: np.ndarray
    """(steps, C, d) W_t."""
    reconstruction_minimum: float
    """The Eckart-Young minimum of R over rank-C maps: sum of all but the C largest eigenvalues of S."""
    reconstruction_maximum: float
    """tr S, the loss of the zero map."""
    dataset: Dataset
    """The training sample."""
    model: DataModel
    config: SimulationConfig

    def to_dict(self) -> dict:
        """Per-step measurements as plain lists (without weights and data)."""
        return {
            "steps": self.steps.tolist(),
            "reconstruction_loss": self.reconstruction_loss.tolist(),
            "train_accuracy": self.train_accuracy.tolist(),
            "majority_accuracy": self.majority_accuracy.tolist(),
            "outlier_accuracy": self.outlier_accuracy.tolist(),
            "test_accuracy": self.test_accuracy.tolist(),
            "train_loss": self.train_loss.tolist(),
            "outlier_gradient_share": self.outlier_gradient_share.tolist(),
            "reconstruction_minimum": self.reconstruction_minimum,
            "reconstruction_maximum": self.reconstruction_maximum,
            "model": self.model.to_dict(),
            "config": self.config.to_dict(),
        }


def doubling_steps(last_step: int) -> np.ndarray:
    """0, 2, 4, 8, ..., 2^k <= last_step (the authors' schedule; kphases.schedule has the same rule)."""
    steps = [0]
    power = 2
    while power <= last_step:
        steps.append(power)
        power *= 2
    return np.array(steps, dtype=np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def cross_entropy_gradient(weights: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """G = (1/N) sum_i (softmax(W x_i) - e_{y_i}) x_i^T, the gradient of the mean cross-entropy."""
    residual = softmax(inputs @ weights.T)
    residual[np.arange(len(labels)), labels] -= 1.0
    return residual.T @ inputs / len(labels)


def mean_cross_entropy(weights: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> float:
    logits = inputs @ weights.T
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def initial_weights(model: DataModel, init_scale: float, seed: int) -> np.ndarray:
    """W0 with i.i.d. N(0, init_scale^2 / d) entries."""
    rng = np.random.default_rng([seed, 2])
    return init_scale / np.sqrt(model.input_dim) * rng.standard_normal((model.num_classes, model.input_dim))


def _accuracy(weights: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.argmax(inputs @ weights.T, axis=1) == labels))


def _outlier_gradient_share(weights: np.ndarray, dataset: Dataset) -> float:
    residual = softmax(dataset.inputs @ weights.T)
    residual[np.arange(len(dataset.labels)), dataset.labels] -= 1.0
    outlier = dataset.is_outlier
    majority_part = np.linalg.norm(residual[~outlier].T @ dataset.inputs[~outlier])
    outlier_part = np.linalg.norm(residual[outlier].T @ dataset.inputs[outlier]) if outlier.any() else 0.0
    total = majority_part + outlier_part
    return float(outlier_part / total) if total > 0 else 0.0


def _measure(
    weights: np.ndarray, dataset: Dataset, test: Dataset, covariance: np.ndarray, span: np.ndarray, records: dict[str, list]
) -> None:
    """Append one measurement of W_t to `records` (shared by `simulate` and `simulate_many`)."""
    inputs, labels, outlier = dataset.inputs, dataset.labels, dataset.is_outlier
    records["reconstruction_loss"].append(reconstruction_loss(weights, covariance))
    records["train_accuracy"].append(_accuracy(weights, inputs, labels))
    records["majority_accuracy"].append(_accuracy(weights, inputs[~outlier], labels[~outlier]))
    records["outlier_accuracy"].append(_accuracy(weights, inputs[outlier], labels[outlier]))
    records["test_accuracy"].append(_accuracy(weights, test.inputs, test.labels))
    records["train_loss"].append(mean_cross_entropy(weights, inputs, labels))
    records["outlier_gradient_share"].append(_outlier_gradient_share(weights, dataset))
    records["prototype_angles"].append(principal_angles(weights, span))
    records["weights"].append(weights.copy())


_RECORDED = (
    "reconstruction_loss",
    "train_accuracy",
    "majority_accuracy",
    "outlier_accuracy",
    "test_accuracy",
    "train_loss",
    "outlier_gradient_share",
    "prototype_angles",
    "weights",
)


def _measurement_steps(config: SimulationConfig) -> np.ndarray:
    return doubling_steps(config.last_step) if config.measure_steps is None else np.array(config.measure_steps, dtype=np.int64)


def _trajectory(
    steps: np.ndarray, records: dict[str, list], covariance: np.ndarray, dataset: Dataset, model: DataModel, config: SimulationConfig
) -> Trajectory:
    return Trajectory(
        steps=steps,
        **{name: np.array(values) for name, values in records.items()},
        reconstruction_minimum=eckart_young_minimum(covariance, model.num_classes),
        reconstruction_maximum=float(np.trace(covariance)),
        dataset=dataset,
        model=model,
        config=config,
    )


def simulate(model: DataModel, config: SimulationConfig = SimulationConfig(), initial: np.ndarray | None = None) -> Trajectory:
    """Run (S)GD on a sample of the data model and measure it on the doubling schedule.

    `initial` overrides W0 (used to start the Keras net and the simulator from the same weights).
    """
    dataset = sample_dataset(model, config.num_train, seed=config.seed)
    test = sample_dataset(model, config.num_test, seed=(config.seed, 1))  # an independent stream
    covariance = population_covariance(model)
    span = prototype_span_basis(model)
    weights = initial_weights(model, config.init_scale, config.seed) if initial is None else np.array(initial, dtype=np.float64)
    if weights.shape != (model.num_classes, model.input_dim):
        raise ValueError(f"initial weights must have shape ({model.num_classes}, {model.input_dim}), got {weights.shape}")
    steps = _measurement_steps(config)
    rng = np.random.default_rng([config.seed, 3])
    order = np.arange(config.num_train)
    batch_start = config.num_train  # forces a fresh permutation at the first SGD step
    records: dict[str, list] = {name: [] for name in _RECORDED}
    inputs, labels = dataset.inputs, dataset.labels
    step = 0
    for measure_step in steps:
        while step < measure_step:
            if config.batch_size is None:
                gradient = cross_entropy_gradient(weights, inputs, labels)
            else:
                if batch_start + config.batch_size > config.num_train:
                    order = rng.permutation(config.num_train)
                    batch_start = 0
                batch = order[batch_start : batch_start + config.batch_size]
                batch_start += config.batch_size
                gradient = cross_entropy_gradient(weights, inputs[batch], labels[batch])
            weights = weights - config.learning_rate * gradient
            step += 1
        if not np.all(np.isfinite(weights)):
            raise FloatingPointError(
                f"weights became non-finite by step {step} (learning_rate={config.learning_rate}); lower the learning rate"
            )
        _measure(weights, dataset, test, covariance, span, records)
    return _trajectory(steps, records, covariance, dataset, model, config)


def simulate_many(runs: Sequence[tuple[DataModel, SimulationConfig]]) -> list[Trajectory]:
    """`simulate(model, config)` for every (model, config) of `runs`, stepped together as one stack.

    The same runs as one `simulate` call each (equal to round-off: the stacked products and the softmax
    sum in another order; tests/theory/test_theory_regime_map.py compares them), at a fraction of the
    cost for many small runs, where NumPy's per-call overhead dominates a single run. The runs may
    differ in data model parameters, learning rate, initial scale and seed; they must share the
    shapes (C, d, N), the measurement steps and full-batch gradient descent.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("simulate_many needs at least one (model, config) pair, got none")
    first_model, first_config = runs[0]
    shape = (first_model.num_classes, first_model.input_dim, first_config.num_train)
    steps = _measurement_steps(first_config)
    for index, (model, config) in enumerate(runs):
        if config.batch_size is not None:
            raise ValueError(
                f"simulate_many runs full-batch gradient descent only; run {index} has batch_size={config.batch_size} (use simulate)"
            )
        if (model.num_classes, model.input_dim, config.num_train) != shape:
            raise ValueError(
                f"simulate_many runs must share (num_classes, input_dim, num_train) = {shape}; "
                f"run {index} has {(model.num_classes, model.input_dim, config.num_train)}"
            )
        if not np.array_equal(_measurement_steps(config), steps):
            raise ValueError(
                f"simulate_many runs must share the measurement steps; run {index} measures at "
                f"{_measurement_steps(config).tolist()}, run 0 at {steps.tolist()}"
            )
    datasets = [sample_dataset(model, config.num_train, seed=config.seed) for model, config in runs]
    tests = [sample_dataset(model, config.num_test, seed=(config.seed, 1)) for model, config in runs]
    covariances = [population_covariance(model) for model, _ in runs]
    spans = [prototype_span_basis(model) for model, _ in runs]
    # Class-major layout (runs, C, N) for logits and residuals: the softmax then reduces over an
    # outer axis of length C, which NumPy vectorises along N (over the last axis of length C it is
    # several times slower and dominates the step).
    inputs = np.stack([dataset.inputs for dataset in datasets])  # (runs, N, d)
    inputs_transposed = np.ascontiguousarray(inputs.transpose(0, 2, 1))  # (runs, d, N)
    one_hot = np.zeros((len(runs), shape[0], shape[2]))
    for index, dataset in enumerate(datasets):
        one_hot[index, dataset.labels, np.arange(shape[2])] = 1.0
    learning_rates = np.array([config.learning_rate for _, config in runs])[:, None, None]
    weights = np.stack([initial_weights(model, config.init_scale, config.seed) for model, config in runs])  # (runs, C, d)
    records = [{name: [] for name in _RECORDED} for _ in runs]
    step = 0
    for measure_step in steps:
        while step < measure_step:
            logits = weights @ inputs_transposed  # (runs, C, N)
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            residual = logits / logits.sum(axis=1, keepdims=True) - one_hot
            weights = weights - learning_rates * (residual @ inputs / shape[2])
            step += 1
        for index, (model, config) in enumerate(runs):
            if not np.all(np.isfinite(weights[index])):
                raise FloatingPointError(
                    f"weights became non-finite by step {step} (learning_rate={config.learning_rate}); lower the learning rate"
                )
            _measure(weights[index], datasets[index], tests[index], covariances[index], spans[index], records[index])
    return [
        _trajectory(steps, records[index], covariances[index], datasets[index], model, config) for index, (model, config) in enumerate(runs)
    ]
