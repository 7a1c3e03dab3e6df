"""The `tfrecord_tools.convert` conversion as an Apache Beam pipeline (locally, or on Dataflow at scale).

The pipeline writes exactly what the local writer writes: the same seeded permutation cut into
the same contiguous shards (`tfrecord_tools.writer`), each shard encoded by the same
`tfrecord_tools.writer.build_shard` (so the same `tf.train.Example` bytes, TFRecord framing and
GZIP settings), under the same tfds-style names, with the same `manifest.json` built by
`tfrecord_tools.manifest`. Shard files are therefore byte-identical to a local conversion with the
same options, and `tfrecord_tools.verify` / `read_dataset` accept the output.

Pipeline shape::

    Create(one task per shard: split, index, picklable payload of its records)
      | Reshuffle                       # spread the shards over the workers
      | ParDo(_WriteShardFn)            # decode + encode + frame + sha256, write <shard>.tmp-*,
                                        # sidecar <shard>.json, rename into place -> shard entry
      | ToList | Map(_write_manifest)   # reconcile counts, write manifest.json, drop sidecars

A shard is one unit of work: shards are independent, so the conversion scales with the number of
shards (1024 for ImageNet-size data), and a retried bundle rewrites whole shards atomically, so a
file under its final name is always complete. Output files go through Beam's `FileSystems`
(local disk, `gs://` via google-cloud-storage); workers import TensorFlow only to read the
`gs://` image files of a `folder:` source.

Rerunning resumes like the local writer: a shard whose file matches the sha256 recorded in
`manifest.json` or in its `<shard>.json` sidecar is kept, not rebuilt; the two writers can finish
each other's interrupted runs.

Array sources (`numpy:`, `idx:`, `cifar:`, in-memory arrays) travel inside the pipeline graph:
fine locally (Fashion-MNIST's 55 MB of pixels is no problem), but a Dataflow job
graph has a size limit, so at scale use a `folder:` source on `gs://`, whose tasks carry only
file names (the workers read the images themselves).

Example:

```python
from tfrecord_tools.beam import convert_beam
convert_beam("idx:/usr/share/datasets/fashion-mnist", "/tmp/fmnist_beam",
             num_shards=8, name="fashion_mnist")   # locally, on the DirectRunner's engine
```

Command line (any Beam runner; unknown options go to Beam's `PipelineOptions`):

    python -m tfrecord_tools.beam folder:gs://my-bucket/imagenet gs://my-bucket/imagenet-tfrecord \\
        --name imagenet --num-shards 1024 --image-format jpeg \\
        --runner DataflowRunner --project my-project --region us-central1 \\
        --temp_location gs://my-bucket/tmp --staging_location gs://my-bucket/staging \\
        --extra_package dist/keras_tricks-0.1.0.tar.gz
"""

import argparse
import hashlib
import json
import logging
import os
import sys

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from tfrecord_tools import manifest as mf
from tfrecord_tools.example import IMAGE_FORMATS
from tfrecord_tools.sources import open_source
from tfrecord_tools.writer import (
    _check_positive_int,
    _default_name,
    _default_num_shards,
    _normalise_compression,
    build_shard,
)

__all__ = ["convert_beam", "build_pipeline", "plan_conversion", "ConversionPlan", "main"]

logger = logging.getLogger("tfrecord_tools")

_RAW = CompressionTypes.UNCOMPRESSED  # build_shard already applied any GZIP

# Without --runner we run Beam's FnApiRunner, the in-process engine of the DirectRunner. The
# DirectRunner itself (Beam 2.77) first tries the Prism runner, which downloads a Go binary from
# GitHub (offline: fails, and leaves an empty /tmp/beam-temp* directory per run) before falling
# back to that same engine. `--runner=DirectRunner` still works, as does any other runner.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"


def _pipeline_options(pipeline_options):
    if pipeline_options is None or isinstance(pipeline_options, (list, tuple)):
        pipeline_options = PipelineOptions(list(pipeline_options or []))
    standard = pipeline_options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = DEFAULT_LOCAL_RUNNER
    return pipeline_options


