"""The Fashion-MNIST recipe for a 2-core CPU: a small zero-γ ResNet-9 with the bag of tricks.

It is what `keras-tricks demo` (`make demo`) trains. Sources, cited per value below:
- [He2019] He et al. 2019, "Bag of Tricks for Image Classification with CNNs",
  https://arxiv.org/abs/1812.01187 (3.1 linear scaling, warmup, zero-γ, no bias decay;
  5.1 cosine decay; 5.2 label smoothing; 5.4 mixup).
- [Goyal2017] Goyal et al. 2017, https://arxiv.org/abs/1706.02677 (linear scaling, gradual warmup).
- [Page] David Page, "How to train your ResNet", https://myrtle.ai/learn/how-to-train-your-resnet/
  (ResNet-9; part 8: EMA, flip test-time augmentation, pool before BN).
- [here] measured on the 2-core CPUs these recipes are sized for (bench/recipe.py and the
  experiment log summarised in BENCHMARKS.md, "Fashion-MNIST recipe").
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np

from keras_tricks import augment, losses, models, optimizers, schedules
from keras_tricks.callbacks import ExponentialMovingAverage
from keras_tricks.recipes._recipe import Hyperparameter as H
from keras_tricks.recipes._recipe import (
    Recipe,
    recipe_data,
    resolve_hyperparameters,
    worker_backup_dir,
)

HE2019 = "He et al. 2019 (https://arxiv.org/abs/1812.01187)"
GOYAL2017 = "Goyal et al. 2017 (https://arxiv.org/abs/1706.02677)"
PAGE = "Page, How to train your ResNet (https://myrtle.ai/learn/how-to-train-your-resnet/)"
PART8 = (
    "Page, How to train your ResNet 8: Bag of tricks "
    "(https://myrtle.ai/learn/how-to-train-your-resnet-8-bag-of-tricks/)"
)
HERE = "measured here (BENCHMARKS.md, Fashion-MNIST recipe)"
XIAO2017 = "Xiao et al. 2017, Fashion-MNIST (https://arxiv.org/abs/1708.07747)"

# One block of hyperparameters, each with where it comes from.
DEFAULTS = {
    "batch_size": H(256, f"{HERE}: batch 256 trains this net faster per image than 512 on 2 cores"),
    "epochs": H(20, f"{HERE}: 20 epochs: 0.9386 test (16: 0.9347), demo 14 min wall on 2 cores"),
    "learning_rate": H(
        0.2,
        f"{HERE}: the LR range test's steepest-descent point at batch 256 (0.19); "
        f"the base of the linear scaling rule, {GOYAL2017}",
    ),
    "warmup_epochs": H(
        2, f"{HE2019} 3.1 / {GOYAL2017} 2.2: linear warmup (5 of 90-120 epochs there, 2 of 20 here)"
    ),
    "schedule": H("cosine", f"{HE2019} 5.1: cosine decay to 0 after the warmup"),
    "momentum": H(0.9, f"{HE2019} 4 (baseline); {PAGE}: Nesterov momentum 0.9"),
    "nesterov": H(True, f"{PAGE}: Nesterov update"),
    # Keras's decay is decoupled (w -= lr * wd * w, outside the momentum). Page's coupled 5e-4
    # (PyTorch SGD, added to the gradient) is amplified by the momentum to lr * 5e-4 / (1 - 0.9)
    # per step in steady state: the same shrink as decoupled 5e-3.
    "weight_decay": H(
        5e-3,
        f"{PAGE}: 5e-4 coupled with momentum 0.9 = 5e-3 decoupled; "
        f"{HERE}: 5e-3 beat 5e-4 by 0.15 points (validation)",
    ),
    "no_bias_decay": H(True, f"{HE2019} 3.1: no decay on biases and BN γ/β"),
    "label_smoothing": H(0.1, f"{HE2019} 5.2: ε = 0.1 (Szegedy et al. 2016's uniform form)"),
    "mixup_alpha": H(
        0.0,
        f"{HE2019} 5.4 uses α = 0.2 with 200 epochs; off here: it needs longer training ({HERE})",
    ),
    "width": H(
        16,
        f"{HERE}: ResNet-9 width 16 (channels 16-32-64-128) trains ~1,600 img/s in bfloat16 "
        "on 2 cores; width 32 ~540",
    ),
    "pool_before_bn": H(
        True, f"{PART8}: max-pool before BN and the activation ({HERE}: 1.26x faster)"
    ),
    "zero_gamma": H(True, f"{HE2019} 3.1: γ = 0 in the last BN of every residual branch"),
    "output_scale": H(0.125, f"{PAGE}: logits multiplied by 0.125"),
    "padding": H(2, f"{HERE}: pad 2 + random 28x28 crop (Page pads 4 on 32x32 CIFAR)"),
    "flip": H(True, f"{PAGE}: random left-right flip (clothing is left-right symmetric)"),
    "cutout": H(0, f"{HERE}: no cutout (it needs a longer run to pay off)"),
    "ema_decay": H(0.99, f"{PART8}: EMA of the weights, momentum 0.99"),
    "ema_every_n_steps": H(5, f"{PART8}: EMA updated every 5 batches"),
    "tta_flips": H(True, f"{PART8}: test-time augmentation with left-right flips"),
    "mean": H(0.2860, f"{HERE}: pixel mean of the 60k training images / 255"),
    "std": H(0.3530, f"{HERE}: pixel standard deviation of the 60k training images / 255"),
    "precision": H(
        "auto",
        "keras_tricks.runtime / BENCHMARKS.md (Models): mixed_bfloat16 where the CPU computes "
        "bfloat16 natively, else float32",
    ),
    "validate": H(
        False, "keras_tricks: score the test data after every epoch (for curves; costs ~3% time)"
    ),
    "seed": H(0, "keras_tricks: seed of the initialisation, the shuffles and the augmentation"),
    "num_classes": H(10, XIAO2017),
    "train_split": H("train", "tfrecord_tools: idx:DIR splits train/test"),
    "test_split": H("test", "tfrecord_tools: idx:DIR splits train/test"),
    "eval_batch_size": H(1000, "keras_tricks: evaluation batch (no effect on results)"),
}


def _precision_policy(precision):
    if precision == "auto":
        from keras_tricks.runtime import cpu_has_native_bfloat16

        return "mixed_bfloat16" if cpu_has_native_bfloat16() else "float32"
    if precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
        raise ValueError(
            "`precision` must be 'auto', 'float32', 'mixed_bfloat16' or 'mixed_float16'. "
            f"Received: precision={precision!r}"
        )
    return precision


@contextlib.contextmanager
def _dtype_policy(name):
    # Layers take the global policy when they are built; restore it so the recipe leaves the
    # caller's Keras as it found it.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def zero_gamma_resnet9(network: keras.Model) -> keras.Model:
    """Set γ = 0 in the last BN of each residual branch of a `resnet9` network (in place).

    He et al. 2019, https://arxiv.org/abs/1812.01187, section 3.1 ("zero γ"): every residual
    block then starts as the identity, `x + branch(x) = x`, which eases the start of training.

    ```
    for stage in ("layer1", "layer3"):          # the two residual stages of ResNet-9
        model.get_layer(f"{stage}_res2_bn").gamma.assign(0)
    ```

    Example:

    ```python
    from keras_tricks.models import resnet9
    from keras_tricks.recipes.fashion import zero_gamma_resnet9
    net = zero_gamma_resnet9(resnet9(input_shape=(28, 28, 1), width=8))
    ```

    Args:
        network: a model built by `keras_tricks.models.resnet9` with trainable BN scales.

    Returns:
        `network`.
    """
    for stage in ("layer1", "layer3"):
        layer = network.get_layer(f"{stage}_res2_bn")
        if layer.gamma is None:
            raise ValueError(
                "`network` must have BN scales (resnet9(frozen_bn_scale=False)) for zero-γ. "
                f"Received: a network whose {layer.name} has scale=False"
            )
        layer.gamma.assign(np.zeros(layer.gamma.shape, "float32"))
    return network


def _learning_rate_schedule(hp, steps_per_epoch):
    total = hp["epochs"] * steps_per_epoch
    warmup = min(int(round(hp["warmup_epochs"] * steps_per_epoch)), total - 1)
    peak = hp["learning_rate"]
    if hp["schedule"] == "cosine":
        after = keras.optimizers.schedules.CosineDecay(peak, total - warmup)
    elif hp["schedule"] == "linear_cosine":
        after = schedules.LinearCosineDecay(peak, total - warmup)
    elif hp["schedule"] == "step":
        # He et al. 2019's baseline (section 2.1): x0.1 at 30, 60, 90 of 120 epochs; the same
        # fractions of this run.
        after = schedules.StepDecay(
            peak, [int((total - warmup) * f) for f in (0.25, 0.5, 0.75)], factor=0.1
        )
    elif hp["schedule"] == "constant":
        after = float(peak)
    else:
        raise ValueError(
            "`schedule` must be 'cosine', 'linear_cosine', 'step' or 'constant'. "
            f"Received: schedule={hp['schedule']!r}"
        )
    if warmup <= 0:
        return after
    return schedules.Warmup(after, warmup_steps=warmup)


def _default_data():
    from keras_tricks.datasets import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def fashion_mnist(
    data: Any = None,
    *,
    work_dir: str | None = None,
    tfrecord_dir: str | None = None,
    **overrides: Any,
) -> Recipe:
    """Fashion-MNIST in ~15 minutes on 2 CPU cores: zero-γ ResNet-9 (width 16) + the bag of tricks.

    He et al. 2019, https://arxiv.org/abs/1812.01187, and Page's "How to train your ResNet",
    https://myrtle.ai/learn/how-to-train-your-resnet/, scaled down to a CPU budget; every
    default below was measured here (BENCHMARKS.md, "Fashion-MNIST recipe").

    ```
    lr(step)   = warmup 2 epochs 0 -> 0.2 * batch/256, then cosine -> 0 at epoch 20
    update     = Nesterov SGD 0.9, decoupled weight decay 5e-3 on kernels only (no bias decay)
    loss       = cross-entropy with label smoothing 0.1
    augment    = pad 2 + random 28x28 crop, left-right flip (inside the model)
    network    = resnet9(width 16, pool before BN, logits * 0.125), zero-γ residual branches,
                 mixed_bfloat16 on CPUs with native bfloat16
    evaluation = EMA (0.99 every 5 steps) weights, flip test-time augmentation
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks.recipes import fashion_mnist
    x = np.random.randint(0, 256, (64, 28, 28), "uint8"); y = np.arange(64) % 10
    recipe = fashion_mnist({"train": (x, y), "test": (x, y)}, batch_size=32, epochs=1, width=4)
    recipe.fit(verbose=0)
    recipe.evaluate()["accuracy"]
    ```

    Args:
        data: None (the Debian/Keras Fashion-MNIST arrays, `keras_tricks.datasets`), a
            `tfrecord_tools` directory with `train` and `test` splits (local or `gs://`),
            `idx:DIR` (converted once into `tfrecord_dir`), or a dict
            `{"train": (images, labels), "test": (images, labels)}` of uint8 28x28 images.
        work_dir: local or `gs://` directory for checkpoints, logs and the final model.
        tfrecord_dir: where `idx:DIR` is converted (default `work_dir/tfrecords`).
        **overrides: any name of `DEFAULTS` (`batch_size`, `epochs`, `width`,
            `learning_rate`, ...). A new `batch_size` rescales `learning_rate` by the linear
            rule (Goyal et al. 2017) unless `learning_rate` is given too.

    Returns:
        A `Recipe`.
    """
    hp = resolve_hyperparameters(DEFAULTS, overrides, recipe="fashion_mnist")
    policy = _precision_policy(hp["precision"])
    keras.utils.set_random_seed(hp["seed"])
    if data is None:
        data = _default_data()
    batch = hp["batch_size"]

    mixup = [augment.MixUp(hp["mixup_alpha"], seed=hp["seed"] + 3)] if hp["mixup_alpha"] else []
    train, test = recipe_data(
        data,
        name="fashion_mnist",
        work_dir=work_dir,
        tfrecord_dir=tfrecord_dir,
        train_split=hp["train_split"],
        test_split=hp["test_split"],
        batch_size=batch,
        eval_batch_size=hp["eval_batch_size"],
        seed=hp["seed"],
        train_options={"num_classes": hp["num_classes"], "label_mixing": mixup},
        test_options={"num_classes": hp["num_classes"], "one_hot": bool(hp["mixup_alpha"])},
    )

    optimizer = keras.optimizers.SGD(
        _learning_rate_schedule(hp, train.steps_per_epoch),
        momentum=hp["momentum"],
        nesterov=hp["nesterov"],
        weight_decay=hp["weight_decay"] or None,
    )
    if hp["no_bias_decay"] and hp["weight_decay"]:
        optimizers.no_bias_decay(optimizer)

    with _dtype_policy(policy):
        network = models.resnet9(
            num_classes=hp["num_classes"],
            input_shape=(28, 28, 1),
            width=hp["width"],
            pool_before_bn=hp["pool_before_bn"],
            output_scale=hp["output_scale"],
            name="resnet9_fashion_mnist",
        )
        if hp["zero_gamma"]:
            zero_gamma_resnet9(network)
        seed = hp["seed"]
        normalize = augment.Normalize(hp["mean"], hp["std"])
        # The random layers run on the raw uint8 images (a quarter of float32's memory
        # traffic), then Normalize; the pad is black (0), as the images' own background.
        augmentation = []
        if hp["padding"]:
            augmentation.append(
                augment.RandomPadCrop(hp["padding"], fill_mode="constant", seed=seed)
            )
        if hp["flip"]:
            augmentation.append(augment.RandomFlip(seed=seed + 1))
        if hp["cutout"]:
            augmentation.append(augment.Cutout(hp["cutout"], fill_value=0, seed=seed + 2))
        augmentation.append(normalize)

    ema = None
    if hp["ema_decay"]:
        ema = ExponentialMovingAverage(
            decay=hp["ema_decay"],
            every_n_steps=hp["ema_every_n_steps"],
            backup_dir=worker_backup_dir(work_dir),
        )
    if hp["label_smoothing"] or hp["mixup_alpha"]:
        loss = losses.LabelSmoothingCrossEntropy(hp["label_smoothing"], convention="uniform")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return Recipe(
        name="fashion_mnist",
        network=network,
        preprocessing=[normalize],
        augmentation=augmentation,
        optimizer=optimizer,
        loss=loss,
        metrics=["accuracy"] if not hp["mixup_alpha"] else ["categorical_accuracy"],
        train=train,
        validation_data=test if hp["validate"] else None,
        test_data=test,
        epochs=hp["epochs"],
        batch_size=batch,
        hparams=hp.replace(
            "precision", policy, f"{hp['precision']!r} -> {policy}: " + hp.source("precision")
        ),
        ema=ema,
        tta={"flips": True} if hp["tta_flips"] else None,
        work_dir=work_dir,
    )
