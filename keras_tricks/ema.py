"""Exponential moving average of all model weights, BatchNorm statistics included.

`ExponentialMovingAverage` is the callback (also `keras_tricks.callbacks.ExponentialMovingAverage`);
`ema_variables` and `ema_values` are the selection and the arithmetic it shares with
`keras_tricks.training.MeanTeacher`.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings
from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

from keras_tricks._checks import check_bool, check_int, check_number, fail, suggest_keywords
from keras_tricks._state_files import (
    delete_step_states,
    load_step_state,
    save_step_state,
    saved_steps,
)

__all__ = ["ExponentialMovingAverage", "ema_values", "ema_variables"]

_STATE_PREFIX = "ema_state"  # ema_state.npz and ema_state.prev.npz, tagged with their step


def _is_float(variable: Any) -> bool:
    return "float" in str(variable.dtype)


def ema_variables(model: keras.Model, include_non_trainable: bool = True) -> list[Any]:
    """The variables an EMA of `model` averages: the trainable ones, plus (optionally) the
    non-trainable float ones such as BatchNorm's moving mean and variance, in `model.weights`
    order. Integer state (seed generators, counters) is never averaged."""
    if include_non_trainable:
        return [v for v in model.weights if v.trainable or _is_float(v)]
    return list(model.trainable_weights)


def ema_values(decay: Any, averages: list[Any], values: list[Any]) -> list[Any]:
    """One EMA step, pure: `average + (1 - decay) * (value - average)` for each pair."""
    out = []
    for average, value in zip(averages, values):
        d = ops.cast(decay, average.dtype)
        out.append(ops.add(average, ops.multiply(1.0 - d, ops.subtract(value, average))))
    return out


class ExponentialMovingAverage(keras.callbacks.Callback):
    """Keep an exponential moving average (EMA) of the weights; evaluate and checkpoint with it.

    Polyak averaging as in `tf.train.ExponentialMovingAverage` (used by the TF ResNet and
    EfficientNet references) and Page's "How to train your ResNet" (EMA updated every 5 steps).
    After training step `t` (1-based), when `t` is a multiple of `every_n_steps`:

    ```
    d = min(decay, (1 + t) / (10 + t)) if warmup else decay
    average = d * average + (1 - d) * weight   # for every trainable and BN-statistics variable
    ```

    The averages start as a copy of the weights when training begins. Validation (the
    `validation_data` of `fit`), `evaluate` and `predict` called with this callback run on the
    averaged weights; training always resumes on the raw ones, which stay in the model when
    `fit` returns. `averaged()` (a context manager) and `apply_average()` put the averages in
    the model yourself, e.g. to export.

    How it differs from Keras's optimizer `use_ema=True` + `keras.callbacks.SwapEMAWeights`:
    Keras averages trainable variables only, so BatchNorm's moving mean/variance (which belong
    to the raw weights) are used with averaged kernels; it has no warmup (the first average is
    the first step's weights); it updates every step inside the optimizer step; and every
    `fit()` ends by overwriting the model with the averages, so a second `fit()` continues from
    averaged weights. Here non-trainable float variables are averaged too (optional), the
    update runs every `every_n_steps` steps outside the compiled train step, and the raw weights
    are never lost. With `every_n_steps=k`, use `decay ** k` to keep the same time horizon.

    The update of all variables runs as one XLA-compiled function (`tf.function(jit_compile=True)`
    on TensorFlow, `jax.jit` on JAX) written with `keras.ops`; other backends run it eagerly.
    Under a `tf.distribute` strategy it works with mirrored variables (a plain `tf.function` when
    `fit` runs inside the strategy's scope, where the averages are mirrored too).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tricks.callbacks import ExponentialMovingAverage

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    model.compile("sgd", loss="mse")
    x, y = np.random.rand(64, 4), np.random.rand(64, 2)
    ema = ExponentialMovingAverage(decay=0.99, every_n_steps=5)
    model.fit(x, y, validation_data=(x, y), epochs=2, callbacks=[ema], verbose=0)  # val on EMA
    with ema.averaged():
        averaged_loss = model.evaluate(x, y, verbose=0)
    ```

    Args:
        decay: Decay per update, in (0, 1).
        every_n_steps: Update the averages after every `every_n_steps` training steps.
        warmup: Use `min(decay, (1 + t) / (10 + t))` so early averages are not dominated by the
            random initialisation (TF's `num_updates`).
        include_non_trainable: Also average non-trainable float variables (BatchNorm moving
            statistics), so the averaged model uses statistics matching its averaged kernels.
        filepath: Optional path to save the averaged model at the end of every epoch;
            `.keras` (whole model, `model.save`) or `.weights.h5` (`save_weights`); may contain
            `{epoch}` and log names like `ModelCheckpoint`.
        backup_dir: Optional directory, local or `gs://` (use the same as
            `keras.callbacks.BackupAndRestore`), where the EMA state is written whenever
            `save_freq` says, and restored from when `fit` begins, so an interrupted and resumed
            run gets the same averages. Each state records the `optimizer.iterations` it was
            saved at and the previous one is kept (`ema_state.npz`, `ema_state.prev.npz`); on
            restore the state of the restored `optimizer.iterations` is loaded. List this
            callback *before* `BackupAndRestore`: its state is then always saved before the
            weights, so a kill between the two saves leaves the previous state, matching the
            previous weights. (In the other order such a kill leaves no state for the restored
            step: a warning says so and the average restarts from the restored weights.)
        save_freq: `"epoch"` or an integer number of batches, for `backup_dir`; use the
            `BackupAndRestore`'s, so both save at the same steps.
        delete_backup: Delete the state files when `fit` completes (as `BackupAndRestore` does).
        compiled: Run the update as one compiled function (see above); `False` runs it eagerly.
    """

    @suggest_keywords
    def __init__(
        self,
        decay: float = 0.999,
        every_n_steps: int = 1,
        warmup: bool = True,
        include_non_trainable: bool = True,
        filepath: str | os.PathLike[str] | None = None,
        backup_dir: str | os.PathLike[str] | None = None,
        save_freq: str | int = "epoch",
        delete_backup: bool = True,
        compiled: bool = True,
    ) -> None:
        decay = check_number("decay", decay, minimum=0.0, maximum=1.0, min_open=True, max_open=True)
        every_n_steps = check_int("every_n_steps", every_n_steps)
        if filepath is not None and not str(filepath).endswith((".keras", ".weights.h5")):
            fail("filepath", "a path ending in `.keras` or `.weights.h5`, or None", filepath)
        if save_freq != "epoch":
            if (
                isinstance(save_freq, bool)
                or not isinstance(save_freq, numbers.Integral)
                or save_freq < 1
            ):
                fail("save_freq", '"epoch" or an integer >= 1', save_freq)
            save_freq = int(save_freq)
        for name, flag in (
            ("warmup", warmup),
            ("include_non_trainable", include_non_trainable),
            ("delete_backup", delete_backup),
            ("compiled", compiled),
        ):
            check_bool(name, flag)
        super().__init__()
        self.decay = decay
        self.every_n_steps = every_n_steps
        self.warmup = warmup
        self.include_non_trainable = include_non_trainable
        self.filepath = None if filepath is None else os.fspath(filepath)
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_backup = delete_backup
        self.compiled = compiled

        self.steps = 0  # training steps seen, over all `fit` calls
        self.num_updates = 0
        self._averages = None
        self._sources = None
        self._owner = None
        self._update_fn: Any = None
        self._swapped = False
        self._last_batch = -1
        self._batches_since_backup = 0
        self._restore_pending = False

    # ------------------------------------------------------------------ state
    @property
    def average_variables(self) -> list[Any] | None:
        """The averaged values, one `keras.Variable` per averaged model variable (or None)."""
        return self._averages

    @property
    def averaged_model_variables(self) -> list[Any] | None:
        """The model variables being averaged, in the order of `average_variables`."""
        return self._sources

    def _select(self, model):
        return ema_variables(model, self.include_non_trainable)

    def _ensure_built(self, model):
        if self._averages is not None and self._owner is model:
            return
        self._owner = model
        self._sources = self._select(model)
        self._averages = [
            keras.Variable(ops.convert_to_numpy(v), dtype=v.dtype, trainable=False, name=f"ema_{i}")
            for i, v in enumerate(self._sources)
        ]
        self._update_fn = self._make_update_fn()
        self.steps = 0
        self.num_updates = 0

    def current_decay(self, step: int) -> float:
        """The decay applied by the update after training step `step` (1-based)."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    # ----------------------------------------------------------------- update
    _averaged_values = staticmethod(ema_values)

    def _make_update_fn(self):
        averages, sources = self._averages, self._sources
        backend = keras.backend.backend()

        def update_in_place(decay):
            new = self._averaged_values(decay, averages, sources)
            for average, value in zip(averages, new):
                average.assign(value)

        if not self.compiled:
            return update_in_place
        if backend == "tensorflow":
            import tensorflow as tf

            # One XLA program for all variables: a few hundred eager ops per update otherwise,
            # and XLA fuses each variable's read-modify-write into a single pass over memory.
            # Inside a tf.distribute scope the averages are mirrored (one copy per device),
            # which one XLA program on one device cannot write; a plain graph updates them all.
            jit = not tf.distribute.has_strategy()
            return tf.function(update_in_place, autograph=False, jit_compile=jit)
        if backend == "jax":
            import jax

            pure = jax.jit(self._averaged_values)

            def update_jax(decay):
                new = pure(decay, [a.value for a in averages], [s.value for s in sources])
                for average, value in zip(averages, new):
                    average.assign(value)

            return update_jax
        return update_in_place

    def update(self, step: int | None = None) -> None:
        """Fold the model's current weights into the averages (as after training step `step`)."""
        model = self.model  # on JAX this attaches the latest training state to the variables
        self._ensure_built(model)
        step = self.steps if step is None else step
        self._update_fn(ops.convert_to_tensor(self.current_decay(step), "float32"))
        self.num_updates += 1

    # ------------------------------------------------------------------ swaps
    def _swap(self):
        for source, average in zip(self._sources, self._averages):
            raw = ops.convert_to_numpy(source)
            source.assign(average)
            average.assign(raw)
        self._swapped = not self._swapped

    @contextlib.contextmanager
    def averaged(self) -> Iterator[keras.Model]:
        """Context manager: the model holds the averaged weights inside, the raw ones after."""
        if self._averages is None:
            raise ValueError("No averages yet: train with this callback first.")
        entered = not self._swapped
        if entered:
            self._swap()
        try:
            yield self._owner
        finally:
            if entered:
                self._swap()

    def apply_average(self) -> None:
        """Copy the averages into the model for good (e.g. before export); raw weights are lost."""
        if self._averages is None:
            raise ValueError("No averages yet: train with this callback first.")
        if self._swapped:
            self._swapped = False
            return
        for source, average in zip(self._sources, self._averages):
            source.assign(average)

    # ----------------------------------------------------------------- backup
    def _current_iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not getattr(optimizer, "built", True):
            return self.steps
        return int(ops.convert_to_numpy(optimizer.iterations))

    def _save_state(self):
        iterations = self._current_iterations()
        arrays = [ops.convert_to_numpy(a) for a in self._averages]
        extra = {"steps": self.steps, "num_updates": self.num_updates}
        save_step_state(self.backup_dir, _STATE_PREFIX, iterations, arrays, extra=extra)

    def _restore_state(self):
        """Load the state saved at the restored `optimizer.iterations`; recover if there is none.

        Called at the first `on_epoch_begin`, after every callback's `on_train_begin` (so after
        `BackupAndRestore` restored the weights and the optimizer, whatever the callback order).
        """
        iterations = self._current_iterations()
        saved = saved_steps(self.backup_dir, _STATE_PREFIX)
        if not saved:
            return
        state = load_step_state(self.backup_dir, _STATE_PREFIX, iterations, with_extra=True)
        if state is not None:
            arrays, extra = state
            if len(arrays) != len(self._averages):
                raise ValueError(
                    f"The EMA state in {self.backup_dir} has {len(arrays)} variables but the "
                    f"model has {len(self._averages)}; was it written by another model?"
                )
            for average, value in zip(self._averages, arrays):
                average.assign(value)
            self.steps = int(extra["steps"])
            self.num_updates = int(extra["num_updates"])
            return
        # No state at the restored step: the run was killed after the weights were saved and
        # before this callback saved (it was listed after BackupAndRestore). Averages of another
        # step would not match the weights; restart the average from the restored weights.
        warnings.warn(
            f"No EMA state for step {iterations} in {self.backup_dir} (saved: {saved}); "
            "the average restarts from the restored weights. List ExponentialMovingAverage "
            "before BackupAndRestore so its state is always saved first.",
            stacklevel=2,
        )
        for average, source in zip(self._averages, self._sources):
            average.assign(ops.convert_to_numpy(source))
        self.steps = iterations
        self.num_updates = iterations // self.every_n_steps

    # -------------------------------------------------------------- callbacks
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._ensure_built(self.model)
        self._restore_pending = self.backup_dir is not None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._last_batch = -1
        if getattr(self, "_restore_pending", False):
            self._restore_pending = False
            self._restore_state()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # With steps_per_execution > 1 Keras reports only the last batch of each execution.
        previous = self.steps
        self.steps += batch - self._last_batch
        self._batches_since_backup += batch - self._last_batch
        self._last_batch = batch
        if self.steps // self.every_n_steps > previous // self.every_n_steps:
            self.update()
        if (
            self.backup_dir is not None
            and isinstance(self.save_freq, int)  # not "epoch"
            and self._batches_since_backup >= self.save_freq
        ):
            self._batches_since_backup = 0
            self._save_state()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.filepath is not None:
            path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
            with self.averaged() as model:
                if path.endswith(".keras"):
                    model.save(path)
                else:
                    model.save_weights(path)
        if self.backup_dir is not None and self.save_freq == "epoch":
            self._save_state()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.backup_dir is not None and self.delete_backup:
            delete_step_states(self.backup_dir, _STATE_PREFIX)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._averages is not None and self._owner is self.model and not self._swapped:
            self._swap()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._swapped:
            self._swap()

    on_predict_begin = on_test_begin
    on_predict_end = on_test_end
