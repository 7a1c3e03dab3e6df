"""Build one shard: decode, encode, frame as TFRecord, optionally GZIP, hash — streamed to a file.

A shard is written record by record into an open binary file (`build_shard(payload, encoding,
sink)`): nothing but the current image and a small statistics buffer is held in memory, so a
worker's peak memory does not grow with the shard (the previous design kept every decoded image
and the whole shard's bytes, ~10x the shard size). The sha256 and size are those of the bytes as
stored (after GZIP), computed as they stream out.

Framing (as `tf.io.TFRecordWriter` writes it, tensorflow/core/lib/io/record_writer.cc)::

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
    masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8   (mod 2**32)

GZIP output equals `gzip.compress(tfrecord_bytes, compresslevel=6, mtime=0)` byte for byte (a
10-byte header with mtime 0, a raw deflate stream, CRC-32 and size), so the bytes of every shard
depend only on its records and the encoding options.

This module imports NumPy, zlib, google-crc32c and (for JPEG or image files) Pillow, never
TensorFlow: the worker processes and Beam workers that import it start fast.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from tfrecord_tools import manifest as mf
from tfrecord_tools.example import serialize_example
from tfrecord_tools.options import EncodingOptions
from tfrecord_tools.storage import open_write, remove_quietly, storage_error

__all__ = ["frame_record", "build_shard", "write_shard", "ShardResult", "PixelStatsAccumulator"]

PROGRESS_EVERY = 256  # records between progress callbacks
# Pixels are summed in blocks of at most this many bytes: vectorised, and the int64 copy a
# block needs (8x its bytes, 512 KiB) stays small whatever the image or shard size.
_STATS_BLOCK_BYTES = 1 << 16
# The header gzip.compress(..., compresslevel=6, mtime=0) writes: magic, deflate, no flags,
# mtime 0, XFL 0, OS 255 ("unknown").
_GZIP_HEADER = gzip.compress(b"", compresslevel=6, mtime=0)[:10]


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(record: bytes) -> bytes:
    """Frame one serialised record as TFRecord: uint64 length, masked CRC of the length, the data,
    masked CRC of the data (all little-endian), as `tf.io.TFRecordWriter` writes it.

    Example:

    ```python
    from tfrecord_tools.shard import frame_record
    len(frame_record(b"abc"))  # 8 + 4 + 3 + 4 = 19
    ```
    """
    length = struct.pack("<Q", len(record))
    return b"".join(
        (
            length,
            struct.pack("<I", _masked_crc32c(length)),
            record,
            struct.pack("<I", _masked_crc32c(record)),
        )
    )


class PixelStatsAccumulator:
    """Exact per-channel pixel sums (`manifest.pixel_stats` format), added one image at a time.

    Images are buffered up to 64 KiB and summed in vectorised int64 passes of at most 64 KiB of
    pixels, so the extra memory is bounded by the block, not by the image or the shard (`sum`,
    `sum_sq` stay exact Python integers).
    """

    def __init__(self) -> None:
        self._pending: list[np.ndarray] = []
        self._pending_bytes = 0
        self._parts: list[dict] = []

    def add(self, image: np.ndarray) -> None:
        img = image[:, :, None] if image.ndim == 2 else image
        self._pending.append(img.reshape(-1, img.shape[-1]))
        self._pending_bytes += img.nbytes
        if self._pending_bytes >= _STATS_BLOCK_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        by_channels: dict[int, list[np.ndarray]] = {}
        for flat in self._pending:
            by_channels.setdefault(flat.shape[1], []).append(flat)
        for channels, group in by_channels.items():
            pixels = group[0] if len(group) == 1 else np.concatenate(group)
            rows = max(1, _STATS_BLOCK_BYTES // channels)
            for start in range(0, pixels.shape[0], rows):
                block = pixels[start : start + rows].astype(np.int64)
                self._parts.append(
                    {
                        "count": int(block.shape[0]),
                        "sum": [int(v) for v in block.sum(axis=0)],
                        "sum_sq": [int(v) for v in np.einsum("ij,ij->j", block, block)],
                    }
                )
            if len(self._parts) > 64:  # keep the partial sums few
                self._parts = [mf.merge_pixel_stats(self._parts)]
        self._pending, self._pending_bytes = [], 0

    def result(self) -> dict:
        """`{"count", "sum", "sum_sq"}` of every image added (raises on mixed channel counts)."""
        self._flush()
        return mf.merge_pixel_stats(self._parts)


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """What building a shard produced (its bytes are in the file it was streamed into)."""

    sha256: str
    num_bytes: int
    num_records: int
    label_counts: tuple[int, ...]
    pixel_stats: dict
    skipped: tuple[dict, ...]
    image_shapes: tuple[tuple[int, ...], ...]

    def entry(self, file: str) -> dict:
        """The shard's manifest record (`manifest.shard_entry`) under the base name `file`."""
        return mf.shard_entry(
            file,
            self.num_records,
            self.sha256,
            self.num_bytes,
            self.label_counts,
            self.pixel_stats,
            self.skipped,
            self.image_shapes,
        )


