"""Batch-vectorised image augmentation layers that run on the accelerator or in `tf.data`.

Every layer here is a `keras.layers.Layer` written with `keras.ops` and `keras.random` only, so it
runs inside a model on any backend (tested on TensorFlow and JAX) and inside a `tf.data` pipeline with
the TensorFlow backend. Each layer draws independent random parameters for every image of the
batch in one vectorised call (no per-image `map_fn`), and then applies them with a single index
gather, mask or 3x3 colour matrix per image: static shapes and no per-image loops, which is what
lets XLA fuse the whole augmentation into the compiled train step (David Page, "How to train
your ResNet", https://myrtle.ai/learn/how-to-train-your-resnet/: augment on the accelerator, a
batch at a time).

Shared behaviour:

- `training=False` (evaluation, `model.predict`) returns the input unchanged, except `Normalize`,
  which is preprocessing rather than augmentation and always applies, and `RandomResizedCrop`,
  which centre-crops and resizes so that the output shape does not change.
- The output has the input's dtype (`uint8`, `float32`, `float16`, ...); integer outputs are
  rounded and clipped to the dtype's range. `Normalize` returns floats.
- Inputs may be an image batch `(B, H, W, C)`, a single image `(H, W, C)`, an `(images, labels)`
  tuple or a dict with `"images"` (and `"labels"`) keys; the same structure is returned. Only
  `MixUp` and `CutMix` change the labels, which must then be one-hot or soft (float, `(B, K)`),
  or integer class ids with `num_classes` given.
- `seed` makes a layer reproducible: two layers built with the same seed produce the same
  sequence of outputs (`keras.random.SeedGenerator`).
- Each random layer exposes `get_random_transformation(shape)` (the per-image parameters) and
  `transform(images, transformation)` (apply them), like Keras's own image preprocessing layers.

Example:

```python
import numpy as np
import keras
from keras_tricks import augment

images = np.random.randint(0, 256, size=(8, 32, 32, 3), dtype="uint8")
pipeline = keras.Sequential([
    keras.Input((32, 32, 3), dtype="uint8"),  # else Sequential feeds float32 to the layers
    augment.RandomPadCrop(padding=4, seed=1),
    augment.RandomFlip(seed=2),
    augment.Cutout(size=8, seed=3),
])
out = pipeline(images, training=True)
assert out.shape == (8, 32, 32, 3) and out.dtype == "uint8"
```
"""

import math

import keras
import numpy as np
from keras import ops

__all__ = [
    "RandomPadCrop",
    "RandomFlip",
    "Cutout",
    "RandomResizedCrop",
    "ColorJitter",
    "PCALighting",
    "Normalize",
    "MixUp",
    "CutMix",
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

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

_PACKAGE = "keras_tricks"


def _check_number(name, value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a number; received {name}={value!r}.")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"`{name}` must be {bound}; received {name}={value!r}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}; received {name}={value!r}.")
    return value


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; received {name}={value!r}.")
    return int(value)


def _check_scale(scale):
    """`scale` (> 0) as a float, or None: the pixel value of "1.0" is then dtype-dependent."""
    if scale is None:
        return None
    return float(_check_number("scale", scale, 0.0, low_open=True))


def _pixel_scale(scale, dtype):
    """The pixel value of "1.0": `scale`, or 255 for integer dtypes and 1 for floats if None."""
    if scale is not None:
        return scale
    return 255.0 if _is_integer(dtype) else 1.0


def _check_range(name, value, low=None):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a pair (min, max) of numbers; received {name}={value!r}."
        )
    if value[0] > value[1] or (low is not None and value[0] <= low):
        allowed = f"{low} < min <= max" if low is not None else "min <= max"
        raise ValueError(f"`{name}` must satisfy {allowed}; received {name}={value!r}.")
    return (float(value[0]), float(value[1]))


def _dtype_name(dtype):
    return keras.backend.standardize_dtype(dtype)


