"""A ``.tflite`` that keeps product-quantized kernels compressed: codes and codebooks in the file.

The converter cannot be asked for this directly: it constant-folds every constant subgraph,
so a Keras model computing its kernel as ``gather(codebook, codes)`` (the PQ layers of
:mod:`.layers`) comes out with the dense kernel again (observed with TF 2.21: the file of a
:func:`.layers.to_pq_model` model holds only ``CONV_2D`` / ``FULLY_CONNECTED`` with constant
weights). So the decoded model is converted as usual (float mode) and the flatbuffer is then
edited with TensorFlow's own schema bindings (``tensorflow.lite.python.schema_py_generated``):
each quantized layer's constant weight tensor loses its data and becomes the output of

* ``CAST`` of the uint8 codes (stored ``(O, m)``, one byte each) to int32, as ``GATHER``
  takes int32 positions;
* ``DEQUANTIZE`` of a float16 codebook to float32 (float32 codebooks are gathered directly);
* ``GATHER`` of codebook rows -> ``(O, m, d)``, ``RESHAPE`` to the weight's layout (a Dense
  weight ``(O, D)`` is then complete; a convolution's ``(O, c_in, kh, kw)`` is ``TRANSPOSE``-d
  to TFLite's ``(O, kh, kw, c_in)``);
* ``MUL`` by a per-output-channel scale when the converter folded a following BatchNorm into
  the weight (the codebook is shared by all output channels, so the scale cannot go into it).

Storing the codes transposed, ``(O, m)``, makes the gathered rows land in TFLite's
output-channel-first order, so Dense layers need no transpose at all. The codes take one byte
each here (8 bits; :mod:`.storage` packs them at ``log2(k)`` bits in the ``.npz``), codebooks
of more than 256 codewords take int32 codes. LiteRT rebuilds the kernels on every ``invoke``
(its ops have no "decode once" mode) and the XNNPACK delegate leaves convolutions with
non-constant weights to the builtin kernels, so the file is smaller and slower; measure
with :func:`pocketflow_tf.latency.interleaved_ratio`.

Clustered kernels (a few shared values per layer) go the same way: :func:`cluster_code` turns
such a kernel into a :class:`.storage.LayerCode` whose codes each hold the indices of ``g``
consecutive weights (16 values: 2 weights per byte) and whose codebook lists the index
combinations.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> inp = keras.Input((4,))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(inp))
    >>> cb = np.array([[1.0, -1.0], [0.5, 2.0]], "float32")
    >>> code = storage.LayerCode("fc", (4, 2), cb, np.array([[0, 1], [1, 1]]))
    >>> storage.apply_codes(m, {"fc": code})
    >>> content = compact_tflite(m, {"fc": code})
    >>> from pocketflow_tf import tflite_verify
    >>> x = np.random.default_rng(0).random((200, 4), dtype=np.float32)
    >>> tflite_verify.verify(m, content, x, mode="float", check_child=False).passed
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from pocketflow_tf import errors, tflite_export, tflite_verify
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.product_quant import pq, storage

#: The export mode of the compact file (``--export_modes pq-compact`` of a product-quant run).
MODE = "pq-compact"
#: The export mode of a clustered model's compact file (``--learner non-uniform``).
CLUSTER_MODE = "cluster-compact"
#: Bytes one coded layer adds to the file's structure (its CAST, GATHER, RESHAPE, TRANSPOSE,
#: MUL and their tensors and buffers): measured on ResNet-20, 21 coded layers added ~13 KB
#: of flatbuffer tables to the names-stripped file besides the codes and codebooks.
LAYER_OVERHEAD = 640
#: Relative residual up to which a converted weight counts as the decoded kernel times a
#: per-output-channel scale (a folded BatchNorm). float32 rounding of the fold leaves ~1e-7;
#: a different kernel leaves O(1).
FOLD_TOLERANCE = 1e-5
_OPS = schema.BuiltinOperator
_TYPES = schema.TensorType
_WEIGHT_OPS = (_OPS.CONV_2D, _OPS.FULLY_CONNECTED)


def cluster_code(name: str, kernel: np.ndarray, max_values: int = 256) -> storage.LayerCode:
    """The :class:`.storage.LayerCode` of a clustered kernel (few distinct values).

    With ``k`` distinct values, ``g`` consecutive weights of a column (the layout of
    :mod:`.pq`) form one sub-vector whose code is their ``g`` indices as base-``k`` digits;
    the codebook lists all ``k ** g`` combinations. ``g = 1`` is one byte per weight;
    ``g = 2`` with 16 values is 4 bits per weight, as clustering promises. ``g`` is the one
    giving the fewest bytes (codes plus a float32 codebook) with ``k ** g <= 256`` and ``g``
    dividing the kernel's input rows.

    Args:
        name: Layer name.
        kernel: A Conv2D ``(kh, kw, c_in, O)`` or Dense ``(c_in, O)`` kernel.
        max_values: Most distinct values accepted (256 keeps one byte per code).

    Raises:
        InvalidArgumentError: If the kernel has more distinct values than ``max_values`` (it
            is not clustered) or non-finite values.

    Example:
        >>> c = cluster_code("fc", np.array([[0.5, -1.0], [0.5, 0.5]], "float32"))
        >>> c.codebook.ravel().tolist(), c.codes.tolist()
        ([-1.0, 0.5], [[1, 0], [1, 1]])
        >>> kernel = np.random.default_rng(0).choice([-0.5, 0.0, 0.5, 1.0], (576, 10))
        >>> c = cluster_code("fc", kernel)  # 4 values: 3 weights share one byte
        >>> c.codebook.shape, c.codes.shape, np.array_equal(c.decode(), kernel)
        ((64, 3), (192, 10), True)
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    if not np.all(np.isfinite(kernel)):
        raise errors.InvalidArgumentError(
            f"kernel of {name}", "non-finite values", "a finite clustered kernel"
        )
    columns = pq.kernel_to_columns(kernel)
    values, index = np.unique(columns, return_inverse=True)
    k = len(values)
    if k > max_values:
        raise errors.InvalidArgumentError(
            f"kernel of {name}", f"{k} distinct values", f"at most {max_values}"
        )
    rows, out_ch = columns.shape
    groups = [g for g in range(1, 9) if k**g <= max(max_values, k) and rows % g == 0]
    g = min(groups, key=lambda g: (rows // g * out_ch + k**g * g * 4, g))
    digits = index.reshape(rows // g, g, out_ch)
    codes = sum(digits[:, i] * k ** (g - 1 - i) for i in range(g))
    # Row r of the codebook holds values[digit i of r] at position i (first digit first).
    book = np.stack(np.meshgrid(*[values] * g, indexing="ij"), axis=-1).reshape(-1, g)
    return storage.LayerCode(name, tuple(kernel.shape), book, codes)


def cluster_codes(model: keras.Model, max_values: int = 256) -> dict[str, storage.LayerCode]:
    """The :func:`cluster_code` of every clustered Conv2D / Dense kernel of ``model``.

    A layer is coded when its kernel has at most ``max_values`` distinct values and its
    codes plus float32 codebook plus :data:`LAYER_OVERHEAD` take fewer bytes than the
    float32 kernel; the others (the float first and last layers of a clustering run, a
    kernel too small to gain) stay dense.

    Example:
        >>> inp = keras.Input((64,))
        >>> h = keras.layers.Dense(64, name="float")(inp)
        >>> m = keras.Model(inp, keras.layers.Dense(64, name="clustered")(h))
        >>> values = np.array([-0.5, -0.1, 0.1, 0.5], "float32")
        >>> _ = m.get_layer("clustered").kernel.assign(values[np.arange(4096).reshape(64, 64) % 4])
        >>> sorted(cluster_codes(m))
        ['clustered']
    """
    codes = {}
    for layer in model.layers:
        if type(layer).__name__ not in ("Conv2D", "Dense") or getattr(layer, "groups", 1) != 1:
            continue
        kernel = layer.get_weights()[0]
        if np.unique(kernel).size > max_values or not np.all(np.isfinite(kernel)):
            continue
        code = cluster_code(layer.name, kernel, max_values)
        coded = code.codes.size + code.codebook.size * 4 + LAYER_OVERHEAD
        if coded < kernel.size * 4:
            codes[layer.name] = code
    return codes


def check_code(model: keras.Model, code: storage.LayerCode) -> None:
    """Refuses a :class:`.storage.LayerCode` that does not describe ``model``'s layer.

    Checks, naming the offending value: the layer exists and is a Conv2D (groups 1) or
    Dense; the codebook is a finite float ``(k, d)`` array; the codes are integers in
    ``[0, k)`` of shape ``(D / d, O)`` for the layer's kernel; and the codes decode to the
    layer's kernel (a codes file of another model or training step is refused).

    Raises:
        InvalidArgumentError: On any mismatch.

    Example:
        >>> inp = keras.Input((2,))
        >>> m = keras.Model(inp, keras.layers.Dense(1, name="fc", use_bias=False)(inp))
        >>> bad = storage.LayerCode("fc", (2, 1), np.ones((2, 2), "float32"), np.array([[2]]))
        >>> check_code(m, bad)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `codes of layer fc`: '2 (max code)'. Accepted: codes in [0, 2) (codebook size 2).
    """
    name = code.name
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise errors.InvalidArgumentError(
            "codes layer name", name, "a layer of the model"
        ) from None
    cls = type(layer).__name__
    if cls not in ("Conv2D", "Dense") or getattr(layer, "groups", 1) != 1:
        raise errors.InvalidArgumentError(f"layer {name}", cls, "a Conv2D (groups=1) or Dense")
    kernel = layer.get_weights()[0]
    book = np.asarray(code.codebook)
    if book.ndim != 2 or book.dtype.kind != "f" or book.shape[0] < 1 or book.shape[1] < 1:
        raise errors.InvalidArgumentError(
            f"codebook of layer {name}", f"{book.dtype} array {book.shape}", "a float (k, d) array"
        )
    bad = int(np.size(book) - np.count_nonzero(np.isfinite(book)))
    if bad:
        raise errors.InvalidArgumentError(
            f"codebook of layer {name}", f"{bad} NaN/inf value(s)", "finite codewords"
        )
    k, d = book.shape
    if tuple(code.kernel_shape) != kernel.shape:
        raise errors.InvalidArgumentError(
            f"kernel shape of layer {name}", tuple(code.kernel_shape), f"{kernel.shape}"
        )
    rows = int(np.prod(kernel.shape[:-1]))
    idx = np.asarray(code.codes)
    expected = (rows // d, kernel.shape[-1]) if rows % d == 0 else None
    if expected is None or idx.shape != expected:
        raise errors.InvalidArgumentError(
            f"codes of layer {name}",
            f"shape {idx.shape}",
            f"shape {expected} (block size {d} dividing {rows} rows)",
        )
    if idx.dtype.kind not in "iu":
        raise errors.InvalidArgumentError(
            f"codes of layer {name}", f"dtype {idx.dtype}", "integers"
        )
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= k):
        worst = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise errors.InvalidArgumentError(
            f"codes of layer {name}",
            f"{worst} (max code)" if worst >= 0 else f"{worst} (min code)",
            f"codes in [0, {k}) (codebook size {k})",
        )
    diff = float(np.max(np.abs(code.decode() - kernel)))
    if not diff <= FOLD_TOLERANCE * max(float(np.max(np.abs(kernel))), 1e-12):
        raise errors.InvalidArgumentError(
            f"codes of layer {name}",
            f"decoding {diff:.3g} away from the layer's kernel",
            "the codes and codebook this model's kernel was decoded from",
        )


def _tflite_weight(code: storage.LayerCode) -> np.ndarray:
    # The decoded kernel in TFLite's layout: (O, kh, kw, c_in) or (O, D).
    kernel = code.decode()
    return kernel.T if kernel.ndim == 2 else kernel.transpose(3, 0, 1, 2)


def _channel_scale(weight: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    # Per-output-channel s with target ~= s * weight (the converter folds a BatchNorm that
    # way), or None when no such s explains target.
    w = weight.reshape(len(weight), -1).astype(np.float64)
    t = target.reshape(len(target), -1).astype(np.float64)
    s = (w * t).sum(1) / np.maximum((w * w).sum(1), 1e-30)
    residual = np.max(np.abs(t - s[:, None] * w)) if t.size else 0.0
    if residual > FOLD_TOLERANCE * max(float(np.max(np.abs(t))), 1e-12):
        return None
    return s.astype(np.float32)


def _find_weight(
    weights: Mapping[int, np.ndarray], weight: np.ndarray, name: str
) -> tuple[int, np.ndarray]:
    # The tensor index among `weights` holding `weight` times a per-output-channel scale.
    for index, data in weights.items():
        if data.shape == weight.shape:
            scale = _channel_scale(weight, data)
            if scale is not None:
                return index, scale
    raise errors.UnsupportedModelError(
        f"layer {name}: no float32 CONV_2D/FULLY_CONNECTED weight of shape "
        f"{weight.shape} in the converted file equals its decoded kernel"
    )


class _Editor:
    """Appends constant tensors and operators to subgraph 0 of a flatbuffer object."""

    def __init__(self, model: schema.ModelT):
        self.model = model
        self.graph = model.subgraphs[0]
        self.new_ops: list[schema.OperatorT] = []
        self.shared: dict[str, int] = {}

    def const(self, name: str, array: np.ndarray, ttype: int) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
        self.model.buffers.append(buf)
        return self._tensor(name, array.shape, ttype, len(self.model.buffers) - 1)

    def shared_const(self, name: str, array: np.ndarray, ttype: int) -> int:
        # One tensor for a constant every layer uses alike (the TRANSPOSE permutation).
        if name not in self.shared:
            self.shared[name] = self.const(name, array, ttype)
        return self.shared[name]

    def tensor(self, name: str, shape, ttype: int = _TYPES.FLOAT32) -> int:
        return self._tensor(name, shape, ttype, 0)  # buffer 0 is the empty sentinel

    def _tensor(self, name: str, shape, ttype: int, buffer: int) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = (
            name.encode(),
            np.asarray(shape, np.int32),
            ttype,
            buffer,
        )
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def op(self, code: int, inputs, outputs, options_type=0, options=None, version: int = 1):
        for i, oc in enumerate(self.model.operatorCodes):
            if oc.builtinCode == code and oc.version == version:
                index = i
                break
        else:
            oc = schema.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            self.model.operatorCodes.append(oc)
            index = len(self.model.operatorCodes) - 1
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, list(inputs), list(outputs)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.new_ops.append(op)

    def finish(self, keep_names: bool) -> bytes:
        # The new ops only read constants, so they can all run first (topological order).
        self.graph.operators = self.new_ops + list(self.graph.operators)
        if not keep_names:
            # Tensor names only serve debugging; the converter's are long ("model/s3b3_b_
            # conv/Conv2D;model/s3b3_b_bn/FusedBatchNormV3;...") and ResNet-20's add up to
            # ~9 KB, a tenth of the compact file. The inputs and outputs keep theirs (what
            # get_input_details shows); the signature refers to tensors by index.
            keep = set(self.graph.inputs) | set(self.graph.outputs)
            for i, t in enumerate(self.graph.tensors):
                if i not in keep:
                    t.name = None
        return bytes(flatbuffer_utils.convert_object_to_bytearray(self.model))


def _rebuild(ed: _Editor, code: storage.LayerCode, weight: int, scale, book_dtype) -> None:
    # Appends the ops that compute tensor `weight` (TFLite layout) from the codes.
    name = code.name
    k, d = code.codebook.shape
    m, out_ch = code.codes.shape
    if book_dtype == np.float16:
        book16 = ed.const(f"{name}/pq_codebook", code.codebook.astype(np.float16), _TYPES.FLOAT16)
        book = ed.tensor(f"{name}/pq_codebook_f32", (k, d))
        ed.op(_OPS.DEQUANTIZE, [book16], [book], version=3)  # version 3: float16 input
    else:
        book = ed.const(f"{name}/pq_codebook", code.codebook.astype(np.float32), _TYPES.FLOAT32)
    codes_t = np.ascontiguousarray(np.asarray(code.codes).T)  # (O, m): output channel first
    if k <= 256:
        codes = ed.const(f"{name}/pq_codes", codes_t.astype(np.uint8), _TYPES.UINT8)
        positions = ed.tensor(f"{name}/pq_codes_i32", (out_ch, m), _TYPES.INT32)
        options = schema.CastOptionsT()
        options.inDataType, options.outDataType = _TYPES.UINT8, _TYPES.INT32
        ed.op(_OPS.CAST, [codes], [positions], schema.BuiltinOptions.CastOptions, options)
    else:
        positions = ed.const(f"{name}/pq_codes", codes_t.astype(np.int32), _TYPES.INT32)
    rows = ed.tensor(f"{name}/pq_rows", (out_ch, m, d))
    options = schema.GatherOptionsT()
    options.axis, options.batchDims = 0, 0
    ed.op(_OPS.GATHER, [book, positions], [rows], schema.BuiltinOptions.GatherOptions, options)

    weight_shape = tuple(int(s) for s in ed.graph.tensors[weight].shape)
    dense = len(code.kernel_shape) == 2
    kernel = weight if scale is None else ed.tensor(f"{name}/pq_kernel", weight_shape)
    if dense:  # (O, m, d) -> (O, D) is already the FULLY_CONNECTED layout
        layout, reshaped = weight_shape, kernel
    else:  # (O, m, d) -> (O, c_in, kh, kw), TRANSPOSE-d to CONV_2D's (O, kh, kw, c_in)
        kh, kw, cin, _ = code.kernel_shape
        layout = (out_ch, cin, kh, kw)
        reshaped = ed.tensor(f"{name}/pq_columns", layout)
    options = schema.ReshapeOptionsT()
    options.newShape = list(layout)
    # The target shape goes in the options only: a shape tensor would cost a tensor and a
    # buffer per layer, and LiteRT's RESHAPE reads the options when it has one input.
    ed.op(_OPS.RESHAPE, [rows], [reshaped], schema.BuiltinOptions.ReshapeOptions, options)
    if not dense:
        perm = ed.shared_const("pq_perm_ohwi", np.asarray([0, 2, 3, 1], np.int32), _TYPES.INT32)
        options = schema.TransposeOptionsT()
        ed.op(
            _OPS.TRANSPOSE,
            [reshaped, perm],
            [kernel],
            schema.BuiltinOptions.TransposeOptions,
            options,
        )
    if scale is not None:
        bshape = (out_ch,) + (1,) * (len(weight_shape) - 1)
        s = ed.const(f"{name}/pq_channel_scale", scale.reshape(bshape), _TYPES.FLOAT32)
        ed.op(
            _OPS.MUL, [kernel, s], [weight], schema.BuiltinOptions.MulOptions, schema.MulOptionsT()
        )


def compact_tflite(
    model: keras.Model,
    codes: Mapping[str, storage.LayerCode],
    *,
    codebook_dtype: str | None = None,
    keep_names: bool = False,
) -> bytes:
    """The float ``.tflite`` of ``model`` with each coded kernel stored as codes + codebook.

    Args:
        model: The decoded Keras model (kernels ``codebook[codes]``, as the PQ learner
            returns it).
        codes: ``{layer name: LayerCode}`` of the quantized layers (checked by
            :func:`check_code` first).
        codebook_dtype: ``"float16"`` or ``"float32"``; ``None`` keeps each codebook's own
            dtype (float16 stays float16, anything else is stored float32). A float16 file
            codebook differs from a float32 one by float16 rounding.
        keep_names: Keep every tensor's name (debugging); by default only the model's
            inputs and outputs keep theirs.

    Returns:
        The flatbuffer bytes (verify them with :func:`pocketflow_tf.tflite_verify.verify`,
        mode ``"float"``).

    Raises:
        InvalidArgumentError: On codes that do not describe the model, or a bad
            ``codebook_dtype``.
        UnsupportedModelError: If a coded layer's weight cannot be found in the converted
            file (e.g. the converter merged it with another constant).

    Example:
        >>> content = compact_tflite(pq_model, learner.codes)  # doctest: +SKIP
    """
    if codebook_dtype not in (None, "float16", "float32"):
        raise errors.InvalidArgumentError(
            "codebook_dtype", codebook_dtype, "'float16', 'float32' or None"
        )
    for name, code in codes.items():
        if name != code.name:
            raise errors.InvalidArgumentError(
                "codes key", name, f"the LayerCode's name {code.name}"
            )
        check_code(model, code)
    obj = flatbuffer_utils.convert_bytearray_to_object(
        bytearray(tflite_export.convert(model, "float"))
    )
    ed = _Editor(obj)
    # Candidate weights: the constant second input of every CONV_2D / FULLY_CONNECTED (the
    # converter may give equal constants one tensor, read by several ops).
    weights: dict[int, np.ndarray] = {}
    for op in ed.graph.operators:
        t = ed.graph.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
        if (
            obj.operatorCodes[op.opcodeIndex].builtinCode in _WEIGHT_OPS
            and t.buffer
            and obj.buffers[t.buffer].data is not None
            and t.type == _TYPES.FLOAT32
        ):
            data = np.frombuffer(obj.buffers[t.buffer].data.tobytes(), np.float32)
            weights[op.inputs[1]] = data.reshape(tuple(t.shape))
    rebuilt: set[int] = set()
    for name, code in codes.items():
        index, scale = _find_weight(weights, _tflite_weight(code), name)
        if index in rebuilt:  # a shared tensor, already rebuilt from codes decoding alike
            continue
        rebuilt.add(index)
        t = ed.graph.tensors[index]
        if sum(other.buffer == t.buffer for other in ed.graph.tensors) == 1:
            obj.buffers[t.buffer].data = None  # the dense weight leaves the file
        t.buffer = 0
        if np.allclose(scale, 1.0, rtol=0, atol=FOLD_TOLERANCE):
            scale = None
        if codebook_dtype is None:
            dtype = np.float16 if np.asarray(code.codebook).dtype == np.float16 else np.float32
        else:
            dtype = np.dtype(codebook_dtype).type
        _rebuild(ed, code, index, scale, dtype)
    return ed.finish(keep_names)


def export_compact(
    model: keras.Model,
    codes: Mapping[str, storage.LayerCode],
    path: str | os.PathLike,
    *,
    x_verify: np.ndarray,
    y_verify: np.ndarray | None = None,
    codebook_dtype: str | None = None,
    thresholds: dict[str, float] | None = None,
) -> tflite_verify.ExportResult:
    """Builds the compact file, verifies it against ``model`` and writes it like every export.

    :func:`compact_tflite`, then :func:`pocketflow_tf.tflite_verify.export_tflite` with that
    content: LiteRT must agree with the Keras model on ``x_verify`` (float thresholds; float16
    ones when ``codebook_dtype="float16"`` rounds float32 codebooks), the file must run in a
    fresh process, and it is written atomically with its ``.sha256``; nothing is written when
    a check fails.

    Args:
        model: The decoded Keras model.
        codes: ``{layer name: LayerCode}`` of its quantized layers.
        path: Destination ``.tflite``.
        x_verify: Verification inputs (at least 200), as fed to ``model.predict``.
        y_verify: Optional labels, to check the accuracy drop.
        codebook_dtype: As for :func:`compact_tflite`.
        thresholds: Overrides of the verification thresholds.

    Returns:
        The :class:`pocketflow_tf.tflite_verify.ExportResult`.

    Example:
        >>> res = export_compact(model, learner.codes, "out/m_pq.tflite",
        ...                      x_verify=x_test[:1000])  # doctest: +SKIP
    """
    content = compact_tflite(model, codes, codebook_dtype=codebook_dtype)
    rounded = codebook_dtype == "float16" and any(
        np.asarray(c.codebook).dtype != np.float16 for c in codes.values()
    )
    return tflite_verify.export_tflite(
        model,
        path,
        mode="float16" if rounded else "float",
        x_verify=x_verify,
        y_verify=y_verify,
        thresholds=thresholds,
        content=content,
    )


def export_from_codes_file(
    model: keras.Model,
    codes_path: str | os.PathLike,
    path: str | os.PathLike,
    *,
    x_verify: np.ndarray,
    y_verify: np.ndarray | None = None,
    codebook_dtype: str | None = None,
    thresholds: dict[str, float] | None = None,
) -> tflite_verify.ExportResult:
    """:func:`export_compact` of ``model`` with the codes read from a ``.pq.npz`` file.

    The deployment step of a product-quantization run: the learner saved the decoded model
    and its codes file; this reads the codes back (:func:`.storage.load`, decoding into a
    copy of ``model``), checks that they decode to ``model``'s kernels (:func:`check_code`:
    a corrupt file, or the file of another run, is refused naming the layer and value), and
    writes the verified compact ``.tflite``.

    Args:
        model: The decoded Keras model the codes file belongs to.
        codes_path: Its ``.pq.npz`` (:func:`.storage.save`).
        path: Destination ``.tflite``.
        x_verify: Verification inputs (at least 200).
        y_verify: Optional labels, to check the accuracy drop.
        codebook_dtype: As for :func:`compact_tflite`.
        thresholds: Overrides of the verification thresholds.

    Raises:
        ModelLoadError: If the codes file is unreadable or not a product-quantization file.
        InvalidArgumentError: If its codes do not describe ``model``.

    Example:
        >>> res = export_from_codes_file(model, "out/model.pq.npz", "out/model.pq-compact.tflite",
        ...                              x_verify=x_test[:1000])  # doctest: +SKIP
    """
    decoded, codes = storage.load(codes_path, model=model)
    where = os.fspath(codes_path)
    for code in codes.values():
        try:
            check_code(model, code)
        except errors.InvalidArgumentError as e:  # say which file, not only which layer
            raise errors.InvalidArgumentError(f"{e.name} in {where}", e.value, e.accepted) from None
    # check_code compares the kernels; the file's float rest must be the model's too (it is
    # the deployment's other artifact: a file of another run or a damaged one is refused).
    for layer in decoded.layers:
        mine = model.get_layer(layer.name).get_weights()
        for i, (stored, have) in enumerate(zip(layer.get_weights(), mine, strict=True)):
            if not (layer.name in codes and i == 0) and not np.array_equal(stored, have):
                raise errors.InvalidArgumentError(
                    f"codes file {where}",
                    f"weight {i} of layer {layer.name} differs from the model's "
                    f"(max |diff| {float(np.max(np.abs(stored - have))):.3g})",
                    "the codes file saved with this model",
                )
    return export_compact(
        model,
        codes,
        path,
        x_verify=x_verify,
        y_verify=y_verify,
        codebook_dtype=codebook_dtype,
        thresholds=thresholds,
    )


def export_clustered(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    x_verify: np.ndarray,
    y_verify: np.ndarray | None = None,
    thresholds: dict[str, float] | None = None,
) -> tflite_verify.ExportResult:
    """:func:`export_compact` of a clustered model: each clustered kernel as indices + centroids.

    The layers are found by their kernels (:func:`cluster_codes`); the codebooks stay
    float32, so the file computes exactly what the Keras model does (float thresholds).

    Raises:
        InvalidArgumentError: If no kernel of ``model`` is clustered enough to gain bytes.

    Example:
        >>> res = export_clustered(clustered_model, "out/m.cluster-compact.tflite",
        ...                        x_verify=x_test[:1000])  # doctest: +SKIP
    """
    codes = cluster_codes(model)
    if not codes:
        raise errors.InvalidArgumentError(
            "model",
            model.name,
            "a model with clustered Conv2D/Dense kernels (at most 256 distinct values, "
            "enough weights for indices + centroids to be smaller than float32)",
        )
    return export_compact(
        model, codes, path, x_verify=x_verify, y_verify=y_verify, thresholds=thresholds
    )


def compact_tflite_from_file(
    path: str | os.PathLike, model: keras.Model | None = None, **kwargs
) -> tuple[keras.Model, bytes]:
    """Reads a ``.pq.npz`` of :mod:`.storage` and returns its decoded model and compact file.

    Args:
        path: The ``.pq.npz`` file.
        model: As for :func:`.storage.load`.
        **kwargs: Passed to :func:`compact_tflite`.

    Raises:
        ModelLoadError: If the file is unreadable.
        InvalidArgumentError: If its codes are corrupt (see :func:`check_code`).

    Example:
        >>> decoded, content = compact_tflite_from_file("/tmp/m.pq.npz")  # doctest: +SKIP
    """
    decoded, codes = storage.load(path, model=model)
    return decoded, compact_tflite(decoded, codes, **kwargs)


__all__ = [
    "CLUSTER_MODE",
    "FOLD_TOLERANCE",
    "LAYER_OVERHEAD",
    "MODE",
    "check_code",
    "cluster_code",
    "cluster_codes",
    "compact_tflite",
    "compact_tflite_from_file",
    "export_clustered",
    "export_compact",
    "export_from_codes_file",
]
