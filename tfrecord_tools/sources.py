"""Readers of raw image-classification datasets, named by a scheme prefix.

=================  ===========================================================================
`numpy:FILE.npz`   arrays `x_<split>`, `y_<split>` (as `keras.datasets` gives them: `x_train`,
                   `y_train`, `x_test`, `y_test`); optional `label_names`
`idx:DIR`          MNIST-family IDX files `train-images-idx3-ubyte[.gz]`,
                   `train-labels-idx1-ubyte[.gz]`, `t10k-...` -> splits `train` and `test`
`cifar:DIR`        CIFAR-10 (`data_batch_1..5`, `test_batch`, `batches.meta`) or CIFAR-100
                   (`train`, `test`, `meta`) python batches; DIR may also be their parent folder
`folder:DIR`       one sub-folder per class (ImageNet layout, any format Pillow reads); with
                   `DIR/train`, `DIR/val`, `DIR/validation` or `DIR/test` sub-folders, each is a
                   split
`tfds:NAME`        a TensorFlow Datasets dataset (needs `tensorflow-datasets`; downloads and
                   prepares it if needed); `tfds:NAME?data_dir=DIR` reads it from DIR (default:
                   `TFDS_DATA_DIR`, else `~/tensorflow_datasets`). Streamed: see `TfdsSplit`
`keras:NAME`       `keras.datasets.NAME.load_data()` (downloads on first use; online users)
=================  ===========================================================================

The Python API also takes arrays: `(x, y)` for one split or `{"train": (x, y), "test": (x, y)}`.

What is stored is what the source holds, or the source is refused with a message naming the file
and what to do — never silently changed:

- Arrays must be uint8 (or integers in 0..255); float arrays are refused before anything is
  written, with the hint to scale them to 0..255 and cast to uint8 (the scale cannot be guessed).
- Image files (`folder:`) are decoded by Pillow, turned upright by their EXIF orientation
  (`ImageOps.exif_transpose`, as every photo viewer shows them) and stored as RGB (grey and
  palette images are expanded). Images with more than 8 bits per channel (16-bit PNG/TIFF) are
  refused (`UnsupportedImageError`): records hold 8-bit pixels, and reducing them is the user's
  choice (e.g. `x >> 8`), never a silent clip. Transparent pixels follow `alpha=`: "error"
  (default) refuses the file, "composite" blends it onto white —
  `out = (rgb * a + 255 * (255 - a) + 127) // 255`, the background viewers and browsers show —
  and "keep" stores every image as RGBA (4 channels; opaque images get alpha 255). An alpha
  channel that is fully opaque is dropped without a word: nothing is lost.
- Entries of a `folder:` source that are not class folders or image files (hidden folders such
  as `.git/` or `.cache/`, hidden files such as `.DS_Store`, files beside the class folders,
  folders inside a class folder, folders beside the split folders) are skipped with one
  `UserWarning` naming every one of them.
- Class names come from the source (CIFAR meta, folder names, tfds features, the keras table) or
  from `label_names=` (a list, or the name of a known dataset in `KNOWN_LABEL_NAMES`); IDX files
  hold none, so `idx:` sources get names only from `label_names=` or from `name=` when it names a
  known dataset (`convert(..., name="fashion_mnist")`), never from the path.

A split is either arrays in memory (`ArraySplit`), a list of files (`FileSplit`) or a prepared
tfds split (`TfdsSplit`). The writer asks a split for the *payload* of one shard (a picklable
object sent to a worker process) and the worker turns it into records with `iter_payload`, which
needs NumPy and, for files, Pillow — never TensorFlow, so worker processes start fast — except
for a tfds payload: that worker reads its records' slice of the prepared files with
tensorflow-datasets, so no process ever holds the whole dataset. With `shuffle=True` (the
default) a shard's records are spread over the whole split, so each shard reads through it
(encoded, undecoded); tfds shuffles examples when it prepares a dataset, so `shuffle=False`
reads every record once, in contiguous slices, and is the choice for large tfds datasets.
"""

import dataclasses
import io
import os
import pickle
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tfrecord_tools._checks import check_one_of, fail

__all__ = [
    "CorruptImageError",
    "UnsupportedImageError",
    "Source",
    "ArraySplit",
    "FileSplit",
    "ArrayPayload",
    "FilePayload",
    "TfdsSplit",
    "TfdsPayload",
    "open_source",
    "iter_payload",
    "SCHEMES",
    "ALPHA_MODES",
    "KNOWN_LABEL_NAMES",
    "FASHION_MNIST_LABELS",
    "CIFAR10_LABELS",
]

SCHEMES = ("numpy", "idx", "cifar", "folder", "tfds", "keras")

