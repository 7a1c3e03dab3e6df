"""The version of the keras-tricks distribution, kept in this one place.

Everything else reads it from here: the packaging metadata (setuptools' `attr:`, statically,
without importing the package), `keras_tricks.__version__` (re-exported), `keras-tricks
--version`, and `tfrecord_tools.__version__` / `tfrecord-tools --version`. `tfrecord_tools` (of
the same distribution) must not import `keras_tricks`, so it parses this file as text, or asks
the installed metadata (`importlib.metadata.version("keras-tricks")`) where the file is absent.
`tests/test_cli.py` checks that no other file writes the version out.
"""

__version__ = "0.1.0"
