"""Do the four training techniques help on Fashion-MNIST? Each beside its peer, in one run.

Questions (keras_tricks.training), all on the Debian Fashion-MNIST files, pixels in [0, 1]:

1. Distillation: a narrow ResNet-9 teacher (width 12) distilled into a small CNN with Hinton's
   recipe (T = 20, soft : hard = 0.9 : 0.1) vs the same CNN trained alone for the same epochs.
2. Stability training (alpha = 0.01, sigma = 0.04): how often the prediction flips under
   Gaussian input noise of sigma 0.04 and 0.1, and clean accuracy, vs plain training.
3. Mean teacher: 1,000 labels + the other 59,000 images unlabelled vs supervised training on
   the 1,000 labels alone, the same model, augmentation and number of labelled batches.
4. Test-time augmentation: accuracy of the trained ResNet-9 teacher with and without flip
   TTA, and the inference time ratio (one batched forward pass over 2 views).

Sizes are chosen so the full run fits in about 15 minutes on two shared CPU cores: subsets of
the training set and few epochs (they are in the JSON). Every comparison uses the same seed
for data order and initial weights on both sides. `--quick` is a smoke run (tiny subsets).

    python bench/training.py            # full run, JSON on stdout
    python bench/training.py --quick    # smoke run
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing: `python bench/training.py`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_tricks import augment, runtime  # noqa: E402
from keras_tricks.datasets import load_fashion_mnist  # noqa: E402
from keras_tricks.models import resnet9  # noqa: E402
from keras_tricks.training import (  # noqa: E402
    HintonDistiller,
    MeanTeacher,
    StabilityTraining,
    TestTimeAugmentation,
    TwoStreamBatches,
)

FULL = {
    "train_subset": 20000,  # distillation, stability, TTA teacher: first N training images
    "test_subset": 10000,
    "teacher_width": 12,  # ResNet-9 channels 12-24-48-96: the teacher trains in ~3 minutes
    "teacher_epochs": 4,
    "student_epochs": 6,
    "stability_epochs": 4,
    "mean_teacher_labels": 1000,
    "mean_teacher_unlabelled": 59000,
    "mean_teacher_epochs": 2,  # passes over the unlabelled images (614 steps each)
    "batch_size": 128,
    "labelled_per_batch": 32,
    "tta_timing_subset": 2000,  # test images per timed predict (accuracy uses all)
}
QUICK = {
    "train_subset": 1024,
    "test_subset": 1000,
    "teacher_width": 8,
    "teacher_epochs": 1,
    "student_epochs": 1,
    "stability_epochs": 1,
    "mean_teacher_labels": 200,
    "mean_teacher_unlabelled": 1200,
    "mean_teacher_epochs": 1,
    "batch_size": 128,
    "labelled_per_batch": 32,
    "tta_timing_subset": 500,
}
SEED = 0


def cpu_model():
    """The CPU's model name (`lscpu`'s "Model name") and its AVX-512 / bfloat16 flags, as
    BENCHMARKS.md records them."""
    flags = runtime.cpu_flags()
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join([runtime.cpu_name(), *extras])


def small_cnn(name="small_cnn"):
    """The student: two small conv-pool blocks and a linear classifier (~6k weights), logits."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name=name,
    )


def ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(-1) == y))


def fit(model, x, y, epochs, batch_size, lr=2e-3):
    model.compile(keras.optimizers.Adam(lr), loss=ce())
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return time.perf_counter() - start


