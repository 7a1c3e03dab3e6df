"""`tfrecord-tools convert | verify | inspect` — the command-line face of tfrecord_tools.

Examples::

    tfrecord-tools convert idx:/usr/share/datasets/fashion-mnist out/ --name fashion_mnist \\
        --num-shards 8 --num-workers 2
    tfrecord-tools verify out/ --decode
    tfrecord-tools inspect out/ --grid out_grid.png

Exit codes: 0 success, 1 verification failed, 2 bad arguments or conversion error (including
storage errors — disk full, read-only output — and an output locked by another conversion).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = [
    "main",
    "build_parser",
    "add_convert_arguments",
    "convert_arguments",
    "add_verbose_argument",
    "is_startup_noise",
    "quiet_tensorflow_startup",
]

# --- TensorFlow's start-up log ------------------------------------------------------------------
# Importing TensorFlow 2.21 prints, on every command, absl's banner "WARNING: All log messages
# before absl::InitializeLog() is called are written to STDERR" and two INFO lines (oneDNN on, no
# CUDA driver) -- all twice, because two of its shared libraries carry their own copy of absl --
# and the first device query adds "failed call to cuInit" as an ERROR on a machine without a GPU.
# TF_CPP_MIN_LOG_LEVEL does not reach absl's lines, so the command lines capture file descriptor 2
# while TensorFlow is imported and its devices are listed, and write back every line but these.
ABSL_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)
# absl's C++ log prefix: severity, date, time, thread id, file:line].
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
# WARNING/ERROR lines that only say this machine has no GPU (TF's CUDA build on a CPU machine).
_NO_GPU_MESSAGES = (
    "failed call to cuInit",
    "Could not find cuda drivers",
    "Could not find TensorRT",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
)


def is_startup_noise(line: str) -> bool:
    """True for a line of TensorFlow's start-up log that `--verbose` alone shows.

    That is absl's banner, absl INFO lines, and the WARNING/ERROR lines that only report a
    missing GPU. Every other line -- TensorFlow's other warnings and errors, Python warnings and
    tracebacks, our own log messages -- is not noise.

    Example:

    ```python
    from tfrecord_tools.cli import is_startup_noise
    assert is_startup_noise("I0000 00:00:1796128050.149806   24394 cudart_stub.cc:31] Could "
                            "not find cuda drivers on your machine, GPU will not be used.")
    assert not is_startup_noise("E0000 00:00:1796128050.1 7 op_kernel.cc:1857] OP_REQUIRES failed")
    ```

    Args:
        line: one line of stderr, with or without its line ending.
    """
    text = line.rstrip("\r\n")
    if text == ABSL_BANNER:
        return True
    match = _ABSL_LINE.match(text)
    if match is None:
        return False
    return match.group(1) == "I" or any(message in text for message in _NO_GPU_MESSAGES)


@contextlib.contextmanager
def _stderr_without_startup_noise() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file; on exit, write back all but the noise."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to capture (closed, or a detached process)
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_startup_noise(line)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader with the start-up log filtered out, then lists its devices
    (which is where "failed call to cuInit" comes from) inside the same window."""

    def __init__(self, loader: Any, finder: _QuietTensorFlowFinder) -> None:
        self._loader, self._finder = loader, finder

    def __getattr__(self, name: str) -> Any:
        # get_resource_reader, is_package, ...: what TensorFlow's own loader answers.
        return getattr(self._loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._finder.remove()
        with _stderr_without_startup_noise():
            self._loader.exec_module(module)
            # TensorFlow's module keeps its own loader: the wrapper was for this import only.
            module.__loader__ = self._loader
            spec = getattr(module, "__spec__", None)
            if spec is not None:
                spec.loader = self._loader
            try:
                module.config.list_physical_devices()
            except Exception:  # noqa: BLE001 - whatever fails here fails again, loudly, later
                pass


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """On `sys.meta_path`: hands the first import of `tensorflow` to `_QuietLoader`."""

    def __init__(self) -> None:
        self._searching = False

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "tensorflow" or self._searching:
            return None
        self._searching = True
        try:  # the spec every other finder would give
            spec = importlib.util.find_spec(name)
        finally:
            self._searching = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


@contextlib.contextmanager
def quiet_tensorflow_startup(verbose: bool = False) -> Iterator[None]:
    """Within the block, TensorFlow's first import prints none of its start-up log.

    Both command lines run their command inside it (`--verbose` turns it off). It sets
    `TF_CPP_MIN_LOG_LEVEL=1` unless the environment already sets it (TensorFlow's own INFO
    lines, e.g. "This TensorFlow binary is optimized to use available CPU instructions"), and
    filters the lines that variable does not reach (`is_startup_noise`) out of what TensorFlow's
    import and first device listing write to stderr; everything else is written back. Nothing
    changes if TensorFlow is already imported. TensorFlow is still imported only where the
    command needs it, after the command's own settings (`keras_tricks.runtime.configure_cpu`).
    A worker process that imports TensorFlow itself (for a `gs://` shard) is not filtered.

    Example:

    ```python
    from tfrecord_tools.cli import quiet_tensorflow_startup
    with quiet_tensorflow_startup():
        import tensorflow as tf
    ```

    Args:
        verbose: True to leave TensorFlow's log alone (the `--verbose` flag).
    """
    if verbose or "tensorflow" in sys.modules:
        yield
        return
    set_level = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if set_level:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
    finder = _QuietTensorFlowFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:  # leave the process as it was (main() is also called from Python)
        finder.remove()
        if set_level:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def add_verbose_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--verbose` (show TensorFlow's start-up log, see `quiet_tensorflow_startup`)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's start-up log (absl banner, oneDNN and CUDA lines), "
        "hidden by default; its other warnings and errors are always shown",
    )
    return parser


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the conversion options shared by `tfrecord-tools convert` and
    `python -m tfrecord_tools.beam` (SOURCE, OUTPUT, --split, --name, --num-shards, ...) to an
    `argparse` parser; `convert_arguments` turns the parsed options into keyword arguments.

    Example:

    ```python
    import argparse
    from tfrecord_tools.cli import add_convert_arguments, convert_arguments
    parser = argparse.ArgumentParser()
    add_convert_arguments(parser)
    convert_arguments(parser.parse_args(["idx:data", "out", "--gzip"]))["compression"]  # 'GZIP'
    ```
    """
    parser.add_argument(
        "source",
        help="numpy:FILE.npz | idx:DIR | cifar:DIR | folder:DIR | tfds:NAME[?data_dir=DIR] "
        "| keras:NAME",
    )
    parser.add_argument("output", help="output directory or gs://bucket/dir")
    parser.add_argument(
        "--split", action="append", help="convert only this split (repeatable, or a,b)"
    )
    parser.add_argument(
        "--name", help="dataset name used in shard names (default: from the source)"
    )
    parser.add_argument(
        "--num-shards", type=int, help="shards per split (default: ~10k records each)"
    )
    parser.add_argument(
        "--image-format",
        choices=("png", "jpeg", "raw"),
        default="png",
        help="how images are stored: lossless PNG, JPEG (--quality) or raw uint8 pixels "
        "(default: %(default)s)",
    )
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    parser.add_argument("--gzip", action="store_true", help="GZIP-compress the TFRecord files")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle before sharding")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the source order")
    parser.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip unreadable images, list them in the manifest",
    )
    parser.add_argument(
        "--label-names",
        help="comma-separated class names (index = label), or a known dataset's name "
        "(mnist, fashion_mnist, cifar10)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what in the output differs from this conversion (only the named splits)",
    )
    parser.add_argument(
        "--alpha",
        choices=("error", "composite", "keep"),
        default="error",
        help="images with an alpha channel (folder sources): refuse them (default), composite "
        "them over white, or keep RGBA",
    )
    return parser


def convert_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `convert` / `convert_beam` from options parsed with
    `add_convert_arguments` (all but `split`, whose form each command chooses)."""
    return {
        "num_shards": args.num_shards,
        "image_format": args.image_format,
        "name": args.name,
        "quality": args.quality,
        "compression": "GZIP" if args.gzip else None,
        "seed": args.seed,
        "shuffle": not args.no_shuffle,
        "skip_corrupt": args.skip_corrupt,
        "label_names": _label_names(args.label_names),
        "overwrite": args.overwrite,
        "alpha": args.alpha,
    }


def _label_names(value: str | None) -> str | list[str] | None:
    from tfrecord_tools.sources import KNOWN_LABEL_NAMES

    if not value:
        return None
    return value if value in KNOWN_LABEL_NAMES else value.split(",")


def build_parser() -> argparse.ArgumentParser:
    """The `tfrecord-tools` argument parser: the `convert`, `verify` and `inspect` commands."""
    import tfrecord_tools

    parser = argparse.ArgumentParser(
        prog="tfrecord-tools",
        description="Convert image datasets to sharded TFRecords (local disk or gs://) with a "
        "manifest, verify them against it, and inspect them.",
        epilog="Exit codes: 0 success, 1 verification failed, 2 bad arguments or an error. "
        "Run `tfrecord-tools COMMAND --help` for the options of a command.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {tfrecord_tools.__version__}",
        help="print the version of keras-tricks (the distribution) and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser(
        "convert",
        help="convert a raw dataset into sharded TFRecords + manifest.json",
        description="Convert every split of SOURCE (or the --split ones) into tfds-style shards "
        "{name}-{split}.tfrecord-00003-of-00016 and a manifest.json with counts, label names, "
        "the feature spec and a sha256 per shard. SOURCE is numpy:FILE.npz, idx:DIR, "
        "cifar:DIR, folder:DIR, tfds:NAME[?data_dir=DIR] or keras:NAME. Uncompressed outputs "
        "also get tfds's dataset_info.json and features.json, so tfds.builder_from_directory "
        "reads them. Rerunning the same command resumes.",
    )
    add_convert_arguments(c)
    c.add_argument(
        "--num-workers",
        type=int,
        default=1,
        help="processes encoding shards in parallel (default: %(default)s)",
    )
    c.add_argument("--quiet", action="store_true", help="no progress bar or log messages")
    add_verbose_argument(c)

    v = sub.add_parser(
        "verify",
        help="check shards against manifest.json; exit 1 on any problem",
        description="Check every shard against manifest.json: it exists, its size and sha256 "
        "match, every record's CRC-32C checks, and its record count and label histogram match; "
        "with --decode, every image decodes too. Exits 1 and names each failing shard.",
    )
    v.add_argument("path", help="the converted dataset's directory (local or gs://)")
    v.add_argument("--decode", action="store_true", help="also decode every image")
    v.add_argument("--split", action="append", help="check only this split (repeatable)")
    v.add_argument("--quiet", action="store_true", help="print only problems")
    add_verbose_argument(v)

    i = sub.add_parser(
        "inspect",
        help="counts, features, class histogram, PNG grid of samples",
        description="Print the counts per split, the features and the class histogram of a "
        "converted dataset, and say where the files differ from the manifest; with --grid, "
        "also write a PNG grid of sample images, one row per class.",
    )
    i.add_argument("path", help="the converted dataset's directory (local or gs://)")
    i.add_argument("--split", help="split to sample the grid from (default: train, else the first)")
    i.add_argument("--grid", metavar="PNG", help="write a PNG grid of sample images here")
    # The defaults are tfrecord_tools.inspect's own, read from its signature.
    defaults = {
        name: p.default for name, p in inspect.signature(tfrecord_tools.inspect).parameters.items()
    }
    i.add_argument(
        "--samples-per-class",
        type=int,
        default=defaults["samples_per_class"],
        metavar="N",
        help="images per grid row (default: %(default)s)",
    )
    i.add_argument(
        "--max-classes",
        type=int,
        default=defaults["max_classes"],
        metavar="N",
        help="grid rows: the first N classes (default: %(default)s)",
    )
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_verbose_argument(i)
    return parser


def _splits(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def _convert(args: argparse.Namespace) -> int:
    import tfrecord_tools

    manifest = tfrecord_tools.convert(
        args.source,
        args.output,
        split=_splits(args.split),
        num_workers=args.num_workers,
        progress=not args.quiet,
        **convert_arguments(args),
    )
    if not args.quiet:
        for split, entry in manifest["splits"].items():
            print(
                f"{split}: {entry['num_records']} records in {entry['num_shards']} shards"
                + (f", {len(entry['skipped'])} skipped:" if entry["skipped"] else "")
            )
            for item in entry["skipped"]:
                print(f"  skipped {item['filename']}: {item['error']}")
        print(f"wrote {os.path.join(args.output, 'manifest.json')}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import tfrecord_tools

    result = tfrecord_tools.verify(
        args.path, decode_images=args.decode, splits=_splits(args.split), progress=not args.quiet
    )
    if not result.ok or not args.quiet:
        print(result, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _inspect(args: argparse.Namespace) -> int:
    from tfrecord_tools.summary import format_summary, inspect

    summary = inspect(
        args.path,
        split=args.split,
        grid_path=args.grid,
        samples_per_class=args.samples_per_class,
        max_classes=args.max_classes,
    )
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tfrecord-tools` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(name)s: %(message)s",
    )
    handler = {"convert": _convert, "verify": _verify, "inspect": _inspect}[args.command]
    from tfrecord_tools.lock import LockLostError, OutputLockedError
    from tfrecord_tools.storage import StorageError

    try:
        with quiet_tensorflow_startup(verbose=args.verbose):
            return handler(args)
    except (
        ValueError,
        FileNotFoundError,
        ImportError,
        StorageError,
        OutputLockedError,
        LockLostError,
    ) as e:
        # One line naming the cause; exit 2 ("error"), never 1 ("verification failed").
        print(f"tfrecord-tools {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