# --- storage through Beam's FileSystems (local or gs://) --------------------------------------


def _write_bytes(path, data):
    f = FileSystems.create(path, mime_type="application/octet-stream", compression_type=_RAW)
    try:
        f.write(data)
    finally:
        f.close()


def _write_bytes_atomic(path, data):
    """Write under a temporary name, then rename the single file into place."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    _write_bytes(tmp, data)
    FileSystems.rename([tmp], [path])


def _read_bytes(path):
    f = FileSystems.open(path, compression_type=_RAW)
    try:
        return f.read()
    finally:
        f.close()


def _read_json(path):
    if not FileSystems.exists(path):
        return None
    try:
        return json.loads(_read_bytes(path))
    except ValueError:  # a half-written or foreign file is just not resumable
        return None


def _file_sha256(path, chunk_size=1 << 22):
    if not FileSystems.exists(path):
        return None
    digest = hashlib.sha256()
    f = FileSystems.open(path, compression_type=_RAW)
    try:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    finally:
        f.close()
    return digest.hexdigest()


def _delete_matching(pattern):
    matches = FileSystems.match([pattern])[0].metadata_list
    if matches:
        FileSystems.delete([m.path for m in matches])
    return len(matches)


# --- planning (driver side) --------------------------------------------------------------------


class ConversionPlan:
    """Everything the pipeline needs, computed once on the driver.

    Attributes:
        output: the output directory (local or `gs://`).
        config: the manifest's configuration keys (`manifest.CONFIG_KEYS`).
        options: `build_shard` keyword arguments.
        tasks: `[(split, shard_index, file_name, payload, fingerprint, known_entry)]`.
        split_sizes: `{split: number of source records}`, in source split order.
        label_names: class names or None.
        description: the source description written to the manifest.
    """

    def __init__(self, output, config, options, tasks, split_sizes, label_names, description):
        self.output = output
        self.config = config
        self.options = options
        self.tasks = tasks
        self.split_sizes = split_sizes
        self.label_names = label_names
        self.description = description


def _shard_indices(num_records, num_shards, seed, shuffle):
    # The local writer's rule (tfrecord_tools/writer.py, step 1): a seeded permutation cut into
    # contiguous pieces; shard i holds order[i*n//k : (i+1)*n//k].
    order = (
        np.random.default_rng(seed).permutation(num_records) if shuffle else np.arange(num_records)
    )
    bounds = [(i * num_records) // num_shards for i in range(num_shards + 1)]
    return [order[bounds[i] : bounds[i + 1]] for i in range(num_shards)]


def plan_conversion(
    source,
    output,
    split=None,
    num_shards=None,
    image_format="png",
    *,
    name=None,
    quality=95,
    compression=None,
    seed=0,
    shuffle=True,
    skip_corrupt=False,
    label_names=None,
    overwrite=False,
):
    """Check the arguments, open the source and list one task per shard (see `convert_beam`).

    Raises:
        ValueError: bad arguments, unknown source, or `output` holds a different conversion
            (and `overwrite` is False) — the same checks and messages as `convert`.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}; received {image_format!r}.")
    if (
        isinstance(quality, bool)
        or not isinstance(quality, (int, np.integer))
        or not 1 <= quality <= 100
    ):
        raise ValueError(f"quality must be an integer in 1..100; received {quality!r}.")
    compression = _normalise_compression(compression)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; received {seed!r}.")
    if isinstance(num_shards, dict):
        num_shards = {
            k: _check_positive_int(v, f"num_shards[{k!r}]") for k, v in num_shards.items()
        }
    else:
        num_shards = _check_positive_int(num_shards, "num_shards", allow_none=True)
    if not isinstance(output, (str, os.PathLike)) or not os.fspath(output):
        raise ValueError(f"output must be a directory path or gs:// URL; received {output!r}.")
    output = os.fspath(output).rstrip("/")
    if name is not None:
        mf.check_name(name, "name")

    src = open_source(source, split=split, label_names=label_names)
    name = name or _default_name(src.description)
    mf.check_name(name, "name")
    for split_name in src.splits:
        mf.check_name(split_name, "split")
    if isinstance(num_shards, dict):
        unknown = sorted(set(num_shards) - set(src.splits))
        if unknown:
            raise ValueError(
                f"num_shards names splits {unknown} that the source does not have ({sorted(src.splits)})."
            )
    shard_counts = {}
    for split_name, data in src.splits.items():
        k = num_shards.get(split_name) if isinstance(num_shards, dict) else num_shards
        k = k or _default_num_shards(data.num_records)
        if k > max(data.num_records, 1):
            raise ValueError(
                f"num_shards={k} is more than the {data.num_records} records of split {split_name!r}."
            )
        shard_counts[split_name] = k

    config = {
        "name": name,
        "source": src.description,
        "image_format": image_format,
        "quality": int(quality) if image_format == "jpeg" else None,
        "compression": compression,
        "shuffle": bool(shuffle),
        "seed": int(seed),
    }
    if not output.startswith("gs://") and not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    existing = _read_json(mf.manifest_path(output))
    if existing is not None:
        conflicts = mf.config_conflicts(existing, config)
        if (
            existing.get("label_names") not in (None, src.label_names)
            and src.label_names is not None
        ):
            conflicts.append(
                f"label_names: existing {existing['label_names']!r} != requested {src.label_names!r}"
            )
        for split_name, data in src.splits.items():
            old = existing.get("splits", {}).get(split_name)
            if old and (old["num_shards"], old["num_source_records"]) != (
                shard_counts[split_name],
                data.num_records,
            ):
                conflicts.append(
                    f"split {split_name!r}: existing {old['num_shards']} shards of "
                    f"{old['num_source_records']} records != requested {shard_counts[split_name]} "
                    f"shards of {data.num_records} records"
                )
        if conflicts and not overwrite:
            raise ValueError(
                f"output {output!r} already holds a different conversion (its manifest.json "
                f"differs: {'; '.join(conflicts)}). Choose another output, or pass overwrite=True "
                "(CLI: --overwrite) to replace it."
            )
        if conflicts:
            old_files = [
                mf.join(output, s["file"])
                for sp in existing["splits"].values()
                for s in sp["shards"]
            ]
            FileSystems.delete([f for f in old_files if FileSystems.exists(f)])
            FileSystems.delete([mf.manifest_path(output)])
            existing = None

    tasks = []
    for split_name, data in src.splits.items():
        k = shard_counts[split_name]
        # Leftovers of an interrupted run: temporary files are never complete.
        _delete_matching(mf.join(output, f"{name}-{split_name}.tfrecord-*.tmp-*"))
        fingerprint = dict(
            config, split=split_name, num_shards=k, num_source_records=data.num_records
        )
        old_shards = (existing or {}).get("splits", {}).get(split_name, {}).get("shards", [])
        for i, indices in enumerate(_shard_indices(data.num_records, k, seed, shuffle)):
            file = mf.shard_name(name, split_name, i, k)
            known = old_shards[i] if i < len(old_shards) and old_shards[i]["file"] == file else None
            tasks.append((split_name, i, file, data.payload(indices), fingerprint, known))
    return ConversionPlan(
        output,
        config,
        {
            "image_format": image_format,
            "quality": int(quality),
            "compression": compression,
            "skip_corrupt": bool(skip_corrupt),
        },
        tasks,
        {s: d.num_records for s, d in src.splits.items()},
        src.label_names,
        src.description,
    )


