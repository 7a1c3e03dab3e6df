"""tfrecord_tools.example and the writer's TFRecord framing, checked against TensorFlow and Pillow.

Oracles: `tf.train.Example` (TensorFlow's own protobuf parser) for the hand-written Example
bytes, `tf.io.TFRecordWriter` for the record framing, Pillow and `tf.io.decode_png` for the PNG
encoder, and the input arrays themselves for every lossless round trip.
"""

import gzip
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfrecord_tools import example as ex
from tfrecord_tools.sources import ArraySplit
from tfrecord_tools.writer import build_shard, frame_record


def _images(seed=0):
    rng = np.random.default_rng(seed)
    # Small (filter None) and large (Paeth filter) PNG paths, grey / RGB / RGBA, smooth and noisy.
    yield rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    yield rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    yield rng.integers(0, 256, (40, 33, 4), dtype=np.uint8)
    ramp = (np.arange(96 * 80 * 3).reshape(96, 80, 3) % 251).astype(np.uint8)
    yield ramp
    yield np.zeros((1, 1, 1), np.uint8)


@pytest.mark.parametrize("index", range(5))
def test_png_encoder_output_decodes_to_the_same_pixels_in_pillow_and_tensorflow(index):
    image = list(_images())[index]
    data = ex.encode_png(image)
    with Image.open(io.BytesIO(data)) as pil:
        from_pillow = np.asarray(pil)
    from_pillow = from_pillow[:, :, None] if from_pillow.ndim == 2 else from_pillow
    np.testing.assert_array_equal(from_pillow, image)
    np.testing.assert_array_equal(tf.io.decode_png(data, channels=image.shape[2]).numpy(), image)


def test_png_encoding_is_deterministic_and_grey_2d_input_gets_a_channel_axis():
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert ex.encode_png(image) == ex.encode_png(image.copy())
    np.testing.assert_array_equal(ex.decode_image(ex.encode_png(image), "png"), image[:, :, None])


@pytest.mark.parametrize("image_format", ["png", "raw", "jpeg"])
def test_serialized_example_parses_with_tensorflow_to_the_given_fields(image_format):
    image = np.random.default_rng(1).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    record = ex.serialize_example(image, 7, image_format, quality=90, filename="cls/é.png")
    feature = tf.train.Example.FromString(record).features.feature
    assert sorted(feature) == sorted(ex.FEATURE_SPEC_JSON)
    assert feature["image/format"].bytes_list.value == [image_format.encode()]
    assert feature["image/height"].int64_list.value == [12]
    assert feature["image/width"].int64_list.value == [9]
    assert feature["image/channels"].int64_list.value == [3]
    assert feature["image/class/label"].int64_list.value == [7]
    assert feature["image/filename"].bytes_list.value == ["cls/é.png".encode()]
    encoded = feature["image/encoded"].bytes_list.value[0]
    parsed = tf.io.parse_single_example(record, ex.feature_spec())
    decoded, label = ex.decode_record(parsed, image_format, channels=3)
    assert int(label) == 7
    if image_format == "jpeg":
        # Lossy: the reference is Pillow's own JPEG encoder at the same quality.
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        assert encoded == buf.getvalue()
        assert decoded.shape == (12, 9, 3)
    else:
        np.testing.assert_array_equal(decoded.numpy(), image)
        if image_format == "raw":
            assert encoded == image.tobytes()


def test_large_and_negative_int64_values_round_trip_through_tensorflow():
    for label in (0, 127, 128, 300, 2**40 + 3, -1, -(2**63)):
        record = ex.serialize_encoded(b"x", "raw", 1, 1, 1, label)
        assert tf.train.Example.FromString(record).features.feature[
            "image/class/label"
        ].int64_list.value == [label]


