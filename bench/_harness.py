"""What `bench/models.py` and `bench/backends.py` share: time `train_on_batch` steps, and rerun a
script in a fresh subprocess (a backend or `TF_ENABLE_ONEDNN_OPTS` is read once, at import).

Benchmarks run as `python bench/NAME.py`, so this file imports as `_harness` from beside them.
"""

import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_train_steps(model, x, y, steps):
    """One untimed `train_on_batch` (trace / compile), then `steps` timed ones.

    Returns the timing fields of a result: first_step_s, step_times_s and images_per_s
    (batch / median step time), plus loss_finite for the last step's loss.
    """
    import numpy as np

    start = time.perf_counter()
    model.train_on_batch(x, y)  # traces (and XLA-compiles) the train step
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {
        "first_step_s": round(first, 2),
        "step_times_s": [round(t, 3) for t in times],
        "images_per_s": round(int(x.shape[0]) / statistics.median(times), 2),
        "loss_finite": bool(np.isfinite(float(np.asarray(loss)))),
    }


def run_worker(script, payload, env):
    """Run `script --worker JSON(payload)` in a fresh interpreter with `env` added to ours.

    Returns (the JSON objects it printed, one per line starting with "{"; its exit code; the
    last 5 lines of its stderr).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(script), "--worker", json.dumps(payload)],
        env=env,
        capture_output=True,
        text=True,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return results, proc.returncode, proc.stderr.strip().splitlines()[-5:]
