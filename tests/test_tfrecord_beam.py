"""tfrecord_tools.beam: the Beam pipeline writes what the local writer writes (DirectRunner),
and `tfrecord_tools.verify` accepts it.

Oracles: the local writer `tfrecord_tools.convert` run on the same source (the issue's contract:
"output identical in content to the local writer"), `hashlib.sha256` of the files, TensorFlow's
own `TFRecordDataset` + `parse_single_example` + `decode_png` with a feature spec written out in
this file, and NumPy statistics of the source arrays.
"""

import hashlib
import json
import os
import re
import tempfile

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("apache_beam")

import tfrecord_tools  # noqa: E402
from tfrecord_tools.beam import convert_beam, main  # noqa: E402
from tfrecord_tools.tfds_info import tfds_files  # noqa: E402

SPEC = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/channels": tf.io.FixedLenFeature([], tf.int64),
}


def _arrays(seed=0, n_train=120, n_test=30, shape=(6, 5, 3), classes=4):
    rng = np.random.default_rng(seed)
    return {
        "train": (
            rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            rng.integers(0, classes, n_train),
        ),
        "test": (
            rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            rng.integers(0, classes, n_test),
        ),
    }


def _files(directory):
    return sorted(f for f in os.listdir(directory))


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _decoded_records(directory, manifest, split):
    """(image, label) pairs of a split, parsed and decoded by TensorFlow's reference ops."""
    files = [os.path.join(directory, s["file"]) for s in manifest["splits"][split]["shards"]]
    ds = tf.data.TFRecordDataset(files, compression_type=manifest["compression"] or "")
    out = []
    for record in ds:
        ex = tf.io.parse_single_example(record, SPEC)
        image = tf.io.decode_png(ex["image/encoded"]).numpy()
        assert image.shape == (
            ex["image/height"].numpy(),
            ex["image/width"].numpy(),
            ex["image/channels"].numpy(),
        )
        out.append((image, int(ex["image/class/label"])))
    return out


def _as_multiset(pairs):
    return sorted((label, image.tobytes()) for image, label in pairs)


@pytest.mark.parametrize("runner", ["default", "DirectRunner"])
def test_beam_shards_and_manifest_are_byte_identical_to_the_local_writer(
    tmp_path, monkeypatch, runner
):
    data = _arrays()
    local = tfrecord_tools.convert(
        data, tmp_path / "local", num_shards=3, name="toy", progress=False
    )
    options = None
    if runner == "DirectRunner":
        # The DirectRunner first tries Prism; a missing local binary makes that fail at once
        # (no download attempt) and it falls back to its in-process engine. Its leftover empty
        # temporary directory lands in tmp_path.
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        options = ["--runner=DirectRunner", f"--prism_location={tmp_path / 'no-prism-binary'}"]
    beam = convert_beam(
        data, str(tmp_path / "beam"), num_shards=3, name="toy", pipeline_options=options
    )

    assert beam == local
    assert (
        _files(tmp_path / "beam")
        == _files(tmp_path / "local")
        == sorted(
            ["manifest.json", *tfds_files(beam)]
            + [f"toy-{s}.tfrecord-{i:05d}-of-00003" for s in ("train", "test") for i in range(3)]
        )
    )
    for name in _files(tmp_path / "local"):
        assert _read_bytes(tmp_path / "beam" / name) == _read_bytes(tmp_path / "local" / name), name


