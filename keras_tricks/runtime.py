"""CPU defaults for training with Keras on TensorFlow: the fastest settings `bench/models.py` found.

On a 2-core Intel Xeon (Sapphire Rapids: AVX-512, AVX512_BF16, AMX) with TF 2.21 / Keras 3.15,
training ResNet-9 (32x32) and ResNet-50-D (224x224) was fastest with oneDNN on, mixed_bfloat16
and *without* XLA (`jit_compile=False`): 1.2-2.4x the float32 throughput; see BENCHMARKS.md.
oneDNN is read from the environment variable `TF_ENABLE_ONEDNN_OPTS` once, when TensorFlow is
imported (its default depends on the TF build and the CPU), so it has to be set before
`import keras` / `import tensorflow`:

```
TF_ENABLE_ONEDNN_OPTS=1 python train.py          # in the shell, or:

from keras_tricks import runtime                 # first lines of the script,
settings = runtime.configure_cpu()               # before importing keras/tensorflow
import keras
...
model.compile(..., jit_compile=settings["jit_compile"])
```

This module does not import TensorFlow or Keras at import time.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from keras_tricks._checks import check_bool, check_one_of, suggest_keywords

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Measured (BENCHMARKS.md): XLA was 0.5-0.9x graph mode for ResNet-50-D and not repeatably
# faster for ResNet-9, and costs 10-35 s of compilation per model.
CPU_JIT_COMPILE = False
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@suggest_keywords
def cpu_has_native_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True if the CPU advertises bfloat16 arithmetic (AMX-BF16 or AVX512_BF16; Linux only).

    Without it, bfloat16 is emulated and mixed_bfloat16 training is slower than float32.

    Example:

    ```python
    from keras_tricks.runtime import cpu_has_native_bfloat16
    print(cpu_has_native_bfloat16())
    ```

    Args:
        cpuinfo_path: the file listing CPU flags.
    """
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_FLAGS)
    except OSError:
        pass
    return False


def onednn_enabled() -> bool | None:
    """Whether TensorFlow's oneDNN kernels are on in this process; None before TF is imported.

    Example:

    ```python
    from keras_tricks.runtime import onednn_enabled
    print(onednn_enabled())
    ```
    """
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


@suggest_keywords
def configure_cpu(onednn: bool = True, bfloat16: bool | str = "auto") -> dict[str, Any]:
    """Apply the fastest measured CPU training settings; call before importing Keras/TensorFlow.

    1. Sets `TF_ENABLE_ONEDNN_OPTS` ("1" for `onednn=True`). TensorFlow reads it once, at import:
       if TensorFlow is already imported and its oneDNN state differs, this warns (RuntimeWarning)
       and tells you to set the variable earlier; it cannot change the running process.
    2. With `bfloat16=True`, or `"auto"` on a CPU with native bfloat16 (AMX / AVX512_BF16), sets
       Keras's global dtype policy to "mixed_bfloat16" (float32 variables, bfloat16 compute).
       This imports Keras, after step 1.
    3. Returns the settings, including the `jit_compile` value to pass to `model.compile`
       (False: XLA was never repeatably faster than oneDNN graph mode in `bench/models.py`).

    Example:

    ```python
    from keras_tricks import runtime
    settings = runtime.configure_cpu()
    import keras
    print(settings["dtype_policy"], settings["jit_compile"])
    ```

    Args:
        onednn: turn TensorFlow's oneDNN kernels on (True) or off (False).
        bfloat16: True, False or "auto" (on when the CPU computes bfloat16 natively).

    Returns:
        dict with "TF_ENABLE_ONEDNN_OPTS" (the value set), "onednn_active" (TensorFlow's own
        answer if it is already imported, else None), "dtype_policy" (the global Keras policy
        afterwards) and "jit_compile" (for `model.compile`).
    """
    check_bool("onednn", onednn)
    check_one_of("bfloat16", bfloat16, (True, False, "auto"))
    value = "1" if onednn else "0"
    tf_imported = "tensorflow" in sys.modules
    os.environ[ONEDNN_ENV] = value
    active = onednn_enabled()
    if tf_imported and active != onednn:
        warnings.warn(
            f"TensorFlow was imported before configure_cpu(onednn={onednn}), so oneDNN stays "
            f"{'on' if active else 'off'} in this process. Set {ONEDNN_ENV}={value} in the shell "
            "(or call keras_tricks.runtime.configure_cpu() before importing keras/tensorflow).",
            RuntimeWarning,
            stacklevel=2,
        )
    use_bf16 = cpu_has_native_bfloat16() if bfloat16 == "auto" else bfloat16
    import keras

    if use_bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    return {
        ONEDNN_ENV: value,
        "onednn_active": active,
        "dtype_policy": keras.config.dtype_policy().name,
        "jit_compile": CPU_JIT_COMPILE,
    }
