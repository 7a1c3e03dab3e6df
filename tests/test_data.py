"""Tests for keras_tricks.data: caching, shuffling, one-hot labels, augmentation placement."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tricks import augment, data


def arrays(n=96, size=8, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3)).astype("uint8")
    # Image i carries its own index in pixel (0, 0, 0) so examples can be traced.
    x[:, 0, 0, 0] = np.arange(n) % 256
    return x, (np.arange(n) % classes).astype("int64")


def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_each_epoch_is_a_fresh_shuffle_of_every_example_once():
    x, y = arrays()
    pipe = data.input_pipeline((x, y), batch_size=16, seed=0)
    first_x, first_y = collect(pipe.dataset)
    second_x, _ = collect(pipe.dataset)
    assert pipe.steps_per_epoch == 6 and len(first_x) == 96
    # Same multiset of examples as the source, in a different order each epoch.
    np.testing.assert_array_equal(np.sort(first_x[:, 0, 0, 0]), np.arange(96))
    np.testing.assert_array_equal(first_y, y[first_x[:, 0, 0, 0]])
    assert not np.array_equal(first_x[:, 0, 0, 0], np.arange(96))
    assert not np.array_equal(first_x[:, 0, 0, 0], second_x[:, 0, 0, 0])


def test_fixed_preprocessing_runs_once_then_comes_from_the_cache():
    x, y = arrays(n=32)
    calls = []

    def count(image):
        calls.append(1)
        return image

    def preprocess(image, label):
        image = tf.py_function(count, [image], tf.uint8)
        image.set_shape((8, 8, 3))
        return image, label

    pipe = data.input_pipeline((x, y), batch_size=8, preprocess=preprocess)
    for _ in range(3):
        collect(pipe.dataset)
    assert len(calls) == 32  # one call per example, not per example and epoch


def test_labels_are_one_hot_only_when_an_augmentation_mixes_them():
    x, y = arrays()
    plain = data.input_pipeline((x, y), batch_size=16, augmentation=[augment.RandomFlip()])
    _, labels = next(iter(plain.dataset))
    assert labels.shape == (16,) and labels.dtype == tf.int64
    mixed = data.input_pipeline(
        (x, y), batch_size=16, augmentation=[augment.MixUp(alpha=0.4, seed=1)]
    )
    assert mixed.num_classes == 6
    images, labels = next(iter(mixed.dataset))
    assert labels.shape == (16, 6)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert (labels.numpy().max(axis=1) < 1.0).any()  # mixed in tf.data, with the images
    # Evaluation pipeline: labels one-hot to match the loss, but no mixing and no shuffle.
    evaluation = data.input_pipeline(
        (x, y), batch_size=16, training=False, augmentation=[augment.MixUp(alpha=0.4)]
    )
    images, labels = collect(evaluation.dataset)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, np.eye(6)[y])


def test_data_placement_augments_batches_in_tf_data():
    x, y = arrays()
    pipe = data.input_pipeline(
        (x, y), batch_size=16, placement="data", augmentation=[augment.RandomFlip(rate=1.0)]
    )
    assert pipe.augmentation is None
    images, labels = next(iter(pipe.dataset))
    index = images.numpy()[:, 0, -1, 0]  # the traced pixel moved to the right edge
    np.testing.assert_array_equal(images.numpy(), x[index][:, :, ::-1])


def test_model_placement_returns_layers_that_run_first_in_the_model():
    x, y = arrays()
    flip = augment.RandomFlip(rate=1.0)
    pipe = data.input_pipeline((x, y), batch_size=16, augmentation=[flip])
    images, _ = next(iter(pipe.dataset))
    np.testing.assert_array_equal(images.numpy(), x[images.numpy()[:, 0, 0, 0]])  # untouched
    assert pipe.augmentation.layers == [flip]
    identity = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Identity()])
    model = pipe.attach(identity)
    assert model.layers[1] is pipe.augmentation and pipe.augmentation.output.dtype == "uint8"
    np.testing.assert_array_equal(model(images, training=True).numpy(), images.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(model.predict(images, verbose=0), images.numpy())


def test_label_mixing_layers_stay_in_tf_data_with_model_placement():
    x, y = arrays()
    mix = augment.CutMix(alpha=1.0, seed=0)
    # Label mixing first: it runs in tf.data, before the layers that run in the model.
    pipe = data.input_pipeline((x, y), batch_size=16, augmentation=[mix, augment.RandomFlip()])
    assert [type(layer) for layer in pipe.augmentation.layers] == [augment.RandomFlip]
    _, labels = next(iter(pipe.dataset))
    assert labels.shape == (16, 6) and (labels.numpy().max(axis=1) < 1.0).any()


def test_label_mixing_after_an_in_model_layer_is_refused_not_reordered():
    # [Cutout, CutMix] with placement="model" used to run as CutMix (tf.data) then Cutout
    # (model); the order given cannot be kept there, so it is refused with the two ways out.
    x, y = arrays()
    chain = [augment.Cutout(4), augment.CutMix(alpha=1.0)]
    with pytest.raises(ValueError, match="CutMix cannot come after Cutout.*placement='data'"):
        data.input_pipeline((x, y), batch_size=16, augmentation=chain)
    with pytest.raises(ValueError, match="MixUp cannot come after RandomFlip"):
        data.input_pipeline(
            (x, y),
            batch_size=16,
            augmentation=[augment.MixUp(0.2), augment.RandomFlip(), augment.MixUp(0.2)],
        )
    pipe = data.input_pipeline((x, y), batch_size=16, augmentation=chain, placement="data")
    assert pipe.augmentation is None


class Recorder:
    """A callable augmentation that notes when it is applied; `mixes_labels` is the marker."""

    def __init__(self, name, log, mixes_labels):
        self.__name__, self.log, self.mixes_labels = name, log, mixes_labels

    def __call__(self, inputs, training=True):
        self.log.append(self.__name__)
        return inputs


def test_data_placement_applies_the_layers_in_the_order_given():
    x, y = arrays()
    log = []
    chain = [Recorder("a", log, False), Recorder("mix", log, True), Recorder("b", log, False)]
    pipe = data.input_pipeline(
        (x, y), batch_size=16, augmentation=chain, placement="data", jit_compile=False
    )
    next(iter(pipe.dataset))
    assert log[:3] == ["a", "mix", "b"]  # traced once, in the user's order
    # Our own `mixes_labels` marker makes the pipeline one-hot the labels for it.
    assert pipe.dataset.element_spec[1].shape.as_list() == [16, 6]


@pytest.mark.parametrize(
    "training, drop_remainder, steps",
    [(True, None, 3), (False, None, 4), (False, True, 3), (True, False, 4)],
)
def test_steps_per_epoch_counts_the_batches_the_dataset_yields(training, drop_remainder, steps):
    # 100 examples in batches of 32: ceil(100 / 32) = 4 batches, floor(100 / 32) = 3 when the
    # partial batch of 4 is dropped; evaluation with drop_remainder=True used to report 4.
    x, y = arrays(n=100)
    pipe = data.input_pipeline(
        (x, y), batch_size=32, training=training, drop_remainder=drop_remainder
    )
    assert steps == (100 // 32 if drop_remainder or (drop_remainder is None and training) else 4)
    assert pipe.steps_per_epoch == steps == sum(1 for _ in pipe.dataset)


def test_accepts_keras_core_and_keras_cv_layers():
    keras_cv = pytest.importorskip("keras_cv")
    x, y = arrays()
    chain = [
        keras.layers.RandomFlip("horizontal", seed=0),
        keras_cv.layers.RandomFlip("horizontal", seed=1),
        keras.layers.MixUp(alpha=0.4, seed=2),
        keras_cv.layers.CutMix(seed=3),
    ]
    pipe = data.input_pipeline((x, y), batch_size=16, placement="data", augmentation=chain)
    images, labels = next(iter(pipe.dataset))
    assert images.shape == (16, 8, 8, 3) and labels.shape == (16, 6)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-5)
    model_pipe = data.input_pipeline((x, y), batch_size=16, augmentation=chain[:2])
    assert len(model_pipe.augmentation.layers) == 2
    model = model_pipe.attach(
        keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(6)])
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(model.fit(model_pipe.dataset, epochs=1, verbose=0).history["loss"]).all()


def numpy_flip(images):
    """A horizontal flip through `tf.numpy_function`: runs in tf.data, never under XLA."""
    out = tf.numpy_function(lambda a: np.ascontiguousarray(a[:, :, ::-1]), [images], images.dtype)
    return tf.ensure_shape(out, images.shape)


def test_xla_map_equals_the_plain_map_on_deterministic_layers():
    # Normalize and certain flips draw no random numbers, so XLA must give the plain map's
    # batches; 96 examples in batches of 20 keep a last batch of 16 (a second XLA shape).
    # A Lambda is user code, which "auto" compiles too.
    x, y = arrays()
    batches = {}
    for jit in ("auto", False):
        chain = [
            augment.RandomFlip(rate=1.0),
            keras.layers.Lambda(lambda t: keras.ops.cast(t, "float32")),
            augment.Normalize(mean=(1, 2, 3), std=(4, 5, 6), scale=1.0),
        ]
        pipe = data.input_pipeline(
            (x, y),
            batch_size=20,
            placement="data",
            augmentation=chain,
            seed=3,
            drop_remainder=False,
            jit_compile=jit,
        )
        assert pipe.xla_layers == (chain if jit else [])
        batches[jit] = collect(pipe.dataset)
    images, labels = batches["auto"]
    assert images.shape == (96, 8, 8, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images, batches[False][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels, batches[False][1])
    # And against NumPy: the traced pixel (0, 0, 0) is now at the right edge, normalised.
    index = np.rint(images[:, 0, -1, 0] * 4 + 1).astype(int)
    expected = (x[index][:, :, ::-1] - np.array([1, 2, 3])) / np.array([4, 5, 6])
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, y[index])


def test_xla_map_is_seeded_reproducible_and_keeps_the_augmentation_semantics():
    x, y = arrays(n=64, size=16)
    x = np.maximum(x, 1)  # zeros can then only come from Cutout (reflect padding adds none)

    def epoch(seed, jit="auto"):
        chain = [
            augment.RandomPadCrop(4, seed=seed),
            augment.RandomFlip(seed=seed + 1),
            augment.Cutout(4, seed=seed + 2),
        ]
        # One call at a time: parallel batches would race for the layers' seed state.
        pipe = data.input_pipeline(
            (x, y),
            batch_size=16,
            placement="data",
            augmentation=chain,
            seed=0,
            jit_compile=jit,
            num_parallel_calls=1,
        )
        assert pipe.xla_layers == (chain if jit else [])
        return collect(pipe.dataset)

    images, labels = epoch(1)
    np.testing.assert_array_equal(images, epoch(1)[0])
    assert (images != epoch(5)[0]).any()
    assert images.shape == (64, 16, 16, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.sort(labels), np.sort(y))  # labels are not touched
    # Cutout(4): a 4x4 square clipped at the borders, so 2x2 to 4x4 pixels, every channel.
    for result in (images, epoch(1, jit=False)[0]):
        erased = (result == 0).sum(axis=(1, 2, 3))
        assert (erased % 3 == 0).all() and erased.min() >= 2 * 2 * 3 and erased.max() <= 48
        assert (erased == 48).mean() > 0.3


def test_layers_xla_cannot_compile_run_without_it_or_raise_when_xla_is_required(caplog):
    x, y = arrays()
    flip, mix = augment.RandomFlip(rate=1.0), augment.MixUp(0.4, seed=1)
    with caplog.at_level("WARNING", logger="keras_tricks.data"):
        pipe = data.input_pipeline(
            (x, y), batch_size=16, placement="data", augmentation=[numpy_flip, flip, mix]
        )
    # tf.numpy_function has no XLA kernel anywhere, MixUp's Beta sampler none on CPU.
    assert pipe.xla_layers == [flip]
    assert "numpy_flip runs in tf.data without XLA" in caplog.text and "PyFunc" in caplog.text
    assert "MixUp runs in tf.data without XLA" in caplog.text and "Gamma" in caplog.text
    images, labels = next(iter(pipe.dataset))
    assert images.shape == (16, 8, 8, 3) and labels.shape == (16, 6)
    unmixed = data.input_pipeline(
        (x, y), batch_size=16, placement="data", augmentation=[numpy_flip, flip]
    )
    images, _ = next(iter(unmixed.dataset))
    np.testing.assert_array_equal(images.numpy(), x[images.numpy()[:, 0, 0, 0]])  # flipped twice
    with pytest.raises(ValueError, match="`jit_compile`"):
        data.input_pipeline(
            (x, y), batch_size=16, placement="data", augmentation=[numpy_flip], jit_compile=True
        )


def test_auto_compiles_only_our_layers_and_keras_cv_crop_cannot_be_forced():
    keras_cv = pytest.importorskip("keras_cv")
    x, y = arrays()
    crop = keras_cv.layers.RandomCropAndResize((6, 6), (0.5, 1.0), (0.75, 4 / 3), seed=1)
    flip, keras_flip = augment.RandomFlip(seed=2), keras.layers.RandomFlip(seed=3)
    chain = [crop, flip, keras_flip]
    pipe = data.input_pipeline((x, y), batch_size=16, placement="data", augmentation=chain)
    assert pipe.xla_layers == [flip]  # "auto" leaves Keras's and keras-cv's layers alone
    images, labels = next(iter(pipe.dataset))
    assert images.shape == (16, 6, 6, 3) and labels.shape == (16,)
    with pytest.raises(ValueError, match="CropAndResize"):
        data.input_pipeline(
            (x, y), batch_size=16, placement="data", augmentation=chain, jit_compile=True
        )
    forced = data.input_pipeline(
        (x, y), batch_size=16, placement="data", augmentation=chain[1:], jit_compile=True
    )
    assert forced.xla_layers == chain[1:]
    assert next(iter(forced.dataset))[0].shape == (16, 8, 8, 3)


def test_reads_tfrecord_shards_with_manifest_statistics(tmp_path):
    tfrecord_tools = pytest.importorskip("tfrecord_tools")
    x, y = arrays(n=40)
    names = [f"class{i}" for i in range(6)]
    tfrecord_tools.write_shards(
        x,
        y,
        str(tmp_path),
        split="train",
        num_shards=3,
        name="tiny",
        label_names=names,
        progress=False,
    )
    pipe = data.input_pipeline(
        str(tmp_path),
        "train",
        batch_size=8,
        augmentation=[augment.MixUp(0.4, seed=0)],
        training=False,
    )
    assert pipe.label_names == names and pipe.num_classes == 6 and pipe.num_examples == 40
    # The manifest's statistics are the per-channel mean/std of the pixels (0..255).
    flat = x.reshape(-1, 3).astype("float64")
    np.testing.assert_allclose(pipe.mean, flat.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(pipe.std, flat.std(axis=0), rtol=1e-9)
    images, labels = collect(pipe.dataset)
    order = np.argsort(images[:, 0, 0, 0])
    np.testing.assert_array_equal(images[order], x)  # PNG is lossless
    np.testing.assert_array_equal(labels[order], np.eye(6)[y])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"placement": "gpu"}, "placement"),
        ({"augmentation": [3]}, "augmentation"),
        ({"num_classes": 1}, "num_classes"),
        ({"cache": 3}, "cache"),
        ({"jit_compile": "yes"}, "jit_compile"),
        ({"jit_compile": None}, "jit_compile"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    x, y = arrays(n=8)
    with pytest.raises(ValueError, match=f"`{name}`"):
        data.input_pipeline((x, y), **kwargs)


def test_mismatched_arrays_raise_value_error():
    x, y = arrays(n=8)
    with pytest.raises(ValueError, match="8 images, 7 labels"):
        data.input_pipeline((x, y[:7]))


GS_PIPELINE = """
import json, sys
import numpy as np
import tfrecord_tools
from keras_tricks import augment, data

rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(24, 8, 8, 3)).astype("uint8")
x[:, 0, 0, 0] = np.arange(24)
y = np.arange(24) % 4
url = sys.argv[1]
tfrecord_tools.write_shards(x, y, url, split="train", num_shards=2, name="gs_tiny", progress=False)
pipe = data.input_pipeline(url, "train", batch_size=6, training=False,
                           augmentation=[augment.CutMix(1.0, seed=0)])
images, labels = [], []
for a, b in pipe.dataset:
    images.append(a.numpy()); labels.append(b.numpy())
images, labels = np.concatenate(images), np.concatenate(labels)
order = np.argsort(images[:, 0, 0, 0])
print(json.dumps({
    "images_equal": bool(np.array_equal(images[order], x)),
    "labels_equal": bool(np.array_equal(labels[order], np.eye(4)[y])),
    "num_examples": pipe.num_examples,
    "mean_ok": bool(np.allclose(pipe.mean, x.reshape(-1, 3).mean(axis=0))),
}))
"""


@pytest.mark.slow
@pytest.mark.gcs
def test_reads_tfrecord_shards_from_gs_through_tf_own_client(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from gcs_emulator import GCSEndpoint

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with GCSEndpoint(buckets=["h5-data-test"]) as gcs:
        env = gcs.tf_env()
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-c", GS_PIPELINE, "gs://h5-data-test/tiny"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "images_equal": True,
        "labels_equal": True,
        "num_examples": 24,
        "mean_ok": True,
    }


# ------------------------------------------------------------------------------ multi-worker
def _strategy_of(cluster, task_type, task_id):
    """A stand-in strategy: what `current_worker` reads of one is its `cluster_resolver`."""
    import types

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize(
    "cluster",
    [
        {"worker": ["a:1", "b:1", "c:1"]},
        {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
    ],
)
def test_current_worker_numbers_tasks_as_multi_worker_mirrored_strategy_does(cluster):
    # The reference: TensorFlow's own numbering of the input pipelines of
    # MultiWorkerMirroredStrategy (CollectiveAllReduceExtended: id_in_cluster, worker_count).
    from tensorflow.python.distribute import multi_worker_util

    spec = tf.train.ClusterSpec(cluster).as_cluster_def()
    for task_type, addresses in cluster.items():
        for task_id in range(len(addresses)):
            worker = data.current_worker(_strategy_of(cluster, task_type, task_id))
            expected = multi_worker_util.id_in_cluster(spec, task_type, task_id)
            assert worker.index == expected
            assert worker.num_workers == multi_worker_util.worker_count(spec, task_type) == 3
            assert worker.is_chief == multi_worker_util.is_chief(spec, task_type, task_id)
            assert (worker.task_type, worker.task_id) == (task_type, task_id)


def test_current_worker_outside_a_cluster_is_the_only_worker_and_the_chief():
    assert data.current_worker() == data.Worker(1, 0, True)
    one = data.current_worker(_strategy_of({"worker": ["a:1"]}, "worker", 0))
    assert (one.num_workers, one.index, one.is_chief) == (1, 0, True)


def test_shard_by_file_gives_each_worker_the_records_of_whole_round_robin_shards(tmp_path):
    import tfrecord_tools

    x, y = arrays(n=40)
    tfrecord_tools.write_shards(x, y, str(tmp_path), num_shards=4, name="t", progress=False)
    manifest = tfrecord_tools.read_manifest(str(tmp_path))
    # The oracle: each shard file read on its own, with tf.data's TFRecord reader.
    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    per_shard = []
    for shard in manifest["splits"]["train"]["shards"]:
        records = tf.data.TFRecordDataset(str(tmp_path / shard["file"]))
        per_shard.append(
            sorted(
                int(
                    tf.io.decode_png(tf.io.parse_single_example(r, feature)["image/encoded"])[
                        0, 0, 0
                    ]
                )
                for r in records
            )
        )
    examples = data.read_source(str(tmp_path), "train")
    assert examples.from_files and not data.read_source((x, y)).from_files
    for index in range(2):
        worker = data.Worker(2, index, index == 0)
        ids = [int(image[0, 0, 0]) for image, _ in data.shard_by_file(examples.dataset, worker)]
        assert sorted(ids) == sorted(per_shard[index] + per_shard[index + 2])


def test_shard_by_file_refuses_a_dataset_without_files():
    x, y = arrays(n=8)
    # Arrays have no reader to shard by: TensorFlow's rewrite says so (FILE does not fall back).
    with pytest.raises(tf.errors.NotFoundError, match="unshardable source"):
        data.shard_by_file(data.read_source((x, y)).dataset, data.Worker(2, 0, True))


JAX_PLACEMENT_SCRIPT = """
import json
import numpy as np
from keras_tricks import augment, data

x = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
y = np.arange(64) % 10
# In the model our layers run on JAX; the tf.data pipeline only reads and batches.
pipe = data.input_pipeline((x, y), batch_size=16, augmentation=[augment.RandomFlip()])
images, labels = next(iter(pipe.dataset))
out = {"model": [list(images.shape), list(labels.shape)]}
try:
    data.input_pipeline((x, y), batch_size=16, placement="data",
                        augmentation=[augment.RandomFlip()])
except ValueError as e:
    out["data"] = str(e)
print(json.dumps(out))
"""


def test_our_layers_in_tf_data_are_refused_on_jax_naming_the_backend(run_python):
    # tf.data runs TensorFlow graphs; on JAX our keras.ops layers cannot run inside it, and
    # without the check they fail deep inside the map with an unrelated NotImplementedError.
    out = json.loads(run_python(JAX_PLACEMENT_SCRIPT, backend="jax").strip().splitlines()[-1])
    assert out["model"] == [[16, 28, 28, 1], [16]]
    assert "needs the TensorFlow backend; the active Keras backend is 'jax'" in out["data"]
    assert "RandomFlip" in out["data"] and "placement='model'" in out["data"]
