"""Per-layer weight bits searched with the ask/tell optimisers (TPE, GP, random).

The sensitivity default (:mod:`~pocketflow_tf.learners.uniform_quant.bits`) adds up
one-layer-at-a-time measurements; quantization errors of several layers interact, so a
search scores whole allocations instead: each trial fake-quantizes *every* layer at its
proposed bits and measures the KL divergence from the float model on calibration images
(:func:`joint_kl`). Proposals are bounded to the budget the way AMC bounds its actions
(:func:`bound_to_budget`), so every scored allocation is feasible. The sensitivity
allocation is scored too and kept when no trial beats it: the search never returns worse
than the default on its own objective.

Example:
    >>> from pocketflow_tf.learners.uniform_quant import bits as bits_lib
    >>> layers = [bits_lib.LayerInfo("a", "Conv2D", 100), bits_lib.LayerInfo("b", "Dense", 300)]
    >>> bound_to_budget(layers, {"a": 8, "b": 8}, budget=4.0, bit_min=2)
    {'a': 4, 'b': 4}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import pocketflow_tf.hp_optimizers  # noqa: F401  (registers the optimisers)
from pocketflow_tf import options
from pocketflow_tf.compat import keras
from pocketflow_tf.hp_optimizers import base, in_memory, space
from pocketflow_tf.learners.uniform_quant import bits as bits_lib

#: Optimisers a search can use (``hp_optimizers`` names).
OPTIMIZERS = in_memory.OPTIMIZERS


def bound_to_budget(
    layers: Sequence[bits_lib.LayerInfo], bits: Mapping[str, int], budget: float, bit_min: int
) -> dict[str, int]:
    """``bits`` lowered until the weighted average is within ``budget`` (AMC's bounding).

    One bit at a time from the layer with the most bits (the most weights on ties): the
    biggest saving per step where precision is most plentiful.

    Example:
        >>> bound_to_budget([bits_lib.LayerInfo("a", "Dense", 10)], {"a": 6}, 2.5, 2)
        {'a': 2}
    """
    out = {info.name: int(bits[info.name]) for info in layers}
    size = {info.name: info.n_weights for info in layers}
    while bits_lib.average_bits(layers, out) > budget + 1e-9:
        candidates = [n for n in out if out[n] > bit_min]
        if not candidates:
            break
        name = max(candidates, key=lambda n: (out[n], size[n]))
        out[name] -= 1
    return out


def joint_kl(
    model: keras.Model,
    x: np.ndarray,
    layers: Sequence[bits_lib.LayerInfo],
    bits: Mapping[str, int],
    reference: np.ndarray | None = None,
    *,
    batch_size: int = 256,
) -> float:
    """Mean KL(float || quantized) with every layer fake-quantized at once (weights restored).

    Example:
        >>> joint_kl(model, x, layers, {"c1": 4, "fc": 3})  # doctest: +SKIP
    """
    ref = reference if reference is not None else bits_lib.log_probs(model, x, batch_size)
    saved = []
    try:
        for info in layers:
            variable = bits_lib.kernel_variable(model.get_layer(info.name))
            saved.append((variable, variable.numpy()))
            variable.assign(bits_lib.fake_quantize(saved[-1][1], bits[info.name], info.per_channel))
        logq = bits_lib.log_probs(model, x, batch_size)
    finally:
        for variable, value in saved:
            variable.assign(value)
    return bits_lib.mean_kl(ref, logq)


@dataclasses.dataclass
class SearchResult:
    """What a bit-width search found.

    Attributes:
        bits: The best allocation.
        kl: Its joint KL.
        start_kl: The joint KL of the starting (sensitivity) allocation.
        trials: ``[{"bits": ..., "kl": ...}]`` in the order scored.

    Example:
        >>> SearchResult({"a": 4}, 0.1, 0.2, []).to_dict()["kl"]
        0.1
    """

    bits: dict[str, int]
    kl: float
    start_kl: float
    trials: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def search_bits(
    model: keras.Model,
    x: np.ndarray,
    layers: Sequence[bits_lib.LayerInfo],
    budget: float,
    bit_min: int,
    bit_max: int,
    *,
    optimizer: str = "tpe",
    trials: int = 40,
    seed: int = 0,
    start: Mapping[str, int] | None = None,
) -> SearchResult:
    """Searches per-layer bits minimising :func:`joint_kl` under the budget.

    Args:
        model: The float model.
        x: Calibration images from the training data.
        layers: The quantized layers.
        budget: Weighted average bits allowed.
        bit_min: Fewest bits of a layer.
        bit_max: Most bits of a layer.
        optimizer: ``"tpe"``, ``"gp"`` or ``"random"``.
        trials: Allocations proposed by the optimiser.
        seed: The optimiser's seed.
        start: An allocation scored first and kept unless a trial beats it (e.g. the
            sensitivity allocation).

    Example:
        >>> search_bits(model, x, layers, 4.0, 2, 8, trials=20).bits  # doctest: +SKIP
    """
    in_memory.check_optimizer("uql_bits_search", optimizer)
    trials = options.check_integer("uql_search_trials", trials, low=1)
    ref = bits_lib.log_probs(model, x)
    starts = []
    if start is not None:
        start = bits_lib.check_allocation(layers, start, budget, bit_min, bit_max)
        starts.append(("start", start))
    opt = base.get(optimizer)(
        space.SearchSpace([space.Int(info.name, bit_min, bit_max) for info in layers]),
        seed=seed,
        direction="minimize",
    )
    result = in_memory.run(
        opt,
        lambda params: bound_to_budget(layers, params, budget, bit_min),
        lambda bits: joint_kl(model, x, layers, bits, ref),
        trials,
        starts=starts,
    )
    scored = [{"bits": h.plan, "kl": h.value} for h in result.history]
    best = result.best or result.history[0]  # every KL NaN: the first allocation scored
    start_kl = scored[0]["kl"] if start is not None else float("nan")
    return SearchResult(dict(best.plan), best.value, start_kl, scored)


__all__ = ["OPTIMIZERS", "SearchResult", "bound_to_budget", "joint_kl", "search_bits"]
