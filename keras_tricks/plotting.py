"""Look at what an augmentation does: a PNG grid of images and several augmented copies of each.

Needs matplotlib (the `plot` extra). The default grid shows Fashion-MNIST (Xiao et al. 2017,
https://arxiv.org/abs/1708.07747) through Page's CIFAR-10 augmentation (pad 4 reflect + crop,
flip, 8x8 cutout) and an Inception-style random-resized crop::

    python -m keras_tricks.plotting --output docs/augment_grid.png
"""

import argparse
import inspect
import os

import keras
import numpy as np
from keras import ops

__all__ = [
    "augmentation_grid",
    "save_augmentation_grid",
    "fashion_mnist_grid",
    "confusion_matrix",
    "save_confusion_matrix",
]


def _check_images(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            "`images` must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); "
            f"received shape {images.shape}."
        )
    if len(images) == 0:
        raise ValueError("`images` must hold at least one image; received 0 images.")
    return images


def augmentation_grid(images, augmentation, num_augmentations=7):
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
    images = _check_images(images)
    if (
        isinstance(num_augmentations, bool)
        or not isinstance(num_augmentations, int)
        or (num_augmentations < 1)
    ):
        raise ValueError(
            f"`num_augmentations` must be an int >= 1; received {num_augmentations!r}."
        )
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
    images, augmentation, path, num_augmentations=7, title=None, value_range=None
):
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
    grid = augmentation_grid(images, augmentation, num_augmentations)
    return _save_grid(grid, path, title, value_range)


def _save_grid(grid, path, title=None, value_range=None):
    """Draw a (rows, cols, H, W, C) grid of images to the PNG `path`."""
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


def fashion_mnist_grid(path, num_images=6, num_augmentations=7, seed=0, data_dir=None):
    """The docs figure: Fashion-MNIST test images through two augmentation chains.

    Rows 1..num_images: pad 4 (reflect) + per-image crop, flip, 8x8 cutout (Page's CIFAR-10
    chain); the next rows: random-resized crop (scale (0.25, 1)) + flip.

    Args:
        path: output PNG.
        num_images: images per chain.
        num_augmentations: augmented copies per image.
        seed: seeds the image choice and the layers.
        data_dir: IDX directory; None for the Debian location (`keras_tricks.datasets`).
    """
    from keras_tricks import augment
    from keras_tricks.datasets import load_fashion_mnist

    _, (x_test, _) = load_fashion_mnist(data_dir)
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
        f"Rows {num_images + 1}-{2 * num_images}: RandomResizedCrop(28, 28, scale=(0.25, 1)) + RandomFlip"
    )
    return _save_grid(np.concatenate([first, second], axis=0), path, title)


def confusion_matrix(labels, predictions, num_classes=None):
    """Counts `C[i, j]` of examples of true class `i` predicted as class `j` (int64 array).

    ```python
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
        num_classes: K; default 1 + the largest id seen.
    """
    labels = np.asarray(labels).reshape(-1).astype("int64")
    predictions = np.asarray(predictions).reshape(-1).astype("int64")
    if labels.shape != predictions.shape:
        raise ValueError(
            "`labels` and `predictions` must have the same length. Received: "
            f"{labels.size} labels, {predictions.size} predictions"
        )
    k = num_classes or int(max(labels.max(initial=0), predictions.max(initial=0))) + 1
    return np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)


def save_confusion_matrix(labels, predictions, path, label_names=None, title=None):
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
        label_names: class names for the axes.
        title: figure title.
    """
    from matplotlib.figure import Figure

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


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m keras_tricks.plotting` (the docs figure, `fashion_mnist_grid`)."""
    from keras_tricks.datasets import FASHION_MNIST_DIR

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
        type=int,
        default=defaults["num_images"],
        metavar="N",
        help="images (rows) per augmentation chain (default: %(default)s)",
    )
    parser.add_argument(
        "--num-augmentations",
        type=int,
        default=defaults["num_augmentations"],
        metavar="N",
        help="augmented copies (columns) beside each original (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
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
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m keras_tricks.plotting`: write the grid, print its path."""
    args = build_parser().parse_args(argv)
    print(
        fashion_mnist_grid(
            args.output, args.num_images, args.num_augmentations, args.seed, args.data_dir
        )
    )


if __name__ == "__main__":
    main()
