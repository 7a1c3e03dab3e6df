"""Erasing augmentation: Cutout, a square erased at a random place in every image."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_tricks._checks import check_int, check_number
from keras_tricks.augment._base import (
    PACKAGE,
    RandomLayer,
    is_integer,
)
from keras_tricks.augment._kernels import (
    where_in_box,
)

__all__ = ["Cutout"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class Cutout(RandomLayer):
    """Erase a `size` x `size` square at a uniformly placed centre, clipped at the borders.

    DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with Cutout"
    (https://arxiv.org/abs/1708.04552). The centre may fall anywhere in the image, so squares near
    a border are partly outside and erase less (the paper's rule). Every image is erased (unlike
    `keras.layers.RandomErasing`, whose `factor` is a probability):

        cy, cx = randint(0, H), randint(0, W)                       # per image
        y0, x0 = cy - size // 2, cx - size // 2
        out[b, max(y0, 0):min(y0 + size, H), max(x0, 0):min(x0 + size, W)] = fill_value

    so the erased area is exactly `size**2` when the square lies inside the image.

    Args:
        size: side of the square in pixels (int >= 1); 8 for CIFAR-10 in Page's ResNet-9 runs,
            16 in the paper.
        fill_value: value written into the square (0: black for uint8 images, the mean for
            normalised images).
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import Cutout
    x = np.ones((2, 32, 32, 3), "float32")
    y = np.asarray(Cutout(size=8, seed=0)(x, training=True))
    assert (y == 0).sum(axis=(1, 2, 3)).max() <= 8 * 8 * 3
    ```
    """

    def __init__(
        self, size: int = 8, fill_value: float = 0.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        size = check_int("size", size, minimum=1)
        fill_value = check_number("fill_value", fill_value)
        super().__init__(seed=seed, **kwargs)
        self.size = size
        self.fill_value = fill_value

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image square centres `(B, 2)` (row, column), uniform over the pixels."""
        unit = keras.random.uniform((shape[0], 2), seed=self.seed_generator)
        extent = ops.cast(ops.stack([shape[1], shape[2]]), "float32")
        centres = ops.minimum(ops.floor(unit * extent), extent - 1.0)
        return {"centres": ops.cast(centres, "int32")}

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        dtype = images.dtype
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        start = transformation["centres"] - self.size // 2
        rows = ops.arange(ops.shape(images)[1], dtype="int32")[None]
        in_rows = (rows >= start[:, :1]) & (rows < start[:, :1] + self.size)
        if is_integer(dtype) and self.fill_value == 0 and None not in (height, width, channels):
            # Integers erased to 0: a multiply by a 0/1 mask on the (B, H, W * C) view (as in
            # `where_in_box`) is the cheapest pass.
            cols = ops.arange(width * channels, dtype="int32")[None] // channels
            keep_cols = (cols < start[:, 1:]) | (cols >= start[:, 1:] + self.size)
            keep = ops.maximum(
                ops.cast(ops.logical_not(in_rows), dtype)[:, :, None],
                ops.cast(keep_cols, dtype)[:, None, :],
            )
            flat = ops.reshape(images, (-1, height, width * channels))
            return ops.reshape(flat * keep, ops.shape(images))
        cols = ops.arange(ops.shape(images)[2], dtype="int32")[None]
        in_cols = (cols >= start[:, 1:]) & (cols < start[:, 1:] + self.size)
        # A select, not a multiply, so that inf/nan pixels are erased too.
        return where_in_box(in_rows, in_cols, ops.cast(self.fill_value, dtype), images)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"size": self.size, "fill_value": self.fill_value})
        return config
