"""Batch augmentation throughput: keras_tricks.augment vs Keras core, keras-cv, per-image tf.data.

Question: how many images/s does each augmentation chain sustain on the same batch,
(1) as a `tf.data` map (graph mode, AUTOTUNE parallelism, prefetch; "tf.data+xla": the mapped
function is a `tf.function(jit_compile=True)`; "tf.data pipeline": the whole
`keras_tricks.data.input_pipeline(placement="data")` over the batch's examples - cache, shuffle,
batch, then the augmentation map, XLA-compiled where the layers allow it) and (2) inside a
compiled model (`tf.function` around `model(x, training=True)`, with `jit_compile=False` and
`True`), compared with the limit: one cast-and-copy pass over the same batch?

Workloads:
  (a) "cifar": Page's CIFAR-10 batch, 512 x 32x32x3 uint8: pad 4 (reflect) + crop, flip,
      8x8 cutout.
  (b) "imagenet": He et al.'s ImageNet batch, 64 x 256x256x3 uint8: random-resized-crop 224,
      flip, colour jitter (0.4), PCA lighting (0.1), normalise.

Chains:
  ours      keras_tricks.augment layers. (b): flip before the crop (faster under XLA), the
            crop on uint8, then one cast to float32 and the colour layers on floats (no
            rounding between layers, as fb.resnet.torch; the peers compute in float32 too);
            "ours_uint8" keeps every layer on uint8 (each rounds and clips its output).
  keras     Keras core layers. (a): reflect pad (a Lambda of ops.pad; Keras has no reflect
            padding layer) + RandomCrop + RandomFlip + RandomErasing(factor=1, area 1/16).
            (b): Keras has no random-resized crop or PCA lighting: RandomCrop(224) + RandomFlip +
            RandomColorJitter(brightness, saturation, hue) + Normalization, so it does less work.
  keras_cv  keras-cv 0.9 layers. (a): reflect pad + RandomCropAndResize(32, area (0.64, 0.64),
            aspect 1) + RandomFlip + RandomCutout(0.25). (b): RandomCropAndResize(224,
            (0.08, 1), (3/4, 4/3)) + RandomFlip + RandomColorJitter + Normalization.
  per_image a per-example `tf.data` map of `tf.image` ops (unbatch -> map -> batch), tf.data only.
  copy      `tf.cast(batch, float32)`: one read and one write of the batch (the limit).

Each cell is traced/compiled first; then all cells of a workload are timed in turn, one run of
at least `--min-time` seconds each, for `--repeats` rounds, and each cell's median images/s is
reported with its (min, max). `tf.data` cells get a fresh iterator per run and skip its first
batch (start-up). A chain that fails to run in a
mode (keras-cv under XLA) is reported with its error.

Usage:
    python bench/augment.py            # full run (~4 minutes on 2 shared cores)
    python bench/augment.py --quick    # smoke run
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from keras_tricks import augment, data  # noqa: E402

warnings.filterwarnings("ignore")

IMAGENET_MEAN_255 = [255 * m for m in augment.IMAGENET_MEAN]
IMAGENET_VAR_255 = [(255 * s) ** 2 for s in augment.IMAGENET_STD]


def reflect_pad(p):
    return keras.layers.Lambda(
        lambda x: ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect"), name="reflect_pad"
    )


def to_float32():
    return keras.layers.Lambda(lambda x: ops.cast(x, "float32"), name="to_float32")


# ---------------------------------------------------------------------------------------------
# Chains
def cifar_chains():
    chains = {
        "ours": lambda: [
            augment.RandomPadCrop(4, "reflect", seed=0),
            augment.RandomFlip(seed=1),
            augment.Cutout(8, seed=2),
        ],
        "keras": lambda: [
            reflect_pad(4),
            keras.layers.RandomCrop(32, 32, seed=0),
            keras.layers.RandomFlip("horizontal", seed=1),
            keras.layers.RandomErasing(factor=1.0, scale=(1 / 16, 1 / 16), fill_value=0, seed=2),
        ],
    }
    try:
        import keras_cv

        chains["keras_cv"] = lambda: [
            reflect_pad(4),
            keras_cv.layers.RandomCropAndResize(
                (32, 32), crop_area_factor=(0.64, 0.64), aspect_ratio_factor=(1.0, 1.0), seed=0
            ),
            keras_cv.layers.RandomFlip("horizontal", seed=1),
            keras_cv.layers.RandomCutout((0.25, 0.25), (0.25, 0.25), seed=2),
        ]
    except ImportError as e:  # keras-cv is the optional `cv` extra
        chains["keras_cv"] = e
    return chains


def imagenet_chains():
    chains = {
        # Flip before the crop: the same distribution as crop-then-flip (the crop's left edge is
        # uniform, so mirrored boxes are as likely), and under XLA a flip that consumes the
        # crop's gathers is fused badly (3-9x in a standalone micro-benchmark).
        # The crop reads and writes uint8 (cheap gathers), then one cast to float32 and the
        # colour layers run on floats without rounding or clipping in between, as in
        # fb.resnet.torch (and as the Keras and keras-cv layers, which compute in float32).
        "ours": lambda: [
            augment.RandomFlip(seed=1),
            augment.RandomResizedCrop(224, 224, seed=0),
            to_float32(),
            augment.ColorJitter(0.4, 0.4, 0.4, seed=2),
            augment.PCALighting(0.1, scale=255.0, seed=3),
            augment.Normalize(scale=255.0),
        ],
        # Every layer on uint8: each one rounds and clips its output back to uint8.
        "ours_uint8": lambda: [
            augment.RandomFlip(seed=1),
            augment.RandomResizedCrop(224, 224, seed=0),
            augment.ColorJitter(0.4, 0.4, 0.4, seed=2),
            augment.PCALighting(0.1, seed=3),
            augment.Normalize(),
        ],
        "keras": lambda: [
            keras.layers.RandomCrop(224, 224, seed=0),
            keras.layers.RandomFlip("horizontal", seed=1),
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.4,
                saturation_factor=(0.3, 0.7),
                hue_factor=0.4,
                seed=2,
            ),
            keras.layers.Normalization(mean=IMAGENET_MEAN_255, variance=IMAGENET_VAR_255),
        ],
    }
    try:
        import keras_cv

        chains["keras_cv"] = lambda: [
            keras_cv.layers.RandomCropAndResize(
                (224, 224), crop_area_factor=(0.08, 1.0), aspect_ratio_factor=(3 / 4, 4 / 3), seed=0
            ),
            keras_cv.layers.RandomFlip("horizontal", seed=1),
            keras_cv.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.4,
                contrast_factor=0.4,
                saturation_factor=(0.3, 0.7),
                hue_factor=0.4,
                seed=2,
            ),
            keras.layers.Normalization(mean=IMAGENET_MEAN_255, variance=IMAGENET_VAR_255),
        ]
    except ImportError as e:
        chains["keras_cv"] = e
    return chains


def cifar_per_image(image):
    image = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
    image = tf.image.random_crop(image, (32, 32, 3))
    image = tf.image.random_flip_left_right(image)
    centre = tf.random.uniform((2,), 0, 32, dtype=tf.int32)
    rows = tf.range(32)[:, None] - (centre[0] - 4)
    cols = tf.range(32)[None, :] - (centre[1] - 4)
    inside = (rows >= 0) & (rows < 8) & (cols >= 0) & (cols < 8)
    return tf.where(inside[:, :, None], tf.zeros_like(image), image)


EIGVAL = tf.constant(augment.IMAGENET_EIGVAL)
EIGVEC = tf.constant(augment.IMAGENET_EIGVEC)


def imagenet_per_image(image):
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        tf.zeros((1, 0, 4)),
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.image.resize(tf.slice(image, begin, size), (224, 224)) / 255.0
    image = tf.image.random_flip_left_right(image)
    image = image * tf.random.uniform((), 0.6, 1.4)
    image = tf.image.adjust_saturation(image, tf.random.uniform((), 0.6, 1.4))
    image = tf.image.adjust_hue(image, tf.random.uniform((), -0.2, 0.2))
    alpha = tf.random.normal((3,), stddev=0.1)
    image = image + tf.reduce_sum(EIGVEC * (alpha * EIGVAL)[None], axis=1)
    return (image - augment.IMAGENET_MEAN) / augment.IMAGENET_STD


# ---------------------------------------------------------------------------------------------
# Timing
def timed_run(step, images_per_step, min_time):
    """images/s of `step()` called until `min_time` seconds have passed (at least once)."""
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return count * images_per_step / elapsed


def apply_chain(layers):
    def run(x):
        for layer in layers:
            x = layer(x, training=True)
        return x

    return run


class DatasetCell:
    """A tf.data pipeline timed on a fresh iterator per run (its first batch is start-up)."""

    def __init__(self, ds, images_per_step):
        self.ds, self.images_per_step = ds, images_per_step

    def run(self, min_time):
        iterator = iter(self.ds)
        next(iterator)  # pipeline start-up and the first fill of the prefetch buffer
        rate = timed_run(iterator.__next__, self.images_per_step, min_time)
        del iterator  # stop its background threads before the next cell runs
        return rate


class FunctionCell:
    """A `tf.function` (optionally XLA-compiled) called on the same batch."""

    def __init__(self, fn, batch):
        self.fn, self.x, self.images_per_step = fn, tf.constant(batch), int(batch.shape[0])
        self.fn(self.x)  # trace and compile

    def run(self, min_time):
        return timed_run(lambda: self.fn(self.x), self.images_per_step, min_time)


def make_cell(kind, batch, make_layers):
    """One chain in one mode: 'tf.data', 'tf.data+xla', 'tf.data pipeline', 'compiled', 'xla'."""
    n = int(batch.shape[0])
    if kind == "tf.data pipeline":
        pipe = data.input_pipeline(
            (batch, np.zeros(n, "int64")),
            batch_size=n,
            augmentation=make_layers(),
            placement="data",
            repeat=True,
            seed=0,
        )
        ds = pipe.dataset
        next(iter(ds))
        return DatasetCell(ds, n)
    if kind.startswith("tf.data"):
        chain = apply_chain(make_layers())
        if kind == "tf.data+xla":
            # The map function compiled by XLA: tf.data runs it like any other function.
            chain = tf.function(chain, jit_compile=True)
        ds = (
            tf.data.Dataset.from_tensors(batch)
            .repeat()
            .map(chain, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
        next(iter(ds))  # trace (and compile) now, so that a chain XLA rejects fails here
        return DatasetCell(ds, n)
    model = keras.Sequential([keras.Input(batch.shape[1:], dtype="uint8")] + make_layers())
    fn = tf.function(lambda x: model(x, training=True), jit_compile=(kind == "xla"))
    return FunctionCell(fn, batch)


MODES = ("tf.data", "tf.data+xla", "tf.data pipeline", "compiled", "xla")


def cast_to_float(x):
    return tf.cast(x, tf.float32)


def workload_cells(name, batch, chains, per_image_fn):
    """(row, cell) for every chain and mode; a chain that cannot run in a mode keeps its error."""
    n = int(batch.shape[0])
    cells = []
    for chain, make in chains.items():
        for kind in MODES:
            row = {"workload": name, "chain": chain, "mode": kind}
            cell = None
            if isinstance(make, Exception):
                row["error"] = f"{type(make).__name__}: {make}"
            else:
                try:
                    cell = make_cell(kind, batch, make)
                except Exception as e:  # e.g. keras-cv under XLA: a result too
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            cells.append((row, cell))
    # Per-image tf.data map: the classic input pipeline.
    per_image = (
        tf.data.Dataset.from_tensor_slices(batch)
        .repeat()
        .map(per_image_fn, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(n)
        .prefetch(tf.data.AUTOTUNE)
    )
    cells.append(
        ({"workload": name, "chain": "per_image", "mode": "tf.data"}, DatasetCell(per_image, n))
    )
    # The limit: one cast-and-copy pass.
    copy = (
        tf.data.Dataset.from_tensors(batch)
        .repeat()
        .map(cast_to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    cells.append(({"workload": name, "chain": "copy", "mode": "tf.data"}, DatasetCell(copy, n)))
    for kind in ("compiled", "xla"):
        fn = tf.function(cast_to_float, jit_compile=(kind == "xla"))
        cells.append(({"workload": name, "chain": "copy", "mode": kind}, FunctionCell(fn, batch)))
    return cells


def run_rounds(cells, repeats, min_time, log):
    """Time every cell once per round, `repeats` rounds; report each cell's median.

    Interleaving the cells spreads the load of other jobs on a shared machine over all chains
    instead of penalising whichever chain ran while it peaked.
    """
    rates = {id(cell): [] for _, cell in cells if cell is not None}
    for _ in range(repeats):
        for _, cell in cells:
            if cell is not None:
                rates[id(cell)].append(cell.run(min_time))
    rows = []
    for row, cell in cells:
        if cell is not None:
            row["images_per_s"] = round(statistics.median(rates[id(cell)]), 1)
            row["spread"] = [round(min(rates[id(cell)]), 1), round(max(rates[id(cell)]), 1)]
        log(row)
        rows.append(row)
    return rows


def ratios(rows):
    """ours / peer in the same mode, copy / ours in the same mode, and best mode vs best mode."""
    rate = {(r["workload"], r["chain"], r["mode"]): r.get("images_per_s") for r in rows}
    modes = MODES
    out = {}
    for workload in sorted({r["workload"] for r in rows}):
        for mode in modes:
            ours = rate.get((workload, "ours", mode))
            if not ours:
                continue
            entry = {}
            for peer in ("keras", "keras_cv"):
                if rate.get((workload, peer, mode)):
                    entry[f"ours_over_{peer}"] = round(ours / rate[(workload, peer, mode)], 2)
            # The per-image map and the copy pass have no XLA variant in tf.data: compare
            # "tf.data+xla" with their plain tf.data cells.
            data_mode = "tf.data" if mode.startswith("tf.data") else mode
            if mode.startswith("tf.data") and rate.get((workload, "per_image", data_mode)):
                per_image = rate[(workload, "per_image", data_mode)]
                entry["ours_over_per_image"] = round(ours / per_image, 2)
            if rate.get((workload, "copy", data_mode)):
                entry["copy_over_ours"] = round(rate[(workload, "copy", data_mode)] / ours, 2)
            out[f"{workload}/{mode}"] = entry

        def best(chain, workload=workload):
            values = [rate.get((workload, chain, m)) for m in modes]
            return max([v for v in values if v] or [0.0])

        ours_best = best("ours")
        out[f"{workload}/best_mode"] = {
            f"ours_over_{peer}": round(ours_best / best(peer), 2)
            for peer in ("keras", "keras_cv", "per_image")
            if best(peer)
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--min-time", type=float, default=None, help="seconds per timed run")
    parser.add_argument("--workloads", default="cifar,imagenet")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    min_time = args.min_time or (0.2 if args.quick else 0.4)

    def log(row):
        print(json.dumps(row), file=sys.stderr, flush=True)

    rng = np.random.default_rng(0)
    rows = []
    started = time.perf_counter()
    workloads = args.workloads.split(",")
    if "cifar" in workloads:
        batch = rng.integers(0, 256, size=(512, 32, 32, 3), dtype=np.uint8)
        cells = workload_cells("cifar", batch, cifar_chains(), cifar_per_image)
        rows += run_rounds(cells, repeats, min_time, log)
    if "imagenet" in workloads:
        batch = rng.integers(0, 256, size=(64, 256, 256, 3), dtype=np.uint8)
        cells = workload_cells("imagenet", batch, imagenet_chains(), imagenet_per_image)
        rows += run_rounds(cells, repeats, min_time, log)
    try:
        import keras_cv

        keras_cv_version = keras_cv.__version__
    except ImportError:
        keras_cv_version = None
    result = {
        "benchmark": "augment",
        "unit": "images/s (median of repeats)",
        "repeats": repeats,
        "min_time_s": min_time,
        "quick": args.quick,
        "versions": {
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "keras_cv": keras_cv_version,
            "python": platform.python_version(),
        },
        "cpu_count": os.cpu_count(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "results": rows,
        "ratios": ratios(rows),
    }
    print(json.dumps(result, indent=1))
    return 0 if all(not math.isnan(r.get("images_per_s", 0.0)) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
