"""keras-tricks: the bag of tricks for training image classifiers, as Keras 3 objects.

Import the family you need, or reach it from the package (each submodule is imported on first
use, PEP 562, so `import keras_tricks` itself stays cheap and imports neither Keras nor
TensorFlow):

```python
import keras_tricks
from keras_tricks import augment, losses, optimizers, schedules

assert keras_tricks.schedules is schedules
print(keras_tricks.__version__)
```
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from keras_tricks._version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the modules load on first use
    from keras_tricks import (  # noqa: F401
        augment,
        callbacks,
        data,
        datasets,
        ema,
        losses,
        lr_finder,
        models,
        optimizers,
        plotting,
        precision,
        recipes,
        runtime,
        schedules,
        training,
    )


def _public_submodules() -> list[str]:
    """The package's public modules and subpackages (names without a leading underscore)."""
    return sorted(
        info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")
    )


__all__ = ["__version__", *_public_submodules()]


def __getattr__(name: str) -> Any:
    # PEP 562: `keras_tricks.schedules` imports keras_tricks.schedules on first access.
    if not name.startswith("_") and name in _public_submodules():
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_public_submodules()))