# --- the pipeline ------------------------------------------------------------------------------


class _WriteShardFn(beam.DoFn):
    """Build one shard (`writer.build_shard`) and commit it atomically; emit its manifest entry."""

    def __init__(self, output, options):
        self.output = output
        self.options = options
        self.records = Metrics.counter("tfrecord_tools", "records_written")
        self.bytes = Metrics.counter("tfrecord_tools", "bytes_written")
        self.kept = Metrics.counter("tfrecord_tools", "shards_kept")

    def _verified(self, path, entry, fingerprint):
        """The recorded entry of an existing shard file whose sha256 still matches, else None."""
        candidates = [c for c in (entry, self._sidecar_entry(path, fingerprint)) if c is not None]
        if not candidates:
            return None
        actual = _file_sha256(path)
        return next((c for c in candidates if c["sha256"] == actual), None)

    def _sidecar_entry(self, path, fingerprint):
        record = _read_json(path + ".json")
        if record is None:
            return None
        if record.get("config") != fingerprint:
            raise ValueError(
                f"output {self.output!r} holds a partial conversion with different settings "
                f"({path}.json: {record.get('config')!r}; requested {fingerprint!r}). "
                "Choose another output, or pass overwrite=True (CLI: --overwrite)."
            )
        return record.get("shard")

    def process(self, task):
        split, index, file, payload, fingerprint, known = task
        final = mf.join(self.output, file)
        kept = self._verified(final, known, fingerprint)
        if kept is not None:
            self.kept.inc()
            yield split, index, kept
            return
        result = build_shard(payload, **self.options)
        data = result.pop("data")
        entry = mf.shard_entry(
            file,
            result["num_records"],
            result["sha256"],
            result["num_bytes"],
            result["label_counts"],
            result["pixel_stats"],
            result["skipped"],
            result["image_shapes"],
        )
        tmp = f"{final}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        _write_bytes(tmp, data)
        # The sidecar first, then the rename: a shard under its final name always has a record.
        _write_bytes_atomic(
            final + ".json", json.dumps({"config": fingerprint, "shard": entry}).encode()
        )
        FileSystems.rename([tmp], [final])
        self.records.inc(entry["num_records"])
        self.bytes.inc(len(data))
        logger.info("wrote %s (%d records, %d bytes)", file, entry["num_records"], len(data))
        yield split, index, entry


