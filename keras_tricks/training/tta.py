"""Test-time augmentation: average a classifier's predictions over flipped and shifted views."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_tricks._checks import check_bool, check_keywords, check_one_of, fail
from keras_tricks.training._common import check_classifier, check_logits, check_model

_AVERAGES = ("probabilities", "logits")
_FILL_MODES = ("reflect", "constant")
_DATA_FORMATS = ("channels_last", "channels_first")
_SHIFTS = (
    "a sequence of distinct, non-zero (dy, dx) pairs of integer pixel offsets (the unshifted "
    "view is always included)"
)


def _is_offset(value: Any) -> bool:
    # NumPy integers count (they register as numbers.Integral); bools do not.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_shifts(shifts: Any) -> tuple[tuple[int, int], ...]:
    """Return `shifts` as a tuple of (dy, dx) int pairs, or raise in the package's style."""
    try:
        pairs = [tuple(s) for s in shifts]
    except TypeError:  # not iterable, or an element that is not
        fail("shifts", _SHIFTS, shifts)
    for pair in pairs:
        if len(pair) != 2 or not all(_is_offset(v) for v in pair) or pair == (0, 0):
            fail("shifts", _SHIFTS, shifts)
    if len(set(pairs)) != len(pairs):
        fail("shifts", _SHIFTS, shifts)
    return tuple((int(dy), int(dx)) for dy, dx in pairs)


