"""What the non-uniform learner did and what its files really hold: the learner's report.

Gathers the plan (clustered layers, float fallbacks with reasons), the distinct kernel
values after stripping, the codebook storage (:mod:`.storage`) and, when measured, the
``.tflite`` files: raw and gzip bytes (clustered weights repeat a few float32 patterns,
which gzip compresses: TFMOT's storage story), and the distinct values per kernel read
back from each file (:mod:`.tflite_values`).

Example:
    >>> from pocketflow_tf.learners.non_uniform import plan as plan_lib, report, storage
    >>> fc = plan_lib.LayerPlan("fc", "Dense", ("kernel",), ((64, 4),), 256, 260, True)
    >>> p = plan_lib.ClusterPlan(2, "linear", True, [fc])
    >>> r = report.NonUniformReport(p, storage.storage_report(p), [])
    >>> r.to_dict()["storage"]["total_bytes"], r.float_fallback
    (96, [])
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pocketflow_tf.learners.non_uniform import plan as plan_lib
from pocketflow_tf.learners.non_uniform import storage as storage_lib
from pocketflow_tf.learners.non_uniform.tflite_values import KernelValues


@dataclasses.dataclass
class FileReport:
    """A ``.tflite`` conversion of the result, as measured from its bytes.

    Attributes:
        mode: Conversion mode (``"float"`` or ``"int8"``).
        bytes: Raw size.
        bytes_gzip: gzip (level 9) size.
        kernels: Distinct values per clustered kernel, read back from the file.
        baseline_bytes: Raw size of the same conversion of the uncompressed input model.
        baseline_bytes_gzip: Its gzip size.

    Example:
        >>> FileReport("float", 1000, 400, [], 1000, 900).to_dict()["baseline_bytes_gzip"]
        900
    """

    mode: str
    bytes: int
    bytes_gzip: int
    kernels: list[KernelValues]
    baseline_bytes: int | None = None
    baseline_bytes_gzip: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for run records.

        Example:
            >>> FileReport("int8", 10, 8, []).to_dict()["kernels"]
            []
        """
        d = dataclasses.asdict(self)
        d["kernels"] = [k.to_dict() for k in self.kernels]
        return d


@dataclasses.dataclass
class NonUniformReport:
    """The non-uniform learner's report of one run.

    Attributes:
        plan: What was clustered and what stayed float (with reasons).
        storage: Codebook-format storage against float32.
        keras_kernels: Distinct values per clustered kernel of the stripped float model.
        qat_kernels: Distinct values per clustered kernel of the int8 QAT model (CQAT
            keeps <= clusters per output channel of a convolution); ``None`` without int8.
        tflite_float: The float ``.tflite`` of the clustered model, if measured.
        tflite_int8: The int8 ``.tflite`` of the QAT model, if measured.

    Example:
        >>> p = plan_lib.ClusterPlan(2, "linear", True, [])
        >>> NonUniformReport(p, storage_lib.storage_report(p), []).to_dict()["clusters"]
        4
    """

    plan: plan_lib.ClusterPlan
    storage: storage_lib.StorageReport
    keras_kernels: list[KernelValues]
    qat_kernels: list[KernelValues] | None = None
    tflite_float: FileReport | None = None
    tflite_int8: FileReport | None = None

    @property
    def float_fallback(self) -> list[str]:
        """``"name (Class): reason"`` for every layer with weights kept float.

        Example:
            >>> p = plan_lib.ClusterPlan(2, "linear", True, [])
            >>> NonUniformReport(p, storage_lib.storage_report(p), []).float_fallback
            []
        """
        return self.plan.float_fallback

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for run records (the ``compression`` section).

        Example:
            >>> p = plan_lib.ClusterPlan(2, "linear", True, [])
            >>> NonUniformReport(p, storage_lib.storage_report(p), []).to_dict()["tflite_int8"]
        """
        return {
            "bits": self.plan.bits,
            "clusters": self.plan.clusters,
            "init_style": self.plan.init_style,
            "quantize_all_layers": self.plan.quantize_all_layers,
            "clustered_layers": [p.name for p in self.plan.clustered],
            "float_fallback": self.float_fallback,
            "keras_kernels": [k.to_dict() for k in self.keras_kernels],
            "qat_kernels": None
            if self.qat_kernels is None
            else [k.to_dict() for k in self.qat_kernels],
            "storage": self.storage.to_dict(),
            "tflite_float": None if self.tflite_float is None else self.tflite_float.to_dict(),
            "tflite_int8": None if self.tflite_int8 is None else self.tflite_int8.to_dict(),
            "plan": self.plan.to_dict(),
        }

    def table(self) -> str:
        """A plain-text summary: per-kernel distinct values, storage totals, float layers.

        Example:
            >>> fc = plan_lib.LayerPlan("fc", "Dense", ("kernel",), ((64, 4),), 256, 260, True)
            >>> p = plan_lib.ClusterPlan(2, "linear", True, [fc])
            >>> k = [KernelValues("fc/kernel", 4, 4, 4, (64, 4), "float32")]
            >>> print(NonUniformReport(p, storage_lib.storage_report(p), k).table())
            kernel     keras  float file  int8 file
            fc/kernel  4      -           -
            codebook storage: 96 bytes (indices 64, centroids 16, float 16) vs float32 1040 bytes: 10.83x
        """

        def cell(kv: KernelValues | None) -> str:
            if kv is None or (kv.tensor is None and kv.dtype == ""):  # no file tensor matched
                return "-"
            if kv.distinct == kv.max_per_channel:
                return str(kv.distinct)
            return f"{kv.distinct} ({kv.max_per_channel}/channel)"

        by_name = {
            key: {k.name: k for k in (rep.kernels if rep is not None else [])}
            for key, rep in (("float", self.tflite_float), ("int8", self.tflite_int8))
        }
        rows = [("kernel", "keras", "float file", "int8 file")]
        for kv in self.keras_kernels:
            rows.append(
                (
                    kv.name,
                    cell(kv),
                    cell(by_name["float"].get(kv.name)),
                    cell(by_name["int8"].get(kv.name)),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        s = self.storage
        lines.append(
            f"codebook storage: {s.total_bytes} bytes (indices {s.index_bytes}, centroids "
            f"{s.codebook_bytes}, float {s.float_bytes}) vs float32 {s.float32_bytes} bytes: "
            f"{s.compression:.2f}x"
        )
        for rep in (self.tflite_float, self.tflite_int8):
            if rep is None:
                continue
            line = f"{rep.mode} .tflite: {rep.bytes} bytes, {rep.bytes_gzip} gzip"
            if rep.baseline_bytes_gzip is not None:
                line += (
                    f" (uncompressed model: {rep.baseline_bytes} bytes, "
                    f"{rep.baseline_bytes_gzip} gzip)"
                )
            lines.append(line)
        lines += [f"float fallback: {f}" for f in self.float_fallback]
        return "\n".join(lines)


__all__ = ["FileReport", "NonUniformReport"]
