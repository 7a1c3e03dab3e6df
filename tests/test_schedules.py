"""Tests for keras_tricks.schedules against independent oracles.

Oracles: `tf.compat.v1.train.linear_cosine_decay`; the documented noisy-linear-cosine mean and
variance; the formulas of the papers / PyTorch's `OneCycleLR` written out below in NumPy.
"""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tricks import schedules
from keras_tricks.schedules import (
    LinearCosineDecay,
    NoisyLinearCosineDecay,
    OneCycle,
    PiecewiseLinear,
    StepDecay,
    Warmup,
    epochs_to_steps,
    page_triangular,
    scale_learning_rate,
)

# --- Oracles, written from the papers / reference code, independent of the package ---------------


def linear_cosine_oracle(lr, decay_steps, steps, num_periods=0.5, alpha=0.0, beta=0.001):
    # Bello et al. 2017, as documented by tf.compat.v1.train.linear_cosine_decay.
    s = np.minimum(np.asarray(steps, np.float64), decay_steps)
    linear = (decay_steps - s) / decay_steps
    cosine = 0.5 * (1 + np.cos(np.pi * 2 * num_periods * s / decay_steps))
    return lr * ((alpha + linear) * cosine + beta)


def torch_one_cycle_oracle(
    step_num, max_lr, total_steps, pct_start, div_factor, final_div_factor, anneal, three_phase
):
    # Transcription of torch.optim.lr_scheduler.OneCycleLR.get_lr (PyTorch 2.x).
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, initial_lr, max_lr),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial_lr),
            (total_steps - 1, initial_lr, min_lr),
        ]
    else:
        phases = [
            (float(pct_start * total_steps) - 1, initial_lr, max_lr),
            (total_steps - 1, max_lr, min_lr),
        ]

    def annealing_cos(start, end, pct):
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    def annealing_linear(start, end, pct):
        return (end - start) * pct + start

    fn = annealing_cos if anneal == "cos" else annealing_linear
    start_step = 0
    for i, (end_step, start, end) in enumerate(phases):
        if step_num <= end_step or i == len(phases) - 1:
            pct = (step_num - start_step) / (end_step - start_step)
            return fn(start, end, pct)
        start_step = end_step


def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


# --- Values -------------------------------------------------------------------------------------


def test_scale_learning_rate_is_goyal_linear_rule():
    # Goyal et al. 2017: 0.1 at batch 256, scaled by b / 256.
    assert scale_learning_rate(0.1, 256) == pytest.approx(0.1)
    assert scale_learning_rate(0.1, 1024) == pytest.approx(0.4)
    assert scale_learning_rate(0.1, 64) == pytest.approx(0.025)
    assert scale_learning_rate(0.2, 512, base_batch_size=128) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "num_periods, alpha, beta", [(0.5, 0.0, 0.001), (2.0, 0.1, 0.0), (3.5, 0.0, 0.01)]
)
def test_linear_cosine_decay_matches_tf_compat_v1(num_periods, alpha, beta):
    decay_steps = 500
    schedule = LinearCosineDecay(0.3, decay_steps, num_periods=num_periods, alpha=alpha, beta=beta)
    steps = np.arange(0, 700, 7)  # includes steps past decay_steps
    ours = schedule(steps)
    reference = [
        float(
            tf.compat.v1.train.linear_cosine_decay(
                0.3, int(s), decay_steps, num_periods=num_periods, alpha=alpha, beta=beta
            )()
        )
        for s in steps
    ]
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


def noisy_moments_oracle(lr, decay_steps, steps, iv, vd, num_periods=0.5, alpha=0.0, beta=0.001):
    # Documented formula of tf.compat.v1.train.noisy_linear_cosine_decay: the noise eps_t ~
    # N(0, iv / (1 + t)^vd) enters as (alpha + linear + eps_t) * cosine, times lr.
    mean = linear_cosine_oracle(lr, decay_steps, steps, num_periods, alpha, beta)
    t = np.minimum(np.asarray(steps, np.float64), decay_steps)
    cosine = 0.5 * (1 + np.cos(np.pi * 2 * num_periods * t / decay_steps))
    return mean, (lr * cosine) ** 2 * iv / (1.0 + t) ** vd


def test_noisy_linear_cosine_standardised_noise_is_standard_normal_over_steps():
    # One seed, 20,000 steps: (lr(t) - mean(t)) / std(t) must be N(0, 1) draws.
    lr, decay_steps, iv, vd = 0.2, 40000, 0.5, 0.55
    steps = np.arange(20000)
    got = np.asarray(NoisyLinearCosineDecay(lr, decay_steps, iv, vd, seed=123)(steps), np.float64)
    mean, variance = noisy_moments_oracle(lr, decay_steps, steps, iv, vd)
    z = (got - mean) / np.sqrt(variance)
    n = len(z)
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 4 * np.sqrt(2 / n)
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 4 * np.sqrt(0.6827 * 0.3173 / n)
    assert abs(np.mean(np.abs(z) < 2) - 0.9545) < 4 * np.sqrt(0.9545 * 0.0455 / n)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 4 / np.sqrt(n)  # fresh noise every step


