"""Entry point of `python -m kphases` and the `kphases` script: sets the Keras backend, then runs the CLI."""

import os
import sys


def main() -> int:
    # Entry points, never library modules, choose the backend (it must be set before keras is imported).
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TensorFlow's C++ start-up log (e.g. "failed call to cuInit ... UNKNOWN ERROR (303)" on every
    # CPU-only start) is noise; Python errors are unaffected. TF_CPP_MIN_LOG_LEVEL=0 shows it again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kphases.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