# https://github.com/zalandoresearch/fashion-mnist#labels
FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# https://www.cs.toronto.edu/~kriz/cifar.html (batches.meta of CIFAR-10)
CIFAR10_LABELS = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
# Class names of well-known datasets, looked up by an explicit name (`keras:NAME`,
# `label_names="fashion_mnist"`, or `name=` for sources without names of their own).
KNOWN_LABEL_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": FASHION_MNIST_LABELS,
    "cifar10": CIFAR10_LABELS,
}
_FOLDER_SPLITS = ("train", "val", "validation", "test")
ALPHA_MODES = ("error", "composite", "keep")
_MAX_LISTED = 50  # skipped folder entries named one by one in the warning


class CorruptImageError(ValueError):
    """An image file of a `folder:` source cannot be decoded; the message names the file."""

    def __init__(self, filename: str, reason: str):
        self.filename = filename
        self.reason = reason
        super().__init__(
            f"Corrupt or unreadable image {filename!r}: {reason}. Fix or remove the file, or "
            f"convert with skip_corrupt=True (CLI: --skip-corrupt) to leave it out; skipped files "
            f"are listed in manifest.json."
        )

    def __reduce__(self):  # so the error crosses process boundaries intact
        return (type(self), (self.filename, self.reason))


class UnsupportedImageError(ValueError):
    """An image file that would be changed by storing it (more than 8 bits per channel, or
    transparency without an `alpha=` choice); the message names the file and what to do.

    Unlike `CorruptImageError`, `skip_corrupt` does not skip it: the file is fine, the
    conversion needs a decision.
    """

    def __init__(self, filename: str, reason: str, advice: str):
        self.filename = filename
        self.reason = reason
        self.advice = advice
        super().__init__(f"Image {filename!r} {reason}: {advice}")

    def __reduce__(self):
        return (type(self), (self.filename, self.reason, self.advice))


def _check_labels(labels, argument):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # keras.datasets.cifar10 gives (N, 1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{argument} must be a 1-D array of integer class ids; received dtype "
            f"{labels.dtype} and shape {labels.shape}."
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{argument} must be >= 0; received a label {labels.min()}.")
    return labels.astype(np.int64)


class _Split:
    """What both split kinds share: `name`, `kind`, `labels` (int64, one per record)."""

    name: str
    kind: str
    labels: np.ndarray

    @property
    def num_records(self) -> int:
        return len(self.labels)

    def max_label(self) -> int:
        return int(self.labels.max()) if self.labels.size else -1


_FLOAT_HINT = (
    "tfrecord_tools stores 8-bit pixels and will not guess the scale. Scale the images to "
    "0..255 and cast them to uint8 first, e.g. `np.round(x * 255).astype(np.uint8)` for "
    "values in 0..1, or `x.astype(np.uint8)` when they already hold whole numbers in 0..255."
)


def _check_pixels(images, what):
    """`images` as uint8, or ValueError naming `what`: floats never, integers only in 0..255."""
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        finite = images[np.isfinite(images)] if images.size else images
        span = f" with values in [{finite.min()}, {finite.max()}]" if finite.size else ""
        raise ValueError(f"{what} are {images.dtype}{span}. {_FLOAT_HINT}")
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(
            f"{what} must be uint8 (or integers in 0..255); received dtype {images.dtype}."
        )
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(
            f"{what} are {images.dtype} with values in [{images.min()}, {images.max()}], "
            "outside 0..255; tfrecord_tools stores 8-bit pixels and does not clip. Reduce them "
            "to 0..255 first (e.g. `(x >> 8).astype(np.uint8)` for 16-bit images)."
        )
    return images.astype(np.uint8)


def _check_channels(shape, what):
    channels = shape[-1] if len(shape) == 3 else 1
    if channels not in (1, 3, 4):
        raise ValueError(
            f"{what} must have 1, 3 or 4 channels (grey, RGB, RGBA); received shape {shape}."
        )


