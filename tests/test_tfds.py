"""tensorflow-datasets both ways: tfds reads our conversions, and `tfds:NAME` feeds the converter.

Oracles: the IDX arrays of Fashion-MNIST read with NumPy (`keras_tricks.datasets.read_idx`); the
sharding rule written out here (`order = default_rng(seed).permutation(n)`, shards cut in order,
so reading the shards one after the other gives `x[order]`); tfds itself for the metadata (its
own `FeaturesDict(...)` serialised by its own `to_proto`, the JSON `features.json` must equal) and
for the `tfds:` source (the examples a tfds builder generates, and tfds's own read of them by
position); the class names from the Fashion-MNIST README.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import tfrecord_tools  # noqa: E402
from keras_tricks.datasets import read_idx  # noqa: E402
from tfrecord_tools import tfds_info  # noqa: E402
from tfrecord_tools.example import parse_example  # noqa: E402
from tfrecord_tools.sources import TfdsPayload, TfdsSplit, iter_payload, open_source  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist"
# https://github.com/zalandoresearch/fashion-mnist#labels
FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SEQUENTIAL = tfds.ReadConfig(interleave_cycle_length=1)  # one shard file after the other


def _sequential(builder, split, **kwargs):
    ds = builder.as_dataset(split=split, shuffle_files=False, read_config=SEQUENTIAL, **kwargs)
    return list(tfds.as_numpy(ds))


def _reference_features(shape, names=None, num_classes=None, image_format="png"):
    """The features.json tfds itself writes for our keys (`FeatureConnector.save_config`)."""
    from google.protobuf import json_format

    f = tfds.features
    label = f.ClassLabel(names=names) if names else f.ClassLabel(num_classes=num_classes)
    features = f.FeaturesDict(
        {
            "image/encoded": f.Image(shape=shape, encoding_format=image_format),
            "image/format": f.Text(),
            "image/height": f.Scalar(np.int64),
            "image/width": f.Scalar(np.int64),
            "image/channels": f.Scalar(np.int64),
            "image/class/label": label,
            "image/filename": f.Text(),
        }
    )
    return json_format.MessageToDict(features.to_proto())


# --- our conversions, read by tfds ---------------------------------------------------------


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not os.path.isdir(FASHION):
        pytest.skip(f"{FASHION} not installed (Debian package dataset-fashion-mnist)")
    out = str(tmp_path_factory.mktemp("fashion") / "fashion_mnist")
    manifest = tfrecord_tools.convert(
        f"idx:{FASHION}",
        out,
        num_shards={"train": 6, "test": 2},
        num_workers=2,
        name="fashion_mnist",
        progress=False,
    )
    arrays = {
        split: (read_idx(os.path.join(FASHION, xs)), read_idx(os.path.join(FASHION, ys)))
        for split, (xs, ys) in FASHION_FILES.items()
    }
    return out, manifest, arrays


@pytest.mark.slow
def test_builder_from_directory_reads_whole_fashion_mnist_in_shard_order(fashion):
    out, manifest, arrays = fashion
    builder = tfds.builder_from_directory(out)

    assert builder.info.name == "fashion_mnist"
    assert builder.info.features["image/class/label"].names == FASHION_LABELS
    for split, (x, y) in arrays.items():
        n = len(y)
        assert builder.info.splits[split].num_examples == n
        k = manifest["splits"][split]["num_shards"]
        bounds = [i * n // k for i in range(k + 1)]
        assert builder.info.splits[split].shard_lengths == [
            bounds[i + 1] - bounds[i] for i in range(k)
        ]
        # Shards cut a seeded permutation in order: read one after the other, they are x[order].
        order = np.random.default_rng(0).permutation(n)
        got = _sequential(builder, split, batch_size=4096)  # batches of the sequential read
        images = np.concatenate([b["image/encoded"] for b in got])
        labels = np.concatenate([b["image/class/label"] for b in got])
        names = np.concatenate([b["image/filename"] for b in got])
        assert images.dtype == np.uint8 and images.shape == (n, 28, 28, 1)
        np.testing.assert_array_equal(images[..., 0], x[order])
        np.testing.assert_array_equal(labels, y[order])
        assert [f.decode() for f in names[:3]] == [f"{split}/{i}" for i in order[:3]]


@pytest.mark.slow
def test_as_dataset_with_tfds_defaults_yields_the_same_multiset_as_supervised(fashion):
    out, _, arrays = fashion
    x, y = arrays["test"]
    ds = tfds.builder_from_directory(out).as_dataset(split="test", as_supervised=True)
    got = sorted((int(label), image.tobytes()) for image, label in tfds.as_numpy(ds))
    assert got == sorted((int(label), image[:, :, None].tobytes()) for image, label in zip(x, y))


def test_metadata_files_are_what_tfds_itself_writes_for_our_features(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (40, 9, 7, 3), dtype=np.uint8), np.arange(40) % 4
    names = ["cat", "dog", "emu", "yak"]
    out = str(tmp_path / "toy")
    manifest = tfrecord_tools.write_shards(
        x, y, out, num_shards=3, name="toy", label_names=names, progress=False
    )

    with open(os.path.join(out, "features.json")) as f:
        assert json.load(f) == _reference_features((9, 7, 3), names=names)
    with open(os.path.join(out, "image.class.label.labels.txt")) as f:
        assert f.read() == "cat\ndog\nemu\nyak\n"
    assert tfds_info.tfds_files(manifest) == {
        name: open(os.path.join(out, name), "rb").read() for name in tfds_info.METADATA_NAMES
    }
    builder = tfds.builder_from_directory(out)
    assert builder.info.supervised_keys == ("image/encoded", "image/class/label")
    assert builder.info.splits["train"].num_bytes == sum(
        s["num_bytes"] for s in manifest["splits"]["train"]["shards"]
    )
    assert sorted(os.listdir(out)) == sorted(
        ["manifest.json", *tfds_info.METADATA_NAMES]
        + [s["file"] for s in manifest["splits"]["train"]["shards"]]
    )
    report = tfrecord_tools.verify(out)
    assert report.ok and report.warnings == []


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_jpeg_and_raw_records_decode_in_tfds_as_tf_decodes_their_bytes(tmp_path, image_format):
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (12, 8, 6, 3), dtype=np.uint8), np.arange(12) % 2
    out = str(tmp_path / image_format)
    tfrecord_tools.write_shards(
        x, y, out, num_shards=2, name="toy", image_format=image_format, progress=False
    )
    builder = tfds.builder_from_directory(out)
    got = _sequential(builder, "train")
    stored = [
        parse_example(r.numpy())
        for f in sorted(os.listdir(out))
        if ".tfrecord-" in f
        for r in tf.data.TFRecordDataset(os.path.join(out, f))
    ]
    for ex, record in zip(got, stored, strict=True):
        if image_format == "raw":  # exactly the stored pixels
            expected = np.frombuffer(record["encoded"], np.uint8).reshape(8, 6, 3)
        else:  # tfds's Image decoder: tf.image.decode_image with the feature's channels
            expected = tf.image.decode_image(record["encoded"], channels=3).numpy()
        np.testing.assert_array_equal(ex["image/encoded"], expected)
        assert ex["image/class/label"] == record["label"]
    if image_format == "raw":
        assert sorted(ex["image/encoded"].tobytes() for ex in got) == sorted(i.tobytes() for i in x)


def test_images_of_varying_size_keep_their_channels_and_exact_pixels(tmp_path):
    rng = np.random.default_rng(3)
    xs = [rng.integers(0, 256, (4 + i % 3, 5 + i % 2, 1), dtype=np.uint8) for i in range(10)]
    out = str(tmp_path / "var")
    tfrecord_tools.write_shards(
        xs, np.arange(10) % 2, out, num_shards=2, name="var", progress=False
    )
    with open(os.path.join(out, "features.json")) as f:
        assert json.load(f) == _reference_features((None, None, 1), num_classes=2)
    builder = tfds.builder_from_directory(out)
    got = sorted(
        (ex["image/encoded"].shape, ex["image/encoded"].tobytes())
        for ex in _sequential(builder, "train")
    )
    assert got == sorted((a.shape, a.tobytes()) for a in xs)


def test_metadata_follows_every_manifest_rewrite_and_gzip_outputs_have_none(tmp_path):
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 256, (30, 5, 5, 1), dtype=np.uint8), np.arange(30) % 3
    out = str(tmp_path / "out")
    tfrecord_tools.write_shards(x, y, out, split="train", num_shards=3, name="t", progress=False)
    tfrecord_tools.write_shards(
        x[:7], y[:7], out, split="test", num_shards=1, name="t", progress=False
    )
    info = tfds.builder_from_directory(out).info
    assert {s: info.splits[s].shard_lengths for s in ("train", "test")} == {
        "train": [10, 10, 10],
        "test": [7],
    }
    # A split replaced with another shard count (overwrite): the interim manifest drops it, the
    # final one lists it again; tfds sees the final layout.
    tfrecord_tools.write_shards(
        x, y, out, split="train", num_shards=2, name="t", overwrite=True, progress=False
    )
    info = tfds.builder_from_directory(out).info
    assert info.splits["train"].shard_lengths == [15, 15]
    assert info.splits["test"].shard_lengths == [7]
    # Names that a tfds labels file cannot hold exactly: the class count only.
    out2 = str(tmp_path / "odd")
    tfrecord_tools.write_shards(
        x, y, out2, num_shards=1, name="t", label_names=["a", " b", "c"], progress=False
    )
    assert not os.path.exists(os.path.join(out2, tfds_info.LABELS_NAME))
    assert tfds.builder_from_directory(out2).info.features["image/class/label"].num_classes == 3
    # tfds reads TFRecords without compression: a GZIP conversion replaces the metadata by none.
    m = tfrecord_tools.write_shards(
        x, y, out2, num_shards=1, name="t", compression="GZIP", overwrite=True, progress=False
    )
    assert sorted(os.listdir(out2)) == sorted(
        ["manifest.json"] + [s["file"] for s in m["splits"]["train"]["shards"]]
    )


def test_metadata_is_written_before_the_manifest_and_dead_runs_temporaries_are_removed(
    tmp_path, monkeypatch
):
    from tfrecord_tools import manifest as mf
    from tfrecord_tools.storage import GfileStore

    x, y = np.zeros((6, 4, 4, 1), np.uint8), np.arange(6) % 2
    out = tmp_path / "out"
    out.mkdir()
    # Left by a run that died while writing the metadata (not this run, no lock held).
    stale = out / "dataset_info.json.tmp-999x0badc0de-abcdef"
    stale.write_bytes(b"{half")
    written = []
    original = GfileStore.write_atomic

    def spy(self, path, data, run_id):
        written.append(os.path.basename(path))
        return original(self, path, data, run_id)

    monkeypatch.setattr(GfileStore, "write_atomic", spy)
    original_bytes = mf.write_bytes_atomic  # how the local writer writes manifest.json

    def spy_bytes(path, data, run_id=None):
        written.append(os.path.basename(path))
        return original_bytes(path, data, run_id)

    monkeypatch.setattr(mf, "write_bytes_atomic", spy_bytes)
    tfrecord_tools.write_shards(x, y, str(out), num_shards=2, name="t", progress=False)
    commits = [w for w in written if not w.endswith(".json") or "tfrecord" not in w]
    assert commits == [
        "dataset_info.json",
        "features.json",
        "manifest.json",
    ]  # no class names: no labels file
    assert not stale.exists()


def test_beam_writes_the_same_metadata_as_the_local_writer(tmp_path):
    pytest.importorskip("apache_beam")
    from tfrecord_tools.beam import convert_beam

    rng = np.random.default_rng(5)
    data = {
        "train": (rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8), np.arange(20) % 5),
        "test": (rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8), np.arange(8) % 5),
    }
    names = list("abcde")
    local = tfrecord_tools.convert(
        data, str(tmp_path / "local"), num_shards=2, name="toy", label_names=names, progress=False
    )
    beam = convert_beam(data, str(tmp_path / "beam"), num_shards=2, name="toy", label_names=names)
    assert beam == local
    for name in tfds_info.METADATA_NAMES:
        assert (tmp_path / "beam" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    got = _sequential(tfds.builder_from_directory(str(tmp_path / "beam")), "test")
    order = np.random.default_rng(0).permutation(8)
    np.testing.assert_array_equal(
        np.stack([e["image/encoded"] for e in got]), data["test"][0][order]
    )


# --- the tfds: source ------------------------------------------------------------------------

TINY_NAMES = ["cat", "dog", "emu"]
TINY_SIZES = {"train": 50, "test": 13}


def _tiny_example(split, i):
    rng = np.random.default_rng([TINY_SIZES[split], i])
    return rng.integers(0, 256, (9, 7, 3), dtype=np.uint8), (i * 7) % 3


class KerasTricksTinyImages(tfds.core.GeneratorBasedBuilder):
    """A tiny image-classification dataset, generated offline (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(9, 7, 3)),
                    "label": tfds.features.ClassLabel(names=TINY_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in TINY_SIZES}

    def _generate_examples(self, split):
        for i in range(TINY_SIZES[split]):
            image, label = _tiny_example(split, i)
            yield f"{split}-{i}", {"image": image, "label": label}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_data"))
    builder = KerasTricksTinyImages(data_dir=data_dir)
    builder.download_and_prepare()
    return builder, data_dir


