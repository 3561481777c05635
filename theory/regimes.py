"""Named parameter settings of the theory's simulator: where it shows three phases and where it does not.

Serves tests/theory/test_theory_phases.py, theory/README.md ("Regimes") and the later theory
figure, so that all three use the same numbers. Each function returns (data model, simulation
config). Runtime of one run with the default 2^16 steps: about 4 s on one CPU core.

All share C = 3 classes in d = 64 dimensions, orthogonal prototypes of norm 10 (lambda = 33.3,
noise variance 1: the prototype span P carries the top variance), N = 120 training samples,
full-batch gradient descent with eta = 0.001 from W0 with rows of norm about 0.5, seed 0.

These are points of `theory.regime_map` (theory/README.md, "Regime map"). Three phases are not
generic there: with eta = 0.001 and init_scale = 0.5 they need outliers at another prototype
(tau = 1) with rho >= 0.1 (at tau = 0.75 the rise is about half as large; at tau <= 1/2 it is at
most 1%); with rho = 0.1, tau = 1 they need eta / init_scale below about 0.007 for phase 1 and
init_scale well below 1.5 for a rise within 2^16 steps.
"""

from __future__ import annotations

from theory.data_model import DataModel
from theory.simulate import SimulationConfig

BASE_MODEL = DataModel(num_classes=3, input_dim=64, prototype_norm=10.0, prototype_cosine=0.0, noise_scale=1.0)
BASE_CONFIG = SimulationConfig(learning_rate=0.001, last_step=2**16, num_train=120, init_scale=0.5, seed=0)


def three_phase_regime(seed: int = 0) -> tuple[DataModel, SimulationConfig]:
    """10% of the samples sit at another class's prototype (tau = 1): constant, decrease, increase."""
    return BASE_MODEL.replace(outlier_fraction=0.1, outlier_distance=1.0), BASE_CONFIG.replace(seed=seed)


def no_outlier_regime(seed: int = 0) -> tuple[DataModel, SimulationConfig]:
    """No outliers: constant, then decrease towards the Eckart-Young minimum, no phase 3."""
    return BASE_MODEL.replace(outlier_fraction=0.0), BASE_CONFIG.replace(seed=seed)


def near_outlier_regime(seed: int = 0) -> tuple[DataModel, SimulationConfig]:
    """10% of the samples a quarter of the way to another prototype (tau = 0.25): the majority
    classifier already gets them right (outlier accuracy 1.0 at the minimum), no phase 3."""
    return BASE_MODEL.replace(outlier_fraction=0.1, outlier_distance=0.25), BASE_CONFIG.replace(seed=seed)
