"""Weight sparsity of a Keras model and of its ``.tflite`` export, kernel by kernel.

What pruning buys has to be checked where it is delivered: in the exported file. This module
reads the kernels of a Keras model (:func:`keras_kernel_sparsity`) and the weight tensors of
a TFLite flatbuffer (:func:`tflite_kernel_sparsity`), pairs them (:func:`compare`) and
reports per-kernel sparsity plus raw and gzip bytes (:func:`sparsity_report`).

How the TFLite side is read (LiteRT 2.x, TF 2.21 converter; checked when this was written):

* Weight tensors are constants, readable with ``Interpreter.get_tensor`` before
  ``allocate_tensors``. A kernel is input 1 of ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` /
  ``FULLY_CONNECTED`` / ``TRANSPOSE_CONV`` / ``CONV_3D``; the op list comes from the
  interpreter's ``_get_ops_details()`` (private, but the only op-level view LiteRT's Python
  API has, and the one TensorFlow's own tools use).
* With ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` the converter stores a pruned kernel in
  TFLite's compressed format (CSR-like ``dim_metadata``: dense and sparse dimensions, maybe
  blocks) and inserts a ``DENSIFY`` op that rebuilds the dense tensor when the interpreter
  prepares the model. ``get_tensor`` on such a tensor returns only the *stored values*, and
  ``get_tensor_details()[i]["sparsity_parameters"]`` holds the index arrays, while
  ``["shape"]`` keeps the dense shape. :func:`decode_sparse_tensor` rebuilds the dense array
  from those, so the figures come from the bytes of the file, not from a runtime buffer.
  The converter only uses the format where it pays (it left a 29-value 3x3x1x16 kernel
  sparse, but keeps depthwise kernels and unpruned tensors dense).
* float16 exports feed kernels through ``DEQUANTIZE``; the float16 constant is read.
* A quantized kernel's zero is its zero-point (0 for TFLite's symmetric int8 weights).

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import sparsity, tflite_export
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc")])
    >>> w = m.get_layer("fc").kernel
    >>> _ = w.assign(np.where(np.arange(32).reshape(8, 4) % 4 == 0, w.numpy(), 0.0))
    >>> [round(k.sparsity, 2) for k in sparsity.keras_kernel_sparsity(m)]
    [0.75]
    >>> rep = sparsity.sparsity_report(m, tflite_export.convert(m))
    >>> rep.kernels[0].tflite.sparsity
    0.75
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import errors, tflite_export, tflite_load
from pocketflow_tf.compat import keras

#: TFLite ops whose input 1 is a weight kernel.
KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
#: Ops the converter puts between a stored constant and the op using it.
_PASS_THROUGH = ("DENSIFY", "DEQUANTIZE")


@dataclasses.dataclass
class KernelSparsity:
    """Zeros in one kernel (a Keras weight or a TFLite weight tensor).

    Attributes:
        name: ``"<layer path>/<weight>"`` for Keras, the tensor name for TFLite.
        shape: Dense shape (TFLite layout for TFLite tensors, e.g. ``(O, H, W, I)``).
        size: Number of elements of the dense tensor.
        zeros: Elements equal to zero (the zero-point for quantized tensors).
        dtype: Element type as stored (``"float32"``, ``"int8"``, ``"float16"``...).
        stored_sparse: TFLite only: stored in the compressed sparse format.
        stored_values: TFLite only: number of values actually stored in the file.

    Example:
        >>> KernelSparsity("fc/kernel", (64, 10), 640, 576, "float32").sparsity
        0.9
    """

    name: str
    shape: tuple[int, ...]
    size: int
    zeros: int
    dtype: str
    stored_sparse: bool = False
    stored_values: int | None = None

    @property
    def sparsity(self) -> float:
        """Share of zero elements.

        Example:
            >>> KernelSparsity("k", (2,), 2, 1, "float32").sparsity
            0.5
        """
        return self.zeros / self.size if self.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (with ``sparsity``) for records.

        Example:
            >>> KernelSparsity("k", (2,), 2, 1, "float32").to_dict()["sparsity"]
            0.5
        """
        return {**dataclasses.asdict(self), "shape": list(self.shape), "sparsity": self.sparsity}


def overall_sparsity(kernels: list[KernelSparsity]) -> float:
    """Size-weighted sparsity of several kernels.

    Example:
        >>> overall_sparsity([KernelSparsity("a", (10,), 10, 10, "float32"),
        ...                   KernelSparsity("b", (30,), 30, 0, "float32")])
        0.25
    """
    total = sum(k.size for k in kernels)
    return sum(k.zeros for k in kernels) / total if total else 0.0


