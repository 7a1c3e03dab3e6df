"""Figures of a training run: augmentation grids, confusion matrices, the schedule and curves.

`augmentation_grid` / `save_augmentation_grid` show what an augmentation does (each image beside
several augmented copies), `confusion_matrix` / `save_confusion_matrix` where a classifier errs,
`schedule_figure` the learning rate at every step, `curves_figure` a `History`'s loss,
accuracy and learning rate; `keras-tricks demo` draws its report with them.

Needs matplotlib (the `plot` extra); Keras and matplotlib are imported when a figure is drawn.
The docs figure (`fashion_mnist_grid`) shows Fashion-MNIST (Xiao et al. 2017,
https://arxiv.org/abs/1708.07747) through Page's CIFAR-10 augmentation (pad 4 reflect + crop,
flip, 8x8 cutout) and an Inception-style random-resized crop:

```
python -m keras_tricks.plotting --output docs/augment_grid.png
```
"""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_tricks._checks import check_int, check_number, check_range, fail

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn
    from matplotlib.figure import Figure

__all__ = [
    "augmentation_grid",
    "save_augmentation_grid",
    "fashion_mnist_grid",
    "confusion_matrix",
    "save_confusion_matrix",
    "schedule_figure",
    "curves_figure",
]


def _check_images(images: Any) -> np.ndarray:
    """`images` as an (N, H, W, C) array with N >= 1 and C in (1, 3), or a ValueError."""
    array = np.asarray(images)
    images = array[..., None] if array.ndim == 3 else array
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        fail("images.shape", "(N, H, W), (N, H, W, 1) or (N, H, W, 3) with N >= 1", array.shape)
    return images


def _check_title(title: Any) -> str | None:
    if title is not None and not isinstance(title, str):
        fail("title", "a string or None", title)
    return title


def _check_path(path: Any) -> str | os.PathLike:
    if not isinstance(path, (str, os.PathLike)):
        fail("path", "a file name (str or os.PathLike)", path)
    return path


def augmentation_grid(images: Any, augmentation: Any, num_augmentations: int = 7) -> np.ndarray:
    """Augment every image `num_augmentations` times: array (N, 1 + num_augmentations, H', W', C).

    Column 0 holds the originals; each further column is one call of `augmentation` on the
    whole batch with `training=True`, so it shows the per-image randomness of a batched layer.
    Output images of a different size (e.g. `RandomResizedCrop`) are returned as the
    augmentation produced them; the originals are then resized to match for display.

    Args:
        images: (N, H, W[, C]) array, uint8 or float.
        augmentation: a Keras layer, `keras.Sequential`, or any callable `f(batch, training=True)`.
        num_augmentations: augmented copies per image (>= 1).

    Example:

    ```python
    import numpy as np
    from keras_tricks import augment
    from keras_tricks.plotting import augmentation_grid
    x = np.zeros((2, 28, 28), "uint8")
    assert augmentation_grid(x, augment.RandomFlip(), 3).shape == (2, 4, 28, 28, 1)
    ```
    """
    import keras
    from keras import ops

    images = _check_images(images)
    if not callable(augmentation):
        fail("augmentation", "a Keras layer or a callable f(batch, training=True)", augmentation)
    num_augmentations = check_int("num_augmentations", num_augmentations, minimum=1)
    columns = [
        ops.convert_to_numpy(augmentation(images, training=True)) for _ in range(num_augmentations)
    ]
    size = columns[0].shape[1:3]
    originals = images
    if tuple(size) != images.shape[1:3]:
        originals = ops.convert_to_numpy(
            keras.layers.Resizing(*size, crop_to_aspect_ratio=True)(images.astype("float32"))
        )
    originals = originals.astype(columns[0].dtype)
    return np.stack([originals] + columns, axis=1)