def test_beam_output_decodes_to_the_source_arrays_with_numpy_statistics(tmp_path):
    data = _arrays(seed=1)
    manifest = convert_beam(data, str(tmp_path / "out"), num_shards=4, name="toy")

    for split, (x, y) in data.items():
        entry = manifest["splits"][split]
        assert entry["num_records"] == entry["num_source_records"] == len(y)
        assert entry["label_counts"] == np.bincount(y).tolist()
        for shard in entry["shards"]:
            digest = hashlib.sha256(_read_bytes(tmp_path / "out" / shard["file"])).hexdigest()
            assert digest == shard["sha256"]
        assert _as_multiset(_decoded_records(tmp_path / "out", manifest, split)) == _as_multiset(
            zip(x, y)
        )
    report = tfrecord_tools.verify(str(tmp_path / "out"), decode_images=True)
    assert report.ok, str(report)
    assert (report.shards, report.records) == (8, 150)
    pixels = data["train"][0].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(manifest["mean"], pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(manifest["std"], pixels.std(axis=0), rtol=1e-12)


def test_beam_gzip_output_with_parallel_direct_runner_matches_the_local_writer(tmp_path):
    data = _arrays(seed=2)
    local = tfrecord_tools.convert(
        data, tmp_path / "local", num_shards=2, name="toy", compression="GZIP", progress=False
    )
    beam = convert_beam(
        data,
        str(tmp_path / "beam"),
        num_shards=2,
        name="toy",
        compression="GZIP",
        pipeline_options=["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
    )
    assert beam == local
    assert beam["compression"] == "GZIP"
    pairs = _decoded_records(tmp_path / "beam", beam, "test")
    assert _as_multiset(pairs) == _as_multiset(zip(*data["test"]))


def _image_folder(root, rng):
    from PIL import Image

    images = {}
    for cls in ("cat", "dog"):
        os.makedirs(root / cls)
        for i in range(5):
            img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
            images[f"{cls}/{i}.png"] = img
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return images


def _without_addresses(manifest):
    return json.loads(re.sub(r" at 0x[0-9a-f]+", "", json.dumps(manifest)))


def test_beam_folder_source_skips_and_lists_a_corrupt_file_like_the_local_writer(tmp_path):
    folder = tmp_path / "folder"
    images = _image_folder(folder, np.random.default_rng(3))
    source = f"folder:{folder}"
    local = tfrecord_tools.convert(
        source, tmp_path / "local", num_shards=2, skip_corrupt=True, name="pets", progress=False
    )
    beam = convert_beam(
        source, str(tmp_path / "beam"), num_shards=2, skip_corrupt=True, name="pets"
    )

    # Pillow's message may name an in-memory buffer by its address ("<_io.BytesIO object at
    # 0x7f...>"), which differs between any two runs; everything else must match exactly.
    assert _without_addresses(beam) == _without_addresses(local)
    train = beam["splits"]["train"]
    # Named relative to the folder or absolutely, as the local writer chooses; both must agree.
    assert len(train["skipped"]) == 1
    assert train["skipped"][0]["filename"].endswith("dog/broken.png")
    # Counts reconcile: 10 decodable files written + 1 skipped = 11 files in the source.
    assert (train["num_records"], train["num_source_records"]) == (10, 11)
    assert beam["label_names"] == ["cat", "dog"]
    assert tfrecord_tools.verify(str(tmp_path / "beam")).ok
    decoded = _decoded_records(tmp_path / "beam", beam, "train")
    expected = [(img, 0 if name.startswith("cat") else 1) for name, img in images.items()]
    assert _as_multiset(decoded) == _as_multiset(expected)


def test_beam_without_skip_corrupt_fails_naming_the_corrupt_file(tmp_path):
    folder = tmp_path / "folder"
    _image_folder(folder, np.random.default_rng(4))
    with pytest.raises(Exception, match="broken.png"):
        convert_beam(f"folder:{folder}", str(tmp_path / "out"), num_shards=2, name="pets")
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_beam_rerun_keeps_verified_shards_and_rebuilds_a_damaged_one(tmp_path):
    data = _arrays(seed=5)
    out = tmp_path / "out"
    first = convert_beam(data, str(out), split="train", num_shards=3, name="toy")
    shards = [s["file"] for s in first["splits"]["train"]["shards"]]
    original = {f: _read_bytes(out / f) for f in shards}
    damaged = bytearray(original[shards[1]])
    damaged[len(damaged) // 2] ^= 0x01
    (out / shards[1]).write_bytes(bytes(damaged))
    untouched = {f: os.stat(out / f).st_mtime_ns for f in (shards[0], shards[2])}

    second = convert_beam(data, str(out), split="train", num_shards=3, name="toy")

    assert second == first
    assert {f: _read_bytes(out / f) for f in shards} == original
    assert {f: os.stat(out / f).st_mtime_ns for f in (shards[0], shards[2])} == untouched
    assert not [
        f for f in os.listdir(out) if ".tmp-" in f or f.endswith(".tfrecord-00001-of-00003.json")
    ]


def test_beam_refuses_an_output_holding_a_different_conversion(tmp_path):
    data = _arrays(seed=6)
    convert_beam(data, str(tmp_path / "out"), num_shards=2, name="toy", seed=0)
    with pytest.raises(ValueError, match=r"seed: existing 0 != requested 1"):
        convert_beam(data, str(tmp_path / "out"), num_shards=2, name="toy", seed=1)
    replaced = convert_beam(
        data, str(tmp_path / "out"), num_shards=2, name="toy", seed=1, overwrite=True
    )
    assert replaced["seed"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_shards": 0}, "`num_shards` must be an integer >= 1 or None. Received: num_shards=0"),
        ({"image_format": "gif"}, "`image_format` must be one of"),
        ({"num_shards": 500}, "at most the 120 records of split 'train'. Received: num_shards=500"),
    ],
)
def test_beam_rejects_bad_arguments_before_running(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        convert_beam(_arrays(), str(tmp_path / "out"), **{"name": "toy", **kwargs})
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_beam_command_line_converts_an_npz_file_and_reports_bad_sources(tmp_path, capsys):
    data = _arrays(seed=7)
    npz = tmp_path / "toy.npz"
    np.savez(npz, x_train=data["train"][0], y_train=data["train"][1])
    out = tmp_path / "out"

    assert main([f"numpy:{npz}", str(out), "--name", "toy", "--num-shards", "2", "--gzip"]) == 0
    manifest = json.loads(_read_bytes(out / "manifest.json"))
    assert manifest["source"] == f"numpy:{npz}"
    assert manifest["splits"]["train"]["num_records"] == 120
    assert manifest["compression"] == "GZIP"
    assert "train: 120 records in 2 shards" in capsys.readouterr().out

    assert main(["nosuchscheme:/x", str(tmp_path / "bad")]) == 2
    assert "`source` must be 'scheme:PATH'" in capsys.readouterr().err


class _Crash(RuntimeError):
    pass


def _crash(*args, **kwargs):
    raise _Crash("simulated crash before manifest.json is written")


def _shard_mtimes(directory):
    return {
        f: os.stat(directory / f).st_mtime_ns
        for f in os.listdir(directory)
        if ".tfrecord-" in f and not f.endswith(".json")
    }


def test_local_writer_finishes_an_interrupted_beam_run_without_rebuilding_shards(
    tmp_path, monkeypatch
):
    import tfrecord_tools.beam as beam_module

    data = _arrays(seed=8)
    expected = tfrecord_tools.convert(
        data, tmp_path / "reference", num_shards=3, name="toy", progress=False
    )
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(beam_module, "_write_manifest", _crash)
        with pytest.raises(Exception, match="simulated crash"):
            convert_beam(data, str(out), num_shards=3, name="toy")
    assert not os.path.exists(out / "manifest.json")
    committed = _shard_mtimes(out)
    assert len(committed) == 6

    resumed = tfrecord_tools.convert(data, out, num_shards=3, name="toy", progress=False)

    assert resumed == expected
    assert _shard_mtimes(out) == committed


def test_beam_finishes_an_interrupted_local_run_without_rebuilding_shards(tmp_path, monkeypatch):
    import tfrecord_tools.manifest as manifest_module

    data = _arrays(seed=9)
    expected = tfrecord_tools.convert(
        data, tmp_path / "reference", num_shards=3, name="toy", progress=False
    )
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(manifest_module, "write_manifest", _crash)
        with pytest.raises(_Crash):
            tfrecord_tools.convert(data, out, num_shards=3, name="toy", progress=False)
    assert not os.path.exists(out / "manifest.json")
    committed = _shard_mtimes(out)
    assert len(committed) == 6

    resumed = convert_beam(data, str(out), num_shards=3, name="toy")

    assert resumed == expected
    assert _shard_mtimes(out) == committed
    assert not [f for f in os.listdir(out) if ".tfrecord-" in f and f.endswith(".json")]


def test_beam_takes_the_same_output_lock_as_the_local_writer(tmp_path):
    from tfrecord_tools.lock import OutputLock, OutputLockedError
    from tfrecord_tools.storage import new_run_id

    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(str(out), new_run_id()):  # a live run of this process holds it
        with pytest.raises(OutputLockedError, match="is being written by another conversion"):
            convert_beam(_arrays(), str(out), num_shards=2, name="toy")
    assert os.listdir(out) == []  # refused before writing anything; the holder's lock is gone
    manifest = convert_beam(_arrays(), str(out), num_shards=2, name="toy")
    assert sorted(os.listdir(out)) == sorted(
        ["manifest.json", *tfds_files(manifest)]
        + [s["file"] for sp in manifest["splits"].values() for s in sp["shards"]]
    )
