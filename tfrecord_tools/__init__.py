"""tfrecord_tools: sharded TFRecord conversion to local disk or gs://, verification and fast reading."""

__version__ = "0.1.0"
