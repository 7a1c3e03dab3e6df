"""Tests for keras_tricks.callbacks: LinearWarmup and LearningRateLogger inside `fit`."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tricks.callbacks import LearningRateLogger, LinearWarmup
from keras_tricks.schedules import OneCycle


def tiny_model(learning_rate, jit_compile=False):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss="mse",
        jit_compile=jit_compile,
    )
    return model


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x.sum(1, keepdims=True) + 1.0).astype("float32")


class StepRecorder(keras.callbacks.Callback):
    """Reads the optimizer's learning-rate variable after every step (independent of the logger)."""

    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(self.model.optimizer.learning_rate))


def test_linear_warmup_ramps_per_step_then_reduce_on_plateau_takes_over():
    # 4 steps per epoch, warmup over 6 steps (1.5 epochs), target 0.1 from the optimizer.
    # ReduceLROnPlateau with min_delta=1e9 never sees an "improvement" after epoch 0, so with
    # patience=0 it halves the rate at the end of epochs 1, 2, 3 (after the warmup is over).
    x, y = data(32)
    model = tiny_model(0.1)
    recorder = StepRecorder()
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1e9, min_lr=0.0
    )
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[LinearWarmup(warmup_steps=6), plateau, recorder],
    )
    m, target = 6, 0.1
    warm = [(s + 1) / m * target for s in range(m)]  # Goyal et al.: step i of m gets i*lr/m
    expected = warm + [0.1] * 2 + [0.05] * 4 + [0.025] * 4
    np.testing.assert_allclose(recorder.values, expected, rtol=1e-6)
    # The last reduction (end of epoch 3) is left in place after training.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0125)
    assert history.history["learning_rate"] == pytest.approx([0.1 * 4 / 6, 0.1, 0.05, 0.025])


def test_linear_warmup_starts_from_initial_rate_and_resumes_across_fit_calls():
    x, y = data(16)
    model = tiny_model(0.2, jit_compile=True)
    warmup = LinearWarmup(warmup_steps=4, initial_learning_rate=0.02)
    recorder = StepRecorder()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[warmup, recorder])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[warmup, recorder])
    expected = [0.02 + (s + 1) / 4 * (0.2 - 0.02) for s in range(4)] + [0.2] * 2
    np.testing.assert_allclose(recorder.values, expected, rtol=1e-6)


def test_linear_warmup_explicit_target_overrides_optimizer_rate():
    x, y = data(16)
    model = tiny_model(0.5)
    recorder = StepRecorder()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[LinearWarmup(2, target_learning_rate=0.08), recorder],
    )
    np.testing.assert_allclose(recorder.values, [0.04, 0.08, 0.08, 0.08], rtol=1e-6)


def test_linear_warmup_rejects_schedule_optimizers_and_bad_arguments():
    x, y = data(8)
    model = tiny_model(OneCycle(0.1, total_steps=10))
    with pytest.raises(ValueError, match="float learning rate.*schedules.Warmup"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[LinearWarmup(3)])
    with pytest.raises(ValueError, match="^`warmup_steps` must be .+ Received: warmup_steps=-1$"):
        LinearWarmup(-1)
    with pytest.raises(ValueError, match="Received: warmup_steps=2.5$"):
        LinearWarmup(2.5)
    with pytest.raises(ValueError, match="^`initial_learning_rate` must be a finite number >= 0"):
        LinearWarmup(3, initial_learning_rate=-0.1)
    with pytest.raises(ValueError, match="Received: initial_learning_rate=True$"):
        LinearWarmup(3, initial_learning_rate=True)
    with pytest.raises(ValueError, match="Received: target_learning_rate=inf$"):
        LinearWarmup(3, target_learning_rate=float("inf"))
    with pytest.raises(ValueError, match="Received: target_learning_rate=nan$"):
        LinearWarmup(3, target_learning_rate=float("nan"))
    with pytest.raises(ValueError, match="^`verbose` must be .+ Received: verbose=-1$"):
        LinearWarmup(3, verbose=-1)
    # A misspelt keyword names the right one.
    with pytest.raises(TypeError, match="`warmup` \\(did you mean `warmup_steps`\\?\\)"):
        LinearWarmup(warmup=3)


def test_learning_rate_logger_records_schedule_value_of_every_step():
    x, y = data(32)
    schedule = OneCycle(0.1, total_steps=12, pct_start=0.25)
    model = tiny_model(schedule, jit_compile=True)
    logger = LearningRateLogger()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[logger])
    # OneCycleLR with T=12, p=0.25: warmup end step p*T - 1 = 2, then cosine down to step 11.
    lo, top, bottom = 0.1 / 25, 0.1, 0.1 / 25 / 1e4
    up = [top + (lo - top) / 2 * (np.cos(np.pi * s / 2) + 1) for s in range(3)]
    down = [bottom + (top - bottom) / 2 * (np.cos(np.pi * (s - 2) / 9) + 1) for s in range(3, 12)]
    assert logger.steps == list(range(12))
    np.testing.assert_allclose(logger.learning_rates, up + down, rtol=1e-5)
    np.testing.assert_allclose(
        history.history["learning_rate"], [(up + down)[i] for i in (3, 7, 11)], rtol=1e-5
    )


def test_learning_rate_logger_sees_float_rate_changed_by_other_callbacks():
    x, y = data(16)
    model = tiny_model(0.3)
    logger = LearningRateLogger()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[LinearWarmup(3), logger])
    np.testing.assert_allclose(logger.learning_rates, [0.1, 0.2, 0.3, 0.3], rtol=1e-6)


def test_learning_rate_logger_writes_batch_scalar_to_tensorboard(tmp_path):
    x, y = data(24)
    model = tiny_model(OneCycle(0.2, total_steps=6, pct_start=0.5, anneal="linear"))
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=1)
    model.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[LearningRateLogger(), tensorboard]
    )
    found = {}
    for path in glob.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "batch_learning_rate":
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    # torch OneCycleLR, linear: 0.008 -> 0.2 over steps 0..2 (end step 0.5*6-1 = 2), -> 0.2e-6 at 5.
    lo, top, bottom = 0.2 / 25, 0.2, 0.2 / 25 / 1e4
    expected = [lo + (top - lo) * s / 2 for s in range(3)]
    expected += [top + (bottom - top) * (s - 2) / 3 for s in range(3, 6)]
    assert len(found) == 6
    np.testing.assert_allclose([found[k] for k in sorted(found)], expected, rtol=1e-5, atol=1e-9)


def test_learning_rate_logger_rejects_empty_key():
    with pytest.raises(ValueError, match="^`key` must be a non-empty string. Received: key=''$"):
        LearningRateLogger(key="")
    with pytest.raises(ValueError, match="Received: key=None$"):
        LearningRateLogger(key=None)
    with pytest.raises(TypeError, match="`keys` \\(did you mean `key`\\?\\). Accepted: key$"):
        LearningRateLogger(keys="lr")
