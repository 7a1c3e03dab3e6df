"""The confusion matrix of keras_tricks.plotting against its definition, and its PNG; the
`python -m keras_tricks.plotting` options."""

import inspect

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
        if action.default is not None:
            assert f"(default: {action.default})" in text
