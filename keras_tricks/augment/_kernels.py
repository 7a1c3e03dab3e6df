"""Batched pixel kernels shared by the augmentation layers: gathers, masked selects, XLA check.

Each works on a whole batch with static shapes, one gather or select per batch, so that XLA can
fuse it with its neighbours; several also pick a faster formulation for TF's graph executor (flat
`(B, H, W * C)` views), measured in `bench/augment.py`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def compiling_with_xla() -> bool:
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


def add_per_channel(images: Any, values: Any) -> Any:
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


def gather_pixels(images: Any, rows: Any, cols: Any) -> Any:
    """Batched `images[b, rows[b, i], cols[b, j]]` as one flat gather: (B,h,w,C).

    `rows` is (B, h) and `cols` is (B, w), int32 indices already inside the image.
    """
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1))
    flat_index = (b * height + rows[:, :, None]) * width + cols[:, None, :]
    out = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(flat_index, (-1,)), axis=0)
    return ops.reshape(out, (-1, rows.shape[1], cols.shape[1], channels))


def take_rows(images: Any, index: Any) -> Any:
    """Per-image row gather `images[b, index[b, i]]` of whole slices: (B, n, ...).

    Gathering contiguous slices is a memory copy, much cheaper than gathering pixels.
    """
    rest = tuple(images.shape[2:])
    b = ops.reshape(ops.arange(ops.shape(images)[0], dtype="int32"), (-1, 1))
    flat_index = ops.reshape(b * images.shape[1] + index, (-1,))
    out = ops.take(ops.reshape(images, (-1,) + rest), flat_index, axis=0)
    return ops.reshape(out, (-1, index.shape[1]) + rest)


def where_in_box(in_rows: Any, in_cols: Any, inside: Any, outside: Any) -> Any:
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
