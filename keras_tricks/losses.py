"""Losses: cross-entropy with label smoothing in both published conventions."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks._checks import check_bool, check_number, check_one_of, suggest_keywords

_CONVENTIONS = ("uniform", "others")


@keras.saving.register_keras_serializable(package="keras_tricks")
class LabelSmoothingCrossEntropy(keras.losses.Loss):
    """Cross-entropy against label-smoothed targets, for sparse or one-hot/soft labels.

    Label smoothing (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567, section 7) replaces
    the one-hot target by a mixture with a spread-out distribution. Two conventions are in use,
    for `K` classes and smoothing `epsilon`:

    ```
    # "uniform" (Szegedy; Keras `CategoricalCrossentropy(label_smoothing=...)`):
    target = (1 - epsilon) * one_hot + epsilon / K
    # -> true class 1 - epsilon + epsilon / K, every other class epsilon / K
    # "others" (He et al. 2019, "Bag of Tricks", https://arxiv.org/abs/1812.01187, eq. 2):
    target = (1 - epsilon) * one_hot + epsilon / (K - 1) * (1 - one_hot)
    # -> true class 1 - epsilon, every other class epsilon / (K - 1)
    loss = -sum(target * log_softmax(logits), axis=-1)
    ```

    Both maps are linear in the label, so soft labels (e.g. mixup/CutMix output) are smoothed
    exactly as their one-hot components would be and the targets still sum to one. Unlike
    Keras's `SparseCategoricalCrossentropy`, sparse integer labels can be smoothed too. Float16
    and bfloat16 predictions are upcast: the log-softmax runs in float32.

    Example:

    ```python
    import numpy as np
    from keras_tricks.losses import LabelSmoothingCrossEntropy

    loss = LabelSmoothingCrossEntropy(epsilon=0.1, convention="others")
    logits = np.array([[2.0, 0.5, -1.0]], "float32")
    value = float(loss(np.array([0]), logits))  # sparse label
    value_onehot = float(loss(np.array([[1.0, 0.0, 0.0]]), logits))  # same value
    # model.compile(optimizer="sgd", loss=LabelSmoothingCrossEntropy(0.1))
    ```

    Args:
        epsilon: Smoothing amount in [0, 1). 0 is plain cross-entropy.
        convention: `"uniform"` (epsilon/K on every class, Keras/Szegedy) or `"others"`
            (epsilon/(K-1) on the wrong classes only, He et al.).
        from_logits: Whether `y_pred` holds logits (default) or probabilities. Probabilities
            are renormalised and clipped to [eps, 1 - eps] before the log, as Keras does.
        reduction, name, dtype: As for `keras.losses.Loss`.

    Labels are sparse when `y_true` has one dimension fewer than `y_pred`, or the same rank
    with a last dimension of 1 while `y_pred` has more than one class; otherwise they are taken
    as one-hot or soft distributions over the last axis.
    """

    @suggest_keywords
    def __init__(
        self,
        epsilon: float = 0.1,
        convention: str = "uniform",
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "label_smoothing_cross_entropy",
        dtype: Any = None,
    ) -> None:
        epsilon = check_number("epsilon", epsilon, minimum=0.0, maximum=1.0, max_open=True)
        convention = check_one_of("convention", convention, _CONVENTIONS)
        from_logits = check_bool("from_logits", from_logits)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = epsilon
        self.convention = convention
        self.from_logits = from_logits

    def call(self, y_true: Any, y_pred: Any) -> Any:
        compute_dtype = "float32" if y_pred.dtype in ("float16", "bfloat16") else y_pred.dtype
        y_pred = ops.cast(y_pred, compute_dtype)
        num_classes = y_pred.shape[-1]
        if num_classes is None:
            raise ValueError("The last dimension of `y_pred` (the classes) must be known.")
        if self.convention == "others" and num_classes < 2 and self.epsilon > 0:
            raise ValueError(
                'convention="others" needs at least 2 classes. '
                f"Received y_pred with last dimension {num_classes}."
            )

        sparse = len(y_true.shape) == len(y_pred.shape) - 1 or (
            len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1 and num_classes > 1
        )
        if sparse:
            if len(y_true.shape) == len(y_pred.shape):
                y_true = ops.squeeze(y_true, axis=-1)
            y_true = ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype=compute_dtype)
        else:
            y_true = ops.cast(y_true, compute_dtype)

        eps = self.epsilon
        if eps > 0:
            if self.convention == "uniform":
                y_true = y_true * (1.0 - eps) + eps / num_classes
            else:
                y_true = y_true * (1.0 - eps) + (1.0 - y_true) * (eps / (num_classes - 1))

        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            y_pred = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
            tiny = keras.config.epsilon()
            log_probs = ops.log(ops.clip(y_pred, tiny, 1.0 - tiny))
        return -ops.sum(y_true * log_probs, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "epsilon": self.epsilon,
                "convention": self.convention,
                "from_logits": self.from_logits,
            }
        )
        return config
