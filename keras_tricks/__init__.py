"""keras-tricks: the bag of tricks for training image classifiers, as Keras 3 objects.

Import the family you need::

    from keras_tricks import schedules, losses, optimizers, callbacks, augment, models
"""

__version__ = "0.1.0"
