"""kphases: measure the learning phases of neural networks (Schneider & Prabhushankar, AAAI 2024)
and the early phase of training (Frankle, Schwab & Morcos, ICLR 2020) in TensorFlow/Keras.

Pipeline, one module per stage: config -> data -> models -> training (snapshots in the run store)
-> measurement (features, decoders, probes) -> phases -> figures (`reproduce/`).
Import the stage you need, e.g. `from kphases.training import train`.

Bring your own Keras model (`kphases.callback`, `kphases.api`):

    model.fit(x, y, epochs=5, callbacks=[kphases.SnapshotCallback(run_dir)])
    kphases.measure(run_dir, layers=["my_layer"], train_data=(x, y), test_data=(x_test, y_test))
    kphases.plot_phases(run_dir).savefig("phases.png")

These names load lazily, so `import kphases` stays free of TensorFlow. `kphases.measure` is also
the measurement module (`from kphases.measure import measure`, the run-level function): the module
object is made callable, `kphases.measure(...)` being `kphases.api.measure(...)`.
"""
import importlib
import sys
import types

__version__ = "0.1.0"

_LAZY = {"SnapshotCallback": "kphases.callback", "plot_phases": "kphases.api", "PhaseMonitor": "kphases.monitor",
         "MonitorSettings": "kphases.monitor"}


class _CallableMeasureModule(types.ModuleType):
    """The class given to the `kphases.measure` module: calling it is `kphases.api.measure`."""

    def __call__(self, *args, **kwargs):
        from kphases.api import measure

        return measure(*args, **kwargs)


class _Package(types.ModuleType):
    @property
    def measure(self):
        module = sys.modules.get("kphases.measure") or importlib.import_module("kphases.measure")
        if not isinstance(module, _CallableMeasureModule):
            module.__class__ = _CallableMeasureModule
        return module

    @measure.setter
    def measure(self, module):  # the import system binds the submodule here; the getter reads it from sys.modules
        pass


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kphases' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, "measure"})


sys.modules[__name__].__class__ = _Package
