"""Tests for the keras_tricks package itself: lazy submodules, one version, typing marker."""

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


def test_the_version_is_written_once_and_packaging_reads_it():
    from setuptools.config.setupcfg import read_configuration

    assert keras_tricks.__version__ == _version.__version__
    setup_cfg = read_configuration(str(ROOT / "setup.cfg"))
    assert setup_cfg["metadata"]["version"] == _version.__version__
    assert "attr: keras_tricks._version.__version__" in (ROOT / "setup.cfg").read_text()
    try:
        installed = importlib.metadata.version("keras-tricks")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("keras-tricks is not installed")
    # An installed (editable) copy reports the same version once reinstalled after a bump.
    assert installed == _version.__version__


def test_the_package_declares_inline_types():
    assert (ROOT / "keras_tricks" / "py.typed").is_file()
