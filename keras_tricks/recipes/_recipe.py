"""The object every recipe returns: everything a training run needs, with `.fit()`.

Design note (for the authors of recipes; `cifar10.py` and `imagenet.py` are worked examples):

- A recipe function (`cifar10_fast(**overrides)`) starts from one table of defaults, each a
  `Hyperparameter(value, source)`, the source being the paper/post/code the value comes from.
  `resolve_hyperparameters(defaults, overrides)` applies keyword overrides (unknown names raise
  with a close-match hint), and when `batch_size` is overridden but the learning rate is not,
  rescales every name in `scaled` by the linear rule
  (`keras_tricks.schedules.scale_learning_rate(lr, new_batch, base_batch)`), recording it in the
  source. Build everything else from the resolved `Hyperparameters` (`hp["batch_size"]`).
- Training data goes through `training_stream(...)`: the same read -> preprocess -> cache ->
  shuffle -> batch -> [label mixing] -> prefetch chain as `keras_tricks.data.input_pipeline`,
  but the shuffle of epoch `e` is seeded with `(seed, e)` instead of by how many times the
  dataset was iterated, so a run restarted at epoch `e` sees the same batches as one that never
  stopped. Evaluation data goes through `keras_tricks.data.input_pipeline(training=False)`.
  Random augmentation runs inside the model (`augmentation=` of `Recipe`), where its
  `SeedGenerator` state is checkpointed.
- `Recipe(...)` takes the pieces; `Recipe.fit(**fit_kwargs)` compiles and runs `model.fit` with
  the recipe's callbacks (EMA, checkpoints, logs) plus yours, and saves the final model;
  `Recipe.evaluate()` scores the test data with the EMA weights and test-time augmentation.

`work_dir` (a local directory or `gs://bucket/path`, through TensorFlow's file system) holds:

    work_dir/backup/       checkpoint of the run (weights, optimizer, EMA, augmentation RNG);
                           deleted when fit completes, resumed from when the same fit restarts
    work_dir/logs/         TensorBoard logs
    work_dir/model.keras   the final model: EMA weights, wrapped in TestTimeAugmentation
    work_dir/hparams.json  every hyperparameter with its value and source

Checkpoints are written at the end of every epoch and a restarted run continues from the last
one (Keras's `BackupAndRestore` cannot resume inside an epoch: it restarts the epoch). The EMA
saves its state before the weights, and on restore takes the state written at the restored
`optimizer.iterations` (see `ExponentialMovingAverage(backup_dir=)`), so a kill between the two
saves cannot mix steps.

Multi-worker (`tf.distribute.MultiWorkerMirroredStrategy`, tested by tests/test_multiworker.py):
build the recipe inside `strategy.scope()` on every worker, from converted TFRecord shards (at
least one per worker), with one shared `work_dir`. Then each worker reads whole, different
shard files (`keras_tricks.data.shard_by_file`); the batch size is the global one; BN statistics
are computed over the global batch; the chief alone writes `work_dir/backup`, the logs, the
final model and `hparams.json`, the other workers back up into `work_dir/workertemp_<task_id>`
(`worker_backup_dir`). When a worker dies the others fail at their next all-reduce; start the
whole cluster again with the same `TF_CONFIG` and `work_dir` and it resumes from the chief's
backup (Keras's fault-tolerance path,
https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras#fault_tolerance).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

from keras_tricks._checks import check_int, check_known, fail
from keras_tricks._state_files import load_step_state, save_step_state, write_file_atomic
from keras_tricks.callbacks import ExponentialMovingAverage, LearningRateLogger
from keras_tricks.schedules import scale_learning_rate

__all__ = [
    "Hyperparameter",
    "Hyperparameters",
    "Recipe",
    "ResumableBackup",
    "recipe_data",
    "resolve_hyperparameters",
    "training_stream",
    "worker_backup_dir",
]

_logger = logging.getLogger(__name__)

GOYAL_2017 = "Goyal et al. 2017, https://arxiv.org/abs/1706.02677 (linear scaling rule)"


# --------------------------------------------------------------------------- hyperparameters
class Hyperparameter(NamedTuple):
    """One hyperparameter: its value and where the value comes from (paper, section, code)."""

    value: Any
    source: str


class Hyperparameters(Mapping):
    """Read-only record of a recipe's hyperparameters: `hp["lr"]` is the value.

    `hp.source("lr")` is its citation, `hp.items_with_sources()` yields `(name, Hyperparameter)`,
    `hp.to_json()` writes both, `hp.overridden` names the ones given as keyword overrides.
    """

    def __init__(self, entries: Mapping[str, Hyperparameter], overridden: Sequence[str] = ()):
        self._entries = dict(entries)
        self.overridden = tuple(overridden)

    def __getitem__(self, name: str) -> Any:
        return self._entries[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def source(self, name: str) -> str:
        return self._entries[name].source

    def entry(self, name: str) -> Hyperparameter:
        return self._entries[name]

    def replace(self, name: str, value: Any, source: str) -> Hyperparameters:
        """A copy with `name` set to `value` (derived values, e.g. a rescaled schedule)."""
        entries = dict(self._entries)
        entries[name] = Hyperparameter(value, source)
        return Hyperparameters(entries, self.overridden)

    def items_with_sources(self) -> ItemsView[str, Hyperparameter]:
        return self._entries.items()

    def to_json(self) -> str:
        def plain(value):
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, (str, int, float, bool)) or value is None:
                return value
            return repr(value)

        return json.dumps(
            {k: {"value": plain(e.value), "source": e.source} for k, e in self._entries.items()},
            indent=1,
        )

    def __repr__(self) -> str:
        return f"Hyperparameters({ {k: e.value for k, e in self._entries.items()} })"


def resolve_hyperparameters(
    defaults: Mapping[str, Hyperparameter],
    overrides: Mapping[str, Any],
    *,
    recipe: str,
    scaled: Sequence[str] = ("learning_rate",),
    batch_key: str = "batch_size",
) -> Hyperparameters:
    """Apply keyword overrides to a recipe's defaults, rescaling the LR for a new batch size.

    Linear scaling rule (Goyal et al. 2017, https://arxiv.org/abs/1706.02677), for every name in
    `scaled` that the caller did not override itself:

    ```
    lr = scale_learning_rate(default_lr, batch_size, base_batch_size=default_batch_size)
    ```

    Example:

    ```python
    from keras_tricks.recipes import Hyperparameter, resolve_hyperparameters
    defaults = {"batch_size": Hyperparameter(512, "Page"),
                "learning_rate": Hyperparameter(0.4, "Page")}
    hp = resolve_hyperparameters(defaults, {"batch_size": 128}, recipe="demo")
    hp["learning_rate"]  # 0.1
    ```

    Args:
        defaults: name -> `Hyperparameter(value, source)`.
        overrides: keyword overrides; every name must be in `defaults`.
        recipe: the recipe's name, for error messages.
        scaled: learning-rate names rescaled when `batch_key` changes.
        batch_key: the batch-size name.

    Returns:
        `Hyperparameters`.
    """
    check_known(f"{recipe}()", overrides, defaults)
    entries = dict(defaults)
    for key, value in overrides.items():
        entries[key] = Hyperparameter(value, "override")
    if batch_key in overrides and batch_key in defaults:
        base_batch = defaults[batch_key].value
        new_batch = check_int(batch_key, overrides[batch_key])
        for name in scaled:
            if name in defaults and name not in overrides:
                old = defaults[name]
                entries[name] = Hyperparameter(
                    scale_learning_rate(old.value, new_batch, base_batch_size=base_batch),
                    f"{old.value} x {new_batch}/{base_batch} by the linear scaling rule "
                    f"({GOYAL_2017}); {old.value} from: {old.source}",
                )
    return Hyperparameters(entries, overridden=list(overrides))


# ------------------------------------------------------------------------------ file system
_write_bytes = write_file_atomic


def _is_remote(path) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _read_bytes(path: str) -> bytes:
    with _gfile().GFile(path, "rb") as f:
        return f.read()


def join(path: str, *parts: str) -> str:
    """`os.path.join` that also joins `gs://` URLs (with "/")."""
    if _is_remote(path):
        return "/".join([str(path).rstrip("/"), *parts])
    return os.path.join(path, *parts)


def _exists(path: str) -> bool:
    return _gfile().exists(path) if _is_remote(path) else os.path.exists(path)


def _makedirs(path: str) -> None:
    if _is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


# ----------------------------------------------------------------------------- data stream
def _epoch_seed(seed: int, epoch):
    # A different, reproducible shuffle per epoch: one int64 from (seed, epoch).
    return seed * 1_000_003 + epoch


class _EpochStart(keras.callbacks.Callback):
    """Tell the training stream which epoch `fit` starts at (0, or the resumed epoch)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable
        self._set = False

    def on_train_begin(self, logs=None):
        self._set = False

    def on_epoch_begin(self, epoch, logs=None):
        # Keras creates the dataset iterator after the first on_epoch_begin; with
        # steps_per_epoch given it keeps that iterator for the whole fit.
        if not self._set:
            self.variable.assign(epoch)
            self._set = True


class TrainingStream(NamedTuple):
    """What `training_stream` built: the dataset, its epoch length and the epoch callback."""

    dataset: Any
    steps_per_epoch: int
    num_examples: int
    num_classes: int | None
    info: dict
    callback: keras.callbacks.Callback


def training_stream(
    source: str | os.PathLike | tuple[Any, Any],
    split: str = "train",
    *,
    batch_size: int,
    seed: int = 0,
    preprocess: Callable | None = None,
    label_mixing: Sequence[Callable] = (),
    num_classes: int | None = None,
    one_hot: bool | None = None,
    cache: bool | str = True,
    shuffle_buffer: int | None = None,
    num_parallel_calls: int | None = None,
) -> TrainingStream:
    """Endless training batches whose epoch `e` depends only on `(seed, e)`, for exact resumes.

    ```
    base = read(source, split).map(preprocess).cache()
    epoch_e = base.shuffle(buffer, seed=seed * 1_000_003 + e).batch(batch_size, drop_remainder=True)
    stream = concatenate(epoch_e for e in count(start_epoch))  # then one-hot, mixing, prefetch
    ```

    `start_epoch` is set by `TrainingStream.callback` at the first `on_epoch_begin` of `fit`,
    which is the resumed epoch after `BackupAndRestore`. Pass `steps_per_epoch` to `fit`.

    Args:
        source: a `tfrecord_tools` directory (local or `gs://`) or `(images, labels)` arrays.
        split: the split of a TFRecord directory.
        batch_size: examples per batch (the last partial batch of each epoch is dropped).
        seed: seed of the shuffles.
        preprocess: optional `f(image, label) -> (image, label)` before the cache.
        label_mixing: layers that mix labels (MixUp, CutMix), run in `tf.data` on one-hot labels.
        num_classes: classes for one-hot labels; by default from the manifest / max label + 1.
        one_hot: one-hot labels; None means when `label_mixing` is given.
        cache: True caches in memory, a file name on disk, False not at all.
        shuffle_buffer: examples in the shuffle buffer; None means the whole split (up to 50 000).
        num_parallel_calls: parallelism of the maps (default AUTOTUNE).
    """
    import tensorflow as tf

    from keras_tricks import data

    batch_size = check_int("batch_size", batch_size)
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    # The reader of keras_tricks.data (TFRecord directory, local or gs://, or arrays), so the
    # training stream and input_pipeline read and check their sources the same way.
    base, info, from_files = data.read_source(source, split)
    worker = data.current_worker()
    # Multi-worker (MultiWorkerMirroredStrategy): the epochs below are a flat_map over an
    # epoch counter, which hides the reader from TensorFlow's FILE auto-shard rewrite, so
    # `experimental_distribute_dataset` would fall back to DATA sharding (every worker reading
    # every shard, then keeping 1/num_workers of the batches). Shard the files here, where the
    # reader is in sight, and switch the strategy's auto-sharding off for the result.
    sharded = from_files and worker.num_workers > 1
    if sharded:
        base = data.shard_by_file(base, worker)
    num_classes = num_classes or info["num_classes"]
    one_hot = bool(label_mixing) if one_hot is None else bool(one_hot)
    if preprocess is not None:
        base = base.map(preprocess, num_parallel_calls=parallel)
    if cache:
        base = base.cache("" if cache is True else os.fspath(cache))
    buffer = shuffle_buffer or min(info["num_examples"], 50_000)
    steps = info["num_examples"] // batch_size
    batches_per_epoch = None  # every full batch of the epoch
    if sharded:
        # Each worker's stream yields global batches from its own shards, and the strategy
        # splits every one among the workers (each takes batch_size / num_workers per step),
        # so a worker's epoch of `b` batches lasts `b * num_workers` steps. All workers take
        # the same b: that of the worker with the fewest examples (shard i is worker
        # i % num_workers's, as `shard_by_file` deals them), so epoch e of the stream is
        # epoch e of fit on every worker and a resumed run sees the batches it would have.
        per_worker = _examples_per_worker(source, split, worker.num_workers)
        batches_per_epoch = min(per_worker) // batch_size
        steps = batches_per_epoch * worker.num_workers
    if steps < 1:
        fail("batch_size", f"at most the {info['num_examples']} examples of {split!r}", batch_size)

    start = tf.Variable(0, dtype=tf.int64, trainable=False, name="start_epoch")

    def one_epoch(epoch):
        # The order must depend on (seed, epoch) alone, not on TF's global seed; and TF's
        # get_seed() compares (global_seed, op_seed) == (0, 0) in Python, which fails for a
        # tensor op seed when the global seed is 0. So this function's graph gets a fixed seed.
        tf.compat.v1.get_default_graph().seed = 1
        shuffled = base.shuffle(
            buffer, seed=_epoch_seed(seed, epoch), reshuffle_each_iteration=False
        )
        batches = shuffled.batch(batch_size, drop_remainder=True)
        return batches if batches_per_epoch is None else batches.take(batches_per_epoch)

    ds = tf.data.Dataset.counter().map(lambda i: i + start.read_value()).flat_map(one_epoch)
    if one_hot:
        depth = num_classes
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, depth, dtype=tf.float32)), parallel)
    for layer in label_mixing:
        ds = ds.map(lambda x, y, layer=layer: data.apply_layer(layer, x, y), parallel)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if sharded:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    return TrainingStream(
        dataset=ds,
        steps_per_epoch=steps,
        num_examples=info["num_examples"],
        num_classes=num_classes,
        info=info,
        callback=_EpochStart(start),
    )


