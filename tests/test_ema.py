"""ExponentialMovingAverage against a NumPy EMA of the recorded weight history."""

import os
import textwrap

import keras
import numpy as np
import pytest

from keras_tricks.callbacks import ExponentialMovingAverage


def _model(seed=0, compile=True):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(3),
        ]
    )
    if compile:
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    return model


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, :3] * 2.0 + rng.normal(scale=0.1, size=(n, 3))).astype("float32")
    return x, y


class Recorder(keras.callbacks.Callback):
    """Weight history as the EMA callback (placed after it) sees it."""

    def on_train_begin(self, logs=None):
        self.initial = self.model.get_weights()
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        self.history.append(self.model.get_weights())


def numpy_ema(initial, history, decay, every_n_steps, warmup, steps_per_execution=1):
    """tf.train.ExponentialMovingAverage's rule with num_updates = training step."""
    average = [w.astype("float64") for w in initial]
    for i, weights in enumerate(history):
        step = (i + 1) * steps_per_execution
        if step % every_n_steps:
            continue
        d = min(decay, (1 + step) / (10 + step)) if warmup else decay
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    return average


@pytest.mark.parametrize(
    "decay, every_n_steps, warmup, steps_per_execution",
    [(0.9, 1, True, 1), (0.8, 5, False, 1), (0.95, 2, True, 2)],
)
def test_averages_match_numpy_ema_of_weight_history(
    decay, every_n_steps, warmup, steps_per_execution
):
    model = _model()
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9), loss="mse", steps_per_execution=steps_per_execution
    )
    x, y = _data()
    recorder = Recorder()
    ema = ExponentialMovingAverage(decay, every_n_steps=every_n_steps, warmup=warmup)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[recorder, ema])
    expected = numpy_ema(
        recorder.initial, recorder.history, decay, every_n_steps, warmup, steps_per_execution
    )
    # Every model weight is averaged, BatchNorm moving mean/variance included.
    assert len(ema.average_variables) == len(model.weights) == len(expected)
    assert {v.name for v in ema.averaged_model_variables} >= {"moving_mean", "moving_variance"}
    assert ema.steps == 20
    for average, exp, var in zip(ema.average_variables, expected, model.weights):
        np.testing.assert_allclose(average.numpy(), exp, rtol=1e-5, atol=1e-6, err_msg=var.path)
    # ... and training ended on the raw weights, not the averages.
    for w, raw in zip(model.get_weights(), recorder.history[-1]):
        np.testing.assert_array_equal(w, raw)


def test_trainable_only_when_non_trainable_excluded():
    model = _model()
    x, y = _data()
    ema = ExponentialMovingAverage(0.9, include_non_trainable=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[ema])
    assert [v.path for v in ema.averaged_model_variables] == [
        v.path for v in model.trainable_weights
    ]


