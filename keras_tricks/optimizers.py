"""Optimizers: LARS, bias/BatchNorm exclusion from weight decay, weight-decay conventions.

Weight decay is written four ways in the literature and in frameworks; for one plain SGD step
with learning rate `lr` and gradient `g` of the data loss:

```
# "l2": a loss term lambda / 2 * ||w||^2 (its gradient is lambda * w)
w = w - lr * (g + lambda_ * w)
# "coupled": PyTorch `SGD(weight_decay=wd)` adds wd * w to the gradient (momentum sees it)
w = w - lr * (g + wd * w)
# "decoupled": Keras `weight_decay=wd` shrinks the weights before the step, scaled by lr
w = w - lr * wd * w;  w = w - lr * g
# "decoupled_lr_free": AdamW paper (Loshchilov & Hutter, https://arxiv.org/abs/1711.05101)
# shrinks by lambda times the schedule multiplier only, not by the base learning rate
w = w - lambda_ * w;  w = w - lr * g
# "keras_l2": `keras.regularizers.L2(l2=c)` adds c * ||w||^2 to the loss (gradient 2c * w)
```

So "l2", "coupled" and "decoupled" take the same number for plain SGD at the same learning rate
(and for the first step of momentum SGD); "keras_l2" is half of it; "decoupled_lr_free" is the
per-step shrink lr * wd, so converting to or from it needs the learning rate. With momentum `m`,
coupled decay also runs through the velocity, so its long-run shrink per step is about
lr * wd / (1 - m) while decoupled decay stays lr * wd; with Adam, coupled decay is also divided
by the adaptive denominator. No single number makes those identical over many steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks._checks import (
    check_bool,
    check_int,
    check_keywords,
    check_number,
    check_one_of,
    fail,
    suggest_keywords,
)

WEIGHT_DECAY_CONVENTIONS = ("l2", "coupled", "decoupled", "decoupled_lr_free", "keras_l2")

# Keras layers name their variables kernel/bias/gamma/beta (BatchNormalization: gamma, beta).
_NO_DECAY_NAMES = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="keras_tricks")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling: momentum SGD with a per-layer trust ratio.

    You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks",
    https://arxiv.org/abs/1708.03888, Algorithm 1. For each variable `w` with gradient `g`,
    global learning rate `lr`, weight decay `wd` and trust coefficient `eta`:

    ```
    local_lr = eta * norm(w) / (norm(g) + wd * norm(w))  # 1.0 if norm(w) or norm(g) is 0
    v = momentum * v + lr * local_lr * (g + wd * w)
    w = w - v                                              # nesterov: w - (momentum * v
                                                           #   + lr * local_lr * (g + wd * w))
    ```

    Variables excluded from layer adaptation get plain momentum SGD, without the trust ratio
    and without weight decay (`local_lr = 1`, `wd = 0`), as in the reference implementations
    (tensorflow/tpu `lars_optimizer.py`). By default these are all variables of rank <= 1:
    biases and BatchNormalization/LayerNormalization `gamma`/`beta`.

    The weight decay here is LARS's own coupled term (inside the trust ratio); the base
    optimizer's decoupled decay is not applied on top. Keras's `exclude_from_weight_decay`
    still works: an excluded variable keeps its trust ratio but gets `wd = 0`.

    Example:

    ```python
    import keras
    from keras_tricks.optimizers import LARS

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(LARS(learning_rate=0.1, momentum=0.9, weight_decay=5e-4), loss="mse")
    ```

    Args:
        learning_rate: Global learning rate (float or `LearningRateSchedule`).
        momentum: Momentum in [0, 1).
        weight_decay: Coupled weight decay `wd` >= 0 used in the trust ratio and the update.
        eta: Trust coefficient (0.001 in the paper), > 0.
        nesterov: Nesterov momentum, as in tensorflow/tpu's LARS.
        exclude_from_layer_adaptation: `None` (exclude rank <= 1 variables) or a list of regex
            fragments matched against each variable's path (e.g. `["bias", "gamma", "beta"]`);
            `[]` adapts every variable.
        **kwargs: Other `keras.optimizers.Optimizer` arguments (`clipnorm`, `use_ema`, ...).
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.1,
        momentum: float = 0.9,
        weight_decay: float | None = 0.0,
        eta: float = 0.001,
        nesterov: bool = False,
        exclude_from_layer_adaptation: Sequence[str] | None = None,
        name: str = "lars",
        **kwargs: Any,
    ) -> None:
        check_keywords(type(self), kwargs, extra=("decay",))
        weight_decay = check_number(
            "weight_decay", 0.0 if weight_decay is None else weight_decay, non_negative=True
        )
        momentum = check_number("momentum", momentum, minimum=0.0, maximum=1.0, max_open=True)
        eta = check_number("eta", eta, positive=True)
        nesterov = check_bool("nesterov", nesterov)
        if exclude_from_layer_adaptation is not None and (
            isinstance(exclude_from_layer_adaptation, str)
            or not all(isinstance(s, str) for s in exclude_from_layer_adaptation)
        ):
            fail(
                "exclude_from_layer_adaptation",
                "None or a list of strings",
                exclude_from_layer_adaptation,
            )
        # The base class would apply decoupled decay on top; LARS's decay is its own.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        self.lars_weight_decay = weight_decay
        self.momentum = momentum
        self.eta = eta
        self.nesterov = nesterov
        self.exclude_from_layer_adaptation = (
            None if exclude_from_layer_adaptation is None else list(exclude_from_layer_adaptation)
        )
        self._adaptation_pattern = (
            re.compile("|".join(self.exclude_from_layer_adaptation))
            if self.exclude_from_layer_adaptation
            else None
        )

    def build(self, variables: Any) -> None:
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        # Decided here on the Keras variables: the TF backend hands `update_step` the
        # underlying tf.Variable, which has no Keras `path`.
        self._adapt_flags = [self._adapts(v) for v in variables]
        self._decay_flags = [self._use_weight_decay(v) for v in variables]

    def _adapts(self, variable):
        """Whether `variable` gets the trust ratio and the weight decay."""
        if self.exclude_from_layer_adaptation is None:
            return len(variable.shape) > 1
        if self._adaptation_pattern is None:
            return True
        return re.search(self._adaptation_pattern, variable.path) is None

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m = self.momentums[index]
        momentum = ops.cast(self.momentum, dtype)

        if self._adapt_flags[index]:
            wd = self.lars_weight_decay if self._decay_flags[index] else 0.0
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            trust = ops.where(
                ops.logical_and(ops.greater(w_norm, 0.0), ops.greater(g_norm, 0.0)),
                self.eta * w_norm / (g_norm + wd * w_norm),
                ops.ones_like(w_norm),
            )
            scaled_lr = lr * trust
            if wd:
                gradient = gradient + ops.cast(wd, dtype) * variable
        else:
            scaled_lr = lr

        step = scaled_lr * gradient
        self.assign(m, momentum * m + step)
        if self.nesterov:
            self.assign_sub(variable, momentum * m + step)
        else:
            self.assign_sub(variable, m)

    def _apply_weight_decay(self, variables):
        # Decay is part of `update_step` (coupled, inside the trust ratio).
        return

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "weight_decay": self.lars_weight_decay,
                "momentum": self.momentum,
                "eta": self.eta,
                "nesterov": self.nesterov,
                "exclude_from_layer_adaptation": self.exclude_from_layer_adaptation,
            }
        )
        return config


@suggest_keywords
def no_bias_decay(
    optimizer: keras.optimizers.Optimizer, var_names: Sequence[str] = _NO_DECAY_NAMES
) -> keras.optimizers.Optimizer:
    """Exclude biases and BatchNorm `gamma`/`beta` from the optimizer's weight decay.

    He et al. 2019, "Bag of Tricks", https://arxiv.org/abs/1812.01187, section 3.1: decay only
    the convolution and dense kernels. Built on Keras's `exclude_from_weight_decay(var_names=)`,
    matching whole variable names (Keras layers name theirs `kernel`, `bias`, `gamma`, `beta`),
    and merged with any exclusions already configured. With Keras's decoupled decay, a kernel
    then follows `w = w - lr * wd * w` before the gradient step and the others are left alone.

    Keras does not save these exclusions in the optimizer config: after `load_model`, call
    `no_bias_decay(model.optimizer)` again (this also works on a built optimizer).

    Example:

    ```python
    import keras
    from keras_tricks.optimizers import no_bias_decay

    optimizer = no_bias_decay(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4))
    ```

    Args:
        optimizer: A Keras optimizer (a `LossScaleOptimizer` is unwrapped).
        var_names: Variable names to exclude (exact names, not substrings).

    Returns:
        The same optimizer, for chaining.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        fail("optimizer", "a keras.optimizers.Optimizer", optimizer)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    # Keras passes the Keras variable ("bias") on JAX/torch but the tf.Variable
    # ("model/dense/bias:0") on TensorFlow; match the last path component either way.
    patterns = [f"(^|/){re.escape(name)}(:[0-9]+)?$" for name in var_names]
    old_pattern = getattr(inner, "_exclude_from_weight_decay_pattern", None)
    if old_pattern is not None:
        patterns.append(old_pattern.pattern)
    old_ids = set(getattr(inner, "_exclude_from_weight_decay", set()))
    if not inner.built:
        inner.exclude_from_weight_decay(var_names=patterns)
    else:
        # Same state `exclude_from_weight_decay` sets; Keras only refuses it once built
        # because the list would be stale, which the cache reset below handles.
        inner._exclude_from_weight_decay_pattern = re.compile("|".join(patterns))
    inner._exclude_from_weight_decay = old_ids
    inner._exclude_from_weight_decay_cache = dict()
    return optimizer


