"""`manifest.json`: what a converted dataset contains, so it can be verified and read back.

Layout (JSON)::

    {
      "format": "tfrecord_tools/1",
      "name": "fashion_mnist", "source": "idx:/usr/share/datasets/fashion-mnist",
      "image_format": "png", "quality": null, "compression": null,   # or "GZIP"
      "shuffle": true, "seed": 0,
      "feature_spec": {"image/encoded": {"dtype": "string", "shape": []}, ...},
      "label_names": ["T-shirt/top", ...], "num_classes": 10,
      "image_shape": [28, 28, 1],          # null when images differ in size
      "mean": [72.94], "std": [90.02],     # per channel, 0..255 scale, of the training split
      "splits": {
        "train": {
          "num_records": 60000,            # records written
          "num_source_records": 60000,     # = num_records + len(skipped), always
          "skipped": [{"filename": ..., "error": ...}],
          "label_counts": [6000, ...], "mean": [...], "std": [...],
          "shards": [{"file": "fashion_mnist-train.tfrecord-00000-of-00008",
                      "num_records": 7500, "num_bytes": ..., "sha256": "...",
                      "label_counts": [...], "skipped": [...],
                      "pixel_stats": {"count": ..., "sum": [...], "sum_sq": [...]}}, ...]
        }
      }
    }

Pixel statistics are kept as exact integer sums per shard (count, sum, sum of squares per
channel), so shards written by different processes or Beam workers combine exactly, and the
mean and population standard deviation are computed once from the totals:
`mean = sum / count`, `std = sqrt(sum_sq / count - mean**2)`.

All file access goes through `tf.io.gfile`, so `output` may be a local directory or `gs://...`.

Beside it the writers put TensorFlow Datasets metadata derived from it alone (`dataset_info.json`,
`features.json`, `image.class.label.labels.txt`: `tfrecord_tools.tfds_info`), written with it by
`tfds_info.commit_manifest`, so `tfds.builder_from_directory(output)` reads the shards; the
manifest stays the source of truth (checksums, statistics, skipped records).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tfrecord_tools._checks import fail

__all__ = [
    "MANIFEST_NAME",
    "FORMAT_VERSION",
    "TRAIN_SPLIT",
    "check_name",
    "join",
    "shard_name",
    "shard_glob",
    "sha256_bytes",
    "sha256_file",
    "sha256_stream",
    "pixel_stats",
    "merge_pixel_stats",
    "mean_std",
    "merge_label_counts",
    "shard_entry",
    "split_entry",
    "build_manifest",
    "manifest_from_config",
    "manifest_bytes",
    "manifest_path",
    "read_manifest",
    "parse_manifest",
    "validate_manifest",
    "InvalidManifestError",
    "write_manifest",
    "write_bytes_atomic",
    "temp_path",
    "sidecar_path",
    "sidecar_bytes",
    "config_conflicts",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = "tfrecord_tools/1"
# The split whose statistics become the dataset's top-level mean/std (the one Normalize uses).
TRAIN_SPLIT = "train"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.]+$")
# Keys that must agree between an existing manifest and a new conversion into the same output.
CONFIG_KEYS = ("name", "source", "image_format", "quality", "compression", "shuffle", "seed")


def _gfile():
    import tensorflow as tf  # lazy: the encoders and stats helpers are usable without TF

    return tf.io.gfile


def check_name(value: Any, argument: str) -> str:
    """Raise ValueError unless `value` is usable in a shard file name (letters, digits, _ or .)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        # It becomes part of the shard file names.
        fail(argument, "a non-empty string of letters, digits, '_' or '.'", value)
    return value


def join(directory: str | os.PathLike, filename: str) -> str:
    """Join a local or `gs://` directory and a file name with a single `/`."""
    directory = os.fspath(directory)
    return directory + filename if directory.endswith("/") else directory + "/" + filename


def shard_name(name: str, split: str, index: int, num_shards: int) -> str:
    """tfds-style shard file name: `{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}`.

    Example:

    ```python
    from tfrecord_tools.manifest import shard_name
    shard_name("fashion_mnist", "train", 3, 16)  # 'fashion_mnist-train.tfrecord-00003-of-00016'
    ```
    """
    return f"{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


