"""Tests for the keras_tricks package itself: lazy submodules, one version, typing marker."""

import ast
import importlib
import importlib.metadata
import pathlib

import pytest

import keras_tricks
from keras_tricks import _version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_is_cheap_and_submodules_load_on_first_access(run_python):
    script = """
import sys
import keras_tricks
assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "imported eagerly"
assert "keras_tricks.schedules" not in sys.modules
schedules = keras_tricks.schedules           # PEP 562 __getattr__
import keras_tricks.schedules as direct
assert schedules is direct and "schedules" in dir(keras_tricks)
print("OK")
"""
    assert "OK" in run_python(script, backend="tensorflow")


def test_every_public_module_is_reachable_and_unknown_names_raise():
    for name in ["augment", "data", "losses", "lr_finder", "models", "optimizers", "schedules"]:
        assert name in keras_tricks.__all__
        assert getattr(keras_tricks, name).__name__ == f"keras_tricks.{name}"
    assert "_checks" not in keras_tricks.__all__
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        keras_tricks.not_a_module  # noqa: B018


def _pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_the_version_is_written_once_and_packaging_reads_it():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "keras_tricks._version.__version__"
    # setuptools reads the attribute statically: it must be a plain string literal.
    module = ast.parse((ROOT / "keras_tricks" / "_version.py").read_text())
    (literal,) = [
        node.value.value
        for node in module.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__version__"]
    ]
    assert literal == _version.__version__ == keras_tricks.__version__
    assert not (ROOT / "setup.cfg").exists(), "the metadata lives in pyproject.toml only"
    try:
        installed = importlib.metadata.version("keras-tricks")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("keras-tricks is not installed")
    # An installed (editable) copy reports the same version once reinstalled after a bump.
    assert installed == _version.__version__


def test_both_packages_declare_inline_types_and_ship_the_marker():
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]
    for package in ("keras_tricks", "tfrecord_tools"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in package_data[package]  # PEP 561: the marker goes into the wheel


def test_the_console_scripts_point_at_callables():
    for name, target in _pyproject()["project"]["scripts"].items():
        module_name, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module_name), func)), name
