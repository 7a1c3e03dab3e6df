"""Every ```python block in the docstrings of the listed modules runs, so examples cannot rot.

A docstring shows formulas in plain ``` blocks (read, not run) and examples a user can paste in
```python blocks; this file collects the latter from the module, class, function and method
docstrings of each module in `MODULES` and runs each one in a fresh namespace. Add a module to
`MODULES` to cover it.
"""

import ast
import importlib
import inspect
import os
import re

import keras
import pytest

MODULES = [
    "keras_tricks",
    "keras_tricks._checks",
    "keras_tricks.augment",
    "keras_tricks.augment.color",
    "keras_tricks.augment.erasing",
    "keras_tricks.augment.geometric",
    "keras_tricks.augment.mixing",
    "keras_tricks.data",
    "keras_tricks.losses",
    "keras_tricks.lr_finder",
    "keras_tricks.models",
    "keras_tricks.models.resnet",
    "keras_tricks.models.resnet9",
    "keras_tricks.optimizers",
    "keras_tricks.precision",
    "keras_tricks.runtime",
    "keras_tricks.schedules",
]

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _examples(module_name):
    """(id, code) for each ```python block of the module's docstrings, in source order."""
    path = inspect.getsourcefile(importlib.import_module(module_name))
    with open(path) as f:
        tree = ast.parse(f.read())

    def walk(node, prefix):
        doc = ast.get_docstring(node) if not isinstance(node, ast.AsyncFunctionDef) else None
        for i, match in enumerate(_FENCE.finditer(doc or "")):
            yield f"{module_name}:{prefix or '<module>'}[{i}]", match.group(1)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef)):
                yield from walk(child, f"{prefix}.{child.name}" if prefix else child.name)

    return list(walk(tree, ""))


EXAMPLES = [example for module in MODULES for example in _examples(module)]


def test_the_harness_finds_the_examples():
    ids = [name for name, _ in EXAMPLES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert "keras_tricks.augment.geometric:RandomPadCrop[0]" in ids


@pytest.fixture
def isolated_globals(tmp_path, monkeypatch):
    """Undo what an example may change globally: the Keras dtype policy, environment variables;
    files it writes (a plot, TensorBoard logs) land in a temporary working directory."""
    monkeypatch.chdir(tmp_path)
    policy, environ = keras.config.dtype_policy(), dict(os.environ)
    yield
    keras.config.set_dtype_policy(policy)
    os.environ.clear()
    os.environ.update(environ)


@pytest.mark.parametrize("name, code", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_docstring_example_runs(name, code, isolated_globals):
    exec(compile(code, name, "exec"), {"__name__": "__docstring_example__"})