def _examples_per_worker(path, split: str, num_workers: int) -> list[int]:
    """Examples each worker reads when shard i goes to worker i % num_workers (the manifest's)."""
    import tfrecord_tools

    shards = tfrecord_tools.read_manifest(os.fspath(path))["splits"][split]["shards"]
    if len(shards) < num_workers:
        fail(
            "source",
            f"a split with at least one shard per worker ({num_workers}) for multi-worker "
            f"training; {split!r} of {os.fspath(path)!r} has {len(shards)}",
            os.fspath(path),
        )
    counts = [int(shard["num_records"]) for shard in shards]
    return [sum(counts[w::num_workers]) for w in range(num_workers)]


# ------------------------------------------------------------------------------ checkpoints
def _random_state_variables(model):
    """The model's `SeedGenerator` states (in `model.variables`, not in `model.weights`)."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _iterations(model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that resumes exactly, also on `gs://`.

    Keras's callback writes the weights file in place (a kill mid-write leaves a corrupt
    file), keeps the epoch in a second file written after it (a kill between the two restores
    weights of one epoch with the counter of another) and does not save the random state of
    the augmentation layers. Here, at the end of every epoch:

    ```
    save random state, tagged with optimizer.iterations   backup/rng_state.npz (+ .prev.npz)
    save weights + optimizer   backup/tmp.weights.h5 -> rename -> backup/latest.weights.h5
    ```

    and on restore the epoch is `optimizer.iterations // steps_per_epoch` read from the weights
    file itself, the random state the one saved at those iterations. Put
    `ExponentialMovingAverage(backup_dir=same dir)` *before* this callback so its state is also
    saved before the weights.

    Multi-worker (`MultiWorkerMirroredStrategy`), as Keras's fault-tolerance guide prescribes
    (https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras#fault_tolerance):
    every worker runs the same saves (a save may read distributed variables, which takes
    every worker), the chief into the shared `backup_dir`, the others into their own
    temporary directory (`worker_backup_dir`), deleted when `fit` ends. A restarted cluster
    resumes from the chief's backup: pass it as `restore_dir` on the other workers; it is
    copied into their `backup_dir` before anything is read, so the callbacks that keep their
    state beside the weights (the EMA) restore the chief's state too.

    Args:
        backup_dir: directory (local or `gs://`) this worker writes this run's checkpoints to.
        steps_per_epoch: optimizer steps per epoch, to recover the epoch from the iterations.
        delete_checkpoint: remove `backup_dir` when `fit` completes.
        restore_dir: the directory to resume from, if not `backup_dir` (the chief's backup,
            on the other workers of a cluster).
    """

    def __init__(
        self,
        backup_dir: str,
        steps_per_epoch: int,
        delete_checkpoint: bool = True,
        restore_dir: str | None = None,
    ) -> None:
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=delete_checkpoint)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch)
        self.restore_dir = None if restore_dir is None else os.fspath(restore_dir)
        self._tmp_weights_path = join(backup_dir, "tmp.weights.h5")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_dir is not None and self.restore_dir != self.backup_dir:
            _copy_files(self.restore_dir, self.backup_dir)
        super().on_train_begin(logs)

    def _load_model(self):
        if not _exists(self._weights_path):
            return
        super()._load_model()
        iterations = _iterations(self.model)
        self.model._initial_epoch = iterations // self.steps_per_epoch
        state = load_step_state(self.backup_dir, "rng_state", iterations)
        variables = _random_state_variables(self.model)
        if state is not None and len(state) == len(variables):
            for variable, value in zip(variables, state):
                variable.assign(value)
        elif variables:
            _logger.warning(
                "No augmentation random state for step %d in %s; the augmentation after the "
                "restart will differ from an uninterrupted run.",
                iterations,
                self.backup_dir,
            )

    def _save_model(self):
        _makedirs(self.backup_dir)
        iterations = _iterations(self.model)
        arrays = [keras.ops.convert_to_numpy(v) for v in _random_state_variables(self.model)]
        save_step_state(self.backup_dir, "rng_state", iterations, arrays)
        self.model.save_weights(self._tmp_weights_path, overwrite=True)
        if _is_remote(self._weights_path):
            _gfile().rename(self._tmp_weights_path, self._weights_path, overwrite=True)
        else:
            os.replace(self._tmp_weights_path, self._weights_path)
        meta = {"epoch": iterations // self.steps_per_epoch, "iterations": iterations}
        _write_bytes(self._training_metadata_path, json.dumps(meta).encode())

    def get_config(self) -> dict[str, Any]:
        return {
            "backup_dir": self.backup_dir,
            "steps_per_epoch": self.steps_per_epoch,
            "delete_checkpoint": self.delete_checkpoint,
            "restore_dir": self.restore_dir,
        }


def _copy_files(source: str, target: str) -> None:
    """Make `target` a copy of the files (not the sub-directories) of `source`.

    What `target` held before goes first: files of another step left by a killed run (this
    worker's last EMA state, say) must not sit beside the copied backup.
    """
    gfile = _gfile()
    if gfile.isdir(target):
        gfile.rmtree(target)
    if not gfile.isdir(source):
        return
    gfile.makedirs(target)
    for name in gfile.listdir(source):
        path = join(source, name.rstrip("/"))
        if not gfile.isdir(path):
            gfile.copy(path, join(target, name), overwrite=True)


def worker_backup_dir(work_dir: str | None) -> str | None:
    """The backup directory this worker writes to: `work_dir/backup`, or its own on non-chiefs.

    Keras's multi-worker convention (`tf.keras`'s `distributed_file_utils.write_dirpath`): the
    chief writes the real checkpoint; every other worker writes the same files to a temporary
    directory of its own, here `work_dir/workertemp_<task_id>`, deleted at the end of `fit`,
    so no two processes ever write one file. Outside a cluster: `work_dir/backup`.

    ```
    "work_dir/backup" if current_worker().is_chief else f"work_dir/workertemp_{task_id}"
    ```

    Example:

    ```python
    from keras_tricks.recipes import worker_backup_dir
    worker_backup_dir("/tmp/run")  # '/tmp/run/backup' on one machine
    ```

    Args:
        work_dir: the recipe's `work_dir` (local or `gs://`), or None.

    Returns:
        The directory, or None without a `work_dir`.
    """
    return None if work_dir is None else _worker_backup_dir(os.fspath(work_dir))


def _worker_backup_dir(work_dir: str) -> str:
    from keras_tricks.data import current_worker

    worker = current_worker()
    if worker.is_chief:
        return join(work_dir, "backup")
    return join(work_dir, f"workertemp_{worker.task_id}")


# ----------------------------------------------------------------------------------- recipe
class Recipe:
    """A complete training run: model, optimizer, loss, data, callbacks, epochs; `.fit()` runs it.

    Attributes (all public; change them before `fit` to experiment):
        name: the recipe's name.
        network: the network proper (e.g. `resnet9(...)`).
        preprocessing, augmentation: the layers given to the constructor (e.g. to plot what
            the augmentation does).
        classifier: `preprocessing` (e.g. `Normalize`) then `network`, on the evaluation
            data's raw images: what `evaluate` scores and `save` exports.
        model: what `fit` trains: `augmentation` (the random layers, with the fixed ones such as
            `Normalize` in their place in the chain), then `network`. All three share weights.
        optimizer, loss, metrics: passed to `model.compile`.
        train_data: `tf.data.Dataset` of training batches (endless; see `steps_per_epoch`).
        validation_data, test_data: evaluation `tf.data.Dataset`s or None.
        epochs, steps_per_epoch, batch_size: the length of the run.
        hparams: `Hyperparameters`, every value with its source.
        ema: the `ExponentialMovingAverage` callback, or None.
        tta: keyword arguments of `TestTimeAugmentation` (`flips`, `shifts`), or None.
        callbacks: the recipe's own callbacks (EMA first, then checkpoints, logs).
        work_dir: local or `gs://` directory, or None (nothing written).
        is_chief: whether this process writes the backup, logs and final model (False on the
            non-chief workers of a multi-worker cluster).

    Example:

    ```python
    import numpy as np
    from keras_tricks import recipes
    x = np.random.randint(0, 256, (64, 32, 32, 3), "uint8"); y = np.arange(64) % 10
    recipe = recipes.cifar10_fast({"train": (x, y), "test": (x, y)}, width=4, epochs=1,
                                  batch_size=32)
    recipe.hparams.source("batch_size")  # 'override'; the default 512 cites Page's dawn.py
    recipe.fit(verbose=0)
    recipe.evaluate()["accuracy"]
    ```
    """

    def __init__(
        self,
        *,
        name: str,
        network: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        loss: Any,
        train: TrainingStream,
        epochs: int,
        batch_size: int,
        hparams: Hyperparameters,
        preprocessing: Sequence[keras.layers.Layer] = (),
        augmentation: Sequence[keras.layers.Layer] = (),
        metrics: Sequence[Any] = ("accuracy",),
        validation_data: Any = None,
        test_data: Any = None,
        ema: ExponentialMovingAverage | None = None,
        tta: Mapping[str, Any] | None = None,
        work_dir: str | None = None,
        extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        self.name = name
        self.network = network
        self.preprocessing = list(preprocessing)
        self.augmentation = list(augmentation)
        # The classifier takes what the evaluation data holds (e.g. 224 x 224 centre crops),
        # the training model what the training stream holds (e.g. 256 x 256 to crop from).
        eval_spec = (test_data if test_data is not None else train.dataset).element_spec[0]
        self.classifier = _assemble(network, preprocessing, eval_spec, f"{name}_classifier")
        self.model = _assemble(
            network, augmentation, train.dataset.element_spec[0], f"{name}_train"
        )
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = list(metrics)
        self.train_data = train.dataset
        self.steps_per_epoch = train.steps_per_epoch
        self.validation_data = validation_data
        self.test_data = test_data
        self.epochs = check_int("epochs", epochs)
        self.batch_size = check_int("batch_size", batch_size)
        self.hparams = hparams
        self.ema = ema
        self.tta = None if tta is None else dict(tta)
        self.work_dir = None if work_dir is None else os.fspath(work_dir)
        from keras_tricks.data import current_worker

        # Under MultiWorkerMirroredStrategy only the chief writes the backup, the logs and the
        # final model (Keras's multi-worker rule: the others would write the same files at
        # the same time); the others back up into their own temporary directory.
        worker = current_worker()
        self.is_chief = worker.is_chief
        if worker.num_workers > 1:
            # Keras 3's BatchNormalization keeps its moving statistics as plain mirrored
            # variables (aggregation "none"): under MultiWorkerMirroredStrategy each worker
            # updates them from its own share of the batch and they drift apart (0.01 after 3
            # epochs of a small run here), so the workers' models differ and the chief's
            # export holds the chief's statistics. Synchronized BN computes every statistic
            # over the global batch: identical on every worker, and the model of one device
            # training on the same global batch. (Set back to False while saving a model,
            # whose config would otherwise only load on TensorFlow.)
            _set_synchronized_batch_norm(network, True)
        callbacks: list[keras.callbacks.Callback] = []
        if ema is not None:
            callbacks.append(ema)  # before the backup: its state is saved before the weights
        if self.work_dir is not None:
            callbacks.append(
                ResumableBackup(
                    _worker_backup_dir(self.work_dir),
                    self.steps_per_epoch,
                    restore_dir=self.backup_dir,
                )
            )
        callbacks.append(train.callback)
        callbacks.append(LearningRateLogger())
        if self.work_dir is not None and self.is_chief:
            callbacks.append(
                keras.callbacks.TensorBoard(
                    join(self.work_dir, "logs"), write_graph=False, profile_batch=0
                )
            )
        callbacks.extend(extra_callbacks)
        self.callbacks = callbacks

    # ------------------------------------------------------------------ paths
    @property
    def backup_dir(self) -> str | None:
        return None if self.work_dir is None else join(self.work_dir, "backup")

    @property
    def model_path(self) -> str | None:
        return None if self.work_dir is None else join(self.work_dir, "model.keras")

    # -------------------------------------------------------------------- run
    def compile(self, **compile_kwargs: Any) -> None:
        """`model.compile(optimizer, loss, metrics, **compile_kwargs)` (done by `fit` if needed)."""
        self.model.compile(
            optimizer=self.optimizer, loss=self.loss, metrics=self.metrics, **compile_kwargs
        )

    def fit(self, **fit_kwargs: Any) -> keras.callbacks.History:
        """Compile (once) and train; save the final model to `work_dir`; return the History.

        Keyword arguments go to `keras.Model.fit` (`verbose=`, `callbacks=` are added after the
        recipe's own, `epochs=` replaces the recipe's, ...). A run killed and started again with
        the same `work_dir` continues from its last completed epoch.
        """
        if not self.model.compiled:
            self.compile()
        if self.work_dir is not None:
            _makedirs(self.work_dir)
            self._check_resumable()
            if self.is_chief:
                _write_bytes(join(self.work_dir, "hparams.json"), self.hparams.to_json().encode())
        extra = list(fit_kwargs.pop("callbacks", []))
        kwargs = dict(
            shuffle=False,  # the training stream shuffles itself, per epoch
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            validation_data=self.validation_data,
        )
        kwargs.update(fit_kwargs)
        with _multi_worker_fit(self.model, self.train_data):
            history = self.model.fit(self.train_data, callbacks=self.callbacks + extra, **kwargs)
        if self.work_dir is not None and self.is_chief:
            self.save()
        return history

    def _check_resumable(self) -> None:
        """Refuse to resume a checkpoint written with other hyperparameters.

        A checkpoint restored into a run with, say, another batch size or schedule would give
        a run that matches neither; say so before anything is overwritten.
        """
        if self.work_dir is None:
            return
        saved_path = join(self.work_dir, "hparams.json")
        checkpoint = join(self.work_dir, "backup", "latest.weights.h5")
        if not (_exists(checkpoint) and _exists(saved_path)):
            return
        saved = json.loads(_read_bytes(saved_path))
        current = json.loads(self.hparams.to_json())
        changed = sorted(
            k
            for k in set(saved) | set(current)
            if saved.get(k, {}).get("value") != current.get(k, {}).get("value")
        )
        if changed:
            details = ", ".join(
                f"{k}: {saved.get(k, {}).get('value')!r} -> {current.get(k, {}).get('value')!r}"
                for k in changed
            )
            raise ValueError(
                f"`work_dir` {self.work_dir!r} holds an unfinished run with other "
                f"hyperparameters ({details}). Resume it with the same ones, or use another "
                "work_dir (or delete its backup/ to start over)."
            )

    def inference_model(self) -> keras.Model:
        """`classifier` wrapped in `TestTimeAugmentation` (when the recipe uses TTA)."""
        if not self.tta:
            return self.classifier
        from keras_tricks.training import TestTimeAugmentation

        model = TestTimeAugmentation(self.classifier, **self.tta)
        spec = self.classifier.inputs[0]
        model(np.zeros([1, *spec.shape[1:]], spec.dtype))  # build it, so it saves whole
        return model

    def _averaged(self):
        import contextlib

        if self.ema is not None and self.ema.average_variables is not None:
            return self.ema.averaged()
        return contextlib.nullcontext()

    def evaluate(self, data: Any = None) -> dict[str, float]:
        """Top-1 (and top-5 with >= 10 classes) accuracy on `data` (default the test data).

        Uses the EMA weights (when trained with EMA) and test-time augmentation.
        """
        data = self.test_data if data is None else data
        if data is None:
            raise ValueError("This recipe has no test data; pass `data=`.")
        with self._averaged():
            model = self.inference_model()
            correct1 = correct5 = total = 0
            for images, labels in data:
                scores = keras.ops.convert_to_numpy(model(images, training=False))
                labels = np.asarray(labels)
                if labels.ndim == 2:
                    labels = labels.argmax(-1)
                order = np.argsort(-scores, axis=-1)
                correct1 += int((order[:, 0] == labels).sum())
                correct5 += int((order[:, :5] == labels[:, None]).any(-1).sum())
                total += len(labels)
        result = {"accuracy": correct1 / max(total, 1), "num_examples": total}
        if scores.shape[-1] >= 10:
            result["top5_accuracy"] = correct5 / max(total, 1)
        return result

    def save(self, path: str | None = None) -> str:
        """Save the EMA-weights classifier, wrapped in TTA, as `.keras` (default: in work_dir)."""
        path = path or self.model_path
        if path is None:
            raise ValueError("This recipe has no `work_dir`; pass `path=`.")
        with self._averaged(), _unsynchronized_batch_norm(self.network):
            model = self.inference_model()
            if _is_remote(path):
                # Keras writes .keras archives locally; copy the finished file in one upload.
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    local = os.path.join(tmp, "model.keras")
                    model.save(local)
                    with open(local, "rb") as f:
                        _write_bytes(path, f.read())
            else:
                tmp = path + ".tmp.keras"
                model.save(tmp)
                os.replace(tmp, path)
        return path

    def summary(self) -> str:
        """A markdown table of the hyperparameters: name, value, source."""
        rows = ["| hyperparameter | value | source |", "|---|---|---|"]
        for key, entry in self.hparams.items_with_sources():
            rows.append(f"| {key} | {entry.value!r} | {entry.source} |")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (
            f"Recipe({self.name!r}, epochs={self.epochs}, batch_size={self.batch_size}, "
            f"steps_per_epoch={self.steps_per_epoch}, work_dir={self.work_dir!r})"
        )


@contextlib.contextmanager
def _multi_worker_fit(model: keras.Model, dataset) -> Iterator[None]:
    """Work around Keras 3's `fit` under `MultiWorkerMirroredStrategy` (while it runs).

    Two steps of Keras 3's TensorFlow trainer (3.15, and its main branch of 2026-08) fail
    when the strategy runs on more than one worker; keras-team/keras#20585 and
    tensorflow/tensorflow#72388 report the TensorFlow multi-worker tutorial failing so since
    Keras 3 became TensorFlow's Keras:

    - `TensorFlowTrainer._maybe_symbolic_build` takes one batch and averages it over the
      replicas (`strategy.reduce("MEAN", (x, y), axis=None)`) only to read its shapes and
      dtypes; `MultiWorkerMirroredStrategy.reduce` does not take an `(x, y)` structure
      ("Attempt to convert a value (PerReplica...) to a Tensor"). Given `data_batch=`, the
      same method skips the batch: it gets the dataset's element spec (the shapes and dtypes).
    - `reduce_per_replica` averages the logs of every step with `strategy.reduce("MEAN", v,
      axis=0)` on the multi-worker path, and the logs are scalars ("Invalid reduction
      dimension 0 for input with 0 dimensions"). Here `train_step`/`test_step` return each
      scalar as a 1-element vector, whose mean over axis 0 and the replicas is the scalar.
    """
    from keras_tricks.data import current_worker

    # The model's strategy: `fit` may run outside the `strategy.scope()` the model was built in.
    if current_worker(getattr(model, "distribute_strategy", None)).num_workers <= 1:
        yield
        return
    import tensorflow as tf

    def vector_logs(step):
        def run(data):
            logs = step(data)
            return {k: v if v.shape.rank else tf.reshape(v, [1]) for k, v in logs.items()}

        return run

    build, train_step, test_step = model._maybe_symbolic_build, model.train_step, model.test_step
    spec = dataset.element_spec
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(data_batch=spec)
    model.train_step, model.test_step = vector_logs(train_step), vector_logs(test_step)
    try:
        yield
    finally:
        del model._maybe_symbolic_build, model.train_step, model.test_step


def _batch_norm_layers(model) -> list:
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        stack.extend(getattr(layer, "layers", ()))
    return found


def _set_synchronized_batch_norm(model, value: bool) -> None:
    """Set `synchronized` of every BatchNormalization in `model` (read when `fit` traces)."""
    for layer in _batch_norm_layers(model):
        layer.synchronized = value


@contextlib.contextmanager
def _unsynchronized_batch_norm(model) -> Iterator[None]:
    """`synchronized=False` for the duration: a saved config then loads on every backend."""
    layers = [layer for layer in _batch_norm_layers(model) if layer.synchronized]
    for layer in layers:
        layer.synchronized = False
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = True


def _assemble(network, layers, spec, name):
    """Input (`spec`'s shape and dtype) -> `layers` -> `network`, as a functional model."""
    layers = list(layers)
    if not layers:
        return network
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name, name="images")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, network(x), name=name)


