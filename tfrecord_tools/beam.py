"""The `tfrecord_tools.convert` conversion as an Apache Beam pipeline (locally, or on Dataflow).

The pipeline writes exactly what the local writer writes: the same `ConversionOptions` checks and
the same seeded permutation cut into the same contiguous shards (`tfrecord_tools.plan`), each
shard encoded by the same `tfrecord_tools.shard.build_shard` (so the same `tf.train.Example`
bytes, TFRecord framing and GZIP settings), under the same tfds-style names, with the same
`manifest.json`. Shard files are therefore byte-identical to a local conversion with the same
options, and `tfrecord_tools.verify` / `read_dataset` accept the output, as does
`tfds.builder_from_directory` (the same tfds metadata, `tfrecord_tools.tfds_info`). It also
takes the same lock on the output (`tfrecord_tools.lock`, held by the driver for the whole run).

Needs the `beam` extra, `pip install "keras-tricks[beam]"` (Apache Beam with its Google Cloud
connectors, for Dataflow and `gs://`); the rest of `tfrecord_tools` runs without it.

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

Rerunning resumes by the local writer's rule (`tfrecord_tools.plan.resolve`, decided on the
driver, so `overwrite` means the same for both): a shard whose file matches the sha256 recorded in
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
        --extra_package dist/keras_tricks-*.tar.gz   # the sdist of `python -m build --sdist`
"""

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from tfrecord_tools import manifest as mf
from tfrecord_tools import storage
from tfrecord_tools.cli import add_convert_arguments, convert_arguments
from tfrecord_tools.lock import LOCK_NAME, LockInfo, LockLostError, OutputLock
from tfrecord_tools.options import ConversionOptions, EncodingOptions
from tfrecord_tools.plan import (
    ConversionPlan,
    Resolution,
    final_manifest,
    prepare_output,
    read_state,
    resolve,
    verified_entry,
)
from tfrecord_tools.shard import build_shard
from tfrecord_tools.storage import TEMP_MARK, GfileStore, is_remote, join, temp_name
from tfrecord_tools.tfds_info import commit_manifest

__all__ = ["convert_beam", "build_pipeline", "plan_conversion", "BeamConversion", "main"]

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


def _read_bytes(path):
    f = FileSystems.open(path, compression_type=_RAW)
    try:
        return f.read()
    finally:
        f.close()


class BeamStore(GfileStore):
    """`storage.Store` through Beam's `FileSystems` for remote paths (google-cloud-storage on
    `gs://`, as Beam workers have it); local paths as in `GfileStore` (plain `os`)."""

    def exists(self, path):
        return FileSystems.exists(path) if is_remote(path) else super().exists(path)

    def read(self, path):
        if not is_remote(path):
            return super().read(path)
        try:
            return _read_bytes(path)
        except Exception:  # noqa: BLE001 - absent or unreadable: the caller decides
            return None

    def write(self, path, data):
        if not is_remote(path):
            return super().write(path, data)
        try:
            _write_bytes(path, data)
        except Exception as e:  # noqa: BLE001
            raise storage.storage_error(path, e) from e

    def create_exclusive(self, path, data):
        if not is_remote(path):
            return super().create_exclusive(path, data)
        if self.exists(path):
            return False
        self.write(path, data)
        time.sleep(storage._REMOTE_SETTLE_S)
        return self.read(path) == data

    def rename(self, src, dst):
        if not is_remote(src):
            return super().rename(src, dst)
        try:
            FileSystems.rename([src], [dst])
        except Exception as e:  # noqa: BLE001
            raise storage.storage_error(dst, e) from e

    def delete(self, paths):
        remote = [p for p in paths if is_remote(p)]
        super().delete([p for p in paths if not is_remote(p)])
        present = [p for p in remote if FileSystems.exists(p)]
        if present:
            FileSystems.delete(present)

    def list(self, directory, pattern):
        if not is_remote(directory):
            return super().list(directory, pattern)
        matches = FileSystems.match([join(directory, pattern)])[0].metadata_list
        return sorted(m.path.rsplit("/", 1)[-1] for m in matches)

    def makedirs(self, directory):
        if not is_remote(directory):
            super().makedirs(directory)  # gs:// has no directories to make

    def size(self, path):
        if not is_remote(path):
            return super().size(path)
        try:
            return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        except Exception:  # noqa: BLE001 - absent
            return None

    def sha256(self, path):
        if not is_remote(path):
            return super().sha256(path)
        try:
            f = FileSystems.open(path, compression_type=_RAW)
        except Exception:  # noqa: BLE001 - absent
            return None
        try:
            return mf.sha256_stream(f)[0]
        finally:
            f.close()


