"""Does the fashion_mnist recipe beat plain training, and what does each trick add?

Two questions, JSON lines on stdout (one per run, then a summary line per part):

1. side-by-side: `keras_tricks.recipes.fashion_mnist()` as `keras-tricks demo` trains it (with
   the recipe's default peak LR 0.2, the value the demo's LR range test lands on) vs the same
   network (ResNet-9 width 16, pool before BN, same precision) trained the plain way: Adam 1e-3,
   plain cross-entropy, no augmentation, no EMA, no TTA, for the same training wall time. Both
   score the 10k test images after every epoch (the recipe with its EMA weights, no TTA), so
   the time each first reaches 92% and 93% can be read off; the recipe's last line is its final
   EMA + flip-TTA accuracy.
2. ablation, in the shape of He et al. 2019 Table 6 (https://arxiv.org/abs/1812.01187): a
   baseline (Nesterov SGD 0.9, LR 0.1 for batch 256 with the paper's step decay, decoupled
   weight decay 5e-3 (= coupled 5e-4) on every weight, plain cross-entropy, no augmentation),
   then one trick added at a time through the recipe's overrides, for a shorter budget
   (`--ablation-epochs`, default 4 of the recipe's 16; the warmup scales with it). EMA and TTA
   change no training: they are the "+ augmentation" run scored with the EMA weights, then with
   EMA + flip TTA.
   Mixup is a branch off "+ augmentation" (the recipe leaves it out).

Training time is measured inside `fit` without the per-epoch test scoring, as wall time and as
this process's CPU time; "the same training time" for the plain arm means the same CPU seconds,
which a shared machine's other jobs disturb much less than wall time (the load average is
recorded with every run).

    python bench/recipe.py                       # both parts (~35 + ~25 min on 2 quiet cores)
    python bench/recipe.py --part side-by-side
    python bench/recipe.py --part ablation --ablation-epochs 4
    python bench/recipe.py --quick               # smoke run (tiny subset, width 4)
"""

import argparse
import contextlib
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # what runtime.configure_cpu() sets
# Run from a checkout without installing: `python bench/recipe.py`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import recipes  # noqa: E402
from keras_tricks.cli import _demo_settings, run_demo  # noqa: E402
from keras_tricks.datasets import load_fashion_mnist  # noqa: E402
from keras_tricks.models import resnet9  # noqa: E402
from keras_tricks.runtime import cpu_name, epoch_clock, time_to_reach  # noqa: E402
from keras_tricks.training import TestTimeAugmentation  # noqa: E402


def score(recipe, use_ema, use_tta):
    """Test accuracy of `recipe` with/without its EMA weights and flip TTA."""
    averaged = recipe.ema.averaged() if use_ema and recipe.ema else contextlib.nullcontext()
    correct = total = 0
    with averaged:
        model = recipe.classifier
        if use_tta:
            model = TestTimeAugmentation(recipe.classifier, flips=True)
        for images, labels in recipe.test_data:
            scores = keras.ops.convert_to_numpy(model(images, training=False))
            labels = np.asarray(labels)
            if labels.ndim == 2:
                labels = labels.argmax(-1)
            correct += int((scores.argmax(-1) == labels).sum())
            total += len(labels)
    return round(correct / total, 4)


