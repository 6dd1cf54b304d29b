"""One deploy path: export a verified ``.tflite``, score it through LiteRT, time it.

:func:`deploy` chains what every benchmark did by hand: :func:`~pocketflow_tf.tflite_verify.
export_tflite` (conversion, verification against the Keras model, atomic write), the top-1
accuracy of the written file on evaluation arrays
(:func:`~pocketflow_tf.tflite_verify.tflite_accuracy`) and its latency relative to a reference
``.tflite`` (:func:`~pocketflow_tf.latency.interleaved_ratio`). The two measurements are
optional, so one call covers a reference export, a scored export and a timed one.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import deploy
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).random((200, 4), dtype=np.float32)
    >>> y = np.argmax(m(x).numpy(), axis=1)
    >>> out = deploy.deploy(m, os.path.join(tempfile.mkdtemp(), "m.tflite"), x_verify=x,
    ...                     x_eval=x, y_eval=y)
    >>> out.acc, out.latency_ratio, out.export.report.passed
    (1.0, None, True)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from pocketflow_tf import errors, latency, tflite_verify
from pocketflow_tf.compat import keras


@dataclasses.dataclass
class Deployed:
    """A verified ``.tflite`` file and what :func:`deploy` measured of it.

    Attributes:
        export: The :class:`~pocketflow_tf.tflite_verify.ExportResult` (path, sha256, bytes,
            gzip bytes, verification report).
        acc: Top-1 accuracy of the file on the evaluation arrays; ``None`` when not asked.
        latency_ratio: Median latency of the file over the reference's (interleaved, one
            thread, batch 1; < 1 is faster); ``None`` without a reference.

    Example:
        >>> d = Deployed(export=None, acc=0.9, latency_ratio=None)
        >>> d.acc
        0.9
    """

    export: tflite_verify.ExportResult
    acc: float | None = None
    latency_ratio: float | None = None


def deploy(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    eval_batch_size: int = 100,
    reference: str | os.PathLike | None = None,
    rounds: int = 60,
    **export: Any,
) -> Deployed:
    """Exports ``model`` to a verified ``path``, then scores and times the file on request.

    Args:
        model: The Keras model to export.
        path: Destination ``.tflite`` path (``<path>.sha256`` is written beside it).
        x_eval: Inputs to measure the file's top-1 accuracy on; ``None`` skips it.
        y_eval: Labels of ``x_eval`` (required with it).
        eval_batch_size: Samples per LiteRT ``invoke()`` while scoring.
        reference: A ``.tflite`` to time the file against; ``None`` skips timing.
        rounds: Interleaved timing rounds (see :func:`pocketflow_tf.latency.interleaved_ratio`).
        **export: The keywords of :func:`pocketflow_tf.tflite_verify.export_tflite`
            (``mode``, ``x_verify`` required, ``y_verify``, ``representative_data``, ...).

    Returns:
        The :class:`Deployed` file and figures.

    Raises:
        InvalidArgumentError: If ``x_eval`` comes without ``y_eval``; or as raised by the
            export.
        VerificationError: If the export fails verification (nothing is written).

    Example:
        >>> d = deploy(model, "m.int8.tflite", mode="int8", x_verify=x_test[:1000],
        ...            y_verify=y_test[:1000], representative_data=rep, x_eval=x_test,
        ...            y_eval=y_test, reference="m.float.tflite")  # doctest: +SKIP
        >>> d.acc, d.latency_ratio  # doctest: +SKIP
        (0.9212, 0.41)
    """
    if x_eval is not None and y_eval is None:
        raise errors.InvalidArgumentError("y_eval", None, "the labels of x_eval")
    result = tflite_verify.export_tflite(model, path, **export)
    acc = None
    if x_eval is not None:
        acc = tflite_verify.tflite_accuracy(result.path, x_eval, y_eval, batch_size=eval_batch_size)
    ratio = None
    if reference is not None:
        ratio = latency.interleaved_ratio(result.path, reference, rounds=rounds).latency_ratio
    return Deployed(export=result, acc=acc, latency_ratio=ratio)


__all__ = ["Deployed", "deploy"]