def _records(out, split):
    import tensorflow as tf

    files = sorted(f for f in os.listdir(out) if f.startswith(f"tiny-{split}.tfrecord-"))
    return [
        parse_example(r.numpy())
        for f in files
        for r in tf.data.TFRecordDataset(os.path.join(out, f))
    ]


@pytest.mark.parametrize("shuffle", [True, False])
def test_tfds_source_converts_every_example_exactly(tiny, tmp_path, shuffle):
    builder, data_dir = tiny
    out = str(tmp_path / "out")
    source = f"tfds:keras_tricks_tiny_images?data_dir={data_dir}"
    # Worker processes (each reads its shards' slices itself) and, unshuffled, this process.
    workers = 2 if shuffle else 1
    manifest = tfrecord_tools.convert(
        source, out, num_shards=3, num_workers=workers, name="tiny", shuffle=shuffle, progress=False
    )
    assert manifest["label_names"] == TINY_NAMES and manifest["source"] == source
    for split, n in TINY_SIZES.items():
        by_position = _sequential(builder, split)  # tfds's own read, in file order
        records = _records(out, split)
        assert len(records) == n
        for record in records:
            position = int(record["filename"].split("/")[1])
            image = np.asarray(record["image"])
            np.testing.assert_array_equal(image, by_position[position]["image"])
            assert record["label"] == by_position[position]["label"]
        # ... and they are the examples the builder generated, each once.
        assert sorted((r["label"], np.asarray(r["image"]).tobytes()) for r in records) == sorted(
            (label, image.tobytes()) for image, label in (_tiny_example(split, i) for i in range(n))
        )
    assert tfrecord_tools.verify(out, decode_images=True).ok


