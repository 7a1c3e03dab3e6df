"""The `keras-tricks` command line: `keras-tricks demo --output DIR`.

The demo runs the learning-rate range test on Fashion-MNIST with a small CNN, plots it and
every learning-rate schedule of `keras_tricks.schedules`, then trains briefly with the
suggested rate under warmup + linear-cosine decay and reports the test accuracy.
"""

import argparse
import json
import os
import sys
import time

DEMO_NOTE = (
    "Fashion-MNIST (Xiao et al. 2017) is read from the Debian package dataset-fashion-mnist "
    "(/usr/share/datasets/fashion-mnist) or --data-dir."
)


def _demo_settings(quick):
    # Sizes chosen so the full demo takes ~1-3 minutes on 2 CPU cores; --quick is a smoke run.
    if quick:
        return dict(
            finder_images=2048, finder_steps=40, train_images=2048, test_images=1000, epochs=1
        )
    return dict(
        finder_images=12800, finder_steps=100, train_images=60000, test_images=10000, epochs=2
    )


def small_cnn(num_classes=10):
    """A small Fashion-MNIST CNN: two conv-pool blocks and a linear classifier (~25k weights)."""
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ],
        name="fashion_mnist_cnn",
    )


def demo_schedules(total_steps=1000):
    """One example of each schedule of `keras_tricks.schedules`, keyed by a readable label."""
    import keras

    from keras_tricks import schedules as s

    warm = total_steps // 10
    return {
        f"Warmup({warm}) + keras CosineDecay": s.Warmup(
            keras.optimizers.schedules.CosineDecay(0.4, total_steps - warm), warmup_steps=warm
        ),
        "LinearCosineDecay (Bello et al.)": s.LinearCosineDecay(0.4, total_steps),
        "NoisyLinearCosineDecay (Bello et al.)": s.NoisyLinearCosineDecay(
            0.4, total_steps, initial_variance=0.1, seed=0
        ),
        "StepDecay ÷10 at 30/60/90%": s.StepDecay(
            0.4, [int(total_steps * f) for f in (0.3, 0.6, 0.9)]
        ),
        "PiecewiseLinear: Page's 0→0.4→0 (5/24 ep)": s.page_triangular(
            steps_per_epoch=total_steps // 24
        ),
        "OneCycle (cos and linear)": (
            s.OneCycle(0.4, total_steps),
            s.OneCycle(0.4, total_steps, anneal="linear"),
        ),
    }


def plot_schedules(schedules, total_steps=1000):
    """Plot each schedule against the step in a grid of small panels; returns the Figure."""
    import numpy as np

    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("Plotting needs matplotlib: pip install 'keras-tricks[plot]'.") from e
    steps = np.arange(total_steps + 1)
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    axes = fig.subplots(2, 3, sharex=True).ravel()
    for ax, (label, schedule) in zip(axes, schedules.items()):
        members = schedule if isinstance(schedule, tuple) else (schedule,)
        for k, member in enumerate(members):
            name = getattr(member, "anneal", None)
            ax.plot(
                steps,
                np.asarray(member(steps), dtype=float),
                color=f"C{k}",
                linewidth=1.5,
                label=None if name is None else f"anneal={name!r}",
            )
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if len(members) > 1:
            ax.legend(fontsize="small")
    for ax in axes[3:]:
        ax.set_xlabel("optimizer step")
    for ax in axes[::3]:
        ax.set_ylabel("learning rate")
    fig.suptitle(f"keras_tricks.schedules over {total_steps} steps")
    return fig


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


