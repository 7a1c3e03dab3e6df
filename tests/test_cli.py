"""Tests for the `keras-tricks` console script."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image


def keras_tricks_command():
    # The console script installed by `pip install -e .` next to this interpreter; fall back to
    # the module when the package is not installed.
    script = os.path.join(os.path.dirname(sys.executable), "keras-tricks")
    if os.path.exists(script):
        return [script]
    found = shutil.which("keras-tricks")
    return [found] if found else [sys.executable, "-m", "keras_tricks.cli"]


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


def test_cli_requires_a_subcommand():
    proc = run([])
    assert proc.returncode == 2
    assert "demo" in proc.stderr
