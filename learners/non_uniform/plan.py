"""Which layers are clustered, which stay float and why; and the clustering wrap itself.

:func:`make_plan` lists every layer of a model that holds weights and decides, per layer:

* clustered -- TFMOT's clustering registry names the weights to cluster (the kernel of
  Conv/Dense layers, the pointwise kernel of separable convolutions, Embedding tables) or
  the layer is a TFMOT ``ClusterableLayer``;
* float, with the reason: layers whose weights TFMOT does not cluster (``BatchNormalization``,
  ``DepthwiseConv2D`` -- TFMOT lists it without weights: clustering it costs accuracy that
  fine-tuning does not recover --, ``LayerNormalization``); layers outside TFMOT's registry
  (custom layers, RNNs and attention, which this learner leaves alone); the first and last
  clusterable layers unless ``nuql_quantize_all_layers`` (PocketFlow's default: the stem
  sees raw pixels and the logits layer decides, both are small); and kernels with no more
  weights than clusters (the codebook would not be smaller than the kernel; TFMOT itself
  silently skips such Conv2D layers).

:func:`wrap_for_clustering` wraps the chosen layers one by one with TFMOT's
``cluster_weights``. Why not on the whole model: like ``prune_low_magnitude``, a whole-model
call wraps *every* layer, so one layer TFMOT does not know (a custom layer; ``Rescaling``
also trips the pruning registry) fails the whole model, and the layers meant to stay float
could not be chosen.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.non_uniform import plan
    >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c1"),
    ...                       keras.layers.BatchNormalization(name="bn"),
    ...                       keras.layers.Conv2D(4, 3, name="c2"), keras.layers.Flatten(),
    ...                       keras.layers.Dense(2, name="fc")])
    >>> p = plan.make_plan(m, bits=2)
    >>> [l.name for l in p.clustered]
    ['c2']
    >>> p.float_fallback
    ['c1 (Conv2D): first clusterable layer (kept float; nuql_quantize_all_layers=True clusters it)', 'bn (BatchNormalization): TFMOT clusters no weight of BatchNormalization', 'fc (Dense): last clusterable layer (kept float; nuql_quantize_all_layers=True clusters it)']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.clustering.keras import (
    clusterable_layer,
    clustering_registry,
)

from pocketflow_tf import errors, learner
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.non_uniform import options

_REGISTRY = clustering_registry.ClusteringRegistry
#: Why TFMOT lists a layer with no clusterable weight, where it says so.
_TFMOT_WHY = {"DepthwiseConv2D": " (TFMOT: accuracy loss that fine-tuning does not recover)"}


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One layer holding weights, clustered or kept float.

    Attributes:
        name: Layer path: its name, ``"sub/name"`` inside a nested model ``sub``.
        class_name: Keras class of the layer.
        weights: Short names of the weights that are (or would be) clustered, e.g.
            ``("kernel",)``; empty when TFMOT clusters nothing in the layer.
        shapes: Their shapes.
        clustered_params: Number of weights in them.
        total_params: Every weight of the layer (trainable or not: bias, BN statistics...).
        clustered: Whether the layer is clustered.
        reason: Why it stays float (``None`` when clustered).

    Example:
        >>> LayerPlan("fc", "Dense", ("kernel",), ((64, 10),), 640, 650, True).float_params
        10
    """

    name: str
    class_name: str
    weights: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    clustered_params: int
    total_params: int
    clustered: bool
    reason: str | None = None

    @property
    def float_params(self) -> int:
        """Weights of the layer that stay float32 (all of them when not clustered).

        Example:
            >>> LayerPlan("bn", "BatchNormalization", (), (), 0, 32, False, "x").float_params
            32
        """
        return self.total_params - (self.clustered_params if self.clustered else 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for run records.

        Example:
            >>> LayerPlan("fc", "Dense", ("kernel",), ((4, 2),), 8, 10, True).to_dict()["shapes"]
            [[4, 2]]
        """
        d = dataclasses.asdict(self)
        d["weights"] = list(self.weights)
        d["shapes"] = [list(s) for s in self.shapes]
        return d


@dataclasses.dataclass
class ClusterPlan:
    """What the learner will cluster in a model, and with which settings.

    Attributes:
        bits: Index bits per clustered weight (``nuql_weight_bits``).
        init_style: Canonical centroid initialisation (``nuql_init_style``).
        quantize_all_layers: Whether the first and last clusterable layers are clustered.
        layers: Every layer holding weights, in graph order.

    Example:
        >>> p = ClusterPlan(3, "linear", True, [])
        >>> p.clusters, p.to_dict()["clusters"]
        (8, 8)
    """

    bits: int
    init_style: str
    quantize_all_layers: bool
    layers: list[LayerPlan]

    @property
    def clusters(self) -> int:
        """Clusters per clustered weight tensor, ``2 ** bits``.

        Example:
            >>> ClusterPlan(4, "linear", False, []).clusters
            16
        """
        return options.num_clusters(self.bits)

    @property
    def clustered(self) -> list[LayerPlan]:
        """The clustered layers.

        Example:
            >>> ClusterPlan(4, "linear", False, []).clustered
            []
        """
        return [p for p in self.layers if p.clustered]

    @property
    def float_fallback(self) -> list[str]:
        """``"name (Class): reason"`` for every layer with weights that stays float.

        Example:
            >>> ClusterPlan(4, "linear", False, [LayerPlan("bn", "BatchNormalization", (), (),
            ...     0, 16, False, "no")]).float_fallback
            ['bn (BatchNormalization): no']
        """
        return [f"{p.name} ({p.class_name}): {p.reason}" for p in self.layers if not p.clustered]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for run records.

        Example:
            >>> ClusterPlan(2, "density", True, []).to_dict()["init_style"]
            'density'
        """
        return {
            "bits": self.bits,
            "clusters": self.clusters,
            "init_style": self.init_style,
            "quantize_all_layers": self.quantize_all_layers,
            "clustered": [p.name for p in self.clustered],
            "float_fallback": self.float_fallback,
            "layers": [p.to_dict() for p in self.layers],
        }


def walk_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields ``(path, layer)`` for every leaf layer, nested models expanded.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
        >>> [p for p, _ in walk_layers(m)]
        ['d']
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


def clusterable_weights(layer: keras.layers.Layer) -> list[tuple[str, Any]]:
    """``(short name, variable)`` of the weights TFMOT's ``cluster_weights`` clusters.

    Reads TFMOT's registry without touching the layer (the registry's own
    ``make_clusterable`` would patch methods onto it). Exact classes only, as TFMOT does: a
    subclass of ``Conv2D`` is not in its registry.

    Example:
        >>> d = keras.layers.Dense(3)
        >>> d.build((None, 4))
        >>> [(n, tuple(w.shape)) for n, w in clusterable_weights(d)]
        [('kernel', (4, 3))]
    """
    if isinstance(layer, clusterable_layer.ClusterableLayer):
        return [(str(n), w) for n, w in layer.get_clusterable_weights()]
    if type(layer) not in _REGISTRY._LAYERS_WEIGHTS_MAP or not layer.weights:
        return []
    return [(n, getattr(layer, n)) for n in _REGISTRY._LAYERS_WEIGHTS_MAP[type(layer)]]


def _float_reason(layer: keras.layers.Layer) -> str:
    cls = type(layer).__name__
    if type(layer) in _REGISTRY._LAYERS_WEIGHTS_MAP:
        return f"TFMOT clusters no weight of {cls}{_TFMOT_WHY.get(cls, '')}"
    return f"{cls} is not in TFMOT's clustering registry"


def make_plan(
    model: keras.Model,
    *,
    bits: int = options.DEFAULT_BITS,
    init_style: str = options.DEFAULT_INIT_STYLE,
    quantize_all_layers: bool = False,
) -> ClusterPlan:
    """Decides which layers of ``model`` are clustered; trains and changes nothing.

    Args:
        model: A built functional or Sequential model.
        bits: Index bits, ``2 ** bits`` clusters per clustered weight tensor.
        init_style: Centroid initialisation (see :mod:`.options`).
        quantize_all_layers: Also cluster the first and last clusterable layers.

    Returns:
        The :class:`ClusterPlan`.

    Raises:
        InvalidArgumentError: If no layer would be clustered (the message lists every
            layer with its reason), or on bad ``bits`` / ``init_style``.
        UnsupportedModelError: For a subclassed model.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")], name="net")
        >>> make_plan(m, bits=2)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'net with no layer to cluster (fc (Dense): only (first and last) clusterable layer (kept float; nuql_quantize_all_layers=True clusters it))'. Accepted: a model with at least one Conv/Dense layer that TFMOT can cluster, holding more weights than clusters (see nuql_quantize_all_layers).
        >>> [l.name for l in make_plan(m, bits=2, quantize_all_layers=True).clustered]
        ['fc']
    """
    from pocketflow_tf import model_io  # local: model_io pulls in the loaders

    model_io.require_graph(model, "weight clustering")
    bits = options.check_bits(bits)
    init_style = options.check_init_style(init_style)
    k = options.num_clusters(bits)
    rows = []
    for path, layer in walk_layers(model):
        if not layer.weights:
            continue
        found = clusterable_weights(layer)
        shapes = tuple(tuple(int(d) for d in w.shape) for _, w in found)
        rows.append(
            (
                path,
                layer,
                tuple(n for n, _ in found),
                shapes,
                int(sum(int(np.prod(s)) for s in shapes)),
                int(sum(int(np.prod(w.shape)) for w in layer.weights)),
            )
        )
    candidates = [i for i, r in enumerate(rows) if r[4] > 0]
    first_last: dict[int, str] = {}
    if candidates and not quantize_all_layers:
        first_last = {candidates[0]: "first", candidates[-1]: "last"}
        if len(candidates) == 1:
            first_last = {candidates[0]: "only (first and last)"}
    layers = []
    for i, (path, layer, names, shapes, n, total) in enumerate(rows):
        reason = None
        if n == 0:
            reason = _float_reason(layer)
        elif i in first_last:
            reason = (
                f"{first_last[i]} clusterable layer (kept float; "
                "nuql_quantize_all_layers=True clusters it)"
            )
        elif min(int(np.prod(s)) for s in shapes) <= k:
            reason = f"{n} weights for {k} clusters: a codebook would not be smaller"
        layers.append(
            LayerPlan(path, type(layer).__name__, names, shapes, n, total, reason is None, reason)
        )
    plan = ClusterPlan(bits, init_style, bool(quantize_all_layers), layers)
    if not plan.clustered:
        found = "; ".join(plan.float_fallback) or "no layer with weights at all"
        raise errors.InvalidArgumentError(
            "model",
            f"{model.name} with no layer to cluster ({found})",
            "a model with at least one Conv/Dense layer that TFMOT can cluster, holding more "
            "weights than clusters (see nuql_quantize_all_layers)",
        )
    return plan


def wrap_for_clustering(model: keras.Model, plan: ClusterPlan) -> keras.Model:
    """A copy of ``model`` with the planned layers wrapped in TFMOT's ``ClusterWeights``.

    The centroids are initialised from the trained weights as the plan says; the user's
    model is not modified.

    Example:
        >>> m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="a"),
        ...                       keras.layers.Dense(2, name="b")])
        >>> w = wrap_for_clustering(m, make_plan(m, bits=1, quantize_all_layers=True))
        >>> [type(l).__name__ for l in w.layers]
        ['ClusterWeights', 'ClusterWeights']
    """
    chosen = {p.name for p in plan.clustered}
    init = options.centroid_init(plan.init_style)
    # A copy first: the wrappers adopt the copy's layers (and so its trained weights), as
    # TFMOT's cluster_weights does, and the user's model stays untouched.
    work = learner.copy_model(model)

    def wrap(layer, prefix=""):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(
                layer, clone_function=lambda inner: wrap(inner, prefix + layer.name + "/")
            )
        if prefix + layer.name not in chosen:
            return layer
        return tfmot.clustering.keras.cluster_weights(
            layer, number_of_clusters=plan.clusters, cluster_centroids_init=init
        )

    return keras.models.clone_model(work, clone_function=wrap)


__all__ = [
    "ClusterPlan",
    "LayerPlan",
    "clusterable_weights",
    "make_plan",
    "walk_layers",
    "wrap_for_clustering",
]
