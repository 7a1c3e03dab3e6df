"""The recipes, structurally: hyperparameters against their citations (written out here), model
shapes and published parameter counts, a few real steps on generated stand-in data of the true
shapes read through TFRecords written by tfrecord_tools. (No CIFAR-10 or ImageNet here: what the
recipes reach on a GPU is in the README, from their sources.)
"""

import math
import os
import pickle

import keras
import numpy as np
import pytest

import tfrecord_tools
from keras_tricks import augment, recipes
from keras_tricks.losses import LabelSmoothingCrossEntropy
from keras_tricks.recipes import Hyperparameter, resolve_hyperparameters

# ----------------------------------------------------------------------------------- helpers


def _cifar_python_batches(directory, n_per_batch=20, n_test=20, seed=0):
    """Stand-in CIFAR-10 in the original python-pickle layout (batches.meta, data_batch_1..5,
    test_batch; rows of 1024 R, 1024 G, 1024 B values), as `cifar:DIR` reads it."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]  # fmt: skip
    with open(os.path.join(directory, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": names}, f)
    files = [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
        }
        with open(os.path.join(directory, name), "wb") as f:
            pickle.dump(batch, f)
    return directory


def _jpeg_folders(directory, per_class=4, classes=("n01", "n02"), seed=0):
    """Stand-in ImageNet: JPEGs of varied, ImageNet-like sizes in train/ and validation/ class
    folders (the `folder:DIR` layout of tfrecord_tools)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "validation"):
        for c in classes:
            os.makedirs(os.path.join(directory, split, c))
            for i in range(per_class):
                h, w = int(rng.integers(180, 400)), int(rng.integers(180, 500))
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(directory, split, c, f"{i}.jpg"))
    return directory


