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

import dataclasses
import gzip
import logging
import os
import warnings
from collections.abc import Iterator

import numpy as np

from pocketflow_tf import calibration, errors, inputs, options
from pocketflow_tf.compat import keras, tf

logger = logging.getLogger(__name__)

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

    With ``mode="int8"``, a tensor that is constant on the calibration data (a dead ReLU,
    a channel left dead by pruning) gets a degenerate range from the calibrator, and its
    producer a requantization scale XNNPACK -- LiteRT's default CPU delegate, on Android
    too -- refuses, so the file would not load. Such files are re-quantized with those
    ranges widened to what XNNPACK runs (see :func:`int8_scale_problems`); the widening
    keeps the tensor's calibrated values exact and logs the layers at INFO. When that is not
    possible (a QAT model's trained ranges), the file is returned as converted, with a
    warning naming the op, and verification refuses it with the same reason.

    Returns:
        The flatbuffer bytes.

    Raises:
        InvalidArgumentError: On an unknown ``mode``, a missing or ill-shaped
            ``representative_data`` for int8, ``int8_io`` outside int8, or a bad
            ``num_calibration``.
        UnsupportedModelError: When the converter fails (the message names the mode and
            gives the converter's error lines), for a layer known to convert into a file
            LiteRT cannot run (named; e.g. ``GroupNormalization``), or for ``mode="int8"``
            on a model with several inputs.

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
    options.check_integer("num_calibration", num_calibration, low=1)
    inputs.finite_weights(model)  # a diverged model: say NaN weights, not a failed verify
    _refuse_unconvertible_layers(model, mode)

    calib = (
        _calibration_subset(model, representative_data, num_calibration) if mode == "int8" else None
    )
    converter = _converter(model, mode, calib, int8_io=int8_io, sparse=sparse)
    with warnings.catch_warnings():
        # Emitted for every int8 conversion: it is about the legacy `quantized_input_stats`
        # option, which the representative data set replaces.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        try:
            content = bytes(converter.convert())
        except (MemoryError, tf.errors.ResourceExhaustedError):
            raise  # the machine, not the model: a search retries such a trial elsewhere
        except Exception as e:  # noqa: BLE001  (ConverterError, RuntimeError, ValueError...)
            # The converter fails with a page of MLIR locations (an op without a TFLite
            # kernel) or, in int8, with the calibrating interpreter's RuntimeError; neither
            # says which export failed. The whole message stays on the chained exception.
            raise errors.UnsupportedModelError(
                f"TFLite conversion of model {model.name!r} in mode {mode!r} failed: "
                f"{_converter_message(e)}"
            ) from e
        if mode == "int8":
            content = _fit_ranges_to_xnnpack(model, calib, content, int8_io=int8_io, sparse=sparse)
    return content


#: Layer classes the converter turns into a file LiteRT cannot run, with the reason (checked
#: with TF 2.21 and LiteRT 2.3.0, in all four modes; ``test_tflite_export`` re-checks it, so
#: that the refusal is lifted when the converter is fixed).
_UNCONVERTIBLE_LAYERS = {
    # tf-keras computes the group moments with `tf.nn.weighted_moments`, whose
    # `divide_no_nan` the converter lowers, under a dynamic batch dimension, to BROADCAST_TO
    # ops with an empty target shape: LiteRT fails to prepare them ("Output shape must be
    # broadcastable from input shape") at every batch size, and int8 calibration fails on
    # them. A model fixed to batch 1 converts but then runs at batch 1 only.
    "GroupNormalization": (
        "TF's converter lowers its moments to BROADCAST_TO ops that LiteRT cannot run with a "
        "dynamic batch size",
        "LayerNormalization or BatchNormalization",
    ),
}


def _refuse_unconvertible_layers(model: keras.Model, mode: str) -> None:
    """Refuses, by name, a model holding a layer of :data:`_UNCONVERTIBLE_LAYERS`.

    Nested models and wrapped layers (a QAT wrapper's inner layer) are searched too.
    """
    for module in model.submodules:
        kind = type(module).__name__
        if isinstance(module, keras.layers.Layer) and kind in _UNCONVERTIBLE_LAYERS:
            reason, instead = _UNCONVERTIBLE_LAYERS[kind]
            raise errors.UnsupportedModelError(
                f"layer {module.name!r} ({kind}) of model {model.name!r} cannot be exported "
                f"to TFLite (mode {mode!r}): {reason}. Supported: models without {kind} "
                f"layers, e.g. with {instead} in its place"
            )


def _converter_message(e: BaseException, limit: int = 600) -> str:
    """The useful lines of a converter failure: its ``error:`` lines, else its first lines."""
    text = str(e) or type(e).__name__
    found = []
    for line in text.splitlines():
        line = line.strip()
        # MLIR prefixes each error with the source location of the traced call.
        _, sep, what = line.partition("error: ")
        what = what.strip() if sep else ""
        if line.startswith("TF Select ops:"):
            what = line
        if what and what not in found and not what.startswith("failed while converting"):
            found.append(what)
    if not found:
        found = [line.strip() for line in text.splitlines() if line.strip()][:3]
    message = "; ".join(found)
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _converter(
    model: keras.Model, mode: str, calib: np.ndarray | None, *, int8_io: bool, sparse: bool
) -> tf.lite.TFLiteConverter:
    """The configured converter of :func:`convert` (arguments already validated)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [] if mode == "float" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations

    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.representative_dataset = lambda: _one_sample_batches(calib)
        # INT8-only ops: an op without an int8 kernel fails the conversion loudly instead of
        # silently staying float (which would make "int8" size/latency figures a lie).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    # "dynamic" is Optimize.DEFAULT with no representative data set; a representative data
    # set would turn it into float-fallback full-integer quantization, hence int8 only.
    return converter


def _calibration_subset(model: keras.Model, data: np.ndarray | None, limit: int) -> np.ndarray:
    """Validates int8 calibration inputs and returns at most ``limit`` of them as float32."""
    if data is None:
        raise errors.InvalidArgumentError(
            "representative_data",
            None,
            "an array of preprocessed model inputs (required for mode='int8')",
        )
    n_inputs = len(model.inputs or [None])  # a subclassed model has no .inputs: one input
    if n_inputs != 1:
        # Calibration feeds one array; which array goes to which input is not guessed.
        raise errors.UnsupportedModelError(
            f"mode='int8' calibrates a model with exactly one input; model {model.name!r} "
            f"has {n_inputs} inputs"
        )
    # The project's one image check: uint8 scaled to [0, 1] as the models are fed, NaN/inf
    # and unaccepted dtypes refused by name (a NaN would silently poison the ranges).
    data = inputs.images(data, name="representative_data")
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
    # A seeded random subset (all of it, in order, when there are no more than `limit`).
    data = calibration.sample(data, n=limit, seed=0, in_order=True)[0]
    return data.astype(np.float32, copy=False)


def _one_sample_batches(data: np.ndarray) -> Iterator[list[np.ndarray]]:
    # The converter's calibrator expects one list of input arrays per step, batch of one.
    for i in range(len(data)):
        yield [data[i : i + 1]]


# --- int8 scales that XNNPACK can run -----------------------------------------------------
#
# LiteRT hands every op it can to its XNNPACK delegate by default (on Android as here), and
# XNNPACK refuses, when the interpreter allocates tensors, int8 ops whose scale ratios fall
# outside what its fixed-point kernels handle (XNNPACK src/operators/*.c): the whole file
# then fails to load ("failed to create XNNPACK runtime"). The converter does not know these
# limits. They are broken in practice by a tensor that is constant on the calibration data
# -- a dead ReLU, or a channel pruned down to a dead one: the calibrator records the range
# [0, 0], the quantizer gives it a scale of ~7.8e-9, and the convolution producing it needs
# a requantization scale (input_scale * filter_scale / output_scale) of ~1000, above
# XNNPACK's 256.

#: Op name -> (kind, low, high): the ratio XNNPACK accepts is in ``[low, high)``. ``gemm``:
#: input_scale * max(filter_scale) / output_scale; ``binary``: each input_scale /
#: output_scale; ``mul``: input_scale_a * input_scale_b / output_scale; ``unary``:
#: input_scale / output_scale.
_XNNPACK_RATIO_LIMITS = {
    "CONV_2D": ("gemm", 0.0, 2.0**8),
    "DEPTHWISE_CONV_2D": ("gemm", 0.0, 2.0**8),
    "FULLY_CONNECTED": ("gemm", 0.0, 2.0**8),
    "TRANSPOSE_CONV": ("gemm", 0.0, 2.0**8),
    "ADD": ("binary", 2.0**-10, 2.0**8),
    "SUB": ("binary", 2.0**-10, 2.0**8),
    "MUL": ("mul", 2.0**-16, 2.0**8),
    "MEAN": ("unary", 2.0**-8, 2.0**8),
    "AVERAGE_POOL_2D": ("unary", 2.0**-8, 2.0**8),
}

#: A repaired tensor gets twice the scale its limit needs, so that float rounding in the
#: quantizer cannot leave it on the boundary.
_SCALE_MARGIN = 2.0

#: Re-quantizations tried by :func:`_fit_ranges_to_xnnpack`: widening one tensor raises the
#: ratios of the ops reading it, which may need a second tensor widened (a dead ReLU's
#: max-pool and flatten, then the dense layer reading them).
_MAX_REPAIR_ROUNDS = 6


@dataclasses.dataclass(frozen=True)
class Int8ScaleProblem:
    """One int8 op whose scales XNNPACK (LiteRT's default CPU delegate) refuses.

    Attributes:
        op_index: The op's index in the flatbuffer's main subgraph.
        op: The TFLite op name, e.g. ``"CONV_2D"``.
        layer: The Keras layer the op's output belongs to (read from the tensor name; the
            whole tensor name when it names no layer).
        ratio: The scale ratio XNNPACK checks (see ``limit``).
        limit: What XNNPACK accepts, e.g. ``"requantization scale < 256"``.
        tensor: The tensor whose scale is too small for the op (the one to widen).
        tensor_scale: Its scale.
        min_scale: The scale that tensor is given by :func:`convert`'s repair: for a
            convolution's output, its accumulator step (requantization scale 1, the finest
            step the op can produce); otherwise twice what the limit needs.
        float_tensor: The name of the same tensor in the float model (differs from
            ``tensor`` at the model's outputs, where the converter renames the int8 tensor).

    Example:
        >>> p = Int8ScaleProblem(2, "CONV_2D", "dead", 1017.0, "requantization scale < 256",
        ...                      "model/dead/Relu", 7.8e-09, 1.6e-08, "model/dead/Relu")
        >>> str(p).split(":")[0]
        "CONV_2D of layer 'dead' (op 2)"
    """

    op_index: int
    op: str
    layer: str
    ratio: float
    limit: str
    tensor: str
    tensor_scale: float
    min_scale: float
    float_tensor: str

    def __str__(self) -> str:
        hint = ""
        if self.tensor_scale * 255 <= 1e-5:
            # The calibrator's range for a constant-zero tensor is [0, 0]; the quantizer
            # turns that into a 2e-6 wide one (scale 7.8e-9).
            hint = " (a constant on the calibration data: a dead ReLU or dead channels?)"
        return (
            f"{self.op} of layer '{self.layer}' (op {self.op_index}): {self.limit} "
            f"but it is {self.ratio:.4g}; tensor '{self.tensor}' has scale "
            f"{self.tensor_scale:.3g}{hint}"
        )


def _layer_of(tensor_name: str) -> str:
    # Converter tensor names read "model/<layer>/Op;model/<layer>/Op2;...".
    parts = tensor_name.split(";")[0].split("/")
    return parts[1] if len(parts) > 2 else tensor_name


def int8_scale_problems(model_content: bytes | str | os.PathLike) -> list[Int8ScaleProblem]:
    """Lists the int8 ops of a TFLite file whose scales XNNPACK refuses to run.

    XNNPACK, the CPU delegate LiteRT applies by default (on Android too), checks scale
    ratios when the interpreter allocates tensors: a convolution or fully-connected layer
    needs ``input_scale * filter_scale / output_scale < 256``, an ``ADD`` each
    ``input_scale / output_scale`` in ``[2**-10, 2**8)``, a ``MUL`` the product ratio in
    ``[2**-16, 2**8)``, a ``MEAN`` or average pool its ratio in ``[2**-8, 2**8)``. One op
    outside its range and the whole file fails to load ("failed to create XNNPACK
    runtime"). Float files have no such ops and give ``[]``.

    Args:
        model_content: Flatbuffer bytes, or the path of a ``.tflite`` file.

    Returns:
        The problems, in op order; empty when XNNPACK accepts every checked op.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
        >>> int8_scale_problems(convert(m, "int8", representative_data=x))
        []
    """
    # TF-internal flatbuffer readers (tensorflow.lite.tools / .python, shipped with the pip
    # package): TF has no public API to read a .tflite file's quantization parameters.
    from tensorflow.lite.python import schema_util
    from tensorflow.lite.tools import flatbuffer_utils

    if isinstance(model_content, str | os.PathLike):
        with open(model_content, "rb") as f:
            model_content = f.read()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_content))
    graph = model.subgraphs[0]
    op_names = {v: k for k, v in vars(_builtin_operators()).items() if not k.startswith("_")}
    ops = [
        (
            op_names.get(
                schema_util.get_builtin_code_from_operator_code(model.operatorCodes[o.opcodeIndex])
            ),
            o,
        )
        for o in graph.operators
    ]

    def scales(i: int) -> np.ndarray | None:
        q = graph.tensors[i].quantization if i >= 0 else None
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        return np.asarray(q.scale, dtype=np.float64)

    def name(i: int) -> str:
        return graph.tensors[i].name.decode(errors="replace")

    def float_name(i: int) -> str:
        # The converter keeps a model input's / output's name for the float tensor and
        # renames the int8 one next to it (QUANTIZE / DEQUANTIZE at the model's edges).
        for op_name, o in ops:
            if op_name == "DEQUANTIZE" and list(o.inputs) == [i]:
                return name(o.outputs[0])
            if op_name == "QUANTIZE" and list(o.outputs) == [i] and scales(o.inputs[0]) is None:
                return name(o.inputs[0])
        return name(i)

    problems = []
    for index, (op_name, o) in enumerate(ops):
        if op_name not in _XNNPACK_RATIO_LIMITS:
            continue
        kind, low, high = _XNNPACK_RATIO_LIMITS[op_name]
        if kind == "gemm":
            x_i, w_i = (2, 1) if op_name == "TRANSPOSE_CONV" else (0, 1)
            ins = [o.inputs[x_i]]
            s_in, s_w = scales(o.inputs[x_i]), scales(o.inputs[w_i])
            if s_in is None or s_w is None:
                continue
            factor = float(s_in[0] * s_w.max())
            limit = f"XNNPACK needs requantization scale (input * filter / output) < {high:g}"
        elif kind == "mul":
            ins = list(o.inputs[:2])
            s_a, s_b = scales(ins[0]), scales(ins[1])
            if s_a is None or s_b is None:
                continue
            factor = float(s_a[0] * s_b[0])
            limit = f"XNNPACK needs input_a * input_b / output scale in [{low:g}, {high:g})"
        else:
            ins = list(o.inputs[:2]) if kind == "binary" else [o.inputs[0]]
            limit = f"XNNPACK needs input / output scale in [{low:g}, {high:g})"
            factor = None
        out = o.outputs[0]
        s_out = scales(out)
        if s_out is None:
            continue
        s_out = float(s_out[0])
        checks = []  # (ratio, tensor to widen, scale it needs)
        if factor is not None:
            ratio = factor / s_out
            if ratio >= high:
                # Output step = the accumulator's step (requantization scale 1): the
                # finest the op can resolve, with 255 steps of headroom.
                checks.append((ratio, out, factor))
            elif ratio < low:
                # Only MUL has a lower bound here: widen its finer input.
                fine = min(ins, key=lambda i: scales(i)[0])
                other = float(factor / scales(fine)[0])
                checks.append((ratio, fine, low * s_out / other * _SCALE_MARGIN))
        else:
            for i in ins:
                s_i = scales(i)
                if s_i is None:
                    continue
                ratio = float(s_i[0]) / s_out
                if ratio >= high:
                    checks.append((ratio, out, float(s_i[0]) / high * _SCALE_MARGIN))
                elif ratio < low:
                    checks.append((ratio, i, low * s_out * _SCALE_MARGIN))
        for ratio, t, need in checks:
            problems.append(
                Int8ScaleProblem(
                    op_index=index,
                    op=op_name,
                    layer=_layer_of(name(out)),
                    ratio=float(ratio),
                    limit=limit,
                    tensor=name(t),
                    tensor_scale=float(scales(t)[0]),
                    min_scale=float(need),
                    float_tensor=float_name(t),
                )
            )
    return problems


def _builtin_operators():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated.BuiltinOperator


def _fit_ranges_to_xnnpack(
    model: keras.Model, calib: np.ndarray, content: bytes, *, int8_io: bool, sparse: bool
) -> bytes:
    """Re-quantizes an int8 file whose scales XNNPACK refuses, with those tensors widened.

    Widening is exact for what the file computes on the calibration data: the tensors
    concerned are (near-)constant there, the widened range still holds their values and
    keeps zero exactly representable. For the op that refused, it only gives up resolution
    the op could not use: a requantization scale >= 256 means a whole int8 output range is
    narrower than one step of the int32 accumulator, so every non-zero result saturated;
    an ``ADD`` input below 2**-10 of the output scale is worth under a quarter of an output
    step. The new file is then verified like any other by :mod:`tflite_verify`.

    Only post-training calibrated ranges can be widened; a QAT model's ranges come from its
    trained fake-quant nodes, and the file is returned as it is (verification then refuses
    it, naming the op). So is it when the problems remain after
    :data:`_MAX_REPAIR_ROUNDS` rounds.
    """
    problems = int8_scale_problems(content)
    if not problems:
        return content
    try:
        repaired, problems = _requantize_widened(model, calib, problems, int8_io, sparse)
    except Exception as e:  # noqa: BLE001  (a failed repair keeps the original file)
        # Best effort through TF-internal calls: whatever fails, the original file stands
        # and verification names the op XNNPACK refuses.
        logger.warning("int8 range repair failed (%s: %s)", type(e).__name__, e)
        repaired = None
    if repaired is not None and not problems:
        return repaired
    logger.warning(
        "XNNPACK (LiteRT's default CPU delegate) will refuse this int8 model: %s",
        "; ".join(map(str, problems)),
    )
    return content


def _requantize_widened(
    model: keras.Model,
    calib: np.ndarray,
    problems: list[Int8ScaleProblem],
    int8_io: bool,
    sparse: bool,
) -> tuple[bytes | None, list[Int8ScaleProblem]]:
    # The steps of TFLiteConverter.convert() for post-training int8 (TF 2.21, lite.py
    # _optimize_tflite_model): calibrate -> mlir_quantize -> [mlir_sparsify] -> deduplicate
    # buffers; the calibrated ranges are edited between the first two. Unedited, this gives
    # the same tensors, scales and weights as convert() (checked when this was written).
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter = _converter(model, "int8", calib, int8_io=int8_io, sparse=False)
    converter._experimental_calibrate_only = True  # noqa: SLF001  (no public equivalent)
    calibrated = flatbuffer_utils.convert_bytearray_to_object(bytearray(converter.convert()))
    ranges = {}
    for t in calibrated.subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.min is not None and q.max is not None and len(q.min) == 1:
            ranges[t.name.decode(errors="replace")] = q
    io_type = tf.int8 if int8_io else tf.float32
    needed: dict[str, float] = {}
    for _ in range(_MAX_REPAIR_ROUNDS):
        for p in problems:
            if p.float_tensor not in ranges:
                # No calibrated range to edit (a QAT model, or a tensor the calibrator does
                # not record): give up, the caller reports the problems.
                return None, problems
            needed[p.float_tensor] = max(needed.get(p.float_tensor, 0.0), p.min_scale)
        for tensor, scale in needed.items():
            q = ranges[tensor]
            lo, hi = min(float(q.min[0]), 0.0), max(float(q.max[0]), 0.0)
            if hi - lo < 255.0 * scale:
                # Extend on the side away from zero, so that zero stays where it was.
                if hi == 0.0 and lo < 0.0:
                    lo = hi - 255.0 * scale
                else:
                    hi = lo + 255.0 * scale
                q.min = np.array([lo], dtype=np.float32)
                q.max = np.array([hi], dtype=np.float32)
        content = tfl_convert.mlir_quantize(
            bytes(flatbuffer_utils.convert_object_to_bytearray(calibrated)),
            input_data_type=io_type,
            output_data_type=io_type,
        )
        if sparse:
            content = tfl_convert.mlir_sparsify(content)
        content = bytes(tfl_convert.deduplicate_readonly_buffers(content))
        problems = int8_scale_problems(content)
        if not problems:
            logger.info(
                "int8: widened the calibrated range of %d tensor(s) so that XNNPACK runs them: %s",
                len(needed),
                ", ".join(f"{_layer_of(t)} (scale >= {s:.3g})" for t, s in needed.items()),
            )
            return content, []
    return None, problems


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


__all__ = ["MODES", "Int8ScaleProblem", "convert", "int8_scale_problems", "tflite_size"]
