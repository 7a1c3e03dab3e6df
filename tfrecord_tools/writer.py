"""Sharded, parallel, atomic, resumable TFRecord writer.

How a conversion runs (`convert`):

1. The source's records get a seeded permutation (`numpy.random.default_rng(seed)`), which is cut
   into `num_shards` contiguous pieces: shard `i` holds `order[i*n//k : (i+1)*n//k]`. The bytes of
   every shard depend only on the source, `seed` and the encoding options — not on `num_workers`.
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
from tfrecord_tools.example import IMAGE_FORMATS, serialize_example
from tfrecord_tools.sources import open_source

__all__ = ["convert", "write_shards", "frame_record", "build_shard", "COMPRESSIONS"]

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
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}; received {image_format!r}.")
    if (
        isinstance(quality, bool)
        or not isinstance(quality, (int, np.integer))
        or not 1 <= quality <= 100
    ):
        raise ValueError(f"quality must be an integer in 1..100; received {quality!r}.")
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
    output = os.fspath(output)
    if name is not None:
        mf.check_name(name, "name")

    # Workers start now, so their start-up overlaps reading the source; one pool serves all splits.
    with _worker_pool(num_workers) as pool:
        src = open_source(source, split=split, label_names=label_names)
        name = name or _default_name(src.description)
        mf.check_name(name, "name")
        for split_name in src.splits:
            mf.check_name(split_name, "split")
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

        import tensorflow as tf

        gfile = tf.io.gfile
        config = {
            "name": name,
            "source": src.description,
            "image_format": image_format,
            "quality": int(quality) if image_format == "jpeg" else None,
            "compression": compression,
            "shuffle": bool(shuffle),
            "seed": int(seed),
        }
        gfile.makedirs(output)
        for tmp in gfile.glob(mf.manifest_path(output) + ".tmp-*"):  # an interrupted manifest write
            _remove_quietly(gfile, tmp)
        existing = mf.read_manifest(output) if gfile.exists(mf.manifest_path(output)) else None
        if existing is not None:
            conflicts = mf.config_conflicts(existing, config)
            if label_names is not None or src.label_names is not None:
                if existing.get("label_names") not in (None, src.label_names):
                    conflicts.append(
                        f"label_names: existing {existing['label_names']!r} != requested {src.label_names!r}"
                    )
            for split_name, data in src.splits.items():
                old = existing["splits"].get(split_name)
                if old and (old["num_shards"], old["num_source_records"]) != (
                    shard_counts[split_name],
                    data.num_records,
                ):
                    conflicts.append(
                        f"split {split_name!r}: existing {old['num_shards']} shards of "
                        f"{old['num_source_records']} records != requested {shard_counts[split_name]} "
                        f"shards of {data.num_records} records"
                    )
            if conflicts and not overwrite:
                raise ValueError(
                    f"output {output!r} already holds a different conversion (its manifest.json "
                    f"differs: {'; '.join(conflicts)}). Choose another output, or pass overwrite=True "
                    "(CLI: --overwrite) to replace it."
                )
            if conflicts:
                for sp in existing["splits"].values():
                    for shard in sp["shards"]:
                        _remove_quietly(gfile, mf.join(output, shard["file"]))
                _remove_quietly(gfile, mf.manifest_path(output))
                existing = None

        options = {
            "image_format": image_format,
            "quality": int(quality),
            "compression": compression,
            "skip_corrupt": bool(skip_corrupt),
        }
        splits = dict(existing["splits"]) if existing else {}
        for split_name, data in src.splits.items():
            splits[split_name] = _write_split(
                gfile,
                data,
                output,
                config,
                shard_counts[split_name],
                pool,
                options,
                existing["splits"].get(split_name) if existing else None,
                overwrite,
                progress,
            )
        manifest = mf.build_manifest(
            name,
            src.description,
            splits,
            image_format=image_format,
            quality=config["quality"],
            compression=compression,
            label_names=src.label_names
            if src.label_names is not None
            else (existing or {}).get("label_names"),
            shuffle=shuffle,
            seed=seed,
        )
        mf.write_manifest(output, manifest)
        for split_name in src.splits:
            for shard in splits[split_name]["shards"]:
                sidecar = mf.join(output, shard["file"] + ".json")
                if gfile.exists(sidecar):
                    _remove_quietly(gfile, sidecar)
        return manifest


def _write_split(
    gfile, data, output, config, num_shards, pool, options, old_split, overwrite, progress
):
    split_name = data.name
    name = config["name"]
    n = data.num_records
    order = (
        np.random.default_rng(config["seed"]).permutation(n) if config["shuffle"] else np.arange(n)
    )
    bounds = [(i * n) // num_shards for i in range(num_shards + 1)]
    files = [mf.shard_name(name, split_name, i, num_shards) for i in range(num_shards)]
    fingerprint = dict(config, split=split_name, num_shards=num_shards, num_source_records=n)

    # Leftovers of an interrupted run: temporary files are never complete, remove them.
    for tmp in gfile.glob(mf.join(output, f"{name}-{split_name}.tfrecord-*.tmp-*")):
        _remove_quietly(gfile, tmp)

    entries = [None] * num_shards
    if old_split is not None:
        for i, shard in enumerate(old_split["shards"]):
            if shard["file"] == files[i] and _shard_ok(gfile, mf.join(output, files[i]), shard):
                entries[i] = shard
    for i in range(num_shards):
        if entries[i] is not None:
            continue
        record = _load_json(gfile, mf.join(output, files[i] + ".json"))
        if record is None:
            continue
        if record.get("config") != fingerprint:
            if not overwrite:
                raise ValueError(
                    f"output {output!r} holds a partial conversion with different settings "
                    f"({files[i]}.json: {record.get('config')!r}; requested {fingerprint!r}). "
                    "Choose another output, or pass overwrite=True (CLI: --overwrite)."
                )
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
    tasks = [(i, data.payload(order[bounds[i] : bounds[i + 1]])) for i in todo]
    total = sum(bounds[i + 1] - bounds[i] for i in todo)

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
        tmp = f"{final}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        with gfile.GFile(tmp, "wb") as f:
            f.write(payload)
        entry = mf.shard_entry(
            files[i],
            result["num_records"],
            result["sha256"],
            result["num_bytes"],
            result["label_counts"],
            result["pixel_stats"],
            result["skipped"],
            result["image_shapes"],
        )
        record = json.dumps({"config": fingerprint, "shard": entry}).encode()
        mf.write_bytes_atomic(final + ".json", record)
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
            _run_tasks(tasks, pool, options, on_done, bar.update)
        finally:
            for future in futures:
                future.result()
            bar.close()
    return mf.split_entry(entries, n)


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