class ArraySplit(_Split):
    """One split held as arrays: `images` (N, H, W[, C]) uint8 (or a list of HWC arrays) and
    `labels` (N,) integers.

    The pixels are checked here, before anything is written: uint8, or integers in 0..255
    (cast to uint8); float images are refused with a hint (see the module docstring).
    """

    kind = "array"

    def __init__(self, images: Any, labels: Any, name: str = "train"):
        self.labels = _check_labels(labels, f"labels of split {name!r}")
        if isinstance(images, (list, tuple)):
            checked = []
            for i, image in enumerate(images):
                image = np.asarray(image)
                if image.ndim not in (2, 3):
                    raise ValueError(
                        f"image {i} of split {name!r} must have shape (H, W) or (H, W, C); "
                        f"received shape {image.shape}."
                    )
                _check_channels(image.shape, f"image {i} of split {name!r}")
                checked.append(_check_pixels(image, f"image {i} of split {name!r}"))
            self.images = checked
        else:
            images = np.asarray(images)
            if images.ndim not in (3, 4):
                raise ValueError(
                    f"images of split {name!r} must have shape (N, H, W) or (N, H, W, C); "
                    f"received shape {images.shape}."
                )
            _check_channels(images.shape[1:], f"images of split {name!r}")
            self.images = _check_pixels(images, f"images of split {name!r}")
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"split {name!r} has {len(self.images)} images but {len(self.labels)} labels."
            )
        self.name = name

    def payload(self, indices: Any) -> "ArrayPayload":
        """Picklable records `indices` (source order numbers) for a worker."""
        if isinstance(self.images, list):
            images = [self.images[i] for i in indices]
        else:
            images = self.images[indices]
        return ArrayPayload(self.name, np.asarray(indices), images, self.labels[indices])


class FileSplit(_Split):
    """One split held as image files and their labels (decoded by the worker).

    `alpha` says what to do with transparent pixels ("error", "composite", "keep"; see the
    module docstring).
    """

    kind = "files"

    def __init__(
        self,
        paths: list,
        labels: Any,
        name: str = "train",
        root: str | None = None,
        alpha: str = "error",
    ):
        self.paths = list(paths)
        self.labels = _check_labels(labels, f"labels of split {name!r}")
        if len(self.paths) != len(self.labels):
            raise ValueError(
                f"split {name!r} has {len(self.paths)} files but {len(self.labels)} labels."
            )
        self.name = name
        self.root = root
        self.alpha = _check_alpha(alpha)

    def payload(self, indices: Any) -> "FilePayload":
        """Picklable file names and labels of records `indices`, decoded by the worker."""
        return FilePayload(
            self.name,
            np.asarray(indices),
            [self.paths[i] for i in indices],
            self.labels[indices],
            self.root,
            self.alpha,
        )


@dataclasses.dataclass(frozen=True)
class ArrayPayload:
    """One shard's records of an `ArraySplit`, sent to a worker: source order numbers,
    their uint8 images and labels."""

    split: str
    indices: np.ndarray
    images: Any
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class FilePayload:
    """One shard's records of a `FileSplit`, sent to a worker: source order numbers, file
    names (relative to `root` in `image/filename`), labels and the `alpha` rule."""

    split: str
    indices: np.ndarray
    paths: list
    labels: np.ndarray
    root: str | None = None
    alpha: str = "error"


def _check_alpha(alpha):
    return check_one_of("alpha", alpha, ALPHA_MODES)


class Source:
    """A raw dataset: `splits` (`{name: ArraySplit | FileSplit}`), `label_names`, `description`
    and `skipped`, the `(entry, why)` pairs of folder entries that are not data."""

    def __init__(
        self,
        splits: dict,
        label_names: list | None = None,
        description: str = "arrays",
        skipped: Sequence = (),
    ):
        if not splits:
            raise ValueError(f"source {description!r} has no splits.")
        self.splits = dict(splits)
        self.label_names = list(label_names) if label_names is not None else None
        self.description = description
        self.skipped = list(skipped)

    def select(self, split: str | list | None) -> "Source":
        """Keep only the named split(s) (a name, comma-separated names or a list)."""
        if split is None:
            return self
        names = split.split(",") if isinstance(split, str) else list(split)
        names = [n.strip() for n in names if n.strip()]
        unknown = [n for n in names if n not in self.splits]
        if unknown or not names:
            allowed = f"one or more of the splits {sorted(self.splits)} of {self.description!r}"
            fail("split", allowed, split)
        return Source(
            {n: self.splits[n] for n in names}, self.label_names, self.description, self.skipped
        )


def _read_bytes(path):
    # Local files with plain open(): workers stay TensorFlow-free; remote URLs through tf.io.gfile.
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


_HIGH_DEPTH_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
_ALPHA_IMAGE_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_RAWMODE_16 = re.compile(r";16")


def _bits_per_channel(pil):
    """Bits per channel of an opened (not yet loaded) Pillow image: 8, 16 or 32.

    Pillow opens 16-bit grey as mode "I;16" but reduces 16-bit RGB(A) PNGs to 8-bit "RGB(A)"
    while decoding; the tile's raw mode ("RGB;16B") still says what the file holds.
    """
    if pil.mode in _HIGH_DEPTH_MODES:
        return _HIGH_DEPTH_MODES[pil.mode]
    for tile in getattr(pil, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args else None)
        if isinstance(rawmode, str) and _RAWMODE_16.search(rawmode):
            return 16
    return 8


