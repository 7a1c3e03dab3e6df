"""Step-time overhead of ExponentialMovingAverage on a ResNet-50 vs no EMA and Keras `use_ema`.

Question: what does averaging every weight (BatchNorm statistics included) cost per training
step, updated every step and every 5 steps (Page), next to training without EMA and with Keras's
optimizer-side `use_ema=True` (trainable weights only, inside the compiled step)?

Model: `keras.applications.ResNet50(weights=None)` at 64x64x3, 10 classes (23.6M parameters,
320 weight tensors; the small input keeps a CPU run within a few minutes). SGD with momentum,
random data. Each configuration is timed over windows of `--steps` training steps (the first
step of each `fit` call is excluded); windows of all configurations are interleaved so load
from other jobs hits them alike; the median over `--repeats` windows is reported. The cost of
one `update()` call (compiled and eager) is measured separately.

    python bench/ema.py            # full run, JSON on stdout
    python bench/ema.py --quick    # smoke run
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing: `python bench/ema.py`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks.callbacks import ExponentialMovingAverage  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Wall time from the end of the first batch to the end of the last (placed last)."""

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch == 0:
            self.start = now
        self.end, self.batches = now, batch

    def per_step(self):
        return (self.end - self.start) / self.batches


def build(input_size, use_ema):
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(
        weights=None, input_shape=(input_size, input_size, 3), classes=10
    )
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, use_ema=use_ema, ema_momentum=0.999)
    model.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per window (x5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.batch_size = 2, 5, 8

    rng = np.random.default_rng(0)
    n = (args.steps + 1) * args.batch_size
    x = rng.uniform(size=(n, args.input_size, args.input_size, 3)).astype("float32")
    y = rng.integers(0, 10, size=n)

    plain = build(args.input_size, use_ema=False)
    keras_ema = build(args.input_size, use_ema=True)
    configs = {
        "no_ema": (plain, lambda: None),
        "ema_every_step": (plain, lambda: ExponentialMovingAverage(0.999, every_n_steps=1)),
        "ema_every_5_steps": (plain, lambda: ExponentialMovingAverage(0.995, every_n_steps=5)),
        "keras_use_ema": (keras_ema, lambda: None),
    }
    callbacks = {name: make() for name, (_, make) in configs.items()}

    def window(name):
        model = configs[name][0]
        timer = StepTimer()
        extra = [callbacks[name]] if callbacks[name] is not None else []
        model.fit(
            x,
            y,
            batch_size=args.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=extra + [timer],
        )
        return timer.per_step()

    for name in configs:  # compile and warm up every path (5 steps: one EMA update traced)
        model = configs[name][0]
        extra = [callbacks[name]] if callbacks[name] is not None else []
        model.fit(
            x[: 5 * args.batch_size],
            y[: 5 * args.batch_size],
            batch_size=args.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=extra,
        )
    times = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name in configs:
            times[name].append(window(name))

    # Cost of one update of all 320 variables, compiled vs eager.
    update_ms = {}
    for compiled in (True, False):
        ema = ExponentialMovingAverage(0.999, compiled=compiled)
        ema.set_model(plain)
        ema.on_train_begin()
        ema.update()  # trace
        samples = []
        for _ in range(max(5, args.repeats)):
            t0 = time.perf_counter()
            ema.update()
            samples.append(1e3 * (time.perf_counter() - t0))
        update_ms["compiled" if compiled else "eager"] = statistics.median(samples)

    median = {name: statistics.median(v) for name, v in times.items()}
    base = median["no_ema"]
    spread = (max(times["no_ema"]) - min(times["no_ema"])) / base
    result = {
        "benchmark": "ema_overhead",
        "model": f"ResNet50(weights=None) {args.input_size}x{args.input_size}x3, 10 classes",
        "parameters": plain.count_params(),
        "averaged_tensors": len(plain.weights),
        "batch_size": args.batch_size,
        "steps_per_window": args.steps,
        "repeats": args.repeats,
        "median_step_seconds": median,
        "all_step_seconds": times,
        "overhead_vs_no_ema_percent": {
            name: 100.0 * (t / base - 1.0) for name, t in median.items() if name != "no_ema"
        },
        # Windows of one repeat run back to back, so their ratio cancels slow load changes.
        "paired_overhead_percent": {
            name: 100.0 * (statistics.median(t / b for t, b in zip(v, times["no_ema"])) - 1.0)
            for name, v in times.items()
            if name != "no_ema"
        },
        # The update's own cost spread over its period, relative to the no-EMA step.
        "update_cost_over_period_percent": {
            f"every_{k}_steps": 100.0 * update_ms["compiled"] / 1e3 / k / base for k in (1, 5)
        },
        "no_ema_window_spread_percent": 100.0 * spread,
        "update_all_variables_ms": update_ms,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "quick": args.quick,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