class _HashingSink:
    """Writes to `sink`, counting and hashing the bytes; optionally GZIP-compresses first.

    A failing write (disk full, ...) becomes a `StorageError` naming `path`.
    """

    def __init__(self, sink: BinaryIO, gzip_output: bool, path: str = "<stream>") -> None:
        self._sink = sink
        self._path = path
        self._sha = hashlib.sha256()
        self.num_bytes = 0
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15) if gzip_output else None
        self._crc = 0
        self._raw_size = 0
        if gzip_output:
            self._out(_GZIP_HEADER)

    def _out(self, data: bytes) -> None:
        if data:
            try:
                self._sink.write(data)
            except Exception as e:  # noqa: BLE001 - OSError locally, tf.errors.OpError remotely
                raise storage_error(self._path, e) from e
            self._sha.update(data)
            self.num_bytes += len(data)

    def write(self, data: bytes) -> None:
        if self._deflate is None:
            self._out(data)
            return
        self._crc = zlib.crc32(data, self._crc)
        self._raw_size += len(data)
        self._out(self._deflate.compress(data))

    def close(self) -> str:
        if self._deflate is not None:
            self._out(self._deflate.flush())
            self._out(struct.pack("<II", self._crc, self._raw_size & 0xFFFFFFFF))
        return self._sha.hexdigest()


def build_shard(
    payload: Any,
    encoding: EncodingOptions,
    sink: BinaryIO,
    progress: Callable[[int], None] | None = None,
    path: str = "<stream>",
) -> ShardResult:
    """Encode one shard's records and stream them, framed as TFRecord, into `sink`.

    Example:

    ```python
    import io
    import numpy as np
    from tfrecord_tools.options import EncodingOptions
    from tfrecord_tools.shard import build_shard
    from tfrecord_tools.sources import ArraySplit
    split = ArraySplit(np.zeros((3, 4, 4, 1), np.uint8), [0, 1, 1])
    buf = io.BytesIO()
    result = build_shard(split.payload(np.arange(3)), EncodingOptions(), buf)
    result.num_records, result.label_counts  # 3, (1, 2)
    result.num_bytes == len(buf.getvalue())  # True
    ```

    Args:
        payload: `ArraySplit.payload(...)` / `FileSplit.payload(...)` of the shard's records.
        encoding: image format, quality, compression, skip_corrupt.
        sink: an open binary file (local `open`, `tf.io.gfile.GFile`, Beam's `FileSystems`).
        progress: optional callable(number_of_new_records).
        path: the name of `sink`, for error messages.

    Returns:
        A `ShardResult` (sha256 and size of the bytes as stored, counts, statistics, skipped).

    Raises:
        CorruptImageError: an unreadable image file (without `encoding.skip_corrupt`).
        StorageError: writing to `sink` failed (disk full, ...), naming `path`.
    """
    from tfrecord_tools.sources import iter_payload

    out = _HashingSink(sink, encoding.compression == "GZIP", path)
    stats = PixelStatsAccumulator()
    labels: list[int] = []
    skipped: list[dict] = []
    shapes: set[tuple[int, ...]] = set()
    pending = 0
    for _, image, label, filename, error in iter_payload(payload):
        if error is not None:
            if not encoding.skip_corrupt:
                raise error
            skipped.append({"filename": filename, "error": error.reason})
            continue
        record = serialize_example(image, label, encoding.image_format, encoding.quality, filename)
        out.write(frame_record(record))
        stats.add(image)
        labels.append(label)
        img_shape = image.shape if image.ndim == 3 else (*image.shape, 1)
        shapes.add(tuple(int(d) for d in img_shape))
        pending += 1
        if progress is not None and pending >= PROGRESS_EVERY:
            progress(pending)
            pending = 0
    if progress is not None and pending:
        progress(pending)
    sha256 = out.close()
    counts = np.bincount(np.asarray(labels, np.int64)).tolist() if labels else []
    return ShardResult(
        sha256=sha256,
        num_bytes=out.num_bytes,
        num_records=len(labels),
        label_counts=tuple(int(c) for c in counts),
        pixel_stats=stats.result(),
        skipped=tuple(skipped),
        image_shapes=tuple(sorted(shapes)[:2]),
    )


def write_shard(
    payload: Any,
    encoding: EncodingOptions,
    path: str,
    progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """`build_shard` into a new file at `path` (local or `gs://`).

    On any failure the file is removed before the error propagates; a storage failure (on
    open, write or the final close, where a `gs://` upload happens) is a `StorageError` naming
    `path`.
    """
    try:
        sink = open_write(path)
    except Exception as e:  # noqa: BLE001 - OSError locally, tf.errors.OpError remotely
        raise storage_error(path, e) from e
    done = False
    try:
        result = build_shard(payload, encoding, sink, progress, path)
        try:
            sink.close()
        except Exception as e:  # noqa: BLE001 - a full disk often shows at the last flush
            raise storage_error(path, e) from e
        done = True
    finally:
        if not done:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - already failing; the file is removed below
                pass
            remove_quietly(path)
    return result
