"""Readers of raw image-classification datasets, named by a scheme prefix.

=================  ===========================================================================
`numpy:FILE.npz`   arrays `x_<split>`, `y_<split>` (as `keras.datasets` gives them: `x_train`,
                   `y_train`, `x_test`, `y_test`); optional `label_names`
`idx:DIR`          MNIST-family IDX files `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
                   `t10k-...` -> splits `train` and `test`
`cifar:DIR`        CIFAR-10 (`data_batch_1..5`, `test_batch`, `batches.meta`) or CIFAR-100
                   (`train`, `test`, `meta`) python batches; DIR may also be their parent folder
`folder:DIR`       one sub-folder per class (ImageNet layout, any format Pillow reads); with
                   `DIR/train`, `DIR/val`, `DIR/validation` or `DIR/test` sub-folders, each is a split
`tfds:NAME`        a TensorFlow Datasets dataset (needs `tensorflow-datasets`; downloads if needed)
`keras:NAME`       `keras.datasets.NAME.load_data()` (downloads on first use; online users)
=================  ===========================================================================

The Python API also takes arrays: `(x, y)` for one split or `{"train": (x, y), "test": (x, y)}`.

A split is either arrays in memory (`ArraySplit`) or a list of files (`FileSplit`). The writer
asks a split for the *payload* of one shard (a picklable object sent to a worker process) and the
worker turns it into records with `iter_payload`, which needs NumPy and, for files, Pillow — never
TensorFlow, so worker processes start fast.
"""

import io
import os
import pickle

import numpy as np

__all__ = [
    "CorruptImageError",
    "Source",
    "ArraySplit",
    "FileSplit",
    "open_source",
    "iter_payload",
    "SCHEMES",
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
_KERAS_LABELS = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": FASHION_MNIST_LABELS,
    "cifar10": CIFAR10_LABELS,
}
_FOLDER_SPLITS = ("train", "val", "validation", "test")


class CorruptImageError(ValueError):
    """An image file of a `folder:` source cannot be decoded; the message names the file."""

    def __init__(self, filename, reason):
        self.filename = filename
        self.reason = reason
        super().__init__(
            f"Corrupt or unreadable image {filename!r}: {reason}. Fix or remove the file, or "
            f"convert with skip_corrupt=True (CLI: --skip-corrupt) to leave it out; skipped files "
            f"are listed in manifest.json."
        )

    def __reduce__(self):  # so the error crosses process boundaries intact
        return (type(self), (self.filename, self.reason))


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

    @property
    def num_records(self):
        return len(self.labels)

    def max_label(self):
        return int(self.labels.max()) if self.labels.size else -1


class ArraySplit(_Split):
    """One split held as arrays: `images` (N, H, W[, C]) uint8 (or a list of HWC arrays) and
    `labels` (N,) integers."""

    kind = "array"

    def __init__(self, images, labels, name="train"):
        self.labels = _check_labels(labels, f"labels of split {name!r}")
        if isinstance(images, (list, tuple)):
            self.images = list(images)
        else:
            images = np.asarray(images)
            if images.ndim not in (3, 4):
                raise ValueError(
                    f"images of split {name!r} must have shape (N, H, W) or (N, H, W, C); "
                    f"received shape {images.shape}."
                )
            self.images = images
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"split {name!r} has {len(self.images)} images but {len(self.labels)} labels."
            )
        self.name = name

    def payload(self, indices):
        """Picklable records `indices` (source order numbers) for a worker."""
        if isinstance(self.images, list):
            images = [self.images[i] for i in indices]
        else:
            images = self.images[indices]
        return ("array", self.name, np.asarray(indices), images, self.labels[indices])


class FileSplit(_Split):
    """One split held as image files and their labels (decoded by the worker)."""

    kind = "files"

    def __init__(self, paths, labels, name="train", root=None):
        self.paths = list(paths)
        self.labels = _check_labels(labels, f"labels of split {name!r}")
        if len(self.paths) != len(self.labels):
            raise ValueError(
                f"split {name!r} has {len(self.paths)} files but {len(self.labels)} labels."
            )
        self.name = name
        self.root = root

    def payload(self, indices):
        return (
            "files",
            self.name,
            np.asarray(indices),
            [self.paths[i] for i in indices],
            self.labels[indices],
            self.root,
        )