def test_validation_uses_averages_and_training_continues_on_raw_weights():
    x, y = _data()
    xv, yv = _data(32, seed=1)
    with_ema, without = _model(), _model()
    without.set_weights(with_ema.get_weights())
    ema = ExponentialMovingAverage(0.9)
    history = with_ema.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(xv, yv),
        callbacks=[ema],
    )
    without.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # The swaps for validation left training untouched.
    for a, b in zip(with_ema.get_weights(), without.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Reference: Keras's evaluate on a model holding the averaged weights.
    clone = _model()
    clone.set_weights([a.numpy() for a in ema.average_variables])
    expected = clone.evaluate(xv, yv, batch_size=8, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(with_ema.evaluate(xv, yv, batch_size=8, verbose=0), rel=1e-3)


def test_evaluate_and_predict_with_the_callback_use_averages_then_restore():
    model = _model()
    x, y = _data()
    ema = ExponentialMovingAverage(0.9)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[ema])
    raw = model.get_weights()
    clone = _model()
    clone.set_weights([a.numpy() for a in ema.average_variables])
    np.testing.assert_allclose(
        model.predict(x, verbose=0, callbacks=[ema]),
        clone.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    assert model.evaluate(x, y, verbose=0, callbacks=[ema]) == pytest.approx(
        clone.evaluate(x, y, verbose=0), rel=1e-5
    )
    with ema.averaged():
        np.testing.assert_allclose(
            model.predict(x, verbose=0), clone.predict(x, verbose=0), rtol=1e-5, atol=1e-6
        )
    for w, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(w, r)
    ema.apply_average()
    for w, c in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(w, c)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_checkpoints_hold_the_averaged_weights(tmp_path, suffix):
    model = _model()
    x, y = _data()
    recorder = Recorder()
    ema = ExponentialMovingAverage(0.9, filepath=str(tmp_path / ("ema-{epoch}" + suffix)))
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[recorder, ema])
    after_first = numpy_ema(recorder.initial, recorder.history[:10], 0.9, 1, True)
    for epoch, expected in ((1, after_first), (2, [a.numpy() for a in ema.average_variables])):
        path = tmp_path / f"ema-{epoch}{suffix}"
        if suffix == ".keras":
            loaded = keras.models.load_model(path).get_weights()
        else:
            clone = _model(compile=False)
            clone.load_weights(path)
            loaded = clone.get_weights()
        for w, e in zip(loaded, expected):
            np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resume_reproduces_uninterrupted_averages(tmp_path):
    x, y = _data()
    backup = str(tmp_path / "backup")

    def fit(model, *callbacks):
        model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=list(callbacks))

    reference_model = _model()
    reference = ExponentialMovingAverage(0.9, every_n_steps=3)
    fit(reference_model, reference)

    first = _model()
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(
            first,
            keras.callbacks.BackupAndRestore(backup),
            ExponentialMovingAverage(0.9, every_n_steps=3, backup_dir=backup),
            Interrupt(),
        )
    assert os.path.exists(os.path.join(backup, "ema_state.npz"))
    # A fresh process: new model object (other initial weights), new callbacks.
    resumed_model = _model(seed=7)
    resumed = ExponentialMovingAverage(0.9, every_n_steps=3, backup_dir=backup)
    fit(resumed_model, keras.callbacks.BackupAndRestore(backup), resumed)
    assert resumed.steps == reference.steps == 40
    for a, b in zip(resumed.average_variables, reference.average_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert not os.path.exists(backup)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"decay": 1.0}, "decay"),
        ({"decay": 0.0}, "decay"),
        ({"decay": -0.5}, "decay"),
        ({"decay": float("nan")}, "decay"),
        ({"decay": True}, "decay"),
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"every_n_steps": 2.0}, "every_n_steps"),
        ({"filepath": "ema.h5"}, "filepath"),
        ({"save_freq": 0}, "save_freq"),
        ({"save_freq": "batch"}, "save_freq"),
        ({"save_freq": True}, "save_freq"),
        ({"warmup": 1}, "warmup"),
        ({"include_non_trainable": "yes"}, "include_non_trainable"),
        ({"delete_backup": None}, "delete_backup"),
        ({"compiled": 0}, "compiled"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    # "`name` must be <allowed>. Received: name=<value!r>", as Keras words it.
    [(key, value)] = kwargs.items()
    with pytest.raises(ValueError, match=rf"^`{name}` must be .+\. Received: {name}=") as info:
        ExponentialMovingAverage(**kwargs)
    assert str(info.value).endswith(f"Received: {key}={value!r}")


def test_a_misspelt_keyword_names_the_right_one():
    with pytest.raises(TypeError, match="`every_n` \\(did you mean `every_n_steps`\\?\\)"):
        ExponentialMovingAverage(every_n=5)
    with pytest.raises(TypeError, match="`decay_rate` \\(did you mean `decay`\\?\\)"):
        ExponentialMovingAverage(decay_rate=0.9)


def test_public_module_and_the_callbacks_path_give_the_same_objects():
    import keras_tricks
    from keras_tricks import callbacks, ema

    assert ExponentialMovingAverage is ema.ExponentialMovingAverage
    assert ExponentialMovingAverage.__module__ == "keras_tricks.ema"
    assert "ExponentialMovingAverage" in callbacks.__all__
    assert set(ema.__all__) == {"ExponentialMovingAverage", "ema_values", "ema_variables"}
    assert keras_tricks.ema is ema and "ema" in keras_tricks.__all__
    # MeanTeacher shares the selection and the arithmetic.
    from keras_tricks.training import mean_teacher

    assert mean_teacher.ema_values is ema.ema_values
    assert mean_teacher.ema_variables is ema.ema_variables


def test_eager_and_compiled_updates_agree():
    x, y = _data()
    results = []
    for compiled in (True, False):
        model = _model()
        ema = ExponentialMovingAverage(0.9, every_n_steps=2, compiled=compiled)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[ema])
        results.append([a.numpy() for a in ema.average_variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_ema import Recorder, _data, _model, numpy_ema
    from keras_tricks.callbacks import ExponentialMovingAverage

    assert keras.backend.backend() == "jax"
    model = _model()
    x, y = _data()
    xv, yv = _data(32, seed=1)
    recorder = Recorder()
    ema = ExponentialMovingAverage(0.9, every_n_steps=2)
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                        validation_data=(xv, yv), callbacks=[recorder, ema])
    expected = numpy_ema(recorder.initial, recorder.history, 0.9, 2, True)
    err = max(float(np.max(np.abs(a.numpy() - e))) for a, e in zip(ema.average_variables, expected))
    raw_ok = all(np.array_equal(w, r) for w, r in zip(model.get_weights(), recorder.history[-1]))
    clone = _model()
    clone.set_weights([np.asarray(a.numpy()) for a in ema.average_variables])
    val = clone.evaluate(xv, yv, batch_size=8, verbose=0)
    print(json.dumps({{"err": err, "raw_ok": raw_ok, "val": history.history["val_loss"][-1],
                      "expected_val": val}}))
    """
)


@pytest.mark.slow
def test_jax_backend_matches_numpy_ema(run_python):
    import json

    out = run_python(JAX_SCRIPT.format(tests=os.path.dirname(__file__)))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["err"] < 1e-5
    assert result["raw_ok"]
    assert result["val"] == pytest.approx(result["expected_val"], rel=1e-5)
