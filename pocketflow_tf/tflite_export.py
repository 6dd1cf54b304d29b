"""Keras model -> TFLite flatbuffer conversion, in four modes, and size measurement.

Modes (see :data:`MODES`):

* ``"float"``: float32 weights and activations; numerically the Keras model.
* ``"dynamic"``: dynamic-range quantization; weights stored as int8, activations float.
  Small tensors (under ~1024 elements) are left in float32 by the converter.
* ``"float16"``: weights stored as float16 and dequantized to float32 at load time.
* ``"int8"``: full-integer quantization, calibrated on a representative data set; only
  ``TFLITE_BUILTINS_INT8`` ops are allowed, so the conversion fails rather than silently
  falling back to float kernels. The model's I/O stays float32 unless ``int8_io=True``.

Conversion uses ``tf.lite.TFLiteConverter.from_keras_model``. With TF 2.21 and tf-keras 2.21
(the Keras 2 instance of :mod:`pocketflow_tf.compat`) it works as is for functional and
sequential models, in all four modes, with a dynamic batch dimension (checked when this
module was written): internally it already saves the model to a temporary SavedModel and
converts that, so a hand-made concrete-function / SavedModel fallback would add nothing.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import tflite_export
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> content = tflite_export.convert(m, "float")
    >>> content[4:8]
    b'TFL3'
"""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Iterator

import numpy as np

from pocketflow_tf import errors
from pocketflow_tf.compat import keras, tf

#: Conversion modes understood by :func:`convert`.
MODES = ("float", "dynamic", "float16", "int8")


