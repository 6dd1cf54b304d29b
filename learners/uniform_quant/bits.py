"""Per-layer weight bit-widths under an average-bits budget (mixed precision).

The budget is PocketFlow's ``uql_equivalent_bits``: the *weighted* average bit-width,
``sum(n_l * b_l) / sum(n_l)`` over the quantized kernels (``n_l`` weights in layer ``l``),
so a big layer at 3 bits costs more than a small one at 8.

The default allocation is sensitivity-based (in the spirit of HAWQ, with a measured rather
than Hessian-estimated sensitivity):

1. :func:`measure_sensitivity` fake-quantizes one layer at a time to each bit-width, exactly
   as QAT will (:func:`pocketflow_tf.qat.low_bit_weights` levels on TFMOT's 8-bit grid,
   per output channel for convolutions, per tensor for Dense), and measures the KL divergence of the model's predictions from the float
   model's on calibration images from the *training* data;
2. :func:`allocate` picks one bit-width per layer minimising the summed sensitivity under the
   budget: a multiple-choice knapsack, solved exactly as a small integer program with
   SciPy's ``milp`` (HiGHS) instead of a hand-written greedy or dynamic programme.

A search (issue 6's optimisers) plugs in instead through the ``bits_search`` hook of
:class:`~pocketflow_tf.learners.uniform_quant.UniformQuantLearner`: a callable
``(layers, budget, bit_min, bit_max) -> {layer name: bits}``; :func:`check_allocation`
holds its answer to the same rules.

Example:
    >>> layers = [LayerInfo("a", "Conv2D", 100), LayerInfo("b", "Dense", 300)]
    >>> table = {"a": {2: 5.0, 4: 1.0, 8: 0.0}, "b": {2: 0.5, 4: 0.1, 8: 0.0}}
    >>> allocate(layers, table, budget=3.5)  # the small, sensitive layer keeps 8 bits
    {'a': 8, 'b': 2}
    >>> average_bits(layers, {"a": 8, "b": 2})
    3.5
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import tensorflow as tf

from pocketflow_tf import errors, qat
from pocketflow_tf.compat import keras

#: ``bits_search(layers, budget, bit_min, bit_max) -> {layer name: bits}``.
BitsSearch = Callable[[Sequence["LayerInfo"], float, int, int], Mapping[str, int]]


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """A layer whose weights QAT quantizes.

    Attributes:
        name: Layer name.
        class_name: Keras class (``Conv2D``, ``DepthwiseConv2D``, ``Dense``).
        n_weights: Number of quantized weights (the kernel).
        channels: Output channels of the kernel (its last axis); one scale each for
            per-channel quantizers.
        per_channel: Whether the kernel is quantized per output channel.

    Example:
        >>> LayerInfo("fc", "Dense", 640, 10).to_dict()["n_weights"]
        640
    """

    name: str
    class_name: str
    n_weights: int
    channels: int = 1
    per_channel: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: What a weight bit-width option accepts (said by its error and the flag reference).
BITS_ACCEPTED = "an integer in 2..8 (symmetric 1-bit weights would keep only the level 0)"


def check_bits(name: str, value: Any) -> int:
    """``value`` as a weight bit-width (2..8), or a clear error.

    Example:
        >>> check_bits("uql_w_bit_min", 1)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `uql_w_bit_min`: 1. Accepted: an integer in 2..8 (symmetric 1-bit weights would keep only the level 0).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value not in qat.WEIGHT_BITS
    ):
        raise errors.InvalidArgumentError(name, value, BITS_ACCEPTED)
    return int(value)


def check_budget(budget: Any, bit_min: int, bit_max: int) -> float:
    """The average-bits budget, checked against the per-layer range.

    Example:
        >>> check_budget(1.5, 2, 8)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `uql_equivalent_bits`: 1.5. Accepted: a number in [uql_w_bit_min, uql_w_bit_max] = [2, 8] (no allocation of 2..8 bits per layer averages below 2).
    """
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget):
        raise errors.InvalidArgumentError("uql_equivalent_bits", budget, "a number in [2, 8]")
    if not bit_min <= budget <= bit_max:
        raise errors.InvalidArgumentError(
            "uql_equivalent_bits",
            budget,
            f"a number in [uql_w_bit_min, uql_w_bit_max] = [{bit_min}, {bit_max}] (no "
            f"allocation of {bit_min}..{bit_max} bits per layer averages below {bit_min})",
        )
    return float(budget)