# ------------------------------------------------------------------------------ data sources
_SCHEMES = ("numpy:", "idx:", "cifar:", "folder:", "tfds:", "keras:")


def split_source(data, split: str, tfrecord_dir: str | None = None, name: str | None = None):
    """What `training_stream` / `input_pipeline` read for `split` of a recipe's `data`.

    `data` is a `tfrecord_tools` directory (local or `gs://`), a raw source named with a scheme
    (`cifar:DIR`, `idx:DIR`, `folder:DIR`, `numpy:FILE.npz`, ...: converted once to TFRecord
    shards in `tfrecord_dir`, later runs reuse them) or a dict `{split: (images, labels)}`.
    """
    if isinstance(data, Mapping):
        if split not in data:
            fail("data", f"a dict with a {split!r} entry", sorted(data))
        return data[split]
    if not isinstance(data, (str, os.PathLike)):
        fail("data", "a TFRecord directory, a 'scheme:PATH' source or a dict of arrays", data)
    data = os.fspath(data)
    if data.startswith(_SCHEMES):
        if tfrecord_dir is None:
            fail("tfrecord_dir", f"a directory to convert {data!r} into (or pass work_dir=)", None)
        import tfrecord_tools

        manifest = join(tfrecord_dir, "manifest.json")
        if not _exists(manifest):
            from keras_tricks.data import current_worker

            if not current_worker().is_chief:
                # Two workers converting into one directory would collide (the writer locks
                # it and the second one fails); a cluster trains from converted shards.
                fail(
                    "data",
                    f"converted before multi-worker training (no {manifest!r}; run "
                    f"`tfrecord-tools convert {data} {tfrecord_dir}` first)",
                    data,
                )
            tfrecord_tools.convert(data, tfrecord_dir, name=name, progress=False)
        return tfrecord_dir
    return data


