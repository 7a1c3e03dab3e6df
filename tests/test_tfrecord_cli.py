"""`tfrecord-tools convert | verify | inspect`: exit codes, messages, the manifest and the grid.

Oracles: the CLI's documented exit codes (0 ok, 1 verify failed, 2 error); the arrays written
into the `.npz` source; the grid layout (row r = class r, cell size + 2 px border) computed here;
`tfrecord_tools.convert`'s keyword arguments and defaults for the shared convert options.
"""

import argparse
import io
import json

import numpy as np
import pytest
from PIL import Image

from tfrecord_tools.cli import add_convert_arguments, convert_arguments, main


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (40, 10, 9), dtype=np.uint8)
    y_train = np.arange(40) % 4
    x_test, y_test = x_train[:8], y_train[:8]
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path, x_train, y_train


def test_convert_verify_inspect_round_trip(tmp_path, npz, capsys):
    path, x_train, y_train = npz
    out = tmp_path / "out"
    code = main(
        ["convert", f"numpy:{path}", str(out), "--num-shards", "3", "--num-workers", "2",
         "--label-names", "a,b,c,d", "--quiet"]
    )  # fmt: skip
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "toy" and manifest["label_names"] == ["a", "b", "c", "d"]
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]][
        0
    ] == "toy-train.tfrecord-00000-of-00003"
    assert manifest["splits"]["train"]["label_counts"] == [10, 10, 10, 10]

    assert main(["verify", str(out), "--decode"]) == 0
    assert "OK:" in capsys.readouterr().out

    grid_path = tmp_path / "grid.png"
    assert main(["inspect", str(out), "--grid", str(grid_path), "--samples-per-class", "3"]) == 0
    text = capsys.readouterr().out
    assert "split train: 40 records in 3 shards" in text and "sample grid" in text
    with Image.open(io.BytesIO(grid_path.read_bytes())) as pil:
        grid = np.asarray(pil)
    # 4 classes x 3 samples, 2 px borders, after a left margin holding the class names.
    margin = grid.shape[1] - (3 * (9 + 2) + 2)
    assert grid.shape[0] == 4 * (10 + 2) + 2 and margin > 2 * 2
    # Row r, column 0 holds an image of class r from the training split.
    cell = grid[2 + 1 * 12 : 2 + 1 * 12 + 10, margin + 2 : margin + 2 + 9]
    assert any(np.array_equal(cell, x_train[i]) for i in np.flatnonzero(y_train == 1))


def test_convert_only_the_named_split_with_gzip_and_raw(tmp_path, npz):
    path, _, _ = npz
    out = tmp_path / "out"
    assert main(["convert", f"numpy:{path}", str(out), "--split", "test", "--num-shards", "2",
                 "--gzip", "--image-format", "raw", "--name", "t", "--quiet"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["splits"]) == ["test"] and manifest["compression"] == "GZIP"


def test_verify_exits_1_and_names_the_bad_shard(tmp_path, npz, capsys):
    path, _, _ = npz
    out = tmp_path / "out"
    assert main(["convert", f"numpy:{path}", str(out), "--num-shards", "2", "--quiet"]) == 0
    bad = out / "toy-test.tfrecord-00001-of-00002"
    bad.write_bytes(bad.read_bytes()[:-1])
    assert main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "toy-test.tfrecord-00001-of-00002" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-shards", "0"], "num_shards must be a positive integer; received 0"),
        (["--quality", "0", "--image-format", "jpeg"], "quality must be an integer in 1..100"),
        (["--split", "valid"], "split ['valid'] not in source"),
    ],
)
def test_bad_convert_arguments_exit_2_with_the_reason(tmp_path, npz, capsys, argv, message):
    path, _, _ = npz
    assert main(["convert", f"numpy:{path}", str(tmp_path / "o"), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_source_and_existing_different_output_exit_2(tmp_path, npz, capsys):
    path, _, _ = npz
    assert main(["convert", "mnist", str(tmp_path / "o"), "--quiet"]) == 2
    assert "source must be 'scheme:PATH'" in capsys.readouterr().err
    out = str(tmp_path / "o2")
    assert main(["convert", f"numpy:{path}", out, "--num-shards", "2", "--quiet"]) == 0
    assert (
        main(["convert", f"numpy:{path}", out, "--num-shards", "2", "--seed", "1", "--quiet"]) == 2
    )
    assert "already holds a different conversion" in capsys.readouterr().err
    assert (
        main(
            [
                "convert",
                f"numpy:{path}",
                out,
                "--num-shards",
                "2",
                "--seed",
                "1",
                "--overwrite",
                "--quiet",
            ]
        )
        == 0
    )


def test_verify_of_a_directory_without_manifest_exits_1(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 1
    assert "No manifest.json" in capsys.readouterr().err


def test_shared_convert_options_map_to_the_convert_keyword_arguments():
    parser = add_convert_arguments(argparse.ArgumentParser())
    argv = ["idx:d", "out", "--name", "ds", "--num-shards", "4", "--image-format", "jpeg"]
    argv += ["--quality", "80", "--gzip", "--seed", "3", "--no-shuffle", "--skip-corrupt"]
    argv += ["--label-names", "a,b", "--overwrite", "--alpha", "composite"]
    assert convert_arguments(parser.parse_args(argv)) == {
        "num_shards": 4,
        "image_format": "jpeg",
        "name": "ds",
        "quality": 80,
        "compression": "GZIP",
        "seed": 3,
        "shuffle": False,
        "skip_corrupt": True,
        "label_names": ["a", "b"],
        "overwrite": True,
        "alpha": "composite",
    }
    defaults = convert_arguments(parser.parse_args(["idx:d", "out"]))
    assert defaults == {
        "num_shards": None,
        "image_format": "png",
        "name": None,
        "quality": 95,
        "compression": None,
        "seed": 0,
        "shuffle": True,
        "skip_corrupt": False,
        "label_names": None,
        "overwrite": False,
        "alpha": "error",
    }
