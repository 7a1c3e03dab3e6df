"""Read converted shards back as a `tf.data.Dataset` of `(uint8 HWC image, int64 label)`.

The files are checked against `manifest.json` while they are read (`verify=`, on by default):

- **size**, before reading: every shard of the split is `stat`-ed (in parallel threads, so a
  `gs://` split of 1024 shards costs one round of requests) and must exist with the manifest's
  `num_bytes`; otherwise `ShardMismatchError` names every bad shard before any record is read,
  with its size and record count found (only the bad shards are read for that) and expected.
- **count**, as it is read: each shard is read as its own small pipeline inside the parallel
  interleave, which carries a running record count (`Dataset.scan`, once per block of 256
  records) and ends with one sentinel element on which the count must equal the manifest's
  `num_records`; reading more records than that fails at once. The check is graph ops only, so it
  runs in the interleave's threads (the interleave stays parallel) and works on any filesystem
  TensorFlow reads, `gs://` included. A failure stops the iteration with
  `tf.errors.InvalidArgumentError` whose message names the shard and the two counts.

The size check catches a shard truncated, emptied or appended to before `read_dataset` was
called; the count check also catches one changed afterwards (a long-lived dataset, repeated
epochs) or rewritten to the same size. `verify` checks every byte (sha256, CRC, labels); these
checks are what reading can afford on every pass.
"""

from __future__ import annotations

import numbers
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from tfrecord_tools import manifest as mf
from tfrecord_tools._checks import check_int, check_one_of, fail
from tfrecord_tools.example import (
    FEATURE_ENCODED,
    FEATURE_FILENAME,
    FEATURE_LABEL,
    decode_png_batch,
    decode_record,
    feature_spec,
)

if TYPE_CHECKING:  # for the annotations: `read_dataset` imports TensorFlow when first called
    import tensorflow as tf

__all__ = ["read_dataset", "shard_files", "check_shard_sizes", "ShardMismatchError", "VERIFY_MODES"]

_BLOCK = 256  # records read, parsed and decoded together
VERIFY_MODES = ("all", "size", "count", "none")


class ShardMismatchError(ValueError):
    """Shard files on disk differ from `manifest.json` (missing, or another size); the message
    names every such shard, and `problems` holds `(file, message)` pairs."""

    def __init__(self, path: str, split: str, problems: list):
        self.path = path
        self.split = split
        self.problems = list(problems)
        lines = "\n".join(f"  {file}: {message}" for file, message in self.problems)
        super().__init__(
            f"{len(self.problems)} shard(s) of split {split!r} in {path!r} do not match "
            f"manifest.json:\n{lines}\nThey were truncated, emptied, appended to, replaced or "
            f"deleted after the conversion. Run `tfrecord-tools verify {path}` to check every "
            "shard, convert again to rebuild them, or pass verify=False to read the files as "
            "they are."
        )

    def __reduce__(self):
        return (type(self), (self.path, self.split, self.problems))


def shard_files(path: str, split: str, manifest: dict | None = None) -> list:
    """Full paths of the shards of `split`, in shard order, from the manifest."""
    manifest = manifest or mf.read_manifest(path)
    if split not in manifest["splits"]:
        fail("split", f"a split of {path!r}, one of {sorted(manifest['splits'])}", split)
    return [mf.join(path, s["file"]) for s in manifest["splits"][split]["shards"]]


def check_shard_sizes(path: str, split: str, manifest: dict | None = None) -> list:
    """`(file, message)` for every shard of `split` that is missing or not the manifest's size.

    One `tf.io.gfile.stat` per shard, up to 16 at a time (a `gs://` stat is one HTTP request).

    Example:

    ```python
    from tfrecord_tools.reader import check_shard_sizes
    check_shard_sizes("/tmp/fmnist", "train")  # [] when every shard has its recorded size
    ```
    """
    import tensorflow as tf

    manifest = manifest or mf.read_manifest(path)
    shards = manifest["splits"][split]["shards"]

    def check(shard):
        full = mf.join(path, shard["file"])
        try:
            size = tf.io.gfile.stat(full).length
        except tf.errors.NotFoundError:
            return shard["file"], "missing"
        if size != shard["num_bytes"]:
            return shard["file"], f"{size} bytes, manifest.json says {shard['num_bytes']}"
        return None

    with ThreadPoolExecutor(max_workers=min(16, max(len(shards), 1))) as pool:
        return [p for p in pool.map(check, shards) if p is not None]


