"""The `tfrecord_tools.convert` conversion as an Apache Beam pipeline (locally, or on Dataflow at scale).

The pipeline writes exactly what the local writer writes: the same argument checks and the same
seeded permutation cut into the same contiguous shards (`tfrecord_tools.writer.ConversionPlan`),
each shard encoded by the same `tfrecord_tools.writer.build_shard` (so the same
`tf.train.Example` bytes, TFRecord framing and GZIP settings), under the same tfds-style names,
with the same `manifest.json` built by `tfrecord_tools.manifest`. Shard files are therefore byte-identical to a local conversion with the
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
import json
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from tfrecord_tools import manifest as mf
from tfrecord_tools import writer
from tfrecord_tools.cli import add_convert_arguments, convert_arguments
from tfrecord_tools.writer import build_shard, partial_conversion_error, shard_entry_from_result

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
    tmp = mf.temp_path(path)
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


def _file_sha256(path):
    if not FileSystems.exists(path):
        return None
    f = FileSystems.open(path, compression_type=_RAW)
    try:
        return mf.sha256_stream(f)[0]
    finally:
        f.close()


def _delete_matching(pattern):
    matches = FileSystems.match([pattern])[0].metadata_list
    if matches:
        FileSystems.delete([m.path for m in matches])
    return len(matches)


def _delete_existing(paths):
    present = [p for p in paths if FileSystems.exists(p)]
    if present:
        FileSystems.delete(present)


# --- planning (driver side) --------------------------------------------------------------------


class ConversionPlan(writer.ConversionPlan):
    """A `tfrecord_tools.writer.ConversionPlan` plus the pipeline's tasks, made on the driver.

    Attributes (besides those of `writer.ConversionPlan`):
        tasks: `[(split, shard_index, file_name, payload, fingerprint, known_entry)]`.
        split_sizes: `{split: number of source records}`, in source split order.
        label_names: class names or None.
        description: the source description written to the manifest.
        existing: the output's manifest as found when planning (None if absent or outdated).
    """

    tasks = ()
    existing = None

    @property
    def split_sizes(self):
        return {s: d.num_records for s, d in self.source.splits.items()}

    @property
    def label_names(self):
        return self.source.label_names

    @property
    def description(self):
        return self.source.description


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
            (and `overwrite` is False) — the same checks and messages as `convert`, which
            plans with the same `writer.ConversionPlan`.
    """
    plan = ConversionPlan(
        output,
        num_shards,
        image_format,
        name=name,
        quality=quality,
        compression=compression,
        seed=seed,
        shuffle=shuffle,
        skip_corrupt=skip_corrupt,
    )
    plan.output = plan.output.rstrip("/")
    plan.open(source, split=split, label_names=label_names)
    output = plan.output
    if not output.startswith("gs://") and not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    existing = _read_json(mf.manifest_path(output))
    outdated = plan.outdated_files(existing, overwrite)
    if outdated:
        _delete_existing(outdated)
        existing = None

    tasks = []
    for split_name, data in plan.source.splits.items():
        # Leftovers of an interrupted run: temporary files are never complete.
        _delete_matching(plan.leftover_glob(split_name))
        fingerprint = plan.fingerprint(split_name)
        old_shards = (existing or {}).get("splits", {}).get(split_name, {}).get("shards", [])
        files = plan.shard_files(split_name)
        for i, (file, indices) in enumerate(zip(files, plan.shard_indices(split_name))):
            known = old_shards[i] if i < len(old_shards) and old_shards[i]["file"] == file else None
            tasks.append((split_name, i, file, data.payload(indices), fingerprint, known))
    plan.tasks = tasks
    plan.existing = existing
    return plan


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
            raise partial_conversion_error(self.output, path, record, fingerprint)
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
        entry = shard_entry_from_result(file, result)
        tmp = mf.temp_path(final)
        _write_bytes(tmp, data)
        # The sidecar first, then the rename: a shard under its final name always has a record.
        _write_bytes_atomic(
            mf.sidecar_path(self.output, file), mf.sidecar_bytes(fingerprint, entry)
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
    manifest = mf.manifest_from_config(config, splits, label_names)
    # Same bytes as manifest.write_manifest, but through Beam's FileSystems.
    _write_bytes_atomic(mf.manifest_path(output), mf.manifest_bytes(manifest))
    _delete_existing(
        [
            mf.sidecar_path(output, s["file"])
            for split in split_sizes
            for s in splits[split]["shards"]
        ]
    )
    return manifest


def build_pipeline(pipeline, plan):
    """Add the conversion described by `plan` (from `plan_conversion`) to a Beam `pipeline`.

    Returns:
        The PCollection holding the written manifest (one dict).
    """
    existing = plan.existing or {}
    existing_splits = {
        k: v for k, v in existing.get("splits", {}).items() if k not in plan.split_sizes
    }
    label_names = plan.manifest_label_names(existing)
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
    add_convert_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        manifest = convert_beam(
            args.source,
            args.output,
            split=",".join(args.split) if args.split else None,
            pipeline_options=beam_args,
            **convert_arguments(args),
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
