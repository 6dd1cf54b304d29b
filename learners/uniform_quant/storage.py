"""What mixed-precision weights cost to store, and what the delivered int8 file really holds.

Storage (:func:`storage_report`) counts what a bit-packed format needs: ``ceil(n * b / 8)``
bytes of codes per kernel, one float32 scale per quantization channel (per output channel
for convolutions, one per Dense kernel), and every other parameter (biases, BatchNorm) in
float32. It is compared with the same model in float32 and with all kernels at 8 bits.

The deployable file is the int8 ``.tflite``: LiteRT computes in 8 bits, so a ``b``-bit
kernel is stored as int8 codes that, per output channel, take at most ``2**b - 1`` values
(the converter rescales QAT's ``b``-bit grid by ``127 / (2**(b-1) - 1)`` and folds BatchNorm
per channel, which keeps the count). :func:`tflite_levels` reads the kernels back from the
file and checks that bound -- the proof that the bit-widths survived the export.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.uniform_quant import bits as bits_lib
    >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc")])
    >>> rep = storage_report(m, bits_lib.layer_infos(m), {"fc": 4})
    >>> rep.code_bytes, rep.scale_bytes, rep.other_bytes, rep.total_bytes
    (16, 4, 16, 36)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pocketflow_tf import sparsity
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.uniform_quant import bits as bits_lib


@dataclasses.dataclass(frozen=True)
class LayerStorage:
    """One kernel's bit-width and bytes.

    Example:
        >>> LayerStorage("fc", 4, 32, 16, 4).to_dict()["bits"]
        4
    """

    name: str
    bits: int
    n_weights: int
    code_bytes: int
    scale_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StorageReport:
    """Bytes of a mixed-precision model in a bit-packed format, against float32 and int8.

    Attributes:
        layers: Per-kernel rows.
        average_bits: Weighted average bit-width of the kernels.
        code_bytes: Packed kernel codes.
        scale_bytes: Float32 quantization scales.
        other_bytes: The other parameters in float32 (biases, BatchNorm).
        float_bytes: The whole model in float32.
        int8_bytes: The same model with every kernel at 8 bits (same scales, same others).

    Example:
        >>> StorageReport([], 4.0, 10, 2, 4, 64, 26).total_bytes
        16
    """

    layers: list[LayerStorage]
    average_bits: float
    code_bytes: int
    scale_bytes: int
    other_bytes: int
    float_bytes: int
    int8_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.code_bytes + self.scale_bytes + self.other_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [row.to_dict() for row in self.layers],
            "average_bits": round(self.average_bits, 4),
            "code_bytes": self.code_bytes,
            "scale_bytes": self.scale_bytes,
            "other_bytes": self.other_bytes,
            "total_bytes": self.total_bytes,
            "float_bytes": self.float_bytes,
            "int8_bytes": self.int8_bytes,
            "vs_float": round(self.total_bytes / self.float_bytes, 4),
            "vs_int8": round(self.total_bytes / self.int8_bytes, 4),
        }


def storage_report(
    model: keras.Model, layers: Sequence[bits_lib.LayerInfo], bits: Mapping[str, int]
) -> StorageReport:
    """Bit-packed storage of ``model`` (float, before QAT wrapping) at ``bits`` per layer.

    Example:
        >>> storage_report(model, bits_lib.layer_infos(model), {"c1": 4})  # doctest: +SKIP
    """
    rows = []
    for info in layers:
        b = int(bits[info.name])
        scales = 4 * (info.channels if info.per_channel else 1)
        rows.append(LayerStorage(info.name, b, info.n_weights, _packed(info.n_weights, b), scales))
    params = int(sum(np.prod(w.shape) for w in model.weights))
    kernels = sum(info.n_weights for info in layers)
    scale_bytes = sum(row.scale_bytes for row in rows)
    other = 4 * (params - kernels)
    return StorageReport(
        rows,
        bits_lib.average_bits(layers, bits) if layers else 0.0,
        sum(row.code_bytes for row in rows),
        scale_bytes,
        other,
        4 * params,
        kernels + scale_bytes + other,
    )


@dataclasses.dataclass(frozen=True)
class FileLevels:
    """Distinct int8 values per output channel of one kernel in the ``.tflite`` file.

    Attributes:
        name: Layer name.
        bits: Its bit-width.
        max_per_channel: Most distinct values in one output channel of the file's kernel
            (0 if no file tensor matched the kernel).
        tensor: The TFLite tensor (``None`` if none matched).

    Example:
        >>> FileLevels("c", 3, 7, "t").within_limit
        True
    """

    name: str
    bits: int
    max_per_channel: int
    tensor: str | None

    @property
    def within_limit(self) -> bool:
        return self.tensor is not None and self.max_per_channel <= 2**self.bits - 1

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "within_limit": self.within_limit}


def tflite_levels(
    qat_model: keras.Model, model_content: bytes | str | os.PathLike, bits: Mapping[str, int]
) -> list[FileLevels]:
    """Checks each kernel of an int8 file against its layer's ``2**bits - 1`` levels.

    Kernels are paired with the file's tensors by content (the core's
    :func:`pocketflow_tf.sparsity.match_kernels`): TFLite names do not survive fusion.

    Args:
        qat_model: The QAT model the file was converted from.
        model_content: Flatbuffer bytes or a ``.tflite`` path.
        bits: ``{layer name: bits}``.

    Example:
        >>> tflite_levels(qat_model, "model.int8.tflite", {"c1": 4})  # doctest: +SKIP
    """
    names = list(bits)
    refs = []
    for name in names:
        inner, value = _qat_kernel(qat_model, name)
        short = "depthwise_kernel" if "Depthwise" in type(inner).__name__ else "kernel"
        refs.append(sparsity.to_tflite_layout(type(inner).__name__, short, value))
    t_kernels = sparsity.tflite_kernels(model_content)
    matched = sparsity.match_kernels(refs, t_kernels)
    out = []
    for i, name in enumerate(names):
        if i not in matched:
            out.append(FileLevels(name, int(bits[name]), 0, None))
            continue
        t = t_kernels[matched[i]]
        axis = t.channel_axis
        per = max(
            np.unique(np.take(t.dense, c, axis=axis)).size for c in range(t.dense.shape[axis])
        )
        out.append(FileLevels(name, int(bits[name]), int(per), t.stats.name))
    return out


def _qat_kernel(qat_model: keras.Model, name: str) -> tuple[keras.layers.Layer, np.ndarray]:
    """The wrapped layer ``name`` of a QAT model and its kernel variable's value."""
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name != name:
            continue
        # The QAT wrapper swaps the layer's kernel attribute for a fake-quantized tensor;
        # the variable stays among its weights under the layer's own scope.
        for w in layer.weights:
            short = w.name.split(":")[0]
            if short.endswith((f"{name}/kernel", f"{name}/depthwise_kernel")):
                return inner, np.asarray(w.numpy())
    raise KeyError(name)


def _packed(n: int, b: int) -> int:
    return math.ceil(n * b / 8)


__all__ = ["FileLevels", "LayerStorage", "StorageReport", "storage_report", "tflite_levels"]
