"""MNIST-family IDX files: the reader and the one file lookup every caller shares.

Pure NumPy (no TensorFlow import), so `tfrecord_tools.sources`, `keras_tricks.datasets` and
worker processes can all use it. The format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE
FORMAT"): two zero bytes, a type byte, a byte giving the number of dimensions `d`, then `d`
big-endian uint32 sizes; the data follows in C order, big-endian.
"""

import gzip
import os

import numpy as np

__all__ = ["read_idx", "find_idx", "IDX_SPLITS"]

# Split name -> file-name prefix of its images/labels pair (`t10k` is the MNIST test set's).
IDX_SPLITS = {"train": "train", "test": "t10k"}

# IDX type byte -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def find_idx(directory: str | os.PathLike, stem: str) -> str | None:
    """The IDX file `stem` (e.g. "train-images-idx3-ubyte") in `directory`, or None.

    One rule for every caller: the uncompressed `stem` when it exists, else `stem.gz`. Both
    exist after `gunzip -k`; the uncompressed file is then the one the user unpacked and it
    reads without decompressing.

    Example:

    ```python
    from tfrecord_tools.idx import find_idx
    find_idx("/usr/share/datasets/fashion-mnist", "t10k-labels-idx1-ubyte")
    # '/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz'
    ```
    """
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(os.fspath(directory), name)
        if os.path.exists(candidate):
            return candidate
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one MNIST-family IDX file (optionally gzip-compressed) into a NumPy array.

    The IDX header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number of dimensions `d`,
    then `d` big-endian uint32 sizes; the data follows in C order, big-endian.
    See http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT").

    Example:

    ```python
    from tfrecord_tools.idx import read_idx
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
