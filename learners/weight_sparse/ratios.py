"""Which layers to prune, and by how much: the per-layer ratio protocols.

:func:`layer_infos` lists every layer that holds a kernel, with the number of weights TFMOT
would prune in it and, for layers left dense, why. :func:`resolve_ratios` turns a target
sparsity into per-layer ratios with PocketFlow's protocols (``ws_prune_ratio_prtl``):

* ``uniform``: every pruned layer gets the target.
* ``heurist``: PocketFlow's heuristic -- bigger layers are pruned more, the ratio of layer
  ``l`` being ``alpha * log(n_l)`` (``n_l`` its prunable weights), with ``alpha`` chosen so
  that the parameter-weighted sparsity of the pruned layers is the target. Ratios are
  clamped to ``[0, max_ratio]`` and what the clamp removes is redistributed to the other
  layers (``alpha`` is solved with the clamp in place).
* ``optimal``: searched per layer under the global target by a ``ratio_search`` callable
  (:class:`~.optimal_search.ProxyRatioSearch`, TPE/GP/random on a no-training proxy, is
  the learner's default). Without a callable this protocol
  is an error -- it never silently falls back to another protocol, since the user asked for
  a searched allocation and would otherwise get a heuristic one without noticing.

The target is the parameter-weighted sparsity of the *pruned* layers; layers left dense
(first/last, small, or not prunable by TFMOT) are outside it and listed with their reason.

Example:
    >>> from pocketflow_tf.learners.weight_sparse import ratios
    >>> infos = [ratios.LayerInfo("a", "Conv2D", ((3, 3, 16, 16),), 2304, 0, True),
    ...          ratios.LayerInfo("b", "Conv2D", ((3, 3, 64, 64),), 36864, 1, True)]
    >>> r = ratios.resolve_ratios("heurist", infos, 0.8)
    >>> r["a"] < r["b"], round(ratios.weighted_sparsity(infos, r), 6)
    (True, 0.8)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from tensorflow_model_optimization.python.core.sparsity.keras import (
    prunable_layer,
    prune_registry,
)

from pocketflow_tf import errors
from pocketflow_tf.compat import keras

#: Per-layer ratio protocols (PocketFlow's ``ws_prune_ratio_prtl``).
PROTOCOLS = ("uniform", "heurist", "optimal")
#: Largest per-layer ratio a protocol may assign: a layer pruned to 100 % cuts the network.
MAX_LAYER_RATIO = 0.99

#: ``ratio_search(layer_infos, target) -> {layer name: ratio}``: the hook of ``optimal``.
RatioSearch = Callable[[list["LayerInfo"], float], Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """A layer holding a kernel, as the ratio protocols see it.

    Attributes:
        name: Layer path: its name, ``"sub/name"`` inside a nested model ``sub``.
        class_name: Keras class of the layer.
        weight_shapes: Shapes of the weights TFMOT would prune (empty if none).
        params: Number of those weights.
        index: Position among the kernel layers, in graph order.
        prunable: Whether the layer will be pruned.
        reason: Why the layer is left dense (``None`` when it is pruned).
        flops: FLOPs of the layer for one sample (from :mod:`pocketflow_tf.accounting`), a
            cue for searches that care about compute; ``None`` if unknown.

    Example:
        >>> LayerInfo("fc", "Dense", ((64, 10),), 640, 3, False, "fewer than 1000 weights").params
        640
    """

    name: str
    class_name: str
    weight_shapes: tuple[tuple[int, ...], ...]
    params: int
    index: int
    prunable: bool
    reason: str | None = None
    flops: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for records.

        Example:
            >>> LayerInfo("fc", "Dense", ((4, 2),), 8, 0, True).to_dict()["weight_shapes"]
            [[4, 2]]
        """
        d = dataclasses.asdict(self)
        d["weight_shapes"] = [list(s) for s in self.weight_shapes]
        return d


def prunable_weights(layer: keras.layers.Layer) -> list:
    """The weights TFMOT's ``prune_low_magnitude`` would prune in ``layer`` (maybe none).

    Uses TFMOT's own registry (kernels of Conv/Dense, the pointwise kernel of separable
    convolutions, none for ``DepthwiseConv2D``) or a custom layer's ``get_prunable_weights``.

    Example:
        >>> d = keras.layers.Dense(3)
        >>> d.build((None, 4))
        >>> [tuple(w.shape) for w in prunable_weights(d)]
        [(4, 3)]
    """
    if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    registry = prune_registry.PruneRegistry
    if type(layer) not in registry._LAYERS_WEIGHTS_MAP:
        return []
    found = []
    for attr in registry._weight_names(layer):
        obj = layer
        for part in attr.split("."):  # MultiHeadAttention lists "_query_dense.kernel"
            obj = getattr(obj, part, None)
        if obj is not None:
            found.append(obj)
    return found


def _has_kernel(layer: keras.layers.Layer) -> bool:
    return any("kernel" in w.name.split("/")[-1] for w in layer.weights)


