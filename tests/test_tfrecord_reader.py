"""tfrecord_tools.reader.read_dataset: contents, order, formats, options.

Oracles: the arrays written (matched through `image/filename` = `<split>/<index>`); for the
sequential order, the shards' records read one file after another with `tf.data.TFRecordDataset`;
Pillow's JPEG decoder for the lossy format.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfrecord_tools
import tfrecord_tools.reader
from tfrecord_tools.reader import shard_files


def _write(tmp_path, image_format="png", compression=None, n=57, shape=(7, 6, 3), num_shards=5):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = rng.integers(0, 4, n)
    out = str(tmp_path / f"{image_format}-{compression}")
    tfrecord_tools.write_shards(
        x,
        y,
        out,
        num_shards=num_shards,
        image_format=image_format,
        compression=compression,
        progress=False,
    )
    return out, x, y


def _index(filename):
    return int(filename.split(b"/")[1])


@pytest.mark.parametrize(
    "image_format, compression", [("png", None), ("raw", "GZIP"), ("raw", None)]
)
def test_every_record_reads_back_equal_to_its_source_array(tmp_path, image_format, compression):
    out, x, y = _write(tmp_path, image_format, compression)
    seen = []
    for image, label, filename in tfrecord_tools.read_dataset(out, "train", with_filename=True):
        i = _index(filename.numpy())
        assert image.dtype == tf.uint8 and image.shape == (7, 6, 3)
        np.testing.assert_array_equal(image.numpy(), x[i])
        assert int(label) == y[i]
        seen.append(i)
    assert sorted(seen) == list(range(len(x)))


def test_jpeg_records_decode_like_pillow_decodes_the_same_bytes(tmp_path):
    # Smooth images: JPEG (4:2:0 chroma) is meant for photographs, not per-pixel noise.
    yy, xx = np.mgrid[0:16, 0:16]
    x = np.stack(
        [np.stack([xx * 8 + k, yy * 8 + 2 * k, (xx + yy) * 4 + 3 * k], -1) for k in range(6)]
    )
    x = x.astype(np.uint8)
    out = str(tmp_path / "jpeg")
    tfrecord_tools.write_shards(
        x, np.arange(6), out, num_shards=2, image_format="jpeg", progress=False
    )
    encoded = {
        f.numpy(): e.numpy()
        for e, _, f in tfrecord_tools.read_dataset(out, "train", decode=False, with_filename=True)
    }
    decoded = {
        f.numpy(): im.numpy()
        for im, _, f in tfrecord_tools.read_dataset(out, "train", with_filename=True)
    }
    assert sorted(encoded) == sorted(decoded) and len(decoded) == 6
    for name, image in decoded.items():
        with Image.open(io.BytesIO(encoded[name])) as pil:
            reference = np.asarray(pil)
        # Same libjpeg IDCT (INTEGER_ACCURATE) and fancy upsampling as Pillow: identical pixels.
        np.testing.assert_array_equal(image, reference)
        assert np.abs(image.astype(int) - x[_index(name)].astype(int)).mean() < 3  # quality 95


def test_one_parallel_read_yields_shards_in_order_like_a_sequential_tfrecord_read(tmp_path):
    out, _, _ = _write(tmp_path, "raw")
    sequential = [
        tf.io.parse_single_example(r, {"image/filename": tf.io.FixedLenFeature([], tf.string)})[
            "image/filename"
        ].numpy()
        for r in tf.data.TFRecordDataset(shard_files(out, "train"))
    ]
    ds = tfrecord_tools.read_dataset(
        out, "train", num_parallel_reads=1, deterministic=True, with_filename=True
    )
    assert [f.numpy() for _, _, f in ds] == sequential


def test_deterministic_reads_repeat_the_same_order(tmp_path):
    out, _, _ = _write(tmp_path, "raw")

    def order():
        ds = tfrecord_tools.read_dataset(out, "train", deterministic=True, with_filename=True)
        return [f.numpy() for _, _, f in ds]

    assert order() == order()


def test_options_set_file_autoshard_and_determinism(tmp_path):
    out, _, _ = _write(tmp_path, "raw")
    opts = tfrecord_tools.read_dataset(out, "train", deterministic=False).options()
    assert (
        opts.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE
    )
    assert opts.deterministic is False


def test_file_autoshard_gives_each_worker_whole_distinct_shards(tmp_path):
    # What tf.distribute does per input worker: the FILE policy shards the list of files.
    out, _, _ = _write(tmp_path, "raw", num_shards=4)
    ds = tfrecord_tools.read_dataset(out, "train", with_filename=True)
    from tensorflow.python.data.experimental.ops import distribute

    per_worker = []
    for worker in range(2):
        sharded = distribute._AutoShardDataset(ds, num_workers=2, index=worker)
        per_worker.append({_index(f.numpy()) for _, _, f in sharded})
    manifest = tfrecord_tools.read_manifest(out)
    counts = [s["num_records"] for s in manifest["splits"]["train"]["shards"]]
    assert sorted(len(w) for w in per_worker) == sorted(
        [counts[0] + counts[2], counts[1] + counts[3]]
    )
    assert per_worker[0].isdisjoint(per_worker[1]) and len(per_worker[0] | per_worker[1]) == 57


def test_unknown_split_and_bad_parallelism_are_value_errors(tmp_path):
    out, _, _ = _write(tmp_path, "raw")
    with pytest.raises(
        ValueError, match=r"`split` must be a split of .*, one of \['train'\]. Received: split="
    ):
        tfrecord_tools.read_dataset(out, "validation")
    with pytest.raises(
        ValueError,
        match=(
            "`num_parallel_reads` must be an integer >= 1 or None. Received: num_parallel_reads=0"
        ),
    ):
        tfrecord_tools.read_dataset(out, "train", num_parallel_reads=0)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1 or None"):
        tfrecord_tools.read_dataset(out, "train", batch_size=True)
    with pytest.raises(FileNotFoundError, match="No manifest.json"):
        tfrecord_tools.read_dataset(str(tmp_path / "nothing"), "train")


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_batch_size_yields_batches_of_the_same_records(tmp_path, image_format):
    out, x, y = _write(tmp_path, image_format, n=57, num_shards=3)
    batches = list(
        tfrecord_tools.read_dataset(
            out, "train", batch_size=10, deterministic=True, with_filename=True
        )
    )
    assert [b[0].shape[0] for b in batches] == [10] * 5 + [7]
    singles = list(
        tfrecord_tools.read_dataset(out, "train", deterministic=True, with_filename=True)
    )
    np.testing.assert_array_equal(
        np.concatenate([b[0].numpy() for b in batches]), np.stack([s[0].numpy() for s in singles])
    )
    for images, labels, names in batches:
        idx = [_index(n) for n in names.numpy()]
        np.testing.assert_array_equal(images.numpy(), x[idx])
        np.testing.assert_array_equal(labels.numpy(), y[idx])
    dropped = tfrecord_tools.read_dataset(out, "train", batch_size=10, drop_remainder=True)
    assert sum(1 for _ in dropped) == 5


def test_images_of_different_sizes_read_one_by_one_and_refuse_batching(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (4 + i % 3, 5, 3), dtype=np.uint8) for i in range(9)]
    out = str(tmp_path / "var")
    manifest = tfrecord_tools.write_shards(
        images, np.arange(9) % 2, out, num_shards=2, progress=False
    )
    assert manifest["image_shape"] is None
    for image, _, name in tfrecord_tools.read_dataset(out, "train", with_filename=True):
        np.testing.assert_array_equal(image.numpy(), images[_index(name.numpy())])
    with pytest.raises(ValueError, match="batch_size=4 needs images of one size"):
        tfrecord_tools.read_dataset(out, "train", batch_size=4)


# --- the integrity check against the manifest (verify=) --------------------------------------


def _drop_last_record(path, compression=None):
    # TensorFlow's own reader and writer: the shard keeps every other record, CRC-correct.
    options = tf.io.TFRecordOptions(compression_type=compression)
    records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression or "")]
    with tf.io.TFRecordWriter(path, options) as w:
        for record in records[:-1]:
            w.write(record)
    return len(records) - 1


@pytest.mark.parametrize("image_format, compression", [("png", "GZIP"), ("raw", None)])
@pytest.mark.parametrize("batch_size", [None, 8])
def test_count_check_names_the_shard_on_every_read_path(
    tmp_path, image_format, compression, batch_size
):
    out, _, _ = _write(tmp_path, image_format, compression, num_shards=3)
    shards = tfrecord_tools.read_manifest(out)["splits"]["train"]["shards"]
    found = _drop_last_record(shard_files(out, "train")[2], compression)
    ds = tfrecord_tools.read_dataset(out, "train", verify="count", batch_size=batch_size)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in ds:
            pass
    expected = shards[2]["num_records"]
    assert f"{shards[2]['file']} holds {found} records, manifest.json says {expected}" in str(
        info.value
    )


def test_count_check_keeps_the_records_and_order_of_an_unchecked_read(tmp_path):
    out, _, _ = _write(tmp_path, "png", num_shards=5)

    def names(verify):
        ds = tfrecord_tools.read_dataset(
            out, "train", deterministic=True, with_filename=True, verify=verify
        )
        return [f.numpy() for _, _, f in ds]

    assert names("all") == names(False) and len(names("all")) == 57


def test_missing_shard_is_named_before_reading(tmp_path):
    out, _, _ = _write(tmp_path, "raw", num_shards=3)
    missing = shard_files(out, "train")[1]
    tf.io.gfile.remove(missing)
    with pytest.raises(tfrecord_tools.reader.ShardMismatchError, match="missing"):
        tfrecord_tools.read_dataset(out, "train")
    # "count" alone does not stat: the read itself then fails on the missing file.
    with pytest.raises(tf.errors.NotFoundError):
        list(tfrecord_tools.read_dataset(out, "train", verify="count"))


def test_bad_verify_value_is_a_value_error(tmp_path):
    out, _, _ = _write(tmp_path, "raw")
    with pytest.raises(ValueError, match="`verify` must be one of \\('all', 'size', 'count'"):
        tfrecord_tools.read_dataset(out, "train", verify="sha256")


def test_shard_cut_inside_a_record_is_named_as_unreadable_before_reading(tmp_path):
    out, _, _ = _write(tmp_path, "raw", num_shards=3)
    path = shard_files(out, "train")[0]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-7])  # 7 bytes short: the last record's data CRC is cut
    records = tfrecord_tools.read_manifest(out)["splits"]["train"]["shards"][0]["num_records"]
    with pytest.raises(tfrecord_tools.ShardMismatchError) as info:
        tfrecord_tools.read_dataset(out, "train")
    [(file, message)] = info.value.problems
    assert file == path.rsplit("/", 1)[1]
    assert message.startswith(f"{len(data) - 7} bytes, manifest.json says {len(data)}; ")
    assert "unreadable as TFRecord (truncated record" in message
    assert message.endswith(f"manifest.json says {records} records")


def test_verify_size_checks_only_before_reading_and_count_only_while_reading(tmp_path):
    out, _, _ = _write(tmp_path, "raw", num_shards=3)
    ds = {
        mode: tfrecord_tools.read_dataset(out, "train", verify=mode) for mode in ("size", "count")
    }
    path = shard_files(out, "train")[1]
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    with tf.io.TFRecordWriter(path) as w:  # one valid record more, after the datasets were built
        for record in records + records[:1]:
            w.write(record)
    assert sum(1 for _ in ds["size"]) == 57 + 1  # "size" alone: the change goes unnoticed
    with pytest.raises(tf.errors.InvalidArgumentError, match="holds more records than"):
        list(ds["count"])
    with pytest.raises(tfrecord_tools.ShardMismatchError):
        tfrecord_tools.read_dataset(out, "train", verify="size")