def save_augmentation_grid(
    images: Any,
    augmentation: Any,
    path: str | os.PathLike,
    num_augmentations: int = 7,
    title: str | None = None,
    value_range: tuple[float, float] | None = None,
) -> str | os.PathLike:
    """Write `augmentation_grid(images, augmentation)` to a PNG: one row per image.

    Args:
        images: (N, H, W[, C]) array.
        augmentation: layer or callable, as in `augmentation_grid`.
        path: output PNG file name (its directory is created).
        num_augmentations: augmented copies per image.
        title: optional figure title.
        value_range: (low, high) of pixel values for display; None means (0, 255) for integer
            images and the grid's min/max for floats.

    Returns:
        `path`.

    Example:

    ```python
    import numpy as np, tempfile, os
    from keras_tricks import augment
    from keras_tricks.plotting import save_augmentation_grid
    x = np.random.randint(0, 256, (3, 28, 28), dtype="uint8")
    out = save_augmentation_grid(x, augment.Cutout(8), os.path.join(tempfile.mkdtemp(), "g.png"))
    ```
    """
    _check_path(path)
    _check_title(title)
    if value_range is not None:
        value_range = check_range("value_range", value_range)
    grid = augmentation_grid(images, augmentation, num_augmentations)
    return _save_grid(grid, path, title, value_range)


def _save_grid(
    grid: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
    value_range: tuple[float, float] | None = None,
) -> str | os.PathLike:
    """Draw a (rows, cols, H, W, C) grid of images to the PNG `path` (arguments checked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = grid.shape[:2]
    if value_range is None:
        value_range = (
            (0, 255) if grid.dtype.kind in "ui" else (float(grid.min()), float(grid.max()))
        )
    low, high = value_range
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.2 * cols, 1.2 * rows + (0.6 if title else 0)), squeeze=False
    )
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            img = (grid[r, c].astype("float32") - low) / max(high - low, 1e-12)
            img = np.clip(img, 0.0, 1.0)
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"aug {c}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fashion_mnist_grid(
    path: str | os.PathLike,
    num_images: int = 6,
    num_augmentations: int = 7,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
) -> str | os.PathLike:
    """The docs figure: Fashion-MNIST test images through two augmentation chains.

    Rows 1..num_images: pad 4 (reflect) + per-image crop, flip, 8x8 cutout (Page's CIFAR-10
    chain); the next rows: random-resized crop (scale (0.25, 1)) + flip.

    Args:
        path: output PNG.
        num_images: images per chain (>= 1; the two chains take 2 * num_images test images).
        num_augmentations: augmented copies per image (>= 1).
        seed: seeds the image choice and the layers (an integer >= 0).
        data_dir: IDX directory; None for the Debian location (`keras_tricks.datasets`).

    Returns:
        `path`.
    """
    import keras

    from keras_tricks import augment
    from keras_tricks.datasets import load_fashion_mnist

    _check_path(path)
    num_images = check_int("num_images", num_images, minimum=1)
    check_int("num_augmentations", num_augmentations, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    _, (x_test, _) = load_fashion_mnist(data_dir)
    if 2 * num_images > len(x_test):
        fail("num_images", f"an integer in [1, {len(x_test) // 2}]", num_images)
    rng = np.random.default_rng(seed)
    chosen = x_test[rng.choice(len(x_test), size=2 * num_images, replace=False)][..., None]
    page = keras.Sequential(
        [
            augment.RandomPadCrop(padding=4, fill_mode="reflect", seed=seed),
            augment.RandomFlip(seed=seed + 1),
            augment.Cutout(size=8, seed=seed + 2),
        ]
    )
    inception = keras.Sequential(
        [
            augment.RandomResizedCrop(28, 28, scale=(0.25, 1.0), seed=seed + 3),
            augment.RandomFlip(seed=seed + 4),
        ]
    )
    first = augmentation_grid(chosen[:num_images], page, num_augmentations)
    second = augmentation_grid(chosen[num_images:], inception, num_augmentations)
    title = (
        f"Fashion-MNIST. Rows 1-{num_images}: RandomPadCrop(4, reflect) + RandomFlip + Cutout(8)\n"
        f"Rows {num_images + 1}-{2 * num_images}: "
        "RandomResizedCrop(28, 28, scale=(0.25, 1)) + RandomFlip"
    )
    return _save_grid(np.concatenate([first, second], axis=0), path, title)


def confusion_matrix(labels: Any, predictions: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts `C[i, j]` of examples of true class `i` predicted as class `j` (int64 array).

    ```
    C = zeros((K, K)); for y, p in zip(labels, predictions): C[y, p] += 1
    ```

    Example:

    ```python
    from keras_tricks.plotting import confusion_matrix
    confusion_matrix([0, 1, 1], [0, 1, 0]).tolist()  # [[1, 0], [1, 1]]
    ```

    Args:
        labels: true class ids (N,).
        predictions: predicted class ids (N,).
        num_classes: K (>= 1); default 1 + the largest id seen.
    """
    labels = _class_ids("labels", labels)
    predictions = _class_ids("predictions", predictions)
    if labels.shape != predictions.shape:
        fail("len(predictions)", f"the same length as `labels` ({labels.size})", predictions.size)
    num_classes = check_int("num_classes", num_classes, minimum=1, allow_none=True)
    k = num_classes or int(max(labels.max(initial=0), predictions.max(initial=0))) + 1
    for name, ids in (("labels", labels), ("predictions", predictions)):
        if ids.size and ids.max() >= k:
            fail(name, f"class ids below num_classes={k}", int(ids.max()))
    return np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)


