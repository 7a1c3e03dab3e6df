"""Tests for keras_tricks.runtime: CPU defaults applied before TensorFlow is imported."""

import json
import os
import subprocess
import sys

import pytest

from keras_tricks import runtime


def _run(code, **env_overrides):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop(runtime.ONEDNN_ENV, None)
    env.update(env_overrides)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# TensorFlow's own answer to "are oneDNN kernels on?" is the oracle.
_TF_ONEDNN = (
    "from tensorflow.python.util import _pywrap_util_port\n"
    "tf_says = bool(_pywrap_util_port.IsMklEnabled())\n"
)


@pytest.mark.parametrize("onednn", [True, False])
def test_configure_cpu_before_import_sets_onednn_that_tensorflow_then_uses(onednn):
    code = (
        "import json, sys\n"
        "from keras_tricks import runtime\n"
        "assert 'tensorflow' not in sys.modules  # importing the module must not import TF\n"
        f"s = runtime.configure_cpu(onednn={onednn}, bfloat16=False)\n"
        + _TF_ONEDNN
        + "print(json.dumps({'settings': s, 'tf_says': tf_says}))\n"
    )
    out = _run(code)
    assert out["tf_says"] is onednn
    assert out["settings"]["TF_ENABLE_ONEDNN_OPTS"] == ("1" if onednn else "0")
    assert out["settings"]["dtype_policy"] == "float32"
    assert out["settings"]["jit_compile"] is False


def test_configure_cpu_after_tensorflow_import_warns_and_reports_the_real_state():
    code = (
        "import json, warnings\n"
        "import tensorflow\n"
        "from keras_tricks import runtime\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    s = runtime.configure_cpu(onednn=True, bfloat16=False)\n"
        + _TF_ONEDNN
        + "msgs = [str(w.message) for w in caught if w.category is RuntimeWarning]\n"
        "print(json.dumps({'settings': s, 'tf_says': tf_says, 'warnings': msgs}))\n"
    )
    out = _run(code, TF_ENABLE_ONEDNN_OPTS="0")
    assert out["tf_says"] is False
    assert out["settings"]["onednn_active"] is False
    assert len(out["warnings"]) == 1 and "TF_ENABLE_ONEDNN_OPTS=1" in out["warnings"][0]


def test_configure_cpu_bfloat16_sets_the_mixed_bfloat16_policy():
    code = (
        "import json\n"
        "from keras_tricks import runtime\n"
        "s = runtime.configure_cpu(bfloat16=True)\n"
        "import keras\n"
        "layer = keras.layers.Dense(2)\n"
        "print(json.dumps({'settings': s, 'compute': layer.compute_dtype,\n"
        "                  'variable': layer.variable_dtype}))\n"
    )
    out = _run(code)
    assert out["settings"]["dtype_policy"] == "mixed_bfloat16"
    assert (out["compute"], out["variable"]) == ("bfloat16", "float32")


def test_cpu_has_native_bfloat16_reads_the_cpu_flags(tmp_path):
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    avx2_only = tmp_path / "avx2"
    avx2_only.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert runtime.cpu_has_native_bfloat16(str(with_amx)) is True
    assert runtime.cpu_has_native_bfloat16(str(avx2_only)) is False
    assert runtime.cpu_has_native_bfloat16(str(tmp_path / "missing")) is False


def test_cpu_flags_are_the_tokens_of_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx512f avx512_bf16\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert runtime.cpu_flags(str(info)) == {"fpu", "avx512f", "avx512_bf16"}
    assert runtime.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"onednn": "yes"}, "onednn='yes'"), ({"bfloat16": "maybe"}, "bfloat16='maybe'")],
)
def test_configure_cpu_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        runtime.configure_cpu(**kwargs)
