"""Batch-vectorised image augmentation layers that run on the accelerator or in `tf.data`.

The layers live in one module per family, and every public name is importable from here:

- `keras_tricks.augment.geometric`: `RandomPadCrop`, `RandomFlip`, `RandomResizedCrop`
- `keras_tricks.augment.erasing`: `Cutout`
- `keras_tricks.augment.color`: `ColorJitter`, `PCALighting`, `Normalize` and the ImageNet
  statistics (`IMAGENET_MEAN`, `IMAGENET_STD`, `IMAGENET_EIGVAL`, `IMAGENET_EIGVEC`)
- `keras_tricks.augment.mixing`: `MixUp`, `CutMix` (they mix the labels too)

(`_base` holds the shared input handling and seeding, `_kernels` the batched gathers and masks.)

Every layer here is a `keras.layers.Layer` written with `keras.ops` and `keras.random` only, so
it runs inside a model on any backend (tested on TensorFlow and JAX) and inside a `tf.data`
pipeline with the TensorFlow backend. Each layer draws independent random parameters for every
image of the batch in one vectorised call (no per-image `map_fn`), and then applies them with a
single index gather, mask or 3x3 colour matrix per image: static shapes and no per-image loops,
which is what lets XLA fuse the whole augmentation into the compiled train step (David Page,
"How to train your ResNet", https://myrtle.ai/learn/how-to-train-your-resnet/: augment on the
accelerator, a batch at a time).

Shared behaviour:

- `training=False` (evaluation, `model.predict`) returns the input unchanged, except `Normalize`,
  which is preprocessing rather than augmentation and always applies, and `RandomResizedCrop`,
  which centre-crops and resizes so that the output shape does not change.
- The output has the input's dtype (`uint8`, `float32`, `float16`, ...); integer outputs are
  rounded and clipped to the dtype's range. `Normalize` returns floats.
- Inputs may be an image batch `(B, H, W, C)`, a single image `(H, W, C)`, an `(images, labels)`
  tuple or a dict with `"images"` (and `"labels"`) keys; the same structure is returned. Only
  `MixUp` and `CutMix` change the labels, which must then be one-hot or soft (float, `(B, K)`),
  or integer class ids with `num_classes` given.
- `seed` makes a random layer reproducible: two layers built with the same seed produce the same
  sequence of outputs (`keras.random.SeedGenerator`). `Normalize` draws nothing and has no seed.
- `mixes_labels` (a class attribute) is True for the layers that change the labels (`MixUp`,
  `CutMix`) and False for the others: the public marker `keras_tricks.data.input_pipeline`
  reads to keep such layers in `tf.data`, where the labels are. Set it on your own
  label-mixing layer to get the same treatment.
- Each random layer exposes `get_random_transformation(shape)` (the per-image parameters) and
  `transform(images, transformation)` (apply them), like Keras's own image preprocessing layers.

Example:

```python
import numpy as np
import keras
from keras_tricks import augment

images = np.random.randint(0, 256, size=(8, 32, 32, 3), dtype="uint8")
pipeline = keras.Sequential([
    keras.Input((32, 32, 3), dtype="uint8"),  # else Sequential feeds float32 to the layers
    augment.RandomPadCrop(padding=4, seed=1),
    augment.RandomFlip(seed=2),
    augment.Cutout(size=8, seed=3),
])
out = pipeline(images, training=True)
assert out.shape == (8, 32, 32, 3) and out.dtype == "uint8"
```
"""

from keras_tricks.augment.color import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Normalize,
    PCALighting,
)
from keras_tricks.augment.erasing import Cutout
from keras_tricks.augment.geometric import RandomFlip, RandomPadCrop, RandomResizedCrop
from keras_tricks.augment.mixing import CutMix, MixUp

__all__ = [
    "RandomPadCrop",
    "RandomFlip",
    "Cutout",
    "RandomResizedCrop",
    "ColorJitter",
    "PCALighting",
    "Normalize",
    "MixUp",
    "CutMix",
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
