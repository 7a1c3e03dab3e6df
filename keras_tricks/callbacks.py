"""Keras callbacks: per-step linear warmup, learning-rate logging and EMA of weights."""

from __future__ import annotations

from typing import Any

import keras

from keras_tricks._checks import check_int, check_number, fail, suggest_keywords
from keras_tricks.ema import ExponentialMovingAverage

# The EMA callback lives in keras_tricks.ema (with the helpers MeanTeacher shares); it is
# re-exported here, the module of its family, as `keras_tricks.callbacks.ExponentialMovingAverage`.
__all__ = ["ExponentialMovingAverage", "LearningRateLogger", "LinearWarmup"]


def _inner_optimizer(optimizer):
    # `compile` wraps the optimizer in a LossScaleOptimizer under "mixed_float16".
    return getattr(optimizer, "inner_optimizer", optimizer)


def _iterations(optimizer):
    # `int(optimizer.iterations)` fails under a tf.distribute strategy (a MirroredVariable).
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


def _schedule_of(optimizer):
    lr = getattr(optimizer, "_learning_rate", None)
    return lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else None


class LinearWarmup(keras.callbacks.Callback):
    """Per-step linear learning-rate warmup for optimizers with a plain float learning rate.

    Goyal et al. 2017, "Accurate, Large Minibatch SGD", https://arxiv.org/abs/1706.02677
    (gradual warmup). For users who keep a float learning rate because they drive it with
    epoch-level callbacks such as `keras.callbacks.ReduceLROnPlateau` (PyTorch users know this
    as `GradualWarmupScheduler(after_scheduler=ReduceLROnPlateau)`). With a
    `LearningRateSchedule`, use `keras_tricks.schedules.Warmup` instead.

    At the start of each of the first `m = warmup_steps` optimizer steps (0-based step `s`,
    counted by `optimizer.iterations`, so it resumes correctly across `fit` calls):

    ```
    optimizer.learning_rate = init + (s + 1) / m * (target - init)   # for s < m
    ```

    where `target` is the optimizer's learning rate when training starts (unless given). Step
    `m - 1` trains at `target` exactly; from step `m` on the callback never writes the learning
    rate again, so other callbacks own it. During the warmup the callback owns the learning
    rate: a change another callback makes then is overwritten at the next step.

    Example:

    ```python
    import keras, numpy as np
    from keras_tricks.callbacks import LinearWarmup
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    model.fit(np.ones((64, 4)), np.ones((64, 1)), batch_size=8, epochs=3, verbose=0,
              callbacks=[LinearWarmup(warmup_steps=10),
                         keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=2)])
    ```

    Args:
        warmup_steps: number of warmup steps `m`, an integer >= 1.
        initial_learning_rate: rate the ramp starts from (reached "before" step 0).
        target_learning_rate: rate at the end of the warmup; None takes the optimizer's
            learning rate when training starts.
        verbose: 1 prints a line when the warmup ends.
    """

    @suggest_keywords
    def __init__(
        self,
        warmup_steps: int,
        initial_learning_rate: float = 0.0,
        target_learning_rate: float | None = None,
        verbose: int = 0,
    ) -> None:
        warmup_steps = check_int("warmup_steps", warmup_steps)
        initial_learning_rate = check_number(
            "initial_learning_rate", initial_learning_rate, non_negative=True, finite=True
        )
        if target_learning_rate is not None:
            target_learning_rate = check_number(
                "target_learning_rate", target_learning_rate, non_negative=True, finite=True
            )
        verbose = check_int("verbose", verbose, minimum=0)
        super().__init__()
        self.warmup_steps = warmup_steps
        self.initial_learning_rate = initial_learning_rate
        self.target_learning_rate = target_learning_rate
        self.verbose = verbose
        self._target = self.target_learning_rate

    def _optimizer(self):
        optimizer = _inner_optimizer(self.model.optimizer)
        if _schedule_of(optimizer) is not None:
            raise ValueError(
                "LinearWarmup needs an optimizer with a float learning rate; this one has the "
                f"schedule {_schedule_of(optimizer)!r}. Wrap the schedule in "
                "keras_tricks.schedules.Warmup instead."
            )
        return optimizer

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = self._optimizer()
        if self._target is None and _iterations(optimizer) < self.warmup_steps:
            self._target = float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self._optimizer()
        step = _iterations(optimizer)
        if step >= self.warmup_steps:
            return
        init, m, target = self.initial_learning_rate, self.warmup_steps, self._target
        assert target is not None  # on_train_begin set it (from the optimizer if not given)
        optimizer.learning_rate = init + (step + 1) / m * (target - init)
        if self.verbose and step == m - 1:
            print(f"\nLinearWarmup: reached learning rate {target:g} at step {step}.")


class LearningRateLogger(keras.callbacks.Callback):
    """Record the learning rate of every training step, in the logs, History and TensorBoard.

    After each step it adds `"learning_rate"` (the rate that step trained with) to the batch
    logs, so callbacks after it in the list see it: `keras.callbacks.TensorBoard(update_freq=1)`
    writes it as the scalar `batch_learning_rate`, `CSVLogger`/progress bars show it. At the end
    of each epoch it puts the rate of the epoch's last step into the epoch logs, which
    `model.fit(...).history["learning_rate"]` collects. The per-step record is kept in
    `self.steps` and `self.learning_rates`.

    Works for float learning rates (also when other callbacks change them) and for any
    `LearningRateSchedule` (the rate of step `s` is `schedule(s)`), on every backend. With
    `steps_per_execution > 1` Keras calls batch hooks once per execution, so only the last
    step of each execution is recorded.

    Example:

    ```python
    import keras, numpy as np
    from keras_tricks.callbacks import LearningRateLogger
    from keras_tricks.schedules import OneCycle
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=OneCycle(0.1, total_steps=16)), loss="mse")
    logger = LearningRateLogger()
    history = model.fit(np.ones((64, 4)), np.ones((64, 1)), batch_size=8, epochs=2, verbose=0,
                        callbacks=[logger, keras.callbacks.TensorBoard("logs", update_freq=1)])
    logger.learning_rates[:3], history.history["learning_rate"]
    ```

    Args:
        key: name of the logged value.
    """

    @suggest_keywords
    def __init__(self, key: str = "learning_rate") -> None:
        if not isinstance(key, str) or not key:
            fail("key", "a non-empty string", key)
        super().__init__()
        self.key = key
        self.steps: list[int] = []
        self.learning_rates: list[float] = []

    def _current(self):
        optimizer = _inner_optimizer(self.model.optimizer)
        step = _iterations(optimizer) - 1  # the step that just ran
        schedule = _schedule_of(optimizer)
        if schedule is not None:
            value = schedule(max(step, 0))
        else:
            value = optimizer.learning_rate
        return step, float(keras.ops.convert_to_numpy(value))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step, value = self._current()
        self.steps.append(step)
        self.learning_rates.append(value)
        if logs is not None:
            logs[self.key] = value

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and self.learning_rates:
            logs[self.key] = self.learning_rates[-1]
