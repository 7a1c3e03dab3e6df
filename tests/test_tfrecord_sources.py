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
import zlib

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
        ("cat/0.png", 0), ("cat/1.png", 0), ("dog/0.png", 1),
        ("dog/1.png", 1), ("emu/0.jpg", 2), ("emu/1.jpg", 2),
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
        ("mnist", "`source` must be 'scheme:PATH'.*Received: source='mnist'"),
        ("zip:/tmp/x", "scheme one of numpy, idx, cifar, folder, tfds, keras"),
        ("idx:/does/not/exist", "does not exist"),
        (42, r"an \(x, y\) pair or a dict of them. Received: type\(source\)=<class 'int'>"),
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
    with pytest.raises(ValueError, match=r"`split` must be one or more of the splits \['train'\]"):
        open_source({"train": (np.zeros((2, 3, 3), np.uint8), np.array([0, 1]))}, split="test")
    with pytest.raises(ValueError, match="label 1 but only 1 label names"):
        open_source((np.zeros((2, 3, 3), np.uint8), np.array([0, 1])), label_names=["a"])


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        open_source(f"folder:{os.path.join(str(tmp_path), 'nope')}")


# --- images kept faithful or refused (folder sources) ------------------------------------------


def _png16_rgb(array):
    # A 16-bit RGB PNG written by hand from the PNG spec (Pillow cannot write one): IHDR with
    # bit depth 16, colour type 2, then big-endian samples, filter type 0 on every row.
    h, w, _ = array.shape

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _one_image_folder(root, save):
    (root / "a").mkdir(parents=True)
    path = root / "a" / "img.png"
    save(path)
    return open_source(f"folder:{root}"), str(path)


# EXIF 2.32, tag 0x0112 (Orientation): how the stored rows must be turned to be shown upright.
@pytest.mark.parametrize(
    "orientation, upright",
    [
        (1, lambda a: a),
        (2, np.fliplr),  # mirrored horizontally
        (3, lambda a: np.rot90(a, 2)),  # rotated 180 degrees
        (6, lambda a: np.rot90(a, -1)),  # shown rotated 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),  # shown rotated 90 degrees counter-clockwise
    ],
)
def test_folder_images_are_stored_upright_per_their_exif_orientation(
    tmp_path, orientation, upright
):
    stored = np.random.default_rng(4).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    src, _ = _one_image_folder(tmp_path / "d", lambda p: Image.fromarray(stored).save(p, exif=exif))
    [(_, image, _, _, error)] = _records(src.splits["train"])
    assert error is None
    np.testing.assert_array_equal(image, upright(stored))


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_16_bit_images_are_refused_naming_the_file_never_clipped(tmp_path, kind):
    from tfrecord_tools.sources import UnsupportedImageError

    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000  # up to 55000, > 255

    def save(path):
        if kind == "grey":
            Image.fromarray(values).save(path)  # Pillow writes mode I;16 as a 16-bit PNG
        else:
            path.write_bytes(_png16_rgb(np.stack([values] * 3, axis=-1)))

    src, path = _one_image_folder(tmp_path / "d", save)
    with pytest.raises(UnsupportedImageError, match="has 16 bits per channel") as info:
        _records(src.splits["train"])
    assert info.value.filename == path and path in str(info.value)
    assert ">> 8" in str(info.value)  # says what to do


def _rgba():
    rgba = np.random.default_rng(5).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[0, 2, 3] = 0, 255, 128  # transparent, opaque, half
    return rgba


def test_transparent_image_is_refused_by_default_naming_the_file_and_the_option(tmp_path):
    from tfrecord_tools.sources import UnsupportedImageError

    rgba = _rgba()
    src, path = _one_image_folder(tmp_path / "d", lambda p: Image.fromarray(rgba).save(p))
    with pytest.raises(UnsupportedImageError, match="transparent pixel") as info:
        _records(src.splits["train"])
    assert path in str(info.value) and "alpha='composite'" in str(info.value)
    assert "alpha='keep'" in str(info.value)


def test_alpha_composite_blends_onto_white_and_keep_stores_rgba(tmp_path):
    rgba = _rgba()
    root = tmp_path / "d"
    _one_image_folder(root, lambda p: Image.fromarray(rgba).save(p))
    composite = open_source(f"folder:{root}", alpha="composite").splits["train"]
    [(_, image, _, _, _)] = _records(composite)
    # Porter-Duff "over" onto an opaque white background, rounded to the nearest integer.
    a = rgba[:, :, 3:].astype(np.float64) / 255
    expected = np.round(rgba[:, :, :3] * a + 255 * (1 - a)).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    assert tuple(image[0, 0]) == (255, 255, 255) and tuple(image[0, 1]) == tuple(rgba[0, 1, :3])
    [(_, kept, _, _, _)] = _records(open_source(f"folder:{root}", alpha="keep").splits["train"])
    np.testing.assert_array_equal(kept, rgba)


def test_opaque_alpha_is_dropped_and_keep_gives_every_image_four_channels(tmp_path):
    rgba = _rgba()
    rgba[:, :, 3] = 255
    root = tmp_path / "d"
    _one_image_folder(root, lambda p: Image.fromarray(rgba).save(p))
    rgb = np.zeros((2, 2, 3), np.uint8) + 7
    Image.fromarray(rgb).save(root / "a" / "rgb.png")
    [(_, opaque, *_), (_, plain, *_)] = _records(open_source(f"folder:{root}").splits["train"])
    np.testing.assert_array_equal(opaque, rgba[:, :, :3])  # nothing to lose: no error
    np.testing.assert_array_equal(plain, rgb)
    kept = _records(open_source(f"folder:{root}", alpha="keep").splits["train"])
    np.testing.assert_array_equal(kept[1][1], np.dstack([rgb, np.full((2, 2), 255, np.uint8)]))
    with pytest.raises(
        ValueError, match=r"`alpha` must be one of \('error', 'composite', 'keep'\)"
    ):
        open_source(f"folder:{root}", alpha="drop")


