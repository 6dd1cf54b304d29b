"""Distinct weight values per clustered kernel, in a Keras model and in its ``.tflite`` file.

Clustering promises at most ``2 ** bits`` distinct values per weight tensor; what matters is
what the delivered file holds, so this module reads the kernels back from the flatbuffer.
Two things change a kernel between Keras and the file, both per *output channel*:

* the converter folds a ``BatchNormalization`` that follows a convolution into the kernel
  (``w * gamma / sqrt(var + eps)`` per output channel), in float and int8 files alike;
* int8 files quantize convolution kernels per output channel (each its own scale) and
  Dense kernels per tensor.

A per-channel scale maps each channel's <= k values to <= k values, but different channels
land on different values: a folded or per-channel-quantized kernel keeps <= k distinct
values *per output channel* and up to ``k * channels`` in total. So every kernel is reported
with both counts, and whether the file stores it as in Keras (``stored_as_is``).

Kernels are paired with the file's tensors by content, not by name, with the core's
helpers in :mod:`pocketflow_tf.sparsity` (TFLite tensor names are unreliable after fusion).

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import tflite_export
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.non_uniform import plan as plan_lib, tflite_values
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    >>> _ = m.get_layer("fc").kernel.assign(np.tile([0.5, -1.0], 6).reshape(4, 3))
    >>> p = plan_lib.make_plan(m, bits=1, quantize_all_layers=True)
    >>> [(v.distinct, v.max_per_channel) for v in tflite_values.keras_kernel_values(m, p)]
    [(2, 2)]
    >>> v = tflite_values.tflite_kernel_values(m, tflite_export.convert(m), p)[0]
    >>> v.tensor is not None, v.distinct, v.stored_as_is, v.within_limit
    (True, 2, True, True)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from pocketflow_tf import sparsity
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.non_uniform import plan as plan_lib


@dataclasses.dataclass(frozen=True)
class KernelValues:
    """Distinct values of one clustered weight tensor, in Keras or in a ``.tflite`` file.

    Attributes:
        name: ``"<layer path>/<weight>"`` of the Keras weight.
        clusters: The plan's clusters per tensor (the promised bound).
        distinct: Distinct values in the whole tensor.
        max_per_channel: Largest number of distinct values in one output channel.
        shape: Shape (TFLite layout for file tensors, e.g. ``(O, H, W, I)``).
        dtype: Element type as stored.
        tensor: The TFLite tensor name (``None`` for Keras, or if no tensor matched).
        stored_as_is: File tensors: whether the values are exactly the Keras kernel's
            (``False`` when BatchNorm was folded into it or it was quantized).

    Example:
        >>> v = KernelValues("c/kernel", 4, 28, 4, (8, 3, 3, 1), "float32", "t", False)
        >>> v.within_limit, v.within_limit_per_channel
        (False, True)
    """

    name: str
    clusters: int
    distinct: int
    max_per_channel: int
    shape: tuple[int, ...]
    dtype: str
    tensor: str | None = None
    stored_as_is: bool | None = None

    @property
    def within_limit(self) -> bool:
        """Whether the whole tensor holds at most ``clusters`` distinct values.

        Example:
            >>> KernelValues("k", 4, 4, 4, (4,), "float32").within_limit
            True
        """
        return self.distinct <= self.clusters

    @property
    def within_limit_per_channel(self) -> bool:
        """Whether every output channel holds at most ``clusters`` distinct values.

        Example:
            >>> KernelValues("k", 4, 9, 3, (3, 3), "int8").within_limit_per_channel
            True
        """
        return self.max_per_channel <= self.clusters

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (with both limit checks) for run records.

        Example:
            >>> KernelValues("k", 4, 4, 4, (2, 2), "int8").to_dict()["shape"]
            [2, 2]
        """
        return {
            **dataclasses.asdict(self),
            "shape": list(self.shape),
            "within_limit": self.within_limit,
            "within_limit_per_channel": self.within_limit_per_channel,
        }


def count_distinct(values: np.ndarray, channel_axis: int) -> tuple[int, int]:
    """``(distinct in total, max distinct in one channel along channel_axis)``.

    Example:
        >>> count_distinct(np.array([[1, 1, 2], [3, 4, 5]]), 0)
        (5, 3)
    """
    a = np.asarray(values)
    per = [np.unique(np.take(a, c, axis=channel_axis)).size for c in range(a.shape[channel_axis])]
    return int(np.unique(a).size), int(max(per, default=0))


