"""The `keras-tricks` command line: `keras-tricks demo [--output runs/demo] [--quick]`, `info`.

`demo` (`run_demo`) trains the `keras_tricks.recipes.fashion_mnist` recipe end to end on real
data; what it does, step by step, is `DEMO_DESCRIPTION`, which `keras-tricks demo --help` prints.
The peak learning rate comes from the LR range test (`pick_peak_learning_rate`); the figures are
drawn by `keras_tricks.plotting`, the training time is kept by `keras_tricks.runtime.epoch_clock`.
`info` (`environment_info`) prints the versions and the CPU. Every command runs inside
`tfrecord_tools.cli.quiet_tensorflow_startup`: TensorFlow's start-up log only with `--verbose`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from keras_tricks import runtime  # imports neither Keras nor TensorFlow
from keras_tricks._checks import check_bool, check_int, check_number, fail
from keras_tricks._version import __version__
from tfrecord_tools.cli import add_verbose_argument, quiet_tensorflow_startup
from tfrecord_tools.sources import FASHION_MNIST_LABELS

DESCRIPTION = (
    "Training tricks for Keras image classifiers. `demo` trains a complete recipe end to end "
    "on Fashion-MNIST and reports; `info` prints what this machine trains with."
)
DEMO_DESCRIPTION = """\
Train the keras_tricks.recipes.fashion_mnist recipe end to end on real data and report:

1. Convert Fashion-MNIST to sharded TFRecords with tfrecord_tools (reused when they exist).
2. Run the learning-rate range test (Smith 2017) on the recipe's model; the peak rate is a
   decade below the rate of its smoothed-loss minimum, kept within x1/2..x2 of the recipe's.
3. Train through model.fit: warmup + cosine decay, label smoothing, on-device augmentation,
   EMA of the weights, zero-gamma ResNet-9, no bias decay, bfloat16 where the CPU has it.
4. Evaluate with the EMA weights and flip test-time augmentation.
5. Print "test accuracy: 0.xxxx" and the wall time; write the plots, report.md and
   demo_summary.json into --output.

Fashion-MNIST (Xiao et al. 2017) is read from the Debian package dataset-fashion-mnist or
from --data-dir. The full run takes about 15 minutes on two CPU cores.
"""
DEMO_EXAMPLES = """\
examples:
  keras-tricks demo                              # the full run, into runs/demo
  keras-tricks demo --quick --output /tmp/demo   # a smoke run
