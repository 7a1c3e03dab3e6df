"""`tf.data` input pipelines: TFRecord shards (local or gs://) or arrays -> augmented batches.

Needs TensorFlow (tf.data) on every backend. The augmentation layers it places are
backend-agnostic in the model (`placement="model"`); in `tf.data` (`placement="data"`, and
label-mixing layers always) our layers need the TensorFlow backend, and on another backend
`input_pipeline` refuses them with an error naming it.

One call builds the whole pipeline, in the order that keeps the expensive work out of the epoch
loop (the `tf.data` performance guide, https://www.tensorflow.org/guide/data_performance):

    read -> decode + fixed `preprocess` (once) -> cache -> shuffle -> batch -> one-hot labels
         -> [random augmentation, per batch] -> prefetch

The random augmentation runs on whole batches, either

- `placement="model"` (default): not in `tf.data` at all. The layers are returned as
  `pipeline.augmentation` (a `keras.Sequential`) and `pipeline.attach(model)` puts them in front
  of the model, so they run on the accelerator inside the compiled train step, a batch at a time
  (David Page, "How to train your ResNet", https://myrtle.ai/learn/how-to-train-your-resnet/).
  They are identity at evaluation (`training=False`).
- `placement="data"`: in `tf.data`, after batching (vectorised, on the host CPU, overlapped with
  training by `prefetch`). By default (`jit_compile="auto"`) the layers that XLA compiles run
  as XLA-compiled functions inside the map, which fuses them into a few passes over the batch
  (2-3x faster for Page's CIFAR and He et al.'s ImageNet chains, `bench/augment.py`).

Layers that change the labels (MixUp, CutMix: ours, Keras's or keras-cv's; any layer with
`mixes_labels = True`) need the labels, which the model never sees, so they always run in
`tf.data`, and the labels are one-hot encoded for them. The layers run in the order given, so
with `placement="model"` the label-mixing layers come first in the list (a label-mixing layer
after an in-model layer is refused, not silently moved ahead of it). Our layers, Keras core
preprocessing layers and keras-cv layers are all accepted.

Example:

```python
import numpy as np, keras
from keras_tricks import augment, data

x = np.random.randint(0, 256, (256, 32, 32, 3), dtype="uint8")
y = np.random.randint(0, 10, 256)
pipe = data.input_pipeline(
    (x, y), batch_size=64, num_classes=10,
    augmentation=[augment.MixUp(0.2),   # mixes labels: runs in tf.data, so it comes first
                  augment.RandomPadCrop(4), augment.RandomFlip(), augment.Cutout(8)],
)
model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
model = pipe.attach(model)          # pad-crop, flip, cutout run inside the model
model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
model.fit(pipe.dataset, epochs=1, verbose=0)
```
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_tricks._checks import check_int as _check_int
from keras_tricks._checks import check_one_of as _check_one_of
from keras_tricks._checks import fail as _fail
from keras_tricks._checks import suggest_keywords as _suggest_keywords

__all__ = [
    "InputPipeline",
    "SourceData",
    "Worker",
    "apply_layer",
    "changes_labels",
    "current_worker",
    "input_pipeline",
    "read_source",
    "shard_by_file",
]

_PLACEMENTS = ("model", "data")
_JIT_COMPILE = ("auto", True, False)
_logger = logging.getLogger(__name__)
# keras-cv (and Keras) class names of layers that mix labels; matched by name so that
# keras-cv stays an optional dependency.
_LABEL_MIXING_NAMES = {"MixUp", "CutMix", "FourierMix", "Mosaic"}


def changes_labels(layer: Any) -> bool:
    """Whether `layer` mixes labels (MixUp/CutMix of keras_tricks, Keras or keras-cv).

    A layer's own `mixes_labels` attribute decides when it has one (every `keras_tricks.augment`
    layer does; set it on your own layers); other layers are recognised by class name.
    """
    marker = getattr(layer, "mixes_labels", None)
    if isinstance(marker, bool):
        return marker
    return type(layer).__name__ in _LABEL_MIXING_NAMES


@dataclasses.dataclass
class InputPipeline:
    """What `input_pipeline` built.

    Attributes:
        dataset: the `tf.data.Dataset` of `(images, labels)` batches.
        augmentation: `keras.Sequential` of the layers to run in the model
            (`placement="model"`), or None.
        num_examples: examples per epoch (before batching).
        batch_size: batch size.
        num_classes: number of classes (None if unknown).
        label_names: class names from the TFRecord manifest, or None.
        mean: per-channel pixel mean of the training data (0..255 scale), or None.
        std: per-channel pixel standard deviation (0..255 scale), or None.
        xla_layers: the layers run in `tf.data` that are compiled with XLA (`jit_compile`).
    """

    dataset: tf.data.Dataset
    augmentation: keras.Sequential | None
    num_examples: int
    batch_size: int
    num_classes: int | None = None
    label_names: list | None = None
    mean: list | None = None
    std: list | None = None
    xla_layers: list = dataclasses.field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (the last, partial batch counts when it is kept)."""
        return -(-self.num_examples // self.batch_size)

    def attach(self, model: keras.Model) -> keras.Model:
        """`model` with the on-device augmentation in front, as a functional `keras.Model`.

        Its input has the dataset's image shape and dtype (uint8 stays uint8 through the
        augmentation, a quarter of the float32 memory traffic). Returns `model` itself when
        there is nothing to run in the model.
        """
        if self.augmentation is None:
            return model
        spec = self.dataset.element_spec[0]
        inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name, name="images")
        outputs = model(self.augmentation(inputs))
        return keras.Model(inputs, outputs, name=f"augmented_{model.name}")


