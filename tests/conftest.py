"""Shared test set-up: TensorFlow backend, quiet logs, Fashion-MNIST location."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def fashion_mnist_dir():
    """Directory of the Debian package's IDX files; `make test` installs it."""
    if not os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; "
            "install the Debian package dataset-fashion-mnist (make test does it as root)."
        )
    return FASHION_MNIST_DIR
