"""StabilityTraining: task loss + alpha * KL(f(x) || f(x + eps)) with seeded on-device noise."""

import keras
import numpy as np
import pytest

from keras_tricks.augment._base import PerReplicaSeedGenerator
from keras_tricks.training import StabilityTraining

NUM_IN, NUM_CLASSES = 5, 3


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((NUM_IN,)), keras.layers.Dense(NUM_CLASSES)])


def _batch(n=16, seed=4):
    rng = np.random.default_rng(seed)
    return rng.random((n, NUM_IN), dtype=np.float32), rng.integers(0, NUM_CLASSES, n)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def zheng_loss(clean_logits, noisy_logits, y, alpha):
    """Zheng et al. 2016, eq. (1), KL stability term: CE(y, f(x)) + alpha * KL(f(x) || f(x'))."""
    log_p, log_q = _log_softmax(clean_logits), _log_softmax(noisy_logits)
    task = np.mean(-log_p[np.arange(len(y)), y])
    stability = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1))
    return task + alpha * stability, stability


def _first_noise(shape, stddev, seed):
    # The first draw of a fresh generator with the same seed is the noise of the first step.
    return keras.ops.convert_to_numpy(
        keras.random.normal(shape, stddev=stddev, seed=keras.random.SeedGenerator(seed))
    )


def _logits(model, x):
    kernel, bias = model.get_weights()
    return x.astype(np.float64) @ kernel + bias


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("sigma, alpha", [(0.5, 0.3), (0.04, 0.01), (1.0, 2.0)])
def test_loss_for_fixed_noise_equals_the_formula(sigma, alpha):
    net = _linear()
    net.set_weights([w * 4 for w in net.get_weights()])  # sharper outputs: a larger KL
    model = StabilityTraining(net, noise_stddev=sigma, alpha=alpha, seed=11)
    model.compile(keras.optimizers.SGD(0.0), loss=_ce())
    x, y = _batch()
    eps = _first_noise(x.shape, sigma, 11)
    expected, stability = zheng_loss(_logits(net, x), _logits(net, x + eps), y, alpha)
    assert stability > 1e-6  # the noise changes the prediction, so the test can fail
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history["stability_loss"][0] == pytest.approx(stability, rel=1e-4)


def test_compute_loss_called_directly_uses_the_same_formula():
    net = _linear(2)
    model = StabilityTraining(net, noise_stddev=0.7, alpha=0.5, seed=5)
    model.compile(loss=_ce())
    x, y = _batch(8)
    loss = model.compute_loss(x, y, model(x, training=True), training=True)
    expected, _ = zheng_loss(
        _logits(net, x), _logits(net, x + _first_noise(x.shape, 0.7, 5)), y, 0.5
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Evaluation is the task loss alone: no noise, no stability term.
    loss_eval = model.compute_loss(x, y, model(x), training=False)
    assert float(loss_eval) == pytest.approx(zheng_loss(_logits(net, x), _logits(net, x), y, 0)[0])


def test_noise_is_gaussian_with_the_given_stddev_and_fresh_every_step():
    model = StabilityTraining(_linear(), noise_stddev=0.1, seed=3)
    zeros = keras.ops.zeros((200_000,))
    a = keras.ops.convert_to_numpy(model.noise(zeros))
    b = keras.ops.convert_to_numpy(model.noise(zeros))
    assert abs(a.mean()) < 3 * 0.1 / np.sqrt(len(a))
    assert a.std() == pytest.approx(0.1, rel=0.01)
    assert not np.array_equal(a, b)
    again = StabilityTraining(_linear(), noise_stddev=0.1, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again.noise(zeros)), a)


def test_zero_noise_adds_nothing_to_the_task_loss():
    net = _linear()
    model = StabilityTraining(net, noise_stddev=0.0, alpha=5.0, seed=0)
    model.compile(keras.optimizers.SGD(0.0), loss=_ce())
    x, y = _batch()
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0).history
    assert history["stability_loss"][0] == pytest.approx(0.0, abs=1e-7)
    assert history["loss"][0] == pytest.approx(
        zheng_loss(_logits(net, x), _logits(net, x), y, 0)[0]
    )