def apply_layer(layer: Callable, images: Any, labels: Any) -> tuple[Any, Any]:
    """Apply one augmentation layer (or callable) to a batch, in training mode.

    A label-mixing layer (`changes_labels(layer)`: MixUp, CutMix) gets and returns the
    `{"images", "labels"}` dict Keras's and keras-cv's mixing layers take; any other layer gets
    the images alone and the labels pass through:

    ```
    if changes_labels(layer):
        out = layer({"images": images, "labels": labels}, training=True)
        images, labels = out["images"], out["labels"]
    else:
        images = layer(images, training=True)       # a plain callable: layer(images)
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks import augment, data
    x = np.zeros((4, 8, 8, 3), "float32"); y = np.eye(4, dtype="float32")
    images, labels = data.apply_layer(augment.MixUp(0.2, seed=0), x, y)  # labels mixed too
    ```

    Args:
        layer: a Keras layer, keras-cv layer or a callable on a batch of images.
        images: a batch of images.
        labels: the batch's labels (one-hot for label-mixing layers).

    Returns:
        `(images, labels)` after the layer.
    """
    if changes_labels(layer):
        out = layer({"images": images, "labels": labels}, training=True)
        return out["images"], out["labels"]
    if isinstance(layer, keras.layers.Layer):
        return layer(images, training=True), labels
    return layer(images), labels


def _chain(layers):
    """`f(images, labels)` applying `layers` in order."""

    def step(images, labels):
        for layer in layers:
            images, labels = apply_layer(layer, images, labels)
        return images, labels

    return step


def _batch_example(spec, batch_size):
    """Zeros shaped like one batch of `spec` (unknown dims, i.e. the batch, set to batch_size)."""
    return tf.nest.map_structure(
        lambda s: tf.zeros([batch_size if d is None else d for d in s.shape], s.dtype), spec
    )


def _xla_error(layer, example):
    """Why XLA cannot compile `layer` on the `example` batch, or None when it can.

    Lowers the traced function to HLO without running it, so no random state is consumed and
    the pipeline's streams stay those of its seeds. Unsupported ops (keras-cv's
    `CropAndResize`, the Beta sampler of MixUp/CutMix on CPU) fail here rather than in `fit`.
    """
    try:
        compiled = tf.function(_chain([layer]), jit_compile=True)
        compiled.experimental_get_compiler_ir(*example)(stage="hlo")
    except Exception as error:  # any lowering failure means "run this layer without XLA"
        message = str(error)
        unsupported = re.search(r"No registered '(\w+)' OpKernel for (\w+)", message)
        if unsupported:
            return f"no {unsupported.group(2)} kernel for {unsupported.group(1)}"
        return message.strip().splitlines()[0][:200] if message.strip() else type(error).__name__
    return None