def _emit(record):
    record["load_avg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)


def side_by_side(data, quick, output):
    # The recipe exactly as `keras-tricks demo` runs it: TFRecords, LR range test, fit, EMA+TTA.
    summary = run_demo(output, quick=quick)
    history = summary["history"]
    budget = summary["epoch_train_cpu_s"][-1]
    _emit(
        {
            "part": "side-by-side",
            "arm": "recipe (keras-tricks demo)",
            "epochs": summary["epochs"],
            "batch_size": summary["batch_size"],
            "peak_learning_rate": summary["suggested_learning_rate"],
            "train_s": summary["epoch_train_s"],
            "train_cpu_s": summary["epoch_train_cpu_s"],
            "test_accuracy_ema_per_epoch": [round(a, 4) for a in history["val_accuracy"]],
            "final_raw": summary["accuracies"]["raw"],
            "final_ema": summary["accuracies"]["ema"],
            "final_ema_tta": summary["test_accuracy"],
            "demo_wall_s": summary["seconds"],
            "demo_timings_s": summary["timings_s"],
            **{k: v for k, v in summary.items() if k.startswith(("seconds_to", "cpu_seconds_to"))},
        }
    )

    # The same network the plain way, for the same training CPU time.
    hp = recipes.fashion_mnist(data, **_demo_settings(quick)["overrides"]).hparams
    with recipes.fashion._dtype_policy(hp["precision"]):
        network = resnet9(
            input_shape=(28, 28, 1),
            width=hp["width"],
            pool_before_bn=hp["pool_before_bn"],
            output_scale=hp["output_scale"],
        )
    inputs = keras.Input((28, 28, 1), dtype="uint8")
    model = keras.Model(inputs, network(keras.layers.Rescaling(1 / 255)(inputs)))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    if quick:  # the demo's quick subset
        x_train, y_train, x_test, y_test = (
            x_train[:10_000],
            y_train[:10_000],
            x_test[:2000],
            y_test[:2000],
        )
    plain = epoch_clock(budget_cpu_s=budget)
    started = time.perf_counter()
    model.fit(
        x_train[..., None],
        y_train,
        batch_size=hp["batch_size"],
        epochs=1000,
        validation_data=(x_test[..., None], y_test),
        validation_batch_size=1000,
        callbacks=[plain],
        verbose=0,
    )
    _emit(
        {
            "part": "side-by-side",
            "arm": "plain (Adam 1e-3, no tricks, no augmentation)",
            "epochs": len(plain.train_s),
            "batch_size": hp["batch_size"],
            "precision": hp["precision"],
            "train_s": plain.train_s,
            "train_cpu_s": plain.train_cpu_s,
            "test_accuracy_per_epoch": plain.val_accuracy,
            "final": plain.val_accuracy[-1],
            "budget_cpu_s": budget,
            "fit_wall_s": round(time.perf_counter() - started, 1),
            **time_to_reach(plain),
        }
    )


def _quick(quick):
    return dict(width=4, batch_size=64) if quick else {}


# He et al. 2019's baseline (section 2.1) on this network, then one trick at a time.
BASELINE = dict(
    learning_rate=0.1,
    warmup_epochs=0,
    schedule="step",
    zero_gamma=False,
    no_bias_decay=False,
    label_smoothing=0.0,
    padding=0,
    flip=False,
    mixup_alpha=0.0,
    ema_decay=0.0,
    tta_flips=False,
)


def ablation_rows(epochs):
    warmup = round(2 * epochs / 16, 3)  # the recipe's 2 of 16 epochs, scaled
    steps = [
        ("baseline: SGD-N 0.9, LR 0.1, step decay, wd on all, CE", {}),
        (
            "+ linear warmup, LR 0.2 (LR range test; linear rule from batch 256)",
            dict(warmup_epochs=warmup, learning_rate=0.2),
        ),
        ("+ cosine decay", dict(schedule="cosine")),
        ("+ zero-γ", dict(zero_gamma=True)),
        ("+ no bias decay", dict(no_bias_decay=True)),
        ("+ label smoothing 0.1", dict(label_smoothing=0.1)),
        ("+ augmentation (pad 2 + crop, flip)", dict(padding=2, flip=True, ema_decay=0.99)),
    ]
    rows, current = [], dict(BASELINE)
    for label, change in steps:
        current = {**current, **change}
        rows.append((label, dict(current)))
    branch = {**current, "mixup_alpha": 0.2, "ema_decay": 0.0}
    rows.append(("+ mixup 0.2 (branch off '+ augmentation')", branch))
    return rows


def ablation(data, epochs, quick):
    results = []
    for label, overrides in ablation_rows(epochs):
        overrides = dict(overrides, epochs=epochs)
        if quick:
            overrides.update(_quick(quick))
            if overrides["schedule"] == "step":
                overrides["schedule"] = "cosine"  # too few steps for three boundaries
        recipe = recipes.fashion_mnist(data, **overrides)
        started, started_cpu = time.perf_counter(), time.process_time()
        recipe.fit(verbose=0)
        train_s = round(time.perf_counter() - started, 1)
        train_cpu_s = round(time.process_time() - started_cpu, 1)
        record = {
            "part": "ablation",
            "row": label,
            "epochs": epochs,
            "test_accuracy": score(recipe, use_ema=False, use_tta=False),
            "train_s": train_s,
            "train_cpu_s": train_cpu_s,
        }
        _emit(record)
        results.append((label, record["test_accuracy"]))
        if recipe.ema is not None:  # the augmentation run: + EMA, then + TTA
            for row, tta in (("+ EMA (0.99 every 5 steps)", False), ("+ flip TTA", True)):
                acc = score(recipe, use_ema=True, use_tta=tta)
                _emit({"part": "ablation", "row": row, "epochs": epochs, "test_accuracy": acc})
                results.append((row, acc))
    _emit({"part": "ablation", "summary": results})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "side-by-side", "ablation"), default="all")
    parser.add_argument("--ablation-epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="smoke run on a subset")
    parser.add_argument("--demo-output", default="runs/bench-demo", help="the demo run's output")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    if args.quick:
        x_train, y_train, x_test, y_test = (
            x_train[:1024],
            y_train[:1024],
            x_test[:512],
            y_test[:512],
        )
    data = {"train": (x_train, y_train), "test": (x_test, y_test)}
    _emit(
        {
            "bench": "recipe",
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "keras": keras.__version__,
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "quick": args.quick,
        }
    )
    if args.part in ("all", "side-by-side"):
        side_by_side(data, args.quick, args.demo_output)
    if args.part in ("all", "ablation"):
        ablation(data, 2 if args.quick else args.ablation_epochs, args.quick)


if __name__ == "__main__":
    main()
