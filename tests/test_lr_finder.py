"""Tests for keras_tricks.lr_finder: sweep values, the SGD steps it runs, the suggestion rules,
state restoration, data sources, plotting and other backends."""

import io
import json
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tricks.lr_finder import LRFinderResult, find_lr, smooth_losses, sweep_learning_rates


def least_squares(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype("float32")
    return x, y


def linear_model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    return model


def sgd_losses_oracle(x, y, lrs, batch_size):
    # Plain SGD on mean squared error, batches in order: loss_i is measured before step i,
    # then w <- w - lr_i * 2/B X_b^T (X_b w - y_b).
    x, y = x.astype(np.float64), y.astype(np.float64)
    w = np.zeros((3, 1))
    starts = list(range(0, len(x), batch_size))
    out = []
    for i, lr in enumerate(lrs):
        s = starts[i % len(starts)]
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        r = xb @ w - yb
        out.append(float(np.mean(r**2)))
        w = w - lr * 2 / len(xb) * xb.T @ r
    return np.array(out)


# --- Sweep values and the steps actually run ----------------------------------------------------


def test_sweep_learning_rates_follow_the_formulas():
    i = np.arange(7)
    np.testing.assert_allclose(
        sweep_learning_rates(1e-6, 1.0, 7), 1e-6 * (1.0 / 1e-6) ** (i / 6), rtol=1e-12
    )
    np.testing.assert_allclose(sweep_learning_rates(1e-4, 1.0, 5), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    np.testing.assert_allclose(
        sweep_learning_rates(0.1, 0.5, 5, mode="linear"), [0.1, 0.2, 0.3, 0.4, 0.5]
    )


@pytest.mark.parametrize("mode", ["exponential", "linear"])
def test_find_lr_trains_with_the_swept_rates(mode):
    x, y = least_squares()
    model = linear_model()
    result = find_lr(model, (x, y), min_lr=1e-3, max_lr=0.2, num_steps=12, mode=mode, batch_size=8)
    i = np.arange(12)
    if mode == "exponential":
        expected_lrs = 1e-3 * (0.2 / 1e-3) ** (i / 11)
    else:
        expected_lrs = 1e-3 + (0.2 - 1e-3) * i / 11
    np.testing.assert_allclose(result.learning_rates, expected_lrs, rtol=1e-12)
    np.testing.assert_allclose(
        result.losses, sgd_losses_oracle(x, y, expected_lrs, 8), rtol=2e-4, atol=1e-6
    )
    assert not result.diverged


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]


@pytest.mark.parametrize("source", ["tf.data", "PyDataset", "list"])
def test_find_lr_accepts_batched_sources_and_reiterates_them(source):
    x, y = least_squares()
    if source == "tf.data":
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 4 batches for 10 steps
    elif source == "PyDataset":
        data = Batches(x, y, 8)
    else:
        data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    result = find_lr(linear_model(), data, min_lr=1e-3, max_lr=0.1, num_steps=10)
    lrs = 1e-3 * (0.1 / 1e-3) ** (np.arange(10) / 9)
    np.testing.assert_allclose(result.losses, sgd_losses_oracle(x, y, lrs, 8), rtol=2e-4, atol=1e-6)


def test_find_lr_stops_when_smoothed_loss_exceeds_four_times_its_minimum():
    x, y = least_squares()
    result = find_lr(linear_model(), (x, y), min_lr=1e-3, max_lr=1e3, num_steps=60, batch_size=32)
    assert result.diverged and len(result.losses) < 60
    smoothed = smooth_losses(result.losses, 0.98)
    assert smoothed[-1] > 4 * smoothed[:-1].min()
    assert all(smoothed[k] <= 4 * smoothed[:k].min() for k in range(1, len(smoothed) - 1))
    assert result.lr_at_divergence == result.learning_rates[-1]
    assert result.divergence_suggestion == pytest.approx(0.1 * result.learning_rates[-1])


# --- Suggestion rules on curves whose answer is known by construction ------------------------


def test_smooth_losses_is_bias_corrected_ema():
    # avg_1 = 0.5 -> 0.5/0.5 = 1; avg_2 = 0.25 + 1 = 1.25 -> /0.75; avg_3 = 0.625 + 1.5 -> /0.875
    np.testing.assert_allclose(
        smooth_losses([1.0, 2.0, 3.0], 0.5), [1.0, 1.25 / 0.75, 2.125 / 0.875]
    )
    np.testing.assert_array_equal(smooth_losses([3.0, 1.0], 0.0), [3.0, 1.0])


def _tanh_cliff_result():
    # u = log10(lr) on a grid of 0.05; the loss falls fastest at u = -3 (centre of the tanh)
    # and leaves 4x its minimum (~1) where 1 + 25 (u - 0.5) > 4, i.e. u > 0.62: first grid
    # point 0.65.
    lrs = sweep_learning_rates(1e-6, 10.0, 141)
    u = np.log10(lrs)
    losses = 2 - np.tanh(2 * (u + 3)) + np.where(u > 0.5, 25 * (u - 0.5), 0.0)
    return LRFinderResult(lrs, losses, smoothing=0.0)


def test_suggestion_is_steepest_descent_and_divergence_rule_is_ten_percent():
    result = _tanh_cliff_result()
    assert result.suggestion == pytest.approx(1e-3, rel=1e-9)
    assert result.lr_at_divergence == pytest.approx(10**0.65, rel=1e-9)
    assert result.divergence_suggestion == pytest.approx(10**-0.35, rel=1e-9)
    assert result.diverged
    assert result.min_loss_lr == pytest.approx(10**0.5, rel=1e-9)  # decreasing up to u = 0.5


def test_suggestion_ignores_the_cliff_at_the_end():
    # Without skipping, the last two points (a drop after a spike) would be the steepest.
    lrs = sweep_learning_rates(1e-4, 1.0, 41)
    u = np.log10(lrs)
    losses = 3 - np.tanh(3 * (u + 2))
    losses[-2], losses[-1] = 50.0, 0.0
    result = LRFinderResult(lrs, losses, smoothing=0.0, skip_end=2)
    assert result.suggestion == pytest.approx(1e-2, rel=1e-9)
    assert result.divergence_suggestion == pytest.approx(0.1 * lrs[-2], rel=1e-9)


# --- State restoration --------------------------------------------------------------------------


def bn_dropout_model():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dropout(0.3, seed=1),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def snapshot(variables):
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]


