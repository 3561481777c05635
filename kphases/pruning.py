"""Masks, global magnitude pruning, rewinding and the rewind-point perturbations (Frankle et al. 2020).

Everything here is NumPy on weight dictionaries keyed by Keras variable path ("block3_conv/kernel"),
so each operation can be tested on hand-built arrays and the training loop only ever sees a mask
(`kphases.training.Start.masks`), which it multiplies in after every optimiser update.

Following open_lth's `sparse_global` strategy:
- prunable weights are the kernels of every Conv2D and Dense layer (including ResNet shortcuts),
  and the output layer's kernel unless `include_output=False`: open_lth prunes it for its CIFAR
  ResNets and leaves it out for its CIFAR VGGs (`pruning_layers_to_ignore='fc.weight'`);
  BatchNorm parameters and biases are never pruned;
- each round removes `round(fraction * remaining)` of the weights still alive, the smallest in
  magnitude over all prunable layers together (ties broken by layer order, then position, so the
  count is exact and the result deterministic; open_lth prunes every weight at or below the
  magnitude at position ceil(fraction * remaining), one more or a few more at ties);
- rewinding sets the surviving weights to their values at iteration k (and pruned ones to zero).

Perturbations (docs/protocol.md, "Frankle, Schwab & Morcos (ICLR 2020)") act on the rewound (iteration-k)
weights before the mask:
- `reinit`: fresh weights from the initialisation distribution;
- `reinit_signs`: fresh magnitudes, the iteration-k signs;
- `shuffle`: the surviving values permuted among the surviving positions of each layer;
- `shuffle_signs`: the surviving magnitudes permuted, each position keeping its iteration-k sign;
- `noise`: iteration-k weights plus Gaussian noise whose standard deviation is the layer's
  initialisation standard deviation (the "matching scale").
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from kphases.config import PERTURBATIONS

Weights = dict[str, np.ndarray]
Masks = dict[str, np.ndarray]


OUTPUT_LAYER = "logits"  # kphases.models names the output Dense layer so


def prunable_paths(model: keras.Model, include_output: bool = True) -> list[str]:
    """Paths of the kernels global pruning acts on: every Conv2D and Dense kernel, in layer order
    (the output layer's only if `include_output`)."""
    return [
        layer.kernel.path
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and (include_output or layer.name != OUTPUT_LAYER)
    ]


def weights_by_path(model: keras.Model) -> Weights:
    """Every weight of the model (trainable or not) as a NumPy copy, keyed by variable path."""
    return {variable.path: np.array(variable.numpy()) for variable in model.weights}


def weights_list(model: keras.Model, weights: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """`weights` in `model.get_weights()` order; a missing or misshapen path is an error naming it."""
    values = []
    for variable in model.weights:
        if variable.path not in weights:
            raise KeyError(f"no weights for {variable.path!r}; given paths: {sorted(weights)}")
        value = np.asarray(weights[variable.path])
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"weights for {variable.path!r} have shape {value.shape}, the model needs {tuple(variable.shape)}")
        values.append(value)
    return values


def dense_masks(weights: Mapping[str, np.ndarray], paths: list[str]) -> Masks:
    """All-ones masks for `paths` (round 0: nothing pruned yet)."""
    return {path: np.ones_like(weights[path], dtype=np.float32) for path in paths}


def remaining(masks: Mapping[str, np.ndarray]) -> int:
    return int(sum(int(mask.sum()) for mask in masks.values()))


def sparsity(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of prunable weights that are pruned."""
    total = sum(mask.size for mask in masks.values())
    return 1.0 - remaining(masks) / total


def prune_globally(weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], fraction: float) -> Masks:
    """New masks with `round(fraction * remaining)` more weights pruned: the smallest |w| alive, over all layers."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"prune fraction must be in (0, 1), got {fraction}")
    paths = list(masks)
    alive = np.concatenate([masks[path].ravel() > 0 for path in paths])
    magnitudes = np.concatenate([np.abs(np.asarray(weights[path], dtype=np.float64)).ravel() for path in paths])
    count = int(round(fraction * alive.sum()))
    candidates = np.flatnonzero(alive)
    # Stable sort: equal magnitudes go in layer-then-position order, so the count is exact.
    order = candidates[np.argsort(magnitudes[candidates], kind="stable")]
    flat = alive.astype(np.float32)
    flat[order[:count]] = 0.0
    result, offset = {}, 0
    for path in paths:
        size = masks[path].size
        result[path] = flat[offset : offset + size].reshape(masks[path].shape)
        offset += size
    return result


def apply_masks(weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> Weights:
    """A copy of `weights` with every masked path multiplied by its mask (other paths unchanged)."""
    return {
        path: (np.asarray(value) * masks[path]).astype(np.asarray(value).dtype) if path in masks else np.array(value)
        for path, value in weights.items()
    }


def rewind(rewind_weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> Weights:
    """The network to retrain: every weight at its rewind-point value, pruned positions zero."""
    return apply_masks(rewind_weights, masks)


def _signs(values: np.ndarray) -> np.ndarray:
    return np.where(values < 0, -1.0, 1.0).astype(values.dtype)


def perturb(
    kind: str,
    weights: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    seed: int,
    fresh: Mapping[str, np.ndarray] | None = None,
    init_std: Mapping[str, float] | None = None,
) -> Weights:
    """`weights` with the masked (prunable) paths perturbed by `kind`; the caller masks afterwards.

    `fresh` (a new draw from the initialisation) is needed by reinit and reinit_signs, `init_std`
    (each layer's initialisation standard deviation) by noise.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; valid perturbations: {list(PERTURBATIONS)}")
    if kind in ("reinit", "reinit_signs") and fresh is None:
        raise ValueError(f"perturbation {kind!r} needs `fresh` weights drawn from the initialisation")
    if kind == "noise" and init_std is None:
        raise ValueError("perturbation 'noise' needs `init_std`, each layer's initialisation standard deviation")
    rng = np.random.default_rng(seed)
    result = {path: np.array(value) for path, value in weights.items()}
    if kind == "none":
        return result
    for path in masks:  # a fixed order, so one seed gives one result
        value = np.asarray(weights[path])
        if kind == "reinit":
            new = np.array(fresh[path], dtype=value.dtype)
        elif kind == "reinit_signs":
            new = np.abs(np.asarray(fresh[path], dtype=value.dtype)) * _signs(value)
        elif kind == "noise":
            new = value + rng.normal(0.0, init_std[path], size=value.shape).astype(value.dtype)
        else:
            alive = np.flatnonzero(masks[path].ravel() > 0)
            flat = value.ravel().copy()
            permuted = flat[alive][rng.permutation(len(alive))]
            flat[alive] = np.abs(permuted) * _signs(flat[alive]) if kind == "shuffle_signs" else permuted
            new = flat.reshape(value.shape)
        if new.shape != value.shape:
            raise ValueError(f"fresh weights for {path!r} have shape {new.shape}, expected {value.shape}")
        result[path] = new
    return result