def _is_integer(dtype):
    return "int" in _dtype_name(dtype)


def _restore_dtype(images, dtype):
    """Cast float `images` back to `dtype`, rounding and clipping for integer dtypes."""
    if _is_integer(dtype):
        info = np.iinfo(_dtype_name(dtype))
        images = ops.clip(ops.round(images), info.min, info.max)
    return ops.cast(images, dtype)


def _float_dtype(dtype):
    """The float dtype arithmetic on `dtype` images is done in (float16 stays float16)."""
    dtype = _dtype_name(dtype)
    return dtype if dtype in ("float16", "bfloat16", "float64") else "float32"


def _compiling_with_xla():
    """Whether the current trace is compiled by XLA (always on JAX; `jit_compile` on TF).

    Only picks between two equivalent formulations for speed: XLA fuses broadcast
    elementwise code into one pass, while TF's graph executor runs it op by op and prefers a
    matmul. The TF check reads TF's own XLA-context flag; any failure means "no".
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util

        if tf.executing_eagerly():
            return False
        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except Exception:  # private TF API moved: fall back to the matmul form
        return False


def _add_per_channel(images, values):
    """`images + values[:, None, None, :]` for per-image, per-channel `values` `(B, C)`.

    The values are tiled along a (B, H, W * C) view: TF's graph executor broadcasts a row of
    W * C values ~3x faster than C values; XLA compiles both to the same loop.
    """
    width, channels = images.shape[2], images.shape[3]
    if width is None or channels is None:
        return images + values[:, None, None, :]
    shape = ops.shape(images)
    flat = ops.reshape(images, (shape[0], -1, width * channels))
    return ops.reshape(flat + ops.tile(values, (1, width))[:, None, :], shape)


def _gather_pixels(images, rows, cols):
    """Batched `images[b, rows[b, i], cols[b, j]]` as one flat gather: (B,h,w,C).

    `rows` is (B, h) and `cols` is (B, w), int32 indices already inside the image.
    """
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1))
    flat_index = (b * height + rows[:, :, None]) * width + cols[:, None, :]
    out = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(flat_index, (-1,)), axis=0)
    return ops.reshape(out, (-1, rows.shape[1], cols.shape[1], channels))


def _take_rows(images, index):
    """Per-image row gather `images[b, index[b, i]]` of whole slices: (B, n, ...).

    Gathering contiguous slices is a memory copy, much cheaper than gathering pixels.
    """
    rest = tuple(images.shape[2:])
    b = ops.reshape(ops.arange(ops.shape(images)[0], dtype="int32"), (-1, 1))
    flat_index = ops.reshape(b * images.shape[1] + index, (-1,))
    out = ops.take(ops.reshape(images, (-1,) + rest), flat_index, axis=0)
    return ops.reshape(out, (-1, index.shape[1]) + rest)


def _where_in_box(in_rows, in_cols, inside, outside):
    """Per image, `inside` at pixels (i, j) with `in_rows[b, i] & in_cols[b, j]`, else `outside`.

    `in_rows` is (B, H) and `in_cols` (B, W) booleans; `inside` and `outside` are (B, H, W, C)
    images or scalars, at least one of them an image.
    """
    image = inside if len(inside.shape) == 4 else outside
    width, channels = image.shape[2], image.shape[3]
    if width is None or channels is None:
        mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
        return ops.where(mask, inside, outside)
    # A same-shape select on the (B, H, W * C) view: TF's graph executor is several times
    # slower on a select that broadcasts a (B, H, W, 1) mask over channels.
    mask = in_rows[:, :, None] & ops.repeat(in_cols, channels, axis=1)[:, None, :]
    shape = ops.shape(image)
    flat_shape = (-1, shape[1], width * channels)
    inside, outside = (
        ops.reshape(x, flat_shape) if len(x.shape) == 4 else x for x in (inside, outside)
    )
    return ops.reshape(ops.where(mask, inside, outside), shape)


class _Augmentation(keras.layers.Layer):
    """Shared input handling: tensors, (images, labels) tuples, dicts, single images, dtypes."""

    #: Whether the layer is preprocessing that applies even when `training=False`.
    _always_apply = False
    #: Whether the output shape differs from the input's: then `_inference` keeps shapes equal.
    _changes_shape = False

    def __init__(self, seed=None, **kwargs):
        # Keras would cast float16 inputs to the float32 policy; we keep the caller's dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None; received seed={seed!r}.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    # -- structure ---------------------------------------------------------------------------
    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            if "images" not in inputs:
                raise ValueError(
                    f"Dict inputs need an 'images' key; received keys {sorted(inputs)}."
                )
            return inputs["images"], inputs.get("labels"), "dict"
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise ValueError(
                    "Tuple inputs must be (images, labels); received a tuple of "
                    f"length {len(inputs)}."
                )
            return inputs[0], inputs[1], "tuple"
        return inputs, None, "tensor"

    @staticmethod
    def _pack(inputs, images, labels, kind):
        if kind == "dict":
            out = dict(inputs)
            out["images"] = images
            if labels is not None:
                out["labels"] = labels
            return out
        if kind == "tuple":
            return (images, labels)
        return images

    def call(self, inputs, training=True):
        images, labels, kind = self._unpack(inputs)
        if not training and not self._always_apply and not self._changes_shape:
            return inputs
        images = ops.convert_to_tensor(images)
        unbatched = len(images.shape) == 3
        if unbatched:
            images = images[None]
            if labels is not None:
                labels = ops.convert_to_tensor(labels)[None]
        if len(images.shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects images of shape (batch, height, width, "
                f"channels) or (height, width, channels); received shape {images.shape}."
            )
        if training or self._always_apply:
            images, labels = self._augment(images, labels)
        else:
            images = self._inference(images)
        if unbatched:
            images = images[0]
            if labels is not None:
                labels = labels[0]
        return self._pack(inputs, images, labels, kind)

    def _augment(self, images, labels):
        transformation = self.get_random_transformation(ops.shape(images))
        return self.transform(images, transformation), labels

    def _inference(self, images):
        return images

    # -- symbolic shapes ---------------------------------------------------------------------
    def _output_image_shape(self, shape):
        return tuple(shape)

    def _output_image_dtype(self, dtype):
        return dtype

    def compute_output_spec(self, inputs, training=True):
        images, labels, kind = self._unpack(inputs)
        shape = tuple(images.shape)
        if len(shape) == 3:
            out_shape = self._output_image_shape((None,) + shape)[1:]
        else:
            out_shape = self._output_image_shape(shape)
        out = keras.KerasTensor(out_shape, dtype=self._output_image_dtype(images.dtype))
        if labels is not None:
            labels = self._output_label_spec(labels)
        return self._pack(inputs, out, labels, kind)

    def _output_label_spec(self, labels):
        return labels

    def compute_output_shape(self, input_shape):
        return self._output_image_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomPadCrop(_Augmentation):
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

    def __init__(self, padding=4, fill_mode="reflect", fill_value=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.padding = _check_int("padding", padding, 0)
        if fill_mode not in self._FILL_MODES:
            raise ValueError(
                f"`fill_mode` must be one of {self._FILL_MODES}; received fill_mode={fill_mode!r}."
            )
        self.fill_mode = fill_mode
        self.fill_value = float(_check_number("fill_value", fill_value))

    def get_random_transformation(self, shape):
        """Per-image offsets into the padded image, each uniform in {0, ..., 2 * padding}."""
        offsets = keras.random.randint(
            (shape[0], 2), 0, 2 * self.padding + 1, dtype="int32", seed=self.seed_generator
        )
        return {"offsets": offsets}

    def _source_index(self, index, size):
        """Map an index into the padded axis (shifted by -padding) back into [0, size)."""
        if self.fill_mode == "reflect":
            index = ops.abs(index)
            return (size - 1) - ops.abs((size - 1) - index)
        if self.fill_mode == "symmetric":
            index = ops.where(index < 0, -index - 1, index)
            return ops.where(index >= size, 2 * size - 1 - index, index)
        return ops.clip(index, 0, size - 1)

    def transform(self, images, transformation):
        height, width = images.shape[1], images.shape[2]
        if self.fill_mode == "reflect" and self.padding >= min(height, width):
            raise ValueError(
                f"`padding` must be smaller than the image size for reflect padding; received "
                f"padding={self.padding} for images of size {height}x{width}."
            )
        offsets = transformation["offsets"] - self.padding
        rows = offsets[:, :1] + ops.arange(height, dtype="int32")[None]
        cols = offsets[:, 1:] + ops.arange(width, dtype="int32")[None]
        out = _gather_pixels(
            images, self._source_index(rows, height), self._source_index(cols, width)
        )
        if self.fill_mode == "constant":
            inside_rows = (rows >= 0) & (rows < height)
            inside_cols = (cols >= 0) & (cols < width)
            out = _where_in_box(inside_rows, inside_cols, out, ops.cast(self.fill_value, out.dtype))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {"padding": self.padding, "fill_mode": self.fill_mode, "fill_value": self.fill_value}
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomFlip(_Augmentation):
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

    def __init__(self, mode="horizontal", rate=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if mode not in self._MODES:
            raise ValueError(f"`mode` must be one of {self._MODES}; received mode={mode!r}.")
        self.mode = mode
        self.rate = float(_check_number("rate", rate, 0.0, 1.0))

    def get_random_transformation(self, shape):
        """Per-image booleans `(B, 2)`: flip left-right, flip up-down."""
        draws = keras.random.uniform((shape[0], 2), seed=self.seed_generator)
        flips = draws < self.rate
        use = np.array([self.mode != "vertical", self.mode != "horizontal"], dtype=bool)
        return {"flips": flips & use[None]}

    def transform(self, images, transformation):
        flips = transformation["flips"]
        xla = _compiling_with_xla()
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

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "rate": self.rate})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Cutout(_Augmentation):
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

    def __init__(self, size=8, fill_value=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.size = _check_int("size", size, 1)
        self.fill_value = float(_check_number("fill_value", fill_value))

    def get_random_transformation(self, shape):
        """Per-image square centres `(B, 2)` (row, column), uniform over the pixels."""
        unit = keras.random.uniform((shape[0], 2), seed=self.seed_generator)
        extent = ops.cast(ops.stack([shape[1], shape[2]]), "float32")
        centres = ops.minimum(ops.floor(unit * extent), extent - 1.0)
        return {"centres": ops.cast(centres, "int32")}

    def transform(self, images, transformation):
        dtype = images.dtype
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        start = transformation["centres"] - self.size // 2
        rows = ops.arange(ops.shape(images)[1], dtype="int32")[None]
        in_rows = (rows >= start[:, :1]) & (rows < start[:, :1] + self.size)
        if _is_integer(dtype) and self.fill_value == 0 and None not in (height, width, channels):
            # Integers erased to 0: a multiply by a 0/1 mask on the (B, H, W * C) view (as in
            # `_where_in_box`) is the cheapest pass.
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
        return _where_in_box(in_rows, in_cols, ops.cast(self.fill_value, dtype), images)

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "fill_value": self.fill_value})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomResizedCrop(_Augmentation):
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
        height,
        width,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        interpolation="bilinear",
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.height = _check_int("height", height, 1)
        self.width = _check_int("width", width, 1)
        self.scale = _check_range("scale", scale, low=0.0)
        self.ratio = _check_range("ratio", ratio, low=0.0)
        if interpolation not in self._INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {self._INTERPOLATIONS}; "
                f"received interpolation={interpolation!r}."
            )
        self.interpolation = interpolation

    def get_random_transformation(self, shape):
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

    def transform(self, images, transformation):
        dtype = images.dtype
        work = _float_dtype(dtype)
        boxes = transformation["boxes"]
        y0, y1, fy = self._axis_weights(boxes[:, 0], boxes[:, 2], self.height)
        x0, x1, fx = self._axis_weights(boxes[:, 1], boxes[:, 3], self.width)
        # Separable resize as two gathers of whole rows: columns first on the (B, W, H, C)
        # transpose, then rows; gathering slices is far cheaper than gathering pixels.
        cols = ops.transpose(images, (0, 2, 1, 3))
        if fx is None:
            out = _take_rows(ops.transpose(_take_rows(cols, x0), (0, 2, 1, 3)), y0)
            return out
        left = ops.cast(_take_rows(cols, x0), work)
        right = ops.cast(_take_rows(cols, x1), work)
        cols = left + (right - left) * ops.cast(fx, work)[:, :, None, None]
        rows = ops.transpose(cols, (0, 2, 1, 3))
        top = _take_rows(rows, y0)
        bottom = _take_rows(rows, y1)
        return _restore_dtype(top + (bottom - top) * ops.cast(fy, work)[:, :, None, None], dtype)

    def _output_image_shape(self, shape):
        return (shape[0], self.height, self.width, shape[-1])

    def get_config(self):
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ColorJitter(_Augmentation):
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

    def __init__(self, brightness=0.4, saturation=0.4, hue=0.4, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.brightness = float(_check_number("brightness", brightness, 0.0, 1.0))
        self.saturation = float(_check_number("saturation", saturation, 0.0))
        self.hue = float(_check_number("hue", hue, 0.0, 1.0))

    def get_random_transformation(self, shape):
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

    def matrices(self, transformation):
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

    def transform(self, images, transformation):
        dtype = images.dtype
        work = _float_dtype(dtype)
        m = ops.cast(self.matrices(transformation), work)
        x = ops.cast(images, work)
        if _compiling_with_xla():
            # out[..., d] = sum_c m[d, c] x[..., c] as three broadcast multiply-adds, which
            # XLA fuses with the neighbouring layers into one pass.
            m = m[:, None, None]  # (B, 1, 1, 3, 3)
            out = x[..., 0:1] * m[..., 0] + x[..., 1:2] * m[..., 1] + x[..., 2:3] * m[..., 2]
        else:
            shape = ops.shape(x)
            flat = ops.reshape(x, (shape[0], -1, 3))
            out = ops.reshape(ops.matmul(flat, ops.transpose(m, (0, 2, 1))), shape)
        return _restore_dtype(out, dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"brightness": self.brightness, "saturation": self.saturation, "hue": self.hue}
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PCALighting(_Augmentation):
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

    def __init__(self, alphastd=0.1, eigval=None, eigvec=None, scale=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.alphastd = float(_check_number("alphastd", alphastd, 0.0))
        eigval = IMAGENET_EIGVAL if eigval is None else eigval
        eigvec = IMAGENET_EIGVEC if eigvec is None else eigvec
        if np.shape(eigval) != (3,):
            raise ValueError(f"`eigval` must have 3 values; received eigval={eigval!r}.")
        if np.shape(eigvec) != (3, 3):
            raise ValueError(f"`eigvec` must be a 3x3 matrix; received eigvec={eigvec!r}.")
        self.eigval = tuple(float(v) for v in eigval)
        self.eigvec = tuple(tuple(float(v) for v in row) for row in eigvec)
        self.scale = _check_scale(scale)

    def get_random_transformation(self, shape):
        """Per-image `alpha` `(B, 3)`, normal with standard deviation `alphastd`."""
        alpha = keras.random.normal((shape[0], 3), stddev=self.alphastd, seed=self.seed_generator)
        return {"alpha": alpha}

    def transform(self, images, transformation):
        dtype = images.dtype
        work = _float_dtype(dtype)
        scale = _pixel_scale(self.scale, dtype)
        weighted = transformation["alpha"] * ops.convert_to_tensor(self.eigval, "float32")[None]
        rgb = ops.matmul(weighted, ops.transpose(ops.convert_to_tensor(self.eigvec, "float32")))
        noise = ops.cast(rgb * scale, work)
        return _restore_dtype(_add_per_channel(ops.cast(images, work), noise), dtype)

    def get_config(self):
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Normalize(_Augmentation):
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

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=None, **kwargs):
        kwargs.pop("seed", None)
        super().__init__(**kwargs)
        self.mean = tuple(float(v) for v in np.atleast_1d(mean))
        self.std = tuple(float(v) for v in np.atleast_1d(std))
        if not all(np.isfinite(self.mean)):
            raise ValueError(f"`mean` must be finite numbers; received mean={mean!r}.")
        if not all(v > 0 for v in self.std):
            raise ValueError(f"`std` must be > 0; received std={std!r}.")
        self.scale = _check_scale(scale)

    def _augment(self, images, labels):
        dtype = images.dtype
        work = _float_dtype(dtype)
        scale = _pixel_scale(self.scale, dtype)
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
        return _float_dtype(dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("seed", None)
        config.update({"mean": self.mean, "std": self.std, "scale": self.scale})
        return config


class _LabelMixing(_Augmentation):
    """Shared label handling for MixUp/CutMix: one partner per image from a random permutation."""

    #: The transformation entry `(B,)` that weighs each image's own label against its partner's.
    _label_weight = "lam"

    def __init__(self, alpha=1.0, num_classes=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.alpha = float(_check_number("alpha", alpha, 0.0, low_open=True))
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise ValueError(
                f"`num_classes` must be an int >= 2 or None; received num_classes={num_classes!r}."
            )
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
            _is_integer(labels.dtype)
            and len(labels.shape) <= 2
            and (len(labels.shape) == 1 or labels.shape[-1] == 1)
        ):
            if self.num_classes is None:
                raise ValueError(
                    f"{type(self).__name__} mixes labels, so integer class ids need "
                    "`num_classes`; pass num_classes=K or one-hot labels."
                )
            return ops.one_hot(ops.reshape(labels, (-1,)), self.num_classes)
        return ops.cast(labels, "float32") if _is_integer(labels.dtype) else labels

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
        if _is_integer(labels.dtype):
            return keras.KerasTensor((labels.shape[0], self.num_classes), dtype="float32")
        return labels

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "num_classes": self.num_classes})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
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

    def __init__(self, alpha=0.2, num_classes=None, seed=None, **kwargs):
        super().__init__(alpha=alpha, num_classes=num_classes, seed=seed, **kwargs)

    def get_random_transformation(self, shape):
        """Per-image `lam` `(B,)` ~ Beta(alpha, alpha) and `partner` indices `(B,)`."""
        lam, partner = self._sample_lambda_and_partner(shape[0])
        return {"lam": lam, "partner": partner}

    def transform(self, images, transformation):
        dtype = images.dtype
        work = _float_dtype(dtype)
        lam = ops.cast(transformation["lam"], work)[:, None, None, None]
        x = ops.cast(images, work)
        mixed = lam * x + (1.0 - lam) * ops.take(x, transformation["partner"], axis=0)
        return _restore_dtype(mixed, dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
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

    def get_random_transformation(self, shape):
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

    def transform(self, images, transformation):
        boxes = transformation["boxes"]
        partners = ops.take(images, transformation["partner"], axis=0)
        rows = ops.arange(images.shape[1], dtype="int32")[None]
        cols = ops.arange(images.shape[2], dtype="int32")[None]
        in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 2:3])
        in_cols = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 3:4])
        return _where_in_box(in_rows, in_cols, partners, images)
