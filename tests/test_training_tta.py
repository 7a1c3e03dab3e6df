"""TestTimeAugmentation: views, one forward pass, exact flip invariance, export, EMA, save/load."""

import os

import keras
import numpy as np
import pytest

from keras_tricks.callbacks import ExponentialMovingAverage
from keras_tricks.training import TestTimeAugmentation


def _cnn(seed=0, num_classes=5):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12, 12, 2)),
            keras.layers.Conv2D(6, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(4, 3, strides=2),
            keras.layers.Flatten(),  # not flip-invariant itself: the TTA must make it so
            keras.layers.Dense(num_classes),
        ]
    )


def _images(n=7, seed=1):
    return np.random.default_rng(seed).random((n, 12, 12, 2), dtype=np.float32)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_views(x, flips, shifts, mode):
    """The views written out in NumPy: shift(x, dy, dx)[i, j] = x[i - dy, j - dx], padded."""
    p = max([0] + [max(abs(dy), abs(dx)) for dy, dx in shifts])
    np_mode = {"reflect": "reflect", "constant": "constant"}[mode]
    h, w = x.shape[1:3]
    sources = [x, x[:, :, ::-1]] if flips else [x]
    views = list(sources)
    for dy, dx in shifts:
        for s in sources:
            padded = np.pad(s, [(0, 0), (p, p), (p, p), (0, 0)], mode=np_mode)
            views.append(padded[:, p - dy : p - dy + h, p - dx : p - dx + w])
    return views


@pytest.mark.parametrize("average", ["probabilities", "logits"])
@pytest.mark.parametrize("shifts", [(), [(1, 0), (0, 2), (-1, -1)]])
def test_output_is_bit_for_bit_invariant_to_a_horizontal_flip(average, shifts):
    model = _cnn()
    tta = TestTimeAugmentation(model, flips=True, shifts=shifts, average=average)
    x = _images()
    # The wrapped model alone is not flip invariant, so the test can fail.
    assert not np.allclose(model.predict(x, verbose=0), model.predict(x[:, :, ::-1], verbose=0))
    np.testing.assert_array_equal(tta.predict(x, verbose=0), tta.predict(x[:, :, ::-1], verbose=0))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(tta(x)), keras.ops.convert_to_numpy(tta(x[:, :, ::-1]))
    )


def test_flipping_some_images_of_the_batch_changes_nothing_and_symmetric_images_work():
    tta = TestTimeAugmentation(_cnn(), flips=True, shifts=[(0, 1)])
    x = _images(6)
    x[4] = (x[4] + x[4, :, ::-1]) / 2  # exactly mirror-symmetric: no pixel decides the order
    x[5] = 0.0
    some = x.copy()
    some[[0, 3, 4]] = some[[0, 3, 4], :, ::-1]
    np.testing.assert_array_equal(tta.predict(x, verbose=0), tta.predict(some, verbose=0))


def test_uint8_images_with_rescaling_inside_the_model_are_exactly_invariant_too():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12, 12, 2), dtype="uint8"), keras.layers.Rescaling(1 / 255), _cnn()]
    )
    x = np.random.default_rng(5).integers(0, 256, (6, 12, 12, 2)).astype("uint8")
    tta = TestTimeAugmentation(model, flips=True, shifts=[(1, 1)])
    np.testing.assert_array_equal(tta.predict(x, verbose=0), tta.predict(x[:, :, ::-1], verbose=0))
    views = _numpy_views(x, True, [(1, 1)], "reflect")
    expected = np.mean([_softmax(model.predict(v, verbose=0)) for v in views], axis=0)
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=2e-6)


@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("average", ["probabilities", "logits"])
def test_output_is_the_average_over_the_views_written_in_numpy(mode, average):
    model = _cnn()
    shifts = [(2, 0), (0, -1), (1, 1)]
    tta = TestTimeAugmentation(model, flips=True, shifts=shifts, average=average, fill_mode=mode)
    x = _images()
    views = _numpy_views(x, True, shifts, mode)
    assert tta.num_views == len(views) == 8
    outs = [model.predict(v, verbose=0) for v in views]
    if average == "probabilities":
        outs = [_softmax(o) for o in outs]
    np.testing.assert_allclose(tta.predict(x, verbose=0), np.mean(outs, axis=0), atol=2e-6)


def test_without_flips_averages_only_the_shifts():
    model = _cnn()
    tta = TestTimeAugmentation(model, flips=False, shifts=[(0, 3)], fill_mode="constant")
    x = _images()
    views = _numpy_views(x, False, [(0, 3)], "constant")
    expected = np.mean([_softmax(model.predict(v, verbose=0)) for v in views], axis=0)
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=2e-6)


def test_probability_model_is_averaged_as_given():
    logits = _cnn()
    probs = keras.Sequential([logits, keras.layers.Softmax()])
    x = _images()
    a = TestTimeAugmentation(logits, shifts=[(1, 1)]).predict(x, verbose=0)
    b = TestTimeAugmentation(probs, shifts=[(1, 1)], from_logits=False).predict(x, verbose=0)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_all_views_go_through_the_model_in_one_batched_call():
    seen = []

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.net = _cnn()

        def call(self, x, training=False):
            seen.append(tuple(x.shape))
            return self.net(x, training=training)

    tta = TestTimeAugmentation(Recorder(), flips=True, shifts=[(1, 0), (0, 1)])
    tta(_images(3))
    assert seen == [(3 * 6, 12, 12, 2)]


