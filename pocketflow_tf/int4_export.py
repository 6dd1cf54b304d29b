"""Mixed int4 / int8 ``.tflite`` files, written by LiteRT's own quantizer, per layer.

:func:`pocketflow_tf.tflite_export.convert` stores every weight as int8, whatever bit-width
a layer was allocated: a 4-bit layer's levels only show under gzip. Here the layers
allocated 4 bits or fewer are stored as int4 in the file (two weights a byte) by
``litert-quantizer`` (formerly ``ai-edge-quantizer``; 0.11.0 with ``ai-edge-litert`` 2.3.0,
installed next to TF 2.21 in the same environment): its static recipe with int4 weights
and int8 activations (``static_wi4_ai8``) for ``CONV_2D`` and ``FULLY_CONNECTED``, and
``static_wi8_ai8`` for everything else.

Facts this module relies on (litert-quantizer 0.11.0, checked when it was written):

* ``static_wi4_ai8`` exists only for ``CONV_2D`` and ``FULLY_CONNECTED`` (its
  ``default_policy``). A ``DEPTHWISE_CONV_2D`` (Keras ``DepthwiseConv2D``) or any other
  kernel op allocated <= 4 bits therefore stays int8: it is listed in
  :attr:`Int4Export.fallbacks` with the reason, never dropped silently. (The quantizer
  itself skips an unsupported config without a word when it is given for all ops, hence
  int4 is asked here op by op.)
* Weights are symmetric per output channel, levels ``-7..7``; activations int8 per
  tensor, calibrated on ``representative_data``. The file's input and output are int8 too;
  :class:`pocketflow_tf.tflite_verify.TFLiteRunner` quantizes and dequantizes them.
* LiteRT's Python API reports an int4 tensor as ``int8`` (unpacked); the stored type is
  read from the flatbuffer (:func:`kernel_types`).

Each int4 layer is checked in the produced file (its kernel tensor must be ``INT4``), and
the file is verified against the Keras model like every export
(:func:`pocketflow_tf.tflite_verify.verify`, int8 thresholds by default).

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 3, name="c"),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="fc")])
    >>> x = np.random.default_rng(0).random((16, 4, 4, 1), dtype=np.float32)
    >>> out = convert(m, {"c": 4, "fc": 8}, x)
    >>> [(s.layer, s.stored) for s in out.layers]
    [('c', 'INT4'), ('fc', 'INT8')]
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketflow_tf import (
    errors,
    fake_quant,
    graph_rebuild,
    interop,
    options,
    qat,
    qat_freeze,
    tflite_export,
    tflite_load,
    tflite_verify,
)
from pocketflow_tf.compat import keras

logger = logging.getLogger(__name__)

#: TFLite kernel ops whose weights the quantizer can store as int4 (``static_wi4_ai8``).
INT4_OPS = ("CONV_2D", "FULLY_CONNECTED")
#: TFLite ops whose input 1 is a weight kernel (the layers a bit allocation can name).
KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
#: Layers allocated this many bits or fewer are stored as int4 where their op allows it.
INT4_MAX_BITS = 4
#: Bits a layer can be allocated: those of quantization-aware training.
ACCEPTED_BITS = qat.WEIGHT_BITS


@dataclasses.dataclass(frozen=True)
class LayerStorage:
    """How one layer's kernel is stored in the file.

    Attributes:
        layer: The Keras layer name.
        op: Its TFLite op, e.g. ``"CONV_2D"``.
        bits: The bits it was allocated.
        stored: The kernel tensor's type read back from the file (``"INT4"``, ``"INT8"``).
        kernel_bytes: Bytes of the stored kernel (int4: two weights a byte).
        fallback: Why a layer allocated <= 4 bits is not int4 (``None`` otherwise).
        levels: Most distinct integer values in one output channel of the stored kernel,
            read back from the file (``None`` for a float kernel).
        max_levels: What the allocation allows there: ``2**bits - 1`` for a
            quantization-aware model's layer, 15 (``-7..7``) for an int4 layer of a float
            model, 255 for int8 storage.

    Example:
        >>> LayerStorage("dw", "DEPTHWISE_CONV_2D", 4, "INT8", 144, "no int4 kernel").to_dict()["op"]
        'DEPTHWISE_CONV_2D'
    """

    layer: str
    op: str
    bits: int
    stored: str
    kernel_bytes: int
    fallback: str | None = None
    levels: int | None = None
    max_levels: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict.

        Example:
            >>> LayerStorage("c", "CONV_2D", 4, "INT4", 216).to_dict()["stored"]
            'INT4'
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Int4Export:
    """A mixed int4 / int8 flatbuffer and what was measured on it.

    Attributes:
        content: The ``.tflite`` bytes.
        layers: One :class:`LayerStorage` per kernel op, in file order.
        bytes: Raw size.
        bytes_gzip: gzip level-9 size (:func:`pocketflow_tf.tflite_export.tflite_size`).
        report: The verification against the Keras model (``None`` from :func:`convert`).

    Example:
        >>> e = Int4Export(b"", [LayerStorage("dw", "DEPTHWISE_CONV_2D", 4, "INT8", 144,
        ...                                   "no int4 kernel")], 0, 0)
        >>> [s.layer for s in e.fallbacks]
        ['dw']
    """

    content: bytes
    layers: list[LayerStorage]
    bytes: int
    bytes_gzip: int
    report: tflite_verify.VerificationReport | None = None

    @property
    def fallbacks(self) -> list[LayerStorage]:
        """Layers allocated <= 4 bits that the file stores as int8 (each says why).

        Example:
            >>> Int4Export(b"", [], 0, 0).fallbacks
            []
        """
        return [s for s in self.layers if s.fallback is not None]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the bytes, JSON-ready.

        Example:
            >>> sorted(Int4Export(b"", [], 0, 0).to_dict())
            ['bytes', 'bytes_gzip', 'fallbacks', 'layers', 'report']
        """
        return {
            "bytes": self.bytes,
            "bytes_gzip": self.bytes_gzip,
            "layers": [s.to_dict() for s in self.layers],
            "fallbacks": [s.layer for s in self.fallbacks],
            "report": None if self.report is None else self.report.to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class _KernelOp:
    index: int
    op: str
    layer: str
    scope: str  # the quantizer's name for the op (its output tensor names)


def _schema():
    # The flatbuffer schema LiteRT ships (TensorType, BuiltinOperator); no TensorFlow needed.
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _kernels(content: bytes) -> list[tuple[int, str, str, str, int, str, int]]:
    """``(op index, op, kernel tensor name, stored type, stored bytes, op scope, kernel
    tensor index)`` of each kernel op; the scope is the quantizer's name for the op (its
    output tensor names)."""
    from litert_quantizer.utils import tfl_flatbuffer_utils

    model = tfl_flatbuffer_utils.read_model(bytes(content))
    graph = model.subgraphs[0]
    op_names = _names(_schema().BuiltinOperator)
    type_names = _names(_schema().TensorType)
    out = []
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        # Op codes above 127 live in builtinCode only; deprecatedBuiltinCode caps at 127.
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if name not in KERNEL_OPS or len(op.inputs) < 2:
            continue
        t = graph.tensors[op.inputs[1]]
        data = model.buffers[t.buffer].data
        tname = t.name.decode(errors="replace") if isinstance(t.name, bytes) else t.name
        scope = tfl_flatbuffer_utils.get_op_scope(op, graph.tensors)
        out.append(
            (
                index,
                name,
                tname,
                type_names[t.type],
                0 if data is None else len(data),
                scope,
                op.inputs[1],
            )
        )
    return out


def _kernel_ops(content: bytes, layer_names: set[str]) -> list[_KernelOp]:
    """The kernel ops of a flatbuffer, each with the Keras layer its kernel tensor names.

    The converter names a kernel tensor ``<model>/<layer>/Conv2D`` (several such names
    joined by ``;`` when ops were fused), also for the last layer, whose output tensor is
    only ``StatefulPartitionedCall:0``: the kernel's name is the one that always holds
    the layer. A kernel naming no kernel layer, or several, is labelled by its tensor name
    (stored int8; naming it in ``bits`` is refused with the labels that exist).
    """
    out = []
    for index, name, kernel, _, _, scope, _ in _kernels(content):
        parts = {p for full in kernel.split(";") for p in full.split("/")}
        owners = parts & layer_names
        if len(owners) != 1:
            logger.info("int4 export: no single Keras layer owns %s kernel %r", name, kernel)
        out.append(_KernelOp(index, name, owners.pop() if len(owners) == 1 else kernel, scope))
    return out


def kernel_types(content: bytes) -> list[tuple[str, str, str, int]]:
    """``(op, kernel tensor name, stored type, stored bytes)`` of every kernel op of a file.

    The type is the flatbuffer's own (``INT4``, ``INT8``, ``FLOAT32``...): LiteRT's Python
    API shows int4 tensors unpacked as ``int8``.

    Args:
        content: The ``.tflite`` bytes.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")], name="m")
        >>> kernel_types(tflite_export.convert(m))
        [('FULLY_CONNECTED', 'm/fc/MatMul', 'FLOAT32', 32)]
    """
    return [(op, name, dtype, size) for _, op, name, dtype, size, _, _ in _kernels(content)]


def kernel_levels(content: bytes) -> list[int | None]:
    """Most distinct integer values in one output channel of each kernel op's kernel.

    Read back from the file through LiteRT itself (its interpreter unpacks int4 tensors
    into int8 arrays), in the order of :func:`kernel_types`; ``None`` for a float kernel.
    Output channels are axis 0 (``CONV_2D``, ``FULLY_CONNECTED``, ``TRANSPOSE_CONV``), the
    last axis for ``DEPTHWISE_CONV_2D``.

    Args:
        content: The ``.tflite`` bytes.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, name="c"),
        ...                       keras.layers.Flatten(), keras.layers.Dense(2, name="fc")])
        >>> x = np.random.default_rng(0).random((16, 4, 4, 1), dtype=np.float32)
        >>> [n <= 15 for n in kernel_levels(convert(m, 4, x).content)]
        [True, True]
    """
    interpreter = tflite_load.open_interpreter(bytes(content))
    out: list[int | None] = []
    for _, op, _, dtype, _, _, tensor in _kernels(content):
        if dtype not in ("INT4", "INT8"):
            out.append(None)
            continue
        kernel = np.asarray(interpreter.get_tensor(tensor))
        if op == "DEPTHWISE_CONV_2D":
            kernel = np.moveaxis(kernel, -1, 0)
        rows = kernel.reshape(kernel.shape[0], -1)
        out.append(max(len(np.unique(r)) for r in rows))
    return out


def default_bits(model: keras.Model) -> int | None:
    """The ``bits`` that deploy ``model`` as int4: ``None`` (its own allocation) for a
    quantization-aware model, else ``4`` (every kernel, post-training).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> default_bits(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        4
    """
    return None if qat.is_quantized(model) else INT4_MAX_BITS


def _check_bits(bits: Any, accepted_layers: list[str]) -> dict[str, int]:
    if isinstance(bits, int | np.integer) and not isinstance(bits, bool):
        if bits not in ACCEPTED_BITS:
            raise errors.InvalidArgumentError("bits", bits, f"bits in {ACCEPTED_BITS}")
        bits = dict.fromkeys(accepted_layers, int(bits))
    if not isinstance(bits, Mapping):
        raise errors.InvalidArgumentError(
            "bits",
            type(bits).__name__,
            "a mapping {layer name: bits}, or one bit-width for every kernel layer",
        )
    checked = {}
    for layer, b in bits.items():
        if layer not in accepted_layers:
            raise errors.InvalidArgumentError(
                "bits", {layer: b}, f"names of layers with a weight kernel: {accepted_layers}"
            )
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b not in ACCEPTED_BITS:
            raise errors.InvalidArgumentError("bits", {layer: b}, f"bits in {ACCEPTED_BITS}")
        checked[layer] = int(b)
    return checked


def convert(
    model: keras.Model,
    bits: Mapping[str, int] | int | None,
    representative_data: np.ndarray,
    *,
    num_calibration: int = 256,
) -> Int4Export:
    """Converts a Keras model to a ``.tflite`` with int4 kernels where ``bits`` <= 4.

    Layers not in ``bits`` are stored as int8. Every activation is int8, calibrated on
    ``representative_data``. A float model's kernels are quantized by min-max to the int4
    levels ``-7..7`` whatever their allocation <= 4 (a 2- or 3-bit allocation gets the
    finer int4 levels: the file cannot hold fewer bits).

    A quantization-aware model (:func:`pocketflow_tf.qat.quantize_model`, trained) starts
    the file from its learned integer levels: it is frozen
    (:func:`pocketflow_tf.qat_freeze.freeze`), its fake-quant steps dropped (activations
    are calibrated again), ``bits`` defaults to its own allocation
    (:func:`pocketflow_tf.qat.weight_bits_of`), and layers it quantized with one range per
    tensor (``Dense``) get one int4 scale per tensor, so that the file's int4 levels are the
    model's ``b``-bit levels (exactly for ``b = 4`` and ``b = 2``; ``b = 3`` levels land on
    the nearest int4 levels). litert-quantizer's ``dequantized_weight_recovery`` cannot do
    this: the QAT weights sit on the int8 grid (:func:`pocketflow_tf.qat.low_bit_weights`),
    not on a uniform 4-bit one, and it refuses them.

    Args:
        model: A single-input Keras model (tf-keras, or Keras 3: rebuilt in tf-keras
            first), float or quantization-aware.
        bits: ``{layer name: bits}`` for layers with a weight kernel (``Conv2D``, ``Dense``,
            ``DepthwiseConv2D``...), bits in :data:`ACCEPTED_BITS`; or one bit-width for
            every such layer (``4``: post-training int4). ``None`` for a QAT model: its own
            allocation.
        representative_data: Calibration inputs, preprocessed as for ``model.predict``.
        num_calibration: At most this many of them are used (a seeded subset).

    Returns:
        The :class:`Int4Export` (not yet verified: see :func:`export`).

    Raises:
        InvalidArgumentError: On an unknown layer name, a layer without a weight kernel,
            bits outside :data:`ACCEPTED_BITS`, bits that differ from a QAT model's own, or
            bad calibration data.
        VerificationError: If a layer meant for int4 is not int4 in the produced file.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> convert(m, {"fc": 9}, np.zeros((4, 4), np.float32))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `bits`: {'fc': 9}. Accepted: bits in (2, 3, 4, 5, 6, 7, 8).
    """
    model = interop.to_framework(model)[0]
    per_tensor: set[str] = set()
    ranges: dict[str | None, tuple[float, float]] = {}
    from_qat = qat.is_quantized(model)
    if from_qat:
        own = qat.weight_bits_of(model)
        if bits is not None and not isinstance(bits, Mapping):
            raise errors.InvalidArgumentError(
                "bits", bits, f"None or the QAT model's own allocation {own}"
            )
        if bits is not None and {k: v for k, v in bits.items() if v != 8} != {
            k: v for k, v in own.items() if v != 8
        }:
            raise errors.InvalidArgumentError(
                "bits", dict(bits), f"None or the QAT model's own allocation {own}"
            )
        bits = own
        per_tensor = _per_tensor_layers(model)
        frozen = qat_freeze.freeze(model)
        ranges = _activation_ranges(frozen)
        model = _without_fake_quant(frozen)
    elif bits is None:
        raise errors.InvalidArgumentError(
            "bits", None, "a mapping {layer name: bits} (None only for a QAT model)"
        )
    return _convert(model, bits, representative_data, num_calibration, per_tensor, from_qat, ranges)


def _per_tensor_layers(qat_model: keras.Model) -> set[str]:
    # TFMOT's 8-bit scheme (and qat.BitsQuantizeConfig) gives Dense kernels one range per
    # tensor, convolutions one per output channel: the quantizer's `per_axis`.
    out = set()
    for layer in qat_model.layers:
        quantizer_ = getattr(getattr(layer, "quantize_config", None), "weight_quantizer", None)
        if quantizer_ is not None and not getattr(quantizer_, "per_axis", True):
            out.add(layer.layer.name)
    return out


def _activation_ranges(frozen: keras.Model) -> dict[str | None, tuple[float, float]]:
    """``{layer name: (min, max)}`` the QAT model learned for that layer's output (the
    FakeQuant step after it), in layer order; key ``None`` for the model's output.

    The file must clip activations where the QAT model did: ranges calibrated afresh
    differ (measured on a briefly trained convnet: top-1 agreement 0.905 with the QAT
    model, against 1.0 for the converter's int8 file, which keeps the learned ranges).
    """
    outputs = {id(t) for t in frozen.outputs}
    ranges: dict[str | None, tuple[float, float]] = {}
    for layer in frozen.layers:
        if not isinstance(layer, fake_quant.FakeQuant) or isinstance(layer.minimum, list):
            continue
        bounds = (float(layer.minimum), float(layer.maximum))
        if id(layer.output) in outputs:
            ranges[None] = bounds
        inbound = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001
        if isinstance(inbound, keras.layers.Layer):
            ranges[inbound.name] = bounds
    return ranges


def _set_ranges(
    calibration: dict[str, dict[str, Any]],
    ranges: Mapping[str | None, tuple[float, float]],
    output_names: set[str],
) -> None:
    """Puts the QAT ranges into the quantizer's calibration results, tensor by tensor.

    A tensor is named after every layer fused into its op (``m/c/Conv2D;m/c_relu/Relu``):
    the range of the latest such layer wins (``ranges`` is in layer order). The model's
    output tensor names no layer and takes ``ranges[None]``.
    """
    order = {name: i for i, name in enumerate(ranges)}
    for tensor, qsv in calibration.items():
        if tensor in output_names and None in ranges:
            bounds = ranges[None]
        else:
            parts = {p for full in tensor.split(";") for p in full.split("/")}
            owners = sorted(parts & {n for n in ranges if n is not None}, key=order.get)
            if not owners:
                continue
            bounds = ranges[owners[-1]]
        if "min" in qsv and "max" in qsv:
            qsv["min"] = np.full_like(np.asarray(qsv["min"]), bounds[0])
            qsv["max"] = np.full_like(np.asarray(qsv["max"]), bounds[1])


def _output_tensors(content: bytes) -> set[str]:
    details = tflite_load.open_interpreter(content).get_output_details()
    return {d["name"] for d in details}


def _without_fake_quant(frozen: keras.Model) -> keras.Model:
    """The frozen QAT model with its FakeQuant steps left out (same weights).

    Kept, each becomes a QUANTIZE / DEQUANTIZE pair in the file (measured: 16 extra ops and
    a file larger than the QAT model's int8 one); the quantizer sets activation ranges
    from calibration instead.
    """
    return graph_rebuild.copy(frozen, skip=lambda layer: isinstance(layer, fake_quant.FakeQuant))


def _convert(
    model: keras.Model,
    bits: Mapping[str, int],
    representative_data: np.ndarray,
    num_calibration: int,
    per_tensor: set[str],
    from_qat: bool,
    ranges: Mapping[str | None, tuple[float, float]],
) -> Int4Export:
    from litert_quantizer import qtyping, quantizer, recipe_manager

    options.check_integer("num_calibration", num_calibration, low=1)
    float_content = tflite_export.convert(model, "float")
    # Only layers with a kernel can own one (a fused kernel tensor may also name BatchNorm).
    layer_names = {
        layer.name
        for layer in model.submodules
        if isinstance(layer, keras.layers.Layer)
        and (hasattr(layer, "kernel") or hasattr(layer, "depthwise_kernel"))
    }
    ops = _kernel_ops(float_content, layer_names)
    bits = _check_bits(bits, [o.layer for o in ops])
    calib = tflite_export._calibration_subset(model, representative_data, num_calibration)  # noqa: SLF001

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8,
        weight_num_bits=8,
    )
    planned: dict[int, str | None] = {}  # op index -> fallback reason (None: int4)
    for o in ops:
        if bits.get(o.layer, 8) > INT4_MAX_BITS:
            continue
        if o.op not in INT4_OPS:
            planned[o.index] = (
                f"{o.op} has no int4 kernel in litert-quantizer (static_wi4_ai8 covers "
                f"{', '.join(INT4_OPS)}): stored as int8"
            )
            continue
        planned[o.index] = None
        # One exact scope per op: the latest matching config wins in the recipe manager.
        manager.add_static_config(
            regex="^" + re.escape(o.scope) + "$",
            operation_name=qtyping.TFLOperationName(o.op),
            activation_num_bits=8,
            weight_num_bits=4,
            weight_granularity=(
                qtyping.QuantGranularity.TENSORWISE
                if o.layer in per_tensor
                else qtyping.QuantGranularity.CHANNELWISE
            ),
        )

    q = quantizer.Quantizer(float_content, manager.get_quantization_recipe())
    signature = tflite_load.open_interpreter(float_content).get_signature_list()
    ((key, sig),) = signature.items()
    (input_name,) = sig["inputs"]
    with warnings.catch_warnings():
        # The calibrator keeps every intermediate tensor by design (its default mode) and
        # LiteRT warns about that on each such interpreter.
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        calibration = q.calibrate(
            {key: [{input_name: calib[i : i + 1]} for i in range(len(calib))]}, num_threads=1
        )
        if ranges:
            _set_ranges(calibration, ranges, set(sig["outputs"]) | _output_tensors(float_content))
        content = bytes(q.quantize(calibration, enable_progress_report=False).quantized_model)

    stored = kernel_types(content)
    levels = kernel_levels(content)
    layers = []
    for o, (op, _, dtype, size), n in zip(ops, stored, levels, strict=True):
        reason = planned.get(o.index, "")
        if reason is None and dtype != "INT4":
            raise errors.VerificationError(
                f"layer {o.layer!r} ({o.op}) was quantized to int4 but the file stores {dtype}"
            )
        b = bits.get(o.layer, 8)
        # A QAT layer's b-bit grid maps onto at most 2**b - 1 stored values whatever the
        # storage type; a float model's layer gets the storage type's symmetric levels.
        limit = None if n is None else 2**b - 1 if from_qat else 15 if dtype == "INT4" else 255
        if n is not None and n > limit:
            raise errors.VerificationError(
                f"layer {o.layer!r} ({o.op}, {b} bits) stores {n} distinct values in one "
                f"output channel; at most {limit} were expected"
            )
        layers.append(LayerStorage(o.layer, op, b, dtype, size, reason or None, n, limit))
    # One line per reason, not per layer: a MobileNet has 13 depthwise layers, all for the
    # same reason (each layer is in Int4Export.fallbacks).
    by_reason: dict[str, list[str]] = {}
    for s in layers:
        if s.fallback:
            by_reason.setdefault(s.fallback, []).append(s.layer)
    for reason, names in by_reason.items():
        logger.warning("int4 export: %s (%d layer(s): %s)", reason, len(names), ", ".join(names))
    raw, gz = tflite_export.tflite_size(content)
    return Int4Export(content, layers, raw, gz)


