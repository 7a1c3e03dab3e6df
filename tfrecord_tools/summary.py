"""Summaries of a converted dataset: counts, features, class histogram, a PNG grid of samples,
and whether the files on disk still match `manifest.json` (`tfrecord_tools.inspect`)."""

from typing import Any

import numpy as np

from tfrecord_tools import manifest as mf
from tfrecord_tools._checks import check_int, fail
from tfrecord_tools.example import encode_png

__all__ = ["inspect", "format_summary", "sample_grid", "files_problems"]


def _label_strip(labels, height, width, pad):
    """A white `(len(labels) * (height + pad) + pad, width)` uint8 strip, label r drawn in black
    in row r (PIL's default font), clipped to its row."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    strip = np.full((len(labels) * (height + pad) + pad, width), 255, np.uint8)
    for r, label in enumerate(labels):
        row = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(row)
        top, bottom = draw.textbbox((0, 0), label, font=font)[1::2]
        draw.text((pad, (height - (bottom - top)) // 2 - top), label, fill=0, font=font)
        y = pad + r * (height + pad)
        strip[y : y + height] = np.asarray(row)
    return strip


def _text_width(labels):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    return max((int(np.ceil(draw.textlength(label, font=font))) for label in labels), default=0)


def sample_grid(
    images_by_class: list,
    samples_per_class: int,
    pad: int = 2,
    row_labels: list | None = None,
) -> np.ndarray:
    """Tile images into one uint8 array: row r holds up to `samples_per_class` images of class r.

    Images of different sizes are placed top-left in cells of the largest size; grey images are
    repeated to RGB when the set mixes channel counts. Gaps and borders are filled with 255.
    With `row_labels`, a white margin on the left holds each row's label in black (PIL's
    default font), as wide as the widest label plus `2 * pad`; the cells start right of it.

    Example:

    ```python
    import numpy as np
    from tfrecord_tools.summary import sample_grid
    rows = [[np.zeros((8, 8, 1), np.uint8)] * 3, [np.ones((8, 8, 1), np.uint8)] * 3]
    sample_grid(rows, 3).shape  # (2 * (8 + 2) + 2, 3 * (8 + 2) + 2, 1) = (22, 32, 1)
    ```
    """
    samples_per_class = check_int("samples_per_class", samples_per_class)
    rows = [imgs[:samples_per_class] for imgs in images_by_class]
    all_images = [im for row in rows for im in row]
    if not all_images:
        fail("images_by_class", "rows of images, at least one image in all", images_by_class)
    channels = max(im.shape[2] for im in all_images)
    cell_h = max(im.shape[0] for im in all_images)
    cell_w = max(im.shape[1] for im in all_images)
    grid = np.full(
        (len(rows) * (cell_h + pad) + pad, samples_per_class * (cell_w + pad) + pad, channels),
        255,
        np.uint8,
    )
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            if im.shape[2] != channels:
                im = np.repeat(im[:, :, :1], channels, axis=2)
            y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
            grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    if row_labels is None:
        return grid
    if len(row_labels) != len(rows):
        fail("row_labels", f"one label per row of images_by_class ({len(rows)})", row_labels)
    labels = [str(label) for label in row_labels]
    strip = _label_strip(labels, cell_h, _text_width(labels) + 2 * pad, pad)
    strip = np.repeat(strip[:, :, None], channels, axis=2)
    if channels == 4:
        strip[:, :, 3] = 255  # an opaque margin
    return np.concatenate([strip, grid], axis=1)


def files_problems(path: str, manifest: dict | None = None) -> list:
    """`(file, message)` for every way the files on disk differ from `manifest.json`: a shard
    missing or not its recorded size, or a shard file of a listed split that the manifest does
    not list. Cheap (one stat per shard, one listing per split); `verify` reads every byte."""
    import tensorflow as tf

    from tfrecord_tools.reader import check_shard_sizes

    manifest = manifest or mf.read_manifest(path)
    problems = []
    for split, entry in manifest["splits"].items():
        problems += check_shard_sizes(path, split, manifest)
        listed = {s["file"] for s in entry["shards"]}
        pattern = mf.join(path, f"{manifest['name']}-{split}.tfrecord-*-of-*")
        for found in sorted(tf.io.gfile.glob(pattern)):
            base = found.rstrip("/").split("/")[-1]
            if base not in listed and not base.endswith(".json") and ".tmp-" not in base:
                problems.append((base, "shard file not listed in manifest.json"))
    return problems


def inspect(
    path: str,
    split: str | None = None,
    grid_path: str | None = None,
    samples_per_class: int = 8,
    max_classes: int = 10,
    max_scan: int = 20_000,
) -> dict:
    """Describe the dataset at `path`: counts per split, features, class histogram; optionally
    write a PNG grid of sample images (one row per class, first `max_classes` classes, each
    row labelled with its class name). Says when the files on disk do not match the manifest
    (`"problems"`, see `files_problems`); the grid is then sampled from the files as they are.

    Example:

    ```python
    from tfrecord_tools.summary import format_summary, inspect
    summary = inspect("/tmp/fmnist", "train", grid_path="/tmp/fmnist_grid.png")
    print(format_summary(summary))
    ```

    Args:
        path: the converted dataset's directory (local or `gs://`).
        split: the split whose samples go in the grid (default: "train" if present, else the first).
        grid_path: where to write the PNG grid (local or `gs://`); None writes none.
        samples_per_class: images per grid row.
        max_classes: grid rows.
        max_scan: records read at most while looking for samples of every class.

    Returns:
        dict: the manifest's dataset fields, `"splits"` with per-split `num_records`,
        `num_shards`, `num_bytes`, `num_skipped`, `label_counts`, and `"grid"` (path or None),
        `"grid_classes"` (label of each grid row), `"problems"` (`(file, message)` pairs,
        empty when the files match the manifest).
    """
    manifest = mf.read_manifest(path)
    splits = {
        name: {
            "num_records": entry["num_records"],
            "num_source_records": entry["num_source_records"],
            "num_shards": entry["num_shards"],
            "num_bytes": sum(s["num_bytes"] for s in entry["shards"]),
            "num_skipped": len(entry["skipped"]),
            "label_counts": entry["label_counts"],
            "mean": entry["mean"],
            "std": entry["std"],
        }
        for name, entry in manifest["splits"].items()
    }
    summary = {
        key: manifest.get(key)
        for key in (
            "name",
            "source",
            "image_format",
            "quality",
            "compression",
            "image_shape",
            "num_classes",
            "label_names",
            "mean",
            "std",
            "feature_spec",
        )
    }
    summary["path"] = str(path)
    summary["splits"] = splits
    summary["problems"] = files_problems(path, manifest)
    summary["grid"] = None
    summary["grid_classes"] = []
    if grid_path is not None:
        import tensorflow as tf

        from tfrecord_tools.reader import read_dataset

        if split is None:
            split = "train" if "train" in splits else next(iter(splits))
        wanted = [c for c, n in enumerate(splits[split]["label_counts"]) if n][:max_classes]
        found: dict[int, list[Any]] = {c: [] for c in wanted}
        # verify=False: a damaged dataset is still worth looking at; the summary says so.
        ds = read_dataset(path, split, deterministic=True, verify=False)
        for image, label in ds.take(max_scan):
            label = int(label)
            if label in found and len(found[label]) < samples_per_class:
                found[label].append(image.numpy())
                if all(len(v) >= samples_per_class for v in found.values()):
                    break
        names = summary.get("label_names") or []
        grid = sample_grid(
            [found[c] for c in wanted],
            samples_per_class,
            row_labels=[names[c] if c < len(names) else str(c) for c in wanted],
        )
        with tf.io.gfile.GFile(str(grid_path), "wb") as f:
            f.write(encode_png(grid))
        summary["grid"] = str(grid_path)
        summary["grid_classes"] = wanted
    return summary


def format_summary(summary: dict, width: int = 40) -> str:
    """Human-readable text of an `inspect` summary, with a bar per class."""
    names = summary.get("label_names") or []
    lines = [
        f"{summary['path']}: dataset {summary['name']!r} from {summary['source']}",
        f"  images: {summary['image_format']}"
        + (f" (quality {summary['quality']})" if summary.get("quality") else "")
        + f", shape {summary['image_shape'] or 'variable'}"
        + f", compression {summary['compression'] or 'none'}",
        f"  classes: {summary['num_classes']}; mean {_fmt(summary['mean'])}, "
        f"std {_fmt(summary['std'])} (0..255, train split)",
        "  features: "
        + ", ".join(f"{k} ({v['dtype']})" for k, v in summary["feature_spec"].items()),
    ]
    for split, info in summary["splits"].items():
        lines.append(
            f"  split {split}: {info['num_records']} records in {info['num_shards']} shards, "
            f"{info['num_bytes'] / 1e6:.1f} MB, {info['num_skipped']} skipped"
        )
        top = max(info["label_counts"] or [1])
        for label, count in enumerate(info["label_counts"]):
            name = names[label] if label < len(names) else str(label)
            bar = "#" * round(width * count / top) if top else ""
            lines.append(f"    {label:>4} {name[:16]:<16} {count:>8} {bar}")
    problems = summary.get("problems") or []
    if problems:
        lines.append(
            f"  WARNING: {len(problems)} file(s) on disk do not match manifest.json "
            f"(run `tfrecord-tools verify {summary['path']}`):"
        )
        lines += [f"    {file}: {message}" for file, message in problems]
    if summary.get("grid"):
        rows = ", ".join(names[c] if c < len(names) else str(c) for c in summary["grid_classes"])
        lines.append(f"  sample grid: {summary['grid']} (rows: {rows})")
    return "\n".join(lines)


def _fmt(values):
    return "n/a" if values is None else "[" + ", ".join(f"{v:.2f}" for v in values) + "]"
