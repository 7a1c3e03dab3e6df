"""Shared test set-up: TensorFlow backend, quiet logs, Fashion-MNIST location."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from keras_tricks.datasets import FASHION_MNIST_DIR  # noqa: E402


@pytest.fixture(scope="session")
def fashion_mnist_dir():
    """Directory of the Debian package's IDX files; `make test` installs it."""
    if not os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")):
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; "
            "install the Debian package dataset-fashion-mnist (make test does it as root)."
        )
    return FASHION_MNIST_DIR


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_python():
    """Run a Python script in a fresh process on a given Keras backend; returns its stdout.

    A fresh process is the only way to choose the backend (Keras reads KERAS_BACKEND at import).
    The repository root is put on PYTHONPATH so the package imports without being installed.
    """
    import subprocess
    import sys

    def run(script, backend="jax", timeout=300):
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run


# --- The backend-neutral subset ------------------------------------------------------------------
# Tests of the backend-neutral core get the `backend_neutral` marker; `make test-jax` runs them
# under KERAS_BACKEND=jax (`pytest -m backend_neutral`). TensorFlow stays as the oracle where a
# test uses it for a reference value (tf.compat.v1 schedules, tf.image.resize). Left out: tests
# that drive TensorFlow's own APIs on the layers (listed below, with why), and the `run_python`
# tests, which the TensorFlow run already runs on JAX.
BACKEND_NEUTRAL_MODULES = {
    "test_schedules.py",
    "test_losses.py",
    "test_optimizers.py",
    "test_callbacks.py",
    "test_ema.py",
    "test_augment.py",
    "test_models.py",
    "test_lr_finder.py",
    "test_checks.py",
    "test_training.py",
    "test_training_distillation.py",
    "test_training_mean_teacher.py",
    "test_training_stability.py",
    "test_training_tta.py",
}
TF_ONLY_TESTS = {
    "test_optimizers.py::test_lars_matches_numpy_transcription_of_the_paper_for_20_steps": (
        "gradients from tf.GradientTape"
    ),
    "test_optimizers.py::test_no_bias_decay_keeps_gradient_step_and_earlier_exclusions": (
        "gradients from tf.GradientTape"
    ),
    "test_augment.py::test_color_jitter_equals_sequential_reference_for_fixed_coefficients": (
        "runs the layer inside tf.function"
    ),
    "test_augment.py::test_masked_layers_give_the_same_result_with_unknown_channels": (
        "tf.function with an unknown-channels input_signature"
    ),
    "test_augment.py::test_works_in_tf_data_and_under_xla_in_a_model": "tf.data and tf.function",
}
# Tests that fail on JAX for a known reason, each with that reason (strict: a pass is an error).
JAX_XFAILS: dict[str, str] = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend_neutral: runs on every Keras backend (`make test-jax` runs them on JAX)"
    )


def pytest_collection_modifyitems(config, items):
    on_jax = os.environ.get("KERAS_BACKEND") == "jax"
    for item in items:
        key = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if (
            item.path.name not in BACKEND_NEUTRAL_MODULES
            or key in TF_ONLY_TESTS
            or "run_python" in getattr(item, "fixturenames", ())
        ):
            continue
        item.add_marker(pytest.mark.backend_neutral)
        if on_jax and key in JAX_XFAILS:
            item.add_marker(pytest.mark.xfail(reason=JAX_XFAILS[key], strict=True))
