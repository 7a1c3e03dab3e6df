"""Checks and small tensor helpers shared by the training wrappers."""

import keras
from keras import ops


def check_model(name: str, model) -> keras.Model:
    """Raise unless `model` is a Keras model."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"`{name}` must be a `keras.Model`. Received: {name}={model!r}")
    return model


def check_bool(name: str, value) -> bool:
    """Raise unless `value` is a Python bool."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def static_output_shape(model: keras.Model):
    """The model's symbolic output shape, or None when the model has no symbolic outputs."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    if len(outputs) != 1:
        return "several outputs"
    return tuple(outputs[0].shape)


def check_classifier(name: str, model: keras.Model):
    """Raise unless the model's output is (batch, classes): a softmax over the last axis makes sense.

    Models without symbolic outputs (subclassed, not built) are checked on their first output
    by `check_logits` instead.
    """
    shape = static_output_shape(model)
    if shape is not None:
        check_logits_shape(name, shape)
    return shape


def check_logits_shape(name: str, shape):
    if shape == "several outputs" or len(shape) != 2 or (shape[-1] is not None and shape[-1] < 2):
        raise ValueError(
            f"`{name}` must output one (batch, classes) tensor with at least 2 classes, so a "
            f"softmax over classes is defined. Received: {name} with output shape {shape}"
        )


def check_logits(name: str, y):
    """The same check on a computed output (for models whose output shape is only known now)."""
    if isinstance(y, (list, tuple, dict)):
        check_logits_shape(name, "several outputs")
    check_logits_shape(name, tuple(y.shape))
    return y


def log_probabilities(y, from_logits: bool):
    """log p over the last axis: log-softmax of logits, or the log of (clipped) probabilities."""
    if from_logits:
        return ops.log_softmax(y, axis=-1)
    # Keras's own clip for probability inputs (keras.losses.KLDivergence).
    return ops.log(ops.clip(y, keras.config.epsilon(), 1.0))


def probabilities(y, from_logits: bool):
    """p over the last axis."""
    return ops.softmax(y, axis=-1) if from_logits else y


def kl_divergence(log_p, log_q):
    """Per-example KL(p || q) = sum_k p_k (log p_k - log q_k), from log-probabilities."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
