"""Label-mixing augmentation: MixUp and CutMix, which change the labels with the images.

Every layer here has `mixes_labels = True` (the public marker that `keras_tricks.data` reads).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks._checks import check_int, check_number
from keras_tricks.augment._base import (
    PACKAGE,
    RandomLayer,
    float_dtype,
    is_integer,
    restore_dtype,
)
from keras_tricks.augment._kernels import (
    where_in_box,
)

__all__ = ["MixUp", "CutMix"]


class _LabelMixing(RandomLayer):
    """Shared label handling for MixUp/CutMix: one partner per image from a random permutation."""

    #: The public marker read by `keras_tricks.data.input_pipeline`: labels change too.
    mixes_labels = True
    #: The transformation entry `(B,)` that weighs each image's own label against its partner's.
    _label_weight = "lam"

    def __init__(
        self,
        alpha: float = 1.0,
        num_classes: int | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        alpha = check_number("alpha", alpha, positive=True)
        num_classes = check_int("num_classes", num_classes, minimum=2, allow_none=True)
        super().__init__(seed=seed, **kwargs)
        self.alpha = alpha
        self.num_classes = num_classes

    def _sample_lambda_and_partner(self, batch):
        gen = self.seed_generator
        lam = keras.random.beta((batch,), self.alpha, self.alpha, seed=gen)
        # argsort of iid uniforms is a uniformly random permutation and compiles under XLA.
        partner = ops.cast(ops.argsort(keras.random.uniform((batch,), seed=gen)), "int32")
        return ops.cast(lam, "float32"), partner

    def _prepare_labels(self, labels):
        if labels is None:
            return None
        labels = ops.convert_to_tensor(labels)
        if (
            is_integer(labels.dtype)
            and len(labels.shape) <= 2
            and (len(labels.shape) == 1 or labels.shape[-1] == 1)
        ):
            if self.num_classes is None:
                raise ValueError(
                    f"{type(self).__name__} mixes labels, so integer class ids need "
                    "`num_classes`; pass num_classes=K or one-hot labels."
                )
            return ops.one_hot(ops.reshape(labels, (-1,)), self.num_classes)
        return ops.cast(labels, "float32") if is_integer(labels.dtype) else labels

    def _mix_labels(self, labels, weight, partner):
        """`weight * labels + (1 - weight) * labels[partner]` with `weight` (B,)."""
        if labels is None:
            return None
        weight = ops.cast(weight, labels.dtype)[:, None]
        return weight * labels + (1.0 - weight) * ops.take(labels, partner, axis=0)

    def _augment(self, images, labels):
        labels = self._prepare_labels(labels)
        t = self.get_random_transformation(ops.shape(images))
        weight, partner = t[self._label_weight], t["partner"]
        return self.transform(images, t), self._mix_labels(labels, weight, partner)

    def _output_label_spec(self, labels):
        if is_integer(labels.dtype):
            return keras.KerasTensor((labels.shape[0], self.num_classes), dtype="float32")
        return labels

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "num_classes": self.num_classes})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MixUp(_LabelMixing):
    """Mix each image and its label with a random partner from the batch.

    Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"
    (https://arxiv.org/abs/1710.09412); one lambda per image (timm's "elem" mode, Keras's
    `MixUp`), the same lambda on image and label:

        lam = beta(alpha, alpha, shape=(B,)); partner = random_permutation(B)
        images = lam * images + (1 - lam) * images[partner]
        labels = lam * labels + (1 - lam) * labels[partner]

    Unlike `keras.layers.MixUp` it keeps the image dtype (integer images are rounded) and takes
    integer labels with `num_classes`.

    Args:
        alpha: Beta concentration (> 0); 0.2 for ImageNet in the paper and He et al.
        num_classes: K, to one-hot integer labels; None if labels are already one-hot/soft.
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import MixUp
    x = np.random.rand(4, 8, 8, 3).astype("float32")
    y = np.eye(4, dtype="float32")
    mixed_x, mixed_y = MixUp(alpha=0.2, seed=0)((x, y), training=True)
    assert np.allclose(np.asarray(mixed_y).sum(axis=1), 1.0)
    ```
    """

    def __init__(
        self,
        alpha: float = 0.2,
        num_classes: int | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(alpha=alpha, num_classes=num_classes, seed=seed, **kwargs)

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image `lam` `(B,)` ~ Beta(alpha, alpha) and `partner` indices `(B,)`."""
        lam, partner = self._sample_lambda_and_partner(shape[0])
        return {"lam": lam, "partner": partner}

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        dtype = images.dtype
        work = float_dtype(dtype)
        lam = ops.cast(transformation["lam"], work)[:, None, None, None]
        x = ops.cast(images, work)
        mixed = lam * x + (1.0 - lam) * ops.take(x, transformation["partner"], axis=0)
        return restore_dtype(mixed, dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CutMix(_LabelMixing):
    """Paste a random box from a partner image; mix labels by the exact pasted area.

    Yun et al. 2019, "CutMix" (https://arxiv.org/abs/1905.04899), box sampling as in the paper's
    code (`rand_bbox`): a box of side sqrt(1 - lam) times the image side, centre uniform over the
    pixels, clipped at the borders; the label weight is then recomputed from the clipped box, so
    it equals the fraction of pixels actually pasted (Keras's `CutMix` uses the unclipped,
    fractional box, which differs from the pixel mask):

        lam = beta(alpha, alpha); partner = random_permutation(B)
        cut_h, cut_w = int(H * sqrt(1 - lam)), int(W * sqrt(1 - lam))
        cy, cx = randint(0, H), randint(0, W)
        y0, y1 = clip(cy - cut_h // 2, 0, H), clip(cy + cut_h // 2, 0, H)   # same for x
        images[b, y0:y1, x0:x1] = images[partner[b], y0:y1, x0:x1]
        weight = 1 - (y1 - y0) * (x1 - x0) / (H * W)
        labels = weight * labels + (1 - weight) * labels[partner]

    Args:
        alpha: Beta concentration (> 0); 1.0 (uniform lam) in the paper.
        num_classes: K, to one-hot integer labels; None if labels are already one-hot/soft.
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import CutMix
    x = np.random.rand(4, 8, 8, 3).astype("float32")
    y = np.array([0, 1, 2, 3])
    mixed_x, mixed_y = CutMix(alpha=1.0, num_classes=4, seed=0)((x, y), training=True)
    assert mixed_y.shape == (4, 4)
    ```
    """

    _label_weight = "weight"  # the pasted fraction, not `lam`: the box is clipped at borders

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image boxes `(B, 4)` int32 (y0, x0, y1, x1), `partner`, `weight` and `lam` `(B,)`."""
        batch, height, width = shape[0], shape[1], shape[2]
        lam, partner = self._sample_lambda_and_partner(batch)
        cut = ops.sqrt(1.0 - lam)
        cut_h = ops.cast(ops.floor(cut * float(height)), "int32")
        cut_w = ops.cast(ops.floor(cut * float(width)), "int32")
        unit = keras.random.uniform((batch, 2), seed=self.seed_generator)
        cy = ops.cast(ops.minimum(ops.floor(unit[:, 0] * height), height - 1.0), "int32")
        cx = ops.cast(ops.minimum(ops.floor(unit[:, 1] * width), width - 1.0), "int32")
        y0 = ops.clip(cy - cut_h // 2, 0, height)
        y1 = ops.clip(cy + cut_h // 2, 0, height)
        x0 = ops.clip(cx - cut_w // 2, 0, width)
        x1 = ops.clip(cx + cut_w // 2, 0, width)
        area = ops.cast((y1 - y0) * (x1 - x0), "float32")
        weight = 1.0 - area / float(height * width)
        return {
            "boxes": ops.stack([y0, x0, y1, x1], axis=1),
            "partner": partner,
            "weight": weight,
            "lam": lam,
        }

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        boxes = transformation["boxes"]
        partners = ops.take(images, transformation["partner"], axis=0)
        rows = ops.arange(images.shape[1], dtype="int32")[None]
        cols = ops.arange(images.shape[2], dtype="int32")[None]
        in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 2:3])
        in_cols = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 3:4])
        return where_in_box(in_rows, in_cols, partners, images)