def _write_manifest(entries, output, config, split_sizes, label_names, existing_splits):
    by_split = {}
    for split, index, entry in entries:
        by_split.setdefault(split, {})[index] = entry
    splits = dict(existing_splits)
    for split, num_source_records in split_sizes.items():
        shards = [by_split[split][i] for i in sorted(by_split[split])]
        splits[split] = mf.split_entry(shards, num_source_records)  # raises unless counts reconcile
    manifest = mf.build_manifest(
        config["name"],
        config["source"],
        splits,
        image_format=config["image_format"],
        quality=config["quality"],
        compression=config["compression"],
        label_names=label_names,
        shuffle=config["shuffle"],
        seed=config["seed"],
    )
    # Same bytes as manifest.write_manifest, but through Beam's FileSystems.
    data = json.dumps(manifest, indent=1, sort_keys=False).encode("utf-8") + b"\n"
    _write_bytes_atomic(mf.manifest_path(output), data)
    sidecars = [
        mf.join(output, s["file"] + ".json")
        for split in split_sizes
        for s in splits[split]["shards"]
    ]
    present = [p for p in sidecars if FileSystems.exists(p)]
    if present:
        FileSystems.delete(present)
    return manifest


def build_pipeline(pipeline, plan):
    """Add the conversion described by `plan` (from `plan_conversion`) to a Beam `pipeline`.

    Returns:
        The PCollection holding the written manifest (one dict).
    """
    existing = _read_json(mf.manifest_path(plan.output)) or {}
    existing_splits = {
        k: v for k, v in existing.get("splits", {}).items() if k not in plan.split_sizes
    }
    label_names = plan.label_names if plan.label_names is not None else existing.get("label_names")
    return (
        pipeline
        | "ShardTasks" >> beam.Create(plan.tasks, reshuffle=False)
        | "Distribute" >> beam.Reshuffle()
        | "EncodeAndWrite" >> beam.ParDo(_WriteShardFn(plan.output, plan.options))
        | "Collect" >> beam.combiners.ToList()
        | "WriteManifest"
        >> beam.Map(
            _write_manifest,
            plan.output,
            plan.config,
            plan.split_sizes,
            label_names,
            existing_splits,
        )
    )


