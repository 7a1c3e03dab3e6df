"""He et al. 2019's ImageNet recipe: ResNet-50-D with the bag of tricks, from TFRecord shards.

Source of every value below: He, Zhang, Zhang, Zhang, Xie, Li, "Bag of Tricks for Image
Classification with Convolutional Neural Networks", CVPR 2019, https://arxiv.org/abs/1812.01187
(cited by section), and, where the paper is silent, the GluonCV ImageNet training script it was
run with
(https://github.com/dmlc/gluon-cv/blob/master/scripts/classification/imagenet/train_imagenet.py).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_tricks import augment, losses, models
from keras_tricks.optimizers import convert_weight_decay
from keras_tricks.precision import use_mixed_precision
from keras_tricks.recipes._recipe import Hyperparameter as H
from keras_tricks.recipes._recipe import Recipe, recipe_data, resolve_hyperparameters
from keras_tricks.schedules import Warmup

PAPER = "He et al. 2019 (https://arxiv.org/abs/1812.01187)"
GLUONCV = "GluonCV train_imagenet.py (the paper's code base)"

DEFAULTS = {
    "depth": H(50, f"{PAPER}, Sec. 2.1: ResNet-50"),
    "variant": H("d", f"{PAPER}, Sec. 4.3 / Fig. 2c: ResNet-D"),
    "zero_gamma": H(True, f"{PAPER}, Sec. 3.1: zero gamma in the last BN of each block"),
    "kernel_initializer": H("xavier", f"{PAPER}, Sec. 2.1: Xavier initialisation"),
    "num_classes": H(1000, f"{PAPER}, Sec. 2.1: ImageNet ILSVRC2012, 1000 classes"),
    "batch_size": H(1024, f"{PAPER}, Sec. 3.1 / Table 3: batch size 1024"),
    "learning_rate": H(0.4, f"{PAPER}, Sec. 3.1: 0.1 x b/256 (linear scaling), b = 1024"),
    "warmup_epochs": H(5, f"{PAPER}, Sec. 3.1: linear warmup over the first 5 epochs"),
    # Sec. 5.4 trains 200 epochs when mixup is on; 120 is the paper's baseline and cosine run.
    "epochs": H(120, f"{PAPER}, Sec. 2.1 and 5.1: 120 epochs (Sec. 5.4 uses 200 with mixup)"),
    "momentum": H(0.9, f"{PAPER}, Sec. 2.1: Nesterov accelerated gradient"),
    "nesterov": H(True, f"{PAPER}, Sec. 2.1: Nesterov accelerated gradient (NAG)"),
    # MXNet's SGD wd is coupled (added to the gradient before momentum).
    "weight_decay": H(1e-4, f"{GLUONCV}: --wd 0.0001 (MXNet SGD: coupled)"),
    "no_bias_decay": H(True, f"{PAPER}, Sec. 3.1: decay only conv/dense weights"),
    "label_smoothing": H(0.1, f"{PAPER}, Sec. 5.2: epsilon = 0.1, q = 1 - eps or eps/(K-1)"),
    "mixup_alpha": H(0.2, f"{PAPER}, Sec. 5.4: alpha = 0.2"),
    "precision": H("mixed_float16", f"{PAPER}, Sec. 3.2: FP16 training on V100"),
    "image_size": H(224, f"{PAPER}, Sec. 2.1: 224 x 224 crops"),
    "resize_size": H(256, f"{PAPER}, Sec. 2.1: validation resizes the shorter edge to 256"),
    "crop_scale": H((0.08, 1.0), f"{PAPER}, Sec. 2.1 step 2: area in [8%, 100%]"),
    "crop_ratio": H((3 / 4, 4 / 3), f"{PAPER}, Sec. 2.1 step 2: aspect ratio in [3/4, 4/3]"),
    "flip": H(True, f"{PAPER}, Sec. 2.1 step 3: horizontal flip with probability 0.5"),
    "color_jitter": H(0.4, f"{PAPER}, Sec. 2.1 step 4: hue, saturation, brightness x [0.6, 1.4]"),
    "pca_lighting": H(0.1, f"{PAPER}, Sec. 2.1 step 5: PCA noise ~ N(0, 0.1)"),
    "mean": H(
        (123.68, 116.779, 103.939), f"{PAPER}, Sec. 2.1 step 6: subtract 123.68, 116.779, 103.939"
    ),
    "std": H((58.393, 57.12, 57.375), f"{PAPER}, Sec. 2.1 step 6: divide by 58.393, 57.12, 57.375"),
    "train_split": H("train", "tfrecord_tools split name"),
    "eval_split": H("validation", "tfrecord_tools split name (tfds: imagenet2012 validation)"),
    "shuffle_buffer": H(
        10_000, "keras_tricks: tf.data shuffle buffer (tfrecord_tools writes shards shuffled)"
    ),
    "seed": H(0, "keras_tricks: seed of the initialisation, the shuffles and the augmentation"),
    "eval_batch_size": H(250, "keras_tricks: evaluation batch (no effect on results)"),
}


def _resize_and_centre_crop(size: int, crop: int):
    """`f(image, label)`: shorter side to `size` (bilinear), then the central `crop` square."""
    import tensorflow as tf

    def preprocess(image, label):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = float(size) / tf.reduce_min(shape)
        new = tf.cast(tf.round(shape * scale), tf.int32)
        resized = tf.image.resize(image, tf.maximum(new, size), method="bilinear")
        top = (tf.shape(resized)[0] - crop) // 2
        left = (tf.shape(resized)[1] - crop) // 2
        cropped = resized[top : top + crop, left : left + crop]
        image = tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)
        return tf.ensure_shape(image, (crop, crop, 3)), label

    return preprocess


def imagenet_resnet50(
    data: Any = None,
    *,
    work_dir: str | None = None,
    tfrecord_dir: str | None = None,
    **overrides: Any,
) -> Recipe:
    """He et al. 2019's ResNet-50-D ImageNet recipe with the bag of tricks.

    Paper: https://arxiv.org/abs/1812.01187 (Sections 2.1, 3.1, 3.2, 4.3, 5.1, 5.2, 5.4).

    ```
    lr(step)  = Warmup(CosineDecay(0.1 * b / 256, (epochs - 5) * steps), 5 * steps)  # b = 1024
    update    = NAG, momentum 0.9, L2 1e-4 (coupled) on conv/dense kernels only (no bias decay)
    loss      = cross-entropy with label smoothing 0.1 (q = 1 - eps, eps / (K - 1)), mixup 0.2
    network   = resnet_v1(50, "d", zero_gamma=True, Xavier init), mixed float16
    augment   = random-resized-crop 224, flip, colour jitter 0.4, PCA lighting 0.1, mean/std
    evaluate  = shorter side 256, centre crop 224
    ```

    The training images are first resized (shorter side `resize_size`) and centre-cropped to
    `resize_size` squares in `tf.data`, and the random-resized crop is taken from that square on
    the accelerator (a batch layer needs one size per batch); the paper crops the original
    image, which also reaches the corners a square drops.

    Example:

    ```python
    import numpy as np
    from keras_tricks.recipes import imagenet_resnet50
    x = np.random.randint(0, 256, (8, 80, 96, 3), "uint8"); y = np.arange(8) % 4
    recipe = imagenet_resnet50({"train": (x, y), "validation": (x, y)}, depth=18,
                               num_classes=4, image_size=32, resize_size=40, batch_size=4,
                               epochs=1, warmup_epochs=1, precision="float32")
    recipe.fit(verbose=0)
    ```

    Args:
        data: a `tfrecord_tools` directory (local or `gs://`) with `train` and `validation`
            splits, a raw source such as `folder:DIR` (converted once into `tfrecord_dir`), or
            a dict `{split: (images, labels)}`.
        work_dir: local or `gs://` directory for checkpoints, logs and the final model.
        tfrecord_dir: where a raw source is converted (default `work_dir/tfrecords`).
        **overrides: any name of `DEFAULTS`; a new `batch_size` rescales `learning_rate` by
            the linear rule (0.1 x b/256). `precision=None` chooses from the hardware
            (`keras_tricks.precision.use_mixed_precision`).

    Returns:
        A `Recipe`.
    """
    if data is None:
        raise ValueError(
            "`data` must be a TFRecord directory (local or gs://), 'folder:DIR' or a dict of "
            "arrays. Received: data=None"
        )
    hp = resolve_hyperparameters(DEFAULTS, overrides, recipe="imagenet_resnet50")
    keras.utils.set_random_seed(hp["seed"])
    size, resize = hp["image_size"], hp["resize_size"]
    seed = hp["seed"]

    mixup = [augment.MixUp(hp["mixup_alpha"], seed=seed + 10)] if hp["mixup_alpha"] else []
    train, evaluation = recipe_data(
        data,
        name="imagenet",
        work_dir=work_dir,
        tfrecord_dir=tfrecord_dir,
        train_split=hp["train_split"],
        test_split=hp["eval_split"],
        batch_size=hp["batch_size"],
        eval_batch_size=hp["eval_batch_size"],
        seed=seed,
        train_options={
            "preprocess": _resize_and_centre_crop(resize, resize),
            "label_mixing": mixup,
            "num_classes": hp["num_classes"],
            "one_hot": True,
            "cache": False,  # ImageNet does not fit in memory
            "shuffle_buffer": hp["shuffle_buffer"],
        },
        test_options={
            "preprocess": _resize_and_centre_crop(resize, size),
            "num_classes": hp["num_classes"],
            "cache": False,
        },
    )

    steps = train.steps_per_epoch
    warmup_steps = max(1, round(hp["warmup_epochs"] * steps))
    decay_steps = max(1, hp["epochs"] * steps - warmup_steps)
    # Sec. 5.1: eta_t = eta / 2 * (1 + cos(t pi / T)), T the batches after the warmup.
    cosine = keras.optimizers.schedules.CosineDecay(hp["learning_rate"], decay_steps, alpha=0.0)
    optimizer = keras.optimizers.SGD(
        Warmup(cosine, warmup_steps), momentum=hp["momentum"], nesterov=hp["nesterov"]
    )

    previous_policy = keras.config.dtype_policy()
    try:
        if hp["precision"] != "float32":
            use_mixed_precision(hp["precision"])
        policy = keras.config.dtype_policy().name
        network = models.resnet_v1(
            hp["depth"],
            hp["variant"],
            num_classes=hp["num_classes"],
            input_shape=(size, size, 3),
            zero_gamma=hp["zero_gamma"],
            kernel_initializer=hp["kernel_initializer"],
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if policy == "mixed_float16":
        # Sec. 3.2 (Micikevicius et al.): loss scaling. compile() adds it only when the compiled
        # model itself is mixed_float16; the training model around the network is not.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)

    # Coupled decay (MXNet/PyTorch SGD wd) is the loss term wd/2 * ||w||^2: an L2 regulariser.
    # No bias decay (Sec. 3.1): only conv and dense kernels, not BN gamma/beta or biases.
    l2 = convert_weight_decay(hp["weight_decay"], "coupled", "keras_l2")
    for variable in network.trainable_weights:
        name = variable.path.split("/")[-1]
        if not hp["no_bias_decay"] or name == "kernel":
            variable.regularizer = keras.regularizers.L2(l2)

    augmentation = [
        augment.RandomResizedCrop(size, size, hp["crop_scale"], hp["crop_ratio"], seed=seed)
    ]
    if hp["flip"]:
        augmentation.insert(0, augment.RandomFlip(seed=seed + 1))  # before the crop: faster
    if hp["color_jitter"]:
        c = hp["color_jitter"]
        augmentation.append(augment.ColorJitter(c, c, c, seed=seed + 2))
    if hp["pca_lighting"]:
        augmentation.append(augment.PCALighting(hp["pca_lighting"], seed=seed + 3))
    normalize = augment.Normalize([m / 255.0 for m in hp["mean"]], [s / 255.0 for s in hp["std"]])
    return Recipe(
        name="imagenet_resnet50",
        network=network,
        # Evaluation images are already 224 x 224 (resized in tf.data); training ones are the
        # larger squares the random-resized crop reduces. Normalize is the last step of both.
        preprocessing=[normalize],
        augmentation=[*augmentation, normalize],
        optimizer=optimizer,
        loss=losses.LabelSmoothingCrossEntropy(hp["label_smoothing"], convention="others"),
        metrics=["accuracy"],
        train=train,
        validation_data=None,
        test_data=evaluation,
        epochs=hp["epochs"],
        batch_size=hp["batch_size"],
        hparams=hp,
        ema=None,
        tta=None,
        work_dir=work_dir,
    )