@suggest_keywords
def convert_weight_decay(
    value: float, source: str, target: str, learning_rate: float | None = None
) -> float:
    """Convert a weight-decay value between conventions, for the same plain SGD step.

    Conventions (see the module docstring for each update equation): `"l2"` (loss term
    lambda/2 * ||w||^2), `"coupled"` (PyTorch SGD), `"decoupled"` (Keras `weight_decay`),
    `"decoupled_lr_free"` (AdamW paper's lambda, applied without the learning rate) and
    `"keras_l2"` (`keras.regularizers.L2(l2)`, c * ||w||^2). The conversion makes the shrink of
    one plain SGD step equal: `lr * lambda = lr * wd_coupled = lr * wd_decoupled =
    lambda_free = 2 * lr * c`.

    For Page's summed-loss hyperparameters use `summed_loss_to_mean_loss` first.

    Example:

    ```python
    from keras_tricks.optimizers import convert_weight_decay

    convert_weight_decay(5e-4, "coupled", "keras_l2")  # 2.5e-4
    convert_weight_decay(0.05, "decoupled_lr_free", "decoupled", learning_rate=0.1)  # 0.5
    ```

    Args:
        value: The weight decay in the `source` convention, >= 0.
        source: One of `WEIGHT_DECAY_CONVENTIONS`.
        target: One of `WEIGHT_DECAY_CONVENTIONS`.
        learning_rate: The (peak) learning rate; required only when exactly one side is
            `"decoupled_lr_free"`.

    Returns:
        The weight decay in the `target` convention.
    """
    check_number("value", value, non_negative=True)
    check_one_of("source", source, WEIGHT_DECAY_CONVENTIONS)
    check_one_of("target", target, WEIGHT_DECAY_CONVENTIONS)
    if source == target:  # no rate needed, even between two "decoupled_lr_free" values
        return float(value)
    lr = 1.0
    if "decoupled_lr_free" in (source, target):
        if learning_rate is None:
            fail("learning_rate", 'a number > 0 to convert from or to "decoupled_lr_free"', None)
        lr = check_number("learning_rate", learning_rate, positive=True)

    # Normalise to the per-unit-learning-rate coefficient lambda (gradient lambda * w).
    if source == "keras_l2":
        lam = 2.0 * value
    elif source == "decoupled_lr_free":
        lam = value / lr
    else:
        lam = float(value)

    if target == "keras_l2":
        return lam / 2.0
    if target == "decoupled_lr_free":
        return lam * lr
    return lam