def layer_infos(model: keras.Model) -> list[LayerInfo]:
    """The layers of ``model`` whose weights QAT quantizes, with their sizes.

    Example:
        >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, name="c"),
        ...                       keras.layers.Flatten(), keras.layers.Dense(3, name="fc")])
        >>> [(i.name, i.n_weights, i.channels, i.per_channel) for i in layer_infos(m)]
        [('c', 18, 2, True), ('fc', 24, 3, False)]
    """
    out = []
    for name in qat.quantized_weight_layers(model):
        layer = model.get_layer(name)
        kernel = kernel_variable(layer)
        out.append(
            LayerInfo(
                name,
                type(layer).__name__,
                int(np.prod(kernel.shape)),
                int(kernel.shape[-1]),
                _per_channel(layer),
            )
        )
    return out


def average_bits(layers: Sequence[LayerInfo], bits: Mapping[str, int]) -> float:
    """The weighted average bit-width of an allocation (the budget's measure).

    Example:
        >>> average_bits([LayerInfo("a", "Dense", 3), LayerInfo("b", "Dense", 1)],
        ...              {"a": 2, "b": 8})
        3.5
    """
    total = sum(i.n_weights for i in layers)
    return sum(i.n_weights * bits[i.name] for i in layers) / total


def check_allocation(
    layers: Sequence[LayerInfo], bits: Mapping[str, int], budget: float, bit_min: int, bit_max: int
) -> dict[str, int]:
    """``bits`` if it names every layer once, within ``[bit_min, bit_max]`` and the budget.

    Example:
        >>> check_allocation([LayerInfo("a", "Dense", 4)], {"a": 6}, 4.0, 2, 8)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `bits_search result`: {'a': 6}. Accepted: one bit-width in 2..8 per layer ['a'], averaging <= 4.0 bits (this averages 6.000).
    """
    names = [i.name for i in layers]
    out = {}
    ok = set(bits) == set(names)
    for name in names if ok else []:
        b = bits[name]
        ok = ok and not isinstance(b, bool) and isinstance(b, int | np.integer)
        ok = ok and bit_min <= b <= bit_max
        out[name] = int(b) if ok else 0
    avg = average_bits(layers, out) if ok else float("nan")
    if not ok or avg > budget + 1e-9:
        raise errors.InvalidArgumentError(
            "bits_search result",
            dict(bits),
            f"one bit-width in {bit_min}..{bit_max} per layer {names}, averaging <= {budget} "
            f"bits (this averages {avg:.3f})",
        )
    return out


def fake_quantize(kernel: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """``kernel`` as QAT will see it at ``bits``: :func:`pocketflow_tf.qat.low_bit_weights`
    levels, then TFMOT's 8-bit grid (TensorFlow's own fake-quant op, as in the wrappers).

    Example:
        >>> w = np.array([[-1.0, 0.2], [0.5, 0.9]], np.float32)
        >>> (fake_quantize(w, 2, per_channel=False) * 127).round().tolist()
        [[-127.0, 0.0], [0.0, 127.0]]
    """
    w = qat.low_bit_weights(kernel, bits, per_channel)
    if per_channel:
        flat = tf.reshape(w, (-1, w.shape[-1]))
        rng = tf.reduce_max(tf.abs(flat), axis=0)
        out = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            flat, -rng, rng, num_bits=8, narrow_range=True
        )
        return tf.reshape(out, w.shape).numpy()
    rng = tf.reduce_max(tf.abs(w))
    return tf.quantization.fake_quant_with_min_max_vars(
        w, -rng, rng, num_bits=8, narrow_range=True
    ).numpy()


def measure_sensitivity(
    model: keras.Model,
    x: np.ndarray,
    layers: Sequence[LayerInfo],
    bit_widths: Sequence[int],
    *,
    batch_size: int = 256,
) -> dict[str, dict[int, float]]:
    """KL divergence of the predictions when one layer's kernel is fake-quantized.

    Args:
        model: The float model (its weights are restored afterwards).
        x: Calibration images from the training data.
        layers: The layers to measure (:func:`layer_infos`).
        bit_widths: The bit-widths to try for each layer.
        batch_size: Inference batch size.

    Returns:
        ``{layer: {bits: mean KL(float || quantized)}}`` in nats; 0 for no change.

    Example:
        >>> table = measure_sensitivity(model, x, layer_infos(model), [2, 4, 8])  # doctest: +SKIP
    """

    ref = log_probs(model, x, batch_size)
    table: dict[str, dict[int, float]] = {}
    for info in layers:
        variable = kernel_variable(model.get_layer(info.name))
        original = variable.numpy()
        row = {}
        try:
            for b in bit_widths:
                variable.assign(fake_quantize(original, b, info.per_channel))
                row[int(b)] = mean_kl(ref, log_probs(model, x, batch_size))
        finally:
            variable.assign(original)
        table[info.name] = row
    return table