@pytest.mark.slow
def test_training_lowers_the_flip_rate_under_noise_compared_with_alpha_zero():
    # A behavioural check of the gradient: a large alpha makes predictions on noisy inputs
    # agree more often with the clean ones than plain training of the same start does.
    rng = np.random.default_rng(0)
    x = rng.random((512, NUM_IN), dtype=np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype("int64") + (x[:, 2] > 0.8)
    noisy = x + rng.normal(0, 0.3, x.shape).astype("float32")
    flips = {}
    for alpha in (0.0, 20.0):
        keras.utils.set_random_seed(1)
        net = keras.Sequential(
            [keras.Input((NUM_IN,)), keras.layers.Dense(32, "relu"), keras.layers.Dense(3)]
        )
        model = StabilityTraining(net, noise_stddev=0.3, alpha=alpha, seed=2)
        model.compile(keras.optimizers.Adam(1e-2), loss=_ce())
        model.fit(x, y, batch_size=64, epochs=15, verbose=0)
        flips[alpha] = np.mean(
            net.predict(x, verbose=0).argmax(-1) != net.predict(noisy, verbose=0).argmax(-1)
        )
    assert flips[20.0] < flips[0.0]


def test_save_and_load_round_trip(tmp_path):
    model = StabilityTraining(_linear(), noise_stddev=0.2, alpha=0.1, seed=9)
    model.compile(keras.optimizers.Adam(1e-2), loss=_ce(), metrics=["accuracy"])
    x, y = _batch(64)
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "stability.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, StabilityTraining) and loaded.compiled
    assert (loaded.noise_stddev, loaded.alpha, loaded.seed) == (0.2, 0.1, 9)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # The reloaded model draws per replica too, and from the same seed: its first noise is a
    # fresh generator's first draw, as the original's was.
    assert isinstance(loaded.seed_generator, PerReplicaSeedGenerator)
    xt = keras.ops.convert_to_tensor(x)
    np.testing.assert_array_equal(loaded.noise(xt), _first_noise(x.shape, 0.2, 9))
    loaded.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"noise_stddev": -0.04}, "noise_stddev"),
        ({"noise_stddev": float("nan")}, "noise_stddev"),
        ({"from_logits": "yes"}, "from_logits"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"alpha": True}, "alpha"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    # Keras's wording: "`name` must be <allowed>. Received: name=<value!r>".
    with pytest.raises(ValueError, match=rf"^`{name}` must be .+\. Received: {name}=") as info:
        StabilityTraining(_linear(), **kwargs)
    assert str(info.value).endswith(f"={kwargs[name]!r}")


def test_a_misspelt_keyword_names_the_right_one():
    with pytest.raises(ValueError, match="`noise_std` \\(did you mean `noise_stddev`\\?\\)"):
        StabilityTraining(_linear(), noise_std=0.1)
    StabilityTraining(_linear(), name="stable", trainable=True)  # keras.Model's own keywords


def test_a_model_without_class_scores_is_rejected():
    with pytest.raises(ValueError, match=r"^`model` must be a classifier .+ Received: model=<"):
        StabilityTraining(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1)]))
    with pytest.raises(ValueError, match=r"^`model` must be a `keras.Model`. Received: model=<"):
        StabilityTraining(keras.layers.Dense(3))

    class Subclassed(keras.Model):  # no symbolic output: checked on the first training step
        def call(self, x):
            return keras.ops.expand_dims(x, -1)

    model = StabilityTraining(Subclassed())
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="`model`"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 3, 1)), verbose=0)


JAX_SCRIPT = r"""
import keras, numpy as np
from keras_tricks.training import StabilityTraining
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
net.set_weights([w * 4 for w in net.get_weights()])
rng = np.random.default_rng(4)
x, y = rng.random((16, 5), dtype=np.float32), rng.integers(0, 3, 16)
eps = np.asarray(keras.random.normal(x.shape, stddev=0.5, seed=keras.random.SeedGenerator(11)))
def lsm(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
k, b = net.get_weights()
lp, lq = lsm(x.astype(np.float64) @ k + b), lsm((x + eps).astype(np.float64) @ k + b)
expected = np.mean(-lp[np.arange(16), y]) + 0.3 * np.mean((np.exp(lp) * (lp - lq)).sum(-1))
model = StabilityTraining(net, noise_stddev=0.5, alpha=0.3, seed=11)
model.compile(keras.optimizers.SGD(0.0),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
loss = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history["loss"][0]
assert abs(loss - expected) < 1e-5 * expected, (loss, expected)
model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=4, epochs=2, verbose=0)
model.save("/tmp/kt_stability_jax.keras")
l = keras.models.load_model("/tmp/kt_stability_jax.keras")
assert np.array_equal(l.predict(x, verbose=0), model.predict(x, verbose=0))
print("JAX OK")
"""


@pytest.mark.slow
def test_jax_backend_formula_and_save(run_python):
    assert "JAX OK" in run_python(JAX_SCRIPT, backend="jax")
