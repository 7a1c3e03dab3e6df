"""Argument checks of keras_tricks: a re-export of `tfrecord_tools._checks`.

One implementation serves both packages (keras_tricks may import tfrecord_tools, never the
reverse); keras_tricks code keeps importing `keras_tricks._checks`.
"""

from tfrecord_tools._checks import (
    check_bool,
    check_int,
    check_keywords,
    check_known,
    check_number,
    check_one_of,
    check_range,
    check_seed,
    fail,
    keyword_hint,
    suggest_keywords,
)

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
