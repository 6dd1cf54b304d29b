"""Sparsity-preserving quantization-aware training (PQAT) of a pruned model, via TFMOT.

An int8 step after pruning must not undo the zeros. Plain post-training int8 keeps them
(zero maps to the zero-point 0 of TFLite's symmetric int8 weights; checked by the tests with
:mod:`pocketflow_tf.sparsity`). Plain QAT does not: its fake-quantised kernels keep training
and the zeros drift away. TFMOT's ``Default8BitPrunePreserveQuantizeScheme`` keeps the
sparsity mask fixed during QAT; :func:`prune_preserving_qat_model` applies it.

TFMOT caveat (0.8.1): ``quantize_annotate_model`` refuses the whole model when a layer has no
8-bit quantize config -- e.g. the ``Rescaling`` normalisation of every net here -- and
annotating layer by layer is not enough either: the prune-preserve registry claims to support
``Rescaling`` (its ``supports()`` says yes) but then raises in ``get_quantize_config()``
because its output feeds a quantised layer. So such layers are annotated with
:class:`NoOpQuantizeConfig` (run in float, quantise nothing); the converter then quantises
their output at the next quantised layer.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.weight_sparse import pqat
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(2.0),
    ...                       keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
    ...                       keras.layers.Dense(2)])
    >>> q = pqat.prune_preserving_qat_model(m)
    >>> [type(layer).__name__ for layer in q.layers][:2]
    ['QuantizeLayer', 'QuantizeWrapperV2']
"""

from __future__ import annotations

from typing import Any

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry,
)

from pocketflow_tf import errors
from pocketflow_tf.compat import keras

_qk = tfmot.quantization.keras


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


def prune_preserving_qat_model(model: keras.Model) -> keras.Model:
    """A QAT copy of a pruned (stripped) model whose training keeps the zeros in place.

    Train the result with ``compile``/``fit`` (or a learner's loop), then convert it with
    :func:`pocketflow_tf.tflite_export.convert` in ``"dynamic"`` or ``"int8"`` mode (add
    ``sparse=True`` for the sparse storage format).

    Args:
        model: A functional or Sequential model without pruning wrappers.

    Returns:
        The quantize-wrapped model (the input model is not modified).

    Raises:
        UnsupportedModelError: For subclassed models.

    Example:
        >>> qat = prune_preserving_qat_model(stripped)  # doctest: +SKIP
        >>> qat.compile(...); qat.fit(x, y, epochs=1)  # doctest: +SKIP
    """
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise errors.UnsupportedModelError(
            f"model {getattr(model, 'name', model)!r} is not a functional or Sequential model"
        )
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        config = None if registry.supports(layer) else NoOpQuantizeConfig()
        fresh = layer.__class__.from_config(layer.get_config())
        return _qk.quantize_annotate_layer(fresh, quantize_config=config)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with _qk.quantize_scope({"NoOpQuantizeConfig": NoOpQuantizeConfig}):
        return _qk.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        )


__all__ = ["NoOpQuantizeConfig", "prune_preserving_qat_model"]
