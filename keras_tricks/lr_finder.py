"""Learning-rate range test ("LR finder"): sweep the learning rate, record the loss, suggest a rate.

Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
https://arxiv.org/abs/1506.01186 (section 3.3), popularised by fast.ai's `lr_find`.
Backend-agnostic: training steps go through `model.train_on_batch`; TensorFlow is only touched
when you pass a `tf.data.Dataset`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_tricks._checks import check_int, check_number, check_one_of, fail, suggest_keywords

__all__ = ["find_lr", "LRFinderResult", "sweep_learning_rates", "smooth_losses"]

_MODES = ("exponential", "linear")


@suggest_keywords
def sweep_learning_rates(
    min_lr: float, max_lr: float, num_steps: int, mode: str = "exponential"
) -> np.ndarray:
    """The learning rates of a range test: `num_steps` values from `min_lr` to `max_lr`.

    ```
    exponential: lr[i] = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))
    linear:      lr[i] = min_lr + (max_lr - min_lr) * i / (num_steps - 1)
    ```

    Example:

    ```python
    from keras_tricks.lr_finder import sweep_learning_rates
    sweep_learning_rates(1e-4, 1.0, 5)  # [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    ```

    Args:
        min_lr: first learning rate, > 0.
        max_lr: last learning rate, > `min_lr`.
        num_steps: number of rates, an integer >= 2.
        mode: "exponential" (even spacing in log scale, Smith's and fast.ai's default) or
            "linear".

    Returns:
        A float64 NumPy array of shape `(num_steps,)`.
    """
    _check_sweep(min_lr, max_lr, num_steps, mode)
    i = np.arange(num_steps, dtype=np.float64)
    if mode == "exponential":
        return min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))
    return min_lr + (max_lr - min_lr) * i / (num_steps - 1)


@suggest_keywords
def smooth_losses(losses: Sequence[float] | np.ndarray, smoothing: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average of the losses, as fast.ai's LR finder.

    ```
    avg = 0
    for i, loss in enumerate(losses):
        avg = smoothing * avg + (1 - smoothing) * loss
        smoothed[i] = avg / (1 - smoothing ** (i + 1))
    ```

    `smoothing=0` returns the losses unchanged.

    Args:
        losses: sequence of per-step losses.
        smoothing: EMA coefficient in [0, 1).

    Returns:
        A float64 NumPy array, same length as `losses`.
    """
    _check_smoothing(smoothing)
    out = np.empty(len(losses), dtype=np.float64)
    avg = 0.0
    for i, loss in enumerate(losses):
        avg = smoothing * avg + (1.0 - smoothing) * float(loss)
        out[i] = avg / (1.0 - smoothing ** (i + 1))
    return out


def _check_sweep(min_lr, max_lr, num_steps, mode):
    check_number("min_lr", min_lr, positive=True, finite=True)
    check_number("max_lr", max_lr, positive=True, finite=True)
    if not max_lr > min_lr:
        fail("max_lr", f"greater than `min_lr`={min_lr!r}", max_lr)
    check_int("num_steps", num_steps, minimum=2)
    check_one_of("mode", mode, _MODES)


def _check_smoothing(smoothing):
    return check_number("smoothing", smoothing, minimum=0.0, maximum=1.0, max_open=True)


def _check_divergence_threshold(divergence_threshold):
    return check_number("divergence_threshold", divergence_threshold, minimum=1.0, min_open=True)