def _name(layer):
    return getattr(layer, "__name__", type(layer).__name__)


def _library_layer(layer):
    """Whether `layer` is one of Keras's own (but `Lambda`: user code) or keras-cv's layers."""
    package = type(layer).__module__.split(".")[0]
    return package in ("keras", "keras_cv") and not isinstance(layer, keras.layers.Lambda)


def _augmentation_map(layers, batch_size, jit_compile):
    """The `tf.data` map function of the augmentation, and the list of layers it compiles.

    Maximal runs of consecutive layers to compile become one `tf.function(jit_compile=True)`
    each: XLA fuses a run into a few passes over the batch, where TF's graph executor runs op
    by op (bench/augment.py, "tf.data+xla"). The others run as plain graph ops. XLA compiles
    once per distinct batch shape: at most twice per pipeline (the full batches and a shorter
    last one when it is kept). "auto" does not try the layers of Keras (but `Lambda`) and
    keras-cv: XLA makes Keras's `RandomCrop` and `RandomErasing` 15-70x slower on CPU (they
    compile, into slow code), and keras-cv's crop-and-resize does not compile at all.

    The choice is made while `tf.data` traces the map, on the shapes each layer really gets;
    only the layers tried for XLA are also traced on zeros outside it (Keras and keras-cv
    layers may build weights, which they must do in the map's own trace).
    """
    xla_layers = []
    if not jit_compile:
        return _chain(layers), xla_layers

    def example_of(tensors):
        return _batch_example(
            tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), tensors), batch_size
        )

    def apply(images, labels):
        xla_layers.clear()
        pending, example = [], None  # layers that compile, not yet applied; their next input

        def flush(images, labels):
            if pending:
                images, labels = tf.function(_chain(list(pending)), jit_compile=True)(
                    images, labels
                )
                xla_layers.extend(pending)
                pending.clear()
            return images, labels

        for layer in layers:
            if jit_compile == "auto" and _library_layer(layer):
                error = "jit_compile='auto' leaves Keras and keras-cv layers to TF"
                _logger.info("%s runs in tf.data without XLA (%s).", _name(layer), error)
            else:
                with tf.init_scope():  # out of the map's graph: lower (and trace) eagerly
                    example = example if pending else example_of((images, labels))
                    error = _xla_error(layer, example)
                    if error is None:  # the next layer's input, traced without running
                        outputs = tf.function(_chain([layer])).get_concrete_function(*example)
                        example = example_of(outputs.structured_outputs)
                if error is not None and jit_compile is True:
                    raise ValueError(
                        f"`jit_compile` is True but XLA cannot compile {_name(layer)} "
                        f"on batches of shape {images.shape}: {error}. Use "
                        "jit_compile='auto' to run it without XLA."
                    )
                if error is not None:
                    _logger.warning("%s runs in tf.data without XLA (%s).", _name(layer), error)
            if error is None:
                pending.append(layer)
                continue
            images, labels = flush(images, labels)
            images, labels = apply_layer(layer, images, labels)
        return flush(images, labels)

    return apply, xla_layers


def _from_arrays(source):
    if not (isinstance(source, (tuple, list)) and len(source) == 2):
        raise ValueError(
            "`source` must be a TFRecord directory (local path or gs:// URL) or an "
            f"(images, labels) pair of arrays. Received: source of type {type(source).__name__}"
        )
    images, labels = np.asarray(source[0]), np.asarray(source[1]).reshape(-1)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            "`source` images must have shape (N, H, W) or (N, H, W, C). Received: images of "
            f"shape {images.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            "`source` images and labels must have the same length. Received: "
            f"{len(images)} images, {len(labels)} labels"
        )
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype("int64")))
    # Per-channel statistics on the 0..255 scale, like the TFRecord manifest's.
    flat = images.reshape(-1, images.shape[-1]).astype("float64")
    info = {
        "num_examples": len(images),
        "num_classes": int(labels.max()) + 1 if len(labels) else None,
        "label_names": None,
        "mean": flat.mean(axis=0).tolist(),
        "std": flat.std(axis=0).tolist(),
    }
    return ds, info