class RecipeData(NamedTuple):
    """What `recipe_data` built: the training stream and the evaluation dataset."""

    train: TrainingStream
    test: Any


def recipe_data(
    data: str | os.PathLike | Mapping[str, tuple[Any, Any]],
    *,
    name: str,
    work_dir: str | None,
    tfrecord_dir: str | None,
    train_split: str,
    test_split: str,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    train_options: Mapping[str, Any] | None = None,
    test_options: Mapping[str, Any] | None = None,
) -> RecipeData:
    """A recipe's data: `training_stream` of `train_split`, `input_pipeline` of `test_split`.

    The set-up every recipe shares: a raw source is converted once into `tfrecord_dir`
    (default `work_dir/tfrecords`), then

    ```
    train = training_stream(split_source(data, train_split), train_split,
                            batch_size=batch_size, seed=seed, **train_options)
    test = input_pipeline(split_source(data, test_split), test_split,
                          batch_size=eval_batch_size, training=False, **test_options).dataset
    ```

    Example:

    ```python
    import numpy as np
    from keras_tricks.recipes import recipe_data
    x = np.zeros((64, 8, 8, 1), "uint8"); y = np.arange(64) % 4
    data = recipe_data({"train": (x, y), "test": (x, y)}, name="demo", work_dir=None,
                       tfrecord_dir=None, train_split="train", test_split="test",
                       batch_size=16, eval_batch_size=32, seed=0)
    data.train.steps_per_epoch  # 4
    ```

    Args:
        data: what `split_source` takes: a TFRecord directory, a `scheme:PATH` raw source or
            a dict `{split: (images, labels)}`.
        name: the dataset's name, for a conversion (`tfrecord_tools.convert(name=)`).
        work_dir: the recipe's `work_dir`, or None.
        tfrecord_dir: where a raw source is converted; None means `work_dir/tfrecords`.
        train_split, test_split: the splits to train on and to evaluate on.
        batch_size, eval_batch_size: training and evaluation batch sizes.
        seed: seed of the training stream's shuffles.
        train_options: more keyword arguments of `training_stream`.
        test_options: more keyword arguments of `keras_tricks.data.input_pipeline`.

    Returns:
        `RecipeData(train, test)`.
    """
    from keras_tricks import data as kt_data

    if tfrecord_dir is None and work_dir is not None:
        tfrecord_dir = join(os.fspath(work_dir), "tfrecords")
    train = training_stream(
        split_source(data, train_split, tfrecord_dir, name),
        train_split,
        batch_size=batch_size,
        seed=seed,
        **dict(train_options or {}),
    )
    test = kt_data.input_pipeline(
        split_source(data, test_split, tfrecord_dir, name),
        test_split,
        batch_size=eval_batch_size,
        training=False,
        **dict(test_options or {}),
    ).dataset
    return RecipeData(train, test)