def convert_beam(
    source,
    output,
    split=None,
    num_shards=None,
    image_format="png",
    *,
    pipeline_options=None,
    name=None,
    quality=95,
    compression=None,
    seed=0,
    shuffle=True,
    skip_corrupt=False,
    label_names=None,
    overwrite=False,
):
    """Convert a raw dataset into sharded TFRecords + `manifest.json` with an Apache Beam pipeline.

    Same arguments and the same output as `tfrecord_tools.convert` (byte-identical shards and
    manifest for the same options), with Beam doing the parallelism instead of `num_workers`.

    Example:

    ```python
    import numpy as np
    from tfrecord_tools.beam import convert_beam
    x = np.zeros((100, 8, 8, 3), np.uint8); y = np.arange(100) % 10
    convert_beam((x, y), "/tmp/tiny_beam", split="train", num_shards=4, name="tiny")
    ```

    Args:
        source, output, split, num_shards, image_format, name, quality, compression, seed,
            shuffle, skip_corrupt, label_names, overwrite: as in `tfrecord_tools.convert`.
        pipeline_options: a `PipelineOptions`, or a list of command-line flags for it
            (e.g. `["--runner=DataflowRunner", "--project=...", ...]`). Without a runner the
            pipeline runs locally on `DEFAULT_LOCAL_RUNNER` (the DirectRunner's engine; the
            DirectRunner's `--direct_num_workers` and `--direct_running_mode` apply).

    Returns:
        The manifest dict, as written to `output/manifest.json`.
    """
    plan = plan_conversion(
        source,
        output,
        split=split,
        num_shards=num_shards,
        image_format=image_format,
        name=name,
        quality=quality,
        compression=compression,
        seed=seed,
        shuffle=shuffle,
        skip_corrupt=skip_corrupt,
        label_names=label_names,
        overwrite=overwrite,
    )
    with beam.Pipeline(options=_pipeline_options(pipeline_options)) as pipeline:
        build_pipeline(pipeline, plan)
    return json.loads(_read_bytes(mf.manifest_path(plan.output)))


def main(argv=None):
    """`python -m tfrecord_tools.beam SOURCE OUTPUT [options] [Beam pipeline options]`."""
    parser = argparse.ArgumentParser(
        prog="python -m tfrecord_tools.beam",
        description="Convert an image dataset to sharded TFRecords with Apache Beam (the options "
        "of `tfrecord-tools convert`, without --num-workers). Options not listed here "
        "(--runner, --project, --region, --temp_location, ...) go to Beam.",
    )
    parser.add_argument(
        "source", help="numpy:FILE.npz | idx:DIR | cifar:DIR | folder:DIR | tfds:NAME | keras:NAME"
    )
    parser.add_argument("output", help="output directory, local or gs://bucket/dir")
    parser.add_argument(
        "--split", action="append", help="convert only this split (repeatable, or a,b)"
    )
    parser.add_argument("--name", default=None, help="dataset name in the shard file names")
    parser.add_argument("--num-shards", type=int, default=None, help="shards per split")
    parser.add_argument("--image-format", default="png", choices=IMAGE_FORMATS)
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality 1..100")
    parser.add_argument("--gzip", action="store_true", help="GZIP-compress the TFRecord files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shuffle", action="store_true")
    parser.add_argument("--skip-corrupt", action="store_true")
    parser.add_argument("--label-names", help="comma-separated class names (index = label)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        manifest = convert_beam(
            args.source,
            args.output,
            split=",".join(args.split) if args.split else None,
            num_shards=args.num_shards,
            image_format=args.image_format,
            pipeline_options=beam_args,
            name=args.name,
            quality=args.quality,
            compression="GZIP" if args.gzip else None,
            seed=args.seed,
            shuffle=not args.no_shuffle,
            skip_corrupt=args.skip_corrupt,
            label_names=args.label_names.split(",") if args.label_names else None,
            overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        for split, entry in manifest["splits"].items():
            print(
                f"{split}: {entry['num_records']} records in {entry['num_shards']} shards"
                + (f", {len(entry['skipped'])} skipped" if entry["skipped"] else "")
            )
        print(f"wrote {mf.manifest_path(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
