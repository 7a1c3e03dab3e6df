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

The module also holds what the demo and the benchmarks record about the machine and the
training's time: `cpu_name()` (the CPU model to write beside each figure), `epoch_clock()` (a
callback recording training seconds, wall and CPU, per epoch) and `time_to_reach()`.

This module does not import TensorFlow or Keras at import time.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from keras_tricks._checks import check_bool, check_number, check_one_of, fail, suggest_keywords

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Measured (BENCHMARKS.md): XLA was 0.5-0.9x graph mode for ResNet-50-D and not repeatably
# faster for ResNet-9, and costs 10-35 s of compilation per model.
CPU_JIT_COMPILE = False
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@suggest_keywords
def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags ("avx512f", "avx512_bf16", ...) from `/proc/cpuinfo` (Linux only;
    empty elsewhere).

    Example:

    ```python
    from keras_tricks.runtime import cpu_flags
    print(sorted(f for f in cpu_flags() if f.startswith("avx512")))
    ```

    Args:
        cpuinfo_path: the file listing CPU flags.
    """
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
    flags = cpu_flags(cpuinfo_path)
    return any(flag in flags for flag in _BF16_FLAGS)


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


def cpu_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC 9B45"), to record beside every measured figure.

    The `model name` line of `/proc/cpuinfo` on Linux (what `lscpu` shows as "Model name"),
    else `platform.processor()`, else the machine type ("x86_64", "arm64").

    Example:

    ```python
    from keras_tricks.runtime import cpu_name
    print(cpu_name())
    ```

    Args:
        cpuinfo_path: the file listing the CPU's properties.
    """
    import platform

    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- Training time ------------------------------------------------------------------------------
# Wall seconds on a shared machine depend on what else runs; CPU seconds of this process much
# less. The demo and bench/recipe.py record both per epoch, without the validation pass.


@suggest_keywords
def epoch_clock(budget_cpu_s: float | None = None) -> Any:
    """A Keras callback recording cumulative training seconds, wall and CPU, at each epoch end.

    Attributes `train_s`, `train_cpu_s` and `val_accuracy` get one value per epoch. The time
    spent scoring `validation_data` is left out, so the figures are training time. CPU seconds
    (`time.process_time`, every thread of this process) change little when other jobs share
    the machine; wall seconds do. With `budget_cpu_s` it stops training once the next epoch
    would overrun that many CPU seconds (for same-budget comparisons):

    ```
    train_s[e] = (wall at the end of epoch e) - (wall at train begin) - (wall in evaluation)
    stop when cpu + 0.5 * cpu / (e + 1) >= budget_cpu_s     # half an average epoch to spare
    ```

    It imports Keras when called, not when this module is imported (see the module docstring).

    Example:

    ```python
    import numpy as np, keras
    from keras_tricks.runtime import epoch_clock
    clock = epoch_clock()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((8, 4)), np.zeros(8, "int64")
    model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[clock])
    assert len(clock.train_s) == len(clock.val_accuracy) == 2
    ```

    Args:
        budget_cpu_s: optional CPU-second budget of the training (> 0), or None.

    Returns:
        a `keras.callbacks.Callback`.
    """
    if budget_cpu_s is not None:
        check_number("budget_cpu_s", budget_cpu_s, positive=True)
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self, budget_cpu_s: float | None = None) -> None:
            super().__init__()
            self.budget_cpu_s = budget_cpu_s
            self.train_s: list[float] = []
            self.train_cpu_s: list[float] = []
            self.val_accuracy: list[float | None] = []

        def on_train_begin(self, logs: dict | None = None) -> None:
            self._start, self._start_cpu = time.perf_counter(), time.process_time()
            self._in_test = self._in_test_cpu = 0.0

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._test_start, self._test_cpu = time.perf_counter(), time.process_time()

        def on_test_end(self, logs: dict | None = None) -> None:
            self._in_test += time.perf_counter() - self._test_start
            self._in_test_cpu += time.process_time() - self._test_cpu

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            wall = time.perf_counter() - self._start - self._in_test
            cpu = time.process_time() - self._start_cpu - self._in_test_cpu
            self.train_s.append(round(wall, 1))
            self.train_cpu_s.append(round(cpu, 1))
            acc = logs.get("val_accuracy", logs.get("val_categorical_accuracy"))
            self.val_accuracy.append(None if acc is None else round(float(acc), 4))
            if self.budget_cpu_s is not None:
                if cpu + 0.5 * cpu / (epoch + 1) >= self.budget_cpu_s:
                    self.model.stop_training = True

    return EpochClock(budget_cpu_s)


@suggest_keywords
def time_to_reach(clock: Any, thresholds: Sequence[float] = (0.92, 0.93)) -> dict[str, Any]:
    """Training seconds (wall and CPU) at the first epoch end whose accuracy reaches a threshold.

    For each threshold t, from an `epoch_clock` after training:

    ```
    e = first epoch with clock.val_accuracy[e] >= t
    {"seconds_to_92": clock.train_s[e], "cpu_seconds_to_92": clock.train_cpu_s[e]}  # t = 0.92
    ```

    and None for both where no epoch reached t.

    Example:

    ```python
    from types import SimpleNamespace
    from keras_tricks.runtime import time_to_reach
    clock = SimpleNamespace(train_s=[10.0, 20.0], train_cpu_s=[19.0, 39.0],
                            val_accuracy=[0.91, 0.925])
    assert time_to_reach(clock) == {"seconds_to_92": 20.0, "cpu_seconds_to_92": 39.0,
                                    "seconds_to_93": None, "cpu_seconds_to_93": None}
    ```

    Args:
        clock: an `epoch_clock` callback (anything with `train_s`, `train_cpu_s` and
            `val_accuracy` lists).
        thresholds: accuracies in [0, 1]; each names its keys by its percentage.
    """
    for name in ("train_s", "train_cpu_s", "val_accuracy"):
        if not isinstance(getattr(clock, name, None), list):
            fail("clock", f"an epoch_clock() callback (with a `{name}` list)", clock)
    if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence):
        fail("thresholds", "a sequence of accuracies in [0, 1]", thresholds)
    out: dict[str, Any] = {}
    for i, t in enumerate(thresholds):
        check_number(f"thresholds[{i}]", t, minimum=0.0, maximum=1.0)
        hits = [
            (s, c)
            for s, c, a in zip(clock.train_s, clock.train_cpu_s, clock.val_accuracy)
            if a is not None and a >= t
        ]
        out[f"seconds_to_{round(t * 100)}"] = hits[0][0] if hits else None
        out[f"cpu_seconds_to_{round(t * 100)}"] = hits[0][1] if hits else None
    return out
