"""The version of the keras-tricks distribution, kept in this one place.

`pyproject.toml` reads it (`[tool.setuptools.dynamic]`, `version = { attr =
"keras_tricks._version.__version__" }`, statically, without importing the package);
`keras_tricks.__version__` re-exports it; code outside `keras_tricks` (the `tfrecord_tools`
package of the same distribution, which must not import `keras_tricks`) asks the installed
metadata: `importlib.metadata.version("keras-tricks")`.
"""

__version__ = "0.1.0"