# --- planning (driver side) --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BeamConversion:
    """Everything the pipeline needs, decided on the driver in one call (`plan_conversion`).

    Attributes:
        plan: the `plan.ConversionPlan` (options, source, shard layout).
        resolution: what the resume rule decided (`plan.resolve`): kept splits, deletions, one
            `ShardTask` per shard with the recorded entries it may keep.
        run_id: this run's id (temporary names, the lock).
    """

    plan: ConversionPlan
    resolution: Resolution
    run_id: str

    @property
    def output(self) -> str:
        return self.plan.output

    def elements(self) -> list:
        """The pipeline's input: `(ShardTask, payload)` per shard."""
        return [(t, self.plan.splits[t.split].payload(t.index)) for t in self.resolution.tasks]


def _options(output, split, num_shards, image_format, kwargs):
    return ConversionOptions(
        str(output).rstrip("/") or str(output),
        split=split,
        num_shards=num_shards,
        image_format=image_format,
        progress=False,
        **kwargs,
    )


def plan_conversion(
    source: Any,
    output: str,
    split: Any = None,
    num_shards: Any = None,
    image_format: str = "png",
    *,
    run_id: str | None = None,
    **kwargs: Any,
) -> BeamConversion:
    """Check the arguments, open the source, read the output and apply the resume rule.

    Writes nothing: `convert_beam` takes the output's lock, applies the decisions
    (`plan.prepare_output`) and runs the pipeline (`build_pipeline`).

    Args:
        source, output, split, num_shards, image_format: as in `tfrecord_tools.convert`.
        run_id: this run's id (default: a new one).
        **kwargs: the other `ConversionOptions` fields (name, quality, compression, seed,
            shuffle, skip_corrupt, label_names, overwrite, alpha).

    Raises:
        ValueError: bad arguments, unknown source, or the output holds what this conversion may
            not replace — the same checks and messages as `convert`.
    """
    options = _options(output, split, num_shards, image_format, kwargs)
    plan = ConversionPlan.build(source, options)
    run_id = run_id or storage.new_run_id()
    store = BeamStore()
    return BeamConversion(plan, resolve(plan, read_state(store, plan), run_id), run_id)


# --- the pipeline ------------------------------------------------------------------------------


class _WriteShardFn(beam.DoFn):
    """Keep a verified shard, or build it (`shard.build_shard`) and commit it atomically; emit
    `(split, index, entry)`."""

    def __init__(self, output: str, encoding: EncodingOptions, run_id: str) -> None:
        self.output = output
        self.encoding = encoding
        self.run_id = run_id
        self.records = Metrics.counter("tfrecord_tools", "records_written")
        self.bytes = Metrics.counter("tfrecord_tools", "bytes_written")
        self.kept = Metrics.counter("tfrecord_tools", "shards_kept")

    def process(self, element):
        task, payload = element
        store = BeamStore()
        final = join(self.output, task.file)
        kept = verified_entry(store, self.output, task)
        if kept is not None:
            self.kept.inc()
            yield task.split, task.index, kept
            return
        tmp = temp_name(final, self.run_id)
        f = FileSystems.create(tmp, mime_type="application/octet-stream", compression_type=_RAW)
        try:
            result = build_shard(payload, self.encoding, f, path=tmp)
        except BaseException:
            f.close()
            store.delete([tmp])
            raise
        f.close()
        entry = result.entry(task.file)
        # The sidecar first, then the rename: a shard under its final name always has a record.
        store.write_atomic(
            mf.sidecar_path(self.output, task.file),
            mf.sidecar_bytes(task.fingerprint, entry),
            self.run_id,
        )
        store.rename(tmp, final)
        self.records.inc(entry["num_records"])
        self.bytes.inc(result.num_bytes)
        logger.info(
            "wrote %s (%d records, %d bytes)", task.file, result.num_records, result.num_bytes
        )
        yield task.split, task.index, entry


