"""Sharded, parallel, atomic, resumable TFRecord writer.

How a conversion runs (`convert`):

1. A `ConversionPlan` checks the arguments and opens the source. Its records get a seeded
   permutation (`numpy.random.default_rng(seed)`), which is cut into `num_shards` contiguous
   pieces (`shard_indices`): shard `i` holds `order[i*n//k : (i+1)*n//k]`. The bytes of every
   shard depend only on the source, `seed` and the encoding options — not on `num_workers`.
   `tfrecord_tools.beam` plans with the same `ConversionPlan`, so its shards are the same.
2. `num_workers` spawned processes build whole shards in memory: decode (files), encode
   (`tfrecord_tools.example`), frame as TFRecord (length, masked CRC-32C, data, masked CRC-32C),
   optionally GZIP, and hash (sha256). Workers import NumPy, zlib and Pillow only, not TensorFlow,
   so they start in well under a second; they are started before the source is read (overlapping
   the two) and serve every split. Encoding is CPU-bound: for 28x28 PNGs zlib (level 6, the
   libpng default) is ~3/4 of a worker's time; level 1 would save ~20% of that for ~2.5% larger
   files (measured on Fashion-MNIST), not worth changing the bytes every earlier output holds.
3. The parent writes each shard through `tf.io.gfile` (local path or `gs://`) under a temporary
   name `<shard>.tmp-<pid>-<random>`, writes a small `<shard>.json` record (count, sha256,
   statistics, a fingerprint of the conversion), then renames the shard file into place. A file
   under its final name is therefore always complete. Only files are renamed, never directories
   (GCS emulators cannot rename directories; on `gs://` a rename is copy + delete and the object
   appears atomically).
4. When every shard is in place, `manifest.json` is written (atomically) and the per-shard
   records are removed.

Rerunning the same conversion resumes: a shard whose file matches its recorded sha256 (from
`manifest.json` or its `<shard>.json`) is kept, everything else is rebuilt. An output that already
holds a *different* conversion is refused with a ValueError unless `overwrite=True`.
"""

import contextlib
import gzip
import json
import logging
import os
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfrecord_tools import manifest as mf
from tfrecord_tools.example import check_image_format, check_quality, serialize_example
from tfrecord_tools.sources import open_source

__all__ = [
    "convert",
    "write_shards",
    "frame_record",
    "build_shard",
    "shard_indices",
    "shard_entry_from_result",
    "partial_conversion_error",
    "ConversionPlan",
    "COMPRESSIONS",
]

logger = logging.getLogger("tfrecord_tools")

COMPRESSIONS = (None, "GZIP")
_PROGRESS_EVERY = 256  # records between progress messages from a worker


def _masked_crc32c(data):
    import google_crc32c

    # TFRecord masks CRC-32C (Castagnoli) values: rotate right by 15 bits, add a constant
    # (tensorflow/core/lib/hash/crc32c.h, Mask()).
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(record):
    """Frame one serialised record as TFRecord: uint64 length, masked CRC of the length, the data,
    masked CRC of the data (all little-endian), as `tf.io.TFRecordWriter` writes it."""
    length = struct.pack("<Q", len(record))
    return b"".join(
        (
            length,
            struct.pack("<I", _masked_crc32c(length)),
            record,
            struct.pack("<I", _masked_crc32c(record)),
        )
    )


