"""Mean teacher: semi-supervised training against an exponential moving average of the model."""

import math
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_tricks._checks import (
    check_bool,
    check_int,
    check_keywords,
    check_number,
    check_seed,
    fail,
)
from keras_tricks.ema import ema_values, ema_variables
from keras_tricks.training._common import (
    check_classifier,
    check_logits,
    check_model,
    probabilities,
    scale_for_replicas,
)

UNLABELLED = -1
# Added to the first seed word of each of the teacher's seed generators (mod 2**31 - 2, the
# range Keras's TF backend folds seeds into), so that no draw of the teacher repeats one of
# the student's.
_TEACHER_STREAM = 0x3C6E_F372
_SEED_RANGE = 2**31 - 2


def sigmoid_rampup(step: float, rampup_steps: int) -> float:
    """The mean teacher's ramp-up `exp(-5 (1 - t)**2)`, `t = clip(step / rampup_steps, 0, 1)`.

    As `sigmoid_rampup` of the reference code (CuriousAI/mean-teacher, after Laine & Aila
    2017, https://arxiv.org/abs/1610.02242); 1 from the end of the ramp on, and always 1 when
    `rampup_steps` is 0:

    ```
    t = min(max(step, 0), rampup_steps) / rampup_steps
    weight = exp(-5 * (1 - t) ** 2)
    ```

    Example:

    ```python
    from keras_tricks.training import sigmoid_rampup
    weights = [sigmoid_rampup(step, 1000) for step in (0, 500, 1000, 2000)]
    # [0.0067, 0.2865, 1.0, 1.0]
    ```

    Args:
        step: The current training step (0-based).
        rampup_steps: Length of the ramp in steps, >= 0.
    """
    if rampup_steps == 0:
        return 1.0
    phase = 1.0 - min(max(float(step), 0.0), rampup_steps) / rampup_steps
    return math.exp(-5.0 * phase * phase)


def _own_random_streams(teacher: keras.Model) -> None:
    """Give the teacher's random layers streams of their own, deterministically.

    `keras.models.clone_model` rebuilds each layer from its config, seed included, so a seeded
    augmentation or dropout layer of the teacher would draw exactly the student's numbers at
    every step, and the consistency cost would compare two identically perturbed copies
    instead of the paper's two independent perturbations. Each `keras.random.SeedGenerator`
    state (`[seed, counter]`) of the teacher gets its seed word shifted by `_TEACHER_STREAM`.
    """
    for variable in teacher.variables:
        if variable.name == "seed_generator_state" and "int" in str(variable.dtype):
            state = np.array(ops.convert_to_numpy(variable))
            state[0] = (int(state[0]) + _TEACHER_STREAM) % _SEED_RANGE
            variable.assign(state)


def _split_labels(y):
    """(labels with -1 replaced by 0, float mask: 1 for labelled rows, 0 for unlabelled)."""
    y = ops.convert_to_tensor(y)
    if len(y.shape) >= 2 and y.shape[-1] not in (None, 1):
        # One-hot or soft labels: a row of -1s (any negative entry) marks an unlabelled image.
        labelled = ops.all(ops.greater_equal(y, 0), axis=-1)
        clean = ops.where(ops.expand_dims(labelled, -1), y, ops.zeros_like(y))
    else:
        labelled = ops.greater_equal(y, 0)
        clean = ops.where(labelled, y, ops.zeros_like(y))
        labelled = ops.reshape(labelled, (-1,))
    return clean, ops.cast(labelled, "float32")


