"""Argument checks shared by the model builders."""

from __future__ import annotations

import numbers
from typing import Any

from keras_tricks._checks import fail


def check_input_shape(input_shape: Any, min_size: int) -> tuple[Any, Any, int]:
    """`input_shape` as a channels-last (height, width, channels) tuple, or raise.

    Height and width may be None (any size) or integers >= `min_size`, the network's total
    downsampling; channels must be a positive integer.
    """
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        fail("input_shape", "a channels-last (height, width, channels) tuple", input_shape)
    height, width, channels = shape
    for dim in (height, width):
        if dim is not None and (
            isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < min_size
        ):
            fail(
                "input_shape",
                f"channels-last (height, width, channels) with height and width None or an "
                f"integer >= {min_size} (the network downsamples by {min_size})",
                input_shape,
            )
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        fail(
            "input_shape",
            "channels-last (height, width, channels) with channels (the last entry) a "
            "positive integer",
            input_shape,
        )
    return (
        None if height is None else int(height),
        None if width is None else int(width),
        int(channels),
    )