@keras.saving.register_keras_serializable(package="keras_tricks")
class TestTimeAugmentation(keras.Model):
    """Average a classifier over flipped and shifted copies of each image, in one forward pass.

    Test-time augmentation as in Krizhevsky et al. 2012 (averaging over flips and crops,
    https://papers.nips.cc/paper/4824) and Page's "How to train your ResNet" (flip TTA): every
    view of the batch is stacked into one batch of `num_views * batch` images, the wrapped model
    runs once, and the views' outputs are averaged:

    ```
    views = []
    for dy, dx in [(0, 0), *shifts]:
        views.append(shift(x, dy, dx))                 # content moves down dy, right dx
        if flips:
            views.append(shift(flip_left_right(x), dy, dx))  # pair order: see below
    out = model(concatenate(views))                    # one batched forward pass
    out = softmax(out) if average == "probabilities" else out
    y = sum(out[2 * i] + out[2 * i + 1] for i in range(len(views) // 2)) / len(views)
    ```

    With `flips=True` the output for `flip_left_right(x)` is bit-for-bit the output for `x`:
    each image and its mirror are stacked in a canonical order (whichever is smaller at the
    first pixel where they differ goes first), so a flipped input gives the very same batch,
    and each view is added to its mirror first (`a + b == b + a` exactly). Shifted pixels that
    come from outside the image are filled by reflection (as `augment.RandomPadCrop`) or zeros.

    The wrapped model is used as it is at call time, so with `ExponentialMovingAverage` call (or
    export) inside `ema.averaged()` to use the averaged weights. The graph has no Python-side
    state, so `export()` writes a SavedModel that serves the same averaged predictions.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_tricks.training import TestTimeAugmentation

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    tta = TestTimeAugmentation(model, flips=True, shifts=[(0, 2), (0, -2)])
    x = np.random.rand(4, 28, 28, 1).astype("float32")
    probs = tta.predict(x, verbose=0)                      # (4, 10), averaged over 6 views
    assert np.array_equal(probs, tta.predict(x[:, :, ::-1], verbose=0))
    ```

    Args:
        model: A classifier returning (batch, classes) logits (or probabilities, see
            `from_logits`) for images of shape (batch, height, width, channels) (or channels
            first, see `data_format`).
        flips: Add the left-right mirror image of every view.
        shifts: Extra (dy, dx) translations in pixels, besides the unshifted view.
        average: `"probabilities"` averages the softmax of each view and returns probabilities;
            `"logits"` averages the logits and returns logits.
        from_logits: Whether `model` returns logits (True) or probabilities (False; then only
            `average="probabilities"` is allowed, and the probabilities are averaged as given).
        fill_mode: `"reflect"` or `"constant"` (zeros) for the pixels a shift brings in.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        model: keras.Model,
        flips: bool = True,
        shifts: Sequence[Sequence[int]] = (),
        average: str = "probabilities",
        from_logits: bool = True,
        fill_mode: str = "reflect",
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_keywords(type(self), kwargs)  # first: a misspelt name leaves its default in place
        check_model("model", model)
        check_classifier("model", model)
        flips = check_bool("flips", flips)
        shifts = _check_shifts(shifts)
        average = check_one_of("average", average, _AVERAGES)
        from_logits = check_bool("from_logits", from_logits)
        if average == "logits" and not from_logits:
            # Only logits can be averaged as logits.
            fail("average", '"probabilities" when `from_logits=False`', average)
        fill_mode = check_one_of("fill_mode", fill_mode, _FILL_MODES)
        data_format = keras.config.image_data_format() if data_format is None else data_format
        data_format = check_one_of("data_format", data_format, _DATA_FORMATS)
        super().__init__(**kwargs)
        self.model = model
        self.flips = flips
        self.shifts = shifts
        self.average = average
        self.from_logits = from_logits
        self.fill_mode = fill_mode
        self.data_format = data_format

    @property
    def num_views(self) -> int:
        """Images the wrapped model sees per input image."""
        return (1 + len(self.shifts)) * (2 if self.flips else 1)

    def build(self, input_shape: Any) -> None:
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def _axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    @staticmethod
    def _mirror_pair(images, w_axis):
        """Each image and its mirror image, in an order that does not change when `images` flips.

        Numerics may depend on where an image sits in a batch (XLA on CPU gives results that
        differ in the last bit between the two halves), so summing the two views symmetrically
        is not enough for exact invariance. Instead each pair is put in a canonical order: the
        image first whose first pixel that differs from its mirror is the smaller. Flipping the
        input exactly negates `image - mirror`, so it swaps the order back and the model sees
        the very same batch.
        """
        mirrored = ops.flip(images, axis=w_axis)
        a, b = images, mirrored
        if "float" not in str(images.dtype):  # uint8 images: no wrap-around in the difference
            a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
        diff = ops.reshape(a - b, (ops.shape(images)[0], -1))
        size = diff.shape[1] if diff.shape[1] is not None else ops.shape(diff)[1]
        positions = ops.arange(size, dtype="int32")
        # First differing position per image (argmax's tie-breaking is not guaranteed on TF).
        first = ops.min(ops.where(ops.not_equal(diff, 0), positions[None, :], size), axis=1)
        first = ops.minimum(first, size - 1)  # a symmetric image: any order is the same batch
        value = ops.take_along_axis(diff, ops.expand_dims(first, 1), axis=1)
        swap = ops.reshape(ops.greater(value, 0), (-1, 1, 1, 1))
        return [ops.where(swap, mirrored, images), ops.where(swap, images, mirrored)]

    def views(self, images: Any) -> list[Any]:
        """The views, in the order they are stacked: each shift, then its mirrored version.

        With `flips`, each image and its mirror come in the canonical order of `_mirror_pair`.
        """
        h_axis, w_axis = self._axes()
        if len(images.shape) != 4:
            raise ValueError(
                "`inputs` of TestTimeAugmentation must be a batch of images, of rank 4. "
                f"Received: inputs with shape {images.shape}"
            )
        sources = self._mirror_pair(images, w_axis) if self.flips else [images]
        if not self.shifts:
            return sources
        pad = max(max(abs(dy), abs(dx)) for dy, dx in self.shifts)
        height, width = images.shape[h_axis], images.shape[w_axis]
        if height is None or width is None:
            height, width = ops.shape(images)[h_axis], ops.shape(images)[w_axis]
        elif self.fill_mode == "reflect" and pad >= min(height, width):
            raise ValueError(
                f"`shifts` must be smaller than the {height}x{width} images to be "
                f'reflect-filled (fill_mode="reflect"). Received: shifts={self.shifts!r}'
            )
        widths = [[0, 0]] * 4
        widths[h_axis] = widths[w_axis] = [pad, pad]
        padded = [ops.pad(s, widths, mode=self.fill_mode) for s in sources]

        def crop(t, dy, dx):
            # Output pixel (i, j) is input pixel (i - dy, j - dx): the content moves by (dy, dx).
            index = [slice(None)] * 4
            index[h_axis] = slice(pad - dy, pad - dy + height)
            index[w_axis] = slice(pad - dx, pad - dx + width)
            return t[tuple(index)]

        out = list(sources)
        for dy, dx in self.shifts:
            out.extend(crop(p, dy, dx) for p in padded)
        return out

    def call(self, inputs: Any, training: bool | None = False) -> Any:
        views = self.views(inputs)
        outputs = check_logits(
            "model", self.model(ops.concatenate(views, axis=0), training=training), self.model
        )
        num_classes = outputs.shape[-1]
        if self.average == "probabilities" and self.from_logits:
            outputs = ops.softmax(outputs, axis=-1)
        n = len(views)
        if self.flips:
            # (pairs, 2, batch, classes): a view plus its mirror first, so that flipping the input,
            # which swaps the two, gives the same sum bit for bit.
            pairs = ops.reshape(outputs, (n // 2, 2, -1, num_classes))
            total = ops.sum(pairs[:, 0] + pairs[:, 1], axis=0)
        else:
            total = ops.sum(ops.reshape(outputs, (n, -1, num_classes)), axis=0)
        return total / float(n)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, Any]:
        return (input_shape[0], self.model.compute_output_shape(input_shape)[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "flips": self.flips,
            "shifts": [list(s) for s in self.shifts],
            "average": self.average,
            "from_logits": self.from_logits,
            "fill_mode": self.fill_mode,
            "data_format": self.data_format,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TestTimeAugmentation:
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)