@suggest_keywords
def summed_loss_to_mean_loss(
    learning_rate: float, weight_decay: float, batch_size: int
) -> tuple[float, float]:
    """Translate hyperparameters for a batch-summed loss to a batch-mean loss (Keras's default).

    David Page's "How to train your ResNet" (https://myrtle.ai/learn/how-to-train-your-resnet/)
    sums the loss over the batch and quotes `lr = lr_mean / batch_size`, `wd = 5e-4 * batch_size`
    (coupled, PyTorch SGD). Since the summed loss's gradient is `batch_size` times the mean's,

    ```
    v = momentum * v + (batch_size * g_mean + wd_sum * w);  w = w - lr_sum * v
    # equals, with v_mean = v / batch_size:
    v_mean = momentum * v_mean + (g_mean + wd_sum / batch_size * w)
    w = w - (lr_sum * batch_size) * v_mean
    ```

    so `lr_mean = lr_sum * batch_size` and `wd_mean = wd_sum / batch_size`, exactly, for every
    step, with or without (Nesterov) momentum. The weight decay stays in the coupled
    convention; pass it through `convert_weight_decay` for Keras.

    Example:

    ```python
    from keras_tricks.optimizers import summed_loss_to_mean_loss

    lr, wd = summed_loss_to_mean_loss(0.4 / 512, 5e-4 * 512, batch_size=512)  # (0.4, 5e-4)
    ```

    Args:
        learning_rate: Learning rate used with the summed loss, > 0.
        weight_decay: Coupled weight decay used with the summed loss, >= 0.
        batch_size: Batch size the loss was summed over, a positive integer.

    Returns:
        `(learning_rate, weight_decay)` for a mean-over-batch loss.
    """
    _check_scaling_args(learning_rate, weight_decay, batch_size)
    return learning_rate * batch_size, weight_decay / batch_size


@suggest_keywords
def mean_loss_to_summed_loss(
    learning_rate: float, weight_decay: float, batch_size: int
) -> tuple[float, float]:
    """Inverse of `summed_loss_to_mean_loss`: `(lr / batch_size, wd * batch_size)`.

    Example:

    ```python
    from keras_tricks.optimizers import mean_loss_to_summed_loss

    lr, wd = mean_loss_to_summed_loss(0.4, 5e-4, batch_size=512)  # (0.4 / 512, 0.256)
    ```

    Args:
        learning_rate: Learning rate used with the mean loss, > 0.
        weight_decay: Coupled weight decay used with the mean loss, >= 0.
        batch_size: Batch size, a positive integer.

    Returns:
        `(learning_rate, weight_decay)` for a loss summed over the batch.
    """
    _check_scaling_args(learning_rate, weight_decay, batch_size)
    return learning_rate / batch_size, weight_decay * batch_size


def _check_scaling_args(learning_rate, weight_decay, batch_size):
    check_number("learning_rate", learning_rate, positive=True)
    check_number("weight_decay", weight_decay, non_negative=True)
    check_int("batch_size", batch_size, minimum=1)
