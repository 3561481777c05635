"""Entry point of `python -m kphases` and the `kphases` script: sets the Keras backend, then runs the CLI."""
import os
import sys


def main() -> int:
    # Entry points, never library modules, choose the backend (it must be set before keras is imported).
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kphases.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
