"""The fashion_mnist recipe: hyperparameters against their sources, the pieces it builds from
them (schedule, optimizer, loss, network, augmentation, EMA, TTA), and real training steps."""

import math

import keras
import numpy as np
import pytest

from keras_tricks import augment, losses, recipes
from keras_tricks.recipes import fashion


def _tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype="uint8")
    y = np.arange(n) % 10
    return {"train": (x, y), "test": (x[:32], y[:32])}


@pytest.fixture(scope="module")
def recipe():
    return recipes.fashion_mnist(_tiny_data(), batch_size=16, epochs=4, width=4)


def test_every_default_names_its_source():
    for name, entry in fashion.DEFAULTS.items():
        assert isinstance(entry.source, str) and len(entry.source) > 10, name


def test_defaults_follow_their_papers():
    d = {k: v.value for k, v in fashion.DEFAULTS.items()}
    # He et al. 2019: label smoothing 0.1 (5.2), cosine (5.1), zero-γ and no bias decay (3.1).
    assert d["label_smoothing"] == 0.1 and "5.2" in fashion.DEFAULTS["label_smoothing"].source
    assert d["schedule"] == "cosine" and d["zero_gamma"] and d["no_bias_decay"]
    # Page, part 8: EMA momentum 0.99 every 5 batches, flip TTA; Nesterov momentum 0.9.
    assert (d["ema_decay"], d["ema_every_n_steps"], d["tta_flips"]) == (0.99, 5, True)
    assert (d["momentum"], d["nesterov"]) == (0.9, True)


def test_mean_and_std_are_the_training_set_statistics(fashion_mnist_dir):
    from keras_tricks.datasets import load_fashion_mnist

    (x_train, _), _ = load_fashion_mnist(fashion_mnist_dir)
    pixels = x_train.astype("float64") / 255.0
    assert fashion.DEFAULTS["mean"].value == pytest.approx(pixels.mean(), abs=5e-5)
    assert fashion.DEFAULTS["std"].value == pytest.approx(pixels.std(), abs=5e-5)


def test_batch_override_rescales_the_learning_rate_linearly(recipe):
    # Goyal et al. 2017: lr = base_lr * batch / base_batch, base 0.2 at 256.
    assert recipe.hparams["learning_rate"] == pytest.approx(0.2 * 16 / 256)
    explicit = recipes.fashion_mnist(_tiny_data(), batch_size=16, learning_rate=0.3, width=4)
    assert explicit.hparams["learning_rate"] == 0.3


def test_schedule_is_linear_warmup_then_cosine_to_zero(recipe):
    steps_per_epoch = recipe.steps_per_epoch  # 64 // 16 = 4
    assert steps_per_epoch == 4
    peak, m, total = 0.2 * 16 / 256, 2 * 4, 4 * 4  # warmup 2 epochs of 4 steps, 4 epochs
    schedule = keras.optimizers.schedules.deserialize(
        recipe.optimizer.get_config()["learning_rate"]
    )
    for step in range(total):
        if step < m:
            expected = (step + 1) / m * peak
        else:
            expected = peak * 0.5 * (1 + math.cos(math.pi * (step - m) / (total - m)))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-8), step


def test_optimizer_is_nesterov_sgd_with_decay_on_kernels_only(recipe):
    opt = recipe.optimizer
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == 0.9 and opt.nesterov and opt.weight_decay == pytest.approx(5e-3)
    pattern = opt._exclude_from_weight_decay_pattern
    assert pattern.search("resnet9_fashion_mnist/prep_bn/gamma:0")
    assert pattern.search("beta")
    assert not pattern.search("resnet9_fashion_mnist/prep_conv/kernel:0")


def test_loss_is_uniform_label_smoothing_0_1(recipe):
    assert isinstance(recipe.loss, losses.LabelSmoothingCrossEntropy)
    logits = np.array([[2.0, 0.0, -1.0] + [0.0] * 7], "float32")
    # Szegedy's form: target = 0.9 * one_hot + 0.1 / 10.
    target = 0.9 * np.eye(10)[[0]] + 0.01
    log_p = logits - np.log(np.exp(logits).sum())
    expected = -(target * log_p).sum()
    assert float(recipe.loss(np.array([0]), logits)) == pytest.approx(expected, rel=1e-5)