def convert(
    model: keras.Model,
    mode: str = "float",
    *,
    representative_data: np.ndarray | None = None,
    int8_io: bool = False,
    num_calibration: int = 256,
    sparse: bool = False,
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
        model: A single-input Keras 2 (tf-keras) model.
        mode: One of :data:`MODES`.
        representative_data: Calibration inputs for ``mode="int8"`` (required there, ignored
            by the other modes, which need no calibration). These must be the
            *already-preprocessed model inputs*: exactly the arrays that are fed to
            ``model.predict`` (for the nets of this framework: the float32 ``[0, 1]`` images
            of :mod:`pocketflow_tf.datasets`, since normalisation is a layer of the model).
            Shape ``(N, *model.input_shape[1:])``.
        int8_io: With ``mode="int8"``, make the model's input and output tensors int8 too
            (the caller must then quantize inputs with the input scale/zero-point, as
            :class:`pocketflow_tf.tflite_verify.TFLiteRunner` does). Only valid for int8.
        num_calibration: At most this many samples of ``representative_data`` are used,
            a fixed seeded random subset when there are more.
        sparse: Add ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` so that pruned weights are
            stored in a sparse format where the converter judges it worthwhile (combines
            with every mode; ``"float"`` + ``sparse`` is the float sparse file). LiteRT
            rebuilds the dense kernels with ``DENSIFY`` ops at load time: the file shrinks,
            memory and latency do not. Known limit (LiteRT 2.x, observed): the default
            XNNPACK delegate fails to prepare ops whose int8 weights are stored sparse in
            some cases -- ``FULLY_CONNECTED`` in ``"int8"`` and ``"dynamic"`` modes, and
            ``CONV_2D`` in ``"dynamic"`` mode (``"int8"`` convolutions work); the file then
            does not load with default settings and
            :func:`pocketflow_tf.tflite_verify.export_tflite` writes nothing. See
            :mod:`pocketflow_tf.sparsity` to read the sparsity back from a file.

    Returns:
        The flatbuffer bytes.

    Raises:
        InvalidArgumentError: On an unknown ``mode``, a missing or ill-shaped
            ``representative_data`` for int8, ``int8_io`` outside int8, or a bad
            ``num_calibration``.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
        >>> len(convert(m, "int8", representative_data=x, int8_io=True)) > 0
        True
    """
    if mode not in MODES:
        raise errors.InvalidArgumentError("mode", mode, f"one of {MODES}")
    if int8_io and mode != "int8":
        raise errors.InvalidArgumentError("int8_io", int8_io, "False unless mode='int8'")
    if isinstance(num_calibration, bool) or not isinstance(num_calibration, int | np.integer):
        raise errors.InvalidArgumentError("num_calibration", num_calibration, "an integer >= 1")
    if num_calibration < 1:
        raise errors.InvalidArgumentError("num_calibration", num_calibration, "an integer >= 1")

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [] if mode == "float" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations

    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        calib = _calibration_subset(model, representative_data, num_calibration)
        converter.representative_dataset = lambda: _one_sample_batches(calib)
        # INT8-only ops: an op without an int8 kernel fails the conversion loudly instead of
        # silently staying float (which would make "int8" size/latency figures a lie).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    # "dynamic" is Optimize.DEFAULT with no representative data set; a representative data
    # set would turn it into float-fallback full-integer quantization, hence int8 only.
    with warnings.catch_warnings():
        # Emitted for every int8 conversion: it is about the legacy `quantized_input_stats`
        # option, which the representative data set replaces.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return bytes(converter.convert())


def _calibration_subset(model: keras.Model, data: np.ndarray | None, limit: int) -> np.ndarray:
    """Validates int8 calibration inputs and returns at most ``limit`` of them as float32."""
    if data is None:
        raise errors.InvalidArgumentError(
            "representative_data",
            None,
            "an array of preprocessed model inputs (required for mode='int8')",
        )
    data = np.asarray(data)
    expected = tuple(model.input_shape[1:])
    # Compare per-sample shapes only (None dims in the model accept anything) so that a
    # missing batch axis or HWC/CHW mix-up is reported here, not deep inside the converter.
    ok = (
        data.ndim == len(expected) + 1
        and len(data) > 0
        and all(e is None or e == d for e, d in zip(expected, data.shape[1:], strict=True))
    )
    if not ok:
        raise errors.InvalidArgumentError(
            "representative_data",
            f"array of shape {data.shape}",
            f"a non-empty array of shape (N, {', '.join(map(str, expected))})",
        )
    if len(data) > limit:
        # A seeded random subset: user arrays may be sorted by class, and calibrating on the
        # first `limit` samples would then see a single class.
        idx = np.sort(np.random.default_rng(0).choice(len(data), limit, replace=False))
        data = data[idx]
    return data.astype(np.float32, copy=False)


def _one_sample_batches(data: np.ndarray) -> Iterator[list[np.ndarray]]:
    # The converter's calibrator expects one list of input arrays per step, batch of one.
    for i in range(len(data)):
        yield [data[i : i + 1]]


def tflite_size(model_content: bytes | str | os.PathLike) -> tuple[int, int]:
    """Returns the raw size and the gzip-compressed size (level 9) of a TFLite model.

    The gzip size is what pruning buys on disk / over the air: zeroed weights stay in the
    flatbuffer as dense zeros unless sparsity encoding is used, but they compress well.

    Args:
        model_content: Flatbuffer bytes, or the path of a ``.tflite`` file.

    Returns:
        ``(raw_bytes, gzip_bytes)``.

    Example:
        >>> raw, gz = tflite_size(b"\\x00" * 1000)
        >>> raw, gz < raw
        (1000, True)
    """
    if isinstance(model_content, bytes | bytearray | memoryview):
        data = bytes(model_content)
    elif isinstance(model_content, str | os.PathLike):
        with open(model_content, "rb") as f:
            data = f.read()
    else:
        raise errors.InvalidArgumentError(
            "model_content", type(model_content).__name__, "bytes or a path to a .tflite file"
        )
    # mtime=0 makes the compressed size (and bytes) independent of the current time.
    return len(data), len(gzip.compress(data, compresslevel=9, mtime=0))


__all__ = ["MODES", "convert", "tflite_size"]
