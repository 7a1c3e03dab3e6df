"""Planning a conversion, and the one resume rule both writers (local and Beam) follow.

`ConversionPlan.build(source, options)` opens the source and fixes, in one call, everything a
writer needs before touching the output: the dataset name, the configuration recorded in the
manifest, and per split the shard files, the source records of each shard and the fingerprint
that a `<shard>.json` sidecar must match to be resumed. The plan is frozen.

Sharding: the records of a split get a seeded permutation (`numpy.random.default_rng(seed)`),
cut into `k` contiguous pieces (`shard_indices`): shard `i` holds `order[i*n//k : (i+1)*n//k]`.
The bytes of every shard depend only on the source, `seed` and the encoding options.

The resume rule (`read_state` reads the output, `resolve` decides, `prepare_output` applies),
for the splits being converted ("named"); splits of the output that are not named are never
deleted nor changed:

1. manifest.json damaged: refused ("invalid manifest: ..."), or with `overwrite` removed first.
2. Manifest with different settings (name, source, format, quality, compression, shuffle, seed,
   class names): refused; with `overwrite` the whole conversion is replaced — only when every
   split it holds is named (else refused: one manifest cannot describe two conversions).
3. A named split recorded with another shard or record count: refused; with `overwrite` that
   split alone is replaced (the manifest is first rewritten without it, so it never lists
   missing shards, then its old shards are deleted); other splits stay listed.
4. Sidecars (`<shard>.json`, left by an interrupted run) of a named split with another
   fingerprint: refused; with `overwrite` deleted with their shards. Shard files of a named
   split that nothing records (another shard count, lost sidecar): refused; with `overwrite`
   deleted. So old shards never stay beside new ones.
5. Every shard whose file matches a recorded entry (manifest or sidecar: size and sha256) is
   kept; the rest are rebuilt. Temporary files of named splits and of manifest.json that are
   not this run's are removed: the caller holds the output's lock, so their run is dead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfrecord_tools import manifest as mf
from tfrecord_tools._checks import fail
from tfrecord_tools.options import ConversionOptions
from tfrecord_tools.sources import Source, open_source
from tfrecord_tools.storage import TEMP_MARK, Store, join, temp_run_id
from tfrecord_tools.tfds_info import METADATA_NAMES, commit_manifest, remove_manifest

__all__ = [
    "ConversionPlan",
    "SplitPlan",
    "ShardTask",
    "OutputState",
    "Resolution",
    "shard_indices",
    "read_state",
    "resolve",
    "prepare_output",
    "partial_conversion_error",
]


def default_name(description: str) -> str:
    """A dataset name from a source description (`idx:/data/fashion` -> `fashion`)."""
    scheme, _, rest = description.partition(":")
    if scheme in ("tfds", "keras"):
        base = rest.split("?", 1)[0]  # tfds:NAME?data_dir=DIR names NAME
    elif scheme in ("idx", "cifar", "folder"):
        base = os.path.basename(os.path.normpath(rest))
    elif scheme == "numpy":
        base = os.path.splitext(os.path.basename(rest))[0]
    else:
        base = "dataset"
    base = re.sub(r"[^A-Za-z0-9_.]+", "_", base).strip("_")
    return base or "dataset"


def default_num_shards(num_records: int) -> int:
    # ~10k records per shard keeps shards of small images at a few MB and gives enough files
    # for parallel interleaved reads; capped at tfds's 1024 shards for ImageNet-size splits.
    return max(1, min(1024, -(-num_records // 10_000)))


def shard_indices(
    num_records: int, num_shards: int, seed: int = 0, shuffle: bool = True
) -> list[np.ndarray]:
    """The source record numbers of every shard: a seeded permutation cut into contiguous pieces.

    With `order = numpy.random.default_rng(seed).permutation(n)` (or `arange(n)` without
    shuffle), shard `i` of `k` holds `order[i*n//k : (i+1)*n//k]`, so shard sizes differ by at
    most one and depend only on `n`, `k`, `seed` and `shuffle`.

    Example:

    ```python
    from tfrecord_tools.plan import shard_indices
    [s.tolist() for s in shard_indices(5, 2, shuffle=False)]  # [[0, 1], [2, 3, 4]]
    ```
    """
    order = (
        np.random.default_rng(seed).permutation(num_records) if shuffle else np.arange(num_records)
    )
    bounds = [(i * num_records) // num_shards for i in range(num_shards + 1)]
    return [order[bounds[i] : bounds[i + 1]] for i in range(num_shards)]


def partial_conversion_error(output: str, where: str, record: Any, fingerprint: dict) -> ValueError:
    """The ValueError for a `<shard>.json` sidecar (at `where`) left by a different conversion."""
    config = record.get("config") if isinstance(record, dict) else None
    return ValueError(
        f"output {output!r} holds a partial conversion with different settings "
        f"({where}.json: {config!r}; requested {fingerprint!r}). "
        "Choose another output, or pass overwrite=True (CLI: --overwrite)."
    )


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """One split of a plan: its source records, shard files and fingerprint."""

    name: str
    data: Any  # sources.ArraySplit | sources.FileSplit
    files: tuple[str, ...]
    indices: tuple[np.ndarray, ...]
    fingerprint: dict

    @property
    def num_records(self) -> int:
        return self.data.num_records

    @property
    def num_shards(self) -> int:
        return len(self.files)

    def payload(self, index: int) -> Any:
        """The picklable records of shard `index` (sent to a worker)."""
        return self.data.payload(self.indices[index])


@dataclasses.dataclass(frozen=True)
class ConversionPlan:
    """A checked conversion before any file is written: options, opened source, shard layout.

    Build it with `ConversionPlan.build(source, options)`; `convert` and
    `tfrecord_tools.beam` both write from it, so they name, cut and encode shards identically.

    Example:

    ```python
    import numpy as np
    from tfrecord_tools.options import ConversionOptions
    from tfrecord_tools.plan import ConversionPlan
    x = np.zeros((10, 4, 4, 1), np.uint8); y = np.arange(10) % 2
    plan = ConversionPlan.build((x, y), ConversionOptions("/tmp/tiny", num_shards=3, name="tiny"))
    plan.splits["train"].files[0]                          # 'tiny-train.tfrecord-00000-of-00003'
    [len(s) for s in plan.splits["train"].indices]         # [3, 3, 4]
    ```

    Attributes:
        options: the `ConversionOptions`.
        source: the opened `sources.Source` (only the named splits).
        name: the dataset name (from the options or derived from the source).
        config: the manifest's configuration keys (`manifest.CONFIG_KEYS`).
        splits: `{split: SplitPlan}` in source order.
    """

    options: ConversionOptions
    source: Source
    name: str
    config: dict
    splits: Mapping[str, SplitPlan]

    @classmethod
    def build(cls, source: Any, options: ConversionOptions) -> ConversionPlan:
        """Open `source` (see `tfrecord_tools.convert`) and plan every split (no output I/O).

        Raises:
            ValueError: unknown source or split, a bad split name, or more shards than records.
        """
        split: Any = list(options.split) if options.split else None
        if split and len(split) == 1 and isinstance(source, (tuple, list)):
            split = split[0]  # an (x, y) pair becomes the one split so named
        label_names = options.label_names
        src = open_source(
            source,
            split=split,
            label_names=list(label_names) if isinstance(label_names, tuple) else label_names,
            # The user's name only (never the derived one): it may name a known dataset whose
            # class names an IDX source lacks.
            name=options.name,
            alpha=options.alpha,
        )
        name = options.name or default_name(src.description)
        mf.check_name(name, "name")
        for split_name in src.splits:
            mf.check_name(split_name, "split")
        if isinstance(options.num_shards, Mapping):
            unknown = sorted(set(options.num_shards) - set(src.splits))
            if unknown:
                known = sorted(src.splits)
                allowed = f"an integer or a mapping keyed by splits of the source {known}"
                fail("num_shards", allowed, dict(options.num_shards))
        config = {
            "name": name,
            "source": src.description,
            "image_format": options.image_format,
            "quality": options.quality if options.image_format == "jpeg" else None,
            "compression": options.compression,
            "shuffle": options.shuffle,
            "seed": options.seed,
        }
        splits = {}
        for split_name, data in src.splits.items():
            n = data.num_records
            k = options.shards_for(split_name) or default_num_shards(n)
            if k > max(n, 1):
                fail("num_shards", f"at most the {n} records of split {split_name!r}", k)
            splits[split_name] = SplitPlan(
                name=split_name,
                data=data,
                files=tuple(mf.shard_name(name, split_name, i, k) for i in range(k)),
                indices=tuple(shard_indices(n, k, options.seed, options.shuffle)),
                fingerprint=dict(config, split=split_name, num_shards=k, num_source_records=n),
            )
        return cls(options, src, name, config, splits)

    @property
    def output(self) -> str:
        return self.options.output

    # Small helpers, by split name.
    def shard_files(self, split: str) -> list[str]:
        return list(self.splits[split].files)

    def shard_indices(self, split: str) -> list[np.ndarray]:
        return list(self.splits[split].indices)

    def fingerprint(self, split: str) -> dict:
        return dict(self.splits[split].fingerprint)

    def conflicts(self, existing: dict) -> list[str]:
        """Settings of an `existing` manifest that differ from this conversion (whole output)."""
        conflicts = mf.config_conflicts(existing, self.config)
        names = self.source.label_names
        if names is not None and existing.get("label_names") not in (None, names):
            conflicts.append(
                f"label_names: existing {existing['label_names']!r} != requested {names!r}"
            )
        return conflicts

    def split_conflict(self, split: str, old: dict) -> str | None:
        """How a named split recorded as `old` differs in layout (None: same)."""
        plan = self.splits[split]
        if (old["num_shards"], old["num_source_records"]) != (plan.num_shards, plan.num_records):
            return (
                f"split {split!r}: existing {old['num_shards']} shards of "
                f"{old['num_source_records']} records != requested {plan.num_shards} "
                f"shards of {plan.num_records} records"
            )
        return None

    def manifest_label_names(self, existing: dict | None) -> list | None:
        """Class names for the new manifest: the source's, else those of `existing` (or None)."""
        if self.source.label_names is not None:
            return list(self.source.label_names)
        return (existing or {}).get("label_names")