# -- Keras side ------------------------------------------------------------------------------
def _walk(model: keras.Model, prefix: str = ""):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer, prefix + layer.name + "/")
        else:
            yield prefix, layer


def _keras_kernels(model: keras.Model) -> list[tuple[str, str, str, np.ndarray]]:
    """``(name, layer class, weight short name, effective value)`` of every kernel."""
    found = []
    for prefix, layer in _walk(model):
        inner = layer
        masks = {}
        # A pruning wrapper computes with kernel * mask; report what the layer computes with.
        if type(layer).__name__ == "PruneLowMagnitude":
            inner = layer.layer
            masks = {id(w): m for w, m, _ in getattr(layer, "pruning_vars", [])}
        while isinstance(inner, keras.layers.Wrapper):  # other TFMOT wrappers
            inner = inner.layer
        for w in inner.weights:
            short = w.name.split("/")[-1].split(":")[0]
            if not short.endswith("kernel"):
                continue
            value = np.asarray(w.numpy())
            if id(w) in masks:
                value = value * np.asarray(masks[id(w)].numpy())
            found.append((f"{prefix}{inner.name}/{short}", type(inner).__name__, short, value))
    return found


def keras_kernel_sparsity(model: keras.Model) -> list[KernelSparsity]:
    """Sparsity of every kernel (``kernel``, ``depthwise_kernel``, ``pointwise_kernel``...).

    TFMOT pruning wrappers are looked through: the value reported is ``kernel * mask``,
    what the layer computes with. Biases and BatchNorm parameters are not kernels.

    Args:
        model: A Keras model (wrapped or stripped).

    Returns:
        One :class:`KernelSparsity` per kernel, in layer order.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> keras_kernel_sparsity(m)[0].name
        'fc/kernel'
    """
    return [
        KernelSparsity(name, tuple(v.shape), int(v.size), int(np.sum(v == 0)), str(v.dtype))
        for name, _, _, v in _keras_kernels(model)
    ]


def to_tflite_layout(class_name: str, short: str, value: np.ndarray) -> np.ndarray | None:
    """A Keras kernel rearranged the way the TFLite converter stores it (None if unknown).

    Example:
        >>> to_tflite_layout("Dense", "kernel", np.zeros((4, 2))).shape  # (out, in)
        (2, 4)
    """
    if short == "depthwise_kernel" and value.ndim == 4:  # (H, W, C, M) -> (1, H, W, C*M)
        h, w, c, m = value.shape
        return value.reshape(1, h, w, c * m)
    if "Transpose" in class_name and value.ndim == 4:  # (H, W, O, I) -> (O, H, W, I)
        return value.transpose(2, 0, 1, 3)
    if value.ndim == 2:  # Dense (I, O) -> (O, I)
        return value.T
    if value.ndim == 4:  # Conv2D / pointwise (H, W, I, O) -> (O, H, W, I)
        return value.transpose(3, 0, 1, 2)
    if value.ndim == 3:  # Conv1D (K, I, O) runs as a CONV_2D over (O, 1, K, I)
        return value.transpose(2, 0, 1)[:, None]
    if value.ndim == 5:  # Conv3D keeps TF's (D, H, W, I, O) layout in TFLite
        return value
    return None


