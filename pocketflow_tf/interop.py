"""The caller's Keras is the answer's Keras: Keras 3 models in, Keras 3 models out.

The framework computes in tf-keras (what TFMOT accepts). A Keras 3 model object handed to a
public entry (``Learner.fit``, ``compress``, ``export_tflite``, the accounting) is rebuilt in
memory in tf-keras by :func:`to_framework` (no file for the user to write), and the result is
rebuilt in Keras 3 by :func:`to_caller`, with the same outputs. A layer the bridge cannot
rebuild is named, with what to do (:mod:`pocketflow_tf.model_io`).

A quantization-aware (QAT) result holds TFMOT's wrappers, which exist in tf-keras only: it
is frozen first (:mod:`pocketflow_tf.qat_freeze`: standard layers with the quantized weights
plus ``FakeQuant`` steps holding the learned ranges, checked against the QAT model) and
comes back in Keras 3 with the same outputs. It is for inference and float use; training on
with quantization-aware steps is done in tf-keras.

Example:
    >>> import keras as keras3
    >>> m3 = keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)])
    >>> m, came_as_keras3 = to_framework(m3)
    >>> came_as_keras3, model_io.is_keras3(to_caller(m, came_as_keras3))
    (True, True)
"""

from __future__ import annotations

import logging
from typing import Any

from pocketflow_tf import errors, model_io, qat
from pocketflow_tf.compat import keras

logger = logging.getLogger(__name__)


def to_framework(model: Any, *, name: str = "model") -> tuple[Any, bool]:
    """``(model in tf-keras, whether it came as Keras 3)``; tf-keras models pass unchanged.

    Anything that is neither a tf-keras nor a Keras 3 model is returned as it is, for the
    entry's own type check to refuse by name.

    Args:
        model: The caller's model.
        name: The argument's name in errors.

    Raises:
        UnsupportedModelError: A Keras 3 layer the bridge cannot rebuild (named).

    Example:
        >>> to_framework(None)
        (None, False)
    """
    if not model_io.is_keras3(model):
        return model, False
    try:
        # The object already lives in the caller's process: rebuilding its Lambda layers
        # runs no code from an untrusted file (the file-loading trust flag is about files).
        return model_io.from_keras3(model, trust_unsafe=True), True
    except errors.UnsupportedModelError as e:
        raise errors.UnsupportedModelError(f"`{name}` is a Keras 3 model: {e}") from e


def to_caller(model: keras.Model, came_as_keras3: bool) -> Any:
    """``model`` in the Keras the caller used (see :func:`to_framework`).

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> to_caller(m, False) is m
        True
    """
    if not came_as_keras3 or model is None:
        return model
    if qat.is_quantized(model):
        logger.info(
            "the quantization-aware result comes back in Keras 3 frozen: quantized weights "
            "and FakeQuant steps with the learned ranges (same outputs); TFMOT's wrappers, "
            "needed to train on with QAT, exist only in tf-keras"
        )
        # Imported here: it needs Keras 3, which the Horovod lane's TF 2.15 stack lacks.
        from pocketflow_tf import qat_freeze

        model = qat_freeze.freeze(model)
    return model_io.to_keras3(model)