def _from_tfrecords(path, split):
    import tfrecord_tools

    manifest = tfrecord_tools.read_manifest(path)
    if split not in manifest["splits"]:
        _fail("split", f"one of {sorted(manifest['splits'])} for {path!r}", split)
    ds = tfrecord_tools.read_dataset(path, split)
    info = {
        "num_examples": manifest["splits"][split]["num_records"],
        "num_classes": manifest.get("num_classes"),
        "label_names": manifest.get("label_names"),
        "mean": manifest.get("mean"),
        "std": manifest.get("std"),
    }
    return ds, info


def _check_augmentation(augmentation):
    """`augmentation` as a list of callables (one layer or a `keras.Sequential` is one item)."""
    if callable(augmentation):
        augmentation = [augmentation]
    augmentation = list(augmentation)
    if not all(callable(layer) for layer in augmentation):
        _fail("augmentation", "a sequence of layers or callables", augmentation)
    return augmentation


def _place(augmentation, mixes, placement):
    """Split `augmentation` into the layers run in `tf.data` and those run in the model.

    The order is the user's. Label-mixing layers (`mixes[i]`) need the labels, which the model
    never sees, so they run in `tf.data`, i.e. before the model: with `placement="model"` they
    must therefore come first in the list. A label-mixing layer after an in-model one is refused
    rather than silently moved ahead of it (`[Cutout, CutMix]` is not `[CutMix, Cutout]`).
    """
    if placement == "data":
        return list(augmentation), []
    first_in_model = next((i for i, mixing in enumerate(mixes) if not mixing), len(mixes))
    late = [
        _name(layer)
        for layer, mixing in zip(augmentation[first_in_model:], mixes[first_in_model:])
        if mixing
    ]
    if late:
        raise ValueError(
            "`augmentation` must list its label-mixing layers first when placement='model': "
            "they run in tf.data, before the layers that run in the model, so "
            f"{', '.join(late)} cannot come after {_name(augmentation[first_in_model])}. Put "
            "them first, or pass placement='data' to run every layer in order in tf.data. "
            f"Received: augmentation={[_name(layer) for layer in augmentation]}"
        )
    return augmentation[:first_in_model], augmentation[first_in_model:]