def test_export_and_reload_give_the_same_outputs(tmp_path):
    import tensorflow as tf

    tta = TestTimeAugmentation(_cnn(), flips=True, shifts=[(1, 0), (0, -2)])
    x = _images()
    expected = tta.predict(x, verbose=0)
    tta.export(str(tmp_path / "tta"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "tta"))
    served = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-6)
    # The exported graph keeps the exact flip invariance.
    np.testing.assert_array_equal(served, reloaded.serve(tf.constant(x[:, :, ::-1])).numpy())


def test_works_on_a_model_trained_with_ema_weights_swapped_in(tmp_path):
    import tensorflow as tf

    model = _cnn()
    model.compile(
        keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = _images(64)
    y = np.random.default_rng(2).integers(0, 5, 64)
    ema = ExponentialMovingAverage(decay=0.9)
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[ema], verbose=0)
    tta = TestTimeAugmentation(model, flips=True)
    raw = tta.predict(x, verbose=0)
    # The TTA average computed by hand from a copy of the model holding the EMA values.
    averaged = keras.models.clone_model(model)
    averaged.set_weights(model.get_weights())
    for source, average in zip(ema.averaged_model_variables, ema.average_variables):
        index = [i for i, v in enumerate(model.weights) if v is source][0]
        averaged.weights[index].assign(keras.ops.convert_to_numpy(average))
    expected = (
        _softmax(averaged.predict(x, verbose=0))
        + _softmax(averaged.predict(x[:, :, ::-1], verbose=0))
    ) / 2
    with ema.averaged():
        inside = tta.predict(x, verbose=0)
        tta.export(str(tmp_path / "ema_tta"), verbose=False)
    np.testing.assert_allclose(inside, expected, atol=2e-6)
    assert not np.allclose(inside, raw, atol=1e-4)
    np.testing.assert_array_equal(tta.predict(x, verbose=0), raw)  # raw weights back after
    reloaded = tf.saved_model.load(str(tmp_path / "ema_tta"))
    served = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, atol=2e-6)


def test_save_and_load_round_trip(tmp_path):
    tta = TestTimeAugmentation(
        _cnn(), flips=True, shifts=[(1, -1)], average="logits", fill_mode="constant"
    )
    x = _images()
    expected = tta.predict(x, verbose=0)
    path = os.path.join(tmp_path, "tta.keras")
    tta.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, TestTimeAugmentation)
    assert loaded.shifts == ((1, -1),) and loaded.average == "logits"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"flips": 1}, "flips"),
        ({"shifts": [(0, 0)]}, "shifts"),
        ({"shifts": [(1, 2), (1, 2)]}, "shifts"),
        ({"shifts": [(1.5, 0)]}, "shifts"),
        ({"shifts": [3]}, "shifts"),
        ({"average": "mean"}, "average"),
        ({"average": "logits", "from_logits": False}, "average"),
        ({"fill_mode": "wrap"}, "fill_mode"),
        ({"data_format": "nhwc"}, "data_format"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    # Keras's wording: "`name` must be <allowed>. Received: name=<value!r>".
    with pytest.raises(ValueError, match=rf"^`{name}` must be .+\. Received: {name}=") as info:
        TestTimeAugmentation(_cnn(), **kwargs)
    assert str(info.value).endswith(f"={kwargs[name]!r}")


def test_a_misspelt_keyword_names_the_right_one():
    with pytest.raises(ValueError, match="`shift` \\(did you mean `shifts`\\?\\)"):
        TestTimeAugmentation(_cnn(), shift=[(0, 1)])
    with pytest.raises(ValueError, match="`flip` \\(did you mean `flips`\\?\\)"):
        TestTimeAugmentation(_cnn(), flip=False)


def test_a_model_without_class_scores_is_rejected():
    seg = keras.Sequential([keras.Input((12, 12, 2)), keras.layers.Conv2D(3, 1)])  # rank 4
    with pytest.raises(ValueError, match="`model`"):
        TestTimeAugmentation(seg)
    with pytest.raises(ValueError, match="^`model` must be a `keras.Model`. Received: model="):
        TestTimeAugmentation("not a model")
    with pytest.raises(ValueError, match=r"`shifts` must be smaller .+ Received: shifts=\(\(0, 12"):
        TestTimeAugmentation(_cnn(), shifts=[(0, 12)])(_images())  # cannot reflect 12 pixels


JAX_SCRIPT = r"""
import keras, numpy as np
from keras_tricks.training import TestTimeAugmentation
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((12, 12, 2)), keras.layers.Conv2D(6, 3, padding="same"),
    keras.layers.BatchNormalization(), keras.layers.ReLU(), keras.layers.Flatten(),
    keras.layers.Dense(5)])
x = np.random.default_rng(1).random((7, 12, 12, 2), dtype=np.float32)
tta = TestTimeAugmentation(model, flips=True, shifts=[(1, 0), (0, 2)])
a, b = tta.predict(x, verbose=0), tta.predict(x[:, :, ::-1], verbose=0)
assert np.array_equal(a, b), np.abs(a - b).max()
p = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)
views = [x, x[:, :, ::-1]]
for dy, dx in [(1, 0), (0, 2)]:
    for s in (x, x[:, :, ::-1]):
        pad = np.pad(s, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
        views.append(pad[:, 2 - dy:14 - dy, 2 - dx:14 - dx])
expected = np.mean([p(model.predict(v, verbose=0)) for v in views], axis=0)
assert np.allclose(a, expected, atol=2e-6), np.abs(a - expected).max()
tta.save("/tmp/kt_tta_jax.keras")
assert np.array_equal(keras.models.load_model("/tmp/kt_tta_jax.keras").predict(x, verbose=0), a)
print("JAX OK")
"""


def test_jax_backend_flip_invariance_views_and_save(run_python):
    assert "JAX OK" in run_python(JAX_SCRIPT, backend="jax")
