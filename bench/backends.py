"""Training throughput of ResNet-9 (32x32) on the JAX backend (jit) vs the TensorFlow backend.

Question: does the backend-neutral core train as fast on JAX as on TensorFlow on this CPU? The
same `keras_tricks.models.resnet9` (width 64, 10 classes), SGD (momentum 0.9), sparse
cross-entropy from logits, float32, one fixed random batch of 128 -- trained with
`train_on_batch` under:

- `KERAS_BACKEND=jax`: Keras compiles the train step with `jax.jit` (XLA:CPU);
- `KERAS_BACKEND=tensorflow`, `jit_compile=False`: a `tf.function` graph with oneDNN kernels
  (TF 2.21's default on x86, the fastest TF setting in `bench/models.py`);
- `KERAS_BACKEND=tensorflow`, `jit_compile=True`: the train step XLA-compiled on TF.

Method: Keras reads `KERAS_BACKEND` at import, so each backend runs in its own subprocess. Each
configuration builds the model, runs one step to trace/compile (reported as `first_step_s`),
then times `--steps` more; images/s = batch / median step time. The backends run one after the
other in each of `--repeats` rounds, the order alternating between rounds so drifting machine
load hits all alike; the summary gives the median over rounds and each backend's ratio to TF.

Usage: python bench/backends.py [--quick] [--repeats 2] [--steps 5]
Prints one JSON object per configuration and round, then a summary JSON object.
"""

import argparse
import json
import os
import statistics
import time

from _harness import run_worker as run_script
from _harness import time_train_steps

BATCH = 128
# (name, KERAS_BACKEND, jit_compile); the first is the reference of the ratios.
CONFIGS = [
    ("tensorflow", "tensorflow", False),
    ("tensorflow-xla", "tensorflow", True),
    ("jax-jit", "jax", True),
]


def worker(spec):
    """Runs in the subprocess, on the backend the parent chose."""
    import keras
    import numpy as np

    from keras_tricks.models import resnet9

    assert keras.backend.backend() == spec["backend"], keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = resnet9(num_classes=10, input_shape=(32, 32, 3), width=64)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=spec["jit_compile"],
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, BATCH)
    print(json.dumps({**spec, **time_train_steps(model, x, y, spec["steps"])}), flush=True)


def run_worker(spec):
    env = {"KERAS_BACKEND": spec["backend"], "JAX_PLATFORMS": "cpu"}
    results, returncode, stderr_tail = run_script(__file__, spec, env)
    if returncode != 0 or not results:
        return {**spec, "error": stderr_tail}
    return results[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 timed steps")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    repeats, steps = (1, 2) if args.quick else (args.repeats, args.steps)
    start = time.perf_counter()
    runs = {}
    for round_index in range(repeats):
        order = CONFIGS if round_index % 2 == 0 else CONFIGS[::-1]
        for name, backend, jit_compile in order:
            spec = {"config": name, "backend": backend, "jit_compile": jit_compile}
            result = run_worker({**spec, "steps": steps})
            result["round"] = round_index
            print(json.dumps(result), flush=True)
            if "error" not in result:
                runs.setdefault(name, []).append(result)
    table = {
        name: {
            "images_per_s": statistics.median(r["images_per_s"] for r in results),
            "images_per_s_each_round": [r["images_per_s"] for r in results],
            "first_step_s_each_round": [r["first_step_s"] for r in results],
        }
        for name, results in runs.items()
    }
    reference = table.get(CONFIGS[0][0], {}).get("images_per_s")
    for row in table.values():
        row["ratio_to_tensorflow"] = (
            round(row["images_per_s"] / reference, 3) if reference else None
        )
    summary = {
        "table": table,
        "batch_size": BATCH,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
