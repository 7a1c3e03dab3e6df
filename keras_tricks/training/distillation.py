"""Knowledge distillation with Hinton et al.'s recipe, on top of `keras.distillation.Distiller`."""

from __future__ import annotations

from typing import Any

import keras

from keras_tricks._checks import check_keywords, check_number
from keras_tricks.training._common import check_classifier, check_model


@keras.saving.register_keras_serializable(package="keras_tricks")
class HintonDistiller(keras.distillation.Distiller):
    """Train a student on a frozen teacher's softened predictions plus the true labels.

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
    https://arxiv.org/abs/1503.02531: soft targets are the teacher's softmax at a high
    temperature `T`; the student matches them at the same `T`, the soft term is multiplied by
    `T**2` so its gradients keep their size as `T` changes, and the hard (true-label) term at
    `T = 1` gets a small weight. For a batch of teacher logits `t`, student logits `s`, labels `y`:

    ```
    p_teacher = softmax(t / T)
    p_student = softmax(s / T)
    soft = mean(sum(p_teacher * (log(p_teacher) - log(p_student)), axis=-1)) * T**2   # KL
    hard = mean(cross_entropy(y, softmax(s)))       # the loss given to compile, at T = 1
    loss = soft_target_weight * soft + (1 - soft_target_weight) * hard
    ```

    The paper writes the soft term as the cross-entropy with the soft targets; the KL
    divergence used here differs from it by the teacher's entropy, a constant, so the
    gradients are the same and a perfect match scores 0.

    What Keras does and this class reuses: `keras.distillation.Distiller` freezes the teacher
    (`teacher.trainable = False`, run with `training=False`, so its weights and BatchNorm
    statistics never change), computes the weighted sum above and tracks `student_loss`,
    `distillation_loss` and `total_loss`; `keras.distillation.LogitsDistillation` given a
    `keras.losses.KLDivergence()` instance divides both logits by `T`, takes the softmaxes'
    KL divergence and multiplies it by `T**2` (with its default, the string `"kl_divergence"`,
    Keras 3.15 skips the softmax and the `T**2`: `tests/test_training_distillation.py` pins
    both). Calling, evaluating or predicting with the distiller runs the student alone on
    unscaled logits (`T = 1`). Added here: the recipe's defaults, one `soft_target_weight` knob,
    argument checks naming the argument, a default hard-target loss (sparse categorical
    cross-entropy on logits), and `get_config` returning these constructor arguments.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tricks.training import HintonDistiller

    def cnn(width):
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(width, 3),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])

    x = np.random.rand(64, 28, 28, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    teacher = cnn(32)                      # in practice: trained first, logits out
    distiller = HintonDistiller(teacher, cnn(8), temperature=20.0, soft_target_weight=0.9)
    distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    student = distiller.student            # use on its own, at T = 1
    ```

    Args:
        teacher: A trained classifier returning (batch, classes) logits.
        student: The classifier to train, returning logits of the same shape.
        temperature: Softmax temperature `T` of the soft targets, > 0 (20 in the recipe our
            notes follow; the paper tried 1 to 20).
        soft_target_weight: Weight of the soft term in [0, 1]; the hard term gets the rest
            (0.9 : 0.1 by default).
        name: Model name.
        **kwargs: Passed to `keras.Model`.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        temperature: float = 20.0,
        soft_target_weight: float = 0.9,
        name: str = "hinton_distiller",
        **kwargs: Any,
    ) -> None:
        # First: a misspelt name leaves its default in place. Distiller's own arguments come
        # from the recipe's; the rest go to keras.Model.
        check_keywords(type(self), kwargs)
        for fixed in ("distillation_losses", "distillation_loss_weights", "student_loss_weight"):
            if fixed in kwargs:
                raise ValueError(
                    f"HintonDistiller sets `{fixed}` from `temperature` and "
                    f"`soft_target_weight`; use keras.distillation.Distiller to set it yourself. "
                    f"Received: {fixed}={kwargs[fixed]!r}"
                )
        check_model("teacher", teacher)
        check_model("student", student)
        temperature = check_number("temperature", temperature, positive=True)
        soft_target_weight = check_number(
            "soft_target_weight", soft_target_weight, minimum=0.0, maximum=1.0
        )
        teacher_shape = check_classifier("teacher", teacher)
        student_shape = check_classifier("student", student)
        if (
            teacher_shape is not None
            and student_shape is not None
            and teacher_shape[1:] != student_shape[1:]
        ):
            raise ValueError(
                "`student` must output the same shape as `teacher` (one logit per class), "
                f"{teacher_shape}. Received: student={student!r} with output shape "
                f"{student_shape}"
            )
        super().__init__(
            teacher=teacher,
            student=student,
            # A `KLDivergence` instance, not the string: Keras 3.15 resolves "kl_divergence" (the
            # default) to the bare function, which skips the softmax and the T**2 and takes
            # the KL divergence of the scaled logits themselves.
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=temperature, loss=keras.losses.KLDivergence()
            ),
            student_loss_weight=1.0 - soft_target_weight,
            name=name,
            **kwargs,
        )
        self.temperature = temperature
        self.soft_target_weight = soft_target_weight

    def compile(
        self, optimizer: Any = "adam", loss: Any = None, metrics: Any = None, **kwargs: Any
    ) -> None:
        """As `Distiller.compile`; `loss` (the hard-target loss) defaults to sparse CE on logits."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        # Distiller hands `loss=None` to Model.compile; record the real one so that
        # `keras.models.load_model` recompiles with it.
        self._compile_config.config["loss"] = loss

    def compile_from_config(self, config: dict[str, Any]) -> None:
        # Keras skips (with a warning) models whose `compile` is overridden; ours takes the
        # recorded arguments as they are.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "temperature": self.temperature,
            "soft_target_weight": self.soft_target_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HintonDistiller:
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        return cls(**config)