@dataclasses.dataclass(frozen=True)
class OutputState:
    """What the output holds, as far as the named splits are concerned (`read_state`)."""

    manifest: dict | None
    manifest_error: str | None
    files: tuple[str, ...]  # base names: named splits' shards, sidecars, temporaries
    sidecars: Mapping[str, Any]  # sidecar base name -> parsed JSON (None if unreadable)


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard to produce: kept if its file matches one of `candidates`, else built."""

    split: str
    index: int
    file: str
    fingerprint: dict
    candidates: tuple[dict, ...]


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What to do with an output before and while writing (`resolve`).

    Attributes:
        carried: manifest entries of splits kept from the existing manifest (not named, or
            named and unchanged — the latter are replaced by the new entries at the end).
        interim: the manifest to write before deleting anything ("keep": leave it; a dict:
            write it; None: delete manifest.json).
        delete: base names to delete, after `interim` is in place.
        tasks: one `ShardTask` per shard of every named split, in split then shard order.
        label_names: class names for the final manifest.
        notes: what was decided, for the log.
    """

    carried: Mapping[str, dict]
    interim: Any
    delete: tuple[str, ...]
    tasks: tuple[ShardTask, ...]
    label_names: list | None
    notes: tuple[str, ...]


def _split_prefix(name: str, split: str) -> str:
    return f"{name}-{split}.tfrecord-"


