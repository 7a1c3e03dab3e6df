"""Tests for keras_tricks.datasets: the IDX reader and the offline Fashion-MNIST loader."""

import gzip
import struct

import numpy as np
import pytest

from keras_tricks.datasets import load_fashion_mnist, read_idx


def _write_idx(path, array, type_code, compress=False):
    # Independent writer following the IDX spec: 00 00 type ndim, big-endian uint32 dims, data.
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


@pytest.mark.parametrize(
    "dtype, type_code",
    [("u1", 0x08), ("i1", 0x09), ("i2", 0x0B), ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)],
)
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_recovers_written_array_and_dtype(tmp_path, dtype, type_code, compress):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    name = "a.idx.gz" if compress else "a.idx"
    out = read_idx(_write_idx(tmp_path / name, array, type_code, compress))
    assert out.shape == (2, 3, 5)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_magic_naming_the_file(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad.idx.*magic"):
        read_idx(path)


def test_read_idx_rejects_truncated_data_naming_the_file(tmp_path):
    path = _write_idx(tmp_path / "short.idx", np.zeros((4, 3), np.uint8), 0x08)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(
        ValueError, match="Truncated IDX file.*short.idx.*needs 12 data bytes, found 10"
    ):
        read_idx(path)


def test_read_idx_rejects_truncated_header_and_trailing_bytes(tmp_path):
    path = tmp_path / "hdr.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="hdr.idx.*3 dimensions"):
        read_idx(path)
    path = _write_idx(tmp_path / "long.idx", np.zeros((2,), np.uint8), 0x08)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="Trailing bytes.*long.idx"):
        read_idx(path)


def test_read_idx_rejects_corrupt_gzip_naming_the_file(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-12])
    with pytest.raises(ValueError, match="broken.gz"):
        read_idx(path)


def test_load_fashion_mnist_matches_published_sizes_and_class_balance(fashion_mnist_dir):
    # Xiao et al. 2017: 60,000 train / 10,000 test 28x28 grey images, 10 balanced classes.
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(fashion_mnist_dir)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [1000] * 10)
    assert x_train.max() == 255 and x_train.min() == 0


def test_load_fashion_mnist_reads_uncompressed_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(3, dtype=np.uint8),
    }
    for name, array in arrays.items():
        _write_idx(tmp_path / name, array, 0x08)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_load_fashion_mnist_missing_explicit_dir_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path)


def test_load_fashion_mnist_prefers_the_uncompressed_file_when_both_exist(tmp_path):
    # One lookup rule shared with tfrecord_tools' idx: source (tfrecord_tools.idx.find_idx).
    rng = np.random.default_rng(1)
    for stem, shape in (("train", (2, 28, 28)), ("t10k", (1, 28, 28))):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte", images, 0x08)
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", 255 - images, 0x08, compress=True)
        _write_idx(
            tmp_path / f"{stem}-labels-idx1-ubyte.gz", np.zeros(shape[0], np.uint8), 0x08, True
        )
    (x_train, _), (x_test, _) = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(x_train, read_idx(tmp_path / "train-images-idx3-ubyte"))
    np.testing.assert_array_equal(x_test, read_idx(tmp_path / "t10k-images-idx3-ubyte"))