def test_network_is_zero_gamma_resnet9_width_w(recipe):
    net = recipe.network
    # ResNet-9 at width w on 28x28x1: the conv kernels 3x3 with channels (1->w), (w->2w),
    # 2x (2w->2w), (2w->4w), (4w->8w), 2x (8w->8w); BN (gamma, beta) after each; dense 8w->10.
    w = 4
    convs = [(1, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w)]
    convs += [(4 * w, 8 * w), (8 * w, 8 * w), (8 * w, 8 * w)]
    trainable = sum(9 * a * b + 2 * b for a, b in convs) + 8 * w * 10
    assert sum(int(np.prod(v.shape)) for v in net.trainable_weights) == trainable
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma = keras.ops.convert_to_numpy(layer.gamma)
            zero = layer.name in ("layer1_res2_bn", "layer3_res2_bn")
            assert np.all(gamma == 0.0) if zero else np.all(gamma == 1.0), layer.name


def test_precision_auto_follows_the_cpu_and_leaves_the_global_policy_alone(recipe):
    from keras_tricks.runtime import cpu_has_native_bfloat16

    expected = "mixed_bfloat16" if cpu_has_native_bfloat16() else "float32"
    assert recipe.hparams["precision"] == expected
    assert recipe.network.dtype_policy.name == expected
    assert keras.config.dtype_policy().name == "float32"
    f32 = recipes.fashion_mnist(_tiny_data(), width=4, batch_size=16, precision="float32")
    assert f32.network.dtype_policy.name == "float32"
    with pytest.raises(ValueError, match="precision"):
        recipes.fashion_mnist(_tiny_data(), width=4, batch_size=16, precision="fp8")


def test_augmentation_runs_on_raw_images_then_normalizes(recipe):
    kinds = [type(layer) for layer in recipe.augmentation]
    assert kinds == [augment.RandomPadCrop, augment.RandomFlip, augment.Normalize]
    pad = recipe.augmentation[0]
    assert (pad.padding, pad.fill_mode, pad.fill_value) == (2, "constant", 0.0)
    assert [type(layer) for layer in recipe.preprocessing] == [augment.Normalize]
    assert recipe.ema.decay == 0.99 and recipe.ema.every_n_steps == 5
    assert recipe.tta == {"flips": True}


def test_unknown_override_raises_with_a_hint():
    with pytest.raises(ValueError, match="did you mean `width`"):
        recipes.fashion_mnist(_tiny_data(), widht=8)


def test_zero_gamma_needs_trainable_bn_scales():
    from keras_tricks.models import resnet9

    with pytest.raises(ValueError, match="frozen_bn_scale"):
        fashion.zero_gamma_resnet9(resnet9(input_shape=(28, 28, 1), width=4, frozen_bn_scale=True))


@pytest.mark.slow
def test_trains_from_tfrecords_and_saves_the_ema_tta_model(tmp_path):
    import tfrecord_tools

    # Learnable stand-in: the class is written into the image as a bright row.
    rng = np.random.default_rng(1)
    y = np.arange(320) % 10
    x = rng.integers(0, 40, (320, 28, 28), dtype="uint8")
    x[np.arange(320), 2 + 2 * y, :] = 255
    tfrecord_tools.convert(
        {"train": (x[:256], y[:256]), "test": (x[256:], y[256:])},
        str(tmp_path / "shards"),
        name="fashion_mnist",
        progress=False,
    )
    recipe = recipes.fashion_mnist(
        str(tmp_path / "shards"),
        work_dir=str(tmp_path / "run"),
        batch_size=32,
        epochs=3,
        width=4,
        warmup_epochs=1,
        validate=True,
    )
    history = recipe.fit(verbose=0).history
    assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
    assert "val_accuracy" in history
    result = recipe.evaluate()
    assert result["num_examples"] == 64 and 0.0 <= result["accuracy"] <= 1.0
    loaded = keras.models.load_model(recipe.model_path)
    images = x[256:288, ..., None]
    with recipe.ema.averaged():
        from keras_tricks.training import TestTimeAugmentation

        expected = keras.ops.convert_to_numpy(
            TestTimeAugmentation(recipe.classifier, flips=True)(images)
        )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)), expected, rtol=1e-2, atol=1e-3
    )
