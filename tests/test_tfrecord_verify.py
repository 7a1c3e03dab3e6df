"""tfrecord_tools.verify: damaged shards are found and named; clean datasets pass.

Oracles: the damage the test does itself (truncate, flip one bit, delete, swap in a record whose
image bytes are not a PNG while keeping sha256/size consistent, edit a count in the manifest);
hashlib for the checksums the test rewrites.
"""

import hashlib
import json

import numpy as np
import pytest

import tfrecord_tools
from tfrecord_tools.example import serialize_encoded
from tfrecord_tools.writer import frame_record


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 5, 48)
    out = tmp_path / "ds"
    manifest = tfrecord_tools.write_shards(x, y, str(out), num_shards=4, name="d", progress=False)
    return out, [s["file"] for s in manifest["splits"]["train"]["shards"]]


def test_clean_dataset_verifies_with_and_without_decoding(dataset):
    out, _ = dataset
    for decode in (False, True):
        result = tfrecord_tools.verify(str(out), decode_images=decode)
        assert result.ok and bool(result) and (result.records, result.shards) == (48, 4)
        assert str(result).startswith("OK:")


def test_truncated_shard_is_named(dataset):
    out, files = dataset
    path = out / files[2]
    path.write_bytes(path.read_bytes()[:-10])
    result = tfrecord_tools.verify(str(out))
    assert not result.ok and result.bad_shards == [files[2]]
    messages = " | ".join(m for f, m in result.problems)
    assert "size" in messages and "sha256" in messages and "unreadable" in messages
    assert files[2] in str(result)


def test_single_flipped_bit_is_named(dataset):
    out, files = dataset
    path = out / files[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    result = tfrecord_tools.verify(str(out))
    assert result.bad_shards == [files[1]]
    assert any("sha256" in m for _, m in result.problems)


def test_every_bad_shard_is_named_including_missing_ones(dataset):
    out, files = dataset
    (out / files[0]).unlink()
    (out / files[3]).write_bytes(b"")
    result = tfrecord_tools.verify(str(out))
    assert result.bad_shards == [files[0], files[3]]
    assert (files[0], "missing") in result.problems


def test_decode_check_finds_an_undecodable_image_behind_a_consistent_checksum(dataset):
    out, files = dataset
    # A well-framed record whose image bytes are not a PNG; manifest updated to match, so only
    # decoding can tell.
    bad = frame_record(serialize_encoded(b"not a png", "png", 8, 8, 3, 0, "train/x"))
    path = out / files[0]
    data = path.read_bytes() + bad
    path.write_bytes(data)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    shard.update(
        num_records=shard["num_records"] + 1,
        num_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    shard["label_counts"][0] += 1
    manifest["splits"]["train"]["num_records"] += 1
    manifest["splits"]["train"]["num_source_records"] += 1
    manifest_path.write_text(json.dumps(manifest))
    assert tfrecord_tools.verify(str(out)).ok
    result = tfrecord_tools.verify(str(out), decode_images=True)
    assert result.bad_shards == [files[0]]


def test_counts_that_do_not_reconcile_in_the_manifest_fail(dataset):
    out, _ = dataset
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"]["train"]["num_source_records"] += 1  # one record silently dropped
    manifest_path.write_text(json.dumps(manifest))
    result = tfrecord_tools.verify(str(out))
    assert not result.ok and "counts do not reconcile" in str(result)


def test_leftover_temporary_file_is_a_warning_not_a_failure(dataset):
    out, files = dataset
    (out / (files[0] + ".tmp-1-abcd")).write_bytes(b"partial")
    result = tfrecord_tools.verify(str(out))
    assert result.ok and [w for w, _ in result.warnings] == [files[0] + ".tmp-1-abcd"]


def test_directory_without_manifest_fails(tmp_path):
    result = tfrecord_tools.verify(str(tmp_path))
    assert not result.ok and "No manifest.json" in str(result)


def test_verify_shows_progress_of_the_records_checked_like_convert(dataset, capsys):
    from tfrecord_tools.cli import main

    out, _ = dataset
    assert main(["verify", str(out), "--decode"]) == 0
    captured = capsys.readouterr()
    assert "verify --decode" in captured.err and "100%" in captured.err
    assert "48.0/48.0" in captured.err  # tqdm's n/total of the 48 records
    assert "OK:" in captured.out
    assert main(["verify", str(out), "--decode", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert tfrecord_tools.verify(str(out), progress=False).ok
    assert capsys.readouterr().err == ""