class Source:
    """A raw dataset: `splits` (`{name: ArraySplit | FileSplit}`), `label_names`, `description`."""

    def __init__(self, splits, label_names=None, description="arrays"):
        if not splits:
            raise ValueError(f"source {description!r} has no splits.")
        self.splits = dict(splits)
        self.label_names = list(label_names) if label_names is not None else None
        self.description = description

    def select(self, split):
        """Keep only the named split(s) (a name, comma-separated names or a list)."""
        if split is None:
            return self
        names = split.split(",") if isinstance(split, str) else list(split)
        names = [n.strip() for n in names if n.strip()]
        unknown = [n for n in names if n not in self.splits]
        if unknown or not names:
            raise ValueError(
                f"split {split!r} not in source {self.description!r}; it has splits "
                f"{sorted(self.splits)}."
            )
        return Source({n: self.splits[n] for n in names}, self.label_names, self.description)


def _read_bytes(path):
    # Local files with plain open(): workers stay TensorFlow-free; remote URLs through tf.io.gfile.
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _decode_file(path):
    from PIL import Image

    try:
        data = _read_bytes(path)
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()  # Pillow raises on truncated or corrupt data here
            rgb = pil.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "corrupt", reported by name
        raise CorruptImageError(path, f"{type(e).__name__}: {e}") from None


def iter_payload(payload):
    """Yield `(index, image uint8 HWC | None, label, filename, error | None)` for a shard payload.

    `error` is a `CorruptImageError` for an unreadable file (image is then None); array records
    never fail. Runs in worker processes; imports neither TensorFlow nor Keras.
    """
    kind = payload[0]
    if kind == "array":
        _, split, indices, images, labels = payload
        for i, index in enumerate(indices):
            img = np.asarray(images[i])
            yield (
                int(index),
                (img[:, :, None] if img.ndim == 2 else img),
                int(labels[i]),
                f"{split}/{int(index)}",
                None,
            )
    elif kind == "files":
        _, split, indices, paths, labels, root = payload
        for index, path, label in zip(indices, paths, labels):
            name = os.path.relpath(path, root) if root and "://" not in path else path
            try:
                yield int(index), _decode_file(path), int(label), name, None
            except CorruptImageError as e:
                yield int(index), None, int(label), name, e
    else:
        raise ValueError(f"unknown payload kind {kind!r}")


# --- scheme readers ------------------------------------------------------------------------


def _from_arrays(arrays, split, label_names):
    if isinstance(arrays, dict):
        splits = {k: ArraySplit(x, y, k) for k, (x, y) in arrays.items()}
    elif isinstance(arrays, (tuple, list)) and len(arrays) == 2:
        if split is not None and (not isinstance(split, str) or "," in split):
            raise ValueError(
                f"split must be one name for a single (x, y) pair; received {split!r}."
            )
        name = split or "train"
        return Source({name: ArraySplit(arrays[0], arrays[1], name)}, label_names, "arrays")
    else:
        raise ValueError(
            "source must be a 'scheme:PATH' string (schemes: "
            f"{', '.join(SCHEMES)}), an (x, y) pair or a dict of them; received {type(arrays).__name__}."
        )
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
    from keras_tricks.datasets import read_idx

    def find(stem):
        for candidate in (stem, stem + ".gz"):
            p = os.path.join(directory, candidate)
            if os.path.exists(p):
                return p
        return None

    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = find(f"{prefix}-images-idx3-ubyte")
        labels = find(f"{prefix}-labels-idx1-ubyte")
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
    label_names = FASHION_MNIST_LABELS if "fashion" in os.path.abspath(directory).lower() else None
    return Source(splits, label_names, f"idx:{directory}")


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


