"""Learning-rate schedules from the papers, as Keras `LearningRateSchedule` objects.

Every schedule here is built from `keras.ops` (so it runs under TensorFlow, JAX and PyTorch and
inside `jit_compile=True` train steps), is registered with Keras serialisation and returns its
constructor arguments from `get_config`, so a model whose optimizer uses it round-trips through
`model.save` / `keras.models.load_model`.

Keras already ships `CosineDecay` (with linear warmup), `ExponentialDecay`,
`PiecewiseConstantDecay`, `PolynomialDecay` and `InverseTimeDecay`; use those directly, or wrap
them in `Warmup`. This module adds what Keras lacks: a generic warmup around any schedule,
linear-cosine and noisy linear-cosine decay, step decay, piecewise-linear schedules (Page's
triangular schedule) and one-cycle.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule as _Schedule

from keras_tricks._checks import check_bool as _check_bool
from keras_tricks._checks import check_int as _check_int
from keras_tricks._checks import check_number as _check_number
from keras_tricks._checks import check_one_of as _check_one_of
from keras_tricks._checks import fail as _fail
from keras_tricks._checks import suggest_keywords as _suggest_keywords

__all__ = [
    "scale_learning_rate",
    "Warmup",
    "LinearCosineDecay",
    "NoisyLinearCosineDecay",
    "StepDecay",
    "epochs_to_steps",
    "PiecewiseLinear",
    "page_triangular",
    "OneCycle",
]


def _check_increasing(name, values):
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        _fail(name, "a non-empty list of step numbers", values)
    for i, v in enumerate(values):
        _check_int(f"{name}[{i}]", v, minimum=0)
    if any(b <= a for a, b in zip(values, values[1:])):
        _fail(name, "strictly increasing", values)
    return [int(v) for v in values]


def _step(step):
    return ops.cast(step, "float32")


@_suggest_keywords
def scale_learning_rate(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """Linear scaling rule: scale the learning rate with the batch size.

    Goyal et al. 2017, "Accurate, Large Minibatch SGD", https://arxiv.org/abs/1706.02677, and
    He et al. 2019, "Bag of Tricks", https://arxiv.org/abs/1812.01187 (0.1 for batch 256):

    ```
    lr = base_lr * batch_size / base_batch_size
    ```

    Example:

    ```python
    from keras_tricks.schedules import scale_learning_rate
    scale_learning_rate(0.1, 1024)  # 0.4
    ```

    Args:
        base_lr: learning rate that works at `base_batch_size` (the paper uses 0.1).
        batch_size: the batch size you train with.
        base_batch_size: batch size `base_lr` was tuned for (256 in the papers).

    Returns:
        The scaled learning rate, a Python float.
    """
    base_lr = _check_number("base_lr", base_lr, positive=True)
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    base_batch_size = _check_int("base_batch_size", base_batch_size, minimum=1)
    return base_lr * batch_size / base_batch_size


@keras.saving.register_keras_serializable(package="keras_tricks")
class Warmup(_Schedule):
    """Linear learning-rate warmup in front of a constant rate or any other schedule.

    Goyal et al. 2017, https://arxiv.org/abs/1706.02677 (section 2.2, gradual warmup), as used in
    He et al. 2019, https://arxiv.org/abs/1812.01187: over the first `m = warmup_steps` steps the
    rate rises linearly to the rate the wrapped schedule starts at; then the wrapped schedule
    runs from its own step 0, i.e. the decay ignores the warmup steps:

    ```
    target = after(0) if callable(after) else after
    def lr(step):  # step is 0-based, as `optimizer.iterations`
        if step < m:
            return init + (step + 1) / m * (target - init)
        return after(step - m) if callable(after) else after
    ```

    So with `init = 0` step `i` of `m` (1-based) gets `i * target / m`, and the last warmup step
    reaches `target` exactly. A `NoisyLinearCosineDecay` target is its (noisy) value at step 0.

    Example:

    ```python
    import keras
    from keras_tricks.schedules import LinearCosineDecay, Warmup
    schedule = Warmup(LinearCosineDecay(0.4, decay_steps=1000), warmup_steps=100)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    float(schedule(0)), float(schedule(99))  # (0.004004, 0.4004): 1/100 and 100/100 of 0.4004
    ```

    Args:
        after: a float learning rate or any `LearningRateSchedule` to run after the warmup.
        warmup_steps: number of warmup steps `m`, an integer >= 1.
        initial_learning_rate: the rate the ramp starts from (reached "before" step 0).
        name: name of the schedule.
    """

    @_suggest_keywords
    def __init__(
        self,
        after: float | _Schedule | dict,
        warmup_steps: int,
        initial_learning_rate: float = 0.0,
        name: str = "Warmup",
    ) -> None:
        if isinstance(after, dict):  # a nested config, as `from_config` passes it
            after = keras.saving.deserialize_keras_object(after)
        if isinstance(after, _Schedule):
            self.after = after
        elif callable(after):
            _fail(
                "after",
                "a float or a keras LearningRateSchedule (plain callables cannot be saved)",
                after,
            )
        else:
            self.after = _check_number("after", after, positive=True)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, minimum=1)
        self.initial_learning_rate = _check_number(
            "initial_learning_rate", initial_learning_rate, non_negative=True
        )
        self.name = name

    def __call__(self, step: Any) -> Any:
        step = _step(step)
        m = float(self.warmup_steps)
        if isinstance(self.after, _Schedule):
            target = ops.cast(self.after(0), "float32")
            # Both branches are computed so the schedule stays a pure function under XLA.
            decayed = ops.cast(self.after(ops.maximum(step - m, 0.0)), "float32")
        else:
            target = decayed = ops.convert_to_tensor(self.after, "float32")
        init = self.initial_learning_rate
        warm = init + (step + 1.0) / m * (target - init)
        return ops.where(step < m, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        after = self.after
        if isinstance(after, _Schedule):
            after = keras.saving.serialize_keras_object(after)
        return {
            "after": after,
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
            "name": self.name,
        }


def _linear_cosine(step, decay_steps, num_periods, alpha, beta, noise=None):
    step = ops.minimum(step, float(decay_steps))
    linear = (decay_steps - step) / decay_steps
    if noise is not None:
        linear = linear + noise
    cosine = 0.5 * (1.0 + ops.cos(math.pi * 2.0 * num_periods * step / decay_steps))
    return (alpha + linear) * cosine + beta


@keras.saving.register_keras_serializable(package="keras_tricks")
class LinearCosineDecay(_Schedule):
    """Linear-cosine decay (Bello et al. 2017), as `tf.compat.v1.train.linear_cosine_decay`.

    Bello et al. 2017, "Neural Optimizer Search with Reinforcement Learning",
    https://arxiv.org/abs/1709.07417; `num_periods` gives SGDR-style restarts (Loshchilov &
    Hutter 2016, https://arxiv.org/abs/1608.03983):

    ```
    def lr(step):
        step = min(step, decay_steps)
        linear_decay = (decay_steps - step) / decay_steps
        cosine_decay = 0.5 * (1 + cos(pi * 2 * num_periods * step / decay_steps))
        return initial_learning_rate * ((alpha + linear_decay) * cosine_decay + beta)
    ```

    Example:

    ```python
    import keras
    from keras_tricks.schedules import LinearCosineDecay
    schedule = LinearCosineDecay(0.1, decay_steps=1000)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    float(schedule(0)), float(schedule(1000))  # (0.1001, 0.0001)
    ```

    Args:
        initial_learning_rate: the rate at step 0 (times `1 + alpha + beta`).
        decay_steps: number of steps to decay over, an integer >= 1.
        num_periods: number of periods of the cosine part (0.5: one half-cosine).
        alpha: added to the linear part; see the formula.
        beta: floor added after the product; see the formula.
        name: name of the schedule.
    """

    @_suggest_keywords
    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        num_periods: float = 0.5,
        alpha: float = 0.0,
        beta: float = 0.001,
        name: str = "LinearCosineDecay",
    ) -> None:
        self.initial_learning_rate = _check_number(
            "initial_learning_rate", initial_learning_rate, positive=True
        )
        self.decay_steps = _check_int("decay_steps", decay_steps, minimum=1)
        self.num_periods = _check_number("num_periods", num_periods, non_negative=True)
        self.alpha = _check_number("alpha", alpha, non_negative=True)
        self.beta = _check_number("beta", beta, non_negative=True)
        self.name = name

    def __call__(self, step: Any) -> Any:
        decayed = _linear_cosine(
            _step(step), float(self.decay_steps), self.num_periods, self.alpha, self.beta
        )
        return self.initial_learning_rate * decayed

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "num_periods": self.num_periods,
            "alpha": self.alpha,
            "beta": self.beta,
            "name": self.name,
        }


# Counter-based standard normal noise, a pure function of (seed, step).
# Keras's public random API takes an int seed (one fixed draw) or a stateful SeedGenerator
# (state the optimizer does not track under JAX's jit), so neither gives "fresh noise every
# step, reproducible, inside a compiled train step on every backend". A 32-bit integer hash
# (Wellons' "lowbias32", https://nullprogram.com/blog/2018/07/31/) of (seed, step) gives two
# uniforms, and Box-Muller turns them into one N(0, 1) value. Arithmetic is int32 with
# two's-complement wrap-around, which TensorFlow, XLA, JAX and PyTorch all implement.
def _to_int32(value):
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def _logical_shift_right(x, bits):
    mask = (1 << (32 - bits)) - 1
    return ops.bitwise_and(ops.right_shift(x, bits), mask)


def _hash32(x):
    x = ops.bitwise_xor(x, _logical_shift_right(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(_to_int32(0x7FEB352D), "int32"))
    x = ops.bitwise_xor(x, _logical_shift_right(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(_to_int32(0x846CA68B), "int32"))
    return ops.bitwise_xor(x, _logical_shift_right(x, 16))


def _uniform_open(x):
    # Top 24 bits -> (0, 1), never exactly 0 so log() below is finite.
    return (ops.cast(_logical_shift_right(x, 8), "float32") + 0.5) / float(1 << 24)


def _step_normal(seed, step):
    step = ops.cast(step, "int32")
    # Hashing the seed first keeps different seeds' sequences unrelated (with `step ^ seed`,
    # seed 0 at step 1 would repeat seed 1 at step 0).
    seed_key = _hash32(ops.convert_to_tensor(_to_int32(seed), "int32"))
    key = _hash32(ops.bitwise_xor(step, seed_key))
    u1 = _uniform_open(_hash32(ops.add(key, ops.convert_to_tensor(0x68E31DA4, "int32"))))
    u2 = _uniform_open(_hash32(ops.add(key, ops.convert_to_tensor(0x1B56C4E9, "int32"))))
    return ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(2.0 * math.pi * u2)


@keras.saving.register_keras_serializable(package="keras_tricks")
class NoisyLinearCosineDecay(_Schedule):
    """Noisy linear-cosine decay (Bello et al. 2017), as TF's `noisy_linear_cosine_decay`.

    Bello et al. 2017, https://arxiv.org/abs/1709.07417. The linear term gets zero-mean
    Gaussian noise whose variance decays with the step:

    ```
    def lr(step):
        step = min(step, decay_steps)
        linear_decay = (decay_steps - step) / decay_steps
        cosine_decay = 0.5 * (1 + cos(pi * 2 * num_periods * step / decay_steps))
        eps = normal(0, sqrt(initial_variance / (1 + step) ** variance_decay))
        return initial_learning_rate * ((alpha + linear_decay + eps) * cosine_decay + beta)
    ```

    The noise at each step is a deterministic function of `(seed, step)`, so the schedule is
    reproducible, can be called twice for the same step (Keras does) and runs inside compiled
    train steps on every backend. `seed=None` draws a seed once, at construction; `get_config`
    stores the drawn seed so a saved model keeps the same noise.

    Example:

    ```python
    import keras
    from keras_tricks.schedules import NoisyLinearCosineDecay
    schedule = NoisyLinearCosineDecay(0.1, decay_steps=1000, seed=42)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    float(schedule(10)) == float(schedule(10))  # True
    ```

    Args:
        initial_learning_rate: the noise-free rate at step 0 (times `1 + alpha + beta`).
        decay_steps: number of steps to decay over, an integer >= 1.
        initial_variance: variance of the noise at step 0.
        variance_decay: exponent of the noise variance decay.
        num_periods: number of periods of the cosine part.
        alpha: added to the linear part.
        beta: floor added after the product.
        seed: integer seed of the noise, or None for a random one.
        name: name of the schedule.
    """

    @_suggest_keywords
    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        initial_variance: float = 1.0,
        variance_decay: float = 0.55,
        num_periods: float = 0.5,
        alpha: float = 0.0,
        beta: float = 0.001,
        seed: int | None = None,
        name: str = "NoisyLinearCosineDecay",
    ) -> None:
        self.initial_learning_rate = _check_number(
            "initial_learning_rate", initial_learning_rate, positive=True
        )
        self.decay_steps = _check_int("decay_steps", decay_steps, minimum=1)
        self.initial_variance = _check_number(
            "initial_variance", initial_variance, non_negative=True
        )
        self.variance_decay = _check_number("variance_decay", variance_decay, non_negative=True)
        self.num_periods = _check_number("num_periods", num_periods, non_negative=True)
        self.alpha = _check_number("alpha", alpha, non_negative=True)
        self.beta = _check_number("beta", beta, non_negative=True)
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 31)
        self.seed = _check_int("seed", seed, minimum=0)
        self.name = name

    def __call__(self, step: Any) -> Any:
        step = _step(step)
        clipped = ops.minimum(step, float(self.decay_steps))
        std = ops.sqrt(self.initial_variance / ops.power(1.0 + clipped, self.variance_decay))
        noise = std * _step_normal(self.seed, clipped)
        decayed = _linear_cosine(
            step, float(self.decay_steps), self.num_periods, self.alpha, self.beta, noise
        )
        return self.initial_learning_rate * decayed

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "initial_variance": self.initial_variance,
            "variance_decay": self.variance_decay,
            "num_periods": self.num_periods,
            "alpha": self.alpha,
            "beta": self.beta,
            "seed": self.seed,
            "name": self.name,
        }


@_suggest_keywords
def epochs_to_steps(epochs: Sequence[float], steps_per_epoch: int) -> list[int]:
    """Convert epoch boundaries to step boundaries: `[e * steps_per_epoch for e in epochs]`.

    Example:

    ```python
    from keras_tricks.schedules import epochs_to_steps
    epochs_to_steps([30, 60, 90], steps_per_epoch=5005)  # [150150, 300300, 450450]
    ```

    Args:
        epochs: list of epoch numbers (non-negative integers or floats).
        steps_per_epoch: number of optimizer steps in one epoch, an integer >= 1.

    Returns:
        A list of integer step numbers (rounded to the nearest step).
    """
    steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    if not isinstance(epochs, (list, tuple)) or len(epochs) == 0:
        _fail("epochs", "a non-empty list of epoch numbers", epochs)
    return [
        int(round(_check_number(f"epochs[{i}]", e, non_negative=True) * steps_per_epoch))
        for i, e in enumerate(epochs)
    ]


@keras.saving.register_keras_serializable(package="keras_tricks")
class StepDecay(_Schedule):
    """Step decay: multiply the rate by `factor` (÷10 by default) at each boundary step.

    He et al. 2016, "Deep Residual Learning", https://arxiv.org/abs/1512.03385 (÷10 at epochs
    30, 60, 90 on ImageNet); the baseline of He et al. 2019, https://arxiv.org/abs/1812.01187:

    ```
    def lr(step):  # step is 0-based; the new rate applies from the boundary step on
        return initial_learning_rate * factor ** sum(step >= b for b in boundaries)
    ```

    Example:

    ```python
    from keras_tricks.schedules import StepDecay, epochs_to_steps
    schedule = StepDecay(0.1, epochs_to_steps([30, 60, 90], steps_per_epoch=100))
    float(schedule(2999)), float(schedule(3000))  # (0.1, 0.01)
    ```

    Args:
        initial_learning_rate: the rate before the first boundary.
        boundaries: strictly increasing list of step numbers (use `epochs_to_steps` or
            `StepDecay.from_epochs` for epochs).
        factor: multiplier applied at each boundary, > 0.
        name: name of the schedule.
    """

    @_suggest_keywords
    def __init__(
        self,
        initial_learning_rate: float,
        boundaries: Sequence[int],
        factor: float = 0.1,
        name: str = "StepDecay",
    ) -> None:
        self.initial_learning_rate = _check_number(
            "initial_learning_rate", initial_learning_rate, positive=True
        )
        self.boundaries = _check_increasing("boundaries", boundaries)
        self.factor = _check_number("factor", factor, positive=True)
        self.name = name

    @classmethod
    def from_epochs(
        cls,
        initial_learning_rate: float,
        boundary_epochs: Sequence[float],
        steps_per_epoch: int,
        factor: float = 0.1,
    ) -> StepDecay:
        """Build a `StepDecay` whose boundaries are given in epochs."""
        return cls(initial_learning_rate, epochs_to_steps(boundary_epochs, steps_per_epoch), factor)

    def __call__(self, step: Any) -> Any:
        step = _step(step)
        passed = ops.zeros((), "float32")
        for boundary in self.boundaries:
            passed = passed + ops.cast(step >= float(boundary), "float32")
        return self.initial_learning_rate * ops.power(self.factor, passed)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "boundaries": list(self.boundaries),
            "factor": self.factor,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="keras_tricks")
class PiecewiseLinear(_Schedule):
    """Piecewise-linear schedule through the points `(boundaries[i], values[i])`.

    Linear interpolation between the points and constant before the first and after the last,
    i.e. `numpy.interp(step, boundaries, values)`:

    ```
    def lr(step):
        out = values[0]
        for i in range(len(boundaries) - 1):
            t = clip((step - boundaries[i]) / (boundaries[i + 1] - boundaries[i]), 0, 1)
            out += t * (values[i + 1] - values[i])
        return out
    ```

    David Page's triangular schedule ("How to train your ResNet", 2018,
    https://myrtle.ai/learn/how-to-train-your-resnet/) rises 0 -> 0.4 over epochs 0-5 and
    falls back to 0 at epoch 24: `page_triangular(steps_per_epoch)` builds it. (Page's code
    divides the rate by the batch size because it sums the loss over the batch; with Keras's
    mean-reduced losses 0.4 gives the same update.)

    Example:

    ```python
    from keras_tricks.schedules import PiecewiseLinear
    schedule = PiecewiseLinear([0, 500, 2400], [0.0, 0.4, 0.0])
    float(schedule(250)), float(schedule(1450))  # (0.2, 0.2)
    ```

    Args:
        boundaries: strictly increasing list of step numbers (non-negative integers).
        values: learning rates at those steps, same length as `boundaries`.
        name: name of the schedule.
    """

    @_suggest_keywords
    def __init__(
        self, boundaries: Sequence[int], values: Sequence[float], name: str = "PiecewiseLinear"
    ) -> None:
        self.boundaries = _check_increasing("boundaries", boundaries)
        if not isinstance(values, (list, tuple)) or len(values) != len(self.boundaries):
            _fail("values", f"a list with one value per boundary ({len(self.boundaries)})", values)
        self.values = [
            _check_number(f"values[{i}]", v, non_negative=True) for i, v in enumerate(values)
        ]
        self.name = name

    def __call__(self, step: Any) -> Any:
        step = _step(step)
        out = ops.full((), self.values[0], "float32")
        points = list(zip(self.boundaries, self.values))
        for (b0, v0), (b1, v1) in zip(points, points[1:]):
            t = ops.clip((step - float(b0)) / float(b1 - b0), 0.0, 1.0)
            out = out + t * (v1 - v0)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


@_suggest_keywords
def page_triangular(
    steps_per_epoch: int,
    peak_learning_rate: float = 0.4,
    peak_epoch: float = 5,
    total_epochs: float = 24,
) -> PiecewiseLinear:
    """David Page's triangular schedule: 0 -> `peak_learning_rate` at `peak_epoch` -> 0 at the end.

    From "How to train your ResNet" (2018), https://myrtle.ai/learn/how-to-train-your-resnet/,
    the fast CIFAR-10 ResNet-9 recipe: `PiecewiseLinear([0, 5, 24], [0, 0.4, 0])` in epochs.

    Example:

    ```python
    from keras_tricks.schedules import page_triangular
    schedule = page_triangular(steps_per_epoch=98)  # CIFAR-10 at batch 512
    float(schedule(5 * 98))  # 0.4
    ```

    Args:
        steps_per_epoch: optimizer steps per epoch, an integer >= 1.
        peak_learning_rate: the rate at `peak_epoch`.
        peak_epoch: epoch of the peak, > 0.
        total_epochs: epoch where the rate is back at 0, > `peak_epoch`.

    Returns:
        A `PiecewiseLinear` schedule.
    """
    _check_number("peak_learning_rate", peak_learning_rate, positive=True)
    _check_number("peak_epoch", peak_epoch, positive=True)
    if _check_number("total_epochs", total_epochs, positive=True) <= peak_epoch:
        _fail("total_epochs", f"greater than `peak_epoch`={peak_epoch!r}", total_epochs)
    boundaries = epochs_to_steps([0, peak_epoch, total_epochs], steps_per_epoch)
    return PiecewiseLinear(boundaries, [0.0, float(peak_learning_rate), 0.0])


@keras.saving.register_keras_serializable(package="keras_tricks")
class OneCycle(_Schedule):
    """One-cycle policy (Smith 2018), the formulas of `torch.optim.lr_scheduler.OneCycleLR`.

    Smith & Topin 2017, "Super-Convergence", https://arxiv.org/abs/1708.07120, and Smith 2018,
    https://arxiv.org/abs/1803.09820. The rate rises from `max / div_factor` to `max` over the
    first `pct_start` of the steps, then anneals to `max / div_factor / final_div_factor`.
    With `three_phase=True` it first comes back down to `max / div_factor` symmetrically and
    only anneals to the minimum in a third phase. Step `s` of Keras (0-based
    `optimizer.iterations`) gets PyTorch's rate at `last_epoch = s`:

    ```
    initial, minimum = max_lr / div_factor, max_lr / div_factor / final_div_factor
    phases = [(pct_start * total_steps - 1, initial, max_lr),
              (total_steps - 1, max_lr, minimum)]
    # three_phase: [(p*T - 1, initial, max_lr), (2*p*T - 2, max_lr, initial),
    #               (T - 1, initial, minimum)]
    cos = lambda start, end, pct: end + (start - end) / 2 * (cos(pi * pct) + 1)
    linear = lambda start, end, pct: (end - start) * pct + start
    def lr(step):
        start_step = 0
        for i, (end_step, start, end) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = min((step - start_step) / (end_step - start_step), 1)
                return anneal(start, end, pct)
            start_step = end_step
    ```

    PyTorch raises after `total_steps`; here the rate stays at the minimum. PyTorch's optional
    momentum cycling is not part of a learning-rate schedule and is not reproduced.

    Example:

    ```python
    import keras
    from keras_tricks.schedules import OneCycle
    schedule = OneCycle(max_learning_rate=0.1, total_steps=1000)
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    float(schedule(0)), float(schedule(299))  # (0.004, 0.1)
    ```

    Args:
        max_learning_rate: the peak rate.
        total_steps: number of steps in the cycle, an integer >= 2.
        pct_start: fraction of the steps spent increasing, in (0, 1) (in (0, 0.5) with
            `three_phase`); every phase must be longer than one step.
        div_factor: initial rate is `max_learning_rate / div_factor`.
        final_div_factor: final rate is the initial rate divided by this.
        anneal: "cos" or "linear".
        three_phase: use PyTorch's three-phase variant.
        name: name of the schedule.
    """

    @_suggest_keywords
    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
        three_phase: bool = False,
        name: str = "OneCycle",
    ) -> None:
        self.max_learning_rate = _check_number(
            "max_learning_rate", max_learning_rate, positive=True
        )
        self.total_steps = _check_int("total_steps", total_steps, minimum=2)
        self.pct_start = _check_number("pct_start", pct_start, positive=True)
        three_phase = _check_bool("three_phase", three_phase)
        upper = 0.5 if three_phase else 1.0
        if not self.pct_start < upper:
            _fail(
                "pct_start",
                f"in (0, {upper})" + (" with three_phase=True" if three_phase else ""),
                pct_start,
            )
        self.div_factor = _check_number("div_factor", div_factor, positive=True)
        self.final_div_factor = _check_number("final_div_factor", final_div_factor, positive=True)
        self.anneal = _check_one_of("anneal", anneal, ("cos", "linear"))
        self.three_phase = three_phase
        self.name = name
        ends = [end for end, _, _ in self._phases()]
        lengths = [b - a for a, b in zip([0.0] + ends, ends)]
        if min(lengths) <= 0:
            raise ValueError(
                "Every one-cycle phase must last more than one step: the warmup "
                f"(pct_start * total_steps = {self.pct_start * self.total_steps:g} steps) must be "
                f"> 1 and shorter than total_steps. Received: pct_start={pct_start!r}, "
                f"total_steps={total_steps!r}"
            )

    def _phases(self):
        initial = self.max_learning_rate / self.div_factor
        minimum = initial / self.final_div_factor
        warm_end = self.pct_start * self.total_steps - 1.0
        if self.three_phase:
            return [
                (warm_end, initial, self.max_learning_rate),
                (2.0 * self.pct_start * self.total_steps - 2.0, self.max_learning_rate, initial),
                (self.total_steps - 1.0, initial, minimum),
            ]
        return [
            (warm_end, initial, self.max_learning_rate),
            (self.total_steps - 1.0, self.max_learning_rate, minimum),
        ]

    def _anneal(self, start, end, pct):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (ops.cos(math.pi * pct) + 1.0)
        # PyTorch's (end - start) * pct + start, written so that pct = 1 gives `end` exactly in
        # float32 (the final rate is ~1e-5 of the start and would drown in round-off).
        return (1.0 - pct) * start + pct * end

    def __call__(self, step: Any) -> Any:
        step = _step(step)
        phases = self._phases()
        # Evaluate phases from last to first so the earliest phase containing `step` wins,
        # as PyTorch's loop does.
        out = None
        starts = [0.0] + [end for end, _, _ in phases[:-1]]
        for start_step, (end_step, start, end) in reversed(list(zip(starts, phases))):
            pct = ops.clip((step - start_step) / (end_step - start_step), 0.0, 1.0)
            value = self._anneal(start, end, pct)
            out = value if out is None else ops.where(step <= end_step, value, out)
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "anneal": self.anneal,
            "three_phase": self.three_phase,
            "name": self.name,
        }
