"""A recipe run SIGKILLed mid-epoch and started again with the same command ends where an
uninterrupted run ends (weights, optimizer step, EMA averages), on local disk and on `gs://`.

Each run is a real subprocess. The first run of the killed pair stops inside epoch 2 (it touches
a marker file and waits); the test sends SIGKILL; the same command then runs to the end. The
oracle is an uninterrupted run of the same command in another work_dir: the three processes
start from the same seed, so any state the checkpoint misses (data order, augmentation random
state, EMA, step counter) shows up as a difference.

Also here: the EMA + BackupAndRestore consistency defect (a SIGKILL between the EMA's save and
the backup's), with the kill at that exact point.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from gcs_emulator import GCSEndpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds for any one child process
BUCKET = "ktricks-recipes"

# Stand-in CIFAR-10 (true image shape) through TFRecords: 48 train images at batch 16 are 3 steps
# per epoch; 3 epochs. The first run is killed either after step 5 (inside epoch 2, whose
# checkpoint at step 3 is the last one written) or at the end of epoch 2 (step 6) inside the
# checkpoint write: after the EMA and augmentation random states of step 6 are saved, before the
# weights are. Both must resume at epoch 2 (index 1).
NUM_TRAIN, NUM_TEST, BATCH, EPOCHS, STEPS_PER_EPOCH = 48, 16, 16, 3, 3

RUN = rf"""
import json, os, sys, time
import keras, numpy as np
from keras_tricks.recipes import cifar10_fast

data_dir, work_dir, out, marker, pause = sys.argv[1:6]


def pause_once(step):
    # Test device: the first run of a work_dir waits here, to be SIGKILLed by the test.
    if int(keras.ops.convert_to_numpy(recipe.optimizer.iterations)) == step and not (
        os.path.exists(marker)
    ):
        open(marker, "w").close()
        time.sleep(600)


class PauseMidEpoch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if pause == "mid_epoch":
            pause_once(5)


save_weights = keras.Model.save_weights


def save_weights_pausing(self, *args, **kwargs):
    if pause == "in_checkpoint":
        pause_once(6)
    return save_weights(self, *args, **kwargs)


keras.Model.save_weights = save_weights_pausing
epochs_run = []
recipe = cifar10_fast(data_dir, work_dir=work_dir, width=4, batch_size={BATCH}, epochs={EPOCHS},
                      eval_batch_size=16)
recipe.fit(verbose=0, callbacks=[PauseMidEpoch(),
           keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: epochs_run.append(e))])
