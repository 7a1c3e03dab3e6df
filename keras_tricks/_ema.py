"""Alias of the former private module: `keras_tricks.ema` and `keras_tricks._state_files`.

`keras_tricks.recipes` and `tests/test_recipes_resume.py` still import the step-state helpers
from here; new code imports `keras_tricks.ema` (the EMA) and `keras_tricks._state_files`.
"""

from keras_tricks._state_files import (
    _exists,
    _is_remote,
    _join,
    _read,
    delete_step_states,
    load_step_state,
    save_step_state,
    saved_steps,
    write_file_atomic,
)
from keras_tricks.ema import ExponentialMovingAverage, ema_values, ema_variables

__all__ = [
    "ExponentialMovingAverage",
    "_exists",
    "_is_remote",
    "_join",
    "_read",
    "delete_step_states",
    "ema_values",
    "ema_variables",
    "load_step_state",
    "save_step_state",
    "saved_steps",
    "write_file_atomic",
]
