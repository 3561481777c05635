"""The single-layer theory of the learning phases (Schneider & Prabhushankar 2024), restated and tested.

The paper proves, for a single-layer network and a "fitting the majority, then a few" data model,
that reconstruction loss goes through three phases. Its theorem statements are not available to
us, so this package states its own propositions (theory/README.md), derives what it can with
sympy (`theory.symbolic`), and property-tests the rest on a NumPy simulator (`theory.simulate`).
The simulator shows three phases only in a regime (`theory.regime_map`: outliers the majority
classifier gets wrong, tau > 1/2, in sufficient number; a learning rate small against the initial
scale; an initial scale small enough for the rise to come within the run), and its rise is driven
by the few without needing them to be fitted (theory/README.md).

Modules, in the order data flows:
- data_model: the data model and its exact population covariance;
- reconstruction: the closed-form reconstruction loss R(W) and the optimal affine decoder;
- simulate: (S)GD on the "F" net, measured on the doubling schedule;
- bounds: the explicit bounds of propositions 2 and 3;
- predictions: the theory's phase levels and boundaries for a simulated run;
- regimes: named parameter settings with and without three phases;
- regime_map: where in (outlier fraction x position) and (learning rate x initial scale) the
  simulator shows three phases, with seed-level verdicts and what it says about the mechanism;
- symbolic: sympy derivations (imported on demand: `from theory import symbolic`);
- keras_check: the same training in the project's Keras "F" net (imports TensorFlow on call).
"""

from theory.bounds import (
    alignment_sine_bound,
    gradient_deviation_bound,
    gradient_norm_bound,
    phase1_certified_steps,
    phase1_reconstruction_change_bound,
    projector_perturbation_bound,
)
from theory.data_model import (
    DataModel,
    Dataset,
    population_covariance,
    population_mean,
    prototype_eigenvalue,
    prototype_span_basis,
    prototypes,
    sample_dataset,
)
from theory.predictions import (
    PhasePrediction,
    gradient_at_zero,
    linearised_weights,
    max_margin_classifier,
    predict_phases,
)
from theory.reconstruction import (
    decoder_squared_error,
    eckart_young_minimum,
    fit_affine_decoder,
    optimal_affine_decoder,
    principal_angles,
    reconstruction_loss,
    reconstruction_loss_closed_form,
    reconstruction_loss_from_angles,
)
from theory.regimes import near_outlier_regime, no_outlier_regime, three_phase_regime
from theory.simulate import SimulationConfig, Trajectory, cross_entropy_gradient, doubling_steps, initial_weights, simulate, simulate_many

__all__ = [
    "DataModel",
    "Dataset",
    "PhasePrediction",
    "SimulationConfig",
    "Trajectory",
    "alignment_sine_bound",
    "cross_entropy_gradient",
    "decoder_squared_error",
    "doubling_steps",
    "eckart_young_minimum",
    "fit_affine_decoder",
    "gradient_at_zero",
    "gradient_deviation_bound",
    "gradient_norm_bound",
    "initial_weights",
    "linearised_weights",
    "max_margin_classifier",
    "near_outlier_regime",
    "no_outlier_regime",
    "optimal_affine_decoder",
    "phase1_certified_steps",
    "phase1_reconstruction_change_bound",
    "population_covariance",
    "population_mean",
    "predict_phases",
    "principal_angles",
    "projector_perturbation_bound",
    "prototype_eigenvalue",
    "prototype_span_basis",
    "prototypes",
    "reconstruction_loss",
    "reconstruction_loss_closed_form",
    "reconstruction_loss_from_angles",
    "sample_dataset",
    "simulate",
    "simulate_many",
    "three_phase_regime",
]
