"""The figure scripts (`python -m reproduce.all`, `python -m reproduce.<figure>`).

Every entry point imports this package first, before TensorFlow: choose the Keras backend and
silence TensorFlow's C++ start-up log (e.g. "failed call to cuInit ... UNKNOWN ERROR (303)" on
every CPU-only start; Python errors are unaffected). Set TF_CPP_MIN_LOG_LEVEL=0 to see it again.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