np.savez(out, iterations=int(keras.ops.convert_to_numpy(recipe.optimizer.iterations)),
         ema_steps=recipe.ema.steps,
         **{{f"w{{i}}": keras.ops.convert_to_numpy(v) for i, v in enumerate(recipe.model.weights)}},
         **{{f"e{{i}}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(recipe.ema.average_variables)}})
print(json.dumps({{"epochs_run": epochs_run}}))
"""


def _env(base=None):
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _start(args, env, log):
    return subprocess.Popen(
        [sys.executable, "-c", RUN, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )


def _finish(proc, log_path):
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    with open(log_path) as f:
        assert proc.returncode == 0, f.read()[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])  # the run's last line: its epochs


def _run_to_end(args, env, tmp_path, name):
    log_path = str(tmp_path / f"{name}.log")
    with open(log_path, "w") as log:
        return _finish(_start(args, env, log), log_path)


def _run_and_kill(args, env, marker, tmp_path):
    """Start the command, SIGKILL it once it is waiting inside epoch 2; always reaped."""
    log_path = str(tmp_path / "killed.log")
    with open(log_path, "w") as log:
        proc = _start(args, env, log)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not os.path.exists(marker):
                if proc.poll() is not None:
                    with open(log_path) as f:
                        pytest.fail(f"run ended before the kill point:\n{f.read()[-4000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("run never reached the kill point")
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _standin_tfrecords(path):
    import tfrecord_tools

    rng = np.random.default_rng(0)
    for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = np.arange(n) % 10
        tfrecord_tools.write_shards(
            x, y, path, split=split, num_shards=2, name="cifar10", progress=False
        )
    return path


def _assert_same_final_state(resumed_npz, reference_npz):
    with np.load(resumed_npz) as got, np.load(reference_npz) as want:
        assert int(got["iterations"]) == int(want["iterations"]) == EPOCHS * STEPS_PER_EPOCH
        assert int(got["ema_steps"]) == int(want["ema_steps"]) == EPOCHS * STEPS_PER_EPOCH
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            # Same process recipe, same seeds, same CPU kernels: equal to the last bit.
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The stand-in TFRecords and the final state of one uninterrupted run (never pauses)."""
    base = tmp_path_factory.mktemp("reference")
    data_dir = _standin_tfrecords(str(base / "data"))
    out = str(base / "reference.npz")
    args = [data_dir, str(base / "run"), out, str(base / "unused-marker"), "never"]
    assert _run_to_end(args, _env(), base, "reference")["epochs_run"] == [0, 1, 2]
    return data_dir, out


def _kill_and_resume(tmp_path, reference, work_dir, pause, env):
    data_dir, reference_out = reference
    marker, resumed_out = str(tmp_path / "paused"), str(tmp_path / "resumed.npz")
    command = [data_dir, work_dir, resumed_out, marker, pause]
    _run_and_kill(command, env, marker, tmp_path)
    resumed = _run_to_end(command, env, tmp_path, "resumed")  # the very same command
    # It resumed at the last complete checkpoint, of epoch 1 (not from scratch, not after the
    # killed epoch, whose checkpoint was never completed).
    assert resumed["epochs_run"] == [1, 2]
    _assert_same_final_state(resumed_out, reference_out)


@pytest.mark.slow
@pytest.mark.parametrize("pause", ["mid_epoch", "in_checkpoint"])
def test_cifar10_fast_killed_resumes_to_the_uninterrupted_weights(tmp_path, reference, pause):
    work_dir = str(tmp_path / "run")
    _kill_and_resume(tmp_path, reference, work_dir, pause, _env())
    # The finished run leaves its final model and logs, and no checkpoint.
    assert sorted(os.listdir(work_dir)) == ["hparams.json", "logs", "model.keras"]


@pytest.mark.slow
@pytest.mark.gcs
def test_cifar10_fast_killed_mid_epoch_resumes_on_gcs_emulator(tmp_path, reference):
    """Data and work_dir on gs://, through TF's own GCS client and fake-gcs-server."""
    data_dir, reference_out = reference
    with GCSEndpoint(buckets=[BUCKET]) as gcs:
        # The same shards, read from gs:// too (uploaded through the emulator's own API).
        for name in os.listdir(data_dir):
            with open(os.path.join(data_dir, name), "rb") as f:
                gcs.emulator.upload_object(BUCKET, f"data/{name}", f.read())
        on_gcs = (f"gs://{BUCKET}/data", reference_out)
        _kill_and_resume(tmp_path, on_gcs, f"gs://{BUCKET}/run", "mid_epoch", _env(gcs.tf_env()))
        # Checked in the bucket itself, not through TF: final model, hparams, logs; no backup.
        names = gcs.emulator.list_objects(BUCKET, "run/")
        assert names["run/model.keras"] > 0 and names["run/hparams.json"] > 0
        assert any(n.startswith("run/logs/") and n.endswith(".v2") for n in names)
        assert not any(n.startswith("run/backup/") and not n.endswith("/") for n in names)


def test_step_states_keep_the_current_and_previous_and_load_by_step(tmp_path):
    from keras_tricks._state_files import (
        delete_step_states,
        load_step_state,
        save_step_state,
        saved_steps,
    )

    d = str(tmp_path / "backup")
    for step in (3, 6, 9):
        save_step_state(d, "rng", step, [np.full(2, step), np.arange(step)], extra={"k": step})
    assert saved_steps(d, "rng") == [9, 6]  # newest first; step 3 is gone
    arrays, extra = load_step_state(d, "rng", 6, with_extra=True)
    assert arrays[0].tolist() == [6, 6] and arrays[1].tolist() == list(range(6))
    assert extra == {"k": 6}
    assert load_step_state(d, "rng", 3) is None
    delete_step_states(d, "rng")
    assert saved_steps(d, "rng") == [] and os.listdir(d) == []


# --------------------------------------------------- EMA + BackupAndRestore, killed between saves
EMA_RUN = r"""
import os, signal, sys
import keras, numpy as np
from keras_tricks.callbacks import ExponentialMovingAverage

backup, out, order, kill = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "kill"
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = x @ np.arange(8, dtype="float32").reshape(4, 2)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                          keras.layers.BatchNormalization(), keras.layers.Dense(2)])
model.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")


class KillAfterEpoch(keras.callbacks.Callback):
    # Test device: SIGKILL this process at the end of epoch 3 (index 2), between the two saves.
    def on_epoch_end(self, epoch, logs=None):
        if kill and epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)


ema = ExponentialMovingAverage(0.9, every_n_steps=3, backup_dir=backup)
restore = keras.callbacks.BackupAndRestore(backup)
callbacks = [ema, KillAfterEpoch(), restore] if order == "ema_first" else [
    restore, KillAfterEpoch(), ema]
model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0, callbacks=callbacks)
np.savez(out, steps=ema.steps, iterations=int(model.optimizer.iterations.numpy()),
         **{f"e{i}": a.numpy() for i, a in enumerate(ema.average_variables)})
"""


def _ema_run(*args, expect_kill=False):
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", EMA_RUN, *args],
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if expect_kill:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ema_listed_before_backup_killed_between_saves_resumes_exactly(tmp_path):
    # Epoch 3 ends at step 24: the EMA saved its step-24 state, the backup still holds step 16.
    reference = str(tmp_path / "reference.npz")
    _ema_run(str(tmp_path / "ref_backup"), reference, "ema_first", "no")
    backup, out = str(tmp_path / "backup"), str(tmp_path / "out.npz")
    _ema_run(backup, out, "ema_first", "kill", expect_kill=True)
    from keras_tricks._state_files import saved_steps

    assert saved_steps(backup, "ema_state") == [24, 16]  # the new state and the one before
    _ema_run(backup, out, "ema_first", "no")
    with np.load(out) as got, np.load(reference) as want:
        assert int(got["steps"]) == int(got["iterations"]) == int(want["steps"]) == 40
        for key in [k for k in want.files if k.startswith("e")]:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.slow
def test_ema_listed_after_backup_killed_between_saves_warns_and_restarts_the_average(tmp_path):
    # The backup saved step 24, the EMA was killed before saving it: no state of step 24 exists.
    backup, out = str(tmp_path / "backup"), str(tmp_path / "out.npz")
    _ema_run(backup, out, "backup_first", "kill", expect_kill=True)
    proc = _ema_run(backup, out, "backup_first", "no")
    assert "No EMA state for step 24" in proc.stderr
    with np.load(out) as got:
        # The EMA's step count follows the optimizer (before the fix: 16 while the weights were
        # at step 24), so its decay schedule and update phase match the restored run.
        assert int(got["steps"]) == int(got["iterations"]) == 40
