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


@pytest.fixture(scope="session")
def smoke_output(tmp_path_factory):
    """(out, runs) of one serial `python -m reproduce.all --profile smoke` (every figure), shared by the
    figure tests (tests/test_reproduce.py) and the reference the Ray execution is compared with
    (tests/test_ray.py). Tests read it; none may change its CSVs or runs."""
    from reproduce import all as reproduce_all
    from reproduce.common import FIGURES_DIR

    out = tmp_path_factory.mktemp("figures")
    runs = tmp_path_factory.mktemp("runs")
    committed = {path: path.stat().st_mtime_ns for path in FIGURES_DIR.glob("*")} if FIGURES_DIR.is_dir() else {}
    reproduce_all.main(["--profile", "smoke", "--out", str(out), "--runs-dir", str(runs), "--no-progress"])
    after = {path: path.stat().st_mtime_ns for path in FIGURES_DIR.glob("*")} if FIGURES_DIR.is_dir() else {}
    assert committed == after, "the smoke run touched the committed figures"
    return out, runs
