"""Tests for the `keras-tricks` console script."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import keras_tricks
import tfrecord_tools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def console_script(name, module):
    # The console script installed by `pip install -e .` next to this interpreter; fall back to
    # the module when the package is not installed.
    script = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(script):
        return [script]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", module]


def keras_tricks_command():
    return console_script("keras-tricks", "keras_tricks.cli")


def tfrecord_tools_command():
    return console_script("tfrecord-tools", "tfrecord_tools.cli")


def run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        keras_tricks_command() + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


@pytest.mark.slow
def test_demo_quick_writes_valid_pngs_and_reports_lr_and_accuracy(tmp_path, fashion_mnist_dir):
    out = tmp_path / "demo"
    proc = run(["demo", "--output", str(out), "--quick", "--data-dir", fashion_mnist_dir])
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ("lr_finder", "schedule", "training_curves", "augmentation", "confusion_matrix")
    report = (out / "report.md").read_text()
    for name in names:
        path = out / f"{name}.png"
        assert str(path.resolve()) in proc.stdout
        assert f"]({name}.png)" in report  # report.md links every picture
        with Image.open(path) as image:
            image.verify()  # raises on a corrupt PNG
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size[0] >= 500 and image.size[1] >= 300
    summary = json.loads((out / "demo_summary.json").read_text())
    # The last lines are the promised ones: the accuracy with four digits, then the wall time.
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == f"test accuracy: {summary['test_accuracy']:.4f}"
    assert lines[-1].startswith("wall time: ")
    assert 1e-4 <= summary["suggested_learning_rate"] <= 10.0  # inside the swept range
    # Ten balanced classes: chance is 0.1; even the quick run must clearly beat it.
    assert summary["test_accuracy"] > 0.3
    assert set(summary["accuracies"]) == {"raw", "ema", "ema_tta"}
    # The TFRecord shards came from tfrecord_tools, with their manifest.
    manifest = json.loads((out / "tfrecords-quick" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["num_records"] == 10_000
    assert (out / "run" / "model.keras").exists()


def test_demo_without_fashion_mnist_says_how_to_get_it(tmp_path):
    proc = run(["demo", "--output", str(tmp_path / "o"), "--data-dir", str(tmp_path / "none")])
    assert proc.returncode != 0
    assert "dataset-fashion-mnist" in proc.stderr
    assert "--data-dir" in proc.stderr
    assert not (tmp_path / "o").exists()


def clean_environment():
    """This environment without TF_CPP_MIN_LOG_LEVEL: what a user's shell has."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    return env


def stderr_messages(command):
    proc = subprocess.run(
        command, env=clean_environment(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # absl's prefix carries a time stamp and a thread id: compare what follows "] ".
    return proc.stdout, [line.split("] ", 1)[-1] for line in proc.stderr.splitlines()]


@pytest.mark.slow
def test_info_prints_no_tensorflow_startup_log_unless_verbose():
    # The reference: what a plain `import keras` + a device query prints here.
    script = "import keras, tensorflow as tf; tf.config.list_physical_devices()"
    _, plain = stderr_messages([sys.executable, "-c", script])
    stdout, quiet = stderr_messages(keras_tricks_command() + ["info"])
    assert not set(quiet) & set(plain)
    assert f"keras-tricks: {keras_tricks.__version__}" in stdout.splitlines()
    assert "tensorflow: " in stdout and "backend tensorflow" in stdout
    _, verbose = stderr_messages(keras_tricks_command() + ["info", "--verbose"])
    assert {line for line in plain if "cuInit" not in line} <= set(verbose)


def subcommand_parsers(parser):
    """{name: parser} of an argparse parser's subcommands."""
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def options_without_help(parser):
    import argparse

    return [
        action.dest
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]


def test_demo_help_prints_the_whole_description_and_help_for_every_option(capsys):
    from keras_tricks.cli import DEMO_DESCRIPTION, build_parser, main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert DEMO_DESCRIPTION.strip() in text  # verbatim, nothing cut off
    # Whole sentences: every paragraph and numbered step ends with its full stop or colon.
    steps = re.split(r"\n\n|\n(?=\d\. )", DEMO_DESCRIPTION.strip())
    assert len(steps) == 7 and all(step.rstrip()[-1] in ".:" for step in steps)
    for name, sub in subcommand_parsers(build_parser()).items():
        assert sub.description and sub.description.rstrip()[-1] == ".", name
        assert options_without_help(sub) == [], name
    demo = subcommand_parsers(build_parser())["demo"]
    for action in demo._actions:  # an option with a default says which
        if action.default not in (None, False) and action.dest != "help":
            assert str(action.default) in action.help % {"default": action.default}


def test_pick_peak_learning_rate_is_a_decade_below_the_minimum_clipped_to_half_and_twice():
    from types import SimpleNamespace

    from keras_tricks.cli import pick_peak_learning_rate

    def expected(min_loss_lr, default_lr):  # the rule, written out
        if min_loss_lr is None:
            return default_lr
        return min(max(min_loss_lr / 10, default_lr / 2), default_lr * 2)

    for min_loss_lr in (None, 0.5, 1.4, 2.78, 9.0):
        rate, reason = pick_peak_learning_rate(SimpleNamespace(min_loss_lr=min_loss_lr), 0.2)
        assert rate == pytest.approx(expected(min_loss_lr, 0.2), rel=1e-12)
        assert ("clipped" in reason) == (
            min_loss_lr is not None and not 0.1 <= min_loss_lr / 10 <= 0.4
        )
    with pytest.raises(ValueError, match="`default_lr` must be a finite number > 0"):
        pick_peak_learning_rate(SimpleNamespace(min_loss_lr=1.0), 0.0)
    with pytest.raises(ValueError, match="`result` must be a find_lr"):
        pick_peak_learning_rate(object(), 0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "`seed` must be an integer >= 0. Received: seed=-1"),
        ({"epochs": 0}, "`epochs` must be an integer >= 1 or None. Received: epochs=0"),
        ({"quick": "yes"}, "`quick` must be True or False. Received: quick='yes'"),
        ({"data_dir": 3}, "Received: data_dir=3"),
    ],
)
def test_run_demo_checks_its_arguments_before_writing_anything(tmp_path, kwargs, message):
    from keras_tricks.cli import run_demo

    with pytest.raises(ValueError) as error:
        run_demo(tmp_path / "out", **kwargs)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "-1"], "argument --seed: `seed` must be an integer >= 0. Received: seed=-1"),
        (["--epochs", "two"], "`epochs` must be an integer >= 1. Received: epochs='two'"),
    ],
)
def test_demo_options_are_checked_by_the_parser(capsys, argv, message):
    from keras_tricks.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *argv])
    assert exit_info.value.code == 2  # argparse's usage error, not a traceback
    assert message in capsys.readouterr().err


