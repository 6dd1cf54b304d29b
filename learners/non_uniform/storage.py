"""Codebook storage size of a clustered model, layer by layer, against float32.

A clustered weight tensor is stored as its codebook (``2 ** bits`` float32 centroids, 4
bytes each) plus one ``bits``-wide cluster index per weight, bit-packed:
``ceil(n_weights * bits / 8)`` bytes. Everything else -- biases, BatchNorm parameters and
statistics, the weights of layers kept float -- counts at float32 (4 bytes per value).
The float32 baseline is every weight of the model at 4 bytes.

This is the size of the *codebook format* (Deep Compression's storage, what a runtime with
a table lookup would load). A ``.tflite`` file stores clustered weights as ordinary float32
(or int8) tensors with few distinct values, which gzip compresses well: that is TFMOT's
storage story, measured separately (:mod:`.report`).

Example:
    >>> from pocketflow_tf.learners.non_uniform import plan, storage
    >>> fc = plan.LayerPlan("fc", "Dense", ("kernel",), ((64, 4),), 256, 260, True)
    >>> row = storage.layer_storage(fc, bits=2)
    >>> row.index_bytes, row.codebook_bytes, row.float_bytes, row.total_bytes, row.float32_bytes
    (64, 16, 16, 96, 1040)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from pocketflow_tf.learners.non_uniform import options
from pocketflow_tf.learners.non_uniform import plan as plan_lib

#: Bytes of one float32 value (centroids and float weights).
FLOAT32_BYTES = 4


def packed_index_bytes(n_weights: int, bits: int) -> int:
    """Bytes of ``n_weights`` cluster indices of ``bits`` bits each, bit-packed.

    Example:
        >>> packed_index_bytes(10, 3)  # 30 bits -> 4 bytes
        4
    """
    return math.ceil(int(n_weights) * options.check_bits(bits) / 8)


@dataclasses.dataclass(frozen=True)
class LayerStorage:
    """Storage of one layer in codebook format.

    Attributes:
        name: Layer path.
        class_name: Keras class.
        clustered: Whether its clusterable weights are stored as codebook + indices.
        index_bytes: Bit-packed cluster indices (0 for float layers).
        codebook_bytes: float32 centroids, ``clusters * 4`` per clustered weight tensor.
        float_bytes: Weights stored float32 (bias, BN, a float layer's every weight).
        float32_bytes: The whole layer at float32.

    Example:
        >>> LayerStorage("bn", "BatchNormalization", False, 0, 0, 64, 64).total_bytes
        64
    """

    name: str
    class_name: str
    clustered: bool
    index_bytes: int
    codebook_bytes: int
    float_bytes: int
    float32_bytes: int

    @property
    def total_bytes(self) -> int:
        """Indices + codebooks + float weights.

        Example:
            >>> LayerStorage("fc", "Dense", True, 64, 16, 16, 1040).total_bytes
            96
        """
        return self.index_bytes + self.codebook_bytes + self.float_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (with ``total_bytes``) for run records.

        Example:
            >>> LayerStorage("fc", "Dense", True, 64, 16, 16, 1040).to_dict()["total_bytes"]
            96
        """
        return {**dataclasses.asdict(self), "total_bytes": self.total_bytes}


def layer_storage(layer: plan_lib.LayerPlan, bits: int) -> LayerStorage:
    """Codebook-format bytes of one planned layer.

    Example:
        >>> bn = plan_lib.LayerPlan("bn", "BatchNormalization", (), (), 0, 32, False, "no")
        >>> layer_storage(bn, 4).total_bytes
        128
    """
    k = options.num_clusters(bits)
    float32 = FLOAT32_BYTES * layer.total_params
    if not layer.clustered:
        return LayerStorage(layer.name, layer.class_name, False, 0, 0, float32, float32)
    # One codebook and one index array per clustered weight tensor, as TFMOT clusters them.
    index = sum(packed_index_bytes(int(np.prod(s)), bits) for s in layer.shapes)
    codebook = FLOAT32_BYTES * k * len(layer.shapes)
    return LayerStorage(
        layer.name,
        layer.class_name,
        True,
        index,
        codebook,
        FLOAT32_BYTES * layer.float_params,
        float32,
    )


@dataclasses.dataclass
class StorageReport:
    """Codebook-format storage of a whole model.

    Attributes:
        bits: Index bits.
        clusters: Centroids per clustered weight tensor.
        layers: One :class:`LayerStorage` per layer holding weights.

    Example:
        >>> r = StorageReport(2, 4, [LayerStorage("fc", "Dense", True, 64, 16, 16, 1040)])
        >>> r.total_bytes, r.float32_bytes, round(r.compression, 2)
        (96, 1040, 10.83)
    """

    bits: int
    clusters: int
    layers: list[LayerStorage]

    @property
    def index_bytes(self) -> int:
        """All bit-packed indices.

        Example:
            >>> StorageReport(2, 4, []).index_bytes
            0
        """
        return sum(r.index_bytes for r in self.layers)

    @property
    def codebook_bytes(self) -> int:
        """All float32 centroids.

        Example:
            >>> StorageReport(2, 4, []).codebook_bytes
            0
        """
        return sum(r.codebook_bytes for r in self.layers)

    @property
    def float_bytes(self) -> int:
        """All weights kept float32.

        Example:
            >>> StorageReport(2, 4, []).float_bytes
            0
        """
        return sum(r.float_bytes for r in self.layers)

    @property
    def total_bytes(self) -> int:
        """The model in codebook format.

        Example:
            >>> StorageReport(2, 4, []).total_bytes
            0
        """
        return self.index_bytes + self.codebook_bytes + self.float_bytes

    @property
    def float32_bytes(self) -> int:
        """The model at float32.

        Example:
            >>> StorageReport(2, 4, []).float32_bytes
            0
        """
        return sum(r.float32_bytes for r in self.layers)

    @property
    def compression(self) -> float:
        """``float32_bytes / total_bytes`` (1.0 for an empty report).

        Example:
            >>> StorageReport(2, 4, []).compression
            1.0
        """
        return self.float32_bytes / self.total_bytes if self.total_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Totals and per-layer rows as a JSON-ready dict.

        Example:
            >>> StorageReport(2, 4, []).to_dict()["total_bytes"]
            0
        """
        return {
            "bits": self.bits,
            "clusters": self.clusters,
            "index_bytes": self.index_bytes,
            "codebook_bytes": self.codebook_bytes,
            "float_bytes": self.float_bytes,
            "total_bytes": self.total_bytes,
            "float32_bytes": self.float32_bytes,
            "compression": self.compression,
            "layers": [r.to_dict() for r in self.layers],
        }


def storage_report(plan: plan_lib.ClusterPlan) -> StorageReport:
    """Codebook-format storage of every layer of a plan, and the totals.

    Example:
        >>> fc = plan_lib.LayerPlan("fc", "Dense", ("kernel",), ((64, 4),), 256, 260, True)
        >>> storage_report(plan_lib.ClusterPlan(2, "linear", True, [fc])).total_bytes
        96
    """
    rows = [layer_storage(p, plan.bits) for p in plan.layers]
    return StorageReport(plan.bits, plan.clusters, rows)


__all__ = [
    "FLOAT32_BYTES",
    "LayerStorage",
    "StorageReport",
    "layer_storage",
    "packed_index_bytes",
    "storage_report",
]
