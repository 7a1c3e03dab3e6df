"""tfrecord_tools: sharded TFRecords on local disk or gs://: conversion, verification, fast reading.

```python
import tfrecord_tools
tfrecord_tools.convert("idx:/usr/share/datasets/fashion-mnist", "/tmp/fmnist",
                       num_shards=8, num_workers=2, name="fashion_mnist")
tfrecord_tools.verify("/tmp/fmnist").ok                         # True
ds = tfrecord_tools.read_dataset("/tmp/fmnist", "train")        # (uint8 HWC image, int64 label)
```
"""

import ast as _ast
import importlib.metadata as _metadata
import os as _os
import sys as _sys

_DISTRIBUTION = "keras-tricks"
_UNKNOWN_VERSION = "0+unknown"


def _read_version() -> str:
    """The version of the keras-tricks distribution, which ships this package.

    It is written once, in `keras_tricks/_version.py`; this package must never import
    `keras_tricks`, so it reads it another way:
    1. `keras_tricks/_version.py` beside this package (a checkout, or an installed copy), read
       as text and parsed, never imported: what setuptools' `attr:` does when it builds;
    2. the installed distribution's metadata, `importlib.metadata.version("keras-tricks")`,
       where that file is missing (the package copied on its own);
    3. "0+unknown" (a PEP 440 local version) when neither exists.
    The file comes first because an editable install keeps the metadata of the day it was
    installed: after a version bump only the file is right until the next `pip install -e`.
    """
    here = _os.path.dirname(_os.path.abspath(__file__))
    path = _os.path.join(_os.path.dirname(here), "keras_tricks", "_version.py")
    try:
        with open(path, encoding="utf-8") as f:
            tree = _ast.parse(f.read(), path)
    except (OSError, SyntaxError):
        tree = None
    for node in tree.body if tree is not None else ():
        if (
            isinstance(node, _ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
            and isinstance(node.value, _ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    try:
        return _metadata.version(_DISTRIBUTION)
    except _metadata.PackageNotFoundError:
        return _UNKNOWN_VERSION


__version__ = _read_version()

# None of these modules imports TensorFlow at import time (they do inside their functions), so
# importing the package stays light for the writer's worker processes. No function shares its
# name with a submodule: `verify` lives in `verification`, `inspect` in `summary`.
from tfrecord_tools import summary as _summary  # noqa: E402
from tfrecord_tools import verification as _verification  # noqa: E402
from tfrecord_tools.lock import LockLostError, OutputLockedError  # noqa: E402
from tfrecord_tools.manifest import InvalidManifestError, read_manifest  # noqa: E402
from tfrecord_tools.options import ConversionOptions  # noqa: E402
from tfrecord_tools.reader import ShardMismatchError, read_dataset  # noqa: E402
from tfrecord_tools.sources import (  # noqa: E402
    CorruptImageError,
    UnsupportedImageError,
    open_source,
)
from tfrecord_tools.storage import StorageError  # noqa: E402
from tfrecord_tools.summary import inspect  # noqa: E402
from tfrecord_tools.verification import verify  # noqa: E402
from tfrecord_tools.writer import convert, convert_with_options, write_shards  # noqa: E402

__all__ = [
    "ConversionOptions",
    "CorruptImageError",
    "InvalidManifestError",
    "LockLostError",
    "OutputLockedError",
    "ShardMismatchError",
    "StorageError",
    "UnsupportedImageError",
    "convert",
    "convert_with_options",
    "inspect",
    "open_source",
    "read_dataset",
    "read_manifest",
    "verify",
    "write_shards",
    "__version__",
]

# Deprecated module paths of 0.1, kept so `from tfrecord_tools.inspect import format_summary` and
# `from tfrecord_tools.verify import VerifyResult` still import; use `tfrecord_tools.summary` and
# `tfrecord_tools.verification`. (`tfrecord_tools.inspect` / `.verify` are the functions.)
_sys.modules.setdefault("tfrecord_tools.inspect", _summary)
_sys.modules.setdefault("tfrecord_tools.verify", _verification)