def log_probs(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Log-softmax of the model's logits on ``x`` (float64).

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> np.exp(log_probs(m, np.zeros((1, 2), np.float32))).round(3).tolist()
        [[0.333, 0.333, 0.333]]
    """
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return tf.nn.log_softmax(logits.astype(np.float64)).numpy()


def mean_kl(ref: np.ndarray, logq: np.ndarray) -> float:
    """Mean KL(p || q) in nats from log-probabilities (clipped at 0 against round-off).

    Example:
        >>> mean_kl(np.log([[0.5, 0.5]]), np.log([[0.5, 0.5]]))
        0.0
    """
    return float(max(np.mean(np.sum(np.exp(ref) * (ref - logq), axis=-1)), 0.0))


def allocate(
    layers: Sequence[LayerInfo],
    table: Mapping[str, Mapping[int, float]],
    budget: float,
) -> dict[str, int]:
    """Bits per layer minimising the summed sensitivity with ``average_bits <= budget``.

    Args:
        layers: The quantized layers.
        table: ``{layer: {bits: cost}}`` (:func:`measure_sensitivity`); the candidate
            bit-widths of a layer are its keys.
        budget: The weighted average bit-width allowed.

    Returns:
        ``{layer: bits}``.

    Raises:
        InvalidArgumentError: If no choice fits the budget (it is below every layer's
            smallest candidate).

    Example:
        >>> allocate([LayerInfo("a", "Dense", 10)], {"a": {4: 1.0, 8: 0.0}}, 8.0)
        {'a': 8}
    """
    choices = [(i, b) for i, info in enumerate(layers) for b in sorted(table[info.name])]
    cost = np.array([table[layers[i].name][b] for i, b in choices], float)
    total = float(sum(info.n_weights for info in layers))
    # One binary variable per (layer, bits): exactly one choice per layer, and the
    # weight-weighted bits within the budget.
    pick = np.zeros((len(layers), len(choices)))
    for j, (i, _) in enumerate(choices):
        pick[i, j] = 1.0
    size = np.array([[layers[i].n_weights * b / total for i, b in choices]])
    result = scipy.optimize.milp(
        cost,
        constraints=[
            scipy.optimize.LinearConstraint(pick, 1.0, 1.0),
            scipy.optimize.LinearConstraint(size, -np.inf, budget + 1e-9),
        ],
        integrality=np.ones(len(choices)),
        bounds=scipy.optimize.Bounds(0, 1),
    )
    if result.x is None:
        smallest = average_bits(layers, {i.name: min(table[i.name]) for i in layers})
        raise errors.InvalidArgumentError(
            "uql_equivalent_bits",
            budget,
            f"at least {smallest:.3f} (every layer at its fewest bits)",
        )
    return {layers[i].name: int(b) for (i, b), v in zip(choices, result.x, strict=True) if v > 0.5}


def kernel_variable(layer: keras.layers.Layer) -> tf.Variable:
    """The one kernel variable QAT quantizes in ``layer``.

    Example:
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> kernel_variable(m.get_layer("fc")).shape
        TensorShape([3, 2])
    """
    config = qat.registry_config(layer)
    weights = config.get_weights_and_quantizers(layer)
    if len(weights) != 1:  # Conv2D / DepthwiseConv2D / Dense: one kernel each
        raise errors.UnsupportedModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) quantizes {len(weights)} weight "
            "tensors; per-layer bit-widths cover single-kernel layers only"
        )
    return weights[0][0]


def _per_channel(layer: keras.layers.Layer) -> bool:
    return bool(getattr(qat.registry_config(layer).weight_quantizer, "per_axis", False))


__all__ = [
    "BitsSearch",
    "LayerInfo",
    "allocate",
    "average_bits",
    "check_allocation",
    "check_budget",
    "check_bits",
    "fake_quantize",
    "kernel_variable",
    "layer_infos",
    "log_probs",
    "mean_kl",
    "measure_sensitivity",
]