def build_shard(
    payload, image_format="png", quality=95, compression=None, skip_corrupt=False, progress=None
):
    """Encode one shard's records into the bytes of a TFRecord file (no file I/O).

    Args:
        payload: `ArraySplit.payload(...)` / `FileSplit.payload(...)` of the shard's records.
        image_format, quality: see `tfrecord_tools.example.encode_image`.
        compression: None or "GZIP".
        skip_corrupt: leave out unreadable image files (listed in the result) instead of raising
            `CorruptImageError`.
        progress: optional callable(number_of_new_records).

    Returns:
        dict with "data" (bytes as stored), "sha256", "num_bytes", "num_records",
        "label_counts", "pixel_stats", "skipped", "image_shapes".
    """
    from tfrecord_tools.sources import iter_payload

    parts = []
    labels = []
    skipped = []
    images = []
    pending = 0
    for _, image, label, filename, error in iter_payload(payload):
        if error is not None:
            if not skip_corrupt:
                raise error
            skipped.append({"filename": filename, "error": error.reason})
            continue
        parts.append(frame_record(serialize_example(image, label, image_format, quality, filename)))
        labels.append(label)
        images.append(image)
        pending += 1
        if progress is not None and pending >= _PROGRESS_EVERY:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    # Exact integer pixel sums for the dataset mean/std, one vectorised pass per image shape.
    by_shape = {}
    for image in images:
        by_shape.setdefault(image.shape, []).append(image)
    stats = mf.merge_pixel_stats([mf.pixel_stats([np.stack(group)]) for group in by_shape.values()])
    data = b"".join(parts)
    if compression == "GZIP":
        data = gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: same bytes every run
    return {
        "data": data,
        "sha256": mf.sha256_bytes(data),
        "num_bytes": len(data),
        "num_records": len(labels),
        "label_counts": np.bincount(np.asarray(labels, np.int64)).tolist() if labels else [],
        "pixel_stats": stats,
        "skipped": skipped,
        "image_shapes": sorted(tuple(int(d) for d in shape) for shape in by_shape)[:2],
    }


def _run_tasks(tasks, pool, options, on_done, progress):
    """Build `tasks` [(shard_index, payload)] and hand each result to `on_done(index, result)`."""
    if pool is None or len(tasks) == 1:
        for index, payload in tasks:
            on_done(index, build_shard(payload, progress=progress, **options))
        return
    pool.run(tasks, options, on_done, progress)


@contextlib.contextmanager
def _worker_pool(num_workers):
    if num_workers == 1:
        yield None
        return
    from tfrecord_tools._worker import WorkerPool

    with WorkerPool(num_workers) as pool:
        yield pool


# --- argument checking -----------------------------------------------------------------------


