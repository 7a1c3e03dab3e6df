"""Label smoothing cross-entropy against Keras's own loss and the closed form of He et al."""

import keras
import numpy as np
import pytest

from keras_tricks.losses import LabelSmoothingCrossEntropy

K = 5


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(8, K)).astype("float32")
    labels = rng.integers(0, K, size=8)
    return logits, labels


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_uniform_matches_keras_categorical_crossentropy_label_smoothing(batch, epsilon):
    logits, labels = batch
    one_hot = np.eye(K, dtype="float32")[labels]
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=epsilon)(
        one_hot, logits
    )
    loss = LabelSmoothingCrossEntropy(epsilon, convention="uniform")
    np.testing.assert_allclose(float(loss(labels, logits)), float(expected), rtol=1e-6)
    np.testing.assert_allclose(float(loss(one_hot, logits)), float(expected), rtol=1e-6)


def test_uniform_with_probabilities_matches_keras(batch):
    logits, labels = batch
    probs = np.exp(_log_softmax(logits)).astype("float32")
    one_hot = np.eye(K, dtype="float32")[labels]
    expected = keras.losses.CategoricalCrossentropy(from_logits=False, label_smoothing=0.2)(
        one_hot, probs
    )
    loss = LabelSmoothingCrossEntropy(0.2, from_logits=False)
    np.testing.assert_allclose(float(loss(labels[:, None], probs)), float(expected), rtol=1e-5)


def test_others_convention_puts_one_minus_epsilon_on_true_class(batch):
    logits, labels = batch
    eps = 0.1
    log_p = _log_softmax(logits.astype("float64"))
    # He et al. 2019, eq. 2: q_i = 1 - eps if i == y else eps / (K - 1).
    q = np.full((len(labels), K), eps / (K - 1))
    q[np.arange(len(labels)), labels] = 1 - eps
    expected = -(q * log_p).sum(axis=-1).mean()
    loss = LabelSmoothingCrossEntropy(eps, convention="others")
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-5)


def test_soft_labels_are_smoothed_linearly_like_their_mixture(batch):
    logits, labels = batch
    rng = np.random.default_rng(1)
    lam = rng.uniform(size=(len(labels), 1)).astype("float32")
    other = rng.integers(0, K, size=len(labels))
    soft = lam * np.eye(K)[labels] + (1 - lam) * np.eye(K)[other]
    eps = 0.2
    log_p = _log_softmax(logits.astype("float64"))
    q = soft * (1 - eps) + (1 - soft) * eps / (K - 1)
    expected = -(q * log_p).sum(axis=-1).mean()
    loss = LabelSmoothingCrossEntropy(eps, convention="others")
    np.testing.assert_allclose(float(loss(soft.astype("float32"), logits)), expected, rtol=1e-5)


def test_float16_logits_give_the_float32_value(batch):
    logits, labels = batch
    logits16 = logits.astype("float16")
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        np.eye(K, dtype="float32")[labels], logits16.astype("float32")
    )
    loss = LabelSmoothingCrossEntropy(0.1)
    value = loss(labels, keras.ops.convert_to_tensor(logits16))
    assert np.isfinite(float(value))
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)


def test_per_sample_losses_without_reduction(batch):
    logits, labels = batch
    expected = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, reduction=None
    )(np.eye(K, dtype="float32")[labels], logits)
    loss = LabelSmoothingCrossEntropy(0.1, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(labels, logits)), np.asarray(expected), rtol=1e-6)


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5, "0.1"])
def test_epsilon_outside_unit_interval_raises(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        LabelSmoothingCrossEntropy(epsilon)


def test_unknown_convention_raises():
    with pytest.raises(ValueError, match="convention"):
        LabelSmoothingCrossEntropy(0.1, convention="szegedy")


def test_model_with_loss_round_trips_through_save(tmp_path, batch):
    logits, labels = batch
    model = keras.Sequential([keras.Input((K,)), keras.layers.Dense(K)])
    model.compile(optimizer="sgd", loss=LabelSmoothingCrossEntropy(0.15, convention="others"))
    model.fit(logits, labels, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, LabelSmoothingCrossEntropy)
    assert (loaded.loss.epsilon, loaded.loss.convention) == (0.15, "others")
    np.testing.assert_allclose(
        loaded.evaluate(logits, labels, verbose=0),
        model.evaluate(logits, labels, verbose=0),
        rtol=1e-6,
    )
