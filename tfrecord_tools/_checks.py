"""Argument checks shared by tfrecord_tools and keras_tricks, in Keras's message style.

Every check raises a ValueError (in the constructor, before anything is stored) that names the
argument, says what is allowed and repeats what was received:

    `padding` must be an integer >= 0. Received: padding=-1

The same rules everywhere: `bool` is never accepted as a number (`True` is an `int` to Python, but
`alpha=True` is a mistake), NaN is never a valid number, and NumPy scalars count as numbers.
`check_keywords` / `suggest_keywords` turn a misspelt keyword into a hint naming the right one.

Standard library only, so importing it never imports NumPy or TensorFlow: NumPy scalars count as
numbers because NumPy registers them with the `numbers` ABCs (`numbers.Real`, `numbers.Integral`).
keras_tricks may import tfrecord_tools, never the reverse, so this one copy lives here and
`keras_tricks._checks` re-exports it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

__all__ = [
    "check_bool",
    "check_int",
    "check_keywords",
    "check_known",
    "check_number",
    "check_one_of",
    "check_range",
    "check_seed",
    "fail",
    "keyword_hint",
    "suggest_keywords",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def fail(name: str, allowed: str, value: Any, *, received_as: str | None = None) -> NoReturn:
    """Raise the package's ValueError: "`name` must be <allowed>. Received: name=<value!r>".

    `received_as` shows a part of the value instead, as Keras does for arrays and types:
    `fail("x", "...", x.shape, received_as="x.shape")` ends "Received: x.shape=(2, 3)".
    """
    raise ValueError(f"`{name}` must be {allowed}. Received: {received_as or name}={value!r}")


def _is_real(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and not math.isnan(float(value))
    )


def check_number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    non_negative: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    finite: bool = False,
) -> float:
    """Return `value` as a float, or raise unless it is a real number within the bounds.

    `positive` means `> 0`, `non_negative` `>= 0`; `minimum`/`maximum` are inclusive unless
    `min_open`/`max_open`. `finite` also rejects +-inf.
    """
    if positive:
        minimum, min_open = 0.0, True
    elif non_negative:
        minimum, min_open = 0.0, False
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if min_open else '>='} {minimum}")
    if maximum is not None:
        bounds.append(f"{'<' if max_open else '<='} {maximum}")
    kind = "a finite number" if finite else "a number"
    allowed = f"{kind} {' and '.join(bounds)}" if bounds else kind
    if not _is_real(value) or (finite and not math.isfinite(float(value))):
        fail(name, allowed, value)
    number = float(value)
    too_low = minimum is not None and (number < minimum or (min_open and number == minimum))
    too_high = maximum is not None and (number > maximum or (max_open and number == maximum))
    if too_low or too_high:
        fail(name, allowed, value)
    return number


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    allow_none: bool = False,
) -> Any:
    """Return `value` as an int (None if allowed and given), or raise unless an int >= minimum.

    `maximum`, when given, is an inclusive upper bound.
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and int(value) > maximum)
    ):
        allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        fail(name, allowed + (" or None" if allow_none else ""), value)
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Return `value`, or raise unless it is exactly True or False (not 1, not "yes")."""
    if not isinstance(value, bool):
        fail(name, "True or False", value)
    return value


def check_one_of(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Return `value`, or raise unless it equals one of `allowed` (bools only match bools)."""
    for option in allowed:
        # True == 1 to Python; here a bool only matches a bool.
        if isinstance(option, bool) is not isinstance(value, bool):
            continue
        try:
            if bool(option == value):
                return option
        except (TypeError, ValueError):  # e.g. an array, whose == is elementwise
            continue
    fail(name, f"one of {tuple(allowed)}", value)


def check_range(name: str, value: Any, *, low: float | None = None) -> tuple[float, float]:
    """Return a (min, max) pair of floats, or raise unless min <= max (and min > low if given)."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(_is_real(v) for v in value)
    ):
        fail(name, "a pair (min, max) of numbers", value)
    if value[0] > value[1] or (low is not None and value[0] <= low):
        rule = f"{low} < min <= max" if low is not None else "min <= max"
        fail(name, f"a pair (min, max) with {rule}", value)
    return (float(value[0]), float(value[1]))


def check_seed(name: str, value: Any) -> int | None:
    """Return `value`, or raise unless it is an integer (NumPy integers too) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, "an integer or None", value)
    return int(value)


def keyword_hint(owner: str, unknown: Iterable[str], accepted: Iterable[str]) -> str:
    """The message for unexpected keywords: each with the closest accepted name, then all."""
    accepted = sorted(set(accepted))
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
        # Else a name inside an accepted one ("mode" in "fill_mode"), or its initials ("lr").
        close = close or [a for a in accepted if key in a or a in key][:1]
        close = close or [a for a in accepted if "".join(w[:1] for w in a.split("_")) == key][:1]
        parts.append(f"`{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    return (
        f"{owner} got unexpected keyword argument(s) {', '.join(parts)}. "
        f"Accepted: {', '.join(accepted)}"
    )


def _parameter_names(func: Callable[..., Any]) -> set[str]:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in kinds and p.name != "self"}


def check_keywords(
    owner: type, kwargs: dict[str, Any], extra: Iterable[str] = ("input_dim", "input_shape")
) -> None:
    """Raise a ValueError with a close-match hint if `kwargs` holds a keyword no class accepts.

    For classes whose `__init__` passes `**kwargs` on to a Keras base (layers, optimizers): the
    accepted names are the named parameters of every `__init__` in `owner`'s MRO, plus `extra`
    (the ones Keras pops from `**kwargs` itself). Names it does not know are left to Keras.
    """
    accepted = set(extra)
    for klass in inspect.getmro(owner):
        if "__init__" in vars(klass):
            accepted |= _parameter_names(vars(klass)["__init__"])
    check_known(owner.__name__, kwargs, accepted)


def check_known(owner: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Raise a ValueError naming each name of `given` not in `accepted`, with a close match.

    For keyword overrides checked by hand (a recipe's hyperparameters, a config's keys).
    """
    accepted = set(accepted)
    unknown = [key for key in given if key not in accepted]
    if unknown:
        raise ValueError(keyword_hint(owner, unknown, accepted))


def suggest_keywords(func: _F) -> _F:
    """Decorator: a wrong keyword argument raises TypeError naming the closest accepted one.

    For functions (and `__init__`s) with a fixed signature, where Python's own TypeError says
    only "unexpected keyword argument". Calls with valid arguments are not changed.
    """
    names = _parameter_names(func)
    owner = func.__qualname__.removesuffix(".__init__")
    parameters = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise TypeError(f"{owner} takes **kwargs; use `check_keywords` instead.")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        unknown = [key for key in kwargs if key not in names]
        if unknown:
            raise TypeError(keyword_hint(f"{owner}()", unknown, names))
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
