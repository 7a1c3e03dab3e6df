"""Mixed precision: pick the global dtype policy and keep the numerically fragile parts float32.

Micikevicius et al. 2018, "Mixed Precision Training", https://arxiv.org/abs/1710.03740: compute
in 16-bit, keep float32 master weights, scale the loss so small float16 gradients do not flush to
zero, and skip steps whose scaled gradients overflow. Keras 3 already implements every part of it;
this module only chooses the policy and documents what Keras does:

- `keras.mixed_precision.set_global_policy("mixed_float16")` makes new layers compute in float16
  with float32 variables.
- `Model.compile` then wraps the optimizer in `keras.optimizers.LossScaleOptimizer` (dynamic loss
  scale starting at 2**15, doubled after 2000 finite steps, halved and the step skipped when a
  gradient is inf/NaN). bfloat16 has float32's exponent range, so "mixed_bfloat16" needs no scaling
  and `compile` leaves the optimizer alone.
- `BatchNormalization` keeps float32 variables (gamma, beta, moving statistics) and upcasts its
  16-bit input to float32 to compute the moments and normalise, so it stays float32 inside.
- The model's output should be float32 so the loss and softmax run in float32: end the model with
  `float32_output(x)` (a linear `Activation` layer with `dtype="float32"`), as the Keras mixed
  precision guide recommends.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_tricks._checks import fail, suggest_keywords

_POLICIES = ("mixed_float16", "mixed_bfloat16", "float32", "float16", "bfloat16")


def _has_gpu():
    """Whether the current Keras backend sees a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


@suggest_keywords
def use_mixed_precision(policy: str | None = None) -> Any:
    """Set Keras's global dtype policy for mixed precision and return it.

    With `policy=None`: `"mixed_float16"` when the backend sees a GPU (tensor cores run float16;
    Keras adds dynamic loss scaling in `compile`), otherwise `"mixed_bfloat16"` (TPUs and recent
    CPUs have bfloat16 units; its float32-sized exponent needs no loss scaling). Call it before
    building the model: layers read the global policy when they are created.

    Example:

    ```python
    import keras
    from keras_tricks.precision import float32_output, use_mixed_precision

    previous = keras.mixed_precision.global_policy()
    policy = use_mixed_precision("mixed_float16")
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = float32_output(keras.layers.Dense(3)(x))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", loss="mse")  # optimizer becomes a LossScaleOptimizer
    keras.mixed_precision.set_global_policy(previous)
    ```

    Args:
        policy: `None` (choose from the hardware), or one of `"mixed_float16"`,
            `"mixed_bfloat16"`, `"float32"`, `"float16"`, `"bfloat16"`.

    Returns:
        The `keras.DTypePolicy` now in effect.
    """
    if policy is None:
        policy = "mixed_float16" if _has_gpu() else "mixed_bfloat16"
    if not isinstance(policy, str) or policy not in _POLICIES:
        fail("policy", f"None or one of {_POLICIES}", policy)
    keras.mixed_precision.set_global_policy(policy)
    return keras.mixed_precision.global_policy()


@suggest_keywords
def float32_output(x: Any, name: str = "float32_output") -> Any:
    """Cast a functional-API tensor to float32 with a linear layer, for the model's output.

    Under a mixed policy the last Dense computes in 16 bits; this layer (an identity
    `Activation("linear", dtype="float32")`) makes the model return float32 so the softmax
    and loss are computed in full precision.

    Example:

    ```python
    import keras
    from keras_tricks.precision import float32_output

    inputs = keras.Input((4,))
    outputs = float32_output(keras.layers.Dense(2)(inputs))
    model = keras.Model(inputs, outputs)
    ```

    Args:
        x: A symbolic Keras tensor (or any tensor accepted by a layer).
        name: Name of the added layer.

    Returns:
        `x` as float32.
    """
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)
