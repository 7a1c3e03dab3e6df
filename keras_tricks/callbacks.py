"""Keras callbacks: per-step linear warmup, learning-rate logging and EMA of weights."""
