"""Keras callbacks: per-step linear warmup, learning-rate logging and EMA of weights."""

from keras_tricks._ema import ExponentialMovingAverage  # noqa: F401  (issue [2])
