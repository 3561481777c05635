"""Test-session setup: the Keras backend (tests are an entry point) and the offline data directory.

Tests that need real datasets ask for the `data_dir` fixture; it skips cleanly when
`KPHASES_DATA_DIR` is unset or does not exist (CI points it at `../shared/data`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest
from hypothesis import settings

# CI: derandomised, bounded, no deadline (TensorFlow's first call traces graphs and is slow).
settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("KPHASES_DATA_DIR")
    if not value:
        pytest.skip("KPHASES_DATA_DIR is not set: no offline dataset directory")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"KPHASES_DATA_DIR={value} is not a directory")
    return path
