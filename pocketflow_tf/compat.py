"""The one place where the framework imports Keras.

TFMOT only accepts models built with the Keras 2 API (``tf-keras``), and refuses Keras 3
models. Every module of pocketflow-tf therefore uses the Keras instance that TFMOT itself
uses, imported here and nowhere else, so that a model built by a net recipe, wrapped by
TFMOT and exported by the TFLite converter is always one and the same kind of object.

Example:
    >>> from pocketflow_tf.compat import keras, tf
    >>> layer = keras.layers.Dense(2)
    >>> isinstance(layer, keras.layers.Layer)
    True
"""

from __future__ import annotations

import os

# tf-keras must be selected before TensorFlow is imported, or TF 2.16+ binds tf.keras to
# Keras 3. TF 2.15 (the Horovod lane) also honours it and binds tf.keras to tf-keras 2.15,
# which TFMOT 0.8.0 requires there (it sets the variable itself).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow_model_optimization.python.core.keras.compat import keras  # noqa: E402

#: ``True`` when the Keras used here is Keras 2 (tf-keras), which TFMOT requires.
# Keras 3 has the `ops` namespace; tf-keras (and Keras 2.15) do not.
IS_KERAS_2: bool = not hasattr(keras, "ops")

__all__ = ["IS_KERAS_2", "keras", "tf"]