"""
INFO_DESCRIPTION = (
    "Print the versions of keras-tricks, Python, Keras (with its backend) and TensorFlow, "
    "whether TensorFlow's oneDNN kernels are on, the CPU model and core count, and whether the "
    "CPU computes bfloat16 natively: the lines to paste into a bug report or beside a benchmark."
)
# https://github.com/zalandoresearch/fashion-mnist#labels, kept by tfrecord_tools.
LABEL_NAMES = tuple(FASHION_MNIST_LABELS)


def _demo_settings(quick):
    """What the demo changes in the recipe, and the size of the LR range test."""
    if quick:
        # A smoke run (~1-2 minutes): a narrow network, 2 epochs on a 10k-image subset.
        return dict(
            train_images=10_000,
            test_images=2_000,
            finder_steps=30,
            overrides=dict(width=8, epochs=2, warmup_epochs=0.5),
        )
    # The recipe as it is: its defaults are what the demo promises (BENCHMARKS.md).
    return dict(train_images=None, test_images=None, finder_steps=100, overrides={})


# The LR range test's smoothing and rule, measured on this recipe (BENCHMARKS.md, Fashion-MNIST
# recipe): over a 100-step sweep fast.ai's 0.98 lags about a decade behind the raw loss, and its
# steepest-descent point landed at 0.77-1.39 in three runs of the same setup, 4-7x the rate the
# recipe was tuned at (0.2); 0.87 trained to 0.9317 against 0.94 at 0.2. With smoothing 0.8,
# a decade below the loss minimum (fast.ai's rule of thumb) gave 0.14-0.17.
FINDER_SMOOTHING = 0.8


def pick_peak_learning_rate(result: Any, default_lr: float) -> tuple[float, str]:
    """The peak learning rate the demo trains at, and a sentence saying how it was chosen.

    A decade below the rate of the smoothed-loss minimum of the LR range test (Smith 2017,
    https://arxiv.org/abs/1506.01186; the decade is fast.ai's rule of thumb), kept within a
    factor 2 of the recipe's measured `default_lr`:

    ```
    lr = clip(result.min_loss_lr / 10, default_lr / 2, default_lr * 2)  # default_lr if no minimum
    ```

    Example:

    ```python
    from types import SimpleNamespace
    from keras_tricks.cli import pick_peak_learning_rate
    rate, reason = pick_peak_learning_rate(SimpleNamespace(min_loss_lr=2.78), default_lr=0.2)
    assert abs(rate - 0.278) < 1e-12 and "minimum-loss rate / 10" in reason
    ```

    Args:
        result: a `keras_tricks.lr_finder.find_lr` result (its `min_loss_lr`, a rate or None).
        default_lr: the recipe's measured peak rate (> 0).
    """
    default_lr = check_number("default_lr", default_lr, positive=True, finite=True)
    if not hasattr(result, "min_loss_lr"):
        fail("result", "a find_lr() result (with `min_loss_lr`)", result)
    if result.min_loss_lr is not None:
        check_number("result.min_loss_lr", result.min_loss_lr, positive=True, finite=True)
    low, high = default_lr / 2, default_lr * 2
    candidate = result.min_loss_lr / 10 if result.min_loss_lr else default_lr
    peak = min(max(candidate, low), high)
    rule = f"peak learning rate {peak:.4g} = minimum-loss rate / 10 ({candidate:.4g})"
    if peak != candidate:
        rule += f", clipped to [{low:.3g}, {high:.3g}] (x1/2..x2 the recipe's measured rate)"
    return peak, rule


def _find_idx_dir(data_dir):
    """The directory holding the four Fashion-MNIST IDX files, or None."""
    from keras_tricks.datasets import FASHION_MNIST_DIR, FASHION_MNIST_FILES
    from tfrecord_tools.idx import find_idx

    directory = data_dir or FASHION_MNIST_DIR
    if all(find_idx(directory, stem) for stem in FASHION_MNIST_FILES.values()):
        return directory
    return None


def _load_data(data_dir):
    from keras_tricks.datasets import FASHION_MNIST_DIR, load_fashion_mnist

    try:
        return load_fashion_mnist(data_dir)
    except Exception as e:  # missing files, or the Keras download failing offline
        where = data_dir or FASHION_MNIST_DIR
        raise SystemExit(
            f"keras-tricks demo: Fashion-MNIST is not available ({type(e).__name__}: {e}).\n"
            f"Looked in {where} and tried the Keras download. Install it with\n"
            "  sudo apt-get install dataset-fashion-mnist\n"
            "(or `make demo` as root), or pass --data-dir DIR with the four IDX files."
        ) from None


def _convert(arrays, idx_dir, tfrecord_dir, quick):
    """Step 1: the TFRecord shards (reused when a previous demo already wrote them)."""
    import tfrecord_tools

    if os.path.exists(os.path.join(tfrecord_dir, "manifest.json")):
        print(f"[1/5] TFRecord shards already in {tfrecord_dir}")
        return
    (x_train, y_train), (x_test, y_test) = arrays
    if idx_dir is not None and not quick:
        source = f"idx:{idx_dir}"
    else:  # the quick subset, or arrays Keras downloaded
        cfg = _demo_settings(quick)
        n, m = cfg["train_images"], cfg["test_images"]
        source = {"train": (x_train[:n], y_train[:n]), "test": (x_test[:m], y_test[:m])}
    label = source if isinstance(source, str) else "arrays"
    print(f"[1/5] Converting Fashion-MNIST ({label}) to TFRecord shards in {tfrecord_dir}")
    started = time.perf_counter()
    manifest = tfrecord_tools.convert(
        source,
        tfrecord_dir,
        num_shards={"train": 6, "test": 2},
        num_workers=2,
        name="fashion_mnist",
        label_names=list(LABEL_NAMES),
        progress=True,
    )
    counts = ", ".join(
        f"{split} {info['num_records']:,}" for split, info in manifest.get("splits", {}).items()
    )
    print(f"      {counts} records in {time.perf_counter() - started:.1f} s")


def _predict(recipe, use_ema, use_tta):
    """Scores and labels of the recipe's test data; EMA weights and TTA as asked."""
    import contextlib

    import keras
    import numpy as np

    from keras_tricks.training import TestTimeAugmentation

    averaged = recipe.ema.averaged() if use_ema and recipe.ema else contextlib.nullcontext()
    scores, labels = [], []
    with averaged:
        model = recipe.classifier
        if use_tta and recipe.tta:
            model = TestTimeAugmentation(recipe.classifier, **recipe.tta)
        for images, y in recipe.test_data:
            scores.append(keras.ops.convert_to_numpy(model(images, training=False)))
            labels.append(np.asarray(y))
    return np.concatenate(scores).astype("float32"), np.concatenate(labels)


def _format_seconds(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def run_demo(
    output: str | os.PathLike = "runs/demo",
    quick: bool = False,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Run `keras-tricks demo`: the fashion_mnist recipe end to end (`DEMO_DESCRIPTION`).

    Prints its progress and, last, `test accuracy: 0.xxxx` and the wall time; writes the
    TFRecord shards, the model, five PNG figures, `report.md` and `demo_summary.json` under
    `output`. About 15 minutes on two CPU cores (`quick=True`: about 2):

    ```
    summary = run_demo("runs/demo")
    summary["test_accuracy"], summary["plots"]["schedule"]
    ```

    Args:
        output: directory for everything the demo writes.
        quick: a smoke run on a subset with a narrow network.
        data_dir: directory with the Fashion-MNIST IDX files; None for the Debian location,
            else the Keras download.
        seed: seed of the weights, the augmentation and the data order (an integer >= 0).
        epochs: train this many epochs instead of the recipe's; None keeps them.

    Returns:
        The summary dict written to `demo_summary.json`.
    """
    # Arguments first, then the data: a mistake fails before anything is written.
    if not isinstance(output, (str, os.PathLike)):
        fail("output", "a directory name (str or os.PathLike)", output)
    check_bool("quick", quick)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        fail("data_dir", "a directory name (str or os.PathLike) or None", data_dir)
    seed = check_int("seed", seed, minimum=0)
    epochs = check_int("epochs", epochs, minimum=1, allow_none=True)
    started = time.perf_counter()
    arrays = _load_data(data_dir)  # fails early too, before anything is written
    idx_dir = _find_idx_dir(data_dir)

    # oneDNN must be chosen before TensorFlow is imported; the recipe picks the precision.
    cpu = runtime.configure_cpu(bfloat16=False)

    from keras_tricks.lr_finder import find_lr
    from keras_tricks.plotting import (
        curves_figure,
        save_augmentation_grid,
        save_confusion_matrix,
        schedule_figure,
    )
    from keras_tricks.recipes import fashion_mnist

    cfg = _demo_settings(quick)
    overrides = dict(cfg["overrides"], seed=seed)
    if epochs is not None:
        overrides["epochs"] = epochs
    os.makedirs(output, exist_ok=True)
    tfrecord_dir = os.path.join(output, "tfrecords-quick" if quick else "tfrecords")
    work_dir = os.path.join(output, "run")
    timings = {}

    # 1. TFRecord shards.
    t = time.perf_counter()
    _convert(arrays, idx_dir, tfrecord_dir, quick)
    timings["convert"] = time.perf_counter() - t

    # 2. LR range test on the recipe's model, optimizer and augmented data.
    t = time.perf_counter()
    probe = fashion_mnist(tfrecord_dir, **overrides)
    print(
        f"[2/5] LR range test: {cfg['finder_steps']} steps of batch {probe.batch_size}, "
        f"lr 1e-4 -> 10 (precision {probe.hparams['precision']}, oneDNN "
        f"{'on' if cpu['TF_ENABLE_ONEDNN_OPTS'] == '1' else 'off'})"
    )
    probe.compile()
    result = find_lr(
        probe.model,
        probe.train_data,
        min_lr=1e-4,
        max_lr=10.0,
        num_steps=cfg["finder_steps"],
        smoothing=FINDER_SMOOTHING,
    )
    default_lr = probe.hparams["learning_rate"]
    peak, rule = pick_peak_learning_rate(result, default_lr)
    print(
        f"      minimum of the smoothed loss at lr {result.min_loss_lr:.3g}, steepest descent "
        f"at {result.suggestion}; the recipe's measured default is {default_lr:.3g}"
    )
    print(f"      {rule}")
    finder_png = os.path.join(output, "lr_finder.png")
    result.plot(title="LR range test: the fashion_mnist recipe").savefig(finder_png, dpi=110)
    timings["lr_finder"] = time.perf_counter() - t
    del probe

    # 3. Train the recipe with that peak rate.
    # validate: score the test images after every epoch (EMA weights) for the curves; only
    # the final EMA + TTA score is the result, no epoch is picked by it.
    recipe = fashion_mnist(
        tfrecord_dir, work_dir=work_dir, learning_rate=peak, validate=True, **overrides
    )
    hp = recipe.hparams
    print(
        f"[3/5] Training {recipe.network.name} (width {hp['width']}, "
        f"{recipe.network.count_params():,} weights, {hp['precision']}) for {recipe.epochs} "
        f"epochs x {recipe.steps_per_epoch} steps of {recipe.batch_size}: warmup "
        f"{hp['warmup_epochs']} epochs + {hp['schedule']}, label smoothing "
        f"{hp['label_smoothing']}, pad-crop {hp['padding']} + flip, EMA {hp['ema_decay']}, "
        f"zero-γ, no bias decay"
    )
    t = time.perf_counter()
    clock = runtime.epoch_clock()
    history = recipe.fit(verbose=2, callbacks=[clock]).history
    timings["train"] = time.perf_counter() - t

    # 4. Evaluate: raw weights, EMA weights, EMA weights + flip TTA (the headline).
    t = time.perf_counter()
    accuracies = {}
    for key, use_ema, use_tta in (
        ("raw", False, False),
        ("ema", True, False),
        ("ema_tta", True, True),
    ):
        if (use_ema and recipe.ema is None) or (use_tta and not recipe.tta):
            continue
        scores, labels = _predict(recipe, use_ema, use_tta)
        predictions = scores.argmax(-1)
        accuracies[key] = float((predictions == labels).mean())
    accuracy = accuracies[list(accuracies)[-1]]
    timings["evaluate"] = time.perf_counter() - t
    print(
        "[4/5] Test accuracy: "
        + ", ".join(f"{k.replace('_', ' + ').upper()} {v:.4f}" for k, v in accuracies.items())
    )

    # 5. Pictures and the report.
    t = time.perf_counter()
    schedule_png = os.path.join(output, "schedule.png")
    import keras

    # The optimizer's config holds the schedule itself (its `learning_rate` is the current value).
    schedule = keras.optimizers.schedules.deserialize(
        recipe.optimizer.get_config()["learning_rate"]
    )
    schedule_figure(
        schedule,
        recipe.epochs * recipe.steps_per_epoch,
        recipe.steps_per_epoch,
        logged=history.get("learning_rate"),
        title=f"learning rate used: peak {peak:.3g} from the LR range test",
    ).savefig(schedule_png, dpi=110)
    curves_png = os.path.join(output, "training_curves.png")
    curves_figure(history).savefig(curves_png, dpi=110)

    augment_png = os.path.join(output, "augmentation.png")
    random_layers = [layer for layer in recipe.augmentation if layer not in recipe.preprocessing]
    save_augmentation_grid(
        arrays[1][0][:8][..., None],
        keras.Sequential(random_layers),
        augment_png,
        num_augmentations=7,
        title="the recipe's augmentation: " + " + ".join(type(x).__name__ for x in random_layers),
    )
    confusion_png = os.path.join(output, "confusion_matrix.png")
    save_confusion_matrix(
        labels,
        predictions,
        confusion_png,
        label_names=LABEL_NAMES,
        title=f"Fashion-MNIST test set, EMA + flip TTA: accuracy {accuracy:.4f}",
    )
    timings["plots"] = time.perf_counter() - t
    seconds = time.perf_counter() - started

    summary = {
        "test_accuracy": accuracy,
        "accuracies": accuracies,
        "suggested_learning_rate": float(peak),
        "steepest_descent_lr": result.suggestion,
        "min_loss_lr": result.min_loss_lr,
        "default_learning_rate": default_lr,
        "lr_finder_steps": len(result.losses),
        "epochs": recipe.epochs,
        "steps_per_epoch": recipe.steps_per_epoch,
        "batch_size": recipe.batch_size,
        "test_images": int(len(labels)),
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "epoch_train_s": clock.train_s,
        "epoch_train_cpu_s": clock.train_cpu_s,
        **runtime.time_to_reach(clock),
        "seconds": round(seconds, 1),
        "quick": bool(quick),
        "plots": {
            "lr_finder": os.path.abspath(finder_png),
            "schedule": os.path.abspath(schedule_png),
            "training_curves": os.path.abspath(curves_png),
            "augmentation": os.path.abspath(augment_png),
            "confusion_matrix": os.path.abspath(confusion_png),
        },
        "model": recipe.model_path,
    }
    with open(os.path.join(output, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    _write_report(os.path.join(output, "report.md"), recipe, summary)
    for name, path in summary["plots"].items():
        print(f"      {name.replace('_', ' ')}: {path}")
    print(f"[5/5] Report: {os.path.abspath(os.path.join(output, 'report.md'))}")
    print(f"test accuracy: {accuracy:.4f}")
    print(f"wall time: {_format_seconds(seconds)} ({seconds:.0f} s)")
    return summary


def _write_report(path, recipe, summary):
    acc = summary["accuracies"]
    t = summary["timings_s"]
    lines = [
        "# keras-tricks demo: Fashion-MNIST",
        "",
        f"**Test accuracy {summary['test_accuracy']:.4f}** (EMA weights + flip TTA, "
        f"{summary['test_images']:,} test images) in {_format_seconds(summary['seconds'])} "
        f"wall on {runtime.cpu_name()} ({os.cpu_count()} cores)"
        + (" — `--quick` smoke run, not the real figure." if summary["quick"] else "."),
        "",
        "| evaluation | test accuracy |",
        "|---|---|",
    ]
    names = {"raw": "raw weights", "ema": "EMA weights", "ema_tta": "EMA weights + flip TTA"}
    lines += [f"| {names[k]} | {v:.4f} |" for k, v in acc.items()]
    lines += [
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k.replace('_', ' ')} | {v} |" for k, v in t.items()],
        "",
        "## Learning-rate range test",
        "",
        f"Minimum of the smoothed loss at lr {summary['min_loss_lr']:.3g} (steepest descent at "
        f"{summary['steepest_descent_lr']}); the peak rate used: "
        f"**{summary['suggested_learning_rate']:.4g}** (the recipe's measured "
        f"default: {summary['default_learning_rate']:.4g}).",
        "",
        "![LR range test](lr_finder.png)",
        "",
        "## Schedule actually used",
        "",
        "![schedule](schedule.png)",
        "",
        "## Training curves",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Augmentation",
        "",
        "![augmentation](augmentation.png)",
        "",
        "## Confusion matrix (EMA + TTA)",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "## Hyperparameters",
        "",
        recipe.summary(),
        "",
        f"Final model (EMA weights in a TestTimeAugmentation wrapper): `{summary['model']}`",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def environment_info() -> str:
    """What this machine and installation will train with, one `name: value` per line.

    The versions of keras-tricks, Keras (with its backend) and TensorFlow, whether TensorFlow's
    oneDNN kernels are on, and the CPU with its core count and native bfloat16 support
    (`keras_tricks.runtime`): the lines to paste into a bug report or next to a benchmark.
    Imports Keras, so TensorFlow too on the TensorFlow backend.
    """
    import importlib.metadata
    import platform

    import keras

    try:
        tensorflow = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tensorflow = "not installed"
    onednn = runtime.onednn_enabled()
    onednn_text = "TensorFlow not loaded" if onednn is None else ("on" if onednn else "off")
    bf16 = "yes" if runtime.cpu_has_native_bfloat16() else "no (emulated: slower than float32)"
    lines = [
        f"keras-tricks: {__version__}",
        f"python: {platform.python_version()}",
        f"keras: {keras.__version__} (backend {keras.backend.backend()})",
        f"tensorflow: {tensorflow} (oneDNN {onednn_text})",
        f"cpu: {runtime.cpu_name()} ({os.cpu_count()} cores)",
        f"native bfloat16: {bf16}",
    ]
    return "\n".join(lines)


def _int_option(name: str, minimum: int) -> Any:
    """An argparse `type` for an integer option, checked by `check_int`: a wrong value gets
    argparse's usage line and the Keras-style message, exit code 2, not a traceback."""

    def parse(text: str) -> int:
        value: Any
        try:
            value = int(text)
        except ValueError:
            value = text  # not a number: check_int refuses it, naming the text received
        try:
            return check_int(name, value, minimum=minimum)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The `keras-tricks` argument parser: the `demo` and `info` commands."""
    from keras_tricks.datasets import FASHION_MNIST_DIR

    parser = argparse.ArgumentParser(
        prog="keras-tricks",
        description=DESCRIPTION,
        epilog="Run `keras-tricks COMMAND --help` for the options of a command.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version of keras-tricks and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train the fashion_mnist recipe end to end (~15 min on 2 cores) and report",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--output",
        default="runs/demo",
        metavar="DIR",
        help="directory for the TFRecord shards, the trained model, the plots, report.md and "
        "demo_summary.json (default: %(default)s)",
    )
    quick = _demo_settings(quick=True)
    demo.add_argument(
        "--quick",
        action="store_true",
        help=f"a ~2-minute smoke run: width-{quick['overrides']['width']} network, "
        f"{quick['overrides']['epochs']} epochs, {quick['train_images']:,} training and "
        f"{quick['test_images']:,} test images; its accuracy says nothing about the recipe",
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="directory holding the four Fashion-MNIST IDX files "
        f"(default: {FASHION_MNIST_DIR}, else the Keras download)",
    )
    demo.add_argument(
        "--seed",
        type=_int_option("seed", minimum=0),
        default=0,
        help="seed of the weights, the augmentation and the data order (default: %(default)s)",
    )
    demo.add_argument(
        "--epochs",
        type=_int_option("epochs", minimum=1),
        default=None,
        help="train this many epochs instead of the recipe's (or --quick's)",
    )
    add_verbose_argument(demo)
    info = sub.add_parser(
        "info",
        help="print the versions, backend, CPU and its bfloat16 support",
        description=INFO_DESCRIPTION,
    )
    add_verbose_argument(info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-tricks` console script."""
    args = build_parser().parse_args(argv)
    with quiet_tensorflow_startup(verbose=args.verbose):
        if args.command == "demo":
            run_demo(
                args.output,
                quick=args.quick,
                data_dir=args.data_dir,
                seed=args.seed,
                epochs=args.epochs,
            )
        elif args.command == "info":
            print(environment_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
