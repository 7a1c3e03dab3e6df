"""Argument checks shared by the package: each raises a ValueError naming the argument and value."""

import math
import numbers


def check_number(name, value, *, positive=False, non_negative=False):
    """Return `value` as a float, or raise if it is not a real number (or not > 0 / >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"`{name}` must be a real number; received {name}={value!r}.")
    if positive and not value > 0:
        raise ValueError(f"`{name}` must be > 0; received {name}={value!r}.")
    if non_negative and not value >= 0:
        raise ValueError(f"`{name}` must be >= 0; received {name}={value!r}.")
    return float(value)


def check_int(name, value, *, minimum=1, allow_none=False):
    """Return `value` as an int, or raise if it is not an integer >= `minimum` (None if allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; received {name}={value!r}.")
    return int(value)
