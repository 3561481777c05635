"""Speed measurements, printed as ratios measured side by side in one run (`python -m benchmarks.<name>`).

Imported before any benchmark module, as `reproduce` is before the figures: it sets the Keras backend
and starts TensorFlow without its start-up notices (`kphases.entry`): each benchmark prints the device
it ran on, and `TF_CPP_MIN_LOG_LEVEL=0` shows TensorFlow's notices (why no GPU was found, docs/gpu.md).
"""

from kphases.entry import configure_environment, start_tensorflow

configure_environment()
start_tensorflow()