def _layers_by_path(model: keras.Model) -> dict[str, tuple[Any, Any]]:
    """``{layer path: (outer layer, wrapped layer)}``, TFMOT wrappers looked through.

    Wrapped layers are keyed by the wrapped layer's own name (``ClusterWeights`` and QAT
    wrappers rename the wrapper, not the layer), so one plan serves every form of a model.
    """
    found = {}
    for path, layer in plan_lib.walk_layers(model):
        inner = layer
        while isinstance(inner, keras.layers.Wrapper):
            inner = inner.layer
        found[path[: len(path) - len(layer.name)] + inner.name] = (layer, inner)
    return found


def _weight_value(outer: Any, inner: Any, short: str) -> np.ndarray | None:
    """The value of weight ``short`` of ``inner`` (the variable, not a wrapper's tensor)."""
    if outer is not inner:
        # A QAT wrapper swaps the layer's kernel attribute for a fake-quantised tensor; the
        # variable is still among the wrapper's weights under the layer's own scope
        # ("conv/kernel:0"), while the wrapper's helpers ("quant_conv/kernel_min:0") differ.
        for w in outer.weights:
            if w.name.split(":")[0].endswith(f"{inner.name}/{short}"):
                return np.asarray(w.numpy())
    value = getattr(inner, short, None)
    return None if value is None or not hasattr(value, "numpy") else np.asarray(value.numpy())


def keras_kernel_values(model: keras.Model, plan: plan_lib.ClusterPlan) -> list[KernelValues]:
    """Distinct values of every clustered weight tensor of ``model`` (any TFMOT form).

    The output channel is the last axis (Keras layout). A ``ClusterWeights``-wrapped model
    reports its *original* (unclustered) weights here: strip it first.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> _ = m.get_layer("fc").kernel.assign(np.zeros((4, 3)))
        >>> p = plan_lib.make_plan(m, bits=1, quantize_all_layers=True)
        >>> keras_kernel_values(m, p)[0].distinct
        1
    """
    layers = _layers_by_path(model)
    out = []
    for lp in plan.clustered:
        for short in lp.weights:
            value = _weight_value(*layers[lp.name], short) if lp.name in layers else None
            if value is None:
                continue
            total, per = count_distinct(value, value.ndim - 1)
            out.append(
                KernelValues(
                    f"{lp.name}/{short}", plan.clusters, total, per, value.shape, str(value.dtype)
                )
            )
    return out


def tflite_kernel_values(
    model: keras.Model,
    model_content: bytes | str | os.PathLike,
    plan: plan_lib.ClusterPlan,
) -> list[KernelValues]:
    """Distinct values of every clustered kernel as stored in a ``.tflite`` file.

    Args:
        model: The Keras model the file was converted from (stripped clustered model, or
            the QAT model of an int8 export).
        model_content: Flatbuffer bytes or a ``.tflite`` path.
        plan: The clustering plan (which weights are clustered, how many clusters).

    Returns:
        One :class:`KernelValues` per clustered kernel; ``tensor`` is ``None`` (and the
        counts are 0) for a kernel no file tensor matched.

    Example:
        >>> tflite_kernel_values(model, "m.int8.tflite", plan)  # doctest: +SKIP
    """
    layers = _layers_by_path(model)
    # Core helpers: the file's kernel tensors (input 1 of CONV_2D / FULLY_CONNECTED / ...,
    # decoded if stored sparse) and the Keras -> TFLite layout; see pocketflow_tf.sparsity.
    t_kernels = sparsity.tflite_kernels(model_content)
    wanted = []
    for lp in plan.clustered:
        for short in lp.weights:
            value = _weight_value(*layers[lp.name], short) if lp.name in layers else None
            ref = None if value is None else sparsity.to_tflite_layout(lp.class_name, short, value)
            wanted.append((f"{lp.name}/{short}", ref))
    matched = sparsity.match_kernels([ref for _, ref in wanted], t_kernels)
    out = []
    for i, (name, ref) in enumerate(wanted):
        if i not in matched:
            out.append(KernelValues(name, plan.clusters, 0, 0, (), "", None, None))
            continue
        t = t_kernels[matched[i]]
        total, per = count_distinct(t.dense, t.channel_axis)
        same = bool(t.dense.dtype == ref.dtype and np.array_equal(t.dense, ref))
        out.append(
            KernelValues(
                name,
                plan.clusters,
                total,
                per,
                tuple(int(d) for d in t.dense.shape),
                t.stats.dtype,
                t.stats.name,
                same,
            )
        )
    return out


__all__ = ["KernelValues", "count_distinct", "keras_kernel_values", "tflite_kernel_values"]