def shard_glob(name: str, split: str) -> str:
    """Glob pattern matching every shard file (any count) of a split, e.g. for cleanup."""
    return f"{name}-{split}.tfrecord-*-of-*"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, chunk_size: int = 1 << 22) -> tuple[str, int]:
    """Return `(hex sha256, size in bytes)` of a local or `gs://` file, read in chunks."""
    with _gfile().GFile(path, "rb") as f:
        return sha256_stream(f, chunk_size)


def sha256_stream(f: Any, chunk_size: int = 1 << 22) -> tuple[str, int]:
    """Return `(hex sha256, size in bytes)` of the rest of an open binary file, read in chunks.

    Any file object with `read(n)` works (`tf.io.gfile.GFile`, Beam's `FileSystems.open`, ...).
    """
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: f.read(chunk_size), b""):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def pixel_stats(images: Iterable[Any] = (), channels: int | None = None) -> dict:
    """Exact per-channel pixel sums of uint8 HWC images: `{"count", "sum", "sum_sq"}`.

    Args:
        images: iterable of uint8 arrays (H, W, C), or of stacks (N, H, W, C).
        channels: channel count; inferred from the first image when omitted.

    Example:

    ```python
    import numpy as np
    from tfrecord_tools.manifest import pixel_stats
    s = pixel_stats([np.full((2, 2, 1), 3, np.uint8)])
    s == {"count": 4, "sum": [12], "sum_sq": [36]}  # True
    ```
    """
    count = 0
    total: list[int] | None = None if channels is None else [0] * channels
    total_sq: list[int] = [] if channels is None else [0] * channels
    for image in images:
        img = np.asarray(image)
        img = img[:, :, None] if img.ndim == 2 else img
        c = img.shape[-1]
        if img.ndim not in (3, 4):
            allowed = "arrays of shape (H, W[, C]) or (N, H, W, C)"
            fail("images", allowed, np.shape(image), received_as="image.shape")
        if total is None:
            total, total_sq = [0] * c, [0] * c
        if c != len(total):
            raise ValueError(f"images have {len(total)} and {c} channels; they must agree.")
        flat = img.reshape(-1, c).astype(np.int64)
        count += flat.shape[0]
        sums = flat.sum(axis=0)
        sums_sq = np.einsum("ij,ij->j", flat, flat)  # exact in int64 below 2**47 pixels
        total = [t + int(v) for t, v in zip(total, sums)]
        total_sq = [t + int(v) for t, v in zip(total_sq, sums_sq)]
    return {"count": count, "sum": total or [], "sum_sq": total_sq or []}


def merge_pixel_stats(stats: Iterable[dict]) -> dict:
    """Add up `pixel_stats` dicts (e.g. of several shards)."""
    stats = [s for s in stats if s and s["count"]]
    if not stats:
        return {"count": 0, "sum": [], "sum_sq": []}
    channels = len(stats[0]["sum"])
    if any(len(s["sum"]) != channels for s in stats):
        raise ValueError("pixel statistics with different channel counts cannot be merged.")
    return {
        "count": sum(s["count"] for s in stats),
        "sum": [sum(s["sum"][i] for s in stats) for i in range(channels)],
        "sum_sq": [sum(s["sum_sq"][i] for s in stats) for i in range(channels)],
    }


