"""The Fashion-MNIST recipe on a real two-worker MultiWorkerMirroredStrategy cluster.

Two worker processes on 127.0.0.1 (ports chosen free by binding port 0), each with its own
`TF_CONFIG`, train `keras_tricks.recipes.fashion_mnist` from `tfrecord_tools` shards of a small
slice of the real Fashion-MNIST (the Debian package's IDX files), with its `BackupAndRestore`
(`ResumableBackup`) in one shared work dir. What is checked, and against what:

- Sharding: TensorFlow's FILE auto-sharding gives each worker whole shard files, dealt round
  robin (`files.shard(num_workers, index)`). The oracle is the shard files themselves, read
  here with `tf.data.TFRecordDataset`: every image the worker's input pipeline yields in one
  epoch is identified by its bytes, and each worker must see exactly the images of shards
  {index, index + 2, ...}: disjoint sets whose union is every shard.
- Data parallelism: the two workers end with bit-identical weights (every variable, the BN
  moving statistics included), compared from the weights file each worker saves.
- Fault tolerance, the path of Keras's guide
  (https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras#fault_tolerance):
  after a backup exists, the non-chief is SIGKILLed mid-epoch; the chief, blocked in the next
  all-reduce, errors out by itself; the whole cluster is restarted with the same `TF_CONFIG`
  and work dir. Training must resume at the backed-up epoch (2, not 0) on both workers and
  end with the weights of an uninterrupted run of the same cluster (the recipe's resume is
  exact: the epoch-e shuffle depends on (seed, e) only, random state and EMA are restored).

Every process is killed in a `finally`, every directory is a pytest temporary directory.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from gcs_emulator import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_TEST, NUM_SHARDS, BATCH, EPOCHS = 640, 200, 8, 32, 4
STEPS = NUM_TRAIN // BATCH  # 20 global steps per epoch, 16 images per worker per step
KILL_EPOCH, KILL_BATCH = 2, 4  # the non-chief stalls here; the backup then holds epoch 2

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    import tensorflow as tf

    # Two processes share the machine's cores: one op thread each keeps them from thrashing.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    import keras

    cfg = json.loads(sys.argv[1])
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

    def log(**event):
        with open(os.path.join(cfg["out"], f"worker{index}.jsonl"), "a") as f:
            f.write(json.dumps(event) + "\\n")

    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
    )
    from keras_tricks.recipes import fashion_mnist

    with strategy.scope():
        recipe = fashion_mnist(
            cfg["data"], work_dir=cfg["work_dir"], batch_size=cfg["batch"],
            epochs=cfg["epochs"], width=4, precision="float32",
        )
    log(event="recipe", steps=recipe.steps_per_epoch, replicas=strategy.num_replicas_in_sync)
    if cfg["record_images"]:
        # One epoch of what this worker's replica gets, as fit distributes it.
        batches = iter(strategy.experimental_distribute_dataset(recipe.train_data))
        seen = []
        for _ in range(recipe.steps_per_epoch):
            images, _ = next(batches)
            for local in strategy.experimental_local_results(images):
                seen += [hashlib.sha1(im.tobytes()).hexdigest() for im in local.numpy()]
        log(event="images", sha1=seen)

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            log(event="epoch_begin", epoch=epoch)

        def on_epoch_end(self, epoch, logs=None):
            log(event="epoch_end", epoch=epoch)

        def on_train_batch_end(self, batch, logs=None):
            if index == 1 and cfg["stall"] == [self.epoch, batch]:
                log(event="stalled")
                time.sleep(600)

    recipe.fit(verbose=0, callbacks=[Probe()])
    recipe.model.save_weights(os.path.join(cfg["out"], f"worker{index}.weights.h5"))
    log(event="done", iterations=int(recipe.model.optimizer.iterations.numpy()))
    """
)