def _check_positive_int(value, argument, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{argument} must be a positive integer; received {value!r}.")
    return int(value)


def _normalise_compression(compression):
    if compression in (None, "", "none", "NONE", False):
        return None
    if isinstance(compression, str) and compression.upper() in ("GZIP", "GZ"):
        return "GZIP"
    if compression is True:
        return "GZIP"
    raise ValueError(f"compression must be None or 'GZIP'; received {compression!r}.")


def _default_name(description):
    scheme, _, rest = description.partition(":")
    if scheme in ("tfds", "keras"):
        base = rest
    elif scheme in ("idx", "cifar", "folder"):
        base = os.path.basename(os.path.normpath(rest))
    elif scheme == "numpy":
        base = os.path.splitext(os.path.basename(rest))[0]
    else:
        base = "dataset"
    base = re.sub(r"[^A-Za-z0-9_.]+", "_", base).strip("_")
    return base or "dataset"


def _default_num_shards(num_records):
    # ~10k records per shard keeps shards of small images at a few MB and gives enough files
    # for parallel interleaved reads; capped at tfds's 1024 shards for ImageNet-size splits.
    return max(1, min(1024, -(-num_records // 10_000)))


# --- planning (shared with tfrecord_tools.beam) ---------------------------------------------


def shard_indices(num_records, num_shards, seed=0, shuffle=True):
    """The source record numbers of every shard: a seeded permutation cut into contiguous pieces.

    With `order = numpy.random.default_rng(seed).permutation(n)` (or `arange(n)` without
    shuffle), shard `i` of `k` holds `order[i*n//k : (i+1)*n//k]`, so shard sizes differ by at
    most one and depend only on `n`, `k`, `seed` and `shuffle`.

    Example:

    ```python
    from tfrecord_tools.writer import shard_indices
    [s.tolist() for s in shard_indices(5, 2, shuffle=False)]  # [[0, 1], [2, 3, 4]]
    ```

    Args:
        num_records: records in the split.
        num_shards: number of shards.
        seed: seed of the permutation.
        shuffle: False keeps source order.

    Returns:
        A list of `num_shards` int arrays.
    """
    order = (
        np.random.default_rng(seed).permutation(num_records) if shuffle else np.arange(num_records)
    )
    bounds = [(i * num_records) // num_shards for i in range(num_shards + 1)]
    return [order[bounds[i] : bounds[i + 1]] for i in range(num_shards)]


def shard_entry_from_result(file, result):
    """The manifest entry (`manifest.shard_entry`) of shard `file` built by `build_shard`."""
    return mf.shard_entry(
        file,
        result["num_records"],
        result["sha256"],
        result["num_bytes"],
        result["label_counts"],
        result["pixel_stats"],
        result["skipped"],
        result["image_shapes"],
    )


def partial_conversion_error(output, where, record, fingerprint):
    """The ValueError for a `<shard>.json` sidecar (at `where`) left by a different conversion."""
    return ValueError(
        f"output {output!r} holds a partial conversion with different settings "
        f"({where}.json: {record.get('config')!r}; requested {fingerprint!r}). "
        "Choose another output, or pass overwrite=True (CLI: --overwrite)."
    )


class ConversionPlan:
    """A checked conversion before any file is written: settings, opened source, shard counts.

    `convert` and `tfrecord_tools.beam` both write from a plan, so they check the same arguments
    with the same messages and name, cut and encode the shards identically. It is made in two
    steps so that `convert` can start its workers in between: the constructor checks every
    argument that does not need the source (no I/O), `open` opens the source and checks the rest.

    Example:

    ```python
    import numpy as np
    from tfrecord_tools.writer import ConversionPlan
    x = np.zeros((10, 4, 4, 1), np.uint8); y = np.arange(10) % 2
    plan = ConversionPlan("/tmp/tiny", num_shards=3, name="tiny").open((x, y), split="train")
    plan.shard_files("train")[0]                       # 'tiny-train.tfrecord-00000-of-00003'
    [len(s) for s in plan.shard_indices("train")]      # [3, 3, 4]
    ```

    Args:
        output, num_shards, image_format, name, quality, compression, seed, shuffle, skip_corrupt:
            as in `convert`.

    Attributes:
        output: the output directory (local or `gs://`), as given.
        name: the dataset name (derived from the source by `open` when not given).
        options: `build_shard` keyword arguments.
        source: the opened `sources.Source` (after `open`).
        config: the manifest's configuration keys, `manifest.CONFIG_KEYS` (after `open`).
        shard_counts: `{split: number of shards}` in source split order (after `open`).
    """

    def __init__(
        self,
        output,
        num_shards=None,
        image_format="png",
        *,
        name=None,
        quality=95,
        compression=None,
        seed=0,
        shuffle=True,
        skip_corrupt=False,
    ):
        check_image_format(image_format)
        check_quality(quality)
        compression = _normalise_compression(compression)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; received {seed!r}.")
        if isinstance(num_shards, dict):
            num_shards = {
                k: _check_positive_int(v, f"num_shards[{k!r}]") for k, v in num_shards.items()
            }
        else:
            num_shards = _check_positive_int(num_shards, "num_shards", allow_none=True)
        if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
            raise ValueError(f"output must be a directory path or gs:// URL; received {output!r}.")
        if name is not None:
            mf.check_name(name, "name")
        self.output = os.fspath(output)
        self.name = name
        self.options = {
            "image_format": image_format,
            "quality": int(quality),
            "compression": compression,
            "skip_corrupt": bool(skip_corrupt),
        }
        self._num_shards = num_shards
        self._shuffle = bool(shuffle)
        self._seed = int(seed)
        self.source = None
        self.config = None
        self.shard_counts = None

    def open(self, source, split=None, label_names=None):
        """Open `source` (see `convert`), check split names and shard counts; returns self."""
        src = open_source(source, split=split, label_names=label_names)
        name = self.name or _default_name(src.description)
        mf.check_name(name, "name")
        for split_name in src.splits:
            mf.check_name(split_name, "split")
        num_shards = self._num_shards
        if isinstance(num_shards, dict):
            unknown = sorted(set(num_shards) - set(src.splits))
            if unknown:
                raise ValueError(
                    f"num_shards names splits {unknown} that the source does not have ({sorted(src.splits)})."
                )
        shard_counts = {}
        for split_name, data in src.splits.items():
            k = num_shards.get(split_name) if isinstance(num_shards, dict) else num_shards
            k = k or _default_num_shards(data.num_records)
            if k > max(data.num_records, 1):
                raise ValueError(
                    f"num_shards={k} is more than the {data.num_records} records of split {split_name!r}."
                )
            shard_counts[split_name] = k
        image_format = self.options["image_format"]
        self.name = name
        self.source = src
        self.shard_counts = shard_counts
        self.config = {
            "name": name,
            "source": src.description,
            "image_format": image_format,
            "quality": self.options["quality"] if image_format == "jpeg" else None,
            "compression": self.options["compression"],
            "shuffle": self._shuffle,
            "seed": self._seed,
        }
        return self

    def shard_files(self, split):
        """The shard file names of `split` (`manifest.shard_name`), in shard order."""
        k = self.shard_counts[split]
        return [mf.shard_name(self.name, split, i, k) for i in range(k)]

    def shard_indices(self, split):
        """The source record numbers of each shard of `split` (see `shard_indices`)."""
        n = self.source.splits[split].num_records
        return shard_indices(n, self.shard_counts[split], self._seed, self._shuffle)

    def fingerprint(self, split):
        """What a `<shard>.json` sidecar records of the conversion: resumable only if equal."""
        return dict(
            self.config,
            split=split,
            num_shards=self.shard_counts[split],
            num_source_records=self.source.splits[split].num_records,
        )

    def leftover_glob(self, split):
        """Glob of the temporary shard files of `split` an interrupted run may have left."""
        return mf.join(self.output, f"{self.name}-{split}.tfrecord-*.tmp-*")

    def conflicts(self, existing):
        """Differences between an `existing` manifest and this conversion ([] = it can resume)."""
        conflicts = mf.config_conflicts(existing, self.config)
        label_names = self.source.label_names
        if label_names is not None and existing.get("label_names") not in (None, label_names):
            conflicts.append(
                f"label_names: existing {existing['label_names']!r} != requested {label_names!r}"
            )
        for split_name, data in self.source.splits.items():
            old = existing.get("splits", {}).get(split_name)
            k = self.shard_counts[split_name]
            if old and (old["num_shards"], old["num_source_records"]) != (k, data.num_records):
                conflicts.append(
                    f"split {split_name!r}: existing {old['num_shards']} shards of "
                    f"{old['num_source_records']} records != requested {k} "
                    f"shards of {data.num_records} records"
                )
        return conflicts

    def outdated_files(self, existing, overwrite):
        """The files of an `existing` different conversion to delete before writing.

        Returns [] when `existing` (a manifest dict or None) agrees with this conversion, else
        its shard files followed by its `manifest.json`.

        Raises:
            ValueError: `existing` differs and `overwrite` is False.
        """
        if existing is None:
            return []
        conflicts = self.conflicts(existing)
        if not conflicts:
            return []
        if not overwrite:
            raise ValueError(
                f"output {self.output!r} already holds a different conversion (its manifest.json "
                f"differs: {'; '.join(conflicts)}). Choose another output, or pass overwrite=True "
                "(CLI: --overwrite) to replace it."
            )
        shards = [
            mf.join(self.output, s["file"])
            for sp in existing["splits"].values()
            for s in sp["shards"]
        ]
        return shards + [mf.manifest_path(self.output)]

    def manifest_label_names(self, existing):
        """Class names for the new manifest: the source's, else those of `existing` (or None)."""
        if self.source.label_names is not None:
            return self.source.label_names
        return (existing or {}).get("label_names")


# --- conversion ------------------------------------------------------------------------------


def _remove_quietly(gfile, path):
    try:
        gfile.remove(path)
    except Exception:  # noqa: BLE001 - already gone (another cleanup, eventual consistency)
        logger.debug("could not remove %s", path)


def _load_json(gfile, path):
    try:
        with gfile.GFile(path, "rb") as f:
            return json.loads(f.read())
    except Exception:  # noqa: BLE001 - a half-written or foreign file is just not resumable
        return None


def _shard_ok(gfile, path, entry):
    if entry is None or not gfile.exists(path):
        return False
    if gfile.stat(path).length != entry["num_bytes"]:
        return False
    return mf.sha256_file(path)[0] == entry["sha256"]


def convert(
    source,
    output,
    split=None,
    num_shards=None,
    num_workers=1,
    image_format="png",
    *,
    name=None,
    quality=95,
    compression=None,
    seed=0,
    shuffle=True,
    skip_corrupt=False,
    label_names=None,
    overwrite=False,
    progress=True,
):
    """Convert a raw image-classification dataset into sharded TFRecords plus `manifest.json`.

    See the module docstring for the sharding, atomicity and resume rules, and
    `tfrecord_tools.sources` for the source names.

    Example:

    ```python
    import tfrecord_tools
    tfrecord_tools.convert("idx:/usr/share/datasets/fashion-mnist", "/tmp/fmnist",
                           num_shards=8, num_workers=2, name="fashion_mnist")
    ds = tfrecord_tools.read_dataset("/tmp/fmnist", "train")  # (uint8 28x28x1, int64 label)
    ```

    Args:
        source: "numpy:FILE.npz", "idx:DIR", "cifar:DIR", "folder:DIR", "tfds:NAME",
            "keras:NAME", an `(x, y)` pair, `{split: (x, y)}` or a `sources.Source`.
        output: local directory or `gs://bucket/dir` (created if missing).
        split: convert only this split (name, "a,b" or list); None converts every split.
        num_shards: shards per split (int, or `{split: int}`); None picks ~10k records per shard.
        num_workers: processes encoding shards in parallel (1 = in this process).
        image_format: "png" (lossless, default), "jpeg" (with `quality`) or "raw".
        name: dataset name in shard file names; derived from the source when None.
        quality: JPEG quality 1..100.
        compression: None or "GZIP" (TFRecord compression).
        seed: seed of the record shuffle before sharding.
        shuffle: False keeps source order.
        skip_corrupt: leave out image files that cannot be decoded and list them in the manifest
            (default: raise `CorruptImageError` naming the file).
        label_names: class names overriding the source's.
        overwrite: replace an output that holds a different conversion.
        progress: show a tqdm progress bar (records/s).

    Returns:
        The manifest (dict), as written to `output/manifest.json`.

    Raises:
        ValueError: bad arguments, unknown source, or `output` already holds a different
            conversion (and `overwrite` is False).
        CorruptImageError: an unreadable image file (without `skip_corrupt`).
    """
    num_workers = _check_positive_int(num_workers, "num_workers")
    plan = ConversionPlan(
        output,
        num_shards,
        image_format,
        name=name,
        quality=quality,
        compression=compression,
        seed=seed,
        shuffle=shuffle,
        skip_corrupt=skip_corrupt,
    )

    # Workers start now, so their start-up overlaps reading the source; one pool serves all splits.
    with _worker_pool(num_workers) as pool:
        plan.open(source, split=split, label_names=label_names)
        import tensorflow as tf

        gfile = tf.io.gfile
        output = plan.output
        gfile.makedirs(output)
        for tmp in gfile.glob(mf.manifest_path(output) + ".tmp-*"):  # an interrupted manifest write
            _remove_quietly(gfile, tmp)
        existing = mf.read_manifest(output) if gfile.exists(mf.manifest_path(output)) else None
        outdated = plan.outdated_files(existing, overwrite)
        for path in outdated:
            _remove_quietly(gfile, path)
        if outdated:
            existing = None

        splits = dict(existing["splits"]) if existing else {}
        for split_name in plan.source.splits:
            splits[split_name] = _write_split(
                gfile,
                plan,
                split_name,
                pool,
                existing["splits"].get(split_name) if existing else None,
                overwrite,
                progress,
            )
        manifest = mf.manifest_from_config(plan.config, splits, plan.manifest_label_names(existing))
        mf.write_manifest(output, manifest)
        for split_name in plan.source.splits:
            for shard in splits[split_name]["shards"]:
                sidecar = mf.sidecar_path(output, shard["file"])
                if gfile.exists(sidecar):
                    _remove_quietly(gfile, sidecar)
        return manifest


def _write_split(gfile, plan, split_name, pool, old_split, overwrite, progress):
    data = plan.source.splits[split_name]
    name = plan.name
    output = plan.output
    num_shards = plan.shard_counts[split_name]
    files = plan.shard_files(split_name)
    shards = plan.shard_indices(split_name)
    fingerprint = plan.fingerprint(split_name)

    # Leftovers of an interrupted run: temporary files are never complete, remove them.
    for tmp in gfile.glob(plan.leftover_glob(split_name)):
        _remove_quietly(gfile, tmp)

    entries = [None] * num_shards
    if old_split is not None:
        for i, shard in enumerate(old_split["shards"]):
            if shard["file"] == files[i] and _shard_ok(gfile, mf.join(output, files[i]), shard):
                entries[i] = shard
    for i in range(num_shards):
        if entries[i] is not None:
            continue
        record = _load_json(gfile, mf.sidecar_path(output, files[i]))
        if record is None:
            continue
        if record.get("config") != fingerprint:
            if not overwrite:
                raise partial_conversion_error(output, files[i], record, fingerprint)
            continue
        if _shard_ok(gfile, mf.join(output, files[i]), record.get("shard")):
            entries[i] = record["shard"]
    kept = sum(e is not None for e in entries)
    if kept:
        logger.info(
            "%s-%s: %d of %d shards already complete and verified; keeping them.",
            name,
            split_name,
            kept,
            num_shards,
        )

    todo = [i for i in range(num_shards) if entries[i] is None]
    tasks = [(i, data.payload(shards[i])) for i in todo]
    total = sum(len(shards[i]) for i in todo)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        unit="rec",
        unit_scale=True,
        desc=f"{name}-{split_name}",
        disable=not progress or not total,
        dynamic_ncols=True,
    )
    written_bytes = [0]
    started = time.perf_counter()

    def commit(i, result):
        payload = result.pop("data")
        final = mf.join(output, files[i])
        tmp = mf.temp_path(final)
        with gfile.GFile(tmp, "wb") as f:
            f.write(payload)
        entry = shard_entry_from_result(files[i], result)
        mf.write_bytes_atomic(
            mf.sidecar_path(output, files[i]), mf.sidecar_bytes(fingerprint, entry)
        )
        gfile.rename(tmp, final, overwrite=True)
        entries[i] = entry
        written_bytes[0] += len(payload)

    # Writes go to a thread so encoding in the workers never waits on storage (gs:// latency).
    with ThreadPoolExecutor(max_workers=2) as io_pool:
        futures = []

        def on_done(i, result):
            futures.append(io_pool.submit(commit, i, result))
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{written_bytes[0] / elapsed / 1e6:.1f} MB/s", refresh=False)

        try:
            _run_tasks(tasks, pool, plan.options, on_done, bar.update)
        finally:
            for future in futures:
                future.result()
            bar.close()
    return mf.split_entry(entries, data.num_records)


def write_shards(
    images,
    labels,
    output,
    split="train",
    num_shards=None,
    num_workers=1,
    image_format="png",
    **kwargs,
):
    """Write in-memory arrays as one split of sharded TFRecords (the array form of `convert`).

    Example:

    ```python
    import numpy as np, tfrecord_tools
    x = np.zeros((100, 8, 8, 3), np.uint8); y = np.arange(100) % 10
    tfrecord_tools.write_shards(x, y, "/tmp/tiny", split="train", num_shards=4, name="tiny")
    ```

    Args:
        images: uint8 array (N, H, W[, C]) or list of HWC arrays.
        labels: integer array (N,).
        output: local directory or `gs://` URL; calling again with another `split` adds it.
        split, num_shards, num_workers, image_format: as in `convert`.
        **kwargs: any other `convert` keyword (name, quality, compression, seed, label_names, ...).

    Returns:
        The manifest dict.
    """
    return convert(
        (images, labels),
        output,
        split=split,
        num_shards=num_shards,
        num_workers=num_workers,
        image_format=image_format,
        **kwargs,
    )
