"""Check a converted dataset against its manifest: every shard present, same size and sha256,
same record count and label histogram, optionally every image decodable with the recorded shape.

The function is `tfrecord_tools.verify`; this module is named for the concept so that the
function no longer shadows its own module."""

import dataclasses

from tfrecord_tools import manifest as mf
from tfrecord_tools.example import (
    FEATURE_CHANNELS,
    FEATURE_HEIGHT,
    FEATURE_LABEL,
    FEATURE_WIDTH,
    decode_record,
    feature_spec,
)

__all__ = ["verify", "VerifyResult"]


@dataclasses.dataclass
class VerifyResult:
    """Outcome of `verify`: `ok`, the `problems` as `(file, message)` pairs, `bad_shards` (file
    names, no duplicates), `warnings` (not failures, e.g. leftover temporary files) and the number
    of `records` and `shards` checked."""

    path: str
    problems: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    records: int = 0
    shards: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self):
        return self.ok

    @property
    def bad_shards(self) -> list:
        seen = []
        for file, _ in self.problems:
            if file not in seen and file != mf.MANIFEST_NAME:
                seen.append(file)
        return seen

    def __str__(self):
        head = (
            f"OK: {self.path}: {self.shards} shards, {self.records} records verified."
            if self.ok
            else f"FAILED: {self.path}: {len(self.bad_shards)} bad shard(s) of {self.shards}."
        )
        lines = [head] + [f"  {file}: {message}" for file, message in self.problems]
        lines += [f"  warning: {file}: {message}" for file, message in self.warnings]
        return "\n".join(lines)


def _count_records(path, compression, num_classes, decode, image_format, progress=None):
    """Read a shard with TensorFlow (CRC-checked): `(count, label histogram)`; raises on damage.

    `progress(n)` is called after every batch of `n` records read."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(path, compression_type=compression or "")
    spec = feature_spec()
    ds = ds.batch(1024).map(lambda s: tf.io.parse_example(s, spec))
    if decode:

        def check(features):
            image, label = decode_record(features, image_format)
            expected = tf.cast(
                tf.stack(
                    [features[FEATURE_HEIGHT], features[FEATURE_WIDTH], features[FEATURE_CHANNELS]]
                ),
                tf.int32,
            )
            tf.debugging.assert_equal(
                tf.shape(image), expected, message="decoded image shape differs from its features"
            )
            return label

        ds = ds.unbatch().map(check, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    else:
        ds = ds.map(lambda f: f[FEATURE_LABEL])
    counts = [0] * max(num_classes, 0)
    total = 0
    for labels in ds:
        labels = labels.numpy()
        total += len(labels)
        if progress is not None:
            progress(len(labels))
        for label in labels.tolist():
            if label < 0:
                raise ValueError(f"negative label {label}")
            if label >= len(counts):
                counts.extend([0] * (label + 1 - len(counts)))
            counts[label] += 1
    return total, counts


def verify(
    path: str,
    decode_images: bool = False,
    splits: list | None = None,
    progress: bool = False,
) -> VerifyResult:
    """Verify the dataset at `path` (local or `gs://`) against its `manifest.json`.

    For every shard: it exists, its size and sha256 equal the manifest's, TensorFlow reads it
    end to end (every record's CRC-32C checks), and its record count and label histogram equal
    the manifest's; with `decode_images`, every image decodes to the height/width/channels stored
    in its record. Per split, the counts must reconcile: records written plus records skipped
    equals records in the source. Every failing shard is named.

    Example:

    ```python
    from tfrecord_tools import verify
    result = verify("/tmp/fmnist", decode_images=True)
    if not result.ok:
        print(result)          # one line per problem, naming the shard
        result.bad_shards      # ['fashion_mnist-train.tfrecord-00003-of-00008']
    ```

    Args:
        path: the converted dataset's directory.
        decode_images: also decode every image (slower).
        splits: only these splits (list of names); None checks all.
        progress: show a tqdm progress bar of the records checked (the CLI shows it unless
            `--quiet`), like `convert`.

    Returns:
        `VerifyResult` (truthy when everything checks).
    """
    path = str(path)
    result = VerifyResult(path)
    try:
        manifest = mf.read_manifest(path)
    except (FileNotFoundError, ValueError) as e:
        result.problems.append((mf.MANIFEST_NAME, str(e)))
        return result
    wanted = (
        manifest["splits"] if splits is None else {s: manifest["splits"].get(s) for s in splits}
    )
    compression = manifest.get("compression")
    num_classes = manifest.get("num_classes") or 0
    from tqdm.auto import tqdm

    total = sum(
        s.get("num_records", 0)
        for entry in wanted.values()
        if isinstance(entry, dict)
        for s in entry.get("shards", [])
    )
    bar = tqdm(
        total=total,
        unit="rec",
        unit_scale=True,
        desc="verify --decode" if decode_images else "verify",
        disable=not progress or not total,
        dynamic_ncols=True,
    )
    try:
        _verify_splits(result, path, manifest, wanted, compression, num_classes, decode_images, bar)
    finally:
        bar.close()
    return result


def _verify_splits(result, path, manifest, wanted, compression, num_classes, decode_images, bar):
    import tensorflow as tf

    gfile = tf.io.gfile
    for split, entry in wanted.items():
        if entry is None:
            result.problems.append((mf.MANIFEST_NAME, f"split {split!r} is not in the manifest"))
            continue
        shard_total = sum(s["num_records"] for s in entry["shards"])
        skipped = sum(len(s["skipped"]) for s in entry["shards"])
        if (
            shard_total != entry["num_records"]
            or shard_total + skipped != entry["num_source_records"]
        ):
            result.problems.append(
                (
                    mf.MANIFEST_NAME,
                    f"split {split!r}: counts do not reconcile: shards hold {shard_total}, "
                    f"manifest says {entry['num_records']} written, {skipped} skipped, "
                    f"{entry['num_source_records']} in the source",
                )
            )
        listed = set()
        for shard in entry["shards"]:
            file = shard["file"]
            listed.add(file)
            full = mf.join(path, file)
            result.shards += 1
            if not gfile.exists(full):
                result.problems.append((file, "missing"))
                continue
            size = gfile.stat(full).length
            if size != shard["num_bytes"]:
                result.problems.append(
                    (file, f"size {size} bytes, manifest says {shard['num_bytes']}")
                )
            digest, _ = mf.sha256_file(full)
            if digest != shard["sha256"]:
                result.problems.append((file, f"sha256 {digest} != manifest {shard['sha256']}"))
            try:
                count, labels = _count_records(
                    full,
                    compression,
                    num_classes,
                    decode_images,
                    manifest["image_format"],
                    bar.update,
                )
            except (tf.errors.OpError, ValueError) as e:
                message = getattr(e, "message", str(e)).strip().splitlines()[0]
                result.problems.append((file, f"unreadable: {type(e).__name__}: {message}"))
                continue
            result.records += count
            if count != shard["num_records"]:
                result.problems.append(
                    (file, f"{count} records, manifest says {shard['num_records']}")
                )
            expected = list(shard["label_counts"]) + [0] * (
                len(labels) - len(shard["label_counts"])
            )
            if labels + [0] * (len(expected) - len(labels)) != expected:
                result.problems.append((file, "label histogram differs from the manifest"))
        prefix = f"{manifest['name']}-{split}.tfrecord-"
        for found in gfile.glob(mf.join(path, prefix + "*")):
            base = found.rstrip("/").split("/")[-1]
            if base not in listed:
                result.warnings.append(
                    (base, "not listed in the manifest (leftover of an interrupted run?)")
                )
