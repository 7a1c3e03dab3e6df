"""Geometric augmentation: per-image pad-and-crop, flips, random-resized (Inception) crops."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks._checks import check_int, check_number, check_one_of, check_range
from keras_tricks.augment._base import (
    PACKAGE,
    RandomLayer,
    float_dtype,
    restore_dtype,
)
from keras_tricks.augment._kernels import (
    compiling_with_xla,
    gather_pixels,
    take_rows,
    where_in_box,
)

__all__ = ["RandomPadCrop", "RandomFlip", "RandomResizedCrop"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomPadCrop(RandomLayer):
    """Pad each image by `padding` pixels, then crop back at a per-image uniform offset.

    The CIFAR-10 augmentation of He et al. (2016, https://arxiv.org/abs/1512.03385, sec. 4.2) and
    Page's fast CIFAR training (reflect padding). Unlike `keras.layers.RandomCrop`, which uses one
    offset for the whole batch, every image gets its own offset. The pad and the crop are done as
    one gather from the unpadded image: for output pixel (i, j) of image b,

        dy, dx = randint(0, 2 * padding + 1), randint(0, 2 * padding + 1)   # per image
        out[b, i, j] = padded[b, i + dy, j + dx]      # padded = np.pad(x, padding, fill_mode)

    Args:
        padding: pixels added on every side (int >= 0, < image size for "reflect").
        fill_mode: how the border is filled, as in `np.pad`: "reflect" (default; no edge
            repeat), "symmetric" (edge repeated), "edge" (nearest pixel) or "constant".
        fill_value: the value used by `fill_mode="constant"`.
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import RandomPadCrop
    x = np.zeros((4, 32, 32, 3), "uint8")
    y = RandomPadCrop(padding=4, seed=0)(x, training=True)
    assert y.shape == (4, 32, 32, 3)
    ```
    """

    _FILL_MODES = ("reflect", "symmetric", "edge", "constant")

    def __init__(
        self,
        padding: int = 4,
        fill_mode: str = "reflect",
        fill_value: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        padding = check_int("padding", padding, minimum=0)
        fill_mode = check_one_of("fill_mode", fill_mode, self._FILL_MODES)
        fill_value = check_number("fill_value", fill_value)
        super().__init__(seed=seed, **kwargs)
        self.padding = padding
        self.fill_mode = fill_mode
        self.fill_value = fill_value

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image offsets into the padded image, each uniform in {0, ..., 2 * padding}."""
        offsets = keras.random.randint(
            (shape[0], 2), 0, 2 * self.padding + 1, dtype="int32", seed=self.seed_generator
        )
        return {"offsets": offsets}

    def _source_index(self, index, size):
        """Map an index into the padded axis (shifted by -padding) back into [0, size).

        Reflect and symmetric padding are periodic extensions of the image (period 2 (size - 1)
        and 2 size), which is what `np.pad` gives for any padding: fold the index into one
        period, then mirror its second half. The fold keeps every index inside the image even
        when the padding is larger than the image (a bare mirror would not).
        """
        if self.fill_mode == "reflect":
            period = 2 * (size - 1)
            index = ops.mod(index, period)
            return ops.where(index < size, index, period - index)
        if self.fill_mode == "symmetric":
            period = 2 * size
            index = ops.mod(index, period)
            return ops.where(index < size, index, period - 1 - index)
        return ops.clip(index, 0, size - 1)

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        height, width = images.shape[1], images.shape[2]
        if self.fill_mode == "reflect" and self.padding >= min(height, width):
            raise ValueError(
                "`padding` must be smaller than the image size for reflect padding. "
                f"Received: padding={self.padding} for images of size {height}x{width}"
            )
        offsets = transformation["offsets"] - self.padding
        rows = offsets[:, :1] + ops.arange(height, dtype="int32")[None]
        cols = offsets[:, 1:] + ops.arange(width, dtype="int32")[None]
        out = gather_pixels(
            images, self._source_index(rows, height), self._source_index(cols, width)
        )
        if self.fill_mode == "constant":
            inside_rows = (rows >= 0) & (rows < height)
            inside_cols = (cols >= 0) & (cols < width)
            out = where_in_box(inside_rows, inside_cols, out, ops.cast(self.fill_value, out.dtype))
        return out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"padding": self.padding, "fill_mode": self.fill_mode, "fill_value": self.fill_value}
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomFlip(RandomLayer):
    """Flip each image independently with probability `rate`.

    Same semantics as `keras.layers.RandomFlip` (one Bernoulli draw per image), but keeps the
    input dtype (Keras casts to the float policy) and accepts (images, labels) tuples:

        flip = uniform(shape=(B,)) < rate
        out[b] = images[b, :, ::-1] if flip[b] else images[b]     # "horizontal"

    Args:
        mode: "horizontal" (left-right, the usual choice), "vertical", or
            "horizontal_and_vertical" (two independent draws).
        rate: probability of flipping each image, in [0, 1]; 0.5 by default.
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import RandomFlip
    x = np.arange(8, dtype="float32").reshape(2, 1, 4, 1)
    y = RandomFlip(rate=1.0)(x, training=True)
    assert (np.asarray(y) == x[:, :, ::-1]).all()
    ```
    """

    _MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(
        self,
        mode: str = "horizontal",
        rate: float = 0.5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        mode = check_one_of("mode", mode, self._MODES)
        rate = check_number("rate", rate, minimum=0.0, maximum=1.0)
        super().__init__(seed=seed, **kwargs)
        self.mode = mode
        self.rate = rate

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image booleans `(B, 2)`: flip left-right, flip up-down."""
        draws = keras.random.uniform((shape[0], 2), seed=self.seed_generator)
        flips = draws < self.rate
        use = np.array([self.mode != "vertical", self.mode != "horizontal"], dtype=bool)
        return {"flips": flips & use[None]}

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        flips = transformation["flips"]
        xla = compiling_with_xla()
        batch = ops.shape(images)[0]
        index = ops.arange(batch, dtype="int32")
        for axis, column in ((2, 0), (1, 1)):
            if (axis == 2 and self.mode == "vertical") or (axis == 1 and self.mode == "horizontal"):
                continue
            if xla:
                # XLA fuses the select with its neighbours into one pass.
                flipped = ops.flip(images, axis=axis)
                images = ops.where(flips[:, column, None, None, None], flipped, images)
            else:
                # TF's graph executor reverses the middle axis of a 3-D view 2-3x faster than
                # an axis of the 4-D batch.
                shape = ops.shape(images)
                view = (-1, shape[2], shape[3]) if axis == 2 else (shape[0], shape[1], -1)
                flipped = ops.reshape(ops.flip(ops.reshape(images, view), axis=1), shape)
                # One gather of whole images from [images, flipped] is ~2.5x faster than a
                # broadcast `where` (and a gather would make XLA recompute the producer of
                # `images` per element).
                both = ops.concatenate([images, flipped], axis=0)
                choice = index + batch * ops.cast(flips[:, column], "int32")
                images = ops.take(both, choice, axis=0)
        return images

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mode": self.mode, "rate": self.rate})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomResizedCrop(RandomLayer):
    """Crop a random area and aspect ratio of each image, resized to `height` x `width`.

    The Inception crop (Szegedy et al. 2015, https://arxiv.org/abs/1409.4842) as torchvision's
    `RandomResizedCrop.get_params` samples it, vectorised: all 10 tries of every image are drawn
    at once and the first valid one is kept.

        for _ in range(10):
            area = H * W * uniform(*scale)
            aspect = exp(uniform(log(ratio[0]), log(ratio[1])))
            w, h = round(sqrt(area * aspect)), round(sqrt(area / aspect))
            if 0 < w <= W and 0 < h <= H:
                top, left = randint(0, H - h + 1), randint(0, W - w + 1)
                break
        else:  # fall back to a centre crop with the aspect clamped into `ratio`
            if W / H < ratio[0]:   w, h = W, round(W / ratio[0])
            elif W / H > ratio[1]: w, h = round(H * ratio[1]), H
            else:                  w, h = W, H
            top, left = (H - h) // 2, (W - w) // 2

    The crop is resized with separable bilinear (or nearest) interpolation on half-pixel
    centres, the same values as `tf.image.resize(crop, (height, width), antialias=False)`.
    Images of one batch share one size; resize them to a common size in the fixed
    preprocessing first (e.g. shorter side 256 + centre crop).

    Args:
        height: output height.
        width: output width.
        scale: (min, max) fraction of the image area, 0 < min <= max; (0.08, 1.0) by default.
        ratio: (min, max) aspect ratio w / h, sampled log-uniformly; (3/4, 4/3) by default.
        interpolation: "bilinear" (default) or "nearest".
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import RandomResizedCrop
    x = np.zeros((2, 64, 48, 3), "uint8")
    y = RandomResizedCrop(32, 32, seed=0)(x, training=True)
    assert y.shape == (2, 32, 32, 3) and y.dtype == "uint8"
    ```

    Under XLA put `RandomFlip` before this layer rather than after: the distribution is the
    same (the crop's left edge is uniform, so mirrored boxes are as likely), and XLA on CPU
    fuses a flip that consumes the crop's gathers badly (~10x slower, `bench/augment.py`).

    When `training=False` the output keeps its shape: the largest centred crop with the output's
    aspect ratio, resized to `height` x `width` (as `keras.layers.Resizing(height, width,
    crop_to_aspect_ratio=True)`); for the ImageNet "resize 256, centre crop 224" evaluation, do
    that in the fixed preprocessing and give the model 224 x 224 images.
    """

    _TRIES = 10
    _INTERPOLATIONS = ("bilinear", "nearest")
    _changes_shape = True

    def __init__(
        self,
        height: int,
        width: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bilinear",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        height = check_int("height", height, minimum=1)
        width = check_int("width", width, minimum=1)
        scale = check_range("scale", scale, low=0.0)
        ratio = check_range("ratio", ratio, low=0.0)
        interpolation = check_one_of("interpolation", interpolation, self._INTERPOLATIONS)
        super().__init__(seed=seed, **kwargs)
        self.height = height
        self.width = width
        self.scale = scale
        self.ratio = ratio
        self.interpolation = interpolation

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image crop boxes: int32 `(B, 4)` rows of (top, left, crop_height, crop_width)."""
        batch, in_h, in_w = shape[0], shape[1], shape[2]
        in_hf, in_wf = float(in_h), float(in_w)
        tries = (batch, self._TRIES)
        gen = self.seed_generator
        area = in_hf * in_wf * keras.random.uniform(tries, self.scale[0], self.scale[1], seed=gen)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = ops.exp(keras.random.uniform(tries, log_lo, log_hi, seed=gen))
        # Python's round() in torchvision rounds half to even, like ops.round.
        w = ops.round(ops.sqrt(area * aspect))
        h = ops.round(ops.sqrt(area / aspect))
        valid = (w > 0) & (w <= in_wf) & (h > 0) & (h <= in_hf)
        # The first valid try: argmax of a boolean picks the first True.
        first = ops.argmax(ops.cast(valid, "int32"), axis=1)
        pick = ops.one_hot(first, self._TRIES, dtype="float32")
        any_valid = ops.any(valid, axis=1)
        w = ops.sum(w * pick, axis=1)
        h = ops.sum(h * pick, axis=1)
        unit = keras.random.uniform((batch, 2), seed=gen)
        top = ops.minimum(ops.floor(unit[:, 0] * (in_hf - h + 1.0)), in_hf - h)
        left = ops.minimum(ops.floor(unit[:, 1] * (in_wf - w + 1.0)), in_wf - w)

        in_ratio = in_wf / in_hf
        if in_ratio < self.ratio[0]:
            fw, fh = in_wf, float(round(in_wf / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = float(round(in_hf * self.ratio[1])), in_hf
        else:
            fw, fh = in_wf, in_hf
        fallback = [(in_h - int(fh)) // 2, (in_w - int(fw)) // 2, fh, fw]
        boxes = ops.stack([top, left, h, w], axis=1)
        boxes = ops.where(any_valid[:, None], boxes, ops.convert_to_tensor(fallback, "float32"))
        return {"boxes": ops.cast(boxes, "int32")}

    def _inference(self, images):
        in_h, in_w = images.shape[1], images.shape[2]
        target = self.width / self.height
        if in_w / in_h > target:
            h, w = in_h, min(in_w, int(round(in_h * target)))
        else:
            h, w = min(in_h, int(round(in_w / target))), in_w
        box = ops.convert_to_tensor([[(in_h - h) // 2, (in_w - w) // 2, h, w]], "int32")
        boxes = ops.broadcast_to(box, (ops.shape(images)[0], 4))
        return self.transform(images, {"boxes": boxes})

    def _axis_weights(self, start, length, out_size):
        """Source indices and lerp weights along one axis for every image: (B, out_size)."""
        start = ops.cast(start, "float32")[:, None]
        length = ops.cast(length, "float32")[:, None]
        dst = ops.arange(out_size, dtype="float32")[None] + 0.5
        if self.interpolation == "nearest":
            # Half-pixel nearest neighbour, as tf.image.resize "nearest".
            idx = ops.minimum(ops.floor(dst * (length / out_size)), length - 1.0) + start
            return ops.cast(idx, "int32"), None, None
        src = ops.clip(dst * (length / out_size) - 0.5, 0.0, length - 1.0) + start
        low = ops.floor(src)
        high = ops.minimum(low + 1.0, start + length - 1.0)
        return ops.cast(low, "int32"), ops.cast(high, "int32"), src - low

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        dtype = images.dtype
        work = float_dtype(dtype)
        boxes = transformation["boxes"]
        y0, y1, fy = self._axis_weights(boxes[:, 0], boxes[:, 2], self.height)
        x0, x1, fx = self._axis_weights(boxes[:, 1], boxes[:, 3], self.width)
        # Separable resize as two gathers of whole rows: columns first on the (B, W, H, C)
        # transpose, then rows; gathering slices is far cheaper than gathering pixels.
        cols = ops.transpose(images, (0, 2, 1, 3))
        if fx is None:
            out = take_rows(ops.transpose(take_rows(cols, x0), (0, 2, 1, 3)), y0)
            return out
        left = ops.cast(take_rows(cols, x0), work)
        right = ops.cast(take_rows(cols, x1), work)
        cols = left + (right - left) * ops.cast(fx, work)[:, :, None, None]
        rows = ops.transpose(cols, (0, 2, 1, 3))
        top = take_rows(rows, y0)
        bottom = take_rows(rows, y1)
        return restore_dtype(top + (bottom - top) * ops.cast(fy, work)[:, :, None, None], dtype)

    def _output_image_shape(self, shape):
        return (shape[0], self.height, self.width, shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "scale": self.scale,
                "ratio": self.ratio,
                "interpolation": self.interpolation,
            }
        )
        return config
