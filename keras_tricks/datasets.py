"""Small, offline-first dataset loaders: MNIST-family IDX files and Fashion-MNIST.

Pure NumPy (no TensorFlow import), so every backend and `tfrecord_tools` can use it.
"""

import gzip
import os

import numpy as np

__all__ = ["read_idx", "load_fashion_mnist", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES"]

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Read one MNIST-family IDX file (optionally gzip-compressed) into a NumPy array.

    The IDX header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number of dimensions `d`,
    then `d` big-endian uint32 sizes; the data follows in C order, big-endian.
    See http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT").

    Example:

    ```python
    from keras_tricks.datasets import read_idx
    labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    labels.shape  # (10000,)
    ```

    Args:
        path: file name; a name ending in `.gz` is decompressed with gzip.

    Returns:
        An array of the shape in the header, in native byte order (uint8 for image/label files).

    Raises:
        ValueError: the file is not IDX (bad magic number, unknown type) or is truncated
            or has trailing bytes; the message names the file.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises these on a corrupt or truncated stream
        raise ValueError(f"Cannot read IDX file {path!r}: {e}") from e
    if len(raw) < 4:
        raise ValueError(
            f"Not an IDX file: {path!r} has {len(raw)} bytes, fewer than the 4-byte magic number."
        )
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES:
        raise ValueError(
            f"Not an IDX file: {path!r} starts with magic bytes {raw[:4].hex()}; expected "
            f"00 00 <type> <ndim> with type one of "
            f"{', '.join(hex(t) for t in sorted(_IDX_DTYPES))}."
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"Truncated IDX file {path!r}: header declares {ndim} dimensions "
            f"({header_len} header bytes) but the file has {len(raw)} bytes."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "Truncated" if actual < expected else "Trailing bytes in"
        raise ValueError(
            f"{kind} IDX file {path!r}: shape {shape} of {dtype.name} needs {expected} data "
            f"bytes, found {actual}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(data_dir, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(data_dir, name)
        if os.path.exists(candidate):
            return candidate
    return None


def load_fashion_mnist(data_dir=None):
    """Load Fashion-MNIST like `keras.datasets.fashion_mnist.load_data()`, offline when possible.

    Reads the four IDX files (`train-images-idx3-ubyte[.gz]`, ...) from `data_dir`, or from
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
    data_dir = os.fspath(data_dir) if explicit else FASHION_MNIST_DIR
    paths = {key: _find_idx(data_dir, stem) for key, stem in FASHION_MNIST_FILES.items()}
    missing = [FASHION_MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        if explicit:
            raise FileNotFoundError(
                f"Fashion-MNIST files missing from data_dir={data_dir!r}: "
                f"{', '.join(m + '[.gz]' for m in missing)}."
            )
        import keras  # only online users without the Debian package get here

        return keras.datasets.fashion_mnist.load_data()
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split} split in {data_dir!r} is inconsistent: images "
                f"{x.shape}, labels {y.shape}; expected (N, 28, 28) and (N,)."
            )
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