def run_demo(output, quick=False, data_dir=None, seed=0):
    """Run the demo; returns a summary dict (also written to OUTPUT/demo_summary.json)."""
    (x_train, y_train), (x_test, y_test) = _load_data(data_dir)

    import keras
    import numpy as np

    from keras_tricks.callbacks import LearningRateLogger
    from keras_tricks.lr_finder import find_lr
    from keras_tricks.schedules import LinearCosineDecay, Warmup

    cfg = _demo_settings(quick)
    os.makedirs(output, exist_ok=True)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    x_train, y_train = x_train[order][..., None], y_train[order]
    x_test, y_test = x_test[: cfg["test_images"]][..., None], y_test[: cfg["test_images"]]
    batch_size = 128
    started = time.perf_counter()

    # 1. LR range test (Smith 2017) with the optimizer we will train with.
    model = small_cnn()

    def compile_sgd(learning_rate):
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate=learning_rate, momentum=0.9, nesterov=True
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    compile_sgd(0.01)
    n = cfg["finder_images"]
    result = find_lr(
        model,
        (x_train[:n], y_train[:n]),
        min_lr=1e-4,
        max_lr=10.0,
        num_steps=cfg["finder_steps"],
        batch_size=batch_size,
    )
    finder_png = os.path.join(output, "lr_finder.png")
    result.plot(title="LR range test: small CNN on Fashion-MNIST").savefig(finder_png, dpi=110)
    suggestion = result.suggestion or result.divergence_suggestion or 0.01
    print(f"LR range test: {len(result.losses)} steps, suggested learning rate {suggestion:.4g}")
    print(
        f"  (steepest descent: {result.suggestion}, 10% of divergence LR: "
        f"{result.divergence_suggestion}, minimum of smoothed loss at: {result.min_loss_lr})"
    )
    print(f"LR finder plot: {os.path.abspath(finder_png)}")

    # 2. Every schedule, plotted.
    schedules_png = os.path.join(output, "schedules.png")
    plot_schedules(demo_schedules(1000), 1000).savefig(schedules_png, dpi=100)
    print(f"Schedules plot: {os.path.abspath(schedules_png)}")

    # 3. Train briefly at the suggested rate: 10% linear warmup, then linear-cosine decay.
    m = cfg["train_images"]
    steps = cfg["epochs"] * -(-m // batch_size)
    warmup = max(1, steps // 10)
    schedule = Warmup(LinearCosineDecay(suggestion, steps - warmup), warmup_steps=warmup)
    compile_sgd(schedule)
    logger = LearningRateLogger()
    history = model.fit(
        x_train[:m],
        y_train[:m],
        batch_size=batch_size,
        epochs=cfg["epochs"],
        callbacks=[logger],
        verbose=0,
    )
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    print(
        f"Trained {steps} steps on {m} images (lr {logger.learning_rates[0]:.3g} -> "
        f"peak {max(logger.learning_rates):.3g} -> {logger.learning_rates[-1]:.3g}); "
        f"train loss {history.history['loss'][-1]:.4f}; "
        f"test accuracy on {len(x_test)} images: {accuracy:.4f}"
    )
    summary = {
        "suggested_learning_rate": suggestion,
        "steepest_descent_lr": result.suggestion,
        "divergence_suggestion": result.divergence_suggestion,
        "lr_finder_steps": len(result.losses),
        "train_images": m,
        "train_steps": steps,
        "test_images": len(x_test),
        "test_accuracy": float(accuracy),
        "lr_finder_plot": os.path.abspath(finder_png),
        "schedules_plot": os.path.abspath(schedules_png),
        "seconds": round(time.perf_counter() - started, 1),
    }
    with open(os.path.join(output, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-tricks", description="Training tricks for Keras image classifiers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="LR range test + schedule plots + a short training run on Fashion-MNIST",
        description=__doc__.splitlines()[2] + " " + DEMO_NOTE,
    )
    demo.add_argument("--output", default="demo_out", help="directory for the PNGs and summary")
    demo.add_argument("--quick", action="store_true", help="small smoke run (~30 s)")
    demo.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST IDX files")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def main(argv=None):
    """Entry point of the `keras-tricks` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        run_demo(args.output, quick=args.quick, data_dir=args.data_dir, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