def _to_array(pil, path, alpha):
    """The uint8 HWC array stored for an opened, upright Pillow image (see the module docstring)."""
    has_alpha = pil.mode in _ALPHA_IMAGE_MODES or "transparency" in pil.info
    if not has_alpha:
        return np.asarray(pil.convert("RGBA" if alpha == "keep" else "RGB"), dtype=np.uint8)
    rgba = np.asarray(pil.convert("RGBA"), dtype=np.uint8)
    a = rgba[:, :, 3:]
    if alpha == "keep":
        return rgba
    if a.min() == 255:  # an alpha channel that is fully opaque holds no information
        return np.ascontiguousarray(rgba[:, :, :3])
    if alpha == "error":
        transparent = int((a < 255).sum())
        raise UnsupportedImageError(
            path,
            f"has {transparent} transparent pixel(s) (mode {pil.mode})",
            "choose what to do with them: alpha='composite' blends the image onto a white "
            "background, alpha='keep' stores RGBA (4 channels) (CLI: --alpha composite|keep)",
        )
    # Composite onto white, rounded: out = (rgb * a + 255 * (255 - a) + 127) // 255.
    rgb = rgba[:, :, :3].astype(np.uint32)
    a = a.astype(np.uint32)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _decode_file(path: str, alpha: str = "error") -> np.ndarray:
    """Decode one image file to the uint8 HWC array that is stored (RGB, or RGBA with
    alpha="keep"), upright per its EXIF orientation.

    Raises:
        CorruptImageError: the file cannot be read or decoded.
        UnsupportedImageError: more than 8 bits per channel, or transparency with alpha="error".
    """
    from PIL import Image, ImageOps

    try:
        data = _read_bytes(path)
        pil = Image.open(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - any decoder failure means "corrupt", reported by name
        raise CorruptImageError(path, f"{type(e).__name__}: {e}") from None
    with pil:
        bits = _bits_per_channel(pil)
        if bits > 8:
            raise UnsupportedImageError(
                path,
                f"has {bits} bits per channel (mode {pil.mode})",
                "records hold 8-bit pixels and tfrecord_tools does not clip or rescale them "
                "silently; reduce the image to 8 bits first (e.g. with NumPy "
                "`(np.asarray(im) >> 8).astype(np.uint8)` for 16-bit data) or leave it out of "
                "the folder",
            )
        try:
            pil.load()  # Pillow raises on truncated or corrupt data here
            ImageOps.exif_transpose(pil, in_place=True)  # turn it upright, drop the tag
        except Exception as e:  # noqa: BLE001 - any decoder failure means "corrupt"
            raise CorruptImageError(path, f"{type(e).__name__}: {e}") from None
        return _to_array(pil, path, alpha)


def iter_payload(payload: "ArrayPayload | FilePayload | TfdsPayload") -> Iterator[tuple]:
    """Yield `(index, image uint8 HWC | None, label, filename, error | None)` for a shard payload.

    `error` is a `CorruptImageError` for an unreadable file (image is then None); array records
    never fail. An `UnsupportedImageError` (16-bit image, transparency without an `alpha=`
    choice) is raised, not yielded: `skip_corrupt` must not drop a readable image. Runs in
    worker processes; imports neither TensorFlow nor Keras.
    """
    if isinstance(payload, ArrayPayload):
        for i, index in enumerate(payload.indices):
            img = np.asarray(payload.images[i])
            yield (
                int(index),
                (img[:, :, None] if img.ndim == 2 else img),
                int(payload.labels[i]),
                f"{payload.split}/{int(index)}",
                None,
            )
    elif isinstance(payload, FilePayload):
        root = payload.root
        for index, path, label in zip(payload.indices, payload.paths, payload.labels):
            name = os.path.relpath(path, root) if root and "://" not in path else path
            try:
                image = _decode_file(path, payload.alpha)
            except CorruptImageError as e:
                yield int(index), None, int(label), name, e
            else:
                yield int(index), image, int(label), name, None
    elif isinstance(payload, TfdsPayload):
        yield from _iter_tfds(payload)
    else:
        raise ValueError(f"unknown payload {type(payload).__name__}")


# --- scheme readers ------------------------------------------------------------------------


def _from_arrays(arrays, split, label_names):
    if isinstance(arrays, dict):
        splits = {k: ArraySplit(x, y, k) for k, (x, y) in arrays.items()}
    elif isinstance(arrays, (tuple, list)) and len(arrays) == 2:
        if split is not None and (not isinstance(split, str) or "," in split):
            fail("split", "None or one split name for a single (x, y) pair", split)
        name = split or "train"
        return Source({name: ArraySplit(arrays[0], arrays[1], name)}, label_names, "arrays")
    else:
        allowed = (
            f"a 'scheme:PATH' string (schemes: {', '.join(SCHEMES)}), an (x, y) pair or a dict "
            "of them"
        )
        fail("source", allowed, type(arrays), received_as="type(source)")
    return Source(splits, label_names, "arrays")


def _numpy_source(path):
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        splits = {}
        for key in sorted(keys):
            if key.startswith("x_") and f"y_{key[2:]}" in keys:
                name = key[2:]
                splits[name] = ArraySplit(data[key], data[f"y_{name}"], name)
        names = [str(s) for s in data["label_names"]] if "label_names" in keys else None
    if not splits:
        raise ValueError(
            f"{path!r} holds arrays {sorted(keys)}; expected pairs x_<split>, y_<split> "
            "(e.g. x_train, y_train, x_test, y_test)."
        )
    return Source(splits, names, f"numpy:{path}")


def _split_names(split):
    if split is None:
        return None
    names = split.split(",") if isinstance(split, str) else list(split)
    return {n.strip() for n in names if n.strip()}


def _idx_source(directory, wanted=None):
    from tfrecord_tools.idx import IDX_SPLITS, find_idx, read_idx

    splits = {}
    for split, prefix in IDX_SPLITS.items():
        images = find_idx(directory, f"{prefix}-images-idx3-ubyte")
        labels = find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            if wanted is None or split in wanted:  # skip decompressing splits not asked for
                splits[split] = ArraySplit(read_idx(images), read_idx(labels), split)
        elif images or labels:
            raise ValueError(
                f"IDX directory {directory!r} has {os.path.basename(images or labels)!r} but not "
                f"its {'labels' if images else 'images'} file."
            )
    if not splits and wanted:
        raise ValueError(
            f"split {sorted(wanted)} not in IDX directory {directory!r}; it has train/test files."
        )
    if not splits:
        raise ValueError(
            f"No IDX files in {directory!r}: expected train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz] and/or the t10k-* pair."
        )
    # IDX files hold no class names: they come from `label_names=` or `name=` (open_source).
    return Source(splits, None, f"idx:{directory}")


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_images(batch, path):
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"CIFAR batch {path!r}: b'data' has shape {data.shape}, expected (N, 3072)."
        )
    # Each row is the 1024 red, then 1024 green, then 1024 blue values of a 32x32 image, row-major.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_source(directory, label_mode="fine", wanted=None):
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if os.path.isdir(os.path.join(directory, sub)):
            directory = os.path.join(directory, sub)
            break
    join = os.path.join
    if os.path.exists(join(directory, "batches.meta")):  # CIFAR-10
        meta = _unpickle(join(directory, "batches.meta"))
        names = [n.decode() for n in meta[b"label_names"]]
        train_files = sorted(f for f in os.listdir(directory) if f.startswith("data_batch_"))
        files = {"train": train_files, "test": ["test_batch"]}
        key = b"labels"
    elif os.path.exists(join(directory, "meta")):  # CIFAR-100
        meta = _unpickle(join(directory, "meta"))
        key = b"fine_labels" if label_mode == "fine" else b"coarse_labels"
        names = [
            n.decode()
            for n in meta[b"fine_label_names" if label_mode == "fine" else b"coarse_label_names"]
        ]
        files = {"train": ["train"], "test": ["test"]}
    else:
        raise ValueError(
            f"No CIFAR python batches in {directory!r}: expected batches.meta + data_batch_* + "
            "test_batch (CIFAR-10) or meta + train + test (CIFAR-100)."
        )
    splits = {}
    for split, names_ in files.items():
        present = [f for f in names_ if os.path.exists(join(directory, f))]
        if not present or (wanted is not None and split not in wanted):
            continue
        images, labels = [], []
        for f in present:
            batch = _unpickle(join(directory, f))
            images.append(_cifar_images(batch, join(directory, f)))
            labels.append(np.asarray(batch[key], dtype=np.int64))
        splits[split] = ArraySplit(np.concatenate(images), np.concatenate(labels), split)
    if not splits:
        if wanted:
            raise ValueError(
                f"split {sorted(wanted)} not in CIFAR directory {directory!r} (train, test)."
            )
        raise ValueError(f"CIFAR directory {directory!r} has a meta file but no data batches.")
    return Source(splits, names, f"cifar:{directory}")