def mean_std(stats: Mapping) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel `(mean, population std)` lists from `pixel_stats` sums (0..255 scale).

    The variance is computed in exact integer arithmetic: `(n*sum_sq - sum**2) / n**2`.
    """
    n = stats["count"]
    if not n:
        return None, None
    mean = [s / n for s in stats["sum"]]
    std = [math.sqrt((n * q - s * s) / (n * n)) for s, q in zip(stats["sum"], stats["sum_sq"])]
    return mean, std


def merge_label_counts(counts: Iterable[Sequence[int]]) -> list[int]:
    """Element-wise sum of per-shard label histograms of possibly different lengths."""
    length = max((len(c) for c in counts), default=0)
    out = [0] * length
    for c in counts:
        for i, v in enumerate(c):
            out[i] += int(v)
    return out


def shard_entry(
    file: str,
    num_records: int,
    sha256: str,
    num_bytes: int,
    label_counts: Sequence[int] = (),
    pixel_stats: dict | None = None,
    skipped: Sequence[dict] = (),
    image_shapes: Sequence[Sequence[int]] = (),
) -> dict:
    """One shard's manifest record.

    Args:
        file: the shard's base name (no directory).
        num_records: records in the shard.
        sha256, num_bytes: checksum and size of the shard file as stored.
        label_counts: histogram of labels in the shard (index = label).
        pixel_stats: `pixel_stats(...)` of the shard's images.
        skipped: `[{"filename": ..., "error": ...}]` source records left out (corrupt images).
        image_shapes: the distinct `[h, w, c]` shapes in the shard (used to record a uniform
            dataset shape; pass up to 2 — more than one means "variable").
    """
    return {
        "file": file,
        "num_records": int(num_records),
        "num_bytes": int(num_bytes),
        "sha256": sha256,
        "label_counts": [int(c) for c in label_counts],
        "pixel_stats": pixel_stats or {"count": 0, "sum": [], "sum_sq": []},
        "skipped": list(skipped),
        "image_shapes": [list(s) for s in image_shapes],
    }


def split_entry(shards: Sequence[dict], num_source_records: int) -> dict:
    """Combine shard entries (in shard order) into a split's manifest record.

    Raises ValueError when the counts do not reconcile:
    `num_source_records == sum(shard records) + len(skipped)`.
    """
    num_records = sum(s["num_records"] for s in shards)
    skipped = [item for s in shards for item in s["skipped"]]
    if num_records + len(skipped) != num_source_records:
        raise ValueError(
            f"counts do not reconcile: {num_records} records written + {len(skipped)} skipped "
            f"!= {num_source_records} records in the source."
        )
    stats = merge_pixel_stats([s["pixel_stats"] for s in shards])
    mean, std = mean_std(stats)
    return {
        "num_records": num_records,
        "num_source_records": int(num_source_records),
        "num_shards": len(shards),
        "skipped": skipped,
        "label_counts": merge_label_counts([s["label_counts"] for s in shards]),
        "pixel_stats": stats,
        "mean": mean,
        "std": std,
        "shards": list(shards),
    }


def _uniform_shape(splits):
    shapes = {
        tuple(shape) for sp in splits.values() for s in sp["shards"] for shape in s["image_shapes"]
    }
    return list(shapes.pop()) if len(shapes) == 1 else None


def build_manifest(
    name: str,
    source: str,
    splits: Mapping[str, dict],
    image_format: str = "png",
    quality: int | None = None,
    compression: str | None = None,
    label_names: Sequence[str] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    extra: Mapping | None = None,
) -> dict:
    """Assemble the full manifest dict from `split_entry` records.

    Args:
        name: dataset name used in shard file names.
        source: human-readable source description, e.g. "idx:/usr/share/datasets/fashion-mnist".
        splits: `{split_name: split_entry(...)}`.
        image_format, quality, compression: how records were encoded (quality only for JPEG;
            compression None or "GZIP").
        label_names: list of class names (index = label) or None.
        shuffle, seed: the record order (seeded permutation before sharding).
        extra: optional dict of additional JSON-friendly keys (e.g. {"writer": "beam"}).
    """
    from tfrecord_tools.example import FEATURE_SPEC_JSON

    train = splits.get(TRAIN_SPLIT) or (next(iter(splits.values())) if len(splits) == 1 else None)
    num_classes = max(
        [len(label_names or [])] + [len(sp["label_counts"]) for sp in splits.values()]
    )
    manifest = {
        "format": FORMAT_VERSION,
        "name": name,
        "source": source,
        "image_format": image_format,
        "quality": quality if image_format == "jpeg" else None,
        "compression": compression,
        "shuffle": bool(shuffle),
        "seed": int(seed),
        "feature_spec": FEATURE_SPEC_JSON,
        "label_names": list(label_names) if label_names is not None else None,
        "num_classes": num_classes,
        "image_shape": _uniform_shape(splits),
        "mean": train["mean"] if train else None,
        "std": train["std"] if train else None,
        "splits": dict(splits),
    }
    manifest.update(extra or {})
    return manifest


def manifest_from_config(
    config: Mapping, splits: Mapping[str, dict], label_names: Sequence[str] | None = None
) -> dict:
    """`build_manifest` from a conversion's `config` (the `CONFIG_KEYS` dict both writers keep)."""
    return build_manifest(
        config["name"],
        config["source"],
        splits,
        image_format=config["image_format"],
        quality=config["quality"],
        compression=config["compression"],
        label_names=label_names,
        shuffle=config["shuffle"],
        seed=config["seed"],
    )


