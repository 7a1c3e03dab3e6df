"""Training techniques as Keras models: distillation, stability training, mean teacher, TTA.

Each is a `keras.Model` wrapping your classifier, so it trains with `fit`, evaluates, predicts,
saves and loads like any model, and composes with the schedules, losses, callbacks and
augmentation layers of this package::

    from keras_tricks.training import TestTimeAugmentation
"""

from keras_tricks.training.distillation import HintonDistiller
from keras_tricks.training.mean_teacher import MeanTeacher, TwoStreamBatches, sigmoid_rampup
from keras_tricks.training.stability import StabilityTraining
from keras_tricks.training.tta import TestTimeAugmentation

__all__ = [
    "HintonDistiller",
    "MeanTeacher",
    "StabilityTraining",
    "TestTimeAugmentation",
    "TwoStreamBatches",
    "sigmoid_rampup",
]
