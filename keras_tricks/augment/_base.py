"""The base classes of the augmentation layers: input structures, dtypes, seeds.

`ImageLayer` handles what every layer shares (tensors, `(images, labels)` tuples, dicts, single
images, keeping the caller's dtype, symbolic shapes); `RandomLayer` adds the seed and the
`keras.random.SeedGenerator` for the layers that draw random numbers. Layers that draw nothing
(`Normalize`) carry no seed.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_tricks._checks import check_keywords, check_number, check_seed

PACKAGE = "keras_tricks"


def check_scale(scale: Any) -> float | None:
    """`scale` (> 0) as a float, or None: the pixel value of "1.0" is then dtype-dependent."""
    if scale is None:
        return None
    return check_number("scale", scale, positive=True)


def pixel_scale(scale: float | None, dtype: Any) -> float:
    """The pixel value of "1.0": `scale`, or 255 for integer dtypes and 1 for floats if None."""
    if scale is not None:
        return scale
    return 255.0 if is_integer(dtype) else 1.0


def dtype_name(dtype: Any) -> str:
    return keras.backend.standardize_dtype(dtype)


def is_integer(dtype: Any) -> bool:
    return "int" in dtype_name(dtype)


def restore_dtype(images: Any, dtype: Any) -> Any:
    """Cast float `images` back to `dtype`, rounding and clipping for integer dtypes."""
    if is_integer(dtype):
        info = np.iinfo(dtype_name(dtype))
        images = ops.clip(ops.round(images), info.min, info.max)
    return ops.cast(images, dtype)


def float_dtype(dtype: Any) -> str:
    """The float dtype arithmetic on `dtype` images is done in (float16 stays float16)."""
    dtype = dtype_name(dtype)
    return dtype if dtype in ("float16", "bfloat16", "float64") else "float32"


class ImageLayer(keras.layers.Layer):
    """Shared input handling: tensors, (images, labels) tuples, dicts, single images, dtypes."""

    #: Public marker: True for layers that change the labels too (MixUp, CutMix). Such a layer
    #: needs the labels, so `keras_tricks.data.input_pipeline` runs it in `tf.data`.
    mixes_labels = False
    #: Whether the layer is preprocessing that applies even when `training=False`.
    _always_apply = False
    #: Whether the output shape differs from the input's: then `_inference` keeps shapes equal.
    _changes_shape = False

    def __init__(self, **kwargs: Any) -> None:
        check_keywords(type(self), kwargs)
        # Keras would cast float16 inputs to the float32 policy; we keep the caller's dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    # -- structure ---------------------------------------------------------------------------
    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            if "images" not in inputs:
                raise ValueError(
                    f"Dict inputs need an 'images' key. Received: keys={sorted(inputs)}"
                )
            return inputs["images"], inputs.get("labels"), "dict"
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise ValueError(
                    "Tuple inputs must be (images, labels). Received: a tuple of "
                    f"length {len(inputs)}"
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

    def call(self, inputs: Any, training: bool = True) -> Any:
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
                f"channels) or (height, width, channels). Received: shape={images.shape}"
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

    def compute_output_spec(self, inputs: Any, training: bool = True) -> Any:
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

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self._output_image_shape(input_shape)


def _replica_id() -> Any:
    """The replica id inside a `tf.distribute` replica context of several replicas, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context.replica_id_in_sync_group


class PerReplicaSeedGenerator(keras.random.SeedGenerator):
    """A `keras.random.SeedGenerator` whose draws differ between `tf.distribute` replicas.

    Under `tf.distribute.MirroredStrategy` every replica reads the same mirrored seed state,
    so a plain `SeedGenerator` gives all replicas the same draws: each replica's share of the
    global batch would get the same crops, flips and boxes. Inside a replica context of
    several replicas the replica id is folded into the seed
    (`tf.random.experimental.stateless_fold_in`); everywhere else (one device, `tf.data`,
    JAX, whose sharded programs draw for the global batch) the seeds are unchanged.
    """

    def next(self, ordered: bool = True) -> Any:
        seed = super().next(ordered=ordered)
        replica = _replica_id()
        if replica is None:
            return seed
        import tensorflow as tf

        return tf.random.experimental.stateless_fold_in(seed, replica)


class RandomLayer(ImageLayer):
    """An `ImageLayer` that draws random numbers: a `seed` and its `keras.random.SeedGenerator`.

    Subclasses implement `get_random_transformation(shape)` (the per-image parameters) and
    `transform(images, transformation)` (apply them), like Keras's image preprocessing layers.
    """

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        seed = check_seed("seed", seed)
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = PerReplicaSeedGenerator(seed)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"seed": self.seed})
        return config
