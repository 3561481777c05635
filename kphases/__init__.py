"""kphases: measure the learning phases of neural networks (Schneider & Prabhushankar, AAAI 2024)
and the early phase of training (Frankle, Schwab & Morcos, ICLR 2020) in TensorFlow/Keras.

Pipeline, one module per stage: config -> data -> models -> training (snapshots in the run store)
-> measurement (features, decoders, probes) -> phases -> figures (`reproduce/`).
Import the stage you need, e.g. `from kphases.training import train`.

Bring your own Keras model (`kphases.callback`, `kphases.api`):

    model.fit(x, y, epochs=5, callbacks=[kphases.SnapshotCallback(run_dir)])
    kphases.measure(run_dir, layers=["my_layer"], train_data=(x, y), test_data=(x_test, y_test))
    kphases.plot_phases(run_dir).savefig("phases.png")

These names load lazily (PEP 562), so `import kphases` stays free of TensorFlow. `kphases.measure`
is the function `kphases.api.measure`; the run-level measurement module is `kphases.measurement`
(a submodule named `measure` would be bound over the function by every import of it).

Imports (this package, `reproduce/`, `theory/`, `benchmarks/`, `examples/`): every module imports
what it uses at its top, so its header says what it depends on, and imports only modules below it
(config, data, models, training, store, measurement, phases, figures). An import inside a function
is kept only where it is the point, and `tests/test_imports.py` fails on any other:
- TensorFlow, Keras or tensorflow_datasets, or a module that loads one of them at import, inside a
  module that loads none of them at import, so that module starts without TensorFlow (this
  package's names above; the CLI, whose `--help` and flag errors answer before TensorFlow loads;
  `kphases.store` and `kphases.export`, which the CLI imports). The `reproduce` package starts
  TensorFlow when it is imported, so its modules import everything at their top;
- `ray`, an optional dependency, where a task graph is executed;
- the few listed in `tests/test_imports.py` (`EXCEPTIONS`), each with its reason.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "SnapshotCallback": "kphases.callback",
    "measure": "kphases.api",
    "plot_phases": "kphases.api",
    "PhaseMonitor": "kphases.monitor",
    "MonitorSettings": "kphases.monitor",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kphases' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