def _write_manifest(entries, conversion: BeamConversion):
    store = BeamStore()
    output = conversion.output
    holder = LockInfo.parse(store.read(join(output, LOCK_NAME)))
    if holder is not None and holder.run_id != conversion.run_id:
        raise LockLostError(
            f"conversion into {output!r} stopped: the lock is now held by {holder.describe()}; "
            "this run wrote no manifest.json."
        )
    by_split: dict[str, dict[int, dict]] = {s: {} for s in conversion.plan.splits}
    for split, index, entry in entries:
        by_split[split][index] = entry
    shard_entries = {s: [by_split[s][i] for i in sorted(by_split[s])] for s in by_split}
    manifest = final_manifest(conversion.plan, conversion.resolution, shard_entries)
    commit_manifest(store, output, manifest, conversion.run_id)  # with its tfds metadata
    sidecars = [
        mf.sidecar_path(output, f) for sp in conversion.plan.splits.values() for f in sp.files
    ]
    # This run's temporaries left by retried bundles, then the records of the shards.
    temps = [join(output, f) for f in store.list(output, f"*{TEMP_MARK}{conversion.run_id}-*")]
    store.delete(sidecars + [t for t in temps if not t.endswith(LOCK_NAME)])
    return manifest


def build_pipeline(pipeline: beam.Pipeline, conversion: BeamConversion) -> beam.PCollection:
    """Add the conversion decided by `plan_conversion` to a Beam `pipeline`.

    Run it while holding the output's lock, after `plan.prepare_output` (as `convert_beam`
    does): the pipeline itself only builds shards and writes the manifest.

    Returns:
        The PCollection holding the written manifest (one dict).
    """
    encoding = conversion.plan.options.encoding
    return (
        pipeline
        | "ShardTasks" >> beam.Create(conversion.elements(), reshuffle=False)
        | "Distribute" >> beam.Reshuffle()
        | "EncodeAndWrite"
        >> beam.ParDo(_WriteShardFn(conversion.output, encoding, conversion.run_id))
        | "Collect" >> beam.combiners.ToList()
        | "WriteManifest" >> beam.Map(_write_manifest, conversion)
    )


def convert_beam(
    source: Any,
    output: str,
    split: Any = None,
    num_shards: Any = None,
    image_format: str = "png",
    *,
    pipeline_options: Any = None,
    name: str | None = None,
    quality: int = 95,
    compression: str | None = None,
    seed: int = 0,
    shuffle: bool = True,
    skip_corrupt: bool = False,
    label_names: Any = None,
    overwrite: bool = False,
    alpha: str = "error",
) -> dict:
    """Convert a raw dataset into sharded TFRecords + `manifest.json` with an Apache Beam pipeline.

    Same arguments and the same output as `tfrecord_tools.convert` (byte-identical shards and
    manifest for the same options), with Beam doing the parallelism instead of `num_workers`;
    the same lock and the same resume rule.

    Example:

    ```python
    import numpy as np
    from tfrecord_tools.beam import convert_beam
    x = np.zeros((100, 8, 8, 3), np.uint8); y = np.arange(100) % 10
    convert_beam((x, y), "/tmp/tiny_beam", split="train", num_shards=4, name="tiny")
    ```

    Args:
        source, output, split, num_shards, image_format, name, quality, compression, seed,
            shuffle, skip_corrupt, label_names, overwrite, alpha: as in `tfrecord_tools.convert`.
        pipeline_options: a `PipelineOptions`, or a list of command-line flags for it
            (e.g. `["--runner=DataflowRunner", "--project=...", ...]`). Without a runner the
            pipeline runs locally on `DEFAULT_LOCAL_RUNNER` (the DirectRunner's engine; the
            DirectRunner's `--direct_num_workers` and `--direct_running_mode` apply).

    Returns:
        The manifest dict, as written to `output/manifest.json`.
    """
    kwargs = dict(
        name=name,
        quality=quality,
        compression=compression,
        seed=seed,
        shuffle=shuffle,
        skip_corrupt=skip_corrupt,
        label_names=label_names,
        overwrite=overwrite,
        alpha=alpha,
    )
    options = _options(output, split, num_shards, image_format, kwargs)
    plan = ConversionPlan.build(source, options)  # every check before anything is written
    store = BeamStore()
    run_id = storage.new_run_id()
    store.makedirs(plan.output)
    with OutputLock(plan.output, run_id, store):
        conversion = BeamConversion(plan, resolve(plan, read_state(store, plan), run_id), run_id)
        for note in conversion.resolution.notes:
            logger.warning("%s: %s", plan.output, note)
        prepare_output(store, plan, conversion.resolution, run_id)
        with beam.Pipeline(options=_pipeline_options(pipeline_options)) as pipeline:
            build_pipeline(pipeline, conversion)
    return json.loads(_read_bytes(mf.manifest_path(plan.output)))


def main(argv: Sequence[str] | None = None) -> int:
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
    except (ValueError, FileNotFoundError, ImportError, OSError, RuntimeError) as e:
        # Bad arguments, a refused output, a held lock, a storage failure: exit 2, one line.
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