def walk_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields ``(path, layer)`` for every leaf layer, nested functional models expanded (the
    paths :class:`LayerInfo` names).

    Example:
        >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")],
        ...                          name="sub")
        >>> outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="o")])
        >>> [path for path, _ in walk_layers(outer)]
        ['sub/d', 'o']
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


def layer_infos(
    model: keras.Model,
    *,
    min_params: int = 1000,
    skip_first_last: bool = True,
    m_by_n: tuple[int, int] | None = None,
) -> list[LayerInfo]:
    """Lists the kernel layers of ``model`` and decides which ones are pruned.

    Left dense, each with its reason: layers TFMOT cannot prune (``DepthwiseConv2D``: its
    registry maps no weight of it; unknown custom layers), layers with fewer than
    ``min_params`` prunable weights (little to gain, much to lose), the first and last
    prunable layers when ``skip_first_last`` (the stem conv sees raw pixels and the logits
    layer decides; both are small), and with ``m_by_n`` layers whose input dimension is not
    a multiple of ``n`` (TFMOT would pad the blocks and break the N:M pattern).

    Args:
        model: A built functional or Sequential model.
        min_params: Layers with fewer prunable weights stay dense.
        skip_first_last: Keep the first and last prunable layers dense.
        m_by_n: Structured ``(m, n)`` sparsity (``m`` zeros in every ``n``), or ``None``.

    Returns:
        One :class:`LayerInfo` per kernel layer, in graph order.

    Example:
        >>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="a"),
        ...                       keras.layers.Dense(64, name="b"),
        ...                       keras.layers.Dense(10, name="c")])
        >>> [(i.name, i.prunable) for i in layer_infos(m, min_params=100)]
        [('a', False), ('b', True), ('c', False)]
    """
    from pocketflow_tf import accounting  # local: only needed for the FLOPs cue

    flops = {row.name: row.flops for row in accounting.profile_model(model).layers}
    rows = []
    for path, layer in walk_layers(model):
        weights = prunable_weights(layer)
        if not weights and not _has_kernel(layer):
            continue
        shapes = tuple(tuple(int(d) for d in w.shape) for w in weights)
        rows.append([path, layer, shapes, int(sum(int(np.prod(s)) for s in shapes))])

    prunable_rows = [i for i, r in enumerate(rows) if r[3] > 0]
    first_last = {prunable_rows[0], prunable_rows[-1]} if prunable_rows else set()
    infos = []
    for i, (path, layer, shapes, n) in enumerate(rows):
        reason = None
        if n == 0:
            reason = f"TFMOT prunes no weight of {type(layer).__name__}"
        elif skip_first_last and i in first_last:
            reason = "first prunable layer" if i == prunable_rows[0] else "last prunable layer"
        elif n < min_params:
            reason = f"fewer than ws_min_params={min_params} weights"
        elif m_by_n is not None:
            bad = [s for s in shapes if len(s) not in (2, 4) or s[-2] % m_by_n[1]]
            if bad:
                reason = (
                    f"input dimension of kernel {bad[0]} is not a multiple of {m_by_n[1]} "
                    f"({m_by_n[0]}:{m_by_n[1]} sparsity)"
                )
        infos.append(
            LayerInfo(
                name=path,
                class_name=type(layer).__name__,
                weight_shapes=shapes,
                params=n,
                index=i,
                prunable=reason is None,
                reason=reason,
                flops=flops.get(path),
            )
        )
    return infos


def weighted_sparsity(infos: list[LayerInfo], ratios: Mapping[str, float]) -> float:
    """Parameter-weighted sparsity of the layers named in ``ratios``.

    Example:
        >>> infos = [LayerInfo("a", "Dense", ((10, 10),), 100, 0, True),
        ...          LayerInfo("b", "Dense", ((10, 30),), 300, 1, True)]
        >>> weighted_sparsity(infos, {"a": 0.2, "b": 0.6})
        0.5
    """
    sizes = {i.name: i.params for i in infos}
    total = sum(sizes[name] for name in ratios)
    return float(sum(sizes[name] * r for name, r in ratios.items()) / total) if total else 0.0


def check_target(value: Any, name: str = "ws_prune_ratio") -> float:
    """Validates a target sparsity: a number in ``[0, 1)``.

    Example:
        >>> check_target(1.0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `ws_prune_ratio`: 1.0. Accepted: a number in [0, 1) (the share of weights set to zero).
    """
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) < 1.0:
        raise errors.InvalidArgumentError(
            name, value, "a number in [0, 1) (the share of weights set to zero)"
        )
    return float(value)