def _class_ids(name: str, values: Any) -> np.ndarray:
    """`values` as a flat int64 array of class ids >= 0, or a ValueError naming `name`."""
    ids = np.asarray(values).reshape(-1)
    # Whole-number floats pass (labels read as float); booleans, fractions and negatives not.
    if ids.size and (ids.dtype.kind not in "iuf" or np.any(ids < 0) or np.any(ids % 1 != 0)):
        fail(name, "class ids (whole numbers >= 0)", values)
    return ids.astype("int64")


def save_confusion_matrix(
    labels: Any,
    predictions: Any,
    path: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    title: str | None = None,
) -> str | os.PathLike:
    """Write the confusion matrix as a PNG heat map with the counts; returns `path`.

    Rows are the true classes, columns the predictions; the diagonal holds the correct ones.

    Example:

    ```python
    import os, tempfile
    from keras_tricks.plotting import save_confusion_matrix
    save_confusion_matrix([0, 1, 1], [0, 1, 0], os.path.join(tempfile.mkdtemp(), "cm.png"))
    ```

    Args:
        labels: true class ids.
        predictions: predicted class ids.
        path: output PNG (its directory is created).
        label_names: class names for the axes, one per class (their number is K).
        title: figure title.

    Returns:
        `path`.
    """
    from matplotlib.figure import Figure

    _check_path(path)
    _check_title(title)
    if label_names is not None and (
        isinstance(label_names, str) or not all(isinstance(n, str) for n in label_names)
    ):
        fail("label_names", "a sequence of class names (strings) or None", label_names)
    k = len(label_names) if label_names is not None else None
    counts = confusion_matrix(labels, predictions, k)
    k = counts.shape[0]
    names = list(label_names) if label_names is not None else [str(i) for i in range(k)]
    fig = Figure(figsize=(1.0 + 0.62 * k, 0.8 + 0.55 * k), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if counts[i, j] > threshold else "black",
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def schedule_figure(
    schedule: Any,
    total_steps: int,
    steps_per_epoch: int,
    logged: Sequence[float] | None = None,
    title: str | None = None,
) -> Figure:
    """The learning rate of `schedule` at every optimizer step, as a matplotlib Figure.

    A line of `schedule(step)` for step 0 .. total_steps - 1, with the epochs on a second axis
    along the top; the rates training logged at each epoch end (`LearningRateLogger`, or
    `History.history["learning_rate"]`) are drawn on it as dots, so a reader sees that the
    optimizer used the schedule that was drawn:

    ```
    x = range(total_steps); y = [schedule(s) for s in x]        # the line
    dots: ((e + 1) * steps_per_epoch - 1, logged[e]) for each epoch e
    ```

    Example:

    ```python
    import os, tempfile
    import keras
    from keras_tricks.plotting import schedule_figure
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100)
    fig = schedule_figure(schedule, total_steps=100, steps_per_epoch=10, logged=[0.1] * 10)
    fig.savefig(os.path.join(tempfile.mkdtemp(), "schedule.png"))
    ```

    Args:
        schedule: a `keras.optimizers.schedules.LearningRateSchedule` (any callable of the
            step that accepts an array of steps), or a constant rate (a number).
        total_steps: optimizer steps of the run (>= 1).
        steps_per_epoch: optimizer steps per epoch (>= 1), for the epoch axis and the dots.
        logged: optional rates logged at the end of each epoch.
        title: optional figure title.
    """
    total_steps = check_int("total_steps", total_steps, minimum=1)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    if not callable(schedule):
        check_number("schedule", schedule, positive=True, finite=True)
    if logged is not None:
        if isinstance(logged, (str, bytes)) or np.ndim(logged) != 1:
            fail("logged", "a 1-D sequence of per-epoch learning rates, or None", logged)
        for epoch, rate in enumerate(logged):
            check_number(f"logged[{epoch}]", rate)
    _check_title(title)
    from matplotlib.figure import Figure

    steps = np.arange(total_steps)
    if callable(schedule):
        from keras import ops

        values = np.asarray(ops.convert_to_numpy(schedule(steps)), dtype=float)
    else:
        values = np.full(total_steps, float(schedule))
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, values, label="schedule")
    if logged:
        ends = np.arange(1, len(logged) + 1) * steps_per_epoch - 1
        ax.plot(ends, logged, "o", ms=4, label="logged at epoch end")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)

    def to_epoch(step: Any) -> Any:
        return np.asarray(step) / steps_per_epoch

    def to_step(epoch: Any) -> Any:
        return np.asarray(epoch) * steps_per_epoch

    top = ax.secondary_xaxis("top", functions=(to_epoch, to_step))
    top.set_xlabel("epoch")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# The panels of `curves_figure`: History key and title.
