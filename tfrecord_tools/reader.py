"""Read converted shards back as a `tf.data.Dataset` of `(uint8 HWC image, int64 label)`."""

from tfrecord_tools import manifest as mf
from tfrecord_tools.example import (
    FEATURE_ENCODED,
    FEATURE_FILENAME,
    FEATURE_LABEL,
    decode_png_batch,
    decode_record,
    feature_spec,
)

__all__ = ["read_dataset", "shard_files"]

_BLOCK = 256  # records read, parsed and decoded together


def shard_files(path, split, manifest=None):
    """Full paths of the shards of `split`, in shard order, from the manifest."""
    manifest = manifest or mf.read_manifest(path)
    if split not in manifest["splits"]:
        raise ValueError(
            f"split {split!r} is not in {path!r}; it has splits {sorted(manifest['splits'])}."
        )
    return [mf.join(path, s["file"]) for s in manifest["splits"][split]["shards"]]


def read_dataset(
    path,
    split="train",
    *,
    shuffle_files=False,
    seed=None,
    deterministic=None,
    num_parallel_reads=None,
    decode=True,
    with_filename=False,
    batch_size=None,
    drop_remainder=False,
    options=None,
):
    """A `tf.data.Dataset` of `(image, label)` from shards written by `convert` (local or gs://).

    Shards are read in parallel and interleaved (`num_parallel_reads`, AUTOTUNE by default),
    records are parsed and decoded in parallel, and the dataset's auto-shard policy is FILE, so
    under a `tf.distribute` strategy each worker reads whole, different shard files.

    Records are parsed and decoded a batch at a time (`tf.io.parse_example`; one `decode_raw`
    for raw images; for PNG one vectorised zlib inflate when the images have the layout our
    writer gives small images (`example.decode_png_batch`), else `decode_png` per image; `tf.map_fn`
    of `decode_jpeg`) because per-record `tf.data` steps cost more than decoding a 28x28 image. Pass `batch_size` to receive those batches directly (fastest);
    without it the batches are split back into single examples.

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

    Returns:
        `tf.data.Dataset` of `(uint8 [H, W, C] image, int64 label)` (plus the filename with
        `with_filename`).
    """
    import tensorflow as tf

    if num_parallel_reads is None:
        num_parallel_reads = tf.data.AUTOTUNE
    elif (
        isinstance(num_parallel_reads, bool)
        or not isinstance(num_parallel_reads, int)
        or (num_parallel_reads < 1 and num_parallel_reads != tf.data.AUTOTUNE)
    ):
        raise ValueError(
            f"num_parallel_reads must be a positive integer or None (AUTOTUNE); "
            f"received {num_parallel_reads!r}."
        )
    manifest = mf.read_manifest(path)
    files = shard_files(path, split, manifest)
    compression = manifest.get("compression") or ""
    image_format = manifest["image_format"]
    shape = manifest.get("image_shape")
    channels = shape[2] if shape else None

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Each shard is read in blocks of records (`.batch` inside the interleave), so the per-record
    # tf.data steps happen once, in the reader, and every later step handles a block.
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(
            f, compression_type=compression, buffer_size=1 << 20
        ).batch(_BLOCK),
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer or None; received {batch_size!r}."
            )
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