def _is_hidden(name):
    return name.startswith(".")


def _warn_skipped(directory, skipped):
    if not skipped:
        return
    listed = ", ".join(f"{entry!r} ({why})" for entry, why in skipped[:_MAX_LISTED])
    more = f", and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
    warnings.warn(
        f"folder source {directory!r}: skipped {len(skipped)} "
        f"{'entry' if len(skipped) == 1 else 'entries'} (neither class folders nor image files): "
        f"{listed}{more}. Rename a hidden class folder (one starting with '.') to convert it.",
        UserWarning,
        stacklevel=4,
    )


def _folder_source(directory, alpha="error"):
    import tensorflow as tf

    gfile = tf.io.gfile
    if not gfile.isdir(directory):
        raise ValueError(f"folder source {directory!r} is not a directory.")
    base = directory.rstrip("/")
    skipped = []  # (entry relative to `directory`, why), in listing order

    def listing(d):
        """(sub-folders, files) of `d` that are data; hidden entries go to `skipped`."""
        folders, files = [], []
        for n in sorted(gfile.listdir(d)):
            n = n.rstrip("/")
            rel = f"{d}/{n}"[len(base) + 1 :]
            is_dir = gfile.isdir(f"{d}/{n}")
            if _is_hidden(n):
                skipped.append(
                    (rel + ("/" if is_dir else ""), f"hidden {'folder' if is_dir else 'file'}")
                )
            elif is_dir:
                folders.append(n)
            else:
                files.append(n)
        return folders, files

    top, top_files = listing(base)
    split_dirs = [s for s in top if s in _FOLDER_SPLITS and _has_folders(gfile, f"{base}/{s}")]
    class_dirs = {}
    if split_dirs:
        roots = {s: f"{base}/{s}" for s in split_dirs}
        skipped += [(f"{n}/", "folder beside the split folders") for n in top if n not in roots]
        skipped += [(n, "file beside the split folders") for n in top_files]
        for split, root in roots.items():
            class_dirs[split], files = listing(root)
            skipped += [(f"{split}/{n}", "file beside the class folders") for n in files]
    else:
        roots = {"train": base}
        class_dirs["train"] = top
        skipped += [(n, "file beside the class folders") for n in top_files]
    classes = sorted({c for folders in class_dirs.values() for c in folders})
    if not classes:
        _warn_skipped(directory, skipped)
        raise ValueError(f"folder source {directory!r} has no class sub-folders (one per class).")
    splits = {}
    for split, root in roots.items():
        paths, labels = [], []
        for label, cls in enumerate(classes):
            if cls not in class_dirs[split]:
                continue
            cdir = f"{root}/{cls}"
            folders, files = listing(cdir)
            skipped += [
                (f"{cdir[len(base) + 1 :]}/{n}/", "folder inside a class folder") for n in folders
            ]
            for fname in files:
                paths.append(f"{cdir}/{fname}")
                labels.append(label)
        splits[split] = FileSplit(
            paths, np.asarray(labels, np.int64), split, root=root, alpha=alpha
        )
    _warn_skipped(directory, skipped)
    return Source(splits, classes, f"folder:{directory}", skipped=skipped)