def test_noisy_linear_cosine_mean_and_variance_over_seeds_match_documented_formula():
    lr, decay_steps, iv, vd = 0.2, 1000, 1.0, 0.55
    steps = np.array([0, 50, 800, 1500])  # 1500: past decay_steps, clipped
    n = 300
    samples = np.stack(
        [
            np.asarray(NoisyLinearCosineDecay(lr, decay_steps, iv, vd, seed=k)(steps))
            for k in range(n)
        ]
    )
    mean, variance = noisy_moments_oracle(lr, decay_steps, steps, iv, vd)
    assert np.all(np.abs(samples.mean(0) - mean) < 4 * np.sqrt(variance / n) + 1e-7)
    np.testing.assert_allclose(samples.var(0), variance, rtol=4 * np.sqrt(2 / n), atol=1e-12)


def test_noisy_linear_cosine_is_reproducible_per_seed_and_step():
    a = NoisyLinearCosineDecay(0.1, 100, seed=7)
    b = NoisyLinearCosineDecay(0.1, 100, seed=7)
    c = NoisyLinearCosineDecay(0.1, 100, seed=8)
    steps = np.arange(20)
    np.testing.assert_array_equal(np.asarray(a(steps)), np.asarray(b(steps)))
    assert float(a(5)) == float(a(5))
    assert not np.allclose(np.asarray(a(steps)), np.asarray(c(steps)))
    assert isinstance(NoisyLinearCosineDecay(0.1, 100).get_config()["seed"], int)
    # Neighbouring seeds give unrelated noise, not a permutation of each other's (a plain
    # `step ^ seed` key would make seed 1 at step s repeat seed 0 at step s ^ 1).
    long = np.arange(2000)
    mean, variance = noisy_moments_oracle(0.1, 10**6, long, 1.0, 0.55)
    z0, z1 = (
        (np.asarray(NoisyLinearCosineDecay(0.1, 10**6, seed=k)(long)) - mean) / np.sqrt(variance)
        for k in (0, 1)
    )
    assert abs(np.corrcoef(z0, z1)[0, 1]) < 4 / np.sqrt(len(long))
    assert abs(np.corrcoef(z0[long ^ 1], z1)[0, 1]) < 4 / np.sqrt(len(long))


def test_warmup_ramps_linearly_to_a_constant_rate():
    m, target = 5, 0.4
    schedule = Warmup(target, warmup_steps=m)
    # Goyal et al.: step i of m (1-based) gets i * target / m, then the constant.
    expected = [(i + 1) * target / m for i in range(m)] + [target] * 4
    np.testing.assert_allclose(values(schedule, range(m + 4)), expected, rtol=1e-6)


def test_warmup_reaches_target_at_last_warmup_step_and_decay_starts_at_its_step_0():
    m, decay_steps = 10, 50
    after = LinearCosineDecay(0.5, decay_steps)
    schedule = Warmup(after, warmup_steps=m, initial_learning_rate=0.01)
    target = linear_cosine_oracle(0.5, decay_steps, 0)
    steps = np.arange(0, 80)
    expected = np.where(
        steps < m,
        0.01 + (steps + 1) / m * (target - 0.01),
        linear_cosine_oracle(0.5, decay_steps, np.maximum(steps - m, 0)),
    )
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-5, atol=1e-8)
    assert float(schedule(m - 1)) == pytest.approx(target, rel=1e-6)


def test_warmup_wraps_keras_cosine_decay():
    after = keras.optimizers.schedules.CosineDecay(0.2, decay_steps=30)
    schedule = Warmup(after, warmup_steps=4)
    cosine = lambda s: 0.2 * 0.5 * (1 + np.cos(np.pi * min(s, 30) / 30))  # noqa: E731
    expected = [0.2 * (s + 1) / 4 for s in range(4)] + [cosine(s - 4) for s in range(4, 40)]
    np.testing.assert_allclose(values(schedule, range(40)), expected, rtol=1e-5, atol=1e-8)


def test_step_decay_divides_by_ten_at_each_boundary():
    boundaries = [30, 60, 90]
    schedule = StepDecay(0.1, boundaries)
    steps = np.arange(0, 120)
    expected = 0.1 * 0.1 ** np.searchsorted(boundaries, steps, side="right")
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-5)
    assert float(schedule(29)) == pytest.approx(0.1)
    assert float(schedule(30)) == pytest.approx(0.01)