class LRFinderResult:
    """What an LR range test measured, and the rates it suggests.

    Attributes:
        learning_rates: the rates tried, one per step actually run (NumPy array).
        losses: the training loss of each step (computed before that step's update).
        smoothed_losses: `smooth_losses(losses, smoothing)`.
        suggestion: steepest-descent rule: the rate where the smoothed loss falls fastest per
            unit of log(lr), `lrs[argmin(np.gradient(smoothed, log(lrs)))]`, searched over the
            points that remain after dropping the first `skip_start` and the last `skip_end`
            (the last points sit on the divergence cliff). None if fewer than 3 points remain.
        min_loss_lr: the rate at the minimum of the smoothed loss.
        lr_at_divergence: the first rate whose smoothed loss exceeded
            `divergence_threshold` × the lowest smoothed loss so far (or was not finite); None
            if the loss never diverged.
        divergence_suggestion: 10% of `lr_at_divergence`, a rule practitioners report for
            detection models; None if the loss never diverged.
        diverged: whether the sweep stopped early because the loss diverged.
    """

    @suggest_keywords
    def __init__(
        self,
        learning_rates: Sequence[float] | np.ndarray,
        losses: Sequence[float] | np.ndarray,
        smoothing: float = 0.98,
        divergence_threshold: float = 4.0,
        skip_start: int = 5,
        skip_end: int = 2,
        mode: str = "exponential",
    ) -> None:
        self.learning_rates = np.asarray(learning_rates, dtype=np.float64)
        self.losses = np.asarray(losses, dtype=np.float64)
        if self.learning_rates.shape != self.losses.shape or self.losses.ndim != 1:
            raise ValueError(
                "`learning_rates` and `losses` must be 1-D and of equal length. Received: "
                f"shapes {self.learning_rates.shape} and {self.losses.shape}"
            )
        self.smoothing = _check_smoothing(smoothing)
        self.divergence_threshold = _check_divergence_threshold(divergence_threshold)
        self.skip_start = check_int("skip_start", skip_start, minimum=0)
        self.skip_end = check_int("skip_end", skip_end, minimum=0)
        self.mode = check_one_of("mode", mode, _MODES)
        self.smoothed_losses = smooth_losses(self.losses, smoothing)

        self.lr_at_divergence = None
        diverged_at = _divergence_index(self.smoothed_losses, self.divergence_threshold)
        if diverged_at is not None:
            self.lr_at_divergence = float(self.learning_rates[diverged_at])
        self.diverged = diverged_at is not None
        self.divergence_suggestion = (
            None if self.lr_at_divergence is None else 0.1 * self.lr_at_divergence
        )

        finite = np.isfinite(self.smoothed_losses)
        self.min_loss_lr = (
            float(self.learning_rates[np.where(finite, self.smoothed_losses, np.inf).argmin()])
            if finite.any()
            else None
        )
        self.suggestion = self._steepest_descent()

    def _steepest_descent(self):
        end = len(self.losses) - self.skip_end
        lrs = self.learning_rates[self.skip_start : end]
        smoothed = self.smoothed_losses[self.skip_start : end]
        keep = np.isfinite(smoothed)
        lrs, smoothed = lrs[keep], smoothed[keep]
        if len(lrs) < 3:
            return None
        slope = np.gradient(smoothed, np.log(lrs))
        return float(lrs[int(np.argmin(slope))])

    def __repr__(self) -> str:
        return (
            f"LRFinderResult(steps={len(self.losses)}, suggestion={self.suggestion!r}, "
            f"min_loss_lr={self.min_loss_lr!r}, lr_at_divergence={self.lr_at_divergence!r})"
        )

    def plot(self, ax: Any = None, title: str = "Learning-rate range test") -> Any:
        """Plot loss against learning rate (log axis) and mark the suggestions.

        Args:
            ax: optional matplotlib Axes to draw into; a new Figure is made when None.
            title: title of the axes.

        Returns:
            The matplotlib `Figure`.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as e:  # plotting is an optional extra
            raise ImportError(
                "LRFinderResult.plot needs matplotlib: pip install 'keras-tricks[plot]'."
            ) from e
        if ax is None:
            fig = Figure(figsize=(7.0, 4.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        lrs = self.learning_rates
        ax.plot(lrs, self.losses, color="0.7", linewidth=1, label="loss")
        ax.plot(lrs, self.smoothed_losses, color="C0", linewidth=2, label="smoothed loss")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(title)
        finite = self.smoothed_losses[np.isfinite(self.smoothed_losses)]
        if len(finite):
            low = float(np.nanmin(self.losses[np.isfinite(self.losses)]))
            # Keep the informative part visible: the cliff after divergence can be huge.
            high = min(float(finite.max()), 1.5 * max(float(finite[0]), float(finite.min())))
            pad = 0.05 * (high - low if high > low else 1.0)
            ax.set_ylim(low - pad, high + pad)
        if self.suggestion is not None:
            y = float(np.interp(np.log(self.suggestion), np.log(lrs), self.smoothed_losses))
            ax.axvline(self.suggestion, color="C3", linestyle="--", linewidth=1)
            ax.plot(
                [self.suggestion],
                [y],
                "o",
                color="C3",
                label=f"suggestion (steepest descent): {self.suggestion:.3g}",
            )
        if self.divergence_suggestion is not None:
            ax.axvline(
                self.divergence_suggestion,
                color="C2",
                linestyle=":",
                linewidth=1.5,
                label=f"10% of divergence LR: {self.divergence_suggestion:.3g}",
            )
        ax.legend(loc="upper left", fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
        return fig


def _diverged(i, smoothed, best, threshold):
    """The divergence rule: step `i`'s smoothed loss is not finite or > threshold x the best."""
    return not math.isfinite(smoothed) or (i > 0 and smoothed > threshold * best)