def _has_folders(gfile, d):
    names = [n.rstrip("/") for n in gfile.listdir(d)]
    return any(not _is_hidden(n) and gfile.isdir(f"{d}/{n}") for n in names)


class TfdsSplit(_Split):
    """One split of a prepared TensorFlow Datasets dataset, read shard by shard, never whole.

    Only the split's size and label range are known here, from the dataset's metadata: no
    example is read when the source is opened. A shard's payload (`TfdsPayload`) names its
    records by position in the split (tfds's file order, as `split[a:b]` slices count) and the
    process that builds the shard reads them from the prepared files (`iter_payload`).
    """

    kind = "tfds"

    def __init__(
        self,
        builder_dir: str,
        tfds_split: str,
        num_records: int,
        image_key: str,
        label_key: str,
        num_classes: int | None = None,
        name: str = "train",
    ):
        self.builder_dir = str(builder_dir)
        self.tfds_split = tfds_split
        self._num_records = int(num_records)
        self.image_key = image_key
        self.label_key = label_key
        self.num_classes = num_classes
        self.name = name

    @property
    def num_records(self) -> int:
        return self._num_records

    def max_label(self) -> int:
        # A ClassLabel's values are below its class count (tfds checks it when preparing).
        return self.num_classes - 1 if self.num_classes else -1

    def payload(self, indices: Any) -> "TfdsPayload":
        """The picklable description of records `indices` (positions in the split)."""
        return TfdsPayload(
            self.name,
            np.asarray(indices),
            self.builder_dir,
            self.tfds_split,
            self.image_key,
            self.label_key,
        )


@dataclasses.dataclass(frozen=True)
class TfdsPayload:
    """One shard's records of a `TfdsSplit`, sent to a worker: positions in the split, and where
    the prepared dataset lives (`builder_dir`, read with `tfds.builder_from_directory`)."""

    split: str
    indices: np.ndarray
    builder_dir: str
    tfds_split: str
    image_key: str
    label_key: str