def assert_bit_identical(before, variables):
    after = snapshot(variables)
    assert len(before) == len(after)
    for b, a, v in zip(before, after, variables):
        assert np.array_equal(b, a), v.path


def test_find_lr_restores_weights_and_optimizer_state_bit_for_bit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, 64)
    model = bn_dropout_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # optimizer built and stepped 4 times
    optimizer = model.optimizer
    model_vars = list(model.variables) + list(model.metrics_variables)
    before_model, before_opt = snapshot(model_vars), snapshot(optimizer.variables)
    result = find_lr(model, (x, y), min_lr=1e-5, max_lr=100.0, num_steps=30, batch_size=16)
    assert len(result.losses) >= 3
    assert_bit_identical(before_model, model_vars)
    assert_bit_identical(before_opt, optimizer.variables)
    assert model.optimizer is optimizer
    # Training continues with the user's optimizer and its state.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(optimizer.iterations) == 8


def test_find_lr_leaves_an_unbuilt_optimizer_unbuilt():
    x, y = least_squares()
    model = linear_model()
    before = snapshot(model.variables)
    find_lr(model, (x, y), min_lr=1e-3, max_lr=0.1, num_steps=5)
    assert_bit_identical(before, model.variables)
    assert not model.optimizer.built
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 1


# --- Plot ---------------------------------------------------------------------------------------


def test_plot_has_log_lr_axis_and_marks_the_suggestion():
    from matplotlib.figure import Figure
    from PIL import Image

    result = _tanh_cliff_result()
    fig = result.plot()
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    vertical = [tuple(line.get_xdata()) for line in ax.lines]
    assert (result.suggestion, result.suggestion) in vertical
    assert (result.divergence_suggestion, result.divergence_suggestion) in vertical
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert Image.open(io.BytesIO(buffer.getvalue())).size[0] > 100


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 0.4], smoothing=0.0)
    with pytest.raises(ImportError, match=r"keras-tricks\[plot\]"):
        result.plot()


# --- Bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_lr": 0.0}, "min_lr.*0.0"),
        ({"min_lr": 1.0, "max_lr": 0.5}, "max_lr.*0.5"),
        ({"num_steps": 1}, "num_steps.*1"),
        ({"mode": "cosine"}, "mode.*cosine"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"divergence_threshold": 0.5}, "divergence_threshold"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_find_lr_bad_arguments_raise_value_error_naming_them(kwargs, match):
    x, y = least_squares(8)
    with pytest.raises(ValueError, match=match):
        find_lr(linear_model(), (x, y), **kwargs)


def test_find_lr_rejects_uncompiled_model_and_bad_data():
    x, y = least_squares(8)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compiled"):
        find_lr(model, (x, y))
    with pytest.raises(ValueError, match="equal length"):
        find_lr(linear_model(), (x, y[:5]))
    with pytest.raises(ValueError, match="data"):
        find_lr(linear_model(), 42)


# --- Another backend ----------------------------------------------------------------------------

JAX_SCRIPT = r"""
import json, keras, numpy as np
from keras_tricks.lr_finder import find_lr
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 3)).astype("float32")
y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype("float32")
model = keras.Sequential([keras.Input((3,)),
                          keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
model.compile(optimizer=keras.optimizers.SGD(momentum=0.0), loss="mse")
w0 = model.get_weights()[0].copy()
r = find_lr(model, (x, y), min_lr=1e-3, max_lr=0.2, num_steps=12, batch_size=8)
restored = bool(np.array_equal(w0, model.get_weights()[0]))
print(json.dumps({"losses": r.losses.tolist(), "restored": restored}))
"""


def test_find_lr_runs_on_jax_backend(run_python):
    out = json.loads(run_python(JAX_SCRIPT).strip().splitlines()[-1])
    x, y = least_squares()
    lrs = 1e-3 * (0.2 / 1e-3) ** (np.arange(12) / 11)
    np.testing.assert_allclose(out["losses"], sgd_losses_oracle(x, y, lrs, 8), rtol=2e-4, atol=1e-6)
    assert out["restored"]