def _divergence_index(smoothed, threshold):
    best = math.inf
    for i, value in enumerate(smoothed):
        if _diverged(i, value, best, threshold):
            return i
        best = min(best, value)
    return None


def _clone_with_float_lr(optimizer, learning_rate):
    # A fresh optimizer of the same kind and hyper-parameters, with a float learning rate we can
    # set per step; the user's optimizer (and its state) is never touched.
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        config = optimizer.get_config()
        return keras.optimizers.LossScaleOptimizer(
            _clone_with_float_lr(optimizer.inner_optimizer, learning_rate),
            initial_scale=config.get("initial_scale", 2.0**15),
            dynamic_growth_steps=config.get("dynamic_growth_steps", 2000),
        )
    config = optimizer.get_config()
    config["learning_rate"] = float(learning_rate)
    return optimizer.__class__.from_config(config)


def _is_tf_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def _batches(data, batch_size):
    """Yield (x, y, sample_weight) batches forever (or until a one-shot iterator ends)."""
    if isinstance(data, tuple) and 2 <= len(data) <= 3:
        arrays = [np.asarray(a) if a is not None else None for a in data]
        n = len(arrays[0])
        if n == 0 or any(a is not None and len(a) != n for a in arrays):
            raise ValueError(
                "`data` arrays must be non-empty and of equal length. Received: lengths "
                f"{[None if a is None else len(a) for a in arrays]}"
            )
        while True:
            for start in range(0, n, batch_size):
                batch = [None if a is None else a[start : start + batch_size] for a in arrays]
                yield tuple(batch) + (None,) * (3 - len(batch))
    if isinstance(data, keras.utils.PyDataset):
        while True:
            for i in range(len(data)):
                yield _unpack(data[i])
    if _is_tf_dataset(data):
        # NumPy batches keep the steps backend-agnostic.
        while True:
            empty = True
            for element in data.as_numpy_iterator():
                empty = False
                yield _unpack(element)
            if empty:
                raise ValueError("`data` is an empty tf.data.Dataset.")
    if hasattr(data, "__iter__"):
        reiterable = iter(data) is not iter(data)
        while True:
            empty = True
            for element in data:
                empty = False
                yield _unpack(element)
            if empty or not reiterable:
                return
    raise ValueError(
        "`data` must be a tuple (x, y[, sample_weight]) of arrays, a tf.data.Dataset, a "
        "keras.utils.PyDataset or an iterable of (x, y) batches. Received: "
        f"data of type {type(data).__name__}"
    )


def _unpack(element):
    if isinstance(element, (tuple, list)) and 2 <= len(element) <= 3:
        return tuple(element) + (None,) * (3 - len(element))
    raise ValueError(
        "Each batch of `data` must be a tuple (x, y) or (x, y, sample_weight). Received: "
        f"a batch of type {type(element).__name__}"
    )


