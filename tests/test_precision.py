"""Mixed precision on CPU: policy choice, loss scaling in compile, float32 BatchNorm and outputs."""

import gzip
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tricks.precision import float32_output, use_mixed_precision


@pytest.fixture(autouse=True)
def restore_global_policy():
    """The dtype policy is process-global: put it back so other tests in this worker see float32."""
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


def _fashion_mnist(directory, n):
    with gzip.open(os.path.join(directory, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784].reshape(n, 28, 28, 1)
    with gzip.open(os.path.join(directory, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return x.astype("float32") / 255.0, y.astype("int32")


def _cnn():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(inputs, float32_output(x))


def test_default_policy_follows_the_hardware():
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = use_mixed_precision()
    assert policy.name == ("mixed_float16" if has_gpu else "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == policy.name


def test_explicit_policy_is_set_and_returned():
    policy = use_mixed_precision("mixed_float16")
    assert (policy.compute_dtype, policy.variable_dtype) == ("float16", "float32")


def test_unknown_policy_raises():
    with pytest.raises(ValueError, match="policy"):
        use_mixed_precision("float8")


def test_compile_wraps_optimizer_in_loss_scale_optimizer_under_float16():
    use_mixed_precision("mixed_float16")
    model = _cnn()
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    use_mixed_precision("mixed_bfloat16")
    model = _cnn()
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_batchnorm_variables_and_statistics_stay_float32():
    use_mixed_precision("mixed_float16")
    bn = keras.layers.BatchNormalization(momentum=0.9)
    rng = np.random.default_rng(0)
    # A large offset: a float16 sum of 4096 such values would be off by ~1e-3 relative.
    x = (300.0 + rng.normal(size=(4096, 2))).astype("float16")
    bn(keras.ops.convert_to_tensor(x), training=True)
    assert all(v.dtype == "float32" for v in bn.weights)
    x64 = x.astype("float64")
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * x64.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * x64.var(axis=0), rtol=1e-5)


def test_model_output_is_float32_while_layers_compute_in_float16():
    use_mixed_precision("mixed_float16")
    model = _cnn()
    assert model.layers[-2].compute_dtype == "float16"  # the Dense before the cast
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert out.dtype == "float32"


def test_twenty_float16_steps_on_fashion_mnist_track_float32_losses(fashion_mnist_dir):
    x, y = _fashion_mnist(fashion_mnist_dir, 20 * 32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(policy):
        use_mixed_precision(policy)
        keras.utils.set_random_seed(1)
        model = _cnn()
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss=loss)
        return [
            float(model.train_on_batch(x[i : i + 32], y[i : i + 32])) for i in range(0, 640, 32)
        ]

    reference = train("float32")
    losses = train("mixed_float16")
    assert len(losses) == 20 and np.all(np.isfinite(losses))
    # float16 has an 11-bit mantissa: the trajectories agree to within a few per cent.
    np.testing.assert_allclose(losses, reference, rtol=0.03)


def test_overflowing_step_is_skipped_and_loss_scale_halves():
    use_mixed_precision("mixed_float16")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = float32_output(keras.layers.Dense(3)(keras.layers.Dense(8)(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.train_on_batch(x, np.zeros((8, 3), "float32"))  # builds; a normal finite step
    scale = float(model.optimizer.dynamic_scale.numpy())
    before = [w.copy() for w in model.get_weights()]
    iterations = int(model.optimizer.iterations.numpy())
    # Targets of 1e4: the loss is finite in float32, but dloss/doutput * 2**15 exceeds the
    # float16 maximum (65504) in the backward pass of the float16 Dense layers.
    model.train_on_batch(x, np.full((8, 3), 1e4, "float32"))
    assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
    assert int(model.optimizer.iterations.numpy()) == iterations
    for w, w0 in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, w0)
