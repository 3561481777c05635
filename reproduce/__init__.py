"""The figure scripts (`python -m reproduce.all`, `python -m reproduce.<figure>`).

Every entry point imports this package first, before TensorFlow: it chooses the Keras backend and
TensorFlow's C++ log level (`kphases.entry.configure_environment`) and starts TensorFlow without
its start-up notices (`kphases.entry.start_tensorflow`), here rather than in each script, because
the figure modules import measurement code (and with it TensorFlow) at their top. Where a GPU is
asked for (`--gpus-per-task`) the notices stay.
"""

import sys

from kphases.entry import configure_environment, start_tensorflow

configure_environment()
start_tensorflow(gpu_requested=any(argument.startswith("--gpus-per-task") for argument in sys.argv))
