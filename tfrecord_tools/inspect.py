"""Summaries of a converted dataset: counts, features, class histogram, a PNG grid of samples."""

import numpy as np

from tfrecord_tools import manifest as mf
from tfrecord_tools.example import encode_png

__all__ = ["inspect", "format_summary", "sample_grid"]


def sample_grid(images_by_class, samples_per_class, pad=2):
    """Tile images into one uint8 array: row r holds up to `samples_per_class` images of class r.

    Images of different sizes are placed top-left in cells of the largest size; grey images are
    repeated to RGB when the set mixes channel counts. Gaps and borders are filled with 255.
    """
    rows = [imgs[:samples_per_class] for imgs in images_by_class]
    all_images = [im for row in rows for im in row]
    if not all_images:
        raise ValueError("no images to tile.")
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
    return grid


def inspect(path, split=None, grid_path=None, samples_per_class=8, max_classes=10, max_scan=20_000):
    """Describe the dataset at `path`: counts per split, features, class histogram; optionally
    write a PNG grid of sample images (one row per class, first `max_classes` classes).

    Example:

    ```python
    from tfrecord_tools.inspect import format_summary, inspect
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
        `"grid_classes"` (label of each grid row).
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
    summary["grid"] = None
    summary["grid_classes"] = []
    if grid_path is not None:
        import tensorflow as tf

        from tfrecord_tools.reader import read_dataset

        if split is None:
            split = "train" if "train" in splits else next(iter(splits))
        wanted = [c for c, n in enumerate(splits[split]["label_counts"]) if n][:max_classes]
        found = {c: [] for c in wanted}
        for image, label in read_dataset(path, split, deterministic=True).take(max_scan):
            label = int(label)
            if label in found and len(found[label]) < samples_per_class:
                found[label].append(image.numpy())
                if all(len(v) >= samples_per_class for v in found.values()):
                    break
        grid = sample_grid([found[c] for c in wanted], samples_per_class)
        with tf.io.gfile.GFile(str(grid_path), "wb") as f:
            f.write(encode_png(grid))
        summary["grid"] = str(grid_path)
        summary["grid_classes"] = wanted
    return summary


def format_summary(summary, width=40):
    """Human-readable text of an `inspect` summary, with a bar per class."""
    names = summary.get("label_names") or []
    lines = [
        f"{summary['path']}: dataset {summary['name']!r} from {summary['source']}",
        f"  images: {summary['image_format']}"
        + (f" (quality {summary['quality']})" if summary.get("quality") else "")
        + f", shape {summary['image_shape'] or 'variable'}, compression {summary['compression'] or 'none'}",
        f"  classes: {summary['num_classes']}; mean {_fmt(summary['mean'])}, std {_fmt(summary['std'])} (0..255, train split)",
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
    if summary.get("grid"):
        rows = ", ".join(names[c] if c < len(names) else str(c) for c in summary["grid_classes"])
        lines.append(f"  sample grid: {summary['grid']} (rows: {rows})")
    return "\n".join(lines)


def _fmt(values):
    return "n/a" if values is None else "[" + ", ".join(f"{v:.2f}" for v in values) + "]"