def heurist_ratios(
    infos: list[LayerInfo], target: float, max_ratio: float = MAX_LAYER_RATIO
) -> dict[str, float]:
    """PocketFlow's ``heurist`` protocol with clamping: ``ratio_l = min(max_ratio, a*log n_l)``.

    ``a`` is found by bisection so that the parameter-weighted sparsity of ``infos`` is
    exactly ``target``; layers hitting ``max_ratio`` pass their excess to the others.

    Raises:
        InvalidArgumentError: If ``target`` exceeds ``max_ratio`` (not reachable).

    Example:
        >>> infos = [LayerInfo("a", "Dense", ((10, 100),), 1000, 0, True),
        ...          LayerInfo("b", "Dense", ((100, 1000),), 100000, 1, True)]
        >>> r = heurist_ratios(infos, 0.988)  # "b" is clamped, "a" takes over the excess
        >>> r["b"], round(r["a"], 3), round(weighted_sparsity(infos, r), 6)
        (0.99, 0.788, 0.988)
    """
    target = check_target(target)
    if target > max_ratio:
        raise errors.InvalidArgumentError(
            "ws_prune_ratio", target, f"a number <= {max_ratio} with ws_prune_ratio_prtl='heurist'"
        )
    sizes = np.array([i.params for i in infos], dtype=np.float64)
    logs = np.log(np.maximum(sizes, 1.0))
    if target == 0.0 or not logs.any():
        return {i.name: target for i in infos}

    def overall(alpha: float) -> float:
        return float(np.sum(sizes * np.minimum(max_ratio, alpha * logs)) / np.sum(sizes))

    # overall() is continuous and non-decreasing in alpha, 0 at 0 and max_ratio (>= target)
    # once every layer is clamped: bisection finds the alpha hitting the target.
    lo, hi = 0.0, max_ratio / logs[logs > 0].min()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if overall(mid) < target else (lo, mid)
    if abs(overall(hi) - target) > 1e-6:  # only single-weight layers (log 1 = 0) could do this
        raise errors.InvalidArgumentError(
            "ws_prune_ratio", target, "a target the heuristic can reach on these layers"
        )
    return {i.name: float(min(max_ratio, hi * lg)) for i, lg in zip(infos, logs, strict=True)}


def resolve_ratios(
    protocol: str,
    infos: list[LayerInfo],
    target: float,
    *,
    ratio_search: RatioSearch | None = None,
    max_ratio: float = MAX_LAYER_RATIO,
) -> dict[str, float]:
    """Per-layer ratios of the prunable layers among ``infos`` for a target sparsity.

    Args:
        protocol: One of :data:`PROTOCOLS`.
        infos: Output of :func:`layer_infos`; only ``prunable`` entries get a ratio.
        target: Parameter-weighted sparsity of the pruned layers, in ``[0, 1)``.
        ratio_search: ``ratio_search(prunable_infos, target) -> {name: ratio}`` for
            ``optimal``; its answer must name exactly the prunable layers, with ratios in
            ``[0, max_ratio]`` whose weighted sparsity is at least ``target`` (less 0.1 pt).
        max_ratio: Largest ratio of one layer.

    Returns:
        ``{layer name: ratio}``.

    Raises:
        InvalidArgumentError: On an unknown protocol, a bad target, ``optimal`` without a
            search, or a search answer breaking the contract above.

    Example:
        >>> infos = [LayerInfo("a", "Dense", ((10, 100),), 1000, 0, True)]
        >>> resolve_ratios("uniform", infos, 0.5)
        {'a': 0.5}
        >>> resolve_ratios("optimal", infos, 0.5, ratio_search=lambda infos, t: {"a": 0.6})
        {'a': 0.6}
    """
    if protocol not in PROTOCOLS:
        raise errors.InvalidArgumentError("ws_prune_ratio_prtl", protocol, f"one of {PROTOCOLS}")
    target = check_target(target)
    pruned = [i for i in infos if i.prunable]
    if protocol == "uniform":
        return {i.name: target for i in pruned}
    if protocol == "heurist":
        return heurist_ratios(pruned, target, max_ratio)
    if ratio_search is None or not callable(ratio_search):
        raise errors.InvalidArgumentError(
            "ratio_search",
            ratio_search,
            "a callable ratio_search(layer_infos, target) -> {layer name: ratio} with "
            "ws_prune_ratio_prtl='optimal' (WeightSparseLearner builds one itself: "
            "optimal_search.ProxyRatioSearch)",
        )
    found = dict(ratio_search(list(pruned), target))
    names = {i.name for i in pruned}
    if set(found) != names:
        raise errors.InvalidArgumentError(
            "ratio_search",
            f"an answer naming {sorted(found)}",
            f"a ratio for exactly the prunable layers {sorted(names)}",
        )
    for name, r in found.items():
        ok = isinstance(r, int | float | np.floating) and math.isfinite(r)
        if not ok or not 0.0 <= r <= max_ratio:
            raise errors.InvalidArgumentError(
                "ratio_search", {name: r}, f"ratios in [0, {max_ratio}]"
            )
    reached = weighted_sparsity(pruned, found)
    if reached < target - 1e-3:
        raise errors.InvalidArgumentError(
            "ratio_search",
            f"ratios of weighted sparsity {reached:.4f}",
            f"ratios meeting the target sparsity {target}",
        )
    return {name: float(r) for name, r in found.items()}


__all__ = [
    "MAX_LAYER_RATIO",
    "PROTOCOLS",
    "LayerInfo",
    "RatioSearch",
    "check_target",
    "heurist_ratios",
    "layer_infos",
    "prunable_weights",
    "resolve_ratios",
    "walk_layers",
    "weighted_sparsity",
]
