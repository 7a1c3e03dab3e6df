"""Training throughput of ResNet-9 (32x32) and ResNet-50-D (224x224) on this CPU.

Question: which CPU settings train fastest -- oneDNN on/off (`TF_ENABLE_ONEDNN_OPTS`, read when
TensorFlow is imported, so every configuration runs in its own subprocess), `jit_compile` (XLA)
on/off, float32 or mixed_bfloat16 -- and what fraction of the CPU's arithmetic that is.

Method: each configuration builds the model, compiles it with SGD (momentum 0.9) and sparse
cross-entropy, runs `train_on_batch` on one fixed random batch once to trace/compile, then times
`--steps` more calls; images/s = batch / median step time. The peer configurations run in the
same invocation, one after the other.

FLOPs: counted analytically from the layers -- Conv2D 2*H_out*W_out*k_h*k_w*C_in*C_out, Dense
2*C_in*C_out (one multiply-add = 2 FLOPs; BN, activations, pooling and adds are left out, <1%).
Published "ResNet-50 = 4.1 GFLOPs" figures count multiply-adds, i.e. half of ours. A training
step is taken as 3x the forward FLOPs (forward + gradients w.r.t. activations and weights).

Usage: python bench/models.py [--quick] [--models resnet9,resnet50d]
Prints one JSON object per configuration, then a summary JSON object.
"""

import argparse
import json
import os
import statistics
import time

from _harness import run_worker as run_script
from _harness import time_train_steps

MODELS = {
    # name: (builder kwargs, batch size, timed steps)
    "resnet9": ({"kind": "resnet9", "input_shape": (32, 32, 3), "num_classes": 10}, 128, 3),
    "resnet50d": (
        {"kind": "resnet_v1", "depth": 50, "variant": "d", "input_shape": (224, 224, 3)},
        8,
        2,
    ),
}
# (TF_ENABLE_ONEDNN_OPTS, jit_compile, dtype policy). ResNet-50-D drops the slowest ResNet-9
# settings (XLA without oneDNN, XLA with bfloat16) to keep the whole run near 6 minutes.
CONFIGS = {
    "resnet9": [
        ("0", False, "float32"),
        ("0", True, "float32"),
        ("1", False, "float32"),
        ("1", True, "float32"),
        ("1", False, "mixed_bfloat16"),
        ("1", True, "mixed_bfloat16"),
    ],
    "resnet50d": [
        ("0", False, "float32"),
        ("1", False, "float32"),
        ("1", True, "float32"),
        ("1", False, "mixed_bfloat16"),
    ],
}
QUICK_CONFIGS = [("0", False, "float32"), ("1", False, "float32")]


def forward_flops(model):
    """Forward FLOPs per image from the Conv2D and Dense layers (2 FLOPs per multiply-add)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w, c_in, _ = layer.kernel.shape
            total += 2 * h * w * k_h * k_w * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            total += 2 * c_in * c_out
    return total


def worker(specs):
    """Runs in the subprocess: TF is imported here, after the parent set TF_ENABLE_ONEDNN_OPTS."""
    import keras
    import numpy as np

    from keras_tricks.models import resnet9, resnet_v1

    for spec in specs:
        keras.backend.clear_session()
        keras.config.set_dtype_policy(spec["policy"])
        kwargs = dict(MODELS[spec["model"]][0])
        kind = kwargs.pop("kind")
        model = resnet9(**kwargs) if kind == "resnet9" else resnet_v1(**kwargs)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=spec["jit_compile"],
        )
        rng = np.random.default_rng(0)
        batch = spec["batch_size"]
        x = rng.standard_normal((batch, *kwargs["input_shape"])).astype("float32")
        y = rng.integers(0, kwargs.get("num_classes", 1000), batch)
        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        result = {**spec, **time_train_steps(model, x, y, spec["steps"])}
        result["forward_gflop_per_image"] = round(forward_flops(model) / 1e9, 4)
        print(json.dumps(result), flush=True)
    keras.config.set_dtype_policy("float32")


def run_worker(onednn, specs):
    """One subprocess per oneDNN setting: TF reads TF_ENABLE_ONEDNN_OPTS once, at import."""
    env = {"TF_ENABLE_ONEDNN_OPTS": onednn}
    env["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    results, returncode, stderr_tail = run_script(__file__, specs, env)
    if returncode != 0:
        results.append({"onednn": onednn, "error": stderr_tail})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-9 only, 1 step, 1 round")
    parser.add_argument("--models", default="resnet9,resnet50d")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    names = ["resnet9"] if args.quick else args.models.split(",")
    repeats = 1 if args.quick else args.repeats
    start = time.perf_counter()
    by_config = {}
    for round_index in range(repeats):
        # Alternate which oneDNN setting goes first so drifting machine load hits both alike.
        order = ("0", "1") if round_index % 2 == 0 else ("1", "0")
        for onednn in order:
            specs = [
                {
                    "model": name,
                    "onednn": onednn,
                    "jit_compile": jit_compile,
                    "policy": policy,
                    "batch_size": MODELS[name][1],
                    "steps": 1 if args.quick else MODELS[name][2],
                }
                for name in names
                for (flag, jit_compile, policy) in (QUICK_CONFIGS if args.quick else CONFIGS[name])
                if flag == onednn
            ]
            for result in run_worker(onednn, specs):
                result["round"] = round_index
                print(json.dumps(result), flush=True)
                if "error" not in result:
                    key = (result["model"], onednn, result["jit_compile"], result["policy"])
                    by_config.setdefault(key, []).append(result)
    table = []
    for (model, onednn, jit_compile, policy), runs in sorted(by_config.items()):
        ips = statistics.median(r["images_per_s"] for r in runs)
        fwd = runs[0]["forward_gflop_per_image"]
        table.append(
            {
                "model": model,
                "onednn": onednn,
                "jit_compile": jit_compile,
                "policy": policy,
                "images_per_s": round(ips, 2),
                "images_per_s_each_round": [r["images_per_s"] for r in runs],
                "forward_gflop_per_image": fwd,
                # training step = 3 x forward FLOPs
                "train_gflop_per_s": round(3 * fwd * ips, 1),
            }
        )
    best = {}
    for row in table:
        if row["model"] not in best or row["images_per_s"] > best[row["model"]]["images_per_s"]:
            best[row["model"]] = row
    summary = {
        "table": table,
        "fastest": best,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