def export(
    model: keras.Model,
    bits: Mapping[str, int] | int | None,
    representative_data: np.ndarray,
    x_verify: np.ndarray,
    y_verify: np.ndarray | None = None,
    *,
    thresholds: dict[str, float] | None = None,
    num_calibration: int = 256,
) -> Int4Export:
    """:func:`convert`, then verify the file against the Keras model (int8 thresholds).

    The verification is :func:`pocketflow_tf.tflite_verify.verify` in ``"int8"`` mode:
    top-1 agreement, accuracy drop when labels are given, and a load-and-run in a fresh
    process; ``thresholds`` overrides its defaults key by key.

    Args:
        model: The Keras model, float or quantization-aware (as for :func:`convert`); the
            file is verified against it.
        bits: ``{layer name: bits}`` or one bit-width, as for :func:`convert` (``None``
            for a QAT model).
        representative_data: Calibration inputs (training samples).
        x_verify: At least 200 verification inputs.
        y_verify: Optional labels.
        thresholds: Overrides of the int8 thresholds.
        num_calibration: As for :func:`convert`.

    Returns:
        The verified :class:`Int4Export` (``report.passed`` is ``True``).

    Raises:
        VerificationError: When the file fails a check (nothing is returned).

    Example:
        >>> out = export(model, {"conv": 4, "fc": 4}, x_train[:256], x_test[:500],
        ...              y_test[:500])  # doctest: +SKIP
        >>> out.report.passed, out.bytes < int8_bytes  # doctest: +SKIP
        (True, True)
    """
    model = interop.to_framework(model)[0]
    out = convert(model, bits, representative_data, num_calibration=num_calibration)
    out.report = tflite_verify.verify(
        model, out.content, x_verify, y_verify, mode="int8", thresholds=thresholds
    )
    return out


__all__ = [
    "ACCEPTED_BITS",
    "INT4_MAX_BITS",
    "INT4_OPS",
    "KERNEL_OPS",
    "Int4Export",
    "LayerStorage",
    "convert",
    "export",
    "default_bits",
    "kernel_levels",
    "kernel_types",
]
