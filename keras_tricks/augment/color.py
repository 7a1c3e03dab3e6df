"""Colour augmentation and preprocessing: colour jitter, PCA lighting, normalisation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks._checks import check_number, fail
from keras_tricks.augment._base import (
    PACKAGE,
    ImageLayer,
    RandomLayer,
    check_scale,
    float_dtype,
    pixel_scale,
    restore_dtype,
)
from keras_tricks.augment._kernels import (
    add_per_channel,
    compiling_with_xla,
)

# AlexNet's PCA of ImageNet RGB pixels in [0, 1] (Krizhevsky et al. 2012, sec. 4.1), the values
# fb.resnet.torch ships in datasets/imagenet.lua and uses in transforms.lua `Lighting`.
# Column j of IMAGENET_EIGVEC is the eigenvector of eigenvalue IMAGENET_EIGVAL[j].
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# Per-channel mean/std of ImageNet in [0, 1] (fb.resnet.torch, torchvision).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Rec. 601 luma weights: the grey image of fb.resnet.torch `Grayscale` / MXNet saturation jitter.
_LUMA = np.array([0.299, 0.587, 0.114])
# RGB -> YIQ as in MXNet's HueJitterAug (mxnet/image/image.py). MXNet rounds the inverse to 3
# decimals; we take the exact inverse so that a hue coefficient of 1 is exactly the identity.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)

__all__ = [
    "ColorJitter",
    "PCALighting",
    "Normalize",
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


def _numbers(name, value):
    """`value` (one number or a sequence of them) as a tuple of floats."""
    try:
        return tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype="float64")))
    except (TypeError, ValueError):
        fail(name, "a number or a sequence of numbers", value)


def _color_matrix(brightness, saturation, hue_angle):
    """Per-image 3x3 RGB matrices for the three jitters, each `(B, 3, 3)` float32."""
    eye = ops.eye(3, dtype="float32")[None]
    bright = brightness[:, None, None] * eye
    # Saturation: s * x + (1 - s) * grey(x), grey = luma . x on every channel.
    grey = ops.convert_to_tensor(np.ones((3, 1)) @ _LUMA[None], "float32")[None]
    sat = saturation[:, None, None] * eye + (1.0 - saturation)[:, None, None] * grey
    # Hue: rotate the chroma (I, Q) plane of YIQ by `hue_angle`.
    cos, sin = ops.cos(hue_angle), ops.sin(hue_angle)
    zero, one = ops.zeros_like(cos), ops.ones_like(cos)
    rotation = ops.stack(
        [
            ops.stack([one, zero, zero], axis=-1),
            ops.stack([zero, cos, -sin], axis=-1),
            ops.stack([zero, sin, cos], axis=-1),
        ],
        axis=1,
    )
    to_rgb = ops.convert_to_tensor(_YIQ_TO_RGB, "float32")[None]
    to_yiq = ops.convert_to_tensor(_RGB_TO_YIQ, "float32")[None]
    hue = ops.matmul(ops.matmul(to_rgb, rotation), to_yiq)
    return bright, sat, hue


@keras.saving.register_keras_serializable(package=PACKAGE)
class ColorJitter(RandomLayer):
    """Scale brightness, saturation and hue of each image by coefficients uniform in [1-x, 1+x].

    The colour augmentation of He et al. 2019, "Bag of Tricks for Image Classification with
    Convolutional Neural Networks" (https://arxiv.org/abs/1812.01187, sec. 2.1: coefficients in
    [0.6, 1.4]), with the operations of fb.resnet.torch `transforms.lua` (brightness, saturation)
    and MXNet `HueJitterAug` (hue), which the paper's GluonCV code used, applied in a random order
    per image (MXNet `ColorJitterAug` shuffles them). For an RGB pixel `p`:

        b, s, c = uniform(1 - brightness, 1 + brightness), uniform(1 - saturation, 1 + saturation),
                  uniform(1 - hue, 1 + hue)                                       # per image
        brightness:  p -> b * p
        saturation:  p -> s * p + (1 - s) * (0.299 R + 0.587 G + 0.114 B)      # blend with grey
        hue:         p -> YIQ_TO_RGB @ rot(theta) @ RGB_TO_YIQ @ p,  theta = (c - 1) * pi

    so the hue "coefficient" c rotates the hue by (c - 1) * 180 degrees around the grey axis in
    YIQ space (MXNet draws alpha = c - 1 uniform in [-hue, hue] and rotates by alpha * pi;
    hue=0.4 is +-72 degrees). All three are linear, so each image gets one 3x3 matrix and the
    batch is a single einsum. Brightness commutes with the other two; saturation and hue
    almost commute (exactly up to MXNet's YIQ rounding) and their order is drawn per image.

    Values are not clipped between steps (as in both references); integer images are rounded and
    clipped to their dtype's range at the end, float images are not clipped.

    Args:
        brightness: x >= 0 for the brightness coefficient range [1 - x, 1 + x]; 0 disables.
        saturation: x >= 0 for the saturation range; 0 disables.
        hue: x in [0, 1] for the hue coefficient range; 0 disables.
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import ColorJitter
    x = np.full((2, 8, 8, 3), 100, "uint8")
    y = ColorJitter(brightness=0.4, saturation=0.4, hue=0.4, seed=0)(x, training=True)
    assert y.dtype == "uint8"
    ```
    """

    def __init__(
        self,
        brightness: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.4,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        brightness = check_number("brightness", brightness, minimum=0.0, maximum=1.0)
        saturation = check_number("saturation", saturation, minimum=0.0)
        hue = check_number("hue", hue, minimum=0.0, maximum=1.0)
        super().__init__(seed=seed, **kwargs)
        self.brightness = brightness
        self.saturation = saturation
        self.hue = hue

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image coefficients `(B,)` and `saturation_first` booleans (the random order)."""
        draws = keras.random.uniform((shape[0], 4), seed=self.seed_generator)
        scales = ops.convert_to_tensor([self.brightness, self.saturation, self.hue], "float32")
        coefficients = 1.0 + (2.0 * draws[:, :3] - 1.0) * scales[None]
        return {
            "brightness": coefficients[:, 0],
            "saturation": coefficients[:, 1],
            "hue": coefficients[:, 2],
            "saturation_first": draws[:, 3] < 0.5,
        }

    def matrices(self, transformation: dict[str, Any]) -> Any:
        """The per-image RGB matrices `(B, 3, 3)`: out_pixel = M @ in_pixel."""
        bright, sat, hue = _color_matrix(
            transformation["brightness"],
            transformation["saturation"],
            (transformation["hue"] - 1.0) * math.pi,
        )
        sat_then_hue = ops.matmul(hue, sat)
        hue_then_sat = ops.matmul(sat, hue)
        first = transformation["saturation_first"][:, None, None]
        return ops.matmul(bright, ops.where(first, sat_then_hue, hue_then_sat))

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        dtype = images.dtype
        work = float_dtype(dtype)
        m = ops.cast(self.matrices(transformation), work)
        x = ops.cast(images, work)
        if compiling_with_xla():
            # out[..., d] = sum_c m[d, c] x[..., c] as three broadcast multiply-adds, which
            # XLA fuses with the neighbouring layers into one pass.
            m = m[:, None, None]  # (B, 1, 1, 3, 3)
            out = x[..., 0:1] * m[..., 0] + x[..., 1:2] * m[..., 1] + x[..., 2:3] * m[..., 2]
        else:
            shape = ops.shape(x)
            flat = ops.reshape(x, (shape[0], -1, 3))
            out = ops.reshape(ops.matmul(flat, ops.transpose(m, (0, 2, 1))), shape)
        return restore_dtype(out, dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"brightness": self.brightness, "saturation": self.saturation, "hue": self.hue}
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PCALighting(RandomLayer):
    """AlexNet "lighting" noise: add a random multiple of the RGB principal components.

    Krizhevsky et al. 2012 (https://papers.nips.cc/paper/4824, sec. 4.1), as fb.resnet.torch
    `transforms.lua` `Lighting` does it and He et al. 2019 (sec. 2.1) use it:

        alpha = normal(0, alphastd, shape=(3,))                       # per image
        rgb = eigvec @ (alpha * eigval)                               # (3,)
        out[b, :, :, c] = images[b, :, :, c] + scale * rgb[c]

    The default eigenvalues/vectors are ImageNet's for pixel values in [0, 1] (fb.resnet.torch
    `datasets/imagenet.lua`), hence `scale`: 255 for integer images, 1 for float images unless
    given.

    Args:
        alphastd: standard deviation of alpha (>= 0); 0.1 in AlexNet and He et al.
        eigval: 3 eigenvalues; `IMAGENET_EIGVAL` by default.
        eigvec: 3x3 matrix whose column j is the eigenvector of `eigval[j]`;
            `IMAGENET_EIGVEC` by default.
        scale: pixel value of "1.0"; None means 255 for integer dtypes and 1.0 for floats.
        seed: int or None.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import PCALighting
    x = np.full((2, 4, 4, 3), 0.5, "float32")
    y = PCALighting(alphastd=0.1, seed=0)(x, training=True)
    assert y.shape == x.shape
    ```
    """

    def __init__(
        self,
        alphastd: float = 0.1,
        eigval: Sequence[float] | None = None,
        eigvec: Sequence[Sequence[float]] | None = None,
        scale: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        alphastd = check_number("alphastd", alphastd, non_negative=True)
        eigval = IMAGENET_EIGVAL if eigval is None else eigval
        eigvec = IMAGENET_EIGVEC if eigvec is None else eigvec
        if np.shape(eigval) != (3,) or not np.isfinite(np.asarray(eigval, float)).all():
            fail("eigval", "3 finite numbers", eigval)
        if np.shape(eigvec) != (3, 3) or not np.isfinite(np.asarray(eigvec, float)).all():
            fail("eigvec", "a 3x3 matrix of finite numbers", eigvec)
        scale = check_scale(scale)
        super().__init__(seed=seed, **kwargs)
        self.alphastd = alphastd
        self.eigval = tuple(float(v) for v in eigval)
        self.eigvec = tuple(tuple(float(v) for v in row) for row in eigvec)
        self.scale = scale

    def get_random_transformation(self, shape: Any) -> dict[str, Any]:
        """Per-image `alpha` `(B, 3)`, normal with standard deviation `alphastd`."""
        alpha = keras.random.normal((shape[0], 3), stddev=self.alphastd, seed=self.seed_generator)
        return {"alpha": alpha}

    def transform(self, images: Any, transformation: dict[str, Any]) -> Any:
        dtype = images.dtype
        work = float_dtype(dtype)
        scale = pixel_scale(self.scale, dtype)
        weighted = transformation["alpha"] * ops.convert_to_tensor(self.eigval, "float32")[None]
        rgb = ops.matmul(weighted, ops.transpose(ops.convert_to_tensor(self.eigvec, "float32")))
        noise = ops.cast(rgb * scale, work)
        return restore_dtype(add_per_channel(ops.cast(images, work), noise), dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "alphastd": self.alphastd,
                "eigval": self.eigval,
                "eigvec": self.eigvec,
                "scale": self.scale,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Normalize(ImageLayer):
    """Per-channel standardisation `(x / scale - mean) / std`; applies in training and inference.

    Takes the standard deviation (torchvision / fb.resnet.torch convention), where
    `keras.layers.Normalization` takes the variance. Integer and float32 images give float32,
    float16/bfloat16 images keep their dtype.

    Args:
        mean: per-channel means (sequence) or one number, in units of `x / scale`;
            `IMAGENET_MEAN` by default.
        std: per-channel standard deviations (> 0); `IMAGENET_STD` by default.
        scale: inputs are divided by this first; None means 255 for integer dtypes, 1 for floats.

    Example:

    ```python
    import numpy as np
    from keras_tricks.augment import Normalize
    x = np.full((1, 2, 2, 3), 255, "uint8")
    y = np.asarray(Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(x))
    assert np.allclose(y, 1.0)
    ```
    """

    _always_apply = True

    def __init__(
        self,
        mean: float | Sequence[float] = IMAGENET_MEAN,
        std: float | Sequence[float] = IMAGENET_STD,
        scale: float | None = None,
        **kwargs: Any,
    ) -> None:
        # Normalize draws nothing, so it has no seed; `seed=` (accepted and ignored since 0.1.0)
        # still is, so configs and code that pass one keep working.
        kwargs.pop("seed", None)
        means = _numbers("mean", mean)
        stds = _numbers("std", std)
        if not all(math.isfinite(v) for v in means):
            fail("mean", "finite numbers", mean)
        if not all(v > 0 for v in stds):
            fail("std", "numbers > 0", std)
        scale = check_scale(scale)
        super().__init__(**kwargs)
        self.mean = means
        self.std = stds
        self.scale = scale

    def _augment(self, images, labels):
        dtype = images.dtype
        work = float_dtype(dtype)
        scale = pixel_scale(self.scale, dtype)
        channels, width = images.shape[-1], images.shape[-2]
        mean = np.asarray(self.mean, "float32")
        inv_std = 1.0 / np.asarray(self.std, "float32")
        # One multiply-add: (x / scale - mean) / std = x * (1 / (scale std)) - mean / std.
        mul, add = inv_std / scale, -mean * inv_std
        x = ops.cast(images, work)
        if mul.size == 1 and add.size == 1:
            return x * ops.convert_to_tensor(mul[0], work) + ops.convert_to_tensor(
                add[0], work
            ), labels
        if channels is None or width is None:
            return x * ops.convert_to_tensor(mul, work) + ops.convert_to_tensor(add, work), labels
        # Per-channel constants tiled along a (..., W * C) view: TF's graph executor broadcasts
        # a row of W * C values ~3x faster than a vector of C values (XLA: the same code).
        shape = ops.shape(x)
        mul = np.tile(np.broadcast_to(mul, (channels,)), width)
        add = np.tile(np.broadcast_to(add, (channels,)), width)
        flat = ops.reshape(x, (-1, width * channels))
        out = flat * ops.convert_to_tensor(mul, work) + ops.convert_to_tensor(add, work)
        return ops.reshape(out, shape), labels

    def _output_image_dtype(self, dtype):
        return float_dtype(dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std, "scale": self.scale})
        return config