def manifest_bytes(manifest: Mapping) -> bytes:
    """The bytes of `manifest.json` as both writers store them (indented JSON, trailing newline)."""
    return json.dumps(manifest, indent=1, sort_keys=False).encode("utf-8") + b"\n"


def manifest_path(path: str | os.PathLike) -> str:
    """`path` itself when it names a manifest file, else `path/manifest.json`."""
    path = os.fspath(path)
    return path if path.endswith(".json") else join(path, MANIFEST_NAME)


class InvalidManifestError(ValueError):
    """manifest.json exists but is damaged: not JSON, or missing / mistyped keys."""


def _fail(where, what):
    raise InvalidManifestError(f"invalid manifest {where!r}: {what}")


def _check_int(value, what, where):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(where, f"{what} must be a non-negative integer, found {value!r}")


def validate_manifest(manifest: Any, where: str = "manifest.json") -> dict:
    """Check the structure every reader and writer relies on; returns `manifest`.

    Checked: a JSON object of this `FORMAT_VERSION`; `name` (str), `image_format`, `compression`;
    `splits` an object of split objects, each with integer `num_records`, `num_source_records`
    and a `shards` list whose entries have `file` (a base name), integer `num_records` and
    `num_bytes`, a 64-digit hex `sha256`, and lists `label_counts` and `skipped`.

    Raises:
        InvalidManifestError (a ValueError): "invalid manifest '<where>': <what is wrong>".
    """
    from tfrecord_tools.example import IMAGE_FORMATS

    if not isinstance(manifest, dict):
        _fail(where, f"a JSON object is expected, found {type(manifest).__name__}")
    if manifest.get("format") != FORMAT_VERSION:
        _fail(where, f"is not a {FORMAT_VERSION} manifest (format={manifest.get('format')!r})")
    if not isinstance(manifest.get("name"), str):
        _fail(where, f"'name' must be a string, found {manifest.get('name')!r}")
    if manifest.get("image_format") not in IMAGE_FORMATS:
        _fail(
            where,
            f"'image_format' must be one of {IMAGE_FORMATS}, found "
            f"{manifest.get('image_format')!r}",
        )
    if manifest.get("compression") not in (None, "GZIP"):
        _fail(where, f"'compression' must be null or 'GZIP', found {manifest.get('compression')!r}")
    if "splits" not in manifest:
        _fail(where, "no 'splits' key")
    splits = manifest["splits"]
    if not isinstance(splits, dict):
        _fail(where, f"'splits' must be an object, found {type(splits).__name__}")
    for split, entry in splits.items():
        at = f"splits[{split!r}]"
        if not isinstance(entry, dict):
            _fail(where, f"{at} must be an object, found {type(entry).__name__}")
        if "shards" not in entry:
            _fail(where, f"{at} has no 'shards' key")
        if not isinstance(entry["shards"], list):
            _fail(where, f"{at}['shards'] must be a list, found {type(entry['shards']).__name__}")
        for key in ("num_records", "num_source_records"):
            if key not in entry:
                _fail(where, f"{at} has no {key!r} key")
            _check_int(entry[key], f"{at}[{key!r}]", where)
        for i, shard in enumerate(entry["shards"]):
            sat = f"{at}['shards'][{i}]"
            if not isinstance(shard, dict):
                _fail(where, f"{sat} must be an object, found {type(shard).__name__}")
            for key in ("file", "num_records", "num_bytes", "sha256", "label_counts", "skipped"):
                if key not in shard:
                    _fail(where, f"{sat} has no {key!r} key")
            file = shard["file"]
            if not isinstance(file, str) or not file or "/" in file or file in (".", ".."):
                _fail(where, f"{sat}['file'] must be a file name, found {file!r}")
            _check_int(shard["num_records"], f"{sat}['num_records']", where)
            _check_int(shard["num_bytes"], f"{sat}['num_bytes']", where)
            if not (
                isinstance(shard["sha256"], str) and re.fullmatch("[0-9a-f]{64}", shard["sha256"])
            ):
                _fail(where, f"{sat}['sha256'] must be 64 hex digits, found {shard['sha256']!r}")
            for key in ("label_counts", "skipped"):
                if not isinstance(shard[key], list):
                    _fail(where, f"{sat}[{key!r}] must be a list, found {shard[key]!r}")
    return manifest