def bench_distillation(cfg, data):
    x, y, xt, yt = data
    keras.utils.set_random_seed(SEED)
    # The teacher trains with random flips inside the model (identity at inference), so that
    # flip TTA on it is meaningful; no pad-crop, which slows fitting in a few epochs.
    teacher = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            augment.RandomFlip(),
            resnet9(num_classes=10, input_shape=(28, 28, 1), width=cfg["teacher_width"]),
        ],
        name="teacher",
    )
    teacher_s = fit(teacher, x, y, cfg["teacher_epochs"], cfg["batch_size"])
    keras.utils.set_random_seed(SEED)
    alone = small_cnn("alone")
    alone_s = fit(alone, x, y, cfg["student_epochs"], cfg["batch_size"])
    result = {
        "teacher": f"RandomFlip + resnet9(width={cfg['teacher_width']})",
        "student": "small CNN (conv8-pool-conv16-pool-dense, 6.6k weights)",
        "soft_target_weight": 0.9,
        "teacher_test_accuracy": accuracy(teacher, xt, yt),
        "student_alone_test_accuracy": accuracy(alone, xt, yt),
        "teacher_train_s": round(teacher_s, 1),
        "student_alone_train_s": round(alone_s, 1),
    }
    # T = 20 is the recipe; Hinton et al. found intermediate temperatures best for students
    # much too small to hold all of the teacher's knowledge, so T = 4 is measured too.
    for temperature in (20.0, 4.0):
        keras.utils.set_random_seed(SEED)
        student = small_cnn(f"distilled_t{temperature:g}")
        distiller = HintonDistiller(teacher, student, temperature, soft_target_weight=0.9)
        distiller.compile(keras.optimizers.Adam(2e-3))
        start = time.perf_counter()
        distiller.fit(x, y, batch_size=cfg["batch_size"], epochs=cfg["student_epochs"], verbose=0)
        result[f"student_distilled_T{temperature:g}_test_accuracy"] = accuracy(student, xt, yt)
        result[f"student_distilled_T{temperature:g}_train_s"] = round(
            time.perf_counter() - start, 1
        )
    return result, teacher


def flip_rate(model, x, sigma, seed=1):
    rng = np.random.default_rng(seed)
    clean = model.predict(x, batch_size=500, verbose=0).argmax(-1)
    noisy = model.predict(
        x + rng.normal(0.0, sigma, x.shape).astype("float32"), batch_size=500, verbose=0
    ).argmax(-1)
    return float(np.mean(clean != noisy))


def bench_stability(cfg, data):
    x, y, xt, yt = data
    out = {"noise_stddev": 0.04}
    # The paper's alpha = 0.01, and a large alpha to show what the term does when it matters.
    for name, alpha in (
        ("plain", None),
        ("stability_alpha_0.01", 0.01),
        ("stability_alpha_1", 1.0),
    ):
        keras.utils.set_random_seed(SEED)
        net = small_cnn(name)
        model = net if alpha is None else StabilityTraining(net, 0.04, alpha, seed=SEED)
        seconds = fit(model, x, y, cfg["stability_epochs"], cfg["batch_size"])
        out[name] = {
            "clean_test_accuracy": accuracy(net, xt, yt),
            "flip_rate_sigma_0.04": flip_rate(net, xt, 0.04),
            "flip_rate_sigma_0.1": flip_rate(net, xt, 0.1),
            "train_s": round(seconds, 1),
        }
    return out


def noisy_cnn(name):
    """The mean-teacher model: per-image augmentation and input noise, then a small CNN.

    Consistency needs the two models to see different noise (the paper's "noisy teacher");
    both sides of the comparison train the very same model.
    """
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            augment.RandomPadCrop(2),
            augment.RandomFlip(),
            keras.layers.GaussianNoise(0.15),  # the reference's input noise
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.3),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name=name,
    )


