"""pocketflow-tf: automated compression of Keras models to verified ``.tflite`` files.

The facade holds one entry point, :func:`compress` (``learners.auto.compress``), loaded on
first use so that importing a core module stays cheap. Library code imports modules
(``from pocketflow_tf import training``), never this facade.

Example:
    >>> import pocketflow_tf
    >>> pocketflow_tf.compress.__module__
    'pocketflow_tf.learners.auto.compress'
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "compress":
        from pocketflow_tf.learners.auto import compress

        return compress
    raise AttributeError(f"module 'pocketflow_tf' has no attribute {name!r}")
