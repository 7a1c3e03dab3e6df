"""tfrecord_tools: sharded TFRecord conversion to local disk or gs://, verification and fast reading.

```python
import tfrecord_tools
tfrecord_tools.convert("idx:/usr/share/datasets/fashion-mnist", "/tmp/fmnist",
                       num_shards=8, num_workers=2, name="fashion_mnist")
tfrecord_tools.verify("/tmp/fmnist").ok                         # True
ds = tfrecord_tools.read_dataset("/tmp/fmnist", "train")        # (uint8 HWC image, int64 label)
```
"""

__version__ = "0.1.0"

# None of these modules imports TensorFlow at import time (they do inside their functions), so
# importing the package stays light for the writer's worker processes. No function shares its
# name with a submodule: `verify` lives in `verification`, `inspect` in `summary`.
import sys as _sys  # noqa: E402

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
]

# Deprecated module paths of 0.1, kept so `from tfrecord_tools.inspect import format_summary` and
# `from tfrecord_tools.verify import VerifyResult` still import; use `tfrecord_tools.summary` and
# `tfrecord_tools.verification`. (`tfrecord_tools.inspect` / `.verify` are the functions.)
_sys.modules.setdefault("tfrecord_tools.inspect", _summary)
_sys.modules.setdefault("tfrecord_tools.verify", _verification)
