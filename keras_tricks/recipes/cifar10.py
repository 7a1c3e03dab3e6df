"""David Page's fast CIFAR-10 recipe: ResNet-9, 24 epochs, 94% test accuracy (DAWNBench).

Sources, cited per value below:
- [dawn] Page's DAWNBench script, https://github.com/davidcpage/cifar10-fast/blob/master/dawn.py
  and its `utils.py` (mean/std, reflect padding, crop/flip/cutout, Nesterov update).
- [HTTYR-n] "How to train your ResNet" part n, https://myrtle.ai/learn/how-to-train-your-resnet/
  (4: architecture, 94% in 24 epochs / 79 s; 8: bag of tricks: label smoothing, CELU,
  frozen BN scales, EMA, flip TTA).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_tricks import augment, losses, models
from keras_tricks._checks import fail
from keras_tricks.callbacks import ExponentialMovingAverage
from keras_tricks.optimizers import convert_weight_decay, summed_loss_to_mean_loss
from keras_tricks.recipes._recipe import Hyperparameter as H
from keras_tricks.recipes._recipe import (
    Recipe,
    recipe_data,
    resolve_hyperparameters,
    worker_backup_dir,
)
from keras_tricks.schedules import PiecewiseLinear

DAWN = "Page, dawn.py (https://github.com/davidcpage/cifar10-fast/blob/master/dawn.py)"
UTILS = "Page, utils.py (https://github.com/davidcpage/cifar10-fast/blob/master/utils.py)"
PART4 = (
    "Page, How to train your ResNet 4: Architecture "
    "(https://myrtle.ai/learn/how-to-train-your-resnet-4-architecture/)"
)
PART8 = (
    "Page, How to train your ResNet 8: Bag of tricks "
    "(https://myrtle.ai/learn/how-to-train-your-resnet-8-bag-of-tricks/)"
)

# One block of hyperparameters, each with where it comes from.
DEFAULTS = {
    "batch_size": H(512, f"{DAWN}: batch_size = 512"),
    "epochs": H(24, f"{DAWN}: epochs=24; {PART4}: 94% in 24 epochs"),
    # Page's rates are for a loss *summed* over the batch: lr_schedule(x) / batch_size. For
    # Keras's batch-mean loss the same updates need lr * batch_size (summed_loss_to_mean_loss).
    "peak_learning_rate": H(
        0.4, f"{DAWN}: PiecewiseLinear([0, 5, epochs], [0, 0.4, 0]) / batch_size, summed loss"
    ),
    "peak_epoch": H(5, f"{DAWN}: PiecewiseLinear([0, 5, epochs], ...)"),
    "momentum": H(0.9, f"{DAWN}: momentum = 0.9, Nesterov (utils.Nesterov)"),
    "nesterov": H(True, f"{UTILS}: class Nesterov"),
    # Page: weight_decay * batch_size with the summed loss, coupled (added to the gradient
    # before momentum). Here: a keras L2 regulariser on every weight, which is coupled too.
    "weight_decay": H(
        5e-4,
        f"{DAWN}: weight_decay = 5e-4, passed as 5e-4 * batch_size "
        "(summed loss, coupled, all parameters)",
    ),
    "label_smoothing": H(0.2, f"{PART8}: label smoothing 0.2"),
    "ema_decay": H(0.99, f"{PART8}: EMA of the weights, momentum 0.99"),
    "ema_every_n_steps": H(5, f"{PART8}: EMA updated every 5 batches"),
    "width": H(64, f"{DAWN}: channels prep 64, layer1 128, layer2 256, layer3 512"),
    "activation": H("celu", f"{PART8}: CELU instead of ReLU"),
    "celu_alpha": H(0.3, f"{PART8}: CELU(alpha=0.3)"),
    "frozen_bn_scale": H(True, f"{PART8}: batch-norm scales frozen at 1"),
    "output_scale": H(0.125, f"{DAWN}: classifier Mul(weight=0.125)"),
    "padding": H(4, f"{UTILS}: pad(x, border=4) with mode='reflect', then Crop(32, 32)"),
    "flip": H(True, f"{DAWN}: FlipLR()"),
    "cutout": H(8, f"{DAWN}: Cutout(8, 8)"),
    "mean": H((0.4914, 0.4822, 0.4465), f"{UTILS}: cifar10_mean"),
    "std": H((0.2471, 0.2435, 0.2616), f"{UTILS}: cifar10_std"),
    "tta_flips": H(True, f"{PART8}: test-time augmentation with left-right flips"),
    "seed": H(0, "keras_tricks: seed of the initialisation, the shuffles and the augmentation"),
    "num_classes": H(10, "CIFAR-10"),
    "train_split": H("train", "tfrecord_tools: cifar:DIR splits train/test"),
    "test_split": H("test", "tfrecord_tools: cifar:DIR splits train/test"),
    "eval_batch_size": H(1000, "keras_tricks: evaluation batch (no effect on results)"),
}


def cifar10_fast(
    data: Any = None,
    *,
    work_dir: str | None = None,
    tfrecord_dir: str | None = None,
    **overrides: Any,
) -> Recipe:
    """Page's ResNet-9 DAWNBench recipe for CIFAR-10: 94% test accuracy in 24 epochs on a GPU.

    David Page, "How to train your ResNet" (2018-2019),
    https://myrtle.ai/learn/how-to-train-your-resnet/, code
    https://github.com/davidcpage/cifar10-fast; with the part-8 ("bag of tricks") additions.

    ```
    lr(epoch)   = interp(epoch, [0, 5, 24], [0, 0.4, 0])          # per step, batch-mean loss
    update      = Nesterov SGD, momentum 0.9, L2 5e-4 on every weight (coupled)
    loss        = cross-entropy, label smoothing 0.2
    augment     = reflect-pad 4 + random 32x32 crop, left-right flip, 8x8 cutout (on device)
    network     = resnet9(width 64, CELU(0.3), BN scales frozen, logits * 0.125)
    evaluation  = EMA(0.99 every 5 steps) weights, flip test-time augmentation
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks.recipes import cifar10_fast
    x = np.random.randint(0, 256, (64, 32, 32, 3), "uint8"); y = np.arange(64) % 10
    recipe = cifar10_fast({"train": (x, y), "test": (x, y)}, batch_size=32, epochs=1, width=4)
    recipe.fit(verbose=0)
    recipe.evaluate()["accuracy"]
    ```

    Args:
        data: a `tfrecord_tools` directory with `train` and `test` splits (local or `gs://`),
            `cifar:DIR` (the CIFAR-10 python batches, converted once into `tfrecord_dir`), or a
            dict `{"train": (images, labels), "test": (images, labels)}`.
        work_dir: local or `gs://` directory for checkpoints, logs and the final model.
        tfrecord_dir: where `cifar:DIR` is converted (default `work_dir/tfrecords`).
        **overrides: any name of `DEFAULTS` (`batch_size`, `epochs`, `width`, ...). A new
            `batch_size` rescales `peak_learning_rate` by the linear rule.

    Returns:
        A `Recipe`.
    """
    if data is None:
        raise ValueError(
            "`data` must be a TFRecord directory, 'cifar:DIR' or a dict of arrays. "
            "Received: data=None"
        )
    hp = resolve_hyperparameters(
        DEFAULTS, overrides, recipe="cifar10_fast", scaled=("peak_learning_rate",)
    )
    if "epochs" in overrides and "peak_epoch" not in overrides:
        # A shorter or longer run keeps the triangle's shape: the peak at 5/24 of it.
        default_epochs, default_peak = DEFAULTS["epochs"].value, DEFAULTS["peak_epoch"].value
        hp = hp.replace(
            "peak_epoch",
            default_peak * hp["epochs"] / default_epochs,
            f"{default_peak} x {hp['epochs']}/{default_epochs}: {DEFAULTS['peak_epoch'].source}",
        )
    keras.utils.set_random_seed(hp["seed"])
    batch = hp["batch_size"]

    train, test = recipe_data(
        data,
        name="cifar10",
        work_dir=work_dir,
        tfrecord_dir=tfrecord_dir,
        train_split=hp["train_split"],
        test_split=hp["test_split"],
        batch_size=batch,
        eval_batch_size=hp["eval_batch_size"],
        seed=hp["seed"],
    )

    # Page's summed-loss hyperparameters -> batch-mean loss: lr * batch, wd / batch (exact).
    lr_peak, wd = summed_loss_to_mean_loss(
        hp["peak_learning_rate"] / batch, hp["weight_decay"] * batch, batch
    )
    # Page's triangle, PiecewiseLinear([0, 5, 24], [0, 0.4, 0]) in epochs, in steps (as
    # schedules.page_triangular), with the peak kept strictly inside very short runs.
    total = hp["epochs"] * train.steps_per_epoch
    if total < 2:
        fail("epochs", "enough for 2 steps or more (the schedule starts at 0)", hp["epochs"])
    peak = min(max(1, round(hp["peak_epoch"] * train.steps_per_epoch)), total - 1)
    schedule = PiecewiseLinear([0, peak, total], [0.0, lr_peak, 0.0])
    optimizer = keras.optimizers.SGD(schedule, momentum=hp["momentum"], nesterov=hp["nesterov"])

    network = models.resnet9(
        num_classes=hp["num_classes"],
        input_shape=(32, 32, 3),
        width=hp["width"],
        activation=hp["activation"],
        celu_alpha=hp["celu_alpha"],
        frozen_bn_scale=hp["frozen_bn_scale"],
        output_scale=hp["output_scale"],
    )
    # Coupled decay as PyTorch's SGD(weight_decay=wd) (through the momentum, on every
    # parameter, Page's `trainable_params()`): the loss term c * ||w||^2 with c = wd / 2.
    l2 = convert_weight_decay(wd, "coupled", "keras_l2")
    for variable in network.trainable_weights:
        variable.regularizer = keras.regularizers.L2(l2)

    seed = hp["seed"]
    normalize = augment.Normalize(hp["mean"], hp["std"])
    augmentation = [normalize]  # Page normalises first, then pads, crops, flips, cuts out
    if hp["padding"]:
        augmentation.append(augment.RandomPadCrop(hp["padding"], fill_mode="reflect", seed=seed))
    if hp["flip"]:
        augmentation.append(augment.RandomFlip(seed=seed + 1))
    if hp["cutout"]:
        # After Normalize, so the square is 0 in normalised units: the mean colour, as Page's.
        augmentation.append(augment.Cutout(hp["cutout"], fill_value=0.0, seed=seed + 2))
    ema = ExponentialMovingAverage(
        decay=hp["ema_decay"],
        every_n_steps=hp["ema_every_n_steps"],
        backup_dir=worker_backup_dir(work_dir),
    )
    return Recipe(
        name="cifar10_fast",
        network=network,
        preprocessing=[normalize],
        augmentation=augmentation,
        optimizer=optimizer,
        # Page's label_smoothing_loss: (1 - a) * CE + a * mean_k(-log p_k): the "uniform" form.
        loss=losses.LabelSmoothingCrossEntropy(hp["label_smoothing"], convention="uniform"),
        metrics=["accuracy"],
        train=train,
        validation_data=test,
        test_data=test,
        epochs=hp["epochs"],
        batch_size=batch,
        hparams=hp,
        ema=ema,
        tta={"flips": True} if hp["tta_flips"] else None,
        work_dir=work_dir,
    )
