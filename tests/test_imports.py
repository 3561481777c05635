"""Imports sit at the top of their module, under the rule stated in `kphases/__init__.py`.

An import inside a function is accepted only where it is the point:
- TensorFlow, Keras, tensorflow_datasets, or a first-party module that loads one of them at
  import, imported inside a function of a module that itself loads none of them at import (so
  that module, e.g. the CLI before its flags are read, starts without TensorFlow);
- `ray`, an optional dependency, anywhere;
- the few entries of `EXCEPTIONS`, each with its reason.

What a module "loads at import" is read from the source: the imports at its top (outside
functions), followed through first-party modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("kphases", "reproduce", "theory", "benchmarks", "examples")
TENSORFLOW = {"tensorflow", "keras", "tensorflow_datasets"}
OPTIONAL = {"ray"}

# (importing module, imported module) -> why the import stays inside a function.
EXCEPTIONS = {
    ("kphases.__main__", "kphases.cli"): "the environment (Keras backend, TensorFlow's log level) is set before the CLI's imports run",
    ("kphases.data", "sklearn.datasets"): "start-up: scikit-learn's dataset module (with scipy's) only for the digits source",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, known: set[str]) -> list[str]:
    """The modules an import statement loads (for `from a import b`, also `a.b` where that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.rsplit(".", node.level)[0]
        base = f"{package}.{base}" if base else package
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return submodules if len(submodules) == len(node.names) else [base, *submodules]


def imports_by_place(tree: ast.Module, module: str, known: set[str]) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at the top, [(line, module) imported inside a function]). A call of
    `start_tensorflow` at the top (the `reproduce` package does it) counts as an import of TensorFlow."""
    top, inside = set(), []
    for statement in tree.body:
        if any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "start_tensorflow" for node in ast.walk(statement)):
            top.add("tensorflow")

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _imported(child, module, known):
                    if nested:
                        inside.append((child.lineno, name))
                    else:
                        top.add(name)
            visit(child, nested)

    visit(tree, False)
    return top, inside


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def tensorflow_loaders(top_imports: dict[str, set[str]]) -> set[str]:
    """The modules whose import loads TensorFlow or Keras, through the imports at the top of first-party
    modules (a module's package is imported before it)."""
    loaders: set[str] = set()
    while True:
        found = {
            module
            for module, names in top_imports.items()
            if any(part.split(".")[0] in TENSORFLOW or part in loaders for name in [*names, module] for part in _parents(name))
        }
        if found == loaders:
            return loaders
        loaders = found


def misplaced_imports(sources: dict[str, str]) -> list[str]:
    """Each import inside a function that the rule does not accept, as `module:line imports name`."""
    known = set(sources)
    places = {module: imports_by_place(ast.parse(text), module, known) for module, text in sources.items()}
    loaders = tensorflow_loaders({module: top for module, (top, _) in places.items()})
    problems = []
    for module, (_, inside) in sorted(places.items()):
        module_is_light = module not in loaders
        for line, name in inside:
            heavy = name.split(".")[0] in TENSORFLOW or any(part in loaders for part in _parents(name))
            if name.split(".")[0] in OPTIONAL or (heavy and module_is_light) or (module, name) in EXCEPTIONS:
                continue
            problems.append(f"{module}:{line} imports {name}")
    return problems


def scanned_sources() -> dict[str, str]:
    return {module_name(path): path.read_text(encoding="utf-8") for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))}


def test_every_import_inside_a_function_is_a_stated_exception():
    problems = misplaced_imports(scanned_sources())
    assert not problems, "imports inside functions that belong at the module's top (rule: kphases/__init__.py):\n  " + "\n  ".join(problems)


def test_every_listed_exception_is_still_an_import_inside_a_function():
    sources = scanned_sources()
    known = set(sources)
    inside = {(module, name) for module, text in sources.items() for _, name in imports_by_place(ast.parse(text), module, known)[1]}
    assert set(EXCEPTIONS) <= inside, f"exceptions that no longer occur: {sorted(set(EXCEPTIONS) - inside)}"


# --- the checker itself, on known answers ----------------------------------------------------------

LIGHT = "import numpy\n\ndef f():\n    import {name}\n"


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"pkg.light": LIGHT.format(name="tensorflow")}, []),
        ({"pkg.light": LIGHT.format(name="keras.layers")}, []),
        ({"pkg.light": LIGHT.format(name="ray")}, []),
        ({"pkg.light": LIGHT.format(name="pandas")}, ["pkg.light:4 imports pandas"]),
        ({"pkg.light": LIGHT.format(name="pkg.heavy"), "pkg.heavy": "import tensorflow\n"}, []),
        ({"pkg.light": LIGHT.format(name="pkg.mid"), "pkg.mid": "from pkg import heavy\n", "pkg.heavy": "import keras\n"}, []),
        ({"pkg.light": LIGHT.format(name="pkg.other"), "pkg.other": "import numpy\n"}, ["pkg.light:4 imports pkg.other"]),
        # A module that loads TensorFlow at its top gains nothing by importing it late.
        ({"pkg.heavy": "import tensorflow\n\ndef f():\n    import keras\n"}, ["pkg.heavy:4 imports keras"]),
        (
            {"pkg.a": "def f():\n    class A:\n        def g(self):\n            from pkg import b\n", "pkg.b": ""},
            ["pkg.a:4 imports pkg.b"],
        ),
        ({"pkg.a": "import sys\nif sys:\n    import json\n"}, []),
        # A package that starts TensorFlow at import makes every module in it load TensorFlow.
        ({"pkg": "start_tensorflow()\n", "pkg.a": "def f():\n    import keras\n"}, ["pkg.a:2 imports keras"]),
        ({"pkg": "", "pkg.a": "def f():\n    import keras\n"}, []),
    ],
)
def test_the_checker_on_known_answers(sources, expected):
    assert misplaced_imports(sources) == expected
