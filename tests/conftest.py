"""Shared test set-up: TensorFlow backend, quiet logs, Fashion-MNIST location."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from keras_tricks.datasets import FASHION_MNIST_DIR  # noqa: E402


@pytest.fixture(scope="session")
def fashion_mnist_dir():
    """Directory of the Debian package's IDX files; `make test` installs it."""
    if not os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; "
            "install the Debian package dataset-fashion-mnist (make test does it as root)."
        )
    return FASHION_MNIST_DIR


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_python():
    """Run a Python script in a fresh process on a given Keras backend; returns its stdout.

    A fresh process is the only way to choose the backend (Keras reads KERAS_BACKEND at import).
    The repository root is put on PYTHONPATH so the package imports without being installed.
    """
    import subprocess
    import sys

    def run(script, backend="jax", timeout=300):
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run