def verified_entry(store: Store, output: str, task: ShardTask) -> dict | None:
    """The recorded entry whose size and sha256 the shard file on disk matches, else None.

    The local writer and the Beam pipeline both keep a finished shard by this one rule.
    """
    if not task.candidates:
        return None
    path = join(output, task.file)
    size = store.size(path)
    candidates = [c for c in task.candidates if c.get("num_bytes") == size]
    if not candidates:
        return None
    digest = store.sha256(path)
    return next((c for c in candidates if c.get("sha256") == digest), None)


def read_state(store: Store, plan: ConversionPlan) -> OutputState:
    """Read what the resume rule needs from the output (manifest, named splits' files)."""
    output = plan.output
    raw = store.read(mf.manifest_path(output))
    manifest, error = None, None
    if raw is not None:
        try:
            manifest = mf.parse_manifest(raw, mf.manifest_path(output))
        except mf.InvalidManifestError as e:
            error = str(e)
    files = []
    for own in (mf.MANIFEST_NAME, *METADATA_NAMES):  # manifest.json and its tfds metadata
        files += store.list(output, f"{own}{TEMP_MARK}*")
    for split in plan.splits:
        files += store.list(output, _split_prefix(plan.name, split) + "*")
    sidecars = {}
    for f in files:
        if f.endswith(".json") and TEMP_MARK not in f:
            data = store.read(join(output, f))
            try:
                sidecars[f] = json.loads(data) if data is not None else None
            except ValueError:
                sidecars[f] = None
    return OutputState(manifest, error, tuple(sorted(set(files))), sidecars)