def _with_record_counts(path, split, manifest, problems):
    """`problems` with the record count found and expected added for shards of the wrong size.

    Only the shards already known to be bad are read (one pass each, a `reduce` over the file),
    so the error can say how many records the reader would have got instead of the manifest's.
    """
    import tensorflow as tf

    compression = manifest.get("compression") or ""
    expected = {s["file"]: s["num_records"] for s in manifest["splits"][split]["shards"]}
    out = []
    for file, message in problems:
        if message != "missing":
            try:
                found = tf.data.TFRecordDataset(mf.join(path, file), compression).reduce(
                    tf.constant(0, tf.int64), lambda n, _: n + 1
                )
                message += f"; {int(found)} records, manifest.json says {expected[file]}"
            except tf.errors.OpError as e:
                # TF prefixes "{{function_node ...}}" and suffixes " [Op:...]": keep the cause.
                reason = re.sub(r"\{\{.*?\}\}\s*", "", e.message.strip().splitlines()[0])
                reason = reason.split(" [Op:")[0]
                message += f"; unreadable as TFRecord ({reason}), manifest.json says "
                message += f"{expected[file]} records"
        out.append((file, message))
    return out


def _check_verify(verify):
    if verify is True:
        return "all"
    if verify is False or verify is None:
        return "none"
    return check_one_of("verify", verify, VERIFY_MODES + (True, False))


def _counted_shard(filename, expected, compression):
    """One shard's records in blocks of `_BLOCK`, failing unless it holds `expected` records."""
    import tensorflow as tf

    blocks = tf.data.TFRecordDataset(
        filename, compression_type=compression, buffer_size=1 << 20
    ).batch(_BLOCK)
    # A sentinel (an empty block flagged `last`) ends the shard, so the final count is checked
    # inside the pipeline; the scan runs once per block, not per record.
    end = tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), True))
    blocks = blocks.map(lambda b: (b, False)).concatenate(end)

    def step(count, element):
        block, last = element
        count += tf.size(block, out_type=tf.int64)
        ok = tf.where(last, tf.equal(count, expected), count <= expected)
        found, wanted = tf.strings.as_string(count), tf.strings.as_string(expected)
        message = tf.where(
            last,
            tf.strings.join(
                ["shard ", filename, " holds ", found, " records, manifest.json says ", wanted]
            ),
            tf.strings.join(
                [
                    "shard ",
                    filename,
                    " holds more records than manifest.json says: at least ",
                    found,
                    ", expected ",
                    wanted,
                ]
            ),  # fmt: skip
        )
        hint = (
            " (it changed after the conversion; run `tfrecord-tools verify`, convert again, "
            "or read with verify=False)"
        )
        check = tf.debugging.Assert(ok, [message + hint], name="shard_record_count")
        with tf.control_dependencies([check]):
            count = tf.identity(count)
        return count, (block, last)

    return (
        blocks.scan(tf.constant(0, tf.int64), step)
        .filter(lambda block, last: tf.logical_not(last))
        .map(lambda block, last: block)
    )