def test_tfds_source_streams_reading_only_each_shards_slice(tiny, monkeypatch):
    builder, data_dir = tiny
    calls = []
    original = tfds.core.DatasetBuilder.as_dataset

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", spy)
    src = open_source(f"tfds:keras_tricks_tiny_images?data_dir={data_dir}", split="train")
    split = src.splits["train"]
    assert isinstance(split, TfdsSplit) and not hasattr(split, "images")
    assert (split.num_records, split.max_label(), src.label_names) == (50, 2, TINY_NAMES)
    assert calls == []  # opening the source read no example

    records = iter_payload(split.payload(np.arange(20, 30)))
    first = next(records)  # a generator: records come one by one from as_dataset
    assert len(calls) == 1 and calls[0]["split"] == "train[20:30]"
    assert calls[0].get("batch_size") is None  # never one batch_size=-1 load of everything
    rest = list(records)
    expected = _sequential(builder, "train[20:30]")
    assert [r[0] for r in [first, *rest]] == list(range(20, 30))
    for (index, image, label, name, error), ex in zip([first, *rest], expected, strict=True):
        np.testing.assert_array_equal(image, ex["image"])
        assert (label, name, error) == (ex["label"], f"train/{index}", None)
    # Out of order, as a shuffled shard is: the slice it spans, records in the payload's order.
    payload = TfdsPayload(
        "train", np.array([7, 3, 5]), split.builder_dir, "train", "image", "label"
    )
    assert [r[0] for r in iter_payload(payload)] == [7, 3, 5]
    assert calls[-1]["split"] == "train[3:8]"


