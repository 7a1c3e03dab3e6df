"""keras_tricks.plotting: the confusion matrix against its definition and its PNG, the schedule
and training-curve figures against the values they plot, and the module's command-line options."""

import inspect
import math

import numpy as np
import pytest
from PIL import Image

from keras_tricks import plotting
from keras_tricks.plotting import confusion_matrix, save_confusion_matrix


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = np.zeros((4, 4), "int64")
    for y, p in zip(labels, predictions):  # the definition, one example at a time
        expected[y, p] += 1
    np.testing.assert_array_equal(confusion_matrix(labels, predictions), expected)
    assert confusion_matrix([0, 1], [0, 1], num_classes=3).shape == (3, 3)


def test_confusion_matrix_rejects_different_lengths():
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1, 2], [0, 1])


@pytest.mark.parametrize(
    "labels, predictions, num_classes, message",
    [
        ([0, 1, 2], [0, 1], None, "`len(predictions)` must be the same length as `labels` (3). "
         "Received: len(predictions)=2"),
        ([0, 3], [0, 1], 3, "`labels` must be class ids below num_classes=3. Received: labels=3"),
        ([0, 1], [0, 5], 3, "Received: predictions=5"),
        ([0, -1], [0, 1], None, "`labels` must be class ids (whole numbers >= 0). "
         "Received: labels=[0, -1]"),
        ([0, 1.5], [0, 1], None, "Received: labels=[0, 1.5]"),
        ([0, 1], [0, 1], 0, "`num_classes` must be an integer >= 1 or None. "
         "Received: num_classes=0"),
    ],
)  # fmt: skip
def test_confusion_matrix_rejects_bad_ids_in_keras_style(labels, predictions, num_classes, message):
    with pytest.raises(ValueError) as error:
        confusion_matrix(labels, predictions, num_classes)
    assert message in str(error.value)
    # Whole-number float labels are ids too.
    np.testing.assert_array_equal(confusion_matrix([0.0, 1.0], [0, 1]), np.eye(2, dtype="int64"))


def test_grid_functions_reject_bad_arguments_in_keras_style(tmp_path):
    def flip(x, training=True):
        return x[:, :, ::-1]

    cases = [
        (lambda: plotting.augmentation_grid(np.zeros((2, 3)), flip),
         "`images.shape` must be (N, H, W), (N, H, W, 1) or (N, H, W, 3) with N >= 1. "
         "Received: images.shape=(2, 3)"),
        (lambda: plotting.augmentation_grid(np.zeros((0, 5, 5)), flip),
         "Received: images.shape=(0, 5, 5)"),
        (lambda: plotting.augmentation_grid(np.zeros((1, 5, 5)), "flip"),
         "`augmentation` must be a Keras layer or a callable"),
        (lambda: plotting.augmentation_grid(np.zeros((1, 5, 5)), flip, num_augmentations=True),
         "`num_augmentations` must be an integer >= 1. Received: num_augmentations=True"),
        (lambda: plotting.save_augmentation_grid(np.zeros((1, 5, 5)), flip, tmp_path / "g.png",
                                                 value_range=(1, 0)),
         "`value_range` must be a pair (min, max) with min <= max. Received: value_range=(1, 0)"),
        (lambda: plotting.fashion_mnist_grid(tmp_path / "f.png", num_images=0),
         "`num_images` must be an integer >= 1. Received: num_images=0"),
        (lambda: plotting.save_confusion_matrix([0], [0], tmp_path / "c.png", label_names="ab"),
         "`label_names` must be a sequence of class names (strings) or None."),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_save_confusion_matrix_writes_a_png(tmp_path):
    path = save_confusion_matrix(
        [0, 1, 1, 2], [0, 1, 2, 2], tmp_path / "sub" / "cm.png", label_names=["a", "b", "c"]
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 200


def test_plotting_command_help_documents_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        plotting.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "Fashion-MNIST" in text and "augmented copies" in text
    parser = plotting.build_parser()
    grid_defaults = inspect.signature(plotting.fashion_mnist_grid).parameters
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        # Every option reads the default of the function it calls, and says it.
        if action.dest in grid_defaults:
            assert action.default == grid_defaults[action.dest].default
        if action.default is not None and not isinstance(action.default, bool):  # not flags
            assert f"(default: {action.default})" in text


def test_schedule_figure_plots_the_schedule_at_every_step_and_the_logged_rates_at_epoch_ends():
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(0.4, decay_steps=30)
    logged = [0.4, 0.3, 0.1]
    fig = plotting.schedule_figure(schedule, 30, 10, logged=logged, title="t")
    line, dots = fig.axes[0].lines
    # Keras's CosineDecay (alpha 0): lr * 0.5 * (1 + cos(pi * step / decay_steps)).
    expected = [0.4 * 0.5 * (1 + math.cos(math.pi * s / 30)) for s in range(30)]
    np.testing.assert_allclose(line.get_xdata(), np.arange(30))
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(dots.get_xdata(), [9, 19, 29])  # the last step of each epoch
    np.testing.assert_array_equal(dots.get_ydata(), logged)
    constant = plotting.schedule_figure(0.05, 5, 5)
    np.testing.assert_array_equal(constant.axes[0].lines[0].get_ydata(), [0.05] * 5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_steps": 0}, "`total_steps` must be an integer >= 1. Received: total_steps=0"),
        ({"steps_per_epoch": 2.5}, "Received: steps_per_epoch=2.5"),
        ({"schedule": "cosine"}, "Received: schedule='cosine'"),
        ({"logged": [0.1, None]}, "`logged[1]` must be a number. Received: logged[1]=None"),
        ({"title": 3}, "`title` must be a string or None. Received: title=3"),
    ],
)
def test_schedule_figure_rejects_bad_arguments_in_keras_style(kwargs, message):
    arguments = {"schedule": 0.1, "total_steps": 10, "steps_per_epoch": 5, **kwargs}
    with pytest.raises(ValueError) as error:
        plotting.schedule_figure(**arguments)
    assert message in str(error.value)


def test_curves_figure_plots_each_history_key_against_the_epoch():
    history = {
        "loss": [1.5, 1.0, 0.7],
        "val_loss": [1.2, 1.1, 0.9],
        "accuracy": [0.5, 0.7, 0.8],
        "learning_rate": [0.1, 0.2, 0.05],
    }
    fig = plotting.curves_figure(history)
    loss, accuracy, rate = fig.axes[:3]
    for ax, keys in (
        (loss, ["loss", "val_loss"]),
        (accuracy, ["accuracy"]),
        (rate, ["learning_rate"]),
    ):
        assert [list(line.get_ydata()) for line in ax.lines] == [history[k] for k in keys]
        assert all(list(line.get_xdata()) == [1, 2, 3] for line in ax.lines)
    assert loss.get_legend() is not None and accuracy.get_legend() is None  # val only in loss
    with pytest.raises(ValueError, match="`history` must be a Keras History.history dict"):
        plotting.curves_figure({"accuracy": [0.5]})


def test_plotting_command_refuses_a_bad_option_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        plotting.main(["--num-images", "0"])
    assert exit_info.value.code == 2
    assert "`num_images` must be an integer >= 1. Received: num_images=0" in capsys.readouterr().err
