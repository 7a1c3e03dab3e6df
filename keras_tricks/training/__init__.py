"""Training techniques as Keras models: distillation, stability training, mean teacher, TTA.

Each is a `keras.Model` wrapping your classifier, so it trains with `fit`, evaluates, predicts,
saves and loads like any model, and composes with the schedules, losses, callbacks and
augmentation layers of this package::

    from keras_tricks.training import TestTimeAugmentation
"""

from keras_tricks.training.tta import TestTimeAugmentation

__all__ = ["TestTimeAugmentation"]