def _events(out, index):
    path = os.path.join(out, f"worker{index}.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


class Cluster:
    """Two worker processes with one TF_CONFIG cluster; `start` twice reuses the same ports."""

    def __init__(self, tmp_path):
        self.ports = [free_port(), free_port()]
        self.tmp_path = tmp_path
        self.procs = []

    def start(self, name, **cfg):
        out = self.tmp_path / name
        out.mkdir()
        cfg = dict(cfg, out=str(out))
        workers = [f"127.0.0.1:{port}" for port in self.ports]
        procs = []
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = dict(
                os.environ,
                KERAS_BACKEND="tensorflow",
                TF_CPP_MIN_LOG_LEVEL="2",
                TF_CONFIG=json.dumps(tf_config),
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            )
            log = open(out / f"stderr{index}.txt", "w")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, json.dumps(cfg)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        self.procs += procs
        return str(out), procs

    def wait(self, procs, timeout):
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.wait(max(1.0, deadline - time.monotonic()))
        return [proc.returncode for proc in procs]

    def kill_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def _stderr(out):
    return "\n".join(
        open(os.path.join(out, f"stderr{i}.txt")).read()[-2500:]
        for i in range(2)
        if os.path.exists(os.path.join(out, f"stderr{i}.txt"))
    )


def _weights(path):
    import h5py

    arrays = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


def _assert_same_weights(a_path, b_path):
    a, b = _weights(a_path), _weights(b_path)
    assert sorted(a) == sorted(b) and len(a) > 50
    differ = [name for name in a if not np.array_equal(a[name], b[name])]
    assert not differ, f"{len(differ)} of {len(a)} arrays differ, e.g. {differ[:3]}"


def _shard_images(data_dir):
    """sha1 of every image of every train shard file, read here without keras_tricks."""
    import tensorflow as tf

    with open(os.path.join(data_dir, "manifest.json")) as f:
        shards = json.load(f)["splits"]["train"]["shards"]
    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    result = []
    for shard in shards:
        hashes = set()
        for record in tf.data.TFRecordDataset(os.path.join(data_dir, shard["file"])):
            encoded = tf.io.parse_single_example(record, feature)["image/encoded"]
            image = tf.io.decode_png(encoded, channels=1).numpy()
            hashes.add(hashlib.sha1(image.tobytes()).hexdigest())
        assert len(hashes) == shard["num_records"]
        result.append(hashes)
    return result


@pytest.fixture
def fashion_shards(tmp_path, fashion_mnist_dir):
    import tfrecord_tools
    from keras_tricks.datasets import load_fashion_mnist

    (x, y), (x_test, y_test) = load_fashion_mnist(fashion_mnist_dir)
    # The first images with distinct bytes, so that an image identifies its shard.
    _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    keep = np.sort(first)[:NUM_TRAIN]
    out = str(tmp_path / "tfrecords")
    tfrecord_tools.convert(
        {"train": (x[keep], y[keep]), "test": (x_test[:NUM_TEST], y_test[:NUM_TEST])},
        out,
        num_shards={"train": NUM_SHARDS, "test": 2},
        name="fashion_mnist",
        progress=False,
    )
    return out


@pytest.mark.slow
def test_two_workers_shard_by_file_agree_and_resume_after_a_worker_is_killed(
    tmp_path, fashion_shards
):
    started = time.monotonic()
    cluster = Cluster(tmp_path)
    config = dict(data=fashion_shards, batch=BATCH, epochs=EPOCHS)
    try:
        # 1. A run whose non-chief stalls mid-epoch 2, after the backup of epoch 2 exists.
        work = str(tmp_path / "work")
        out, procs = cluster.start(
            "killed", work_dir=work, record_images=True, stall=[KILL_EPOCH, KILL_BATCH], **config
        )
        deadline = time.monotonic() + 150
        while not any(e["event"] == "stalled" for e in _events(out, 1)):
            assert all(p.poll() is None for p in procs), _stderr(out)
            assert time.monotonic() < deadline, "no stall within 150 s:\n" + _stderr(out)
            time.sleep(0.5)
        chief_log = _events(out, 0)
        assert {"event": "epoch_end", "epoch": KILL_EPOCH - 1} in chief_log
        with open(os.path.join(work, "backup", "training_metadata.json")) as f:
            assert json.load(f)["epoch"] == KILL_EPOCH
        # The chief backs up into the shared dir, the other worker into its own temporary one.
        assert os.path.exists(os.path.join(work, "workertemp_1", "latest.weights.h5"))
        assert not os.path.exists(os.path.join(work, "workertemp_0"))

        # Sharding: each worker's epoch is exactly the images of its round-robin shards.
        shards = _shard_images(fashion_shards)
        seen = [next(e["sha1"] for e in _events(out, i) if e["event"] == "images") for i in (0, 1)]
        for index in (0, 1):
            assert len(seen[index]) == NUM_TRAIN // 2 == len(set(seen[index]))
            mine = set().union(*shards[index::2])
            assert set(seen[index]) == mine
        assert not set(seen[0]) & set(seen[1])
        assert set(seen[0]) | set(seen[1]) == set().union(*shards)

        # SIGKILL the non-chief; the chief, waiting on it in an all-reduce, must error out.
        times = {"until the stall": time.monotonic() - started}
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        codes = cluster.wait(procs, timeout=120)
        times["chief errors out after the kill"] = time.monotonic() - killed
        assert codes[1] == -signal.SIGKILL
        assert codes[0] not in (0, None), _stderr(out)
        assert not any(e["event"] == "done" for e in _events(out, 0))

        # 2. The whole cluster restarted with the same TF_CONFIG and work dir resumes.
        restarted = time.monotonic()
        out, procs = cluster.start(
            "resumed", work_dir=work, record_images=False, stall=None, **config
        )
        assert cluster.wait(procs, timeout=150) == [0, 0], _stderr(out)
        for index in (0, 1):
            log = _events(out, index)
            first = next(e["epoch"] for e in log if e["event"] == "epoch_begin")
            assert first == KILL_EPOCH  # from the backup, not from 0
            assert log[-1] == {"event": "done", "iterations": EPOCHS * STEPS}
        resumed = out
        _assert_same_weights(f"{resumed}/worker0.weights.h5", f"{resumed}/worker1.weights.h5")
        # Only the chief exported; the backup and the non-chief's temporary one are gone.
        assert os.path.exists(os.path.join(work, "model.keras"))
        assert sorted(os.listdir(work)) == ["hparams.json", "logs", "model.keras"]
        assert len(os.listdir(os.path.join(work, "logs", "train"))) == 2  # one per chief run
        times["resumed run"] = time.monotonic() - restarted
        uninterrupted = time.monotonic()

        # 3. The same cluster, never interrupted: the resumed run ends with its weights.
        out, procs = cluster.start(
            "uninterrupted",
            work_dir=str(tmp_path / "work2"),
            record_images=False,
            stall=None,
            **config,
        )
        assert cluster.wait(procs, timeout=150) == [0, 0], _stderr(out)
        _assert_same_weights(f"{out}/worker0.weights.h5", f"{resumed}/worker0.weights.h5")
        times["uninterrupted run"] = time.monotonic() - uninterrupted
    finally:
        cluster.kill_all()
    times["total"] = time.monotonic() - started
    print("multi-worker test, seconds:", json.dumps({k: round(v, 1) for k, v in times.items()}))
    shutil.rmtree(tmp_path)  # kept by pytest for inspection only when the test fails