def parse_manifest(raw: bytes | str, where: str = "manifest.json") -> dict:
    """Parse and validate the bytes of a manifest.json (`validate_manifest`)."""
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        _fail(where, f"not valid JSON ({e})")
    return validate_manifest(manifest, where)


def read_manifest(path: str | os.PathLike) -> dict:
    """Load and validate the manifest of a converted dataset directory (local or `gs://`).

    Raises:
        FileNotFoundError: there is no manifest.json.
        InvalidManifestError (a ValueError): the file is damaged or not a tfrecord_tools
            manifest: "invalid manifest '<path>': <what is wrong>".
    """
    gfile = _gfile()
    mpath = manifest_path(path)
    if not gfile.exists(mpath):
        raise FileNotFoundError(f"No {MANIFEST_NAME} at {mpath!r}: not a converted dataset.")
    with gfile.GFile(mpath, "rb") as f:
        raw = f.read()
    return parse_manifest(raw, mpath)


def write_bytes_atomic(path: str, data: bytes, run_id: str | None = None) -> None:
    """Write `data` to `path` under a temporary name (`temp_path`), then rename it into place.

    Renames a single file only (GCS emulators cannot rename directories; on `gs://` a rename is
    copy + delete, and the copy appears atomically under the final name). Local paths go
    through `os` (no TensorFlow import), `scheme://` paths through `tf.io.gfile`.
    """
    tmp = temp_path(path, run_id)
    if "://" not in path:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return
    gfile = _gfile()
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        try:
            gfile.remove(tmp)
        except Exception:  # noqa: BLE001 - never written, or already gone
            pass
        raise


def temp_path(path: str, run_id: str | None = None) -> str:
    """A unique temporary name next to `path`: `<path>.tmp-<run id>-<random>`.

    Such a file is never complete. `run_id` defaults to this process's id (see
    `tfrecord_tools.storage.temp_name`: a run removes only its own or provably stale ones).
    """
    return f"{path}.tmp-{run_id or os.getpid()}-{os.urandom(4).hex()}"


def sidecar_path(output: str, file: str) -> str:
    """The `<shard>.json` record written next to shard `file` until the manifest exists."""
    return join(output, file + ".json")


def sidecar_bytes(fingerprint: Mapping, entry: Mapping) -> bytes:
    """A sidecar's content: the conversion's `fingerprint` and the shard's `shard_entry`."""
    return json.dumps({"config": fingerprint, "shard": entry}).encode()


def write_manifest(path: str, manifest: Mapping, run_id: str | None = None) -> None:
    """Write `manifest` as `path/manifest.json` atomically (see `write_bytes_atomic`)."""
    write_bytes_atomic(manifest_path(path), manifest_bytes(manifest), run_id)


def config_conflicts(existing: Mapping, wanted: Mapping) -> list[str]:
    """List human-readable differences in `CONFIG_KEYS` between two manifests/configs."""
    return [
        f"{key}: existing {existing.get(key)!r} != requested {wanted.get(key)!r}"
        for key in CONFIG_KEYS
        if existing.get(key) != wanted.get(key)
    ]
