"""tfrecord_tools.writer: sharding rule, determinism, atomic resume after SIGKILL, corrupt images,
argument errors, and the full Fashion-MNIST round trip.

Oracles: the source arrays (every record is compared with the array element its
`image/filename` = `<split>/<index>` names); the sharding rule written out here with NumPy
(`order = default_rng(seed).permutation(n)`, shard i = `order[i*n//k:(i+1)*n//k]`); an
uninterrupted conversion for the interrupted one; hashlib for checksums; NumPy mean/std.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfrecord_tools
from keras_tricks.datasets import read_idx
from tfrecord_tools import manifest as mf
from tfrecord_tools.example import parse_example
from tfrecord_tools.options import ConversionOptions
from tfrecord_tools.plan import ConversionPlan, OutputState, resolve, shard_indices
from tfrecord_tools.tfds_info import tfds_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shard_records(path, compression=None):
    return [parse_example(r.numpy()) for r in tf.data.TFRecordDataset(path, compression or "")]


def _arrays(n=103, shape=(6, 5, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 7, n)


def test_shards_hold_the_seeded_permutation_cut_into_contiguous_pieces(tmp_path):
    x, y = _arrays()
    manifest = tfrecord_tools.write_shards(
        x, y, str(tmp_path), split="train", num_shards=4, seed=5, name="toy", progress=False
    )
    order = np.random.default_rng(5).permutation(len(x))
    shards = manifest["splits"]["train"]["shards"]
    assert [s["file"] for s in shards] == [f"toy-train.tfrecord-0000{i}-of-00004" for i in range(4)]
    for i, shard in enumerate(shards):
        expected = order[i * 103 // 4 : (i + 1) * 103 // 4]
        records = _shard_records(str(tmp_path / shard["file"]))
        assert [r["filename"] for r in records] == [f"train/{j}" for j in expected]
        for r, j in zip(records, expected):
            np.testing.assert_array_equal(r["image"], x[j])
            assert r["label"] == y[j]
        data = (tmp_path / shard["file"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest() and shard["num_bytes"] == len(
            data
        )
        assert shard["num_records"] == len(expected)
        assert (
            shard["label_counts"]
            == np.bincount(y[expected], minlength=len(shard["label_counts"])).tolist()
        )
    flat = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(manifest["mean"], flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(manifest["std"], flat.std(0), rtol=1e-12)
    assert manifest["image_shape"] == [6, 5, 3] and manifest["num_classes"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [s["file"] for s in shards] + ["manifest.json", *tfds_files(manifest)]
    )


def test_conversion_plan_cuts_the_same_shards_and_refuses_a_different_output_without_io(tmp_path):
    x, y = _arrays(n=10)
    options = ConversionOptions(str(tmp_path / "out"), num_shards=3, name="toy", seed=4)
    plan = ConversionPlan.build((x, y), options)
    order = np.random.default_rng(4).permutation(10)  # cuts at 10*i//3 = 0, 3, 6, 10
    assert [s.tolist() for s in plan.splits["train"].indices] == [
        order[0:3].tolist(),
        order[3:6].tolist(),
        order[6:10].tolist(),
    ]
    assert [s.tolist() for s in shard_indices(10, 3, shuffle=False)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8, 9],
    ]
    assert plan.splits["train"].files == tuple(
        f"toy-train.tfrecord-0000{i}-of-00003" for i in range(3)
    )
    assert plan.splits["train"].fingerprint["num_source_records"] == 10
    # The resume rule decides from what the output holds, without I/O.
    same = OutputState(dict(plan.config, splits={}), None, (), {})
    assert resolve(plan, same, "run1").delete == ()
    other = OutputState(dict(plan.config, seed=5, splits={}), None, (), {})
    with pytest.raises(ValueError, match="seed: existing 5 != requested 4"):
        resolve(plan, other, "run1")
    replacing = ConversionPlan.build((x, y), options.replace(overwrite=True))
    assert resolve(replacing, other, "run1").interim is None  # manifest.json goes first
    assert not os.path.exists(tmp_path / "out")  # planning writes nothing


def test_output_bytes_do_not_depend_on_the_number_of_workers(tmp_path):
    x, y = _arrays(n=60, shape=(9, 9))
    one = tfrecord_tools.write_shards(
        x, y, str(tmp_path / "a"), num_shards=3, num_workers=1, progress=False
    )
    two = tfrecord_tools.write_shards(
        x, y, str(tmp_path / "b"), num_shards=3, num_workers=2, progress=False
    )
    assert [s["sha256"] for s in one["splits"]["train"]["shards"]] == [
        s["sha256"] for s in two["splits"]["train"]["shards"]
    ]
    assert one == two


def test_shuffle_false_keeps_source_order_and_gzip_is_recorded(tmp_path):
    x, y = _arrays(n=10)
    m = tfrecord_tools.write_shards(
        x,
        y,
        str(tmp_path),
        num_shards=2,
        shuffle=False,
        compression="gzip",
        image_format="raw",
        progress=False,
    )
    assert m["compression"] == "GZIP"
    names = [
        r["filename"]
        for s in m["splits"]["train"]["shards"]
        for r in _shard_records(str(tmp_path / s["file"]), "GZIP")
    ]
    assert names == [f"train/{i}" for i in range(10)]


def test_second_split_is_added_to_the_existing_manifest(tmp_path):
    x, y = _arrays(n=12)
    tfrecord_tools.write_shards(
        x, y, str(tmp_path), split="train", num_shards=2, name="d", progress=False
    )
    m = tfrecord_tools.write_shards(
        x[:5], y[:5], str(tmp_path), split="test", num_shards=1, name="d", progress=False
    )
    assert sorted(m["splits"]) == ["test", "train"]
    assert (m["splits"]["train"]["num_records"], m["splits"]["test"]["num_records"]) == (12, 5)
    assert tfrecord_tools.verify(str(tmp_path)).ok


def test_rerun_rebuilds_only_missing_or_damaged_shards_and_ends_identical(tmp_path, caplog):
    x, y = _arrays(n=40)
    out = str(tmp_path)
    first = tfrecord_tools.write_shards(x, y, out, num_shards=4, name="d", progress=False)
    files = [s["file"] for s in first["splits"]["train"]["shards"]]
    os.remove(tmp_path / files[1])
    damaged = tmp_path / files[2]
    damaged.write_bytes(damaged.read_bytes()[:-3])
    untouched_mtime = os.stat(tmp_path / files[0]).st_mtime_ns
    with caplog.at_level("INFO", logger="tfrecord_tools"):
        again = tfrecord_tools.write_shards(x, y, out, num_shards=4, name="d", progress=False)
    assert "2 of 4 shards already complete and verified" in caplog.text
    assert again == first
    assert os.stat(tmp_path / files[0]).st_mtime_ns == untouched_mtime


def test_output_holding_a_different_conversion_is_refused_unless_overwrite(tmp_path):
    x, y = _arrays(n=20)
    tfrecord_tools.write_shards(x, y, str(tmp_path), num_shards=2, name="d", progress=False)
    with pytest.raises(
        ValueError,
        match=(
            r"already holds a different conversion.*"
            r"image_format: existing 'png' != requested 'raw'"
        ),
    ):
        tfrecord_tools.write_shards(
            x, y, str(tmp_path), num_shards=2, name="d", image_format="raw", progress=False
        )
    with pytest.raises(ValueError, match=r"existing 2 shards of 20 records != requested 4 shards"):
        tfrecord_tools.write_shards(x, y, str(tmp_path), num_shards=4, name="d", progress=False)
    m = tfrecord_tools.write_shards(
        x,
        y,
        str(tmp_path),
        num_shards=4,
        name="d",
        image_format="raw",
        overwrite=True,
        progress=False,
    )
    assert m["image_format"] == "raw" and m["splits"]["train"]["num_shards"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [s["file"] for s in m["splits"]["train"]["shards"]] + ["manifest.json", *tfds_files(m)]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_shards": 0}, "`num_shards` must be an integer >= 1 or None. Received: num_shards=0"),
        (
            {"num_shards": 500},
            "`num_shards` must be at most the 20 records of split 'train'. "
            "Received: num_shards=500",
        ),
        ({"num_shards": {"valid": 2}}, r"keyed by splits of the source \['train'\]"),
        ({"num_workers": 0}, "`num_workers` must be an integer >= 1. Received: num_workers=0"),
        ({"image_format": "webp"}, "`image_format` must be one of"),
        ({"quality": 101}, "`quality` must be an integer >= 1 and <= 100. Received: quality=101"),
        (
            {"compression": "zstd"},
            "`compression` must be None or 'GZIP'. Received: compression='zstd'",
        ),
        ({"name": "my-data"}, "`name` must be a non-empty string"),
        ({"seed": -1}, "`seed` must be an integer >= 0. Received: seed=-1"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(tmp_path, kwargs, match):
    x, y = _arrays(n=20)
    with pytest.raises(ValueError, match=match):
        tfrecord_tools.write_shards(x, y, str(tmp_path), progress=False, **kwargs)
    assert not (tmp_path / "manifest.json").exists()


def test_unknown_source_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="scheme one of numpy, idx, cifar, folder, tfds, keras"):
        tfrecord_tools.convert("hdf5:/x.h5", str(tmp_path))


def _folder_with_corrupt_image(root):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")


def test_corrupt_image_stops_conversion_with_an_error_naming_the_file(tmp_path):
    _folder_with_corrupt_image(tmp_path / "src")
    bad = str(tmp_path / "src" / "b" / "bad.jpg")
    for workers in (1, 2):
        with pytest.raises(
            tfrecord_tools.CorruptImageError, match="Corrupt or unreadable image"
        ) as info:
            tfrecord_tools.convert(
                f"folder:{tmp_path / 'src'}",
                str(tmp_path / f"out{workers}"),
                num_shards=2,
                num_workers=workers,
                progress=False,
            )
        assert info.value.filename == bad
        assert not (tmp_path / f"out{workers}" / "manifest.json").exists()


def test_skip_corrupt_leaves_the_file_out_lists_it_and_counts_reconcile(tmp_path):
    _folder_with_corrupt_image(tmp_path / "src")
    m = tfrecord_tools.convert(
        f"folder:{tmp_path / 'src'}",
        str(tmp_path / "out"),
        num_shards=2,
        skip_corrupt=True,
        progress=False,
    )
    split = m["splits"]["train"]
    assert [s["filename"] for s in split["skipped"]] == ["b/bad.jpg"]
    assert (split["num_records"], split["num_source_records"]) == (6, 7)
    assert split["label_counts"] == [3, 3] and m["label_names"] == ["a", "b"]
    result = tfrecord_tools.verify(str(tmp_path / "out"), decode_images=True)
    assert result.ok and result.records == 6


def _converted_files(out):
    names = [n for n in os.listdir(out) if ".tfrecord-" in n]
    return sorted(n for n in names if not n.endswith(".json") and ".tmp-" not in n)


@pytest.mark.slow
def test_sigkill_midway_leaves_only_correct_shards_and_the_rerun_equals_a_clean_run(
    tmp_path, fashion_mnist_dir
):
    source = f"idx:{fashion_mnist_dir}"
    kwargs = dict(split="test", num_shards=20, name="fm")
    clean = tfrecord_tools.convert(
        source, str(tmp_path / "clean"), num_workers=1, progress=False, **kwargs
    )
    clean_sha = {s["file"]: s["sha256"] for s in clean["splits"]["test"]["shards"]}

    out = str(tmp_path / "killed")
    script = (
        "import tfrecord_tools\n"
        f"tfrecord_tools.convert({source!r}, {out!r}, num_workers=2, progress=False,"
        f" **{kwargs!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.isdir(out) and _converted_files(out):
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)  # the conversion and its worker processes
    proc.wait()
    present = _converted_files(out)
    assert not os.path.exists(os.path.join(out, "manifest.json")), (
        "conversion finished before the kill"
    )
    assert 1 <= len(present) < 20
    for name in present:  # every file under a final name is complete and right
        assert mf.sha256_file(os.path.join(out, name))[0] == clean_sha[name], name

    resumed = tfrecord_tools.convert(source, out, num_workers=2, progress=False, **kwargs)
    assert resumed == clean
    assert sorted(os.listdir(out)) == sorted(
        list(clean_sha) + ["manifest.json", *tfds_files(clean)]
    )
    assert tfrecord_tools.verify(out).ok


@pytest.mark.slow
def test_fashion_mnist_idx_round_trip_all_70000_records_equal_the_source(
    tmp_path, fashion_mnist_dir
):
    out = str(tmp_path / "fm")
    manifest = tfrecord_tools.convert(
        f"idx:{fashion_mnist_dir}",
        out,
        num_shards=8,
        num_workers=2,
        name="fashion_mnist",
        progress=False,
    )
    result = tfrecord_tools.verify(out)
    assert result.ok, str(result)
    assert result.records == 70_000 and result.shards == 16
    assert manifest["label_names"][0] == "T-shirt/top"
    for split, prefix, n in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        x = read_idx(os.path.join(fashion_mnist_dir, f"{prefix}-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(fashion_mnist_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        images, labels, names = [], [], []
        # Each record names its source index in image/filename (`<split>/<index>`).
        ds = tfrecord_tools.read_dataset(out, split, deterministic=True, with_filename=True)
        for image, label, filename in ds.batch(4096):
            images.append(image.numpy())
            labels.append(label.numpy())
            names.extend(int(f.split(b"/")[1]) for f in filename.numpy())
        index = np.asarray(names)
        assert len(index) == n and np.array_equal(np.sort(index), np.arange(n))
        images, labels = np.concatenate(images), np.concatenate(labels)
        np.testing.assert_array_equal(images[:, :, :, 0], x[index])
        np.testing.assert_array_equal(labels, y[index])
        if split == "train":
            np.testing.assert_allclose(manifest["mean"], [x.astype(np.float64).mean()], rtol=1e-12)
            np.testing.assert_allclose(manifest["std"], [x.astype(np.float64).std()], rtol=1e-12)
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["splits"]["train"]["label_counts"] == [6000] * 10


# --- options, streaming shard builder, lock ---------------------------------------------------


def test_conversion_options_are_checked_normalised_and_frozen():
    import dataclasses

    options = ConversionOptions("out", split="a, b", compression="gzip", num_shards={"a": 2})
    assert options.split == ("a", "b") and options.compression == "GZIP"
    assert options.shards_for("a") == 2 and options.shards_for("b") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 3
    assert options.replace(seed=3).seed == 3 and options.seed == 0
    with pytest.raises(
        ValueError, match=r"`alpha` must be one of \('error', 'composite', 'keep'\)"
    ):
        ConversionOptions("out", alpha="drop")
    with pytest.raises(ValueError, match=r"`num_shards\['a'\]` must be an integer >= 1"):
        ConversionOptions("out", num_shards={"a": 0})


def test_streamed_gzip_shard_equals_python_gzip_of_the_plain_shard():
    import gzip
    import io

    from tfrecord_tools.options import EncodingOptions
    from tfrecord_tools.shard import build_shard
    from tfrecord_tools.sources import ArraySplit

    x, y = _arrays(n=300, shape=(16, 16, 3))
    payload = ArraySplit(x, y, "train").payload(np.arange(300))
    plain, packed = io.BytesIO(), io.BytesIO()
    build_shard(payload, EncodingOptions("png"), plain)
    result = build_shard(payload, EncodingOptions("png", compression="GZIP"), packed)
    # The reference: the whole shard compressed at once by Python's gzip module.
    assert packed.getvalue() == gzip.compress(plain.getvalue(), compresslevel=6, mtime=0)
    assert result.sha256 == hashlib.sha256(packed.getvalue()).hexdigest()
    assert result.num_bytes == len(packed.getvalue())


def test_a_run_whose_lock_was_taken_over_stops_before_its_manifest(tmp_path):
    from tfrecord_tools.lock import LOCK_NAME, LockInfo, LockLostError, OutputLock

    with OutputLock(str(tmp_path), "1x01") as lock:
        lock.check(reread=True)  # still ours
        intruder = LockInfo("2x02", "elsewhere", 7, time.time(), time.time(), time.time() + 60)
        (tmp_path / LOCK_NAME).write_bytes(intruder.to_bytes())
        with pytest.raises(LockLostError, match=r"now held by run 2x02 \(host elsewhere, pid 7"):
            lock.check(reread=True)
    assert (tmp_path / LOCK_NAME).read_bytes() == intruder.to_bytes()  # not ours to remove


def test_incremental_pixel_sums_are_exact_across_blocks_and_image_sizes():
    from tfrecord_tools.shard import PixelStatsAccumulator

    rng = np.random.default_rng(9)
    # Images larger and smaller than one 64 KiB block, mixed in one shard.
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in
              [(300, 300, 3), (5, 7, 3), (128, 96, 3)] * 3]  # fmt: skip
    acc = PixelStatsAccumulator()
    for image in images:
        acc.add(image)
    flat = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.int64)
    assert acc.result() == {
        "count": flat.shape[0],
        "sum": flat.sum(0).tolist(),
        "sum_sq": (flat * flat).sum(0).tolist(),
    }