@suggest_keywords
def find_lr(
    model: keras.Model,
    data: Any,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exponential",
    batch_size: int = 32,
    smoothing: float = 0.98,
    divergence_threshold: float = 4.0,
    stop_on_divergence: bool = True,
    skip_start: int = 5,
    skip_end: int = 2,
    verbose: int = 0,
) -> LRFinderResult:
    """Run the learning-rate range test on a compiled model and suggest a learning rate.

    Smith 2017, https://arxiv.org/abs/1506.01186: train for `num_steps` steps while the rate
    grows from `min_lr` to `max_lr` (see `sweep_learning_rates`), recording the loss of each
    step. The losses are smoothed with fast.ai's bias-corrected EMA (`smooth_losses`); the test
    stops once the smoothed loss exceeds `divergence_threshold` times its minimum (fast.ai
    uses 4) or stops being finite. The steps run with a fresh copy of the model's optimizer
    (same class and hyper-parameters, float learning rate); afterwards every model variable
    (weights, BatchNorm statistics, seed states, metric states) is restored bit for bit, and
    the compiled optimizer is never stepped, so its variables are exactly as before.

    The suggestion is the rate of steepest descent of the smoothed loss against log(lr); the
    result also gives `min_loss_lr` and `divergence_suggestion` (10% of the rate where the
    loss diverged). See `LRFinderResult`.

    Example:

    ```python
    import keras, numpy as np
    from keras_tricks.lr_finder import find_lr
    x = np.random.rand(512, 8).astype("float32"); y = x.sum(1, keepdims=True)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
    result = find_lr(model, (x, y), min_lr=1e-5, max_lr=1.0, num_steps=60)
    result.suggestion, result.divergence_suggestion
    fig = result.plot(); fig.savefig("lr_finder.png")
    ```

    Args:
        model: a compiled Keras model.
        data: `(x, y)` or `(x, y, sample_weight)` arrays (batched by `batch_size`, in order,
            cycling), a `tf.data.Dataset` of batches, a `keras.utils.PyDataset`, or an
            iterable of `(x, y)` batches. Re-iterated if it has fewer than `num_steps` batches.
        min_lr: first learning rate, > 0.
        max_lr: last learning rate, > `min_lr`.
        num_steps: number of steps (and rates), >= 2.
        mode: "exponential" or "linear" spacing of the rates.
        batch_size: batch size for array `data`.
        smoothing: EMA coefficient of the loss smoothing, in [0, 1).
        divergence_threshold: stop when the smoothed loss exceeds this many times its minimum.
        stop_on_divergence: set False to run all `num_steps` steps regardless.
        skip_start: points ignored at the start by the steepest-descent rule.
        skip_end: points ignored at the end by the steepest-descent rule.
        verbose: 1 prints one line per step.

    Returns:
        An `LRFinderResult`.
    """
    _check_sweep(min_lr, max_lr, num_steps, mode)
    _check_smoothing(smoothing)
    _check_divergence_threshold(divergence_threshold)
    check_int("batch_size", batch_size)
    if not isinstance(model, keras.Model) or getattr(model, "optimizer", None) is None:
        fail("model", "a compiled keras.Model (call model.compile(optimizer, loss) first)", model)

    schedule = sweep_learning_rates(min_lr, max_lr, num_steps, mode)
    batches = _batches(data, batch_size)
    first = next(batches, None)
    if first is None:
        raise ValueError("`data` yielded no batches.")

    original_optimizer = model.optimizer
    original_train_function = model.train_function
    if not model.built:
        # Build with a real batch so every variable exists before the snapshot.
        model(first[0])
    saved = [
        # The Keras variable, not `v.value`: NumPy cannot read a tf.distribute MirroredVariable.
        (v, np.array(keras.ops.convert_to_numpy(v), copy=True))
        for v in _unique(list(model.variables) + list(model.metrics_variables))
    ]

    lrs, losses = [], []
    # Under tf.distribute the optimizer must be made in the model's strategy scope, also when
    # find_lr is called outside it (`distribute_strategy` exists on the TF backend only).
    strategy = getattr(model, "distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer = _clone_with_float_lr(original_optimizer, schedule[0])
    best, avg = math.inf, 0.0
    try:
        model.optimizer = optimizer
        model.make_train_function(force=True)
        batch = first
        for i, lr in enumerate(schedule):
            if batch is None:
                break
            optimizer.learning_rate = float(lr)
            x, y, sample_weight = batch
            logs = model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=True)
            loss = float(logs["loss"])
            lrs.append(float(lr))
            losses.append(loss)
            avg = smoothing * avg + (1.0 - smoothing) * loss  # same EMA as smooth_losses
            smoothed = avg / (1.0 - smoothing ** (i + 1))
            if verbose:
                print(
                    f"step {i + 1}/{num_steps}  lr={lr:.3g}  loss={loss:.4g}  "
                    f"smoothed={smoothed:.4g}"
                )
            if stop_on_divergence and _diverged(i, smoothed, best, divergence_threshold):
                break
            best = min(best, smoothed)
            batch = next(batches, None)
    finally:
        model.optimizer = original_optimizer
        model.train_function = original_train_function
        for variable, value in saved:
            variable.assign(value)

    return LRFinderResult(
        lrs,
        losses,
        smoothing=smoothing,
        divergence_threshold=divergence_threshold,
        skip_start=skip_start,
        skip_end=skip_end,
        mode=mode,
    )


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
