"""`tfrecord-tools convert | verify | inspect` — the command-line face of tfrecord_tools.

Examples::

    tfrecord-tools convert idx:/usr/share/datasets/fashion-mnist out/ --name fashion_mnist \\
        --num-shards 8 --num-workers 2
    tfrecord-tools verify out/ --decode
    tfrecord-tools inspect out/ --grid out_grid.png

Exit codes: 0 success, 1 verification failed, 2 bad arguments or conversion error (including
storage errors — disk full, read-only output — and an output locked by another conversion).
"""

import argparse
import json
import logging
import os
import sys

__all__ = ["main", "build_parser", "add_convert_arguments", "convert_arguments"]


def add_convert_arguments(parser):
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
        "source", help="numpy:FILE.npz | idx:DIR | cifar:DIR | folder:DIR | tfds:NAME | keras:NAME"
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
    parser.add_argument("--image-format", choices=("png", "jpeg", "raw"), default="png")
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


def convert_arguments(args):
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


def _label_names(value):
    from tfrecord_tools.sources import KNOWN_LABEL_NAMES

    if not value:
        return None
    return value if value in KNOWN_LABEL_NAMES else value.split(",")


def build_parser():
    import tfrecord_tools

    parser = argparse.ArgumentParser(
        prog="tfrecord-tools",
        description="Convert image datasets to sharded TFRecords (local or gs://), verify and inspect them.",
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
        description="SOURCE is numpy:FILE.npz, idx:DIR, cifar:DIR, folder:DIR, tfds:NAME or keras:NAME.",
    )
    add_convert_arguments(c)
    c.add_argument("--num-workers", type=int, default=1, help="encoding processes (default 1)")
    c.add_argument("--quiet", action="store_true", help="no progress bar or log messages")

    v = sub.add_parser("verify", help="check shards against manifest.json; exit 1 on any problem")
    v.add_argument("path")
    v.add_argument("--decode", action="store_true", help="also decode every image")
    v.add_argument("--split", action="append", help="check only this split (repeatable)")
    v.add_argument("--quiet", action="store_true", help="print only problems")

    i = sub.add_parser("inspect", help="counts, features, class histogram, PNG grid of samples")
    i.add_argument("path")
    i.add_argument("--split", help="split to sample the grid from (default train)")
    i.add_argument("--grid", help="write a PNG grid of sample images here")
    i.add_argument("--samples-per-class", type=int, default=8)
    i.add_argument("--max-classes", type=int, default=10)
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _splits(values):
    if not values:
        return None
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def _convert(args):
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


def _verify(args):
    import tfrecord_tools

    result = tfrecord_tools.verify(
        args.path, decode_images=args.decode, splits=_splits(args.split), progress=not args.quiet
    )
    if not result.ok or not args.quiet:
        print(result, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _inspect(args):
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


def main(argv=None):
    """Entry point of the `tfrecord-tools` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handler = {"convert": _convert, "verify": _verify, "inspect": _inspect}[args.command]
    from tfrecord_tools.lock import LockLostError, OutputLockedError
    from tfrecord_tools.storage import StorageError

    try:
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