def _refusal(plan: ConversionPlan, conflicts: list[str]) -> ValueError:
    return ValueError(
        f"output {plan.output!r} already holds a different conversion (its manifest.json "
        f"differs: {'; '.join(conflicts)}). Choose another output, or pass overwrite=True "
        "(CLI: --overwrite) to replace it."
    )


def resolve(plan: ConversionPlan, state: OutputState, run_id: str) -> Resolution:
    """Apply the resume rule (module docstring) to `state`; no I/O.

    Raises:
        ValueError: the output holds something this conversion may not replace (without
            `overwrite`, or not even with it: splits of another conversion the user did not name).
    """
    overwrite = plan.options.overwrite
    named = plan.splits
    notes: list[str] = []
    delete: list[str] = []
    interim: Any = "keep"
    existing = state.manifest
    if state.manifest_error is not None:
        if not overwrite:
            raise ValueError(
                f"{state.manifest_error}. Repair or remove it, or pass overwrite=True "
                "(CLI: --overwrite) to convert again and replace it."
            )
        notes.append(f"{state.manifest_error}; replacing it (overwrite).")
        interim, existing = None, None
    carried: dict = {}
    candidates: dict = {s: [[] for _ in p.files] for s, p in named.items()}
    replaced: set = set()
    if existing is not None:
        conflicts = plan.conflicts(existing)
        if conflicts:
            if not overwrite:
                raise _refusal(plan, conflicts)
            others = sorted(s for s in existing["splits"] if s not in named)
            if others:
                raise ValueError(
                    f"output {plan.output!r} holds splits {others} of a conversion with other "
                    f"settings ({'; '.join(conflicts)}); replacing only {sorted(named)} would "
                    "leave one manifest describing two conversions. Convert every split "
                    "(no split=/--split), or choose another output."
                )
            notes.append(f"replacing the existing conversion ({'; '.join(conflicts)}).")
            delete += [s["file"] for sp in existing["splits"].values() for s in sp["shards"]]
            interim, existing = None, None
    if existing is not None:
        split_conflicts = []
        for split, old in existing["splits"].items():
            if split not in named:
                carried[split] = old
                continue
            why = plan.split_conflict(split, old) if "num_shards" in old else "no num_shards"
            if why is None:
                carried[split] = old
                for i, shard in enumerate(old["shards"]):
                    if shard["file"] == named[split].files[i]:
                        candidates[split][i].append(shard)
            else:
                split_conflicts.append(why)
                replaced.add(split)
                delete += [s["file"] for s in old["shards"]]
        if split_conflicts:
            if not overwrite:
                raise _refusal(plan, split_conflicts)
            notes.append(f"replacing {'; '.join(split_conflicts)} (overwrite).")
            kept = {s: e for s, e in existing["splits"].items() if s not in replaced}
            interim = (
                mf.manifest_from_config(
                    {k: existing.get(k) for k in mf.CONFIG_KEYS}, kept, existing.get("label_names")
                )
                if kept
                else None
            )
    label_names = plan.manifest_label_names(existing)

    deleted = set(delete)
    for split, sp in named.items():
        prefix = _split_prefix(plan.name, split)
        ours = set(sp.files)
        listed = {s["file"] for s in carried.get(split, {}).get("shards", [])}
        orphans = []
        for f in state.files:
            if not f.startswith(prefix) or f in deleted:
                continue
            if TEMP_MARK in f:
                if temp_run_id(f) != run_id:
                    delete.append(f)  # the lock proves its run is over
                continue
            if f.endswith(".json"):
                record = state.sidecars.get(f)
                shard_file = f[: -len(".json")]
                if isinstance(record, dict) and record.get("config") == sp.fingerprint:
                    if shard_file in ours and isinstance(record.get("shard"), dict):
                        candidates[split][sp.files.index(shard_file)].append(record["shard"])
                    continue
                if record is not None and not overwrite:
                    raise partial_conversion_error(
                        plan.output, join(plan.output, shard_file), record, sp.fingerprint
                    )
                # A different conversion's (or unreadable) record: it and its shard go.
                delete.append(f)
                if shard_file not in ours and shard_file in state.files:
                    delete.append(shard_file)
                    deleted.add(shard_file)
                continue
            if f not in ours and f not in listed:
                orphans.append(f)
        orphans = [f for f in orphans if f not in deleted]
        if orphans:
            if not overwrite:
                raise ValueError(
                    f"output {plan.output!r} holds shard files of split {split!r} that no "
                    f"manifest or record describes ({', '.join(orphans[:3])}"
                    f"{', ...' if len(orphans) > 3 else ''}; left by a conversion with another "
                    "shard count?). Pass overwrite=True (CLI: --overwrite) to delete them, or "
                    "choose another output."
                )
            notes.append(f"deleting {len(orphans)} stray shard file(s) of split {split!r}.")
            delete += orphans
    for f in state.files:
        own = f.split(TEMP_MARK, 1)[0] in (mf.MANIFEST_NAME, *METADATA_NAMES)
        if own and TEMP_MARK in f and temp_run_id(f) != run_id:
            delete.append(f)
    tasks = tuple(
        ShardTask(split, i, file, sp.fingerprint, tuple(candidates[split][i]))
        for split, sp in named.items()
        for i, file in enumerate(sp.files)
    )
    return Resolution(
        carried=carried,
        interim=interim,
        delete=tuple(dict.fromkeys(delete)),
        tasks=tasks,
        label_names=label_names,
        notes=tuple(notes),
    )


def prepare_output(store: Store, plan: ConversionPlan, resolution: Resolution, run_id: str) -> None:
    """Apply a `Resolution` before writing: first the interim manifest, then the deletions."""
    if resolution.interim is None:
        remove_manifest(store, plan.output)
    elif isinstance(resolution.interim, dict):
        commit_manifest(store, plan.output, resolution.interim, run_id)  # with its tfds metadata
    store.delete([join(plan.output, f) for f in resolution.delete])


def final_manifest(plan: ConversionPlan, resolution: Resolution, entries: Mapping) -> dict:
    """The manifest after writing: carried splits plus the named splits' new entries.

    Args:
        entries: `{split: [shard entry per shard, in order]}` of every named split.

    Raises:
        ValueError: a split's counts do not reconcile (`manifest.split_entry`).
    """
    splits = {s: e for s, e in resolution.carried.items() if s not in plan.splits}
    for split, sp in plan.splits.items():
        splits[split] = mf.split_entry(list(entries[split]), sp.num_records)
    return mf.manifest_from_config(plan.config, splits, resolution.label_names)