def _standin_cifar_tfrecords(path, n_train, n_test=16, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        tfrecord_tools.write_shards(
            x, np.arange(n) % 10, path, split=split, num_shards=2, name="cifar10", progress=False
        )
    return path


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def _lr(optimizer, step):
    """The optimizer's schedule at `step` (Keras keeps the schedule in `_learning_rate`)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return float(optimizer._learning_rate(step))


# ------------------------------------------------------------------------- the Recipe object


def test_package_exports_the_three_recipes_lazily_and_the_recipe_object():
    assert {"fashion_mnist", "cifar10_fast", "imagenet_resnet50", "Recipe"} <= set(dir(recipes))
    assert recipes.cifar10_fast.__module__ == "keras_tricks.recipes.cifar10"
    assert recipes.imagenet_resnet50.__module__ == "keras_tricks.recipes.imagenet"
    with pytest.raises(AttributeError):
        recipes.no_such_recipe  # noqa: B018


def test_batch_override_rescales_the_learning_rate_by_the_linear_rule():
    defaults = {
        "batch_size": Hyperparameter(512, "Page"),
        "learning_rate": Hyperparameter(0.4, "Page"),
        "epochs": Hyperparameter(24, "Page"),
    }
    hp = resolve_hyperparameters(defaults, {"batch_size": 128}, recipe="r")
    # Goyal et al. 2017: lr = base_lr * batch / base_batch.
    assert hp["learning_rate"] == pytest.approx(0.4 * 128 / 512)
    assert "linear scaling rule" in hp.source("learning_rate")
    assert hp.overridden == ("batch_size",)
    # An explicit learning rate is the user's: not rescaled.
    hp = resolve_hyperparameters(defaults, {"batch_size": 128, "learning_rate": 0.3}, recipe="r")
    assert hp["learning_rate"] == 0.3
    # No batch override, no change; other overrides are recorded as such.
    hp = resolve_hyperparameters(defaults, {"epochs": 3}, recipe="r")
    assert hp["learning_rate"] == 0.4 and hp.source("epochs") == "override"


def test_unknown_override_names_the_closest_hyperparameter():
    defaults = {"batch_size": Hyperparameter(512, "Page")}
    with pytest.raises(ValueError, match=r"`batchsize` \(did you mean `batch_size`\?\)"):
        resolve_hyperparameters(defaults, {"batchsize": 64}, recipe="cifar10_fast")


def test_training_stream_epochs_depend_only_on_seed_and_epoch():
    """Epoch e of a stream started at epoch 0 equals epoch e of a stream started at e."""
    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    y = np.arange(40) % 4

    def labels_of_epochs(start, count):
        stream = recipes.training_stream((x, y), batch_size=8, seed=3, cache=False)
        stream.callback.on_epoch_begin(start)
        it = iter(stream.dataset)
        return [
            np.concatenate([next(it)[0].numpy().ravel() for _ in range(stream.steps_per_epoch)])
            for _ in range(count)
        ]

    from_zero = labels_of_epochs(0, 3)
    assert labels_of_epochs(2, 1)[0].tolist() == from_zero[2].tolist()
    for epoch in from_zero:  # each epoch is a permutation of all 40 examples
        assert sorted(epoch.tolist()) == list(range(40))
    assert from_zero[0].tolist() != from_zero[1].tolist()  # and reshuffled per epoch


# ----------------------------------------------------------------------- cifar10_fast (Page)


@pytest.fixture(scope="module")
def cifar_recipe(tmp_path_factory):
    """The recipe at its defaults (batch 512, width 64) on 1024 stand-in images: 2 steps/epoch."""
    data = _standin_cifar_tfrecords(str(tmp_path_factory.mktemp("cifar") / "tfr"), 1024)
    return recipes.cifar10_fast(data)


def test_cifar10_fast_hyperparameters_match_page(cifar_recipe):
    hp = cifar_recipe.hparams
    # (value, what the source says), from davidcpage/cifar10-fast dawn.py / utils.py and the
    # "How to train your ResNet" posts 4 and 8.
    expected = {
        "batch_size": 512,  # dawn.py: batch_size = 512
        "epochs": 24,  # dawn.py: epochs=24
        "peak_learning_rate": 0.4,  # dawn.py: PiecewiseLinear([0, 5, epochs], [0, 0.4, 0])
        "peak_epoch": 5,
        "momentum": 0.9,  # dawn.py: momentum = 0.9, utils.Nesterov
        "nesterov": True,
        "weight_decay": 5e-4,  # dawn.py: weight_decay = 5e-4 (passed as 5e-4 * batch_size)
        "label_smoothing": 0.2,  # part 8
        "ema_decay": 0.99,  # part 8
        "ema_every_n_steps": 5,  # part 8
        "activation": "celu",  # part 8
        "celu_alpha": 0.3,  # part 8
        "frozen_bn_scale": True,  # part 8
        "output_scale": 0.125,  # dawn.py: Mul(weight=0.125)
        "padding": 4,  # utils.pad(x, border=4), mode='reflect'
        "cutout": 8,  # dawn.py: Cutout(8, 8)
        "mean": (0.4914, 0.4822, 0.4465),  # utils.cifar10_mean
        "std": (0.2471, 0.2435, 0.2616),  # utils.cifar10_std
        "width": 64,  # dawn.py: channels prep 64, layer1 128, layer2 256, layer3 512
    }
    for name, value in expected.items():
        assert hp[name] == value, name
        assert hp.source(name), name
    assert "dawn.py" in hp.source("batch_size")
    assert "bag-of-tricks" in hp.source("label_smoothing")


def test_cifar10_fast_schedule_and_optimizer_are_page_s_in_the_mean_loss_convention(cifar_recipe):
    spe = cifar_recipe.steps_per_epoch
    assert spe == 1024 // 512  # full batches only (Page: drop_last=True)
    optimizer = cifar_recipe.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.9)
    # Page: lr = PiecewiseLinear([0, 5, 24], [0, 0.4, 0])(epoch) / batch_size with the loss summed
    # over the batch; with Keras's batch-mean loss the same update is lr * batch_size.
    for step in (0, 1, 5 * spe, 7 * spe + 1, 24 * spe - 1, 24 * spe):
        page_lr = np.interp(step / spe, [0, 5, 24], [0, 0.4, 0]) / 512
        assert _lr(optimizer, step) == pytest.approx(page_lr * 512, abs=1e-7)
    # Page: weight decay 5e-4 * 512 on the summed loss, coupled (inside the Nesterov momentum),
    # on every parameter. Mean loss: 5e-4 * 512 / 512; as a loss term c ||w||^2: c = wd / 2.
    trainable = cifar_recipe.network.trainable_weights
    assert all(isinstance(v.regularizer, keras.regularizers.L2) for v in trainable)
    assert [v.regularizer.l2 for v in trainable] == pytest.approx(
        [5e-4 * 512 / 512 / 2] * len(trainable)
    )


def test_cifar10_fast_shorter_run_keeps_the_triangle_shape(cifar_recipe, tmp_path):
    data = _standin_cifar_tfrecords(str(tmp_path / "tfr"), 1024)
    recipe = recipes.cifar10_fast(data, epochs=12)
    spe = recipe.steps_per_epoch
    # The peak stays at 5/24 of the run: epoch 2.5 of 12.
    assert recipe.hparams["peak_epoch"] == pytest.approx(5 * 12 / 24)
    for step in (0, 5 * spe // 2, 12 * spe):
        want = np.interp(step / spe, [0, 2.5, 12], [0, 0.4, 0])
        assert _lr(recipe.optimizer, step) == pytest.approx(want, abs=1e-7)
    with pytest.raises(ValueError, match="`batchsize` \\(did you mean `batch_size`"):
        recipes.cifar10_fast(data, batchsize=64)


def test_cifar10_fast_loss_is_page_s_label_smoothing(cifar_recipe):
    loss = cifar_recipe.loss
    assert isinstance(loss, LabelSmoothingCrossEntropy)
    logits = np.array([[2.0, -1.0, 0.5, 0.0, 0.0, 1.0, -2.0, 0.3, 0.1, 0.0]], "float32")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    # Page's label_smoothing_loss: (1 - a) * CE(target) + a * mean over classes of -log p.
    alpha, target = 0.2, 2
    page = (1 - alpha) * -log_p[0, target] + alpha * -log_p[0].mean()
    assert float(loss(np.array([target]), logits)) == pytest.approx(page, rel=1e-5)


def test_cifar10_fast_augmentation_ema_and_tta(cifar_recipe):
    train = cifar_recipe.model
    kinds = [type(layer) for layer in train.layers[1:-1]]
    # Page: normalise, then pad-4 reflect + random crop, flip, 8x8 cutout (in the normalised
    # space, so the square is the mean colour, 0).
    assert kinds == [augment.Normalize, augment.RandomPadCrop, augment.RandomFlip, augment.Cutout]
    norm, crop, _, cutout = train.layers[1:-1]
    assert norm.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    assert norm.std == pytest.approx((0.2471, 0.2435, 0.2616))
    assert crop.padding == 4 and crop.fill_mode == "reflect"
    assert cutout.size == 8 and cutout.fill_value == 0.0
    assert cifar_recipe.ema.decay == 0.99 and cifar_recipe.ema.every_n_steps == 5
    assert cifar_recipe.tta == {"flips": True}
    # The exported classifier normalises but does not augment.
    assert [type(layer) for layer in cifar_recipe.classifier.layers[1:-1]] == [augment.Normalize]


def test_cifar10_fast_network_is_resnet9_with_the_published_parameter_count(cifar_recipe):
    net = cifar_recipe.network
    assert net.input_shape == (None, 32, 32, 3) and net.output_shape == (None, 10)
    # Page's ResNet-9 (dawn.py net()): 3x3 convs without bias 3->64, 64->128, 2x 128->128
    # (residual), 128->256, 256->512, 2x 512->512 (residual); linear 512->10 without bias;
    # a BN after every conv (2 trainable per channel; gamma frozen here, so beta only).
    convs = [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512),
             (512, 512)]  # fmt: skip
    conv_params = sum(9 * cin * cout for cin, cout in convs)
    assert conv_params + 512 * 10 == 6_568_640  # the "6.5M parameters" of Page's network
    bn_channels = sum(cout for _, cout in convs)
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_weights)
    assert trainable == conv_params + 512 * 10 + bn_channels  # beta only: gamma frozen at 1
    assert not any(v.path.endswith("gamma") for v in net.weights)
    celus = [layer for layer in net.layers if type(layer).__name__ == "CELU"]
    assert len(celus) == 8 and {c.alpha for c in celus} == {0.3}
    assert net.get_layer("logits").scale == 0.125


@pytest.mark.slow
def test_cifar10_fast_trains_a_few_steps_from_cifar_python_batches(tmp_path):
    # The true network (width 64) and image shape; cifar:DIR converted to TFRecords in work_dir.
    raw = _cifar_python_batches(str(tmp_path / "cifar-10-batches-py"))
    work_dir = str(tmp_path / "run")
    recipe = recipes.cifar10_fast(f"cifar:{raw}", work_dir=work_dir, batch_size=32, epochs=1)
    assert os.path.exists(os.path.join(work_dir, "tfrecords", "manifest.json"))
    assert recipe.steps_per_epoch == 100 // 32
    # The linear scaling rule for batch 32 (Goyal et al.): 0.4 * 32 / 512.
    assert recipe.hparams["peak_learning_rate"] == pytest.approx(0.4 * 32 / 512)
    before = [v.numpy().copy() for v in recipe.network.trainable_weights]
    history = recipe.fit(verbose=0)
    assert int(recipe.optimizer.iterations.numpy()) == 3
    assert all(math.isfinite(v) for v in history.history["loss"])
    after = [v.numpy() for v in recipe.network.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    result = recipe.evaluate()
    assert result["num_examples"] == 20 and 0.0 <= result["accuracy"] <= 1.0
    exported = keras.models.load_model(os.path.join(work_dir, "model.keras"))
    images = next(iter(recipe.test_data))[0][:4]
    with recipe.ema.averaged():  # the export holds the EMA weights, wrapped in flip TTA
        np.testing.assert_allclose(
            exported.predict(images, verbose=0),
            recipe.inference_model().predict(images, verbose=0),
            rtol=1e-5,
            atol=1e-6,
        )
    assert type(exported).__name__ == "TestTimeAugmentation"


def test_fit_refuses_to_resume_a_checkpoint_of_other_hyperparameters(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    data = {"train": (x, np.arange(64) % 10), "test": (x[:16], np.arange(16) % 10)}
    work_dir = str(tmp_path / "run")
    first = recipes.cifar10_fast(data, work_dir=work_dir, width=4, batch_size=32, epochs=2)
    # What an interrupted first run leaves: its hyperparameters and a checkpoint.
    os.makedirs(first.backup_dir)
    with open(os.path.join(work_dir, "hparams.json"), "w") as f:
        f.write(first.hparams.to_json())
    first.model.save_weights(os.path.join(first.backup_dir, "latest.weights.h5"))
    other = recipes.cifar10_fast(data, work_dir=work_dir, width=4, batch_size=32, epochs=3)
    with pytest.raises(ValueError, match=r"other hyperparameters \(epochs: 2 -> 3, peak_epoch"):
        other.fit(verbose=0)
    assert os.path.exists(os.path.join(first.backup_dir, "latest.weights.h5"))  # kept


# --------------------------------------------------------------- imagenet_resnet50 (He et al.)


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagenet")
    raw = _jpeg_folders(str(base / "raw"))
    out = str(base / "tfr")
    tfrecord_tools.convert(f"folder:{raw}", out, name="imagenet", image_format="jpeg",
                           progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def imagenet_recipe(imagenet_dir):
    """True shape (224, ResNet-50-D, 1000 classes, mixed float16) on 8 stand-in JPEGs, batch 8."""
    return recipes.imagenet_resnet50(imagenet_dir, batch_size=8)


def test_imagenet_resnet50_hyperparameters_match_he_et_al(imagenet_recipe):
    hp = resolve_hyperparameters(recipes.imagenet.DEFAULTS, {}, recipe="imagenet_resnet50")
    # He et al. 2019, https://arxiv.org/abs/1812.01187 (section in the comment).
    expected = {
        "depth": 50,  # 2.1
        "variant": "d",  # 4.3, Figure 2(c)
        "batch_size": 1024,  # 3.1
        "learning_rate": 0.1 * 1024 / 256,  # 3.1: "0.1 x b/256"
        "warmup_epochs": 5,  # 3.1
        "epochs": 120,  # 2.1
        "momentum": 0.9,  # 2.1 (NAG)
        "nesterov": True,
        "label_smoothing": 0.1,  # 5.2
        "mixup_alpha": 0.2,  # 5.4
        "zero_gamma": True,  # 3.1
        "no_bias_decay": True,  # 3.1
        "precision": "mixed_float16",  # 3.2
        "image_size": 224,  # 2.1
        "resize_size": 256,  # 2.1 (validation: shorter edge 256)
        "crop_scale": (0.08, 1.0),  # 2.1 step 2
        "crop_ratio": (3 / 4, 4 / 3),  # 2.1 step 2
        "color_jitter": 0.4,  # 2.1 step 4: [0.6, 1.4]
        "pca_lighting": 0.1,  # 2.1 step 5
        "mean": (123.68, 116.779, 103.939),  # 2.1 step 6
        "std": (58.393, 57.12, 57.375),  # 2.1 step 6
        "kernel_initializer": "xavier",  # 2.1
    }
    for name, value in expected.items():
        assert hp[name] == pytest.approx(value) if isinstance(value, float) else hp[name] == value
        assert "1812.01187" in hp.source(name), name
    assert hp["weight_decay"] == 1e-4 and "GluonCV" in hp.source("weight_decay")
    # Batch 8 here: the linear rule gives 0.1 x 8/256.
    assert imagenet_recipe.hparams["learning_rate"] == pytest.approx(0.1 * 8 / 256)


def test_imagenet_resnet50_schedule_is_warmup_then_cosine(imagenet_recipe):
    spe, epochs = imagenet_recipe.steps_per_epoch, 120
    lr, m = 0.1 * 8 / 256, 5 * spe
    total = epochs * spe - m
    optimizer = imagenet_recipe.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)  # 3.2: fp16 loss scaling
    for step in (0, 1, m - 1, m, m + 7, epochs * spe - 1):
        if step < m:  # 3.1: linear warmup from 0
            want = (step + 1) / m * lr
        else:  # 5.1: eta_t = eta / 2 (1 + cos(t pi / T)), t counted after the warmup
            want = 0.5 * (1 + math.cos(math.pi * (step - m) / total)) * lr
        assert _lr(optimizer, step) == pytest.approx(want, rel=1e-5, abs=1e-9), step


def test_imagenet_resnet50_is_resnet50d_with_the_published_parameter_count(imagenet_recipe):
    net = imagenet_recipe.network
    assert net.input_shape == (None, 224, 224, 3) and net.output_shape == (None, 1000)
    assert net.dtype_policy.name == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    # torchvision's resnet50 has 25,557,032 parameters; ResNet-D replaces the 7x7x3x64 stem conv
    # with 3x3 convs 3->32, 32->32, 32->64 and two BN(32) (gamma, beta): timm's resnet50d.
    resnet50 = 25_557_032
    resnet50d = resnet50 - 7 * 7 * 3 * 64 + 9 * (3 * 32 + 32 * 32 + 32 * 64) + 2 * 2 * 32
    assert resnet50d == 25_576_264
    assert sum(int(np.prod(v.shape)) for v in net.trainable_weights) == resnet50d
    # 3.1 zero gamma: the last BN of each of the 16 bottleneck blocks starts at gamma = 0.
    zero = [v for v in net.weights if v.path.endswith("gamma") and not v.numpy().any()]
    assert len(zero) == 3 + 4 + 6 + 3
    # 3.1 no bias decay: an L2 term on conv/dense kernels only; 1e-4 coupled = L2(5e-5).
    for v in net.trainable_weights:
        if v.path.endswith("kernel"):
            assert v.regularizer.l2 == pytest.approx(1e-4 / 2), v.path
        else:
            assert v.regularizer is None, v.path


def test_imagenet_resnet50_augmentation_and_loss(imagenet_recipe):
    layers = imagenet_recipe.model.layers[1:-1]
    kinds = [type(layer) for layer in layers]
    assert kinds == [augment.RandomFlip, augment.RandomResizedCrop, augment.ColorJitter,
                     augment.PCALighting, augment.Normalize]  # fmt: skip
    _, crop, jitter, pca, norm = layers
    assert (crop.height, crop.width) == (224, 224)
    assert crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert (jitter.brightness, jitter.saturation, jitter.hue) == (0.4, 0.4, 0.4)
    assert pca.alphastd == 0.1
    assert norm.mean == pytest.approx([123.68 / 255, 116.779 / 255, 103.939 / 255])
    assert norm.std == pytest.approx([58.393 / 255, 57.12 / 255, 57.375 / 255])
    assert imagenet_recipe.model.input_shape == (None, 256, 256, 3)  # crops are taken from 256²
    assert imagenet_recipe.classifier.input_shape == (None, 224, 224, 3)  # 256 -> centre 224
    # 5.2: q_i = 1 - eps for the true class, eps / (K - 1) for the others.
    loss, k, eps = imagenet_recipe.loss, 1000, 0.1
    logits = np.random.default_rng(0).normal(size=(1, k)).astype("float32")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q = np.full(k, eps / (k - 1))
    q[3] = 1 - eps
    assert float(loss(np.array([3]), logits)) == pytest.approx(-(q * log_p[0]).sum(), rel=1e-4)
    # 5.4: mixup in tf.data: soft labels, two classes per example at most.
    _, labels = next(iter(imagenet_recipe.train_data))
    labels = labels.numpy()
    assert labels.shape == (8, 1000)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
    assert ((labels > 0).sum(-1) <= 2).all() and ((labels > 0) & (labels < 1)).any()


@pytest.mark.slow
def test_imagenet_resnet50_trains_a_few_steps_from_jpeg_tfrecords(imagenet_dir, tmp_path):
    # Reduced resolution and depth for CPU time; the data path is the real one (JPEG shards of
    # varied sizes, resized/cropped in tf.data).
    recipe = recipes.imagenet_resnet50(
        imagenet_dir, work_dir=str(tmp_path / "run"), depth=18, num_classes=2, image_size=64,
        resize_size=73, batch_size=4, epochs=1, warmup_epochs=1, precision="float32",
    )  # fmt: skip
    assert recipe.steps_per_epoch == 8 // 4
    history = recipe.fit(verbose=0)
    assert int(recipe.optimizer.iterations.numpy()) == 2
    assert all(math.isfinite(v) for v in history.history["loss"])
    result = recipe.evaluate()
    assert result["num_examples"] == 8
    assert os.path.exists(tmp_path / "run" / "model.keras")