# -- TFLite side -----------------------------------------------------------------------------
def decode_sparse_tensor(
    values: np.ndarray, sparsity_parameters: dict[str, Any], dense_shape: tuple[int, ...]
) -> np.ndarray:
    """Rebuilds the dense array of a TFLite tensor stored in the compressed sparse format.

    Follows TFLite's ``SparsityParameters``: ``traversal_order`` lists the original dims then
    the block dims in storage order, ``block_map`` says which original dim each block dim
    splits, and each ``dim_metadata`` entry is DENSE (``format`` 0, ``dense_size``) or
    SPARSE_CSR (``format`` 1, ``array_segments`` and ``array_indices``). Missing elements
    are 0 (TFLite only stores symmetric int8 weights in this format, whose zero-point is 0).

    Args:
        values: The stored values (what ``Interpreter.get_tensor`` returns for the tensor).
        sparsity_parameters: ``get_tensor_details()[i]["sparsity_parameters"]``.
        dense_shape: ``get_tensor_details()[i]["shape"]``.

    Returns:
        The dense array, ``values.dtype``, shape ``dense_shape``.

    Example:
        >>> sp = {"traversal_order": [0, 1], "block_map": [], "dim_metadata": [
        ...     {"format": 0, "dense_size": 2},
        ...     {"format": 1, "array_segments": [0, 1, 3], "array_indices": [2, 0, 1]}]}
        >>> decode_sparse_tensor(np.array([5., 6., 7.]), sp, (2, 3))
        array([[0., 0., 5.],
               [6., 7., 0.]])
    """
    order = [int(d) for d in sparsity_parameters["traversal_order"]]
    block_map = [int(d) for d in sparsity_parameters["block_map"]]
    meta = list(sparsity_parameters["dim_metadata"])
    n, k = len(dense_shape), len(block_map)
    if len(order) != n + k or len(meta) != n + k:
        raise errors.UnsupportedModelError(
            f"sparse tensor metadata of {len(meta)} dims does not fit shape {dense_shape} "
            f"with {k} block dims"
        )
    values = np.asarray(values).reshape(-1)
    pos = np.zeros(1, np.int64)
    coords = np.zeros((n + k, 1), np.int64)
    level_size = {}
    for level, dim in enumerate(order):
        m = meta[level]
        if int(m["format"]) == 0:  # DENSE: every index of this dim, for every parent
            size = int(m["dense_size"])
            level_size[dim] = size
            pos = (pos[:, None] * size + np.arange(size)[None, :]).reshape(-1)
            coords = np.repeat(coords, size, axis=1)
            coords[dim] = np.tile(np.arange(size), coords.shape[1] // size)
        else:  # SPARSE_CSR: the stored indices of each parent's segment
            seg = np.asarray(m["array_segments"], np.int64)
            ind = np.asarray(m["array_indices"], np.int64)
            starts, counts = seg[pos], seg[pos + 1] - seg[pos]
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(starts, counts) + offsets
            coords = np.repeat(coords, counts, axis=1)
            coords[dim] = ind[pos]
    dense_coords = []
    for d in range(n):
        c = coords[d]
        if d in block_map:
            j = block_map.index(d)
            c = c * level_size[n + j] + coords[n + j]
        dense_coords.append(c)
    inside = np.all([c < s for c, s in zip(dense_coords, dense_shape, strict=True)], axis=0)
    dense = np.zeros(tuple(int(s) for s in dense_shape), values.dtype)
    dense[tuple(c[inside] for c in dense_coords)] = values[pos[inside]]
    return dense


@dataclasses.dataclass
class _TFLiteKernel:
    stats: KernelSparsity
    dense: np.ndarray
    channel_axis: int


def _read_model(model_content: bytes | str | os.PathLike) -> Interpreter:
    return tflite_load.open_interpreter(model_content, name="model_content")


def tflite_kernels(model_content: bytes | str | os.PathLike) -> list[_TFLiteKernel]:
    """The kernel tensors of a ``.tflite`` (input 1 of each conv / fully-connected op),
    decoded to dense arrays when stored sparse.

    Example:
        >>> from pocketflow_tf import tflite_export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> [k.dense.shape for k in tflite_kernels(tflite_export.convert(m))]
        [(2, 4)]
    """
    interp = _read_model(model_content)
    if not hasattr(interp, "_get_ops_details"):
        raise errors.UnsupportedModelError(
            "this LiteRT interpreter has no _get_ops_details(); cannot find the kernels"
        )
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    producer = {out: op for op in ops for out in op["outputs"]}
    kernels, seen = [], set()
    for op in ops:
        if op["op_name"] not in KERNEL_OPS or len(op["inputs"]) < 2:
            continue
        idx = int(op["inputs"][1])
        while idx in producer and producer[idx]["op_name"] in _PASS_THROUGH:
            idx = int(producer[idx]["inputs"][0])
        if idx < 0 or idx in seen or idx not in details:
            continue
        seen.add(idx)
        det = details[idx]
        try:
            stored = np.asarray(interp.get_tensor(idx))
        except ValueError:
            continue  # not a constant: a weight computed at run time is no stored kernel
        shape = tuple(int(d) for d in det["shape"])
        params = det.get("sparsity_parameters") or {}
        zp = np.asarray(det.get("quantization_parameters", {}).get("zero_points", []))
        qdim = int(det.get("quantization_parameters", {}).get("quantized_dimension", 0))
        if params:
            if zp.size and np.any(zp != 0):
                raise errors.UnsupportedModelError(
                    f"sparse tensor {det['name']!r} has non-zero zero-points"
                )
            dense = decode_sparse_tensor(stored, params, shape)
        else:
            dense = stored.reshape(shape)
        zero = np.zeros(1, dense.dtype)
        if zp.size > 1 and dense.ndim:  # per-channel zero-points
            zero = zp.reshape([-1 if a == qdim else 1 for a in range(dense.ndim)])
        elif zp.size == 1:
            zero = zp.reshape(1)
        stats = KernelSparsity(
            name=str(det["name"]),
            shape=shape,
            size=int(dense.size),
            zeros=int(np.sum(dense == zero)),
            dtype=np.dtype(det["dtype"]).name,
            stored_sparse=bool(params),
            stored_values=int(stored.size),
        )
        axis = dense.ndim - 1 if op["op_name"] == "DEPTHWISE_CONV_2D" else 0
        kernels.append(_TFLiteKernel(stats, dense, axis))
    return kernels


def tflite_kernel_sparsity(model_content: bytes | str | os.PathLike) -> list[KernelSparsity]:
    """Sparsity of every weight kernel stored in a TFLite flatbuffer, read from the file.

    Args:
        model_content: Flatbuffer bytes or the path of a ``.tflite`` file.

    Returns:
        One :class:`KernelSparsity` per kernel tensor, in op order (TFLite layout shapes).

    Example:
        >>> from pocketflow_tf import tflite_export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> tflite_kernel_sparsity(tflite_export.convert(m))[0].shape
        (2, 4)
    """
    return [k.stats for k in tflite_kernels(model_content)]


# -- pairing ---------------------------------------------------------------------------------
def _channel_normalised(a: np.ndarray, axis: int) -> np.ndarray:
    # BatchNorm folding and per-channel quantization scale each output channel by its own
    # factor (maybe negative); |w| / max|w| per channel is invariant to both.
    a = np.abs(a.astype(np.float64))
    other = tuple(i for i in range(a.ndim) if i != axis)
    peak = a.max(axis=other, keepdims=True) if other else a
    return a / np.where(peak > 0, peak, 1.0)


@dataclasses.dataclass
class KernelComparison:
    """One Keras kernel and the TFLite tensor it became.

    Attributes:
        keras: The Keras kernel's sparsity.
        tflite: The matched TFLite kernel's sparsity (``None`` if no tensor matched).

    Example:
        >>> c = KernelComparison(KernelSparsity("k", (2,), 2, 1, "float32"),
        ...                      KernelSparsity("t", (2,), 2, 1, "int8"))
        >>> c.delta
        0.0
    """

    keras: KernelSparsity
    tflite: KernelSparsity | None

    @property
    def delta(self) -> float | None:
        """``tflite.sparsity - keras.sparsity`` (``None`` when unmatched).

        Example:
            >>> KernelComparison(KernelSparsity("k", (2,), 2, 1, "float32"), None).delta
        """
        return None if self.tflite is None else self.tflite.sparsity - self.keras.sparsity

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for records.

        Example:
            >>> KernelComparison(KernelSparsity("k", (2,), 2, 1, "float32"),
            ...                  None).to_dict()["tflite"] is None
            True
        """
        return {
            "keras": self.keras.to_dict(),
            "tflite": None if self.tflite is None else self.tflite.to_dict(),
            "delta": self.delta,
        }


def match_kernels(refs: list[np.ndarray | None], t_kernels: list) -> dict[int, int]:
    """Pairs Keras kernels (in TFLite layout) with the file's kernel tensors.

    Greedy, best first, on per-channel-normalised magnitudes: invariant to BatchNorm folding
    and per-channel quantization, which rescale each output channel. ``None`` refs and
    shape mismatches are never paired.

    Returns:
        ``{index in refs: index in t_kernels}``.

    Example:
        >>> match_kernels([None], [])
        {}
    """
    pairs = []
    for i, ref in enumerate(refs):
        if ref is None:
            continue
        for j, t in enumerate(t_kernels):
            if tuple(t.dense.shape) != tuple(ref.shape):
                continue
            a = _channel_normalised(ref, t.channel_axis)
            b = _channel_normalised(t.dense, t.channel_axis)
            pairs.append((float(np.mean(np.abs(a - b))), i, j))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


def compare(model: keras.Model, model_content: bytes | str | os.PathLike) -> list[KernelComparison]:
    """Pairs each Keras kernel with the TFLite tensor it was converted to.

    TFLite tensor names are not reliable (fused ops get names like
    ``"model/re_lu/Relu;model/bn/FusedBatchNormV3;..."`` and a Dense kernel may be named
    ``"StatefulPartitionedCall:01"``), so tensors are paired by content: the Keras kernel is
    rearranged to the TFLite layout, both are made invariant to per-output-channel scaling
    (BatchNorm folding, per-channel quantization) and each Keras kernel gets the same-shape
    tensor closest to it, greedily, best pairs first.

    Args:
        model: The Keras model that was exported.
        model_content: Flatbuffer bytes or a ``.tflite`` path.

    Returns:
        One :class:`KernelComparison` per Keras kernel, in layer order.

    Example:
        >>> from pocketflow_tf import tflite_export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> [c.delta for c in compare(m, tflite_export.convert(m))]
        [0.0]
    """
    k_kernels = _keras_kernels(model)
    t_kernels = tflite_kernels(model_content)
    refs = [to_tflite_layout(cls, short, value) for _, cls, short, value in k_kernels]
    matched = match_kernels(refs, t_kernels)
    keras_stats = keras_kernel_sparsity(model)
    return [
        KernelComparison(ks, t_kernels[matched[i]].stats if i in matched else None)
        for i, ks in enumerate(keras_stats)
    ]


@dataclasses.dataclass
class SparsityReport:
    """Per-kernel sparsity of a model and (optionally) of its export, with file sizes.

    Attributes:
        kernels: One :class:`KernelComparison` per Keras kernel (``tflite`` is ``None``
            when no file was given).
        bytes: Raw size of the ``.tflite`` file (``None`` without a file).
        bytes_gzip: Its gzip (level 9) size.

    Example:
        >>> r = SparsityReport([KernelComparison(KernelSparsity("k", (4,), 4, 3, "float32"),
        ...                                      None)], None, None)
        >>> r.keras_sparsity
        0.75
    """

    kernels: list[KernelComparison]
    bytes: int | None = None
    bytes_gzip: int | None = None

    @property
    def keras_sparsity(self) -> float:
        """Size-weighted sparsity of all Keras kernels.

        Example:
            >>> SparsityReport([]).keras_sparsity
            0.0
        """
        return overall_sparsity([c.keras for c in self.kernels])

    @property
    def tflite_sparsity(self) -> float | None:
        """Size-weighted sparsity of the matched TFLite kernels (``None`` without a file).

        Example:
            >>> SparsityReport([]).tflite_sparsity is None
            True
        """
        found = [c.tflite for c in self.kernels if c.tflite is not None]
        return overall_sparsity(found) if found else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: totals and one entry per kernel.

        Example:
            >>> SparsityReport([], 100, 60).to_dict()["bytes_gzip"]
            60
        """
        return {
            "keras_sparsity": self.keras_sparsity,
            "tflite_sparsity": self.tflite_sparsity,
            "bytes": self.bytes,
            "bytes_gzip": self.bytes_gzip,
            "kernels": [c.to_dict() for c in self.kernels],
        }

    def table(self) -> str:
        """A plain-text per-kernel table for logs and reports.

        Example:
            >>> print(SparsityReport([KernelComparison(
            ...     KernelSparsity("fc/kernel", (4, 2), 8, 4, "float32"), None)]).table())
            kernel     shape   keras  tflite  stored
            fc/kernel  (4, 2)  50.0%  -       -
        """
        rows = [("kernel", "shape", "keras", "tflite", "stored")]
        for c in self.kernels:
            t = c.tflite
            rows.append(
                (
                    c.keras.name,
                    str(c.keras.shape),
                    f"{100 * c.keras.sparsity:.1f}%",
                    "-" if t is None else f"{100 * t.sparsity:.1f}%",
                    "-" if t is None else ("sparse " if t.stored_sparse else "dense ") + t.dtype,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )


def sparsity_report(
    model: keras.Model, model_content: bytes | str | os.PathLike | None = None
) -> SparsityReport:
    """Per-kernel sparsity of ``model`` and of its export, plus raw and gzip file bytes.

    Args:
        model: The Keras model.
        model_content: Its ``.tflite`` export (bytes or path), or ``None`` for Keras only.

    Returns:
        The :class:`SparsityReport`.

    Example:
        >>> from pocketflow_tf import tflite_export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> sparsity_report(m, tflite_export.convert(m)).bytes > 0
        True
    """
    if model_content is None:
        return SparsityReport([KernelComparison(k, None) for k in keras_kernel_sparsity(model)])
    raw, gz = tflite_export.tflite_size(model_content)
    return SparsityReport(compare(model, model_content), raw, gz)


__all__ = [
    "KERNEL_OPS",
    "KernelComparison",
    "KernelSparsity",
    "SparsityReport",
    "compare",
    "decode_sparse_tensor",
    "keras_kernel_sparsity",
    "overall_sparsity",
    "sparsity_report",
    "tflite_kernel_sparsity",
]
