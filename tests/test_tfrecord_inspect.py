"""tfrecord_tools.summary (the `inspect` function): the summary says when the files on disk
differ from the manifest, and the sample grid labels each row with its class name.

Oracles: the damage the test does (truncate, delete, add an unlisted shard file); the grid
layout computed here (row r = class r, cells of the image size + 2 px borders, right of a margin
as wide as the widest class name in PIL's default font plus 2 * 2 px); the arrays written.
"""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import tfrecord_tools
from tfrecord_tools.summary import format_summary, inspect, sample_grid

NAMES = ["T-shirt/top", "Bag", "c", "d"]


def _dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 10, 9), dtype=np.uint8)
    y = np.arange(40) % 4
    out = str(tmp_path / "ds")
    tfrecord_tools.write_shards(
        x, y, out, num_shards=3, name="t", label_names=NAMES, progress=False
    )
    return out, x, y


def test_clean_dataset_has_no_problems(tmp_path):
    out, _, _ = _dataset(tmp_path)
    summary = inspect(out)
    assert summary["problems"] == [] and "WARNING" not in format_summary(summary)


def test_summary_names_every_file_that_differs_from_the_manifest(tmp_path):
    out, _, _ = _dataset(tmp_path)
    files = [s["file"] for s in tfrecord_tools.read_manifest(out)["splits"]["train"]["shards"]]
    with open(f"{out}/{files[0]}", "r+b") as f:
        size = len(f.read())
        f.truncate(size - 5)
    (tmp_path / "ds" / files[2]).unlink()
    (tmp_path / "ds" / "t-train.tfrecord-00000-of-00002").write_bytes(b"old run")
    summary = inspect(out)
    assert summary["problems"] == [
        (files[0], f"{size - 5} bytes, manifest.json says {size}"),
        (files[2], "missing"),
        ("t-train.tfrecord-00000-of-00002", "shard file not listed in manifest.json"),
    ]
    text = format_summary(summary)
    assert "WARNING: 3 file(s) on disk do not match manifest.json" in text
    assert f"tfrecord-tools verify {out}" in text and files[2] in text


def test_grid_rows_are_labelled_with_their_class_names(tmp_path):
    out, x, y = _dataset(tmp_path)
    grid_path = str(tmp_path / "grid.png")
    summary = inspect(out, grid_path=grid_path, samples_per_class=3)
    with Image.open(io.BytesIO(open(grid_path, "rb").read())) as pil:
        grid = np.asarray(pil)
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = max(int(np.ceil(draw.textlength(n, font=font))) for n in NAMES) + 2 * 2
    assert grid.shape == (4 * (10 + 2) + 2, margin + 3 * (9 + 2) + 2)
    assert summary["grid_classes"] == [0, 1, 2, 3]
    for r in range(4):
        label_area = grid[2 + r * 12 : 2 + r * 12 + 10, :margin]
        assert (label_area < 128).any(), f"row {r} has no label text"
        cell = grid[2 + r * 12 : 2 + r * 12 + 10, margin + 2 : margin + 2 + 9]
        assert any(np.array_equal(cell, x[i]) for i in np.flatnonzero(y == r))
    # Different names draw differently; the margin of "Bag" is not that of "T-shirt/top".
    assert not np.array_equal(grid[2:12, :margin], grid[14:24, :margin])


def test_sample_grid_without_labels_keeps_the_plain_layout():
    rows = [[np.zeros((8, 8, 1), np.uint8)] * 3, [np.ones((8, 8, 1), np.uint8)] * 3]
    assert sample_grid(rows, 3).shape == (2 * (8 + 2) + 2, 3 * (8 + 2) + 2, 1)
    rgba = [[np.zeros((4, 4, 4), np.uint8)]]
    labelled = sample_grid(rgba, 1, row_labels=["x"])
    assert labelled.shape[2] == 4 and (labelled[:, :, 3][:, :-6] == 255).all()  # opaque margin


def test_sample_grid_rejects_bad_arguments_in_the_keras_message_style():
    rows = [[np.zeros((4, 4, 1), np.uint8)], [np.ones((4, 4, 1), np.uint8)]]
    with pytest.raises(ValueError, match="`images_by_class` must be .*Received: images_by_class="):
        sample_grid([[], []], 3)
    with pytest.raises(ValueError, match="`samples_per_class` must be an integer >= 1"):
        sample_grid(rows, 0)
    with pytest.raises(
        ValueError, match=r"one label per row .*\(2\). Received: row_labels=\['a'\]"
    ):
        sample_grid(rows, 1, row_labels=["a"])


def test_functions_do_not_shadow_their_modules_and_old_import_paths_still_work():
    from tfrecord_tools.inspect import format_summary as old_format_summary
    from tfrecord_tools.verify import VerifyResult

    import tfrecord_tools.summary
    import tfrecord_tools.verification

    assert callable(tfrecord_tools.inspect) and callable(tfrecord_tools.verify)
    assert tfrecord_tools.inspect is tfrecord_tools.summary.inspect
    assert tfrecord_tools.verify is tfrecord_tools.verification.verify
    assert old_format_summary is format_summary
    assert VerifyResult is tfrecord_tools.verification.VerifyResult