def test_tfds_source_refuses_unknown_options():
    with pytest.raises(
        ValueError, match=r"tfds:NAME\?data_dir=DIR.*Received: source='tfds:x\?dir=y'"
    ):
        open_source("tfds:x?dir=y")


@pytest.mark.gcs
@pytest.mark.slow
def test_builder_from_directory_reads_a_conversion_on_gs(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from gcs_emulator import GCSEndpoint

    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 256, (25, 6, 5, 3), dtype=np.uint8), np.arange(25) % 4
    np.savez(tmp_path / "toy.npz", x_train=x, y_train=y)
    code = r"""
import json, sys
import numpy as np
import tensorflow_datasets as tfds
import tfrecord_tools
npz, output = sys.argv[1:3]
tfrecord_tools.convert("numpy:" + npz, output, num_shards=3, name="toy", progress=False)
builder = tfds.builder_from_directory(output)
ds = builder.as_dataset(split="train", shuffle_files=False,
                        read_config=tfds.ReadConfig(interleave_cycle_length=1))
got = [(ex["image/encoded"].tolist(), int(ex["image/class/label"])) for ex in tfds.as_numpy(ds)]
print(json.dumps({"n": builder.info.splits["train"].num_examples, "got": got}))
"""
    with GCSEndpoint(buckets=["ktricks-tfds"]) as gcs:
        env = dict(gcs.tf_env())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "toy.npz"), "gs://ktricks-tfds/toy"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        objects = gcs.emulator.list_objects("ktricks-tfds", "toy/")
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert {"toy/dataset_info.json", "toy/features.json"} <= set(objects)
    order = np.random.default_rng(0).permutation(25)
    assert result["n"] == 25
    np.testing.assert_array_equal(np.array([g[0] for g in result["got"]], np.uint8), x[order])
    assert [g[1] for g in result["got"]] == y[order].tolist()
