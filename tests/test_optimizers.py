"""LARS against a NumPy transcription of You et al. 2017; weight-decay exclusions, conventions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tricks.optimizers import (
    LARS,
    convert_weight_decay,
    mean_loss_to_summed_loss,
    no_bias_decay,
    summed_loss_to_mean_loss,
)


def _small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=n)
    return x, y


def _gradients(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return [g.numpy() for g in grads]


class NumpyLARS:
    """You et al. 2017, Algorithm 1, with the tensorflow/tpu handling of zero norms,
    Nesterov, and plain momentum SGD (no trust ratio, no decay) for rank <= 1 variables."""

    def __init__(self, lr, momentum, wd, eta, nesterov):
        self.lr, self.m, self.wd, self.eta, self.nesterov = lr, momentum, wd, eta, nesterov
        self.v = None

    def step(self, weights, grads):
        if self.v is None:
            self.v = [np.zeros_like(w) for w in weights]
        out = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            w, g = w.astype("float64"), g.astype("float64")
            if w.ndim > 1:
                wn, gn = np.linalg.norm(w), np.linalg.norm(g)
                local = self.eta * wn / (gn + self.wd * wn) if wn > 0 and gn > 0 else 1.0
                upd = self.lr * local * (g + self.wd * w)
            else:
                upd = self.lr * g
            self.v[i] = self.m * self.v[i] + upd
            out.append(w - (self.m * self.v[i] + upd if self.nesterov else self.v[i]))
        return out


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_numpy_transcription_of_the_paper_for_20_steps(nesterov):
    model = _small_cnn()
    x, y = _data()
    hp = dict(learning_rate=0.5, momentum=0.9, weight_decay=5e-3, eta=0.02, nesterov=nesterov)
    opt = LARS(**hp)
    ref = NumpyLARS(0.5, 0.9, 5e-3, 0.02, nesterov)
    ref_weights = [v.numpy().astype("float64") for v in model.trainable_variables]
    for step in range(20):
        xb, yb = x[(step % 2) * 8 : (step % 2) * 8 + 8], y[(step % 2) * 8 : (step % 2) * 8 + 8]
        grads = _gradients(model, xb, yb)
        opt.apply(grads, model.trainable_variables)
        ref_weights = ref.step(ref_weights, grads)
        for var, expected in zip(model.trainable_variables, ref_weights):
            np.testing.assert_allclose(
                var.numpy(), expected, rtol=2e-5, atol=1e-6, err_msg=var.path
            )
            # Keep both sides on identical weights so the next gradients are shared.
            var.assign(expected.astype("float32"))


def test_lars_default_excludes_bias_and_batchnorm_from_trust_ratio():
    model = _small_cnn()
    opt = LARS(learning_rate=0.1, momentum=0.0, weight_decay=0.1, eta=1e-3)
    grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    before = [v.numpy() for v in model.trainable_variables]
    opt.apply(grads, model.trainable_variables)
    for var, w0 in zip(model.trainable_variables, before):
        if var.name in ("bias", "gamma", "beta"):
            # Plain SGD: w - lr * g, no decay and no trust ratio.
            np.testing.assert_allclose(var.numpy(), w0 - 0.1, rtol=1e-6, err_msg=var.path)
        else:
            trust = (
                1e-3
                * np.linalg.norm(w0)
                / (np.linalg.norm(np.ones_like(w0)) + 0.1 * np.linalg.norm(w0))
            )
            expected = w0 - 0.1 * trust * (1.0 + 0.1 * w0)
            np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, err_msg=var.path)


def test_lars_name_patterns_select_excluded_variables():
    model = _small_cnn()
    opt = LARS(learning_rate=0.1, momentum=0.0, eta=1e-3, exclude_from_layer_adaptation=["conv2d"])
    grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    before = {v.path: v.numpy() for v in model.trainable_variables}
    opt.apply(grads, model.trainable_variables)
    conv_kernel = next(
        v for v in model.trainable_variables if "conv2d" in v.path and v.name == "kernel"
    )
    np.testing.assert_allclose(conv_kernel.numpy(), before[conv_kernel.path] - 0.1, rtol=1e-6)
    bn_gamma = next(v for v in model.trainable_variables if v.name == "gamma")
    # gamma = 1 with unit gradient: trust = eta * ||w|| / ||g|| = eta.
    np.testing.assert_allclose(bn_gamma.numpy(), before[bn_gamma.path] - 0.1 * 1e-3, rtol=1e-6)


def test_lars_config_round_trip_and_model_save_load(tmp_path):
    opt = LARS(
        learning_rate=keras.optimizers.schedules.ExponentialDecay(0.2, 10, 0.5),
        momentum=0.8,
        weight_decay=1e-4,
        eta=0.01,
        nesterov=True,
        exclude_from_layer_adaptation=["bias"],
    )
    clone = LARS.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    assert (clone.lars_weight_decay, clone.eta, clone.nesterov) == (1e-4, 0.01, True)

    model = _small_cnn()
    x, y = _data()
    model.compile(opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "lars.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, LARS)
    # Momentum buffers and iteration count came back: the next step is identical.
    model.train_on_batch(x[:8], y[:8])
    loaded.train_on_batch(x[:8], y[:8])
    for a, b in zip(model.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"momentum": 1.0}, "momentum"),
        ({"eta": 0.0}, "eta"),
        ({"exclude_from_layer_adaptation": "bias"}, "exclude_from_layer_adaptation"),
    ],
)
def test_lars_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LARS(**kwargs)


def test_no_bias_decay_decays_kernels_only_over_several_steps():
    model = _small_cnn()
    lr, wd, steps = 0.1, 0.05, 5
    opt = no_bias_decay(keras.optimizers.SGD(lr, weight_decay=wd))
    before = [v.numpy() for v in model.trainable_variables]
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    for _ in range(steps):
        opt.apply(zeros, model.trainable_variables)
    names = set()
    for var, w0 in zip(model.trainable_variables, before):
        names.add(var.name)
        if var.name == "kernel":
            # Keras decoupled decay, w <- w - lr * wd * w, once per step.
            np.testing.assert_allclose(var.numpy(), w0 * (1 - lr * wd) ** steps, rtol=1e-6)
        else:
            np.testing.assert_array_equal(var.numpy(), w0)
    assert names == {"kernel", "bias", "gamma", "beta"}


def test_no_bias_decay_keeps_gradient_step_and_earlier_exclusions():
    model = _small_cnn()
    x, y = _data()
    lr, wd = 0.1, 0.05
    opt = keras.optimizers.SGD(lr, weight_decay=wd)
    dense_kernel = model.layers[-1].kernel
    opt.exclude_from_weight_decay(var_list=[dense_kernel])
    no_bias_decay(opt)
    before = [v.numpy() for v in model.trainable_variables]
    grads = _gradients(model, x, y)
    opt.apply(grads, model.trainable_variables)
    for var, w0, g in zip(model.trainable_variables, before, grads):
        decayed = var.name == "kernel" and var is not dense_kernel
        expected = w0 - lr * wd * w0 * decayed - lr * g
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=var.path)


def test_no_bias_decay_reapplies_after_load_model(tmp_path):
    model = _small_cnn()
    x, y = _data()
    model.compile(
        no_bias_decay(keras.optimizers.SGD(0.1, weight_decay=0.1)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    no_bias_decay(loaded.optimizer)
    gamma = next(v for v in loaded.trainable_variables if v.name == "gamma")
    g0 = gamma.numpy()
    zeros = [np.zeros(v.shape, "float32") for v in loaded.trainable_variables]
    loaded.optimizer.apply(zeros, loaded.trainable_variables)
    np.testing.assert_array_equal(gamma.numpy(), g0)


def _mse_grad(w, b, x, y, reduce="mean"):
    """Gradient of per-sample mean-squared error, averaged or summed over the batch."""
    err = x @ w + b - y
    per = 2.0 * err / y.shape[1]
    if reduce == "mean":
        per = per / len(x)
    return x.T @ per, per.sum(axis=0)


def _linear_model(w, b, **dense_kwargs):
    model = keras.Sequential(
        [keras.Input((w.shape[0],)), keras.layers.Dense(w.shape[1], **dense_kwargs)]
    )
    model.set_weights([w, b])
    return model


def test_one_coupled_sgd_step_equals_keras_decoupled_step_with_converted_value():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 3))
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    lr, wd_coupled, momentum = 0.05, 5e-2, 0.9
    # PyTorch SGD(weight_decay=wd): d_p = grad + wd * p; buf = d_p (first step); p -= lr * buf.
    gw, gb = _mse_grad(w, b, x, y)
    exp_w = w - lr * (gw + wd_coupled * w)
    exp_b = b - lr * (gb + wd_coupled * b)
    wd = convert_weight_decay(wd_coupled, "coupled", "decoupled", learning_rate=lr)
    model = _linear_model(w.astype("float32"), b.astype("float32"))
    model.compile(keras.optimizers.SGD(lr, momentum=momentum, weight_decay=wd), loss="mse")
    model.train_on_batch(x.astype("float32"), y.astype("float32"))
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), exp_w, rtol=1e-5)
    np.testing.assert_allclose(model.layers[0].bias.numpy(), exp_b, rtol=1e-5)


def test_convert_weight_decay_per_step_shrink_is_preserved():
    lr = 0.2
    for source in ("l2", "coupled", "decoupled", "decoupled_lr_free", "keras_l2"):
        for target in ("l2", "coupled", "decoupled", "decoupled_lr_free", "keras_l2"):
            v = convert_weight_decay(0.01, source, target, learning_rate=lr)
            # Shrink of one plain SGD step, from the update equations in the module docstring.
            shrink = {
                "l2": lr * 0.01,
                "coupled": lr * 0.01,
                "decoupled": lr * 0.01,
                "decoupled_lr_free": 0.01,
                "keras_l2": 2 * lr * 0.01,
            }[source]
            got = {
                "l2": lr * v,
                "coupled": lr * v,
                "decoupled": lr * v,
                "decoupled_lr_free": v,
                "keras_l2": 2 * lr * v,
            }[target]
            assert got == pytest.approx(shrink), (source, target)


def test_convert_weight_decay_between_equal_conventions_is_the_identity_without_a_rate():
    # Used to divide by learning_rate=None for "decoupled_lr_free" -> "decoupled_lr_free".
    for convention in ("l2", "coupled", "decoupled", "decoupled_lr_free", "keras_l2"):
        assert convert_weight_decay(0.05, convention, convention) == 0.05
    with pytest.raises(ValueError, match="`learning_rate` must be a number > 0"):
        convert_weight_decay(0.05, "decoupled_lr_free", "decoupled")


def test_page_summed_loss_hyperparameters_train_like_mean_loss_in_keras():
    rng = np.random.default_rng(1)
    batch, steps, momentum = 16, 5, 0.9
    x, y = rng.normal(size=(batch, 4)), rng.normal(size=(batch, 3))
    w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    lr_sum, wd_sum = 0.4 / batch, 5e-4 * batch
    # Reference: PyTorch SGD(nesterov=True, weight_decay=wd_sum) on the batch-summed loss,
    # decay on the kernel only (as in Page's code for weights).
    ref_w, ref_b, buf_w, buf_b = w.copy(), b.copy(), None, None
    for _ in range(steps):
        gw, gb = _mse_grad(ref_w, ref_b, x, y, reduce="sum")
        gw = gw + wd_sum * ref_w
        buf_w = gw if buf_w is None else momentum * buf_w + gw
        buf_b = gb if buf_b is None else momentum * buf_b + gb
        ref_w = ref_w - lr_sum * (gw + momentum * buf_w)
        ref_b = ref_b - lr_sum * (gb + momentum * buf_b)

    lr, wd = summed_loss_to_mean_loss(lr_sum, wd_sum, batch_size=batch)
    assert (lr, wd) == pytest.approx((0.4, 5e-4))
    assert mean_loss_to_summed_loss(lr, wd, batch) == pytest.approx((lr_sum, wd_sum))
    reg = keras.regularizers.L2(convert_weight_decay(wd, "coupled", "keras_l2"))
    model = _linear_model(w.astype("float32"), b.astype("float32"), kernel_regularizer=reg)
    model.compile(keras.optimizers.SGD(lr, momentum=momentum, nesterov=True), loss="mse")
    for _ in range(steps):
        model.train_on_batch(x.astype("float32"), y.astype("float32"))
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), ref_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].bias.numpy(), ref_b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: convert_weight_decay(-1e-4, "l2", "coupled"), "value"),
        (lambda: convert_weight_decay(1e-4, "weight", "coupled"), "source"),
        (lambda: convert_weight_decay(1e-4, "l2", "adamw"), "target"),
        (lambda: convert_weight_decay(1e-4, "decoupled_lr_free", "coupled"), "learning_rate"),
        (lambda: summed_loss_to_mean_loss(0.1, -5e-4, 512), "weight_decay"),
        (lambda: summed_loss_to_mean_loss(0.1, 5e-4, 0), "batch_size"),
        (lambda: no_bias_decay("sgd"), "optimizer"),
    ],
)
def test_weight_decay_helpers_reject_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()
