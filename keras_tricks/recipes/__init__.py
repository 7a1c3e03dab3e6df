"""Complete training recipes: one call returns a `Recipe` whose `.fit()` runs the whole thing.

- `fashion_mnist(...)`: the Fashion-MNIST recipe sized for a 2-core CPU (the `keras-tricks demo`).
- `cifar10_fast(...)`: David Page's ResNet-9 DAWNBench recipe, 94% on CIFAR-10 in 24 epochs.
- `imagenet_resnet50(...)`: He et al. 2019's ResNet-50-D with the bag of tricks.

Every keyword overrides one hyperparameter (`batch_size=`, `epochs=`, `width=`, `data=`, ...); a
new batch size rescales the learning rate by the linear rule. `work_dir=` (local or `gs://`) holds
checkpoints, TensorBoard logs and the final model. See `keras_tricks.recipes._recipe`.
"""

import importlib

from keras_tricks.recipes._recipe import (
    Hyperparameter,
    Hyperparameters,
    Recipe,
    ResumableBackup,
    recipe_data,
    resolve_hyperparameters,
    training_stream,
    worker_backup_dir,
)

__all__ = [
    "Hyperparameter",
    "Hyperparameters",
    "Recipe",
    "ResumableBackup",
    "cifar10_fast",
    "fashion_mnist",
    "imagenet_resnet50",
    "recipe_data",
    "resolve_hyperparameters",
    "training_stream",
    "worker_backup_dir",
]

# Each recipe's module is imported when the recipe is first used (PEP 562), so the package
# imports even while one of them is missing or its optional dependencies are.
_RECIPES = {
    "fashion_mnist": "keras_tricks.recipes.fashion",
    "cifar10_fast": "keras_tricks.recipes.cifar10",
    "imagenet_resnet50": "keras_tricks.recipes.imagenet",
}


def __getattr__(name):
    if name in _RECIPES:
        return getattr(importlib.import_module(_RECIPES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_RECIPES))
