"""Sparsity-preserving quantization-aware training (PQAT) of a pruned model, via TFMOT.

An int8 step after pruning must not undo the zeros. Plain post-training int8 keeps them
(zero maps to the zero-point 0 of TFLite's symmetric int8 weights; checked by the tests with
:mod:`pocketflow_tf.sparsity`). Plain QAT does not: its fake-quantised kernels keep training
and the zeros drift away. TFMOT's ``Default8BitPrunePreserveQuantizeScheme`` keeps the
sparsity mask fixed during QAT; :func:`prune_preserving_qat_model` applies it.

The QAT model is built by :func:`pocketflow_tf.qat.quantize_model` (it handles the layers
TFMOT's annotation refuses, e.g. the ``Rescaling`` normalisation of every net here).

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

import tensorflow_model_optimization as tfmot

from pocketflow_tf import qat
from pocketflow_tf.compat import keras


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
    return qat.quantize_model(
        model, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )


__all__ = ["prune_preserving_qat_model"]
