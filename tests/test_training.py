"""keras_tricks.training as a whole: registration, composition with the package, README, bench.

The README's training block and the docstring examples run in `tests/test_docstring_examples.py`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_tricks import augment, callbacks, losses, schedules, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PUBLIC_MODELS = ["HintonDistiller", "MeanTeacher", "StabilityTraining", "TestTimeAugmentation"]


@pytest.mark.parametrize("name", PUBLIC_MODELS)
def test_each_technique_is_a_registered_keras_model(name):
    cls = getattr(training, name)
    assert issubclass(cls, keras.Model)
    assert keras.saving.get_registered_object(f"keras_tricks>{name}") is cls
    # The name saved files carry: moving a class between modules must not change it.
    assert keras.saving.get_registered_name(cls) == f"keras_tricks>{name}"
    assert cls.__doc__ and "Example:" in cls.__doc__ and "Args:" in cls.__doc__


def _augmented_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            augment.RandomPadCrop(2, seed=seed),
            augment.RandomFlip(seed=seed),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 12, 12, 1), dtype=np.float32), rng.integers(0, 3, n)


def _optimizer(steps):
    lr = schedules.Warmup(schedules.LinearCosineDecay(0.05, steps), warmup_steps=2)
    return keras.optimizers.SGD(lr, momentum=0.9)


@pytest.mark.parametrize("technique", ["stability", "mean_teacher", "distiller"])
def test_composes_with_schedules_losses_ema_and_augmentation_and_saves(technique, tmp_path):
    x, y = _images()
    student = _augmented_cnn(1)
    if technique == "stability":
        model = training.StabilityTraining(student, noise_stddev=0.05, alpha=0.5, seed=0)
    elif technique == "mean_teacher":
        y = y.copy()
        y[20:] = -1
        model = training.MeanTeacher(student, ema_decay=0.9, consistency_weight=5.0, rampup_steps=4)
    else:
        model = training.HintonDistiller(_augmented_cnn(2), student, temperature=4.0)
    model.compile(_optimizer(6), loss=losses.LabelSmoothingCrossEntropy(0.1))
    ema = callbacks.ExponentialMovingAverage(decay=0.9)
    history = model.fit(
        x, y, batch_size=16, epochs=2, callbacks=[ema, callbacks.LearningRateLogger()], verbose=0
    ).history
    assert np.isfinite(history["loss"]).all() and "learning_rate" in history
    with ema.averaged():
        averaged = model.predict(x, verbose=0)
    assert not np.allclose(averaged, model.predict(x, verbose=0))
    tta = training.TestTimeAugmentation(model, flips=True)
    np.testing.assert_array_equal(tta.predict(x, verbose=0), tta.predict(x[:, :, ::-1], verbose=0))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)


def _readme_section(title):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_marks_the_four_techniques_built():
    table = _readme_section("The tricks")
    for trick, obj in [
        ("Knowledge distillation", "training.HintonDistiller"),
        ("Stability training", "training.StabilityTraining"),
        ("Mean teacher", "training.MeanTeacher"),
        ("Test-time augmentation", "training.TestTimeAugmentation"),
    ]:
        row = [r for r in table.splitlines() if r.startswith(f"| {trick}")]
        assert row and row[0].endswith("| built |") and f"`{obj}" in row[0], trick


@pytest.mark.slow
def test_bench_quick_mode_prints_the_four_comparisons(fashion_mnist_dir):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "training.py"),
            "--quick",
            "--set",
            "train_subset=512",
            "--set",
            "test_subset=256",
            "--set",
            "mean_teacher_unlabelled=384",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["config"]["train_subset"] == 512
    d = result["distillation"]
    for key in (
        "teacher_test_accuracy",
        "student_alone_test_accuracy",
        "student_distilled_T20_test_accuracy",
        "student_distilled_T4_test_accuracy",
    ):
        assert 0.0 <= d[key] <= 1.0
    s = result["stability"]
    assert {"plain", "stability_alpha_0.01"} <= set(s)
    assert 0.0 <= s["plain"]["flip_rate_sigma_0.1"] <= 1.0
    m = result["mean_teacher"]
    assert m["labels"] == 200 and m["unlabelled"] == 384
    assert 0.0 <= m["mean_teacher_consistency_100"]["teacher_test_accuracy"] <= 1.0
    t = result["tta"]
    assert t["views"] == 2 and t["inference_cost_ratio"] > 0