def _iter_tfds(payload: TfdsPayload) -> Iterator[tuple]:
    """Records of a `TfdsPayload` in payload order, reading only the slice they span.

    The slice `split[lo:hi]` is read in file order (one file at a time, `interleave_cycle_length`
    1) with the image left encoded (`SkipDecoding`); a record is decoded by the dataset's own
    feature (`decode_example`, what `as_dataset` does) when its turn comes. Records read before
    their turn wait encoded, so memory is bounded by one shard's encoded images; with
    `shuffle=False` every shard is a contiguous slice and nothing waits.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    order = [int(i) for i in payload.indices]
    if not order:
        return
    builder = tfds.builder_from_directory(payload.builder_dir)
    feature = builder.info.features[payload.image_key]
    lo, hi = min(order), max(order) + 1
    ds = builder.as_dataset(
        split=f"{payload.tfds_split}[{lo}:{hi}]",
        shuffle_files=False,
        read_config=tfds.ReadConfig(interleave_cycle_length=1),
        decoders={payload.image_key: tfds.decode.SkipDecoding()},
    )
    wanted = set(order)
    waiting = {}
    turn = 0
    for position, example in enumerate(tfds.as_numpy(ds), start=lo):
        if position not in wanted:
            continue
        waiting[position] = (example[payload.image_key], example[payload.label_key])
        while turn < len(order) and order[turn] in waiting:
            index = order[turn]
            encoded, label = waiting.pop(index)
            what = f"image {index} of tfds split {payload.tfds_split!r}"
            image = np.asarray(feature.decode_example(tf.constant(encoded)))
            image = _check_pixels(image[:, :, None] if image.ndim == 2 else image, what)
            _check_channels(image.shape, what)
            if int(label) < 0:
                raise ValueError(
                    f"record {index} of tfds split {payload.tfds_split!r} has label {int(label)} "
                    "(no label); tfrecord_tools stores class ids >= 0."
                )
            yield index, image, int(label), f"{payload.split}/{index}", None
            turn += 1
    if turn < len(order):
        raise ValueError(
            f"tfds split {payload.tfds_split!r} at {payload.builder_dir!r} ended before record "
            f"{order[turn]}: fewer records than its dataset_info.json lists."
        )


def _tfds_options(name):
    """`(NAME, data_dir)` from `NAME` or `NAME?data_dir=DIR`."""
    from urllib.parse import parse_qsl

    name, _, query = name.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = sorted(set(options) - {"data_dir"})
    if unknown or (query and not options.get("data_dir")):
        raise ValueError(
            "`source` must be 'tfds:NAME' or 'tfds:NAME?data_dir=DIR' (data_dir: where the "
            "prepared dataset lives; default TFDS_DATA_DIR). "
            f"Received: source='tfds:{name}?{query}'"
        )
    return name, options.get("data_dir")


def _tfds_source(name, wanted=None):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"source 'tfds:{name}' needs TensorFlow Datasets: pip install tensorflow-datasets "
            "(or keras-tricks[tfds])."
        ) from e
    description = f"tfds:{name}"
    name, data_dir = _tfds_options(name)
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    supervised = builder.info.supervised_keys
    if not supervised:
        raise ValueError(f"tfds:{name} has no supervised (image, label) keys; cannot convert it.")
    image_key, label_key = supervised[0], supervised[1]
    label_feature = builder.info.features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    try:
        label_names = list(label_feature.names)
    except (KeyError, AttributeError, TypeError):
        label_names = None  # a label feature without class names
    splits = {}
    infos = builder.info.splits
    # A builder lists its splits after preparation; fall back to the usual two when it does not
    # (tfds.testing.mock_data builders have no split metadata, nor files to read by position:
    # those few mock records are read whole).
    for split in sorted(infos.keys()) or ["test", "train"]:
        if wanted is not None and split not in wanted:
            continue
        if split in infos:
            splits[split] = TfdsSplit(
                str(builder.data_dir),
                split,
                infos[split].num_examples,
                image_key,
                label_key,
                num_classes,
                split,
            )
            continue
        ds = builder.as_dataset(split=split, as_supervised=True)
        images, labels = [], []
        for image, label in tfds.as_numpy(ds):
            images.append(image)
            labels.append(int(label))
        shapes = {im.shape for im in images}
        stacked = np.stack(images) if len(shapes) == 1 and images else images
        splits[split] = ArraySplit(stacked, np.asarray(labels, np.int64), split)
    if not splits:
        raise ValueError(
            f"split {sorted(wanted or [])} not in tfds:{name}; it has splits "
            f"{sorted(builder.info.splits.keys())}."
        )
    return Source(splits, label_names, description)


def _keras_source(name):
    import keras

    module = getattr(keras.datasets, name, None)
    if module is None or not hasattr(module, "load_data"):
        available = sorted(
            n for n in dir(keras.datasets) if hasattr(getattr(keras.datasets, n), "load_data")
        )
        raise ValueError(f"keras:{name} is not a keras.datasets module; available: {available}.")
    (x_train, y_train), (x_test, y_test) = module.load_data()
    splits = {
        "train": ArraySplit(x_train, y_train, "train"),
        "test": ArraySplit(x_test, y_test, "test"),
    }
    return Source(splits, KNOWN_LABEL_NAMES.get(name), f"keras:{name}")


def _resolve_label_names(label_names: Any) -> list[str] | None:
    if label_names is None:
        return None
    if isinstance(label_names, str):
        if label_names not in KNOWN_LABEL_NAMES:
            allowed = (
                "a list of class names (index = label) or the name of a known dataset, one of "
                f"{sorted(KNOWN_LABEL_NAMES)}"
            )
            fail("label_names", allowed, label_names)
        return list(KNOWN_LABEL_NAMES[label_names])
    names = list(label_names)
    if not all(isinstance(n, str) for n in names):
        fail("label_names", "a list of str (index = label)", names)
    return names


def open_source(
    source: Any,
    split: str | list | None = None,
    label_names: Sequence[str] | str | None = None,
    cifar_label_mode: str = "fine",
    *,
    name: str | None = None,
    alpha: str = "error",
) -> Source:
    """Open a raw dataset named by `scheme:PATH` (see module docstring) or given as arrays.

    Args:
        source: "numpy:FILE.npz", "idx:DIR", "cifar:DIR", "folder:DIR", "tfds:NAME",
            "keras:NAME"; or `(x, y)`; or `{split: (x, y)}`; or a `Source`.
        split: keep only this split (name, comma-separated names or list); None keeps all.
        label_names: override the class names: a list of str (index = label), or the name of
            a known dataset in `KNOWN_LABEL_NAMES` ("mnist", "fashion_mnist", "cifar10").
        cifar_label_mode: "fine" or "coarse" labels for CIFAR-100.
        name: the dataset's name as the user gave it (`convert(name=...)`, CLI `--name`). A
            source without class names of its own (IDX, or `.npz` without `label_names`) gets
            the names of the known dataset of that name, if there is one. Never derived from
            the path.
        alpha: transparent pixels of image files: "error" (default; refuse the file, naming
            it), "composite" (onto white), "keep" (store RGBA). See the module docstring.

    Returns:
        A `Source`.

    Example:

    ```python
    from tfrecord_tools.sources import open_source
    src = open_source("idx:/usr/share/datasets/fashion-mnist", split="test", name="fashion_mnist")
    src.splits["test"].num_records, src.label_names[9]  # (10000, 'Ankle boot')
    ```
    """
    label_names = _resolve_label_names(label_names)
    _check_alpha(alpha)
    if isinstance(source, Source):
        src = source
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        scheme, sep, rest = text.partition(":")
        if not sep or scheme not in SCHEMES or not rest:
            allowed = (
                f"'scheme:PATH' with scheme one of {', '.join(SCHEMES)} "
                "(e.g. idx:/usr/share/datasets/fashion-mnist)"
            )
            fail("source", allowed, text)
        if scheme in ("numpy", "idx", "cifar") and not os.path.exists(rest):
            raise ValueError(f"source {text!r}: {rest!r} does not exist.")
        wanted = _split_names(split)
        if scheme == "numpy":
            src = _numpy_source(rest)
        elif scheme == "idx":
            src = _idx_source(rest, wanted)
        elif scheme == "cifar":
            src = _cifar_source(rest, cifar_label_mode, wanted)
        elif scheme == "folder":
            src = _folder_source(rest, alpha)
        elif scheme == "tfds":
            src = _tfds_source(rest, wanted)
        else:
            src = _keras_source(rest)
    else:
        src = _from_arrays(source, split, label_names)
    if label_names is None and src.label_names is None and name in KNOWN_LABEL_NAMES:
        label_names = list(KNOWN_LABEL_NAMES[name])
    if label_names is not None:
        src = Source(src.splits, label_names, src.description, src.skipped)
    src = src.select(split)
    if src.label_names is not None:
        for s in src.splits.values():
            if s.max_label() >= len(src.label_names):
                raise ValueError(
                    f"split {s.name!r} has label {s.max_label()} but only "
                    f"{len(src.label_names)} label names were given."
                )
    return src
