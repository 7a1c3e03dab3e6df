"""Tests for keras_tricks._checks: one message style, one bool/NaN rule, keyword hints."""

import json
import math

import numpy as np
import pytest

from keras_tricks import _checks, augment, data, losses, lr_finder, models, optimizers, schedules

TFRECORD_CHECKS_IMPORT = """
import importlib.util, json, sys
import tfrecord_tools._checks
through_package = "tensorflow" in sys.modules
# The module on its own, outside the package, with NumPy unloaded: stdlib only or it fails here.
origin = importlib.util.find_spec("tfrecord_tools._checks").origin
for name in [m for m in sys.modules if m.split(".")[0] in ("numpy", "tfrecord_tools")]:
    del sys.modules[name]
spec = importlib.util.spec_from_file_location("checks_alone", origin)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps([through_package, "numpy" in sys.modules, "tensorflow" in sys.modules]))
"""


def test_tfrecord_tools_checks_import_without_tensorflow(run_python):
    # keras_tricks may import tfrecord_tools, never the reverse, so the one implementation lives in
    # tfrecord_tools and must stay light: the writer's worker processes import it.
    out = run_python(TFRECORD_CHECKS_IMPORT, backend="tensorflow")
    assert json.loads(out.splitlines()[-1]) == [False, False, False]


def test_keras_tricks_checks_re_exports_the_tfrecord_tools_functions():
    from tfrecord_tools import _checks as shared

    assert _checks.__all__ == shared.__all__
    assert all(getattr(_checks, name) is getattr(shared, name) for name in shared.__all__)


def message(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


def test_messages_follow_the_keras_style_name_allowed_received():
    # Keras: "`name` must be <what is allowed>. Received: name=<value!r>"
    assert message(lambda: _checks.check_int("steps", 0)) == (
        "`steps` must be an integer >= 1. Received: steps=0"
    )
    assert message(lambda: _checks.check_number("lr", -1.0, positive=True)) == (
        "`lr` must be a number > 0.0. Received: lr=-1.0"
    )
    assert message(lambda: _checks.check_one_of("mode", "x", ("a", "b"))) == (
        "`mode` must be one of ('a', 'b'). Received: mode='x'"
    )


@pytest.mark.parametrize("value", [True, False, float("nan"), np.float32("nan"), "1", None])
def test_bools_nan_and_non_numbers_are_never_numbers(value):
    with pytest.raises(ValueError, match="`x` must be a number"):
        _checks.check_number("x", value)


def test_numpy_scalars_are_numbers_and_integers():
    assert _checks.check_number("x", np.float32(0.5), maximum=1.0) == 0.5
    assert _checks.check_int("n", np.int64(3)) == 3 and type(_checks.check_int("n", 3)) is int
    assert _checks.check_seed("seed", np.int32(7)) == 7
    with pytest.raises(ValueError, match="Received: n=True"):
        _checks.check_int("n", True)


def test_fail_can_show_a_part_of_the_value_as_keras_does_for_arrays():
    assert message(lambda: _checks.fail("x", "of rank 2", (2, 3, 4), received_as="x.shape")) == (
        "`x` must be of rank 2. Received: x.shape=(2, 3, 4)"
    )


def test_integer_maximum_is_inclusive_and_named_in_the_message():
    # JPEG quality is 1..100 (Pillow's scale): both ends are valid, one past either end is not.
    assert _checks.check_int("quality", 100, maximum=100) == 100
    assert _checks.check_int("quality", np.int64(1), maximum=100) == 1
    assert message(lambda: _checks.check_int("quality", 101, maximum=100)) == (
        "`quality` must be an integer >= 1 and <= 100. Received: quality=101"
    )
    assert _checks.check_int("n", None, maximum=3, allow_none=True) is None
    with pytest.raises(ValueError, match=r">= 1 and <= 3 or None. Received: n=4"):
        _checks.check_int("n", 4, maximum=3, allow_none=True)


def test_bounds_open_closed_and_finite():
    assert _checks.check_number("m", 0.0, minimum=0.0, maximum=1.0, max_open=True) == 0.0
    with pytest.raises(ValueError, match=r"< 1.0. Received: m=1.0"):
        _checks.check_number("m", 1.0, minimum=0.0, maximum=1.0, max_open=True)
    assert _checks.check_number("x", math.inf) == math.inf
    with pytest.raises(ValueError, match="finite"):
        _checks.check_number("x", math.inf, finite=True)


def test_one_of_does_not_confuse_bools_with_integers():
    assert _checks.check_one_of("flag", True, (True, False, "auto")) is True
    with pytest.raises(ValueError, match="Received: flag=1"):
        _checks.check_one_of("flag", 1, (True, False, "auto"))
    assert _checks.check_bool("b", False) is False
    with pytest.raises(ValueError, match="`b` must be True or False. Received: b=0"):
        _checks.check_bool("b", 0)


def test_suggest_keywords_names_the_closest_accepted_argument():
    @_checks.suggest_keywords
    def build(width=1, depth=2):
        return width * depth

    assert build(width=3) == 6
    with pytest.raises(TypeError, match=r"`widht` \(did you mean `width`\?\)"):
        build(widht=3)
    with pytest.raises(TypeError, match="Accepted: depth, width"):
        build(colour=3)


def test_check_known_rejects_unknown_names_of_a_hand_checked_mapping():
    _checks.check_known("recipe()", {"epochs": 3}, ["epochs", "batch_size"])
    with pytest.raises(ValueError) as error:
        _checks.check_known("recipe()", {"epoch": 3}, ["epochs", "batch_size"])
    assert str(error.value) == (
        "recipe() got unexpected keyword argument(s) `epoch` (did you mean `epochs`?). "
        "Accepted: batch_size, epochs"
    )


@pytest.mark.parametrize(
    "call, hint",
    [
        (lambda: schedules.Warmup(0.1, warmup_step=5), "warmup_steps"),
        (lambda: schedules.OneCycle(0.1, 100, pct=0.3), "pct_start"),
        (lambda: losses.LabelSmoothingCrossEntropy(epsilom=0.1), "epsilon"),
        (lambda: optimizers.LARS(momentun=0.9), "momentum"),
        (lambda: optimizers.convert_weight_decay(1e-4, "l2", "coupled", lr=0.1), "learning_rate"),
        (lambda: models.resnet_v1(varient="c"), "variant"),
        (lambda: models.resnet9(widht=32), "width"),
        (lambda: models.CELU(alhpa=0.3), "alpha"),
        (
            lambda: data.input_pipeline((np.zeros((4, 2, 2)), np.zeros(4)), batchsize=2),
            "batch_size",
        ),
        (lambda: lr_finder.find_lr(None, None, max_learning_rate=1.0), "max_lr"),
        (lambda: augment.RandomResizedCrop(8, 8, scales=(0.5, 1.0)), "scale"),
    ],
)
def test_wrong_keywords_of_public_constructors_and_functions_get_a_hint(call, hint):
    with pytest.raises((TypeError, ValueError), match=f"did you mean `{hint}`"):
        call()
