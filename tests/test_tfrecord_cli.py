"""`tfrecord-tools convert | verify | inspect`: exit codes, messages, the manifest and the grid.

Oracles: the CLI's documented exit codes (0 ok, 1 verify failed, 2 error); the arrays written
into the `.npz` source; the grid layout (row r = class r, cell size + 2 px border) computed here;
`tfrecord_tools.convert`'s keyword arguments and defaults for the shared convert options.
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tfrecord_tools
from tfrecord_tools.cli import (
    ABSL_BANNER,
    add_convert_arguments,
    convert_arguments,
    is_startup_noise,
    main,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        # Keras's message style: "`name` must be <what is allowed>. Received: name=<value>".
        (
            ["--num-shards", "0"],
            "`num_shards` must be an integer >= 1 or None. Received: num_shards=0",
        ),
        (
            ["--quality", "0", "--image-format", "jpeg"],
            "`quality` must be an integer >= 1 and <= 100. Received: quality=0",
        ),
        (["--split", "valid"], "Received: split=['valid']"),
    ],
)
def test_bad_convert_arguments_exit_2_with_the_reason(tmp_path, npz, capsys, argv, message):
    path, _, _ = npz
    assert main(["convert", f"numpy:{path}", str(tmp_path / "o"), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_source_and_existing_different_output_exit_2(tmp_path, npz, capsys):
    path, _, _ = npz
    assert main(["convert", "mnist", str(tmp_path / "o"), "--quiet"]) == 2
    assert "`source` must be 'scheme:PATH'" in capsys.readouterr().err
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


def test_version_option_prints_the_distribution_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"tfrecord-tools {tfrecord_tools.__version__}\n"


def _version_in_a_copy(tmp_path, version_file_text):
    """`tfrecord_tools.__version__` of a copy of the package, with or without a
    keras_tricks/_version.py beside it, imported in a fresh process."""
    shutil.copytree(
        os.path.join(ROOT, "tfrecord_tools"),
        tmp_path / "tfrecord_tools",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    if version_file_text is not None:
        (tmp_path / "keras_tricks").mkdir()
        (tmp_path / "keras_tricks" / "_version.py").write_text(version_file_text)
    script = "import sys, tfrecord_tools; assert 'keras_tricks' not in sys.modules; "
    script += "print(tfrecord_tools.__file__); print(tfrecord_tools.__version__)"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, version = proc.stdout.split()
    assert where == str(tmp_path / "tfrecord_tools" / "__init__.py")  # the copy, not the repo
    return version


def test_version_is_read_from_keras_tricks_version_file_without_importing_it(tmp_path):
    text = '"""Doc."""\n\n__version__ = "9.8.7rc1"\n'
    assert _version_in_a_copy(tmp_path, text) == "9.8.7rc1"


def test_version_falls_back_to_the_installed_metadata(tmp_path):
    import importlib.metadata

    try:
        expected = importlib.metadata.version("keras-tricks")
    except importlib.metadata.PackageNotFoundError:
        expected = "0+unknown"  # neither the file nor an installed distribution
    assert _version_in_a_copy(tmp_path, None) == expected


# TensorFlow 2.21's start-up log on a CPU machine, as it printed it here (`import tensorflow`,
# then the first device query), and lines that must never be hidden.
TF_STARTUP_LINES = [
    ABSL_BANNER,
    "I0000 00:00:1796128050.149474   24394 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796128050.149806   24394 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796128052.660637   28471 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL_LINES = [
    "W0000 00:00:1796128052.660637   28471 op_kernel.cc:1857] OP_REQUIRES failed at "
    "example_parsing_ops.cc:98 : INVALID_ARGUMENT: Feature: image/encoded (data type: string) "
    "is required but could not be found.",
    "E0000 00:00:1796128052.660637   28471 gcs_file_system.cc:470] GCS: permission denied",
    "tfrecord_tools.writer: skipped 2 unreadable images",
    "Traceback (most recent call last):",
    "UserWarning: Your input ran out of data",
]


def test_startup_noise_is_the_banner_info_lines_and_missing_gpu_reports_only():
    assert all(is_startup_noise(line) for line in TF_STARTUP_LINES)
    assert all(is_startup_noise(line + "\n") for line in TF_STARTUP_LINES)
    assert not any(is_startup_noise(line) for line in REAL_LINES)


FAKE_TENSORFLOW = """
import os, sys
lines = {startup!r}
os.write(2, (lines[0] + "\\n" + lines[1] + "\\n" + {real!r} + "\\n").encode())
sys.stderr.write("from Python during the import\\n")
os.write(2, (lines[0] + "\\n" + lines[2] + "\\n").encode())  # the second copy of absl