def test_cli_requires_a_subcommand():
    proc = run([])
    assert proc.returncode == 2
    assert "demo" in proc.stderr


def read_version_file():
    # The one place the version is written, read here as text (the oracle).
    with open(os.path.join(ROOT, "keras_tricks", "_version.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M).group(1)


def test_both_command_lines_print_the_one_version():
    version = read_version_file()
    assert keras_tricks.__version__ == tfrecord_tools.__version__ == version
    for command, prog in ((keras_tricks_command(), "keras-tricks"),
                          (tfrecord_tools_command(), "tfrecord-tools")):  # fmt: skip
        proc = subprocess.run(command + ["--version"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"{prog} {version}\n"


def tracked_files():
    """The repository's files that git tracks or would track (new, not ignored)."""
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: the file list comes from git")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [
        name for name in listed.split("\0") if name and os.path.isfile(os.path.join(ROOT, name))
    ]


def test_no_file_but_version_py_and_the_changelog_writes_the_version():
    version = read_version_file()
    # The version as a whole number (for 1.2.3: v1.2.3, keras_tricks-1.2.3.tar.gz), not part
    # of 11.2.3, 1.2.34 or 1.2.3.4.
    pattern = re.compile(r"(?<![\d.])" + re.escape(version) + r"(?!\.?\d)")
    allowed = {"keras_tricks/_version.py", "CHANGELOG.md"}
    offenders = []
    for name in tracked_files():
        if name in allowed:
            continue
        with open(os.path.join(ROOT, name), "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            # "accepted since 0.1.0" is history, still true after the next release.
            if pattern.search(line) and not re.search(r"\bsince " + re.escape(version), line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == [], "the version is written outside keras_tricks/_version.py"


# --- keras_tricks.runtime: what the demo and bench/recipe.py record ----------------------------
# (cpu_name, epoch_clock and time_to_reach moved here from the demo's module.)


def test_cpu_name_reads_the_model_name_line_of_cpuinfo(tmp_path):
    import platform

    from keras_tricks.runtime import cpu_name

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\n")
    assert cpu_name(str(cpuinfo)) == "AMD EPYC 9B45"
    fallback = platform.processor() or platform.machine()
    assert cpu_name(str(tmp_path / "missing")) == fallback


def test_time_to_reach_takes_the_first_epoch_at_or_above_each_threshold():
    from types import SimpleNamespace

    from keras_tricks.runtime import time_to_reach

    clock = SimpleNamespace(
        train_s=[10.0, 20.0, 30.0, 40.0],
        train_cpu_s=[19.0, 39.0, 58.0, 80.0],
        val_accuracy=[0.90, None, 0.93, 0.95],
    )
    # By the definition: 0.92 is first reached at epoch 3 (index 2); 0.96 never.
    assert time_to_reach(clock, thresholds=(0.92, 0.96)) == {
        "seconds_to_92": 30.0,
        "cpu_seconds_to_92": 58.0,
        "seconds_to_96": None,
        "cpu_seconds_to_96": None,
    }
    with pytest.raises(ValueError, match=r"Received: thresholds\[0\]=1.5"):
        time_to_reach(clock, thresholds=[1.5])
    with pytest.raises(ValueError, match="`clock` must be an epoch_clock"):
        time_to_reach(object())


def test_epoch_clock_records_each_epoch_and_stops_at_the_cpu_budget():
    import keras
    import numpy as np

    from keras_tricks.runtime import epoch_clock

    def fit(clock, epochs):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        y = (x[:, 0] > 0).astype("int64")
        return model.fit(
            x, y, validation_data=(x, y), epochs=epochs, verbose=0, callbacks=[clock]
        ).history

    clock = epoch_clock()
    history = fit(clock, 3)
    assert len(clock.train_s) == len(clock.train_cpu_s) == 3
    assert clock.train_s == sorted(clock.train_s) and clock.train_cpu_s == sorted(clock.train_cpu_s)
    assert clock.val_accuracy == [round(a, 4) for a in history["val_accuracy"]]
    # Any positive budget below the first epoch's CPU time stops training after that epoch.
    tiny = epoch_clock(budget_cpu_s=1e-9)
    assert len(fit(tiny, 5)["loss"]) == 1
    with pytest.raises(ValueError, match="`budget_cpu_s` must be a number > 0"):
        epoch_clock(budget_cpu_s=0)