def test_frame_record_matches_tf_io_tfrecordwriter_bytes(tmp_path):
    records = [b"", b"a", bytes(range(256)) * 40, ex.serialize_example(np.ones((3, 3)), 2)]
    path = str(tmp_path / "ref.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for r in records:
            writer.write(r)
    with open(path, "rb") as f:
        reference = f.read()
    assert b"".join(frame_record(r) for r in records) == reference


def test_gzip_shard_bytes_read_back_with_tensorflow_gzip_reader(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (20, 6, 6), dtype=np.uint8)
    y = np.arange(20) % 3
    result = build_shard(
        ArraySplit(x, y, "train").payload(np.arange(20)), "png", compression="GZIP"
    )
    path = tmp_path / "s.tfrecord.gz"
    path.write_bytes(result["data"])
    got = [ex.parse_example(r.numpy()) for r in tf.data.TFRecordDataset(str(path), "GZIP")]
    assert [g["label"] for g in got] == y.tolist()
    np.testing.assert_array_equal(np.stack([g["image"][:, :, 0] for g in got]), x)
    assert gzip.decompress(result["data"]) == b"".join(
        frame_record(ex.serialize_example(x[i], int(y[i]), "png", filename=f"train/{i}"))
        for i in range(20)
    )


def test_shard_statistics_equal_numpy_sums_and_bincount():
    x = np.random.default_rng(3).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)
    y = np.random.default_rng(4).integers(0, 6, 50)
    result = build_shard(ArraySplit(x, y, "train").payload(np.arange(50)), "raw")
    flat = x.reshape(-1, 3).astype(np.int64)
    assert result["pixel_stats"] == {
        "count": 50 * 20,
        "sum": flat.sum(0).tolist(),
        "sum_sq": (flat**2).sum(0).tolist(),
    }
    assert result["label_counts"] == np.bincount(y).tolist()
    assert result["num_records"] == 50 and result["image_shapes"] == [(4, 5, 3)]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ex.encode_image(np.zeros((4, 4)), "gif"), "`image_format` must be one of"),
        (
            lambda: ex.encode_image(np.zeros((4, 4)), "jpeg", quality=0),
            "`quality` must be an integer >= 1 and <= 100. Received: quality=0",
        ),
        (
            lambda: ex.encode_image(np.zeros((4, 4, 2))),
            r"C in \(1, 3, 4\). Received: image.shape=\(4, 4, 2\)",
        ),
        (lambda: ex.encode_image(np.full((2, 2), 256.0)), "whole numbers in 0..255"),
        (lambda: ex.encode_image(np.zeros((2, 2, 4)), "jpeg"), "JPEG stores 1 or 3 channels"),
        (lambda: ex.decode_image(b"\0" * 5, "raw", (2, 2, 1)), "raw image has 5 bytes"),
        (lambda: ex.decode_image(b"\0" * 4, "raw"), "`shape` must be .*Received: shape=None"),
    ],
)
def test_bad_image_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _foreign_pngs(images):
    """The same pixels as written by Pillow (optimised) and by TensorFlow's own encoder."""
    out = []
    for i, image in enumerate(images):
        if i % 2:
            out.append(tf.io.encode_png(image).numpy())
        else:
            buf = io.BytesIO()
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(
                buf, format="PNG", optimize=True
            )
            out.append(buf.getvalue())
    return out


@pytest.mark.parametrize(
    "shape, writer",
    [
        ((28, 28, 1), "ours"),  # small: filter None, inflated for the whole batch
        ((5, 7, 3), "ours"),
        ((3, 4, 4), "ours"),
        ((40, 40, 3), "ours"),  # large: Paeth-filtered rows, decoded image by image
        ((28, 28, 1), "mixed"),  # ours mixed with Pillow / TF layouts in one batch
        ((6, 5, 3), "foreign"),
    ],
)
def test_png_batch_decoder_equals_decode_png_per_image_for_any_layout(shape, writer):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    images[:, : shape[0] // 2] = 0  # runs of zeros, like the background of MNIST digits
    if writer == "ours":
        encoded = [ex.encode_png(i) for i in images]
    elif writer == "foreign":
        encoded = _foreign_pngs(images)
    else:
        encoded = [ex.encode_png(i) for i in images[:3]] + _foreign_pngs(images[3:])
    got = ex.decode_png_batch(tf.constant(encoded), shape).numpy()
    reference = np.stack([tf.io.decode_png(e, channels=shape[2]).numpy() for e in encoded])
    np.testing.assert_array_equal(reference, images)
    np.testing.assert_array_equal(got, reference)


def test_png_batch_decoder_fails_on_corrupt_or_truncated_pngs_like_decode_png():
    image = np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    good = ex.encode_png(image)
    flipped = bytearray(good)
    flipped[45] ^= 0x10  # inside the zlib stream: its Adler-32 check fails
    for bad in (bytes(flipped), good[:-20], b"not a png"):
        with pytest.raises(tf.errors.OpError):
            tf.io.decode_png(bad, channels=3)
        with pytest.raises(tf.errors.OpError):
            ex.decode_png_batch(tf.constant([good, bad]), (8, 8, 3))
    assert ex.decode_png_batch(tf.constant([], tf.string), (8, 8, 3)).shape == (0, 8, 8, 3)


@pytest.mark.parametrize("size", [0, 127, 128, 16383, 16384, 300_000])
def test_serialized_example_lengths_of_every_varint_width_parse_with_tensorflow(size):
    # Field lengths cross the 1-, 2- and 3-byte varint boundaries (protobuf encoding spec).
    encoded = bytes(range(256)) * (size // 256) + bytes(size % 256)
    record = ex.serialize_encoded(encoded, "raw", 1, max(size, 1), 1, 3, "f" * (size % 300))
    feature = tf.train.Example.FromString(record).features.feature
    assert feature["image/encoded"].bytes_list.value == [encoded]
    assert feature["image/filename"].bytes_list.value == [b"f" * (size % 300)]
    assert feature["image/width"].int64_list.value == [max(size, 1)]