class config:
    @staticmethod
    def list_physical_devices():
        os.write(2, (lines[3] + "\\n").encode())
        return []
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_startup_filters_only_the_noise_of_the_first_tensorflow_import(tmp_path, verbose):
    # A stand-in `tensorflow` package that logs like TF 2.21, in a fresh interpreter.
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(
        FAKE_TENSORFLOW.format(startup=TF_STARTUP_LINES, real=REAL_LINES[0])
    )
    script = f"""
import os, sys
from tfrecord_tools.cli import quiet_tensorflow_startup
with quiet_tensorflow_startup(verbose={verbose}):
    import tensorflow
    print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
print(type(tensorflow.__loader__).__name__, type(tensorflow.__spec__.loader).__name__)
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), len(sys.meta_path))
sys.stderr.write("after the block\\n")
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), ROOT])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    level, loaders, after = proc.stdout.splitlines()
    baseline = subprocess.run(
        [sys.executable, "-c", "import sys; print(len(sys.meta_path))"],
        env=env, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert after == f"None {baseline}"  # the environment and the import system as they were
    assert loaders == "SourceFileLoader SourceFileLoader"
    if verbose:
        assert level == "None"
        expected = [TF_STARTUP_LINES[0], TF_STARTUP_LINES[1], REAL_LINES[0]]
        expected += ["from Python during the import", TF_STARTUP_LINES[0], TF_STARTUP_LINES[2]]
        expected += ["after the block"]  # and nothing lists the devices
    else:
        assert level == "1"
        expected = [REAL_LINES[0], "from Python during the import", "after the block"]
    assert proc.stderr.splitlines() == expected


def clean_environment():
    """This environment without TF_CPP_MIN_LOG_LEVEL: what a user's shell has."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    return env


def tensorflow_startup_log():
    """What plain `import tensorflow` and a device query print to stderr here: the reference.

    Returns (import lines, device-query lines), each without absl's time/thread prefix."""
    script = "import sys, tensorflow as tf; print('--devices--', file=sys.stderr, flush=True)"
    script += "; tf.config.list_physical_devices()"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    at_import, _, at_devices = proc.stderr.partition("--devices--\n")
    return message_lines(at_import), message_lines(at_devices)


def message_lines(text):
    # absl's prefix carries a time stamp and a thread id: compare what follows "] ".
    return [line.split("] ", 1)[-1] for line in text.splitlines() if line.strip()]


def tfrecord_tools_command():
    script = os.path.join(os.path.dirname(sys.executable), "tfrecord-tools")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "tfrecord_tools.cli"]


@pytest.mark.slow
def test_commands_print_no_tensorflow_startup_log_unless_verbose(tmp_path, npz):
    at_import, at_devices = tensorflow_startup_log()
    path, _, _ = npz
    out = tmp_path / "out"

    def run(*args):
        proc = subprocess.run(
            tfrecord_tools_command() + list(args),
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return message_lines(proc.stderr)

    convert = run("convert", f"numpy:{path}", str(out), "--num-shards", "2")
    assert "toy-test,train: 100%" in " ".join(convert)  # the progress bar still shows
    assert not set(convert) & set(at_import + at_devices)
    inspect = run("inspect", str(out))
    assert not set(inspect) & set(at_import + at_devices)
    verbose = run("inspect", str(out), "--verbose")
    assert set(at_import) <= set(verbose)  # --verbose shows the log of a plain import


def test_every_command_and_option_has_help(capsys):
    from tfrecord_tools.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"convert", "verify", "inspect"}
    for name, command in sub.choices.items():
        assert command.description and command.description.endswith("."), name
        missing = [a.dest for a in command._actions if not a.help]
        assert missing == [], name
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert " ".join(command.description.split()) in text  # whole, not cut off