@keras.saving.register_keras_serializable(package="keras_tricks")
class MeanTeacher(keras.Model):
    """Semi-supervised training: a student learns from labels and from its own weight average.

    Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017,
    https://arxiv.org/abs/1703.01780; reference code https://github.com/CuriousAI/mean-teacher.
    The teacher is an exponential moving average (EMA) of the student's weights, BatchNorm
    statistics included; the student is trained on the labelled images' task loss plus a
    consistency cost between its softmax and the teacher's on every image. Labelled and
    unlabelled images share a batch; unlabelled ones carry the label -1 (a row of -1s for
    one-hot labels). After each step `n` (0-based) of the optimizer:

    ```
    t = min(n / rampup_steps, 1)                         # at training step n
    w = consistency_weight * exp(-5 * (1 - t) ** 2)      # the paper's sigmoid ramp-up
    labelled = y != -1
    class_loss = sum(task_loss(y, f_student(x)) * labelled) / batch_size   # compiled loss
    consistency = mean((softmax(f_student(x)) - softmax(stop_gradient(f_teacher(x)))) ** 2)
    loss = class_loss + w * consistency
    # after the optimizer step:
    d = min(ema_decay, 1 - 1 / (n + 2))                  # the reference's true average at first
    teacher = d * teacher + (1 - d) * student            # every weight and BN statistic
    ```

    As in the reference: the class cost divides by the whole batch, the consistency is the mean
    squared difference of the softmaxes over classes and images (labelled ones included), the
    teacher's output carries no gradient, and both models run in training mode, so augmentation
    layers and dropout inside the model draw independently for each (the clone's seeded layers
    are moved to random streams of their own, see `_own_random_streams`). The teacher is frozen
    (`trainable = False`), so its BatchNorm layers use the averaged statistics. The EMA update is
    `keras_tricks.ema.ema_values` (the arithmetic of `callbacks.ExponentialMovingAverage`) over
    the variables `ema_variables` selects, run inside the compiled train step.

    `evaluate`, `predict`, calling the model and `validation_data` use the teacher;
    `.student` and `.teacher` are the two Keras models. Training-time compile `metrics` also
    count unlabelled rows (as class 0); pass them as `weighted_metrics` to count labelled rows
    only. With the labels in a separate, smaller set, `TwoStreamBatches` builds the mixed
    batches. `consistency_loss` is logged.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tricks.training import MeanTeacher

    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    x = np.random.rand(64, 28, 28, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    y[16:] = -1                                          # 16 labels, 48 unlabelled images
    model = MeanTeacher(net, ema_decay=0.99, consistency_weight=1.0, rampup_steps=100)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    teacher_predictions = model.predict(x, verbose=0)
    ```

    Args:
        model: The student, a built classifier returning (batch, classes) logits (or
            probabilities, see `from_logits`); the teacher starts as a copy of it
            (`keras.models.clone_model`).
        ema_decay: EMA decay of the teacher in [0, 1) (0.99 in the paper during ramp-up).
        consistency_weight: Maximum weight of the consistency cost, >= 0 (the reference uses
            up to 100 with this mean-squared cost on CIFAR-10 and SVHN).
        rampup_steps: Training steps over which the consistency weight ramps up, >= 0
            (the reference TensorFlow code: 40000).
        from_logits: Whether `model` returns logits (True) or probabilities.
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        model: keras.Model,
        ema_decay: float = 0.99,
        consistency_weight: float = 1.0,
        rampup_steps: int = 40000,
        from_logits: bool = True,
        **kwargs: Any,
    ) -> None:
        check_keywords(type(self), kwargs)  # first: a misspelt name leaves its default in place
        check_model("model", model)
        ema_decay = check_number("ema_decay", ema_decay, minimum=0.0, maximum=1.0, max_open=True)
        consistency_weight = check_number(
            "consistency_weight", consistency_weight, non_negative=True
        )
        rampup_steps = check_int("rampup_steps", rampup_steps, minimum=0)
        from_logits = check_bool("from_logits", from_logits)
        if not model.built or not model.weights:
            fail(
                "model",
                "built, with its weights, so the teacher can copy them (give it a `keras.Input` "
                "or call `model.build(input_shape)`)",
                model,
            )
        check_classifier("model", model)
        super().__init__(**kwargs)
        teacher = keras.models.clone_model(model)
        teacher.set_weights(model.get_weights())
        _own_random_streams(teacher)
        teacher.trainable = False
        # Distinct names keep the two models apart in saved files.
        teacher.name = f"{model.name}_teacher"
        self.student = model
        self.teacher = teacher
        self.ema_decay = ema_decay
        self.consistency_weight = consistency_weight
        self.rampup_steps = rampup_steps
        self.from_logits = from_logits
        self.teacher_updates = keras.Variable(
            0, dtype="int32", trainable=False, name="teacher_updates"
        )
        self.consistency_loss_tracker = keras.metrics.Mean(name="consistency_loss")
        for s, t in self._pairs():
            if tuple(s.shape) != tuple(t.shape):
                raise ValueError(
                    "`model` could not be copied into a teacher with the same variables "
                    f"({s.path} {s.shape} vs {t.path} {t.shape}). Received: model={model!r}"
                )

    # ------------------------------------------------------------------ teacher
    def _pairs(self):
        # Student and clone list their weights in the same order; pair them positionally.
        selected = {id(v) for v in ema_variables(self.student, include_non_trainable=True)}
        return [
            (s, t) for s, t in zip(self.student.weights, self.teacher.weights) if id(s) in selected
        ]

    def current_ema_decay(self, updates: Any) -> Any:
        """The decay of the teacher update that follows `updates` earlier updates."""
        return ops.minimum(self.ema_decay, 1.0 - 1.0 / (ops.cast(updates, "float32") + 2.0))

    def current_consistency_weight(self, step: Any) -> Any:
        """`consistency_weight * sigmoid_rampup(step, rampup_steps)`, as a tensor."""
        if self.rampup_steps == 0:
            return ops.convert_to_tensor(self.consistency_weight, "float32")
        t = ops.clip(ops.cast(step, "float32") / float(self.rampup_steps), 0.0, 1.0)
        return self.consistency_weight * ops.exp(-5.0 * ops.square(1.0 - t))

    def update_teacher(self) -> None:
        """Fold the student's current weights into the teacher (one EMA step)."""
        pairs = self._pairs()
        decay = self.current_ema_decay(self.teacher_updates)
        new = ema_values(decay, [t for _, t in pairs], [s for s, _ in pairs])
        for (_, teacher_variable), value in zip(pairs, new):
            teacher_variable.assign(value)
        self.teacher_updates.assign(self.teacher_updates + 1)

    # ------------------------------------------------------------------- model
    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            return self.student(inputs, training=True)
        return self.teacher(inputs, training=False)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if y_pred is None:
            y_pred = self(x, training=training)
        check_logits("model", y_pred, self.student)
        y, mask = _split_labels(y)
        weight = mask if sample_weight is None else ops.cast(sample_weight, mask.dtype) * mask
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=weight, training=training
        )
        if not training:
            return loss
        target = ops.stop_gradient(self.teacher(x, training=True))
        p_student = probabilities(y_pred, self.from_logits)
        p_teacher = probabilities(target, self.from_logits)
        consistency = ops.mean(ops.square(p_student - ops.cast(p_teacher, p_student.dtype)))
        self.consistency_loss_tracker.update_state(consistency)
        w = self.current_consistency_weight(self.teacher_updates)
        return loss + scale_for_replicas(ops.cast(w, consistency.dtype) * consistency)

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> dict[str, Any]:
        y, mask = _split_labels(y)
        weight = mask if sample_weight is None else ops.cast(sample_weight, mask.dtype) * mask
        return super().compute_metrics(x, y, y_pred, sample_weight=weight)

    def train_step(self, *args: Any) -> Any:
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        logs = super().train_step(*args)
        self.update_teacher()  # after the optimizer step, as the reference
        return logs

    def _jax_train_step(self, state, data):
        logs, state = super().train_step(state, data)
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        # The same update code, run statelessly on the step's new values.
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.update_teacher()
        non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.student),
            "ema_decay": self.ema_decay,
            "consistency_weight": self.consistency_weight,
            "rampup_steps": self.rampup_steps,
            "from_logits": self.from_logits,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MeanTeacher":
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