CURVES = (
    ("loss", "loss (label-smoothed CE)"),
    ("accuracy", "accuracy"),
    ("learning_rate", "learning rate (end of epoch)"),
)


def curves_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """Training curves from a Keras `History.history` dict, as a matplotlib Figure.

    Three panels against the epoch: loss, accuracy and learning rate; each shows the training
    value (`key`) and, where present, the validation value (`val_key`, "test (EMA weights)"
    in the demo, which validates on the test images with the averaged weights).

    Example:

    ```python
    from keras_tricks.plotting import curves_figure
    history = {"loss": [1.2, 0.8], "val_loss": [1.0, 0.9], "accuracy": [0.6, 0.8]}
    fig = curves_figure(history)
    assert len(fig.axes) == 3
    ```

    Args:
        history: `model.fit(...).history`: per-epoch values under "loss" (required),
            "accuracy", "learning_rate" and their "val_" twins.
    """
    if not isinstance(history, Mapping) or not history.get("loss"):
        fail("history", "a Keras History.history dict with a non-empty 'loss' list", history)
    from matplotlib.figure import Figure

    epochs = range(1, len(history["loss"]) + 1)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (key, label) in zip(axes, CURVES):
        if key in history:
            ax.plot(epochs, history[key], "o-", ms=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "o-", ms=3, label="test (EMA weights)")
            ax.legend()
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    return fig


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m keras_tricks.plotting` (the docs figure, `fashion_mnist_grid`)."""
    from keras_tricks.cli import _int_option
    from keras_tricks.datasets import FASHION_MNIST_DIR
    from tfrecord_tools.cli import add_verbose_argument

    # The defaults are fashion_mnist_grid's own, read from its signature.
    defaults = {
        name: p.default for name, p in inspect.signature(fashion_mnist_grid).parameters.items()
    }
    parser = argparse.ArgumentParser(
        prog="python -m keras_tricks.plotting",
        description="Draw the docs figure: Fashion-MNIST test images, each with several "
        "augmented copies, through Page's CIFAR-10 chain (pad 4 reflect + per-image crop, flip, "
        "8x8 cutout) and through an Inception-style random-resized crop (scale 0.25..1) + flip. "
        "Needs matplotlib (the `plot` extra).",
    )
    parser.add_argument(
        "--output",
        default="augment_grid.png",
        metavar="PNG",
        help="the PNG file to write; its directory is created (default: %(default)s)",
    )
    parser.add_argument(
        "--num-images",
        type=_int_option("num_images", minimum=1),
        default=defaults["num_images"],
        metavar="N",
        help="images (rows) per augmentation chain (default: %(default)s)",
    )
    parser.add_argument(
        "--num-augmentations",
        type=_int_option("num_augmentations", minimum=1),
        default=defaults["num_augmentations"],
        metavar="N",
        help="augmented copies (columns) beside each original (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_int_option("seed", minimum=0),
        default=defaults["seed"],
        help="seeds the choice of images and the augmentation layers (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="directory with the Fashion-MNIST IDX files "
        f"(default: {FASHION_MNIST_DIR}, else the Keras download)",
    )
    add_verbose_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m keras_tricks.plotting`: write the grid, print its path."""
    from tfrecord_tools.cli import quiet_tensorflow_startup

    args = build_parser().parse_args(argv)
    with quiet_tensorflow_startup(verbose=args.verbose):
        path = fashion_mnist_grid(
            args.output, args.num_images, args.num_augmentations, args.seed, args.data_dir
        )
    print(path)


if __name__ == "__main__":
    main()
