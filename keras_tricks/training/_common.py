"""Checks and small tensor helpers shared by the training wrappers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks._checks import fail

_CLASSIFIER = (
    "a classifier with one (batch, classes) output and at least 2 classes, so that a softmax "
    "over classes is defined"
)


def check_model(name: str, model: Any) -> keras.Model:
    """Raise unless `model` is a Keras model."""
    if not isinstance(model, keras.Model):
        fail(name, "a `keras.Model`", model)
    return model


def static_output_shape(model: keras.Model) -> Any:
    """The model's symbolic output shape, or None when the model has no symbolic outputs."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    if len(outputs) != 1:
        return "several outputs"
    return tuple(outputs[0].shape)


def check_classifier(name: str, model: keras.Model) -> Any:
    """Raise unless the model's output is (batch, classes), so a softmax over classes makes sense.

    Models without symbolic outputs (subclassed, not built) are checked on their first output
    by `check_logits` instead.
    """
    shape = static_output_shape(model)
    if shape is not None:
        check_logits_shape(name, shape, model)
    return shape


def check_logits_shape(name: str, shape: Any, model: Any = None) -> None:
    """Raise in the package's message style unless `shape` is (batch, classes >= 2)."""
    if shape == "several outputs" or len(shape) != 2 or (shape[-1] is not None and shape[-1] < 2):
        shown = "" if model is None else f"={model!r}"
        raise ValueError(
            f"`{name}` must be {_CLASSIFIER}. Received: {name}{shown} with output shape {shape}"
        )


def check_logits(name: str, y: Any, model: Any = None) -> Any:
    """The same check on a computed output (for models whose output shape is only known now)."""
    if isinstance(y, (list, tuple, dict)):
        check_logits_shape(name, "several outputs", model)
    check_logits_shape(name, tuple(y.shape), model)
    return y


def scale_for_replicas(loss: Any) -> Any:
    """A loss term added in `compute_loss`, scaled as Keras scales the compiled loss.

    Under a `tf.distribute` strategy Keras multiplies each replica's compiled loss by
    `1 / num_replicas` (`keras.losses.Loss` does it), sums the replicas' gradients, and
    multiplies the logged loss back. A term added by hand needs the same factor, or its
    gradient is `num_replicas` times too large. On JAX (one program over the global batch) and
    without a strategy the factor is 1.
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * ops.cast(1.0 / replicas, loss.dtype)


def log_probabilities(y: Any, from_logits: bool) -> Any:
    """log p over the last axis: log-softmax of logits, or the log of (clipped) probabilities."""
    if from_logits:
        return ops.log_softmax(y, axis=-1)
    # Keras's own clip for probability inputs (keras.losses.KLDivergence).
    return ops.log(ops.clip(y, keras.config.epsilon(), 1.0))


def probabilities(y: Any, from_logits: bool) -> Any:
    """p over the last axis."""
    return ops.softmax(y, axis=-1) if from_logits else y


def kl_divergence(log_p: Any, log_q: Any) -> Any:
    """Per-example KL(p || q) = sum_k p_k (log p_k - log q_k), from log-probabilities."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
