"""`ConversionOptions`: every setting of a conversion, checked once, frozen.

`tfrecord_tools.convert`, `write_shards`, `tfrecord_tools.beam.convert_beam` and the CLI all build
one `ConversionOptions` and hand it on; the plan, the writer, the worker processes and the Beam
pipeline read their settings from it (the workers get the picklable `EncodingOptions` part), so
an argument is checked in one place, with one message, before anything is read or written.

Example:

```python
from tfrecord_tools.options import ConversionOptions
options = ConversionOptions("/tmp/out", num_shards=8, compression="gzip", split="test")
options.compression, options.split      # ('GZIP', ('test',))
options.replace(seed=3).seed            # 3 (a new, checked object; options itself is frozen)
```
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from typing import Any

from tfrecord_tools._checks import check_int, check_one_of, fail
from tfrecord_tools.example import check_image_format, check_quality
from tfrecord_tools.manifest import check_name

__all__ = ["ConversionOptions", "EncodingOptions", "COMPRESSIONS", "ALPHA_MODES"]

COMPRESSIONS = (None, "GZIP")
# What a folder source does with an alpha channel (tfrecord_tools.sources.open_source(alpha=)):
# refuse the image, composite it over white, or keep RGBA.
ALPHA_MODES = ("error", "composite", "keep")


def _compression(value: Any) -> str | None:
    if value in (None, "", "none", "NONE", False):
        return None
    if value is True or (isinstance(value, str) and value.upper() in ("GZIP", "GZ")):
        return "GZIP"
    fail("compression", "None or 'GZIP'", value)


def _split_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(n).strip() for n in parts if str(n).strip())
    if not names:
        fail("split", "None or at least one split name ('train', 'train,test' or a list)", value)
    return names


@dataclasses.dataclass(frozen=True)
class EncodingOptions:
    """How a shard's records are encoded: all a worker process (or Beam worker) needs.

    Args:
        image_format: "png", "jpeg" or "raw" (`tfrecord_tools.example.encode_image`).
        quality: JPEG quality 1..100.
        compression: None or "GZIP".
        skip_corrupt: leave out unreadable image files instead of raising `CorruptImageError`.
    """

    image_format: str = "png"
    quality: int = 95
    compression: str | None = None
    skip_corrupt: bool = False


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
    """Every setting of one conversion, checked in the constructor (ValueError naming it).

    Args:
        output: local directory or `gs://bucket/dir`.
        split: convert only these splits (name, "a,b" or a list); None converts every split.
        num_shards: shards per split (int, or `{split: int}`); None picks ~10k records a shard.
        num_workers: encoding processes (1 = in the calling process; never more are started
            than there are shards to build).
        image_format: "png" (lossless, default), "jpeg" (with `quality`) or "raw".
        name: dataset name in shard file names; derived from the source when None.
        quality: JPEG quality 1..100.
        compression: None or "GZIP" (TFRecord compression; "gzip", True also accepted).
        seed: seed of the record shuffle before sharding.
        shuffle: False keeps the source order.
        skip_corrupt: leave out undecodable image files and list them in the manifest.
        label_names: class names (index = label) overriding the source's, or the name of a
            known dataset ("mnist", "fashion_mnist", "cifar10"; `sources.KNOWN_LABEL_NAMES`).
        overwrite: replace what in the output differs from this conversion (split by split;
            see `tfrecord_tools.plan.resolve`).
        progress: show a progress bar.
        alpha: what a folder source does with an alpha channel: "error" (refuse, naming the
            file), "composite" (over white) or "keep" (store RGBA).
    """

    output: str
    # Fields take what the constructor accepts; __post_init__ normalises them (the docstring
    # says to what: `split` becomes a tuple of names, `label_names` a tuple or a file name).
    split: str | Sequence[str] | None = None
    num_shards: int | Mapping[str, int] | None = None
    num_workers: int = 1
    image_format: str = "png"
    name: str | None = None
    quality: int = 95
    compression: str | None = None
    seed: int = 0
    shuffle: bool = True
    skip_corrupt: bool = False
    label_names: Sequence[str] | str | None = None
    overwrite: bool = False
    progress: bool = True
    alpha: str = "error"

    def __post_init__(self) -> None:
        def put(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)  # frozen: normalise once, here

        output = self.output
        if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
            fail("output", "a directory path or gs:// URL", output)
        put("output", os.fspath(output))
        put("split", _split_names(self.split))
        num_shards = self.num_shards
        if isinstance(num_shards, Mapping):
            checked = {str(k): check_int(f"num_shards[{k!r}]", v) for k, v in num_shards.items()}
            put("num_shards", types.MappingProxyType(checked))
        else:
            put("num_shards", check_int("num_shards", num_shards, allow_none=True))
        put("num_workers", check_int("num_workers", self.num_workers))
        check_image_format(self.image_format)
        check_quality(self.quality)
        put("quality", int(self.quality))
        put("compression", _compression(self.compression))
        put("seed", check_int("seed", self.seed, minimum=0))
        if self.name is not None:
            check_name(self.name, "name")
        if self.label_names is not None and not isinstance(self.label_names, str):
            names = self.label_names
            if not isinstance(names, Sequence):
                fail("label_names", "a list of class names or a known dataset's name", names)
            put("label_names", tuple(str(n) for n in names))
        check_one_of("alpha", self.alpha, ALPHA_MODES)
        for flag in ("shuffle", "skip_corrupt", "overwrite", "progress"):
            put(flag, bool(getattr(self, flag)))

    @property
    def encoding(self) -> EncodingOptions:
        """The part of the options a shard builder needs (sent to worker processes)."""
        return EncodingOptions(self.image_format, self.quality, self.compression, self.skip_corrupt)

    def shards_for(self, split: str) -> int | None:
        """The requested shard count of `split` (None: choose from its size)."""
        if isinstance(self.num_shards, Mapping):
            return self.num_shards.get(split)
        return self.num_shards

    def replace(self, **changes: Any) -> ConversionOptions:
        """A copy with `changes` applied, checked again."""
        return dataclasses.replace(self, **changes)