def read_dataset(
    path: str,
    split: str = "train",
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
    deterministic: bool | None = None,
    num_parallel_reads: int | None = None,
    decode: bool = True,
    with_filename: bool = False,
    batch_size: int | None = None,
    drop_remainder: bool = False,
    options: tf.data.Options | None = None,
    verify: str | bool = "all",
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(image, label)` from shards written by `convert` (local or gs://).

    Every shard is checked against `manifest.json` (see the module docstring): its size before
    reading (`ShardMismatchError` naming every bad shard) and its record count as it is read
    (`tf.errors.InvalidArgumentError` naming the shard, the count found and the count expected).

    Shards are read in parallel and interleaved (`num_parallel_reads`, AUTOTUNE by default),
    records are parsed and decoded in parallel, and the dataset's auto-shard policy is FILE, so
    under a `tf.distribute` strategy each worker reads whole, different shard files.

    Records are parsed and decoded a batch at a time (`tf.io.parse_example`; one `decode_raw`
    for raw images; for PNG one vectorised zlib inflate when the images have the layout our
    writer gives small images (`example.decode_png_batch`), else `decode_png` per image;
    `tf.map_fn` of `decode_jpeg`) because per-record `tf.data` steps cost more than decoding a
    28x28 image. Pass `batch_size` to receive those batches directly (fastest); without it the
    batches are split back into single examples.

    Example:

    ```python
    import tensorflow as tf
    from tfrecord_tools import read_dataset
    ds = read_dataset("/tmp/fmnist", "train", deterministic=True)
    ds = ds.shuffle(10_000).batch(512).prefetch(tf.data.AUTOTUNE)
    ```

    Args:
        path: the converted dataset's directory (holding manifest.json), local or `gs://`.
        split: which split to read.
        shuffle_files: shuffle the shard order (each epoch, seeded with `seed`).
        seed: seed for `shuffle_files`.
        deterministic: True gives the same element order every run (shard order, records in
            file order, taken in blocks of 256 consecutive records from `num_parallel_reads`
            shards in turn); False lets parallel reads and decodes yield out of order for
            speed; None follows `tf.data.Options.deterministic` (True by default).
        num_parallel_reads: shards read at once; None means `tf.data.AUTOTUNE`.
        decode: False yields `(encoded bytes, label)` without decoding the image.
        with_filename: also yield `image/filename` as a third element (the source file, or
            `<split>/<index>` for array sources) to trace a record back to its origin.
        batch_size: yield batches `(uint8 [B, H, W, C], int64 [B])` of this size instead of
            single examples; needs images of one size (manifest `image_shape`).
        drop_remainder: with `batch_size`, drop the last smaller batch.
        options: extra `tf.data.Options` merged into the dataset's.
        verify: what is checked against the manifest: "all" (default, also `True`) = "size"
            (every shard exists with its recorded size, checked here, before reading) and
            "count" (every shard yields its recorded number of records, checked as it is
            read); `False` (or "none") checks nothing, for users who changed the files on
            purpose. Neither check reads a byte twice; `tfrecord_tools.verify` checks contents.

    Returns:
        `tf.data.Dataset` of `(uint8 [H, W, C] image, int64 label)` (plus the filename with
        `with_filename`).

    Raises:
        ShardMismatchError: (verify "all" or "size") a shard is missing or not the size the
            manifest records.
        ValueError: an unknown split or a bad argument.
    """
    import tensorflow as tf

    # None and tf.data.AUTOTUNE (-1) both leave the parallelism to tf.data.
    autotune = num_parallel_reads is None or (
        isinstance(num_parallel_reads, numbers.Integral)
        and not isinstance(num_parallel_reads, bool)
        and num_parallel_reads == tf.data.AUTOTUNE
    )
    if autotune:
        num_parallel_reads = tf.data.AUTOTUNE
    else:
        num_parallel_reads = check_int("num_parallel_reads", num_parallel_reads, allow_none=True)
    verify = _check_verify(verify)
    path = str(path)
    manifest = mf.read_manifest(path)
    files = shard_files(path, split, manifest)
    if verify in ("all", "size"):
        problems = check_shard_sizes(path, split, manifest)
        if problems:
            raise ShardMismatchError(
                path, split, _with_record_counts(path, split, manifest, problems)
            )
    counts = [int(s["num_records"]) for s in manifest["splits"][split]["shards"]]
    compression = manifest.get("compression") or ""
    image_format = manifest["image_format"]
    shape = manifest.get("image_shape")
    channels = shape[2] if shape else None

    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(counts, tf.int64)))
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    # Each shard is read in blocks of records (`.batch` inside the interleave), so the per-record
    # tf.data steps happen once, in the reader, and every later step handles a block.
    def shard_blocks(filename, expected):
        if verify in ("all", "count"):
            return _counted_shard(filename, expected, compression)
        return tf.data.TFRecordDataset(
            filename, compression_type=compression, buffer_size=1 << 20
        ).batch(_BLOCK)

    ds = ds.interleave(
        shard_blocks,
        cycle_length=num_parallel_reads,
        num_parallel_calls=num_parallel_reads,
        deterministic=deterministic,
    )
    # Parse only what is returned: every extra feature costs parse_example time per record.
    wanted = [FEATURE_ENCODED, FEATURE_LABEL] + ([FEATURE_FILENAME] if with_filename else [])
    spec = feature_spec()
    if shape is not None or not decode:
        spec = {key: spec[key] for key in wanted}
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, allow_none=True)
        if shape is None and decode:
            raise ValueError(
                f"batch_size={batch_size} needs images of one size, but the images of {path!r} "
                "differ in size (manifest image_shape is null); read single examples and resize "
                "them before batching."
            )

    def batch_to_tuple(serialized):
        features = tf.io.parse_example(serialized, spec)
        encoded = features[FEATURE_ENCODED]
        if not decode:
            images = encoded
        elif image_format == "raw":
            images = tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [-1, *shape])
        elif image_format == "png":
            images = decode_png_batch(encoded, shape)
        else:
            images = tf.map_fn(
                lambda e: decode_record(
                    {FEATURE_ENCODED: e, FEATURE_LABEL: e}, image_format, channels
                )[0],
                encoded,
                fn_output_signature=tf.TensorSpec(shape, tf.uint8),
            )
        out = (images, features[FEATURE_LABEL])
        return (*out, features[FEATURE_FILENAME]) if with_filename else out

    def example_to_tuple(features):
        image, label = decode_record(features, image_format, channels)
        return (image, label, features[FEATURE_FILENAME]) if with_filename else (image, label)

    if shape is not None or not decode:
        ds = ds.map(
            batch_to_tuple, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
        if batch_size is None:
            ds = ds.unbatch()
        else:  # blocks end at shard ends; rebatch slices and joins them into batch_size
            ds = ds.rebatch(batch_size, drop_remainder=bool(drop_remainder))
    else:  # images of different sizes: parse in batches, decode one by one
        ds = ds.map(
            lambda s: tf.io.parse_example(s, spec),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        ).unbatch()
        ds = ds.map(
            example_to_tuple, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    if deterministic is not None:
        opts.deterministic = bool(deterministic)
    if options is not None:
        opts = opts.merge(options)
    return ds.with_options(opts)