def _check_backend_for_tf_data(layers):
    """Refuse our layers in `tf.data` on a backend other than TensorFlow, naming the backend.

    `tf.data` runs TensorFlow graphs, but our layers compute with `keras.ops` of the active
    backend: on JAX they would get symbolic TensorFlow tensors and fail deep inside the map
    with an unrelated NotImplementedError. (Keras's own preprocessing layers switch to
    TensorFlow inside `tf.data` by themselves, so they are let through.)
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    ours = [_name(layer) for layer in layers if type(layer).__module__.startswith("keras_tricks.")]
    if ours:
        raise ValueError(
            f"`augmentation` layers {', '.join(ours)} would run in tf.data, which needs the "
            f"TensorFlow backend; the active Keras backend is {backend!r}. Run them in the model "
            "(placement='model'; label-mixing layers such as MixUp and CutMix always run in "
            "tf.data), or set KERAS_BACKEND=tensorflow. "
            f"Received: augmentation={[_name(layer) for layer in layers]}"
        )


class SourceData(NamedTuple):
    """What `read_source` read: single examples and what is known about them.

    Attributes:
        dataset: `tf.data.Dataset` of `(uint8 image [H, W, C], int64 label)` examples.
        info: `num_examples`, `num_classes`, `label_names`, `mean`, `std` (0..255 scale) from
            the TFRecord manifest or computed from the arrays (None where unknown).
        from_files: True for a TFRecord directory (the dataset reads shard files, so
            `shard_by_file` can give each worker whole, different files).
    """

    dataset: tf.data.Dataset
    info: dict
    from_files: bool


def read_source(source: str | os.PathLike | tuple[Any, Any], split: str = "train") -> SourceData:
    """Read the examples of `split` from a `tfrecord_tools` directory or `(images, labels)` arrays.

    The first step of `input_pipeline` (and of the recipes' training stream), before any
    preprocessing, cache, shuffle or batch:

    ```
    if source is a directory:  dataset = tfrecord_tools.read_dataset(source, split)  # + manifest
    else:                      dataset = from_tensor_slices((images[..., None if 3-D], labels))
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks import data
    x = np.zeros((10, 28, 28), "uint8"); y = np.arange(10) % 2
    examples = data.read_source((x, y))
    examples.info["num_examples"], examples.dataset.element_spec[0].shape  # 10, (28, 28, 1)
    ```

    Args:
        source: a directory of shards written by `tfrecord_tools` (local or `gs://`), or an
            `(images, labels)` pair of arrays (images `(N, H, W)` or `(N, H, W, C)`).
        split: which split of a TFRecord directory (ignored for arrays).

    Returns:
        `SourceData(dataset, info, from_files)`.
    """
    if isinstance(source, (str, os.PathLike)):
        dataset, info = _from_tfrecords(os.fspath(source), split)
        return SourceData(dataset, info, from_files=True)
    dataset, info = _from_arrays(source)
    return SourceData(dataset, info, from_files=False)


# ------------------------------------------------------------------------------ multi-worker
@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in a `tf.distribute` cluster (`current_worker()`).

    Attributes:
        num_workers: input pipelines of the cluster (the chief and the workers).
        index: this worker's input pipeline, 0 .. num_workers - 1 (the chief, if any, is 0).
        is_chief: whether this worker writes checkpoints, logs and the final model.
        task_type, task_id: this worker's task in `TF_CONFIG` (None outside a cluster).
    """

    num_workers: int
    index: int
    is_chief: bool
    task_type: str | None = None
    task_id: int | None = None


def current_worker(strategy: tf.distribute.Strategy | None = None) -> Worker:
    """Which input pipeline this process is under `strategy` (default: the current strategy).

    The numbering is `MultiWorkerMirroredStrategy`'s (`multi_worker_util.id_in_cluster`), the one
    its `tf.distribute.InputContext` gives to `distribute_datasets_from_function`:

    ```
    tasks = cluster["chief"] + cluster["worker"]            # the chief first, if there is one
    index = position of (task_type, task_id) in tasks;  is_chief = index == 0
    ```

    Outside a multi-worker cluster (no strategy, or a one-machine strategy): `Worker(1, 0, True)`.

    Example:

    ```python
    from keras_tricks import data
    data.current_worker()  # Worker(num_workers=1, index=0, is_chief=True, ...) on one machine
    ```

    Args:
        strategy: a `tf.distribute.Strategy`; None means `tf.distribute.get_strategy()`.

    Returns:
        `Worker`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return Worker(1, 0, True)
    spec = resolver.cluster_spec().as_dict()
    tasks = [("chief", i) for i in range(_num_tasks(spec, "chief"))]
    tasks += [("worker", i) for i in range(_num_tasks(spec, "worker"))]
    task_type, task_id = resolver.task_type, resolver.task_id
    if len(tasks) <= 1 or task_type not in ("chief", "worker"):
        return Worker(1, 0, True)
    index = tasks.index((task_type, int(task_id)))
    return Worker(len(tasks), index, index == 0, task_type, int(task_id))


def _num_tasks(spec, task_type):
    tasks = spec.get(task_type, ())
    return len(tasks)  # a list of addresses, or a {task_id: address} dict


def shard_by_file(dataset: tf.data.Dataset, worker: Worker) -> tf.data.Dataset:
    """`dataset` with whole, different shard files for each worker (FILE auto-sharding).

    TensorFlow's own FILE auto-shard rewrite (`tf.data.experimental.AutoShardPolicy.FILE`, the
    `AutoShardDataset` op that `strategy.experimental_distribute_dataset` applies), applied here
    to a pipeline whose reader is still in sight: the rewrite walks from the output back to the
    reader (`TFRecordDataset`) through element-wise steps only (map, batch, cache, shuffle,
    repeat, ...), and puts `shard(num_workers, index)` on the list of files it reads. A pipeline
    that nests its reader inside a function of another dataset (a `flat_map` over epochs) hides
    it, and TensorFlow then falls back to DATA sharding (every worker reads every file). So
    shard the examples first, then build the rest; and set `AutoShardPolicy.OFF` on the result
    so the strategy does not shard it again.

    ```
    files = files.shard(worker.num_workers, worker.index)   # inside the reader, before reading
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks import data
    examples = data.read_source((np.zeros((4, 2, 2), "uint8"), np.arange(4) % 2))
    same = data.shard_by_file(examples.dataset, data.current_worker())  # one worker: as is
    ```

    Args:
        dataset: a dataset that reads files with a TFRecord (or other reader) dataset, as
            `read_source(directory).dataset` does.
        worker: `Worker(num_workers, index, ...)`, e.g. `current_worker()`.

    Returns:
        The sharded dataset (`dataset` itself for one worker).

    Raises:
        tf.errors.NotFoundError: `dataset` has no reader to shard (e.g. it slices arrays).
    """
    if worker.num_workers <= 1:
        return dataset
    specs = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.AutoShardDataset(
        input_dataset=tf.data.experimental.to_variant(dataset),
        num_workers=worker.num_workers,
        index=worker.index,
        auto_shard_policy=int(tf.data.experimental.AutoShardPolicy.FILE),
        output_types=[s.dtype for s in specs],
        output_shapes=[s.shape for s in specs],
    )
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


@_suggest_keywords
def input_pipeline(
    source: str | os.PathLike | tuple[Any, Any],
    split: str = "train",
    *,
    batch_size: int = 128,
    augmentation: Callable | Sequence[Callable] = (),
    placement: str = "model",
    training: bool = True,
    preprocess: Callable | None = None,
    num_classes: int | None = None,
    one_hot: bool | None = None,
    shuffle_buffer: int | None = None,
    cache: bool | str | os.PathLike = True,
    seed: int | None = None,
    drop_remainder: bool | None = None,
    repeat: bool = False,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    jit_compile: bool | str = "auto",
) -> InputPipeline:
    """Build the input pipeline for training or evaluation from TFRecord shards or arrays.

    Args:
        source: a directory of shards written by `tfrecord_tools` (local or `gs://`; read with
            `tfrecord_tools.read_dataset`), or an `(images, labels)` pair of arrays.
        split: which split of a TFRecord directory.
        batch_size: examples per batch.
        augmentation: sequence of layers (ours, Keras core, keras-cv) or callables on batches.
        placement: "model" (run in the model, returned as `.augmentation`) or "data" (in
            `tf.data` after batching). Label-mixing layers always run in `tf.data`; with
            "model" they must therefore come first in `augmentation` (ValueError otherwise).
        training: False builds an evaluation pipeline: no shuffle, no augmentation (labels are
            still one-hot when `augmentation` mixes labels, to match the training loss).
        preprocess: optional `f(image, label) -> (image, label)` on single examples, done once
            before the cache (e.g. resize to a fixed size).
        num_classes: classes for one-hot labels; by default from the manifest / max label + 1.
        one_hot: one-hot labels; None means only when `augmentation` mixes labels.
        shuffle_buffer: examples in the shuffle buffer; None means the whole epoch
            (a perfect shuffle) up to 50 000 examples.
        cache: True caches in memory, a file name caches on disk, False does not cache.
        seed: seed of the shuffle.
        drop_remainder: drop the last partial batch; None means True for training. A dropped
            remainder is not counted in `num_examples` / `steps_per_epoch`.
        repeat: repeat forever (then pass `steps_per_epoch` to `fit`).
        num_parallel_calls: parallelism of the maps. Seeded augmentation in `tf.data` repeats
            exactly from run to run only with 1: parallel batches take the layers' random
            state in whichever order they run.
        jit_compile: compile the augmentation that runs in `tf.data` with XLA. "auto"
            (default) compiles our layers, `keras.layers.Lambda` and callables when XLA can,
            runs those XLA rejects without it with a logged warning (e.g. MixUp/CutMix, whose
            Beta sampler has no XLA kernel on CPU), and never tries Keras's other layers or
            keras-cv's (slower under XLA, or not compilable). True compiles every layer
            (ValueError if XLA cannot); False never uses XLA. XLA draws other random numbers
            than TF's kernels from the same seeds, so results are reproducible for a given
            setting, not across settings.

    Returns:
        `InputPipeline` with `.dataset`, `.augmentation`, `.attach(model)`, `.steps_per_epoch`,
        `.num_classes`, `.label_names`, `.mean`, `.std`.

    Example:

    ```python
    import numpy as np
    from keras_tricks import augment, data
    x = np.zeros((100, 28, 28), "uint8"); y = np.arange(100) % 10
    pipe = data.input_pipeline((x, y), batch_size=32, placement="data",
                               augmentation=[augment.RandomFlip(), augment.MixUp(0.2)],
                               num_classes=10)
    images, labels = next(iter(pipe.dataset))   # (32, 28, 28, 1) uint8, (32, 10) float32
    ```
    """
    batch_size = _check_int("batch_size", batch_size)
    _check_one_of("placement", placement, _PLACEMENTS)
    layers = _check_augmentation(augmentation)
    _check_one_of("jit_compile", jit_compile, _JIT_COMPILE)
    num_classes = _check_int("num_classes", num_classes, minimum=2, allow_none=True)
    shuffle_buffer = _check_int("shuffle_buffer", shuffle_buffer, allow_none=True)
    if not isinstance(cache, (bool, str, os.PathLike)):
        _fail("cache", "True, False or a file name", cache)
    # The one scan for label-mixing layers: it decides the one-hot default and the placement.
    mixes = [changes_labels(layer) for layer in layers]
    in_data, in_model = _place(layers, mixes, placement)
    _check_backend_for_tf_data(in_data)
    drop = training if drop_remainder is None else bool(drop_remainder)

    ds, info, _ = read_source(source, split)
    num_classes = num_classes or info["num_classes"]
    one_hot = any(mixes) if one_hot is None else bool(one_hot)
    if one_hot and num_classes is None:
        _fail("num_classes", "given (or known from the source) for one-hot labels", None)

    if preprocess is not None:
        ds = ds.map(preprocess, num_parallel_calls=num_parallel_calls)
    if cache:
        ds = ds.cache("" if cache is True else os.fspath(cache))
    if training:
        buffer = shuffle_buffer or min(info["num_examples"], 50_000)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop)
    if one_hot:
        depth = num_classes
        ds = ds.map(
            lambda x, y: (x, tf.one_hot(y, depth, dtype=tf.float32)),
            num_parallel_calls=num_parallel_calls,
        )
    xla_layers = []
    if training and in_data:
        apply, xla_layers = _augmentation_map(in_data, batch_size, jit_compile)
        ds = ds.map(apply, num_parallel_calls=num_parallel_calls)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    model_aug = None
    if training and in_model:
        # An explicit Input keeps the images' dtype: without it Sequential feeds float32.
        spec = ds.element_spec[0]
        image_input = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name)
        model_aug = keras.Sequential([image_input] + in_model, name="augmentation")
    # Training or not, a dropped remainder is not part of the epoch.
    num_examples = info["num_examples"]
    if drop:
        num_examples = num_examples // batch_size * batch_size
    return InputPipeline(
        dataset=ds,
        augmentation=model_aug,
        num_examples=num_examples,
        batch_size=batch_size,
        num_classes=num_classes,
        label_names=info["label_names"],
        mean=info["mean"],
        std=info["std"],
        xla_layers=xla_layers,
    )
