"""Small, offline-first dataset loaders: MNIST-family IDX files and Fashion-MNIST.

Pure NumPy (no TensorFlow import), so every backend can use it. The IDX reader and its file
lookup live in `tfrecord_tools.idx` (keras_tricks may import tfrecord_tools, never the reverse)
and are re-exported here, so `keras_tricks.datasets.read_idx` keeps working.
"""

import os

from tfrecord_tools.idx import find_idx, read_idx

__all__ = ["read_idx", "load_fashion_mnist", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES"]

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple:
    """Load Fashion-MNIST like `keras.datasets.fashion_mnist.load_data()`, offline when possible.

    Reads the four IDX files (`train-images-idx3-ubyte[.gz]`, ...; the uncompressed file when
    both exist, the rule of `tfrecord_tools.idx.find_idx`) from `data_dir`, or from
    `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`) when `data_dir`
    is None. If `data_dir` is None and the Debian files are absent, falls back to
    `keras.datasets.fashion_mnist.load_data()`, which downloads the data (online users).
    Xiao et al. 2017, https://arxiv.org/abs/1708.07747.

    Example:

    ```python
    from keras_tricks.datasets import load_fashion_mnist
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x_train.shape, x_train.dtype  # ((60000, 28, 28), dtype('uint8'))
    ```

    Args:
        data_dir: directory holding the four IDX files; None means the Debian location,
            then the Keras download.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 arrays of shapes (60000, 28, 28),
        (60000,), (10000, 28, 28), (10000,).

    Raises:
        FileNotFoundError: an explicit `data_dir` lacks one of the files.
        ValueError: a file is not a valid IDX file, or images and labels disagree in count.
    """
    explicit = data_dir is not None
    directory = FASHION_MNIST_DIR if data_dir is None else os.fspath(data_dir)
    paths = {key: find_idx(directory, stem) for key, stem in FASHION_MNIST_FILES.items()}
    found = {key: p for key, p in paths.items() if p is not None}
    missing = [FASHION_MNIST_FILES[k] for k in paths if k not in found]
    if missing:
        if explicit:
            raise FileNotFoundError(
                f"Fashion-MNIST files missing from data_dir={directory!r}: "
                f"{', '.join(m + '[.gz]' for m in missing)}."
            )
        import keras  # only online users without the Debian package get here

        return keras.datasets.fashion_mnist.load_data()
    arrays = {key: read_idx(p) for key, p in found.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split} split in {directory!r} is inconsistent: images "
                f"{x.shape}, labels {y.shape}; expected (N, 28, 28) and (N,)."
            )
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