class TwoStreamBatches(keras.utils.PyDataset):
    """Batches of labelled and unlabelled images together, from two separate sets.

    The reference's `TwoStreamBatchSampler` (CuriousAI/mean-teacher): every batch holds
    `labelled_batch_size` labelled images, cycled through in a fresh random order as often as
    needed, and `batch_size - labelled_batch_size` unlabelled ones; an epoch is one pass over
    the unlabelled set. Unlabelled images get the label -1, as `MeanTeacher` expects:

    ```
    for i in range(len(x_unlabelled) // (batch_size - labelled_batch_size)):
        x = concat(x_labelled[next labelled_batch_size], x_unlabelled[next unlabelled part])
        y = concat(y_labelled[same], [-1] * unlabelled part)
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks.training import TwoStreamBatches

    x_l, y_l = np.random.rand(100, 28, 28, 1), np.random.randint(0, 10, 100)
    x_u = np.random.rand(900, 28, 28, 1)
    batches = TwoStreamBatches(x_l, y_l, x_u, batch_size=100, labelled_batch_size=25, seed=0)
    x, y = batches[0]                        # 25 labelled, then 75 with label -1
    ```

    Args:
        x_labelled: Labelled images (a NumPy array).
        y_labelled: Their labels: integers (N,) or one-hot/soft (N, classes).
        x_unlabelled: Unlabelled images, same shape per image as `x_labelled`.
        batch_size: Images per batch.
        labelled_batch_size: Labelled images per batch, in [1, batch_size).
        seed: Seed of the shuffling (None: random).
        **kwargs: Passed to `keras.utils.PyDataset` (`workers`, `use_multiprocessing`, ...).
    """

    def __init__(
        self,
        x_labelled: ArrayLike,
        y_labelled: ArrayLike,
        x_unlabelled: ArrayLike,
        batch_size: int = 256,
        labelled_batch_size: int = 64,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        # A misspelt keyword first: the argument it meant would be checked at its default.
        check_keywords(type(self), kwargs, extra=())
        batch_size = check_int("batch_size", batch_size, minimum=2)
        labelled_batch_size = check_int("labelled_batch_size", labelled_batch_size)
        if labelled_batch_size >= batch_size:
            fail(
                "labelled_batch_size",
                f"an integer smaller than `batch_size` (here {batch_size})",
                labelled_batch_size,
            )
        seed = check_seed("seed", seed)
        super().__init__(**kwargs)
        self.x_labelled = np.asarray(x_labelled)
        self.y_labelled = np.asarray(y_labelled)
        if np.issubdtype(self.y_labelled.dtype, np.unsignedinteger):
            self.y_labelled = self.y_labelled.astype(np.int64)  # room for -1 (uint8 datasets)
        self.x_unlabelled = np.asarray(x_unlabelled)
        # Arrays are described by their shapes: their repr would print the data.
        if len(self.x_labelled) != len(self.y_labelled) or not len(self.x_labelled):
            raise ValueError(
                "`y_labelled` must hold one label per image of `x_labelled`, at least one. "
                f"Received: y_labelled with shape {self.y_labelled.shape}, x_labelled with "
                f"shape {self.x_labelled.shape}"
            )
        if self.x_labelled.shape[1:] != self.x_unlabelled.shape[1:]:
            raise ValueError(
                f"`x_unlabelled` must hold images of the shape of `x_labelled`'s, "
                f"{self.x_labelled.shape[1:]}. Received: x_unlabelled with shape "
                f"{self.x_unlabelled.shape}"
            )
        self.batch_size = batch_size
        self.labelled_batch_size = labelled_batch_size
        self.unlabelled_batch_size = batch_size - labelled_batch_size
        if len(self.x_unlabelled) < self.unlabelled_batch_size:
            raise ValueError(
                f"`x_unlabelled` must hold at least one batch's share of unlabelled images "
                f"({self.unlabelled_batch_size}). Received: x_unlabelled with shape "
                f"{self.x_unlabelled.shape}"
            )
        self._rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return len(self.x_unlabelled) // self.unlabelled_batch_size

    def on_epoch_end(self) -> None:
        n = len(self)
        self._unlabelled_order = self._rng.permutation(len(self.x_unlabelled))
        needed = n * self.labelled_batch_size
        passes = -(-needed // len(self.x_labelled))
        self._labelled_order = np.concatenate(
            [self._rng.permutation(len(self.x_labelled)) for _ in range(passes)]
        )

    def __getitem__(self, index):
        lb, ub = self.labelled_batch_size, self.unlabelled_batch_size
        li = self._labelled_order[index * lb : (index + 1) * lb]
        ui = self._unlabelled_order[index * ub : (index + 1) * ub]
        x = np.concatenate([self.x_labelled[li], self.x_unlabelled[ui]])
        y_l = self.y_labelled[li]
        fill = np.full((ub,) + y_l.shape[1:], UNLABELLED, dtype=y_l.dtype)
        return x, np.concatenate([y_l, fill])