def test_every_skipped_folder_entry_is_named_in_one_warning(tmp_path):
    root = tmp_path / "d"
    _write_folder(root)  # cat/.DS_Store is hidden
    (root / ".secret").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / ".secret" / "x.png")
    (root / "README.txt").write_text("not an image")
    (root / "dog" / "nested").mkdir()
    with pytest.warns(UserWarning) as record:
        src = open_source(f"folder:{root}")
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 4 entries" in message
    for entry, why in [
        (".secret/", "hidden folder"),
        ("README.txt", "file beside the class folders"),
        ("cat/.DS_Store", "hidden file"),
        ("dog/nested/", "folder inside a class folder"),
    ]:
        assert f"'{entry}' ({why})" in message
    assert src.label_names == ["cat", "dog", "emu"] and len(src.skipped) == 4


def test_folder_beside_split_folders_is_named_in_the_warning(tmp_path):
    _write_folder(tmp_path / "d" / "train")
    (tmp_path / "d" / "extra" / "emu").mkdir(parents=True)
    with pytest.warns(UserWarning, match="'extra/' \\(folder beside the split folders\\)"):
        src = open_source(f"folder:{tmp_path / 'd'}")
    assert list(src.splits) == ["train"]


# --- arrays checked before anything is written -------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_are_refused_with_the_scaling_hint(dtype):
    x = np.random.default_rng(6).random((3, 4, 4)).astype(dtype)  # 0..1, as often after /255
    with pytest.raises(
        ValueError, match=f"images of split 'train' are {np.dtype(dtype).name}"
    ) as e:
        open_source((x, np.arange(3)))
    assert "Scale the images to 0..255 and cast them to uint8" in str(e.value)
    with pytest.raises(ValueError, match="image 1 of split 'train' are float"):
        open_source(([np.zeros((2, 2), np.uint8), x[0]], [0, 1]))


def test_integer_arrays_in_range_are_stored_equal_and_out_of_range_refused():
    x = np.arange(2 * 2 * 2 * 3).reshape(2, 2, 2, 3) * 10  # int64, 0..230
    [(_, first, *_), (_, second, *_)] = _records(open_source((x, [0, 1])).splits["train"])
    np.testing.assert_array_equal(np.stack([first, second]), x)
    assert first.dtype == np.uint8
    with pytest.raises(ValueError, match="uint16 with values in \\[1000, 1000\\], outside 0..255"):
        open_source((np.full((1, 2, 2), 1000, np.uint16), [0]))
    with pytest.raises(ValueError, match="must have 1, 3 or 4 channels"):
        open_source((np.zeros((1, 2, 2, 2), np.uint8), [0]))


# --- class names: from the source or an argument, never from the path -------------------------


def _idx_dir(root, labels=(0, 9)):
    root.mkdir()
    _write_idx(root / "t10k-images-idx3-ubyte", np.zeros((len(labels), 2, 2)))
    _write_idx(root / "t10k-labels-idx1-ubyte", np.asarray(labels))
    return root


def test_idx_class_names_come_from_an_argument_never_from_the_path(tmp_path):
    from tfrecord_tools.sources import FASHION_MNIST_LABELS

    root = _idx_dir(tmp_path / "my-fashion-mnist-copy")  # "fashion" in the path means nothing
    assert open_source(f"idx:{root}").label_names is None
    assert open_source(f"idx:{root}", name="fashion_mnist").label_names == FASHION_MNIST_LABELS
    assert open_source(f"idx:{root}", label_names="mnist").label_names == [
        str(i) for i in range(10)
    ]
    assert open_source(f"idx:{root}", name="my_data").label_names is None
    named = open_source(f"idx:{root}", label_names=list("abcdefghij"), name="fashion_mnist")
    assert named.label_names == list("abcdefghij")  # the explicit list wins
    with pytest.raises(ValueError, match=r"known dataset, one of \['cifar10', 'fashion_mnist'"):
        open_source(f"idx:{root}", label_names="fashion")


def test_idx_lookup_prefers_the_uncompressed_file_like_load_fashion_mnist(tmp_path):
    import gzip

    from keras_tricks.datasets import read_idx as reexported
    from tfrecord_tools.idx import find_idx, read_idx

    root = _idx_dir(tmp_path / "both", labels=(1, 2))
    stem = "t10k-labels-idx1-ubyte"
    with open(root / stem, "rb") as f:
        header = f.read()[:8]
    (root / (stem + ".gz")).write_bytes(gzip.compress(header + bytes([7, 7])))  # differs
    assert find_idx(root, stem) == str(root / stem)
    assert open_source(f"idx:{root}").splits["test"].labels.tolist() == [1, 2]
    assert reexported is read_idx


def test_tfrecord_tools_never_imports_keras_tricks():
    import ast
    import pathlib

    package = pathlib.Path(__file__).resolve().parent.parent / "tfrecord_tools"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "keras_tricks" for n in names), path.name
