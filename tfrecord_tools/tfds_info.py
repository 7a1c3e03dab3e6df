"""TensorFlow Datasets metadata beside the shards, so that tfds reads a conversion as it is.

Every conversion whose shards tfds can read (uncompressed TFRecords: tfds opens TFRecord files
without a compression option) also gets, in the output directory::

    dataset_info.json             name, version "1.0.0", file format "tfrecord", per split the
                                  shard lengths and bytes, supervised keys
                                  ("image/encoded", "image/class/label")
    features.json                 the feature spec of our records, one tfds feature per key:
                                  Image (PNG/JPEG) or Tensor (raw) for `image/encoded`,
                                  ClassLabel for `image/class/label`, Scalar int64 for
                                  height/width/channels, Text for format/filename
    image.class.label.labels.txt  the class names, one a line (when the manifest has usable ones)

so `tfds.builder_from_directory(OUTPUT).as_dataset(split="train")` yields our records, decoded
by tfds, with no extra step; this works for `gs://` outputs too (tfds reads through
`tf.io.gfile`). Checked against tensorflow-datasets 4.9.10:

- Shard names: tfds's default `filepath_template`, `{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`
  with 5-digit shard numbers (`tensorflow_datasets/core/naming.py`), is exactly our
  `{name}-{split}.tfrecord-00003-of-00016`; the template is also written per split.
- Feature keys: a tfds `FeaturesDict` names each `tf.train.Example` key after its feature key,
  so a flat `FeaturesDict` whose keys are our key names (`"image/encoded"`, ...) decodes our
  records unchanged. Examples therefore come as `{"image/encoded": uint8 HxWxC, ...,
  "image/class/label": int64}`, and `as_supervised=True` gives `(image, label)`.
- Class names: tfds keeps a `ClassLabel`'s names out of features.json, in
  `<feature name with "/" as ".">.labels.txt` (`features/class_label_feature.py`,
  `features/feature.py:convert_feature_name_to_filename`). Names that file cannot hold exactly
  (empty, with a line break or surrounding spaces, duplicated) are left out: tfds then has the
  class count only, and manifest.json keeps the names.
- Shapes: a uniform `image_shape` becomes the feature's static shape; images of varying size get
  `(None, None, channels)` (tfds's Image needs the channel count to decode; where even that
  varies, or for raw bytes of varying size, `image/encoded` is described as the stored bytes).
- Pixels: PNG and raw records decode to exactly the stored pixels. tfds decodes JPEG with
  `tf.image.decode_image`'s default DCT method, `read_dataset` with "INTEGER_ACCURATE", so the
  two may differ by a few levels per pixel on the same JPEG bytes.

manifest.json stays the source of truth: these files are derived from it alone (`tfds_files`),
rewritten whenever it is (`write_metadata` / `commit_manifest`, for the final and the interim
manifests of the local writer and the Beam pipeline), each file atomically, all of them before
manifest.json and after the shards they list, so tfds never sees a missing shard and a manifest
on disk always has its metadata beside it; `remove_manifest` deletes them first. The
resume rule treats them as the manifest's (their temporaries are cleaned up like its own), and
`verify` checks only the shards the manifest lists. GZIP outputs get none of these files
(existing ones are removed): tfds could not read the shards.
An output converted before these files existed gets them from the same `convert` run again:
every shard is kept (its sha256 matches), only the metadata and manifest.json are written.

This module is stdlib-only: writing the metadata never needs tensorflow-datasets.

Example:

```python
import tensorflow_datasets as tfds
import tfrecord_tools
tfrecord_tools.convert("idx:/usr/share/datasets/fashion-mnist", "/tmp/fmnist",
                       num_shards=8, name="fashion_mnist")
builder = tfds.builder_from_directory("/tmp/fmnist")
builder.info.splits["train"].num_examples                     # 60000
builder.info.features["image/class/label"].names[9]           # 'Ankle boot'
ds = builder.as_dataset(split="test", as_supervised=True)      # (uint8 28x28x1, int64 label)
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tfrecord_tools import manifest as mf
from tfrecord_tools.storage import join

__all__ = [
    "DATASET_INFO_NAME",
    "FEATURES_NAME",
    "LABELS_NAME",
    "METADATA_NAMES",
    "TFDS_VERSION",
    "FILEPATH_TEMPLATE",
    "tfds_readable",
    "features_json",
    "dataset_info_json",
    "tfds_files",
    "write_metadata",
    "commit_manifest",
    "remove_manifest",
]

DATASET_INFO_NAME = "dataset_info.json"
FEATURES_NAME = "features.json"
# tfds: `<feature name, "/" -> ".">.labels.txt` for a top-level ClassLabel.
LABELS_NAME = "image.class.label.labels.txt"
METADATA_NAMES = (DATASET_INFO_NAME, FEATURES_NAME, LABELS_NAME)
# One version for every conversion: a tfds version names a dataset's generation code, which a
# conversion does not have; `builder_from_directory` needs one.
TFDS_VERSION = "1.0.0"
FILEPATH_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"

_FEATURES = "tensorflow_datasets.core.features."
_SCALAR_INT64 = {
    "pythonClassName": _FEATURES + "scalar.Scalar",
    "tensor": {"dtype": "int64", "encoding": "none", "shape": {}},
}
_TEXT = {"pythonClassName": _FEATURES + "text_feature.Text", "text": {}}


def tfds_readable(manifest: Mapping) -> bool:
    """True when tfds can read the shards (uncompressed TFRecords), so metadata is written."""
    return manifest.get("compression") is None


def _shape(dims) -> dict:
    # tfds's proto JSON: int64 values as strings, unknown dimensions as "-1".
    return {"dimensions": [str(-1 if d is None else int(d)) for d in dims]}


def _label_names(manifest: Mapping) -> list[str] | None:
    """The class names when a tfds labels file can hold them exactly, else None."""
    names = manifest.get("label_names")
    if not names or len(set(names)) != len(names):
        return None
    if any(not n or n != n.strip() or "\n" in n or "\r" in n for n in names):
        return None
    return list(names)


def _channels(manifest: Mapping) -> int | None:
    """The channel count of every image, when it is one number (else None)."""
    shape = manifest.get("image_shape")
    if shape:
        return int(shape[-1])
    # Pixel statistics only merge over images of one channel count (manifest.pixel_stats), so a
    # split's per-channel sums give its images' channels.
    counts = {
        len(entry["pixel_stats"]["sum"])
        for entry in manifest["splits"].values()
        if entry.get("num_records") and entry.get("pixel_stats")
    }
    return counts.pop() if len(counts) == 1 and 0 not in counts else None


_BYTES = {
    "pythonClassName": _FEATURES + "tensor_feature.Tensor",
    "tensor": {"dtype": "string", "encoding": "none", "shape": {}},
}


def _image_feature(manifest: Mapping) -> dict:
    shape = manifest.get("image_shape")
    image_format = manifest["image_format"]
    channels = _channels(manifest)
    if channels is None:
        # tfds's Image must know the channels to decode: the stored bytes, as they are.
        return _BYTES
    if image_format == "raw":
        if shape is None:  # raw bytes of varying shape: the bytes, to reshape by height/width
            return _BYTES
        # tfds decodes Encoding.BYTES with tf.io.decode_raw + reshape: our row-major HWC bytes.
        return {
            "pythonClassName": _FEATURES + "tensor_feature.Tensor",
            "tensor": {"dtype": "uint8", "encoding": "bytes", "shape": _shape(shape)},
        }
    return {
        "pythonClassName": _FEATURES + "image_feature.Image",
        "image": {
            "dtype": "uint8",
            "encodingFormat": image_format,
            "shape": _shape(shape or (None, None, channels)),
        },
    }


def features_json(manifest: Mapping) -> dict:
    """features.json for `manifest`: a flat tfds `FeaturesDict` over our Example keys."""
    from tfrecord_tools.example import (
        FEATURE_CHANNELS,
        FEATURE_ENCODED,
        FEATURE_FILENAME,
        FEATURE_FORMAT,
        FEATURE_HEIGHT,
        FEATURE_LABEL,
        FEATURE_WIDTH,
    )

    features = {
        FEATURE_CHANNELS: _SCALAR_INT64,
        FEATURE_LABEL: {
            "pythonClassName": _FEATURES + "class_label_feature.ClassLabel",
            "classLabel": {"numClasses": str(int(manifest.get("num_classes") or 0))},
        },
        FEATURE_ENCODED: _image_feature(manifest),
        FEATURE_FILENAME: _TEXT,
        FEATURE_FORMAT: _TEXT,
        FEATURE_HEIGHT: _SCALAR_INT64,
        FEATURE_WIDTH: _SCALAR_INT64,
    }
    return {
        "featuresDict": {"features": dict(sorted(features.items()))},
        "pythonClassName": _FEATURES + "features_dict.FeaturesDict",
    }


def dataset_info_json(manifest: Mapping) -> dict:
    """dataset_info.json for `manifest` (the JSON form of tfds's `DatasetInfo` proto)."""
    from tfrecord_tools.example import FEATURE_ENCODED, FEATURE_LABEL

    splits = []
    for split, entry in manifest["splits"].items():
        shards = entry["shards"]
        splits.append(
            {
                "filepathTemplate": FILEPATH_TEMPLATE,
                "name": split,
                "numBytes": str(sum(int(s["num_bytes"]) for s in shards)),
                "shardLengths": [str(int(s["num_records"])) for s in shards],
            }
        )
    return {
        "description": (
            f"Converted by tfrecord_tools from {manifest.get('source')} "
            f"({manifest['image_format']} images); manifest.json holds the checksums."
        ),
        "fileFormat": "tfrecord",
        "name": manifest["name"],
        "splits": splits,
        "supervisedKeys": {
            "tuple": {"items": [{"featureKey": FEATURE_ENCODED}, {"featureKey": FEATURE_LABEL}]}
        },
        "version": TFDS_VERSION,
    }


def tfds_files(manifest: Mapping) -> dict[str, bytes]:
    """`{file name: bytes}` of the tfds metadata of `manifest` (empty when not `tfds_readable`).

    Example:

    ```python
    from tfrecord_tools.tfds_info import tfds_files
    manifest = {"name": "toy", "source": "arrays", "image_format": "png", "compression": None,
                "label_names": ["a", "b"], "num_classes": 2, "image_shape": [8, 8, 1],
                "splits": {"train": {"shards": [{"num_records": 3, "num_bytes": 120}]}}}
    sorted(tfds_files(manifest))
    # ['dataset_info.json', 'features.json', 'image.class.label.labels.txt']
    ```
    """
    if not tfds_readable(manifest):
        return {}
    files = {
        DATASET_INFO_NAME: _json_bytes(dataset_info_json(manifest)),
        FEATURES_NAME: _json_bytes(features_json(manifest)),
    }
    names = _label_names(manifest)
    if names is not None:
        files[LABELS_NAME] = "".join(n + "\n" for n in names).encode("utf-8")
    return files


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def write_metadata(store: Any, output: str, manifest: Mapping, run_id: str) -> None:
    """Write the tfds metadata of `manifest` into `output`, each file atomically; drop stale ones.

    Call it just before writing manifest.json (`commit_manifest` does both): every shard it
    lists is then already complete under its final name, so tfds never sees metadata naming a
    missing shard, and a manifest on disk always has its metadata beside it. An interruption
    between the two is finished by the next run, which rewrites both.

    Args:
        store: a `storage.Store` (`GfileStore` locally and on `gs://`, Beam's `BeamStore`).
        output: the conversion's directory.
        manifest: the manifest dict (as `manifest.build_manifest` returns it).
        run_id: this run's id (temporary names).
    """
    files = tfds_files(manifest)
    for name, data in files.items():
        store.write_atomic(join(output, name), data, run_id)
    stale = [join(output, n) for n in METADATA_NAMES if n not in files]
    store.delete([p for p in stale if store.exists(p)])


def commit_manifest(store: Any, output: str, manifest: Mapping, run_id: str) -> None:
    """Write `manifest` as output/manifest.json, its tfds metadata first (`write_metadata`)."""
    write_metadata(store, output, manifest, run_id)
    store.write_atomic(mf.manifest_path(output), mf.manifest_bytes(manifest), run_id)


def remove_manifest(store: Any, output: str) -> None:
    """Delete output/manifest.json and its tfds metadata (the metadata first)."""
    paths = [join(output, n) for n in METADATA_NAMES]
    store.delete([p for p in paths if store.exists(p)])
    store.delete([mf.manifest_path(output)])