def _folder_source(directory):
    import tensorflow as tf

    gfile = tf.io.gfile
    if not gfile.isdir(directory):
        raise ValueError(f"folder source {directory!r} is not a directory.")

    def subdirs(d):
        return sorted(
            n.rstrip("/")
            for n in gfile.listdir(d)
            if not _is_hidden(n) and gfile.isdir(f"{d.rstrip('/')}/{n.rstrip('/')}")
        )

    top = subdirs(directory)
    split_dirs = [s for s in top if s in _FOLDER_SPLITS and subdirs(f"{directory.rstrip('/')}/{s}")]
    roots = (
        {s: f"{directory.rstrip('/')}/{s}" for s in split_dirs}
        if split_dirs
        else {"train": directory.rstrip("/")}
    )
    classes = sorted({c for root in roots.values() for c in subdirs(root)})
    if not classes:
        raise ValueError(f"folder source {directory!r} has no class sub-folders (one per class).")
    splits = {}
    for split, root in roots.items():
        paths, labels = [], []
        for label, cls in enumerate(classes):
            cdir = f"{root}/{cls}"
            if not gfile.isdir(cdir):
                continue
            for fname in sorted(gfile.listdir(cdir)):
                full = f"{cdir}/{fname.rstrip('/')}"
                # Hidden files (.DS_Store) are not data; every other file must be an image.
                if _is_hidden(fname) or gfile.isdir(full):
                    continue
                paths.append(full)
                labels.append(label)
        splits[split] = FileSplit(paths, np.asarray(labels, np.int64), split, root=root)
    return Source(splits, classes, f"folder:{directory}")


def _tfds_source(name, wanted=None):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"source 'tfds:{name}' needs TensorFlow Datasets: pip install tensorflow-datasets "
            "(or keras-tricks[tfds])."
        ) from e
    builder = tfds.builder(name)
    builder.download_and_prepare()
    label_names = None
    supervised = builder.info.supervised_keys
    if not supervised:
        raise ValueError(f"tfds:{name} has no supervised (image, label) keys; cannot convert it.")
    try:
        label_names = list(builder.info.features[supervised[1]].names)
    except (KeyError, AttributeError, TypeError):
        label_names = None  # a label feature without class names
    splits = {}
    # A builder lists its splits after preparation; fall back to the usual two when it does not
    # (tfds.testing.mock_data builders have no split metadata).
    for split in sorted(builder.info.splits.keys()) or ["test", "train"]:
        if wanted is not None and split not in wanted:
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
    return Source(splits, label_names, f"tfds:{name}")


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
    return Source(splits, _KERAS_LABELS.get(name), f"keras:{name}")


def open_source(source, split=None, label_names=None, cifar_label_mode="fine"):
    """Open a raw dataset named by `scheme:PATH` (see module docstring) or given as arrays.

    Args:
        source: "numpy:FILE.npz", "idx:DIR", "cifar:DIR", "folder:DIR", "tfds:NAME",
            "keras:NAME"; or `(x, y)`; or `{split: (x, y)}`; or a `Source`.
        split: keep only this split (name, comma-separated names or list); None keeps all.
        label_names: override the class names (list of str, index = label).
        cifar_label_mode: "fine" or "coarse" labels for CIFAR-100.

    Returns:
        A `Source`.

    Example:

    ```python
    from tfrecord_tools.sources import open_source
    src = open_source("idx:/usr/share/datasets/fashion-mnist", split="test")
    src.splits["test"].num_records  # 10000
    ```
    """
    if isinstance(source, Source):
        src = source
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        scheme, sep, rest = text.partition(":")
        if not sep or scheme not in SCHEMES or not rest:
            raise ValueError(
                f"source must be 'scheme:PATH' with scheme one of {', '.join(SCHEMES)} "
                f"(e.g. idx:/usr/share/datasets/fashion-mnist); received {text!r}."
            )
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
            src = _folder_source(rest)
        elif scheme == "tfds":
            src = _tfds_source(rest, wanted)
        else:
            src = _keras_source(rest)
    else:
        src = _from_arrays(source, split, label_names)
    if label_names is not None:
        src = Source(src.splits, label_names, src.description)
    src = src.select(split)
    if src.label_names is not None:
        for s in src.splits.values():
            if s.max_label() >= len(src.label_names):
                raise ValueError(
                    f"split {s.name!r} has label {s.max_label()} but only "
                    f"{len(src.label_names)} label names were given."
                )
    return src
