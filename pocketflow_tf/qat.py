"""Quantization-aware training models through TFMOT, for any functional/Sequential model.

:func:`quantize_model` is TFMOT's ``quantize_model`` made to work on the nets here and on
user models with a few layers TFMOT does not know:

* ``quantize_annotate_model`` refuses a whole model when one layer has no 8-bit quantize
  config -- the in-model ``Rescaling`` normalisation of every net here, for one. Such layers
  are annotated with :class:`NoOpQuantizeConfig` (they run in float during QAT; the
  converter quantises their output at the next quantised layer, with calibration data).
* ``BatchNormalization`` is not in TFMOT's registry but *is* handled by its layout
  transforms (folded into the preceding convolution), so it keeps the default annotation.

TFMOT caveat (0.8.1, checked here): a QAT model saved as ``.keras`` does not load again (its
``QuantizeLayer`` stores 3 variables and expects 5); ``.h5`` round-trips exactly inside
:func:`quantize_scope`. :mod:`pocketflow_tf.model_io` therefore saves QAT models as ``.h5``
only and always loads inside :func:`quantize_scope`.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(2.0),
    ...                       keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> q = quantize_model(m)
    >>> [type(layer).__name__ for layer in q.layers][:2], is_quantized(q), is_quantized(m)
    (['QuantizeLayer', 'QuantizeWrapperV2'], True, False)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry,
)

from pocketflow_tf import errors
from pocketflow_tf.compat import keras

_qk = tfmot.quantization.keras

#: Layers TFMOT's registry does not list but its layout transforms fold away.
_FOLDED_BY_TRANSFORMS = ("BatchNormalization",)


class NoOpQuantizeConfig(_qk.QuantizeConfig):
    """A quantize config that quantises nothing: the layer runs in float during QAT.

    Example:
        >>> NoOpQuantizeConfig().get_config()
        {}
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self) -> dict[str, Any]:
        return {}


@contextlib.contextmanager
def quantize_scope() -> Iterator[None]:
    """Where QAT models (TFMOT wrappers, :class:`NoOpQuantizeConfig`) can be deserialised.

    Example:
        >>> with quantize_scope():
        ...     pass
    """
    with _qk.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        yield


def is_quantized(model: keras.Model) -> bool:
    """Whether ``model`` holds TFMOT quantization wrappers (a QAT model).

    Example:
        >>> is_quantized(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
        False
    """
    return any(".quantization." in type(layer).__module__ for layer in model.layers)


def quantize_model(model: keras.Model, scheme: Any = None) -> keras.Model:
    """A QAT copy of ``model`` (same weights) with 8-bit fake quantization.

    Train it with ``compile``/``fit`` (or a learner), then convert it with
    :func:`pocketflow_tf.tflite_export.convert` in ``"int8"`` mode.

    Args:
        model: A functional or Sequential model without other TFMOT wrappers.
        scheme: A TFMOT quantize scheme (default: ``Default8BitQuantizeScheme``; e.g.
            ``Default8BitPrunePreserveQuantizeScheme`` to keep pruned zeros).

    Returns:
        The quantize-wrapped model (the input model is not modified).

    Raises:
        UnsupportedModelError: For subclassed models and models that are already QAT models.

    Example:
        >>> qat = quantize_model(trained)  # doctest: +SKIP
        >>> qat.compile(...); qat.fit(x, y, epochs=1)  # doctest: +SKIP
    """
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise errors.UnsupportedModelError(
            f"model {getattr(model, 'name', model)!r} is not a functional or Sequential model"
        )
    if is_quantized(model):
        raise errors.UnsupportedModelError(
            f"model {model.name!r} already holds TFMOT wrappers; quantize the plain model"
        )
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def annotate(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.InputLayer):
            return fresh
        known = registry.supports(layer) or type(layer).__name__ in _FOLDED_BY_TRANSFORMS
        config = None if known else NoOpQuantizeConfig()
        return _qk.quantize_annotate_layer(fresh, quantize_config=config)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with quantize_scope():
        if scheme is None:
            return _qk.quantize_apply(annotated)
        return _qk.quantize_apply(annotated, scheme)


__all__ = ["NoOpQuantizeConfig", "is_quantized", "quantize_model", "quantize_scope"]
