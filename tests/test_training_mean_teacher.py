"""MeanTeacher: ramp-up, teacher = EMA of the student (BN included), loss, teacher inference."""

import math

import keras
import numpy as np
import pytest

from keras_tricks.training import MeanTeacher, TwoStreamBatches, sigmoid_rampup

NUM_IN, NUM_CLASSES = 5, 3


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((NUM_IN,)), keras.layers.Dense(NUM_CLASSES)])


def _with_bn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((NUM_IN,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(momentum=0.5),  # fast-moving statistics
            keras.layers.ReLU(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def _data(n=64, seed=0, unlabelled_from=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_IN)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, n)
    if unlabelled_from is not None:
        y[unlabelled_from:] = -1
    return x, y


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def reference_rampup(current, rampup_length):
    """`sigmoid_rampup` of CuriousAI/mean-teacher (pytorch/mean_teacher/ramps.py), same logic."""
    if rampup_length == 0:
        return 1.0
    current = np.clip(current, 0.0, rampup_length)
    phase = 1.0 - current / rampup_length
    return float(np.exp(-5.0 * phase * phase))


@pytest.mark.parametrize("length", [0, 1, 10, 40000])
def test_rampup_follows_exp_minus_five_one_minus_t_squared(length):
    model = MeanTeacher(_linear(), consistency_weight=7.0, rampup_steps=length)
    for step in [0, 1, 3, length // 4, length // 2, length - 1, length, length + 5, 10 * length]:
        expected = reference_rampup(step, length)
        if length and step <= length:
            assert expected == pytest.approx(math.exp(-5 * (1 - step / length) ** 2))
        assert sigmoid_rampup(step, length) == pytest.approx(expected, rel=1e-12)
        in_graph = keras.ops.convert_to_numpy(model.current_consistency_weight(step))
        assert float(in_graph) == pytest.approx(7.0 * expected, rel=1e-6)
    if length:
        assert sigmoid_rampup(0, length) == pytest.approx(math.exp(-5))


def _numpy_ema(history, decay):
    """The reference's update: alpha = min(1 - 1/(global_step + 1), decay), global_step = n + 1."""
    teacher = [w.astype(np.float64) for w in history[0]]
    for n, student in enumerate(history[1:]):
        a = min(1 - 1 / (n + 2), decay)
        teacher = [a * t + (1 - a) * s for t, s in zip(teacher, student)]
    return teacher


class _Recorder(keras.callbacks.Callback):
    """The student's weights (BN statistics included) after every training step."""

    def __init__(self, history):
        super().__init__()
        self.history = history

    def on_train_batch_end(self, batch, logs=None):
        self.history.append([w.copy() for w in self.model.student.get_weights()])


@pytest.mark.parametrize("decay", [0.9, 0.5])
def test_teacher_is_the_numpy_ema_of_the_students_weights_bn_statistics_included(decay):
    student = _with_bn()
    model = MeanTeacher(student, ema_decay=decay, consistency_weight=1.0, rampup_steps=5)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=_ce())
    x, y = _data(96, unlabelled_from=40)
    history = [[w.copy() for w in student.get_weights()]]
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[_Recorder(history)], verbose=0)
    assert len(history) == 1 + 12
    assert int(keras.ops.convert_to_numpy(model.teacher_updates)) == 12
    expected = _numpy_ema(history, decay)
    names = [v.path for v in student.weights]
    assert any("moving_mean" in n for n in names)
    for name, got, want, last in zip(names, model.teacher.get_weights(), expected, history[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.allclose(got, last, rtol=1e-3, atol=0), name  # not just the student


def test_training_loss_equals_class_cost_plus_ramped_consistency():
    student = _linear(0)
    model = MeanTeacher(student, consistency_weight=30.0, rampup_steps=10)
    model.compile(keras.optimizers.SGD(0.0), loss=_ce())
    keras.utils.set_random_seed(5)
    model.teacher.set_weights([np.random.normal(size=w.shape) for w in student.get_weights()])
    model.teacher_updates.assign(4)
    x, y = _data(16, seed=2, unlabelled_from=6)
    ks, bs = student.get_weights()
    kt, bt = model.teacher.get_weights()
    s_logits, t_logits = x @ ks + bs, x @ kt + bt
    labelled = y >= 0
    log_p = np.log(_softmax(s_logits))
    # CuriousAI/mean-teacher: labelled cross-entropy summed, divided by the whole batch size;
    # the consistency is the mean over images and classes of the squared softmax difference.
    class_cost = -log_p[labelled, y[labelled]].sum() / len(y)
    consistency = np.mean((_softmax(s_logits) - _softmax(t_logits)) ** 2)
    weight = 30.0 * math.exp(-5 * (1 - 4 / 10) ** 2)
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    assert history["loss"][0] == pytest.approx(class_cost + weight * consistency, rel=1e-5)
    assert history["consistency_loss"][0] == pytest.approx(consistency, rel=1e-5)


def test_one_hot_labels_mark_unlabelled_rows_with_minus_one():
    student = _linear(0)
    model = MeanTeacher(student, consistency_weight=0.0, rampup_steps=0)
    model.compile(
        keras.optimizers.SGD(0.0),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    x, y = _data(12, seed=3, unlabelled_from=5)
    onehot = np.eye(NUM_CLASSES)[np.where(y >= 0, y, 0)]
    onehot[y < 0] = -1
    log_p = np.log(_softmax(x @ student.get_weights()[0] + student.get_weights()[1]))
    expected = -log_p[np.arange(5), y[:5]].sum() / 12
    loss = model.fit(x, onehot, batch_size=12, shuffle=False, verbose=0).history["loss"][0]
    assert loss == pytest.approx(expected, rel=1e-5)


def test_evaluate_and_predict_use_the_teacher_and_weighted_metrics_skip_unlabelled():
    student = _linear(0)
    model = MeanTeacher(student, rampup_steps=0)
    model.compile(keras.optimizers.SGD(0.0), loss=_ce(), weighted_metrics=["accuracy"])
    keras.utils.set_random_seed(7)
    model.teacher.set_weights([np.random.normal(size=w.shape) for w in student.get_weights()])
    x, y = _data(40, seed=4)
    kt, bt = model.teacher.get_weights()
    teacher_logits = x @ kt + bt
    np.testing.assert_allclose(model.predict(x, verbose=0), teacher_logits, rtol=1e-5, atol=1e-5)
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(np.mean(teacher_logits.argmax(-1) == y))
    # Training accuracy is the student's, on labelled rows only.
    y_part = y.copy()
    y_part[10:] = -1
    train = model.fit(x, y_part, batch_size=40, shuffle=False, verbose=0).history
    ks, bs = student.get_weights()
    assert train["accuracy"][0] == pytest.approx(np.mean((x[:10] @ ks + bs).argmax(-1) == y[:10]))


def test_two_stream_batches_follow_the_reference_sampler():
    x_l = np.arange(10, dtype="float32")[:, None] * np.ones((1, NUM_IN), "float32")
    y_l = np.arange(10) % NUM_CLASSES
    x_u = 100 + np.arange(45, dtype="float32")[:, None] * np.ones((1, NUM_IN), "float32")
    batches = TwoStreamBatches(x_l, y_l, x_u, batch_size=12, labelled_batch_size=3, seed=0)
    assert len(batches) == 45 // 9 == 5
    seen_unlabelled, seen_labelled = [], []
    for i in range(len(batches)):
        x, y = batches[i]
        assert x.shape == (12, NUM_IN) and y.shape == (12,)
        assert (y[3:] == -1).all() and (y[:3] >= 0).all()
        ids = x[:, 0].astype(int)
        np.testing.assert_array_equal(y[:3], y_l[ids[:3]])  # labels travel with their images
        seen_labelled.extend(ids[:3])
        seen_unlabelled.extend(ids[3:] - 100)
    assert sorted(seen_unlabelled) == list(range(45))  # one pass over the unlabelled set
    assert sorted(seen_labelled[:10]) == list(range(10))  # labelled cycled in fresh orders
    uint8 = TwoStreamBatches(x_l, y_l.astype("uint8"), x_u, batch_size=12, labelled_batch_size=3)
    assert uint8[0][1].dtype == np.int64 and (uint8[0][1][3:] == -1).all()  # keras.datasets
    first = batches[0][0].copy()
    batches.on_epoch_end()
    assert not np.array_equal(first, batches[0][0])
    with pytest.raises(
        ValueError, match="^`labelled_batch_size` must be .+ labelled_batch_size=4$"
    ):
        TwoStreamBatches(x_l, y_l, x_u, batch_size=4, labelled_batch_size=4)
    with pytest.raises(ValueError, match="`x_unlabelled`"):
        TwoStreamBatches(x_l, y_l, x_u[:, :2], batch_size=4, labelled_batch_size=1)


def test_fit_on_two_stream_batches_and_save_and_load_round_trip(tmp_path):
    model = MeanTeacher(_with_bn(), ema_decay=0.95, consistency_weight=2.0, rampup_steps=20)
    model.compile(keras.optimizers.Adam(1e-2), loss=_ce(), weighted_metrics=["accuracy"])
    x, y = _data(200, seed=1)
    batches = TwoStreamBatches(x[:30], y[:30], x[30:], batch_size=34, labelled_batch_size=4)
    history = model.fit(batches, epochs=2, validation_data=(x, y), verbose=0).history
    assert len(history["loss"]) == 2 and "val_accuracy" in history
    path = str(tmp_path / "mean_teacher.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, MeanTeacher) and loaded.compiled
    assert (loaded.ema_decay, loaded.consistency_weight, loaded.rampup_steps) == (0.95, 2.0, 20)
    assert int(keras.ops.convert_to_numpy(loaded.teacher_updates)) == 2 * len(batches)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.student.get_weights(), model.student.get_weights()):
        np.testing.assert_array_equal(a, b)
    loaded.fit(batches, epochs=1, verbose=0)


@pytest.mark.parametrize("seed", [1, None])
def test_seeded_augmentation_draws_differ_between_student_and_teacher(seed):
    from keras_tricks import augment

    def student():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                augment.RandomFlip(seed=seed),
                augment.Cutout(4, seed=seed),
                keras.layers.Dropout(0.5, seed=seed),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )

    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    model = MeanTeacher(student())
    # Same weights at the start, so any difference is the random draws: the paper perturbs
    # the student's and the teacher's copy of each image independently.
    for s, t in zip(model.student.get_weights(), model.teacher.get_weights()):
        np.testing.assert_array_equal(s, t)
    on_student = np.asarray(model.student(x, training=True))
    on_teacher = np.asarray(model.teacher(x, training=True))
    assert np.abs(on_student - on_teacher).max() > 1e-3
    np.testing.assert_array_equal(
        model.student(x, training=False), model.teacher(x, training=False)
    )
    if seed is not None:  # and still reproducible from the seed
        again = MeanTeacher(student())
        again.student(x, training=True)
        np.testing.assert_array_equal(np.asarray(again.teacher(x, training=True)), on_teacher)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": -0.1}, "ema_decay"),
        ({"consistency_weight": -1.0}, "consistency_weight"),
        ({"rampup_steps": -1}, "rampup_steps"),
        ({"rampup_steps": 2.5}, "rampup_steps"),
        ({"from_logits": None}, "from_logits"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    # Keras's wording: "`name` must be <allowed>. Received: name=<value!r>".
    with pytest.raises(ValueError, match=rf"^`{name}` must be .+\. Received: {name}=") as info:
        MeanTeacher(_linear(), **kwargs)
    assert str(info.value).endswith(f"={kwargs[name]!r}")


def test_a_misspelt_keyword_names_the_right_one():
    with pytest.raises(ValueError, match="`rampup` \\(did you mean `rampup_steps`\\?\\)"):
        MeanTeacher(_linear(), rampup=10)
    x = np.zeros((4, 3), "float32")
    with pytest.raises(ValueError, match="`labeled_batch_size` \\(did you mean `labelled_batch"):
        TwoStreamBatches(x, np.zeros(4), x, batch_size=4, labeled_batch_size=1)
    with pytest.raises(ValueError, match="^`seed` must be an integer or None. Received: seed=0.5$"):
        TwoStreamBatches(x, np.zeros(4), x, batch_size=4, labelled_batch_size=1, seed=0.5)


def test_unbuilt_or_non_classifier_models_are_rejected():
    with pytest.raises(ValueError, match="^`model` must be built.+ Received: model=<"):
        MeanTeacher(keras.Sequential([keras.layers.Dense(3)]))
    with pytest.raises(ValueError, match="`model`"):
        MeanTeacher(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1)]))


JAX_SCRIPT = r"""
import keras, numpy as np
from keras_tricks.training import MeanTeacher
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
    keras.layers.BatchNormalization(momentum=0.5), keras.layers.ReLU(), keras.layers.Dense(3)])
model = MeanTeacher(student, ema_decay=0.9, consistency_weight=1.0, rampup_steps=5)
model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x, y = rng.normal(size=(96, 5)).astype("float32"), rng.integers(0, 3, 96)
y[40:] = -1
history = [[w.copy() for w in student.get_weights()]]
class Rec(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        history.append([w.copy() for w in self.model.student.get_weights()])
model.fit(x, y, batch_size=16, epochs=2, callbacks=[Rec()], verbose=0)
teacher = [w.astype(np.float64) for w in history[0]]
for n, s in enumerate(history[1:]):
    a = min(1 - 1 / (n + 2), 0.9)
    teacher = [a * t + (1 - a) * w for t, w in zip(teacher, s)]
assert len(history) == 13
for got, want in zip(model.teacher.get_weights(), teacher):
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6), np.abs(got - want).max()
kt = model.teacher.get_weights()
model.save("/tmp/kt_mean_teacher_jax.keras")
l = keras.models.load_model("/tmp/kt_mean_teacher_jax.keras")
assert np.array_equal(l.predict(x, verbose=0), model.predict(x, verbose=0))
assert int(np.asarray(l.teacher_updates)) == 12
print("JAX OK")
"""


@pytest.mark.slow
def test_jax_backend_teacher_is_the_numpy_ema_and_save(run_python):
    assert "JAX OK" in run_python(JAX_SCRIPT, backend="jax")
