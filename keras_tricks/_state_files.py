"""Step-tagged state files, local or `gs://`, written atomically.

A checkpoint made of several files (Keras's weights file, the EMA state, augmentation random
state) cannot be written atomically as a whole; a kill between two of the writes would mix
steps. So each side state records the optimizer step it belongs to, and the previous one is
kept beside it (`{prefix}.npz`, `{prefix}.prev.npz`): whichever step the weights file holds
after a kill, its side state is still on disk, provided side states are written before the
weights (`keras_tricks.ema.ExponentialMovingAverage(backup_dir=)`,
`keras_tricks.recipes.ResumableBackup`).
"""

import contextlib
import io
import os

import numpy as np

__all__ = [
    "delete_step_states",
    "load_step_state",
    "save_step_state",
    "saved_steps",
    "write_file_atomic",
]


def _is_remote(path):
    return "://" in str(path)


def _gfile(path):
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - TF is installed wherever tests run
        raise ValueError(
            f"Writing to {path!r} needs TensorFlow's file system (tf.io.gfile); install "
            "tensorflow or use a local directory."
        ) from error
    return tf.io.gfile


def write_file_atomic(path, data):
    """Write `data` (bytes) to `path` so a reader sees the old or the new file, never a part.

    Locally a temporary file then `os.replace`; on `gs://` one object upload, which GCS makes
    visible only when complete.
    """
    path = os.fspath(path)
    if _is_remote(path):
        with _gfile(path).GFile(path, "wb") as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _join(directory, name):
    if _is_remote(directory):
        return f"{directory.rstrip('/')}/{name}"
    return os.path.join(directory, name)


def _exists(path):
    return _gfile(path).exists(path) if _is_remote(path) else os.path.exists(path)


def _read(path):
    if _is_remote(path):
        with _gfile(path).GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _state_files(directory, prefix):
    return _join(directory, f"{prefix}.npz"), _join(directory, f"{prefix}.prev.npz")


def _read_state(path):
    with np.load(io.BytesIO(_read(path))) as state:
        arrays = [state[f"array_{i}"] for i in range(int(state["num_arrays"]))]
        extra = {k[len("extra_") :]: state[k].item() for k in state.files if k.startswith("extra_")}
        return int(state["step"]), arrays, extra


def save_step_state(directory, prefix, step, arrays, extra=None):
    """Save `arrays` for optimizer step `step` as `directory/{prefix}.npz`, keeping the previous.

    The previous file becomes `{prefix}.prev.npz` (a rename), then the new one is written
    atomically; a kill at any point leaves the state of this step or of the one before.

    Args:
        directory: local or `gs://` directory (created if needed).
        prefix: file name, one per kind of state.
        step: the optimizer step the state belongs to.
        arrays: list of NumPy arrays.
        extra: optional dict of scalars stored with them.
    """
    directory = os.fspath(directory)
    current, previous = _state_files(directory, prefix)
    if _is_remote(directory):
        gfile = _gfile(directory)
        gfile.makedirs(directory)
        if gfile.exists(current):
            gfile.rename(current, previous, overwrite=True)
    else:
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(current):
            os.replace(current, previous)
    buffer = io.BytesIO()
    named = {f"array_{i}": a for i, a in enumerate(arrays)}
    named.update({f"extra_{k}": np.asarray(v) for k, v in (extra or {}).items()})
    np.savez(buffer, step=int(step), num_arrays=len(arrays), **named)
    write_file_atomic(current, buffer.getvalue())


def saved_steps(directory, prefix):
    """The steps whose state `save_step_state` left in `directory`, newest first."""
    return [
        _read_state(path)[0] for path in _state_files(os.fspath(directory), prefix) if _exists(path)
    ]


def load_step_state(directory, prefix, step, with_extra=False):
    """The arrays `save_step_state` saved at `step` (and its `extra` dict), or None if neither
    the current nor the previous file is of that step."""
    for path in _state_files(os.fspath(directory), prefix):
        if _exists(path):
            saved_step, arrays, extra = _read_state(path)
            if saved_step == int(step):
                return (arrays, extra) if with_extra else arrays
    return None


def delete_step_states(directory, prefix):
    """Remove the state files `save_step_state` wrote under `prefix`."""
    for path in _state_files(os.fspath(directory), prefix):
        # Best effort (a missing file is fine); tf.errors.NotFoundError is not an OSError.
        with contextlib.suppress(Exception):
            if _is_remote(path):
                _gfile(path).remove(path)
            else:
                os.remove(path)
