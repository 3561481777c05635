"""Entry point of `python -m kphases` and the `kphases` script: sets the Keras backend, then runs the CLI."""

import sys

from kphases.entry import configure_environment


def main() -> int:
    # Entry points, never library modules, choose the backend (it must be set before keras is imported).
    configure_environment()
    from kphases.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
