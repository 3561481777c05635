"""The figure scripts (`python -m reproduce.all`, `python -m reproduce.<figure>`).

Every entry point imports this package first, before TensorFlow: it chooses the Keras backend and
TensorFlow's C++ log level (`kphases.entry.configure_environment`); the scripts then start
TensorFlow without its start-up notices (`kphases.entry.start_tensorflow`).
"""

from kphases.entry import configure_environment

configure_environment()
