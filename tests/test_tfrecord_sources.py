"""tfrecord_tools.sources: every `scheme:PATH` reader on small files written by the test.

Oracles: the arrays the test itself wrote in each documented format (CIFAR python batches:
dict with b"data" N x 3072 uint8 = red, green, blue planes of 32x32 row-major; IDX: the header
layout from LeCun's page, written with struct; image folders: files written by Pillow, PNG
lossless so pixels must match exactly).
"""

import os
import pickle
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from tfrecord_tools.sources import (
    CIFAR10_LABELS,
    CorruptImageError,
    FileSplit,
    iter_payload,
    open_source,
)


def _records(split):
    return list(iter_payload(split.payload(np.arange(split.num_records))))


def _write_cifar10(root, rng, per_batch=4):
    root.mkdir()
    expected = {}
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        # The documented layout: each row = 1024 red, 1024 green, 1024 blue values.
        rows = np.stack([np.concatenate([im[:, :, c].ravel() for c in range(3)]) for im in images])
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": labels, b"batch_label": name.encode()}, f)
        expected[name] = (images, labels)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10_LABELS]}, f)
    return expected


def test_cifar10_batches_give_hwc_images_labels_and_names(tmp_path):
    expected = _write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    src = open_source(f"cifar:{tmp_path}")  # the parent folder is accepted too
    assert src.label_names == CIFAR10_LABELS
    train = src.splits["train"]
    np.testing.assert_array_equal(
        train.images, np.concatenate([expected["data_batch_1"][0], expected["data_batch_2"][0]])
    )
    assert train.labels.tolist() == expected["data_batch_1"][1] + expected["data_batch_2"][1]
    np.testing.assert_array_equal(src.splits["test"].images, expected["test_batch"][0])