def bench_mean_teacher(cfg, full_train, xt, yt):
    x_all, y_all = full_train
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x_all))
    n_l, n_u = cfg["mean_teacher_labels"], cfg["mean_teacher_unlabelled"]
    # 1,000 labels balanced over the 10 classes, as the paper's label subsets.
    labelled = np.concatenate([order[y_all[order] == c][: n_l // 10] for c in range(10)])
    rest = np.setdiff1d(order, labelled)[:n_u]
    xl, yl, xu = x_all[labelled], y_all[labelled], x_all[rest]
    batches = TwoStreamBatches(
        xl,
        yl,
        xu,
        batch_size=cfg["batch_size"],
        labelled_batch_size=cfg["labelled_per_batch"],
        seed=SEED,
    )
    steps = len(batches) * cfg["mean_teacher_epochs"]
    out = {
        "labels": int(len(xl)),
        "unlabelled": int(len(xu)),
        "batch": f"{cfg['labelled_per_batch']} labelled + "
        f"{cfg['batch_size'] - cfg['labelled_per_batch']} unlabelled",
        "steps": steps,
        "ema_decay": 0.99,
        "rampup_steps": steps // 3,
    }
    # Supervised on the labels alone: the same model and the same number of labelled batches.
    keras.utils.set_random_seed(SEED)
    supervised = noisy_cnn("supervised")
    supervised.compile(keras.optimizers.Adam(2e-3), loss=ce())
    epochs = max(1, round(steps * cfg["labelled_per_batch"] / len(xl)))
    start = time.perf_counter()
    supervised.fit(xl, yl, batch_size=cfg["labelled_per_batch"], epochs=epochs, verbose=0)
    out["supervised"] = {
        "test_accuracy": accuracy(supervised, xt, yt),
        "epochs_over_labels": epochs,
        "train_s": round(time.perf_counter() - start, 1),
    }
    # The reference's maximum consistency weight (100), and a weaker one for this short run.
    for weight in (100.0, 10.0):
        keras.utils.set_random_seed(SEED)
        model = MeanTeacher(
            noisy_cnn("student"),
            ema_decay=0.99,
            consistency_weight=weight,
            rampup_steps=steps // 3,
        )
        model.compile(keras.optimizers.Adam(2e-3), loss=ce())
        start = time.perf_counter()
        model.fit(batches, epochs=cfg["mean_teacher_epochs"], verbose=0)
        out[f"mean_teacher_consistency_{weight:g}"] = {
            "teacher_test_accuracy": accuracy(model, xt, yt),
            "student_test_accuracy": accuracy(model.student, xt, yt),
            "train_s": round(time.perf_counter() - start, 1),
        }
    return out


def bench_tta(model, xt, yt, timing_subset, repeats=3):
    tta = TestTimeAugmentation(model, flips=True)
    out = {
        "model": "the distillation teacher (trained with RandomFlip)",
        "views": tta.num_views,
        "test_accuracy_plain": accuracy(model, xt, yt),
        "test_accuracy_flip_tta": accuracy(tta, xt, yt),
    }
    times = {"plain": [], "tta": []}
    xs = xt[:timing_subset]
    for m in (model, tta):
        m.predict(xs[:250], batch_size=250, verbose=0)  # compiled before timing
    for _ in range(repeats):  # interleaved, so load from other jobs hits both alike
        for name, m in (("plain", model), ("tta", tta)):
            start = time.perf_counter()
            m.predict(xs, batch_size=250, verbose=0)
            times[name].append(time.perf_counter() - start)
    plain, tta_s = float(np.median(times["plain"])), float(np.median(times["tta"]))
    out["predict_s_plain"] = round(plain, 3)
    out["predict_s_tta"] = round(tta_s, 3)
    out["inference_cost_ratio"] = round(tta_s / plain, 2)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=INT",
        help="override one size of the configuration, e.g. --set train_subset=4000",
    )
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in cfg:
            parser.error(f"--set: unknown key {key!r}; one of {sorted(cfg)}")
        cfg[key] = int(value)
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x_train = (x_train[..., None] / 255.0).astype("float32")
    x_test = (x_test[..., None] / 255.0).astype("float32")[: cfg["test_subset"]]
    y_test = y_test[: cfg["test_subset"]]
    n = cfg["train_subset"]
    data = (x_train[:n], y_train[:n], x_test, y_test)

    result = {
        "benchmark": "bench/training.py" + (" --quick" if args.quick else ""),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "cpu": cpu_model(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "config": cfg,
    }
    t = time.perf_counter()
    result["distillation"], teacher = bench_distillation(cfg, data)
    result["distillation"]["wall_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    result["tta"] = bench_tta(teacher, x_test, y_test, cfg["tta_timing_subset"])
    result["tta"]["wall_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    result["stability"] = bench_stability(cfg, data)
    result["stability"]["wall_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    result["mean_teacher"] = bench_mean_teacher(cfg, (x_train, y_train), x_test, y_test)
    result["mean_teacher"]["wall_s"] = round(time.perf_counter() - t, 1)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
