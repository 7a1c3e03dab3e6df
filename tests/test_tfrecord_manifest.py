"""tfrecord_tools.manifest: names, checksums, statistics, reconciliation, atomic writes.

Oracles: hashlib and NumPy's float64 mean/std on the same pixels; the tfds shard-name format
written out by hand; the reconciliation rule (written + skipped == source) from the issue.
"""

import hashlib
import json

import numpy as np
import pytest

from tfrecord_tools import manifest as mf


def test_shard_names_follow_the_tfds_pattern():
    assert (
        mf.shard_name("fashion_mnist", "train", 3, 16)
        == "fashion_mnist-train.tfrecord-00003-of-00016"
    )
    assert mf.shard_glob("a", "test") == "a-test.tfrecord-*-of-*"


def test_sha256_file_equals_hashlib_over_the_bytes(tmp_path):
    data = bytes(range(256)) * 50_000  # 12.8 MB: several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert mf.sha256_file(str(path), chunk_size=1 << 20) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
    )


def test_merged_pixel_stats_give_numpy_mean_and_population_std():
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8) for n in (7, 1, 12)]
    stats = mf.merge_pixel_stats([mf.pixel_stats([s]) for s in shards])
    mean, std = mf.mean_std(stats)
    allpix = np.concatenate([s.reshape(-1, 3) for s in shards]).astype(np.float64)
    np.testing.assert_allclose(mean, allpix.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, allpix.std(0), rtol=1e-12)


def test_pixel_stats_of_a_constant_image_have_zero_std():
    mean, std = mf.mean_std(mf.pixel_stats([np.full((3, 3), 200, np.uint8)]))
    assert mean == [200.0] and std == [0.0]


def _shard(file, n, skipped=()):
    return mf.shard_entry(
        file, n, "0" * 64, 10, [n], {"count": n, "sum": [n], "sum_sq": [n]}, skipped, [(1, 1, 1)]
    )


def test_split_entry_requires_written_plus_skipped_to_equal_the_source_count():
    shards = [_shard("a", 3), _shard("b", 2, [{"filename": "x.png", "error": "bad"}])]
    entry = mf.split_entry(shards, 6)
    assert (entry["num_records"], entry["num_source_records"], entry["skipped"]) == (
        5,
        6,
        [{"filename": "x.png", "error": "bad"}],
    )
    with pytest.raises(
        ValueError, match=r"5 records written \+ 1 skipped != 7 records in the source"
    ):
        mf.split_entry(shards, 7)


def test_manifest_round_trips_and_takes_train_statistics(tmp_path):
    train = mf.split_entry([_shard("a", 4)], 4)
    test = mf.split_entry([_shard("b", 2)], 2)
    manifest = mf.build_manifest("ds", "arrays", {"test": test, "train": train}, label_names=["x"])
    mf.write_manifest(str(tmp_path), manifest)
    assert [p.name for p in tmp_path.iterdir()] == [mf.MANIFEST_NAME]  # no temporary left over
    loaded = mf.read_manifest(str(tmp_path))
    assert loaded == json.loads(json.dumps(manifest))
    assert loaded["mean"] == train["mean"] and loaded["image_shape"] == [1, 1, 1]


def test_read_manifest_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No manifest.json"):
        mf.read_manifest(str(tmp_path))
    (tmp_path / mf.MANIFEST_NAME).write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="is not a tfrecord_tools/1 manifest"):
        mf.read_manifest(str(tmp_path))


@pytest.mark.parametrize("bad", ["", "a-b", "a/b", "has space", 3])
def test_check_name_rejects_characters_that_break_shard_names(bad):
    with pytest.raises(ValueError, match="`name` must be a non-empty string.*Received: name="):
        mf.check_name(bad, "name")
