"""Which layers product quantization compresses, with what ``d`` and ``k``, and the exact size.

Rules, applied to the model's top-level layers in order:

* Only ``Conv2D`` (``groups=1``, ``channels_last``) and ``Dense`` are quantized. Every other
  layer with weights -- ``DepthwiseConv2D``, ``SeparableConv2D``, ``Conv1D/3D``, transposed
  convolutions, ``Embedding``, nested models, ... -- is kept float32 and listed with the
  reason (a stated fallback, never silent). So are layers named in ``exclude`` and layers
  called more than once (shared weights).
* Block size ``d``: for a convolution with a kernel larger than 1x1, ``block_conv`` (default
  ``kh * kw``: the spatial kernel of one input channel); for 1x1 convolutions and Dense,
  ``block_1x1``. ``d`` must divide ``kh * kw * c_in``; otherwise the plan raises an
  :class:`~pocketflow_tf.errors.InvalidArgumentError` naming the layer.
* Tiny layers stay float: fewer sub-vectors than codewords, or a compressed form that is not
  smaller than the float32 kernel.

Size, exactly: a quantized layer stores ``ceil(n_sub * log2(k) / 8)`` bytes of packed codes
plus ``k * d`` codebook entries at 2 bytes (float16, the default) or 4 (float32); every other
parameter of the model -- biases, all four BatchNorm vectors, float layers -- is counted at
4 bytes (float32, as stored). The ratio is against 4 bytes for every parameter.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> inp = keras.Input((8, 8, 16))
    >>> x = keras.layers.Conv2D(32, 3, use_bias=False, name="c")(inp)
    >>> m = keras.Model(inp, x)
    >>> p = make_plan(m, codebook_size=16)
    >>> lp = p.layer("c")
    >>> lp.block_size, lp.n_subvectors, lp.code_bytes, lp.codebook_bytes
    (9, 512, 256, 288)
    >>> p.compressed_bytes, p.float_bytes  # 4608 float32 weights -> 256 + 288 bytes
    (544, 18432)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pocketflow_tf import errors
from pocketflow_tf.compat import keras

#: Accepted codebook sizes: powers of two from 2 (1-bit codes) to 65536 (16-bit codes).
MIN_CODEBOOK, MAX_CODEBOOK = 2, 65536
#: Storage bytes of a codebook entry per dtype.
CODEBOOK_DTYPES = {"float16": 2, "float32": 4}


@dataclasses.dataclass
class LayerPlan:
    """What happens to one layer with weights.

    Attributes:
        name: Layer name.
        layer_type: Class name.
        n_params: All parameters of the layer (kernel, bias, ...).
        kernel_shape: The kernel's shape (``()`` for layers without a kernel).
        quantized: Whether it is product-quantized.
        reason: Why it stays float (empty when quantized).
        block_size: ``d`` (quantized layers only).
        codebook_size: ``k`` (quantized layers only).
        codebook_bytes_per_entry: 2 (float16) or 4 (float32).

    Example:
        >>> lp = LayerPlan("c", "Conv2D", 4608, (3, 3, 16, 32), True, "", 9, 256, 2)
        >>> lp.n_subvectors, lp.code_bits, lp.compressed_bytes
        (512, 8, 5120)
    """

    name: str
    layer_type: str
    n_params: int
    kernel_shape: tuple[int, ...]
    quantized: bool
    reason: str = ""
    block_size: int | None = None
    codebook_size: int | None = None
    codebook_bytes_per_entry: int = 2

    @property
    def kernel_params(self) -> int:
        """Entries of the kernel."""
        return int(np.prod(self.kernel_shape)) if self.kernel_shape else 0

    @property
    def n_subvectors(self) -> int:
        """``kernel_params / d`` (0 for float layers)."""
        return self.kernel_params // self.block_size if self.quantized else 0

    @property
    def code_bits(self) -> int:
        """Bits per code, ``log2(k)`` (0 for float layers)."""
        return int(self.codebook_size).bit_length() - 1 if self.quantized else 0

    @property
    def code_bytes(self) -> int:
        """Packed codes, ``ceil(n_sub * log2(k) / 8)``."""
        return math.ceil(self.n_subvectors * self.code_bits / 8)

    @property
    def codebook_bytes(self) -> int:
        """``k * d * bytes_per_entry``."""
        if not self.quantized:
            return 0
        return self.codebook_size * self.block_size * self.codebook_bytes_per_entry

    @property
    def float_bytes(self) -> int:
        """All the layer's parameters at float32."""
        return 4 * self.n_params

    @property
    def compressed_bytes(self) -> int:
        """Codes + codebook + the other parameters (bias) at float32; float layers: float32."""
        if not self.quantized:
            return self.float_bytes
        return self.code_bytes + self.codebook_bytes + 4 * (self.n_params - self.kernel_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures of this layer.

        Example:
            >>> LayerPlan("bn", "BatchNormalization", 64, (), False, "no kernel").to_dict()["compressed_bytes"]
            256
        """
        out = {
            "name": self.name,
            "type": self.layer_type,
            "params": self.n_params,
            "kernel_shape": list(self.kernel_shape),
            "quantized": self.quantized,
            "float_bytes": self.float_bytes,
            "compressed_bytes": self.compressed_bytes,
        }
        if self.quantized:
            out.update(
                block_size=self.block_size,
                codebook_size=self.codebook_size,
                n_subvectors=self.n_subvectors,
                code_bits=self.code_bits,
                code_bytes=self.code_bytes,
                codebook_bytes=self.codebook_bytes,
                ratio=self.float_bytes / self.compressed_bytes,
            )
        else:
            out["reason"] = self.reason
        return out


@dataclasses.dataclass
class Plan:
    """The plan of a whole model.

    Attributes:
        layers: One :class:`LayerPlan` per top-level layer with weights, in model order.
        total_params: ``model.count_params()``.
        codebook_dtype: ``"float16"`` or ``"float32"``.

    Example:
        >>> p = Plan([], 10, "float16")
        >>> p.compressed_bytes, p.float_bytes
        (40, 40)
    """

    layers: list[LayerPlan]
    total_params: int
    codebook_dtype: str

    @property
    def quantized(self) -> list[LayerPlan]:
        """The quantized layers, bottom-up."""
        return [lp for lp in self.layers if lp.quantized]

    def layer(self, name: str) -> LayerPlan:
        """The plan of layer ``name``.

        Example:
            >>> Plan([LayerPlan("bn", "BatchNormalization", 4, (), False)], 4, "float16").layer("bn").n_params
            4
        """
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(name)

    @property
    def float_bytes(self) -> int:
        """Every parameter at float32."""
        return 4 * self.total_params

    @property
    def compressed_bytes(self) -> int:
        """Quantized kernels at codes + codebooks, every other parameter at float32."""
        q = self.quantized
        return sum(lp.code_bytes + lp.codebook_bytes for lp in q) + 4 * (
            self.total_params - sum(lp.kernel_params for lp in q)
        )

    @property
    def ratio(self) -> float:
        """``float_bytes / compressed_bytes``."""
        return self.float_bytes / max(self.compressed_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready per-layer figures and totals.

        Example:
            >>> Plan([], 10, "float16").to_dict()["ratio"]
            1.0
        """
        q = self.quantized
        kernel_float = sum(4 * lp.kernel_params for lp in q)
        kernel_pq = sum(lp.code_bytes + lp.codebook_bytes for lp in q)
        return {
            "codebook_dtype": self.codebook_dtype,
            "layers": [lp.to_dict() for lp in self.layers],
            "quantized_layers": [lp.name for lp in q],
            "float_layers": {lp.name: lp.reason for lp in self.layers if not lp.quantized},
            "total_params": self.total_params,
            "float_bytes": self.float_bytes,
            "compressed_bytes": self.compressed_bytes,
            "code_bytes": sum(lp.code_bytes for lp in q),
            "codebook_bytes": sum(lp.codebook_bytes for lp in q),
            "other_float_bytes": self.compressed_bytes - kernel_pq,
            "ratio": self.ratio,
            "quantized_kernels_ratio": kernel_float / kernel_pq if kernel_pq else None,
        }


#: What a codebook size accepts (its error and the flag reference).
CODEBOOK_ACCEPTED = f"a power of two in {MIN_CODEBOOK}..{MAX_CODEBOOK} (codes of 1 to 16 bits)"


def check_codebook_size(name: str, k: Any) -> int:
    """Validates a codebook size: a power of two in 2..65536 (codes of 1 to 16 bits).

    Example:
        >>> check_codebook_size("pq_codebook_size", 100)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_codebook_size`: 100. Accepted: a power of two in 2..65536 (codes of 1 to 16 bits).
    """
    if (
        isinstance(k, bool)
        or not isinstance(k, int | np.integer)
        or not MIN_CODEBOOK <= k <= MAX_CODEBOOK
        or k & (k - 1)
    ):
        raise errors.InvalidArgumentError(name, k, CODEBOOK_ACCEPTED)
    return int(k)


def quantizable(layer: keras.layers.Layer) -> str:
    """Empty when ``layer`` can be product-quantized, else why not.

    Example:
        >>> quantizable(keras.layers.Dense(2)), quantizable(keras.layers.DepthwiseConv2D(3))
        ('', 'DepthwiseConv2D is not product-quantized (kept float32)')
        >>> quantizable(keras.layers.BatchNormalization())
        'BatchNormalization has no kernel (its parameters are kept float32)'
    """
    cls = type(layer).__name__
    if isinstance(layer, keras.Model):
        return f"nested model {cls} (kept float32; quantize its layers in a flat model)"
    if cls == "Dense":
        return ""
    if cls == "Conv2D":
        if layer.groups != 1:
            return f"grouped Conv2D (groups={layer.groups}) is not product-quantized (kept float32)"
        if layer.data_format != "channels_last":
            return "channels_first Conv2D is not product-quantized (kept float32)"
        return ""
    if "Normalization" in cls:
        return f"{cls} has no kernel (its parameters are kept float32)"
    return f"{cls} is not product-quantized (kept float32)"


def make_plan(
    model: keras.Model,
    codebook_size: int = 256,
    block_conv: int | None = None,
    block_1x1: int = 4,
    exclude: Sequence[str] = (),
    codebook_dtype: str = "float16",
) -> Plan:
    """Plans which layers to quantize and with which ``d`` and ``k`` (see the module rules).

    Raises:
        InvalidArgumentError: an ``exclude`` name that is not a layer, a block size that does
            not divide a layer's input rows, or no layer left to quantize.

    Example:
        >>> inp = keras.Input((6,))
        >>> m = keras.Model(inp, keras.layers.Dense(64, name="fc")(inp))
        >>> make_plan(m, codebook_size=16)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_block_size_1x1`: 4. Accepted: a divisor of 6, the input rows of layer 'fc' (kernel (6, 64)); or add 'fc' to pq_exclude to keep it float32.
    """
    names = {layer.name for layer in model.layers}
    for name in exclude:
        if name not in names:
            raise errors.InvalidArgumentError(
                "pq_exclude", name, f"names of layers of model '{model.name}'"
            )
    per_entry = CODEBOOK_DTYPES[codebook_dtype]
    out = []
    for layer in model.layers:
        n_params = int(layer.count_params()) if layer.weights else 0
        if not n_params:
            continue
        kernel = getattr(layer, "kernel", None)
        shape = tuple(int(s) for s in kernel.shape) if kernel is not None else ()
        reason = quantizable(layer)
        if not reason and layer.name in exclude:
            reason = "excluded (pq_exclude)"
        if not reason and len(layer._inbound_nodes) > 1:
            reason = "called more than once (shared weights; kept float32)"
        lp = LayerPlan(layer.name, type(layer).__name__, n_params, shape, False, reason)
        if reason:
            out.append(lp)
            continue
        rows = int(np.prod(shape[:-1]))
        spatial = len(shape) == 4 and shape[0] * shape[1] > 1
        arg = "pq_block_size_conv" if spatial else "pq_block_size_1x1"
        d = (block_conv or shape[0] * shape[1]) if spatial else block_1x1
        if rows * shape[-1] / d < codebook_size:
            lp.reason = (
                f"tiny: {rows * shape[-1] / d:g} sub-vectors of {d} < k = {codebook_size} "
                "codewords (kept float32)"
            )
            out.append(lp)
            continue
        if rows % d:
            raise errors.InvalidArgumentError(
                arg,
                d,
                f"a divisor of {rows}, the input rows of layer '{layer.name}' (kernel "
                f"{shape}); or add '{layer.name}' to pq_exclude to keep it float32",
            )
        lp.quantized, lp.block_size, lp.codebook_size = True, d, codebook_size
        lp.codebook_bytes_per_entry = per_entry
        if lp.code_bytes + lp.codebook_bytes >= 4 * lp.kernel_params:
            lp.quantized, lp.block_size, lp.codebook_size = False, None, None
            lp.reason = "codes + codebook would not be smaller than the float32 kernel"
        out.append(lp)
    plan = Plan(out, int(model.count_params()), codebook_dtype)
    if not plan.quantized:
        raise errors.InvalidArgumentError(
            "model",
            model.name,
            "a model with at least one Conv2D/Dense layer that product quantization shrinks; "
            "kept float: " + ("; ".join(f"{lp.name}: {lp.reason}" for lp in out) or "no weights"),
        )
    return plan


def plan_for_ratio(model: keras.Model, target_ratio: float, max_codebook_size: int, **kw) -> Plan:
    """The plan with the largest uniform ``k <= max_codebook_size`` reaching ``target_ratio``.

    Raises:
        InvalidArgumentError: when even ``k = 2`` falls short (the message gives the best
            ratio reachable).

    Example:
        >>> inp = keras.Input((8, 8, 16))
        >>> m = keras.Model(inp, keras.layers.Conv2D(64, 3, use_bias=False, name="c")(inp))
        >>> make_plan(m, 256).ratio < 10 <= plan_for_ratio(m, 10, 256).ratio
        True
        >>> plan_for_ratio(m, 1000, 256)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pq_target_ratio`: 1000. Accepted: a ratio <= 224.78, the most this model reaches (codebook size 2, the smallest).
    """
    best, best_k = 0.0, None
    k = max_codebook_size
    while k >= MIN_CODEBOOK:
        try:
            plan = make_plan(model, k, **kw)
        except errors.InvalidArgumentError as e:
            if e.name != "model":  # a real option error, not "nothing left to quantize"
                raise
            plan = None
        if plan is not None:
            if plan.ratio >= target_ratio:
                return plan
            if plan.ratio > best:
                best, best_k = plan.ratio, k
        k //= 2
    raise errors.InvalidArgumentError(
        "pq_target_ratio",
        target_ratio,
        f"a ratio <= {best:.2f}, the most this model reaches (codebook size {best_k}"
        + (", the smallest)" if best_k == MIN_CODEBOOK else ")"),
    )