def test_step_decay_from_epochs_uses_steps_per_epoch():
    assert epochs_to_steps([30, 60, 90], steps_per_epoch=5005) == [150150, 300300, 450450]
    assert epochs_to_steps([0.5, 2], steps_per_epoch=10) == [5, 20]
    schedule = StepDecay.from_epochs(0.1, [2, 4], steps_per_epoch=10, factor=0.5)
    assert schedule.boundaries == [20, 40]
    np.testing.assert_allclose(values(schedule, [19, 20, 39, 40]), [0.1, 0.05, 0.05, 0.025])


def test_piecewise_linear_matches_numpy_interp():
    boundaries, vals = [0, 10, 25, 40], [0.0, 1.0, 0.2, 0.2]
    schedule = PiecewiseLinear(boundaries, vals)
    steps = np.arange(0, 60)
    np.testing.assert_allclose(
        values(schedule, steps), np.interp(steps, boundaries, vals), rtol=1e-6, atol=1e-7
    )
    offset = PiecewiseLinear([5, 15], [0.3, 0.1])
    np.testing.assert_allclose(values(offset, [0, 5, 10, 20]), [0.3, 0.3, 0.2, 0.1], rtol=1e-6)


def test_page_triangular_is_0_to_0_4_at_epoch_5_to_0_at_epoch_24():
    # Page, "How to train your ResNet": PiecewiseLinear([0, 5, 24], [0, 0.4, 0]) in epochs.
    spe = 98
    schedule = page_triangular(spe)
    epochs = np.array([0, 2.5, 5, 14.5, 24, 30])
    expected = np.interp(epochs, [0, 5, 24], [0, 0.4, 0])
    np.testing.assert_allclose(
        values(schedule, (epochs * spe).astype(int)), expected, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize(
    "total_steps, pct_start, anneal, three_phase",
    [
        (100, 0.3, "cos", False),
        (100, 0.3, "linear", False),
        (257, 0.25, "cos", False),
        (120, 0.3, "cos", True),
        (120, 0.4, "linear", True),
    ],
)
def test_one_cycle_matches_torch_one_cycle_lr(total_steps, pct_start, anneal, three_phase):
    schedule = OneCycle(0.8, total_steps, pct_start, 25.0, 1e4, anneal, three_phase)
    steps = np.arange(total_steps)
    expected = [
        torch_one_cycle_oracle(s, 0.8, total_steps, pct_start, 25.0, 1e4, anneal, three_phase)
        for s in steps
    ]
    np.testing.assert_allclose(schedule(steps), expected, rtol=1e-5, atol=1e-7)
    assert float(schedule(total_steps + 50)) == pytest.approx(0.8 / 25 / 1e4, rel=1e-4)


# --- Bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: scale_learning_rate(0.1, 0), "batch_size"),
        (lambda: scale_learning_rate(-0.1, 32), "base_lr"),
        (lambda: Warmup(0.1, warmup_steps=-3), "warmup_steps.*-3"),
        (lambda: Warmup(0.1, warmup_steps=0), "warmup_steps"),
        (lambda: Warmup(lambda s: 0.1, warmup_steps=3), "after"),
        (lambda: Warmup(0.1, 3, initial_learning_rate=-1.0), "initial_learning_rate"),
        (lambda: LinearCosineDecay(0.1, decay_steps=-5), "decay_steps.*-5"),
        (lambda: LinearCosineDecay(0.0, decay_steps=5), "initial_learning_rate"),
        (lambda: NoisyLinearCosineDecay(0.1, 10, initial_variance=-1.0), "initial_variance"),
        (lambda: NoisyLinearCosineDecay(0.1, 10, seed="a"), "seed"),
        (lambda: StepDecay(0.1, []), "boundaries"),
        (lambda: StepDecay(0.1, [10, 5]), "boundaries.*increasing"),
        (lambda: StepDecay(0.1, [-1, 5]), r"boundaries\[0\]"),
        (lambda: StepDecay(0.1, [5], factor=0.0), "factor"),
        (lambda: StepDecay.from_epochs(0.1, [1], steps_per_epoch=0), "steps_per_epoch"),
        (lambda: epochs_to_steps([], 10), "epochs"),
        (lambda: PiecewiseLinear([], []), "boundaries"),
        (lambda: PiecewiseLinear([0, 5], [0.1]), "values.*one value per boundary"),
        (lambda: PiecewiseLinear([0, 5], [0.1, -0.2]), r"values\[1\]"),
        (lambda: page_triangular(10, peak_epoch=30, total_epochs=24), "total_epochs"),
        (lambda: OneCycle(0.1, total_steps=-10), "total_steps.*-10"),
        (lambda: OneCycle(0.1, 100, pct_start=1.2), "pct_start.*1.2"),
        (lambda: OneCycle(0.1, 100, pct_start=0.6, three_phase=True), "pct_start"),
        (lambda: OneCycle(0.1, 10, pct_start=0.05), "phase.*pct_start"),
        (lambda: OneCycle(0.1, 100, anneal="exp"), "anneal.*exp"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# --- Keras integration: save/load, fit under XLA, other backends --------------------------------


def all_schedules():
    return {
        "warmup_float": Warmup(0.05, warmup_steps=3),
        "warmup_linear_cosine": Warmup(LinearCosineDecay(0.05, 20), warmup_steps=3),
        "linear_cosine": LinearCosineDecay(0.05, 20, num_periods=1.5, alpha=0.1),
        "noisy_linear_cosine": NoisyLinearCosineDecay(0.05, 20, initial_variance=0.1, seed=3),
        "step": StepDecay(0.05, [2, 4], factor=0.5),
        "piecewise_linear": page_triangular(steps_per_epoch=1, peak_learning_rate=0.05),
        "one_cycle_cos": OneCycle(0.05, 10, pct_start=0.4),
        "one_cycle_linear": OneCycle(0.05, 12, pct_start=0.25, anneal="linear", three_phase=True),
    }


@pytest.mark.parametrize("name", sorted(all_schedules()))
def test_schedule_round_trips_through_model_save_in_compiled_optimizer(name, tmp_path):
    schedule = all_schedules()[name]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    restored = loaded.optimizer._learning_rate
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = np.arange(0, 30)
    np.testing.assert_array_equal(np.asarray(restored(steps)), np.asarray(schedule(steps)))


@pytest.mark.parametrize("name", sorted(all_schedules()))
def test_schedule_drives_sgd_steps_inside_jit_compiled_fit(name):
    # Plain SGD on a linear least-squares model: after k full-batch steps the weights must equal
    # w_{s+1} = w_s - lr(s) * 2/N X^T (X w_s - y), with lr(s) the schedule's value at step s.
    schedule = all_schedules()[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse", jit_compile=True
    )
    k = 6
    model.fit(x, y, batch_size=16, epochs=k, shuffle=False, verbose=0)
    w = np.zeros((3, 1))
    for s in range(k):
        w = w - float(schedule(s)) * 2 / len(x) * x.T.astype(np.float64) @ (x @ w - y)
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-4, atol=1e-6)
    assert int(model.optimizer.iterations) == k


JAX_SCRIPT = r"""
import json, jax, numpy as np
from keras_tricks.schedules import *
steps = np.arange(0, 60)
out = {}
for name, s in {
    "linear_cosine": LinearCosineDecay(0.3, 40, num_periods=2.0),
    "warmup": Warmup(LinearCosineDecay(0.3, 40), warmup_steps=5),
    "one_cycle": OneCycle(0.3, 50, pct_start=0.3),
    "piecewise": PiecewiseLinear([0, 10, 50], [0.0, 0.3, 0.0]),
    "step": StepDecay(0.3, [10, 20]),
    "noisy": NoisyLinearCosineDecay(0.3, 40, seed=11),
}.items():
    out[name] = np.asarray(jax.jit(s)(steps)).tolist()
print(json.dumps(out))
"""


def test_schedules_run_under_jax_jit_with_same_values(run_python):
    got = json.loads(run_python(JAX_SCRIPT).strip().splitlines()[-1])
    steps = np.arange(0, 60)
    cos40 = linear_cosine_oracle(0.3, 40, steps)
    expected = {
        "linear_cosine": linear_cosine_oracle(0.3, 40, steps, num_periods=2.0),
        "warmup": np.where(
            steps < 5,
            (steps + 1) / 5 * cos40[0],
            linear_cosine_oracle(0.3, 40, np.maximum(steps - 5, 0)),
        ),
        "one_cycle": [
            torch_one_cycle_oracle(s, 0.3, 50, 0.3, 25.0, 1e4, "cos", False)
            if s < 50
            else 0.3 / 25 / 1e4
            for s in steps
        ],
        "piecewise": np.interp(steps, [0, 10, 50], [0.0, 0.3, 0.0]),
        "step": 0.3 * 0.1 ** np.searchsorted([10, 20], steps, side="right"),
    }
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
    # The noise is a pure function of (seed, step): JAX and TensorFlow draw the same values.
    tf_noisy = np.asarray(NoisyLinearCosineDecay(0.3, 40, seed=11)(steps))
    np.testing.assert_allclose(got["noisy"], tf_noisy, rtol=1e-5, atol=1e-7)


def test_all_public_schedules_are_registered_keras_serializables():
    for cls in (
        Warmup,
        LinearCosineDecay,
        NoisyLinearCosineDecay,
        StepDecay,
        PiecewiseLinear,
        OneCycle,
    ):
        name = keras.saving.get_registered_name(cls)
        assert name == f"keras_tricks>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls
    assert set(schedules.__all__) >= {"scale_learning_rate", "OneCycle", "Warmup"}
