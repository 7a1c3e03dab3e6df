"""The README's promises: the Quick start is exactly two commands, and its usage example runs."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _section(title):
    text = open(README, encoding="utf-8").read()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_quick_start_is_exactly_make_demo_and_make_test():
    blocks = re.findall(r"```\n(.*?)```", _section("Quick start"), re.S)
    assert [line for line in blocks[0].splitlines() if line.strip()] == ["make demo", "make test"]


def test_every_documented_object_exists():
    # Each "built" row of the tricks table names objects (`module.attr`) that must exist.
    import importlib

    rows = [r for r in _section("The tricks").splitlines() if r.endswith("| built |")]
    assert len(rows) >= 30
    for row in rows:
        for ref in re.findall(r"`([a-z_]+(?:\.[A-Za-z_0-9]+)+)", row.split("|")[3]):
            module, _, attr = ref.rpartition(".")
            if not module.startswith("tfrecord_tools"):
                module = f"keras_tricks.{module}"
            assert hasattr(importlib.import_module(module), attr), f"README names {ref}"


@pytest.mark.slow
def test_usage_example_trains_on_a_subset(tmp_path, fashion_mnist_dir):
    code = re.findall(r"```python\n(.*?)```", _section("Using it from `model.fit`"), re.S)[0]
    line = "batch_size, epochs = 512, 10"
    assert line in code
    # The same code on 512 images for one epoch, so it fits in the test budget.
    code = code.replace(
        line,
        "batch_size, epochs = 128, 1\n"
        "x_train, y_train, x_test, y_test = x_train[:512], y_train[:512], x_test[:256], y_test[:256]",
    )
    code += (
        "\nimport numpy as np\n"
        "h = model.history.history\n"
        "assert np.isfinite(h['loss']).all() and 'val_accuracy' in h\n"
        "print('OK', h['learning_rate'][-1])\n"
    )
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # 512 / 128 = 4 warmup steps end exactly at the decay's step-0 value: the Goyal-scaled peak
    # 0.1 * 128 / 256 = 0.05 times linear-cosine's (alpha + 1) * 1 + beta = 1.001 (TF defaults).
    assert float(out.stdout.split("OK")[-1]) == pytest.approx(0.05 * 1.001, rel=1e-6)