def test_cifar100_uses_fine_labels_by_default_and_coarse_on_request(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(3, 3072)
    for name in ("train", "test"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump(
                {b"data": rows, b"fine_labels": [5, 99, 0], b"coarse_labels": [1, 19, 0]}, f
            )
    with open(tmp_path / "meta", "wb") as f:
        pickle.dump(
            {
                b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
            },
            f,
        )
    fine = open_source(f"cifar:{tmp_path}")
    assert fine.splits["train"].labels.tolist() == [5, 99, 0] and len(fine.label_names) == 100
    np.testing.assert_array_equal(fine.splits["test"].images, images)
    coarse = open_source(f"cifar:{tmp_path}", cifar_label_mode="coarse")
    assert coarse.splits["train"].labels.tolist() == [1, 19, 0] and coarse.label_names[19] == "c19"


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_idx_directory_gives_train_and_test_splits(tmp_path):
    rng = np.random.default_rng(2)
    x_train, y_train = rng.integers(0, 256, (6, 5, 4)), rng.integers(0, 10, 6)
    x_test, y_test = rng.integers(0, 256, (2, 5, 4)), rng.integers(0, 10, 2)
    _write_idx(tmp_path / "train-images-idx3-ubyte", x_train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y_train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", x_test)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", y_test)
    src = open_source(f"idx:{tmp_path}")
    assert sorted(src.splits) == ["test", "train"]
    records = _records(src.splits["train"])
    np.testing.assert_array_equal(np.stack([r[1][:, :, 0] for r in records]), x_train)
    assert [r[2] for r in records] == y_train.tolist()
    assert [r[3] for r in records] == [f"train/{i}" for i in range(6)]


def test_idx_directory_with_images_but_no_labels_is_an_error(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="has 'train-images-idx3-ubyte' but not its labels file"):
        open_source(f"idx:{tmp_path}")


def test_npz_pairs_become_splits_and_keras_cifar_labels_are_flattened(tmp_path):
    x = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([[1], [2]]), x_val=x[:1], y_val=[0])
    src = open_source(f"numpy:{tmp_path / 'd.npz'}")
    assert sorted(src.splits) == ["train", "val"]
    assert src.splits["train"].labels.tolist() == [1, 2]
    assert open_source(f"numpy:{tmp_path / 'd.npz'}", split="val").splits.keys() == {"val"}


def _write_folder(root, corrupt=False):
    rng = np.random.default_rng(3)
    written = {}
    for cls, ext in (("cat", "png"), ("dog", "png"), ("emu", "jpg")):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 256, (6 + i, 5, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.{ext}")
            written[f"{cls}/{i}.{ext}"] = img
    (root / "cat" / ".DS_Store").write_bytes(b"\0junk")  # hidden: not data
    if corrupt:
        good = (root / "dog" / "0.png").read_bytes()
        (root / "dog" / "2.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    return written


def test_folder_classes_are_sorted_subfolders_and_png_pixels_survive(tmp_path):
    written = _write_folder(tmp_path / "imgs")
    src = open_source(f"folder:{tmp_path / 'imgs'}")
    assert src.label_names == ["cat", "dog", "emu"] and list(src.splits) == ["train"]
    records = _records(src.splits["train"])
    assert [(r[3], r[2]) for r in records] == [
        ("cat/0.png", 0), ("cat/1.png", 0), ("dog/0.png", 1), ("dog/1.png", 1), ("emu/0.jpg", 2), ("emu/1.jpg", 2)
    ]  # fmt: skip
    for _, image, _, name, error in records:
        assert error is None
        if name.endswith(".png"):
            np.testing.assert_array_equal(image, written[name])
        else:  # JPEG is lossy; same shape, close values
            assert image.shape == written[name].shape


def test_folder_with_train_and_val_subfolders_gives_two_splits_with_shared_classes(tmp_path):
    _write_folder(tmp_path / "d" / "train")
    (tmp_path / "d" / "val" / "emu").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "d" / "val" / "emu" / "a.png")
    src = open_source(f"folder:{tmp_path / 'd'}")
    assert sorted(src.splits) == ["train", "val"]
    assert src.splits["val"].labels.tolist() == [2]  # "emu" is class 2 in both splits


def test_corrupt_file_yields_an_error_naming_it(tmp_path):
    _write_folder(tmp_path / "imgs", corrupt=True)
    split = open_source(f"folder:{tmp_path / 'imgs'}").splits["train"]
    assert isinstance(split, FileSplit)
    bad = [r for r in _records(split) if r[4] is not None]
    assert [r[3] for r in bad] == ["dog/2.png"]
    assert isinstance(bad[0][4], CorruptImageError)
    assert str(tmp_path / "imgs" / "dog" / "2.png") in str(bad[0][4])


def test_keras_source_loads_keras_datasets_by_name(monkeypatch):
    import keras

    x = np.zeros((3, 28, 28), np.uint8)
    monkeypatch.setattr(
        keras.datasets.fashion_mnist,
        "load_data",
        lambda: ((x, np.array([0, 1, 9])), (x[:1], np.array([4]))),
    )
    src = open_source("keras:fashion_mnist")
    assert src.description == "keras:fashion_mnist" and src.label_names[9] == "Ankle boot"
    assert src.splits["train"].labels.tolist() == [0, 1, 9] and src.splits["test"].num_records == 1
    with pytest.raises(ValueError, match="keras:nope is not a keras.datasets module"):
        open_source("keras:nope")


def test_tfds_source_without_tensorflow_datasets_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        open_source("tfds:mnist")


def test_tfds_source_reads_a_tfds_builder(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):  # tfds's own offline stand-in for the data
        src = open_source("tfds:mnist", split="train")
    assert src.label_names == [str(i) for i in range(10)]
    assert src.splits["train"].images.shape == (5, 28, 28, 1)


@pytest.mark.parametrize(
    "source, match",
    [
        ("mnist", "source must be 'scheme:PATH'"),
        ("zip:/tmp/x", "scheme one of numpy, idx, cifar, folder, tfds, keras"),
        ("idx:/does/not/exist", "does not exist"),
        (42, "an \\(x, y\\) pair or a dict"),
    ],
)
def test_unknown_or_missing_sources_are_clear_value_errors(source, match):
    with pytest.raises(ValueError, match=match):
        open_source(source)


def test_arrays_with_bad_labels_or_split_are_rejected():
    with pytest.raises(ValueError, match="must be >= 0; received a label -1"):
        open_source((np.zeros((2, 3, 3), np.uint8), np.array([0, -1])))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        open_source((np.zeros((2, 3, 3), np.uint8), np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="split 'test' not in source"):
        open_source({"train": (np.zeros((2, 3, 3), np.uint8), np.array([0, 1]))}, split="test")
    with pytest.raises(ValueError, match="label 1 but only 1 label names"):
        open_source((np.zeros((2, 3, 3), np.uint8), np.array([0, 1])), label_names=["a"])


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        open_source(f"folder:{os.path.join(str(tmp_path), 'nope')}")
