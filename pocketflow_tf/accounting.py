"""Per-layer and total cost (MACs, FLOPs, parameters) of a tf-keras model.

Costs are for **one input sample** (batch 1) and are read from the shapes of each layer call
in the model graph, so a layer called twice is counted twice and a nested functional or
Sequential sub-model is expanded into its own layers. TFMOT wrappers (``PruneLowMagnitude``,
``QuantizeWrapper``/``QuantizeWrapperV2``, ``QuantizeAnnotate``, ``ClusterWeights*``) are
unwrapped: the inner layer is costed, and only its real weights (kernel, bias, BN statistics,
...) count as parameters, never TFMOT's masks, thresholds, step counters, quantiser ranges or
cluster centroids/indices. A pruned or clustered model therefore reports the same dense cost
as the model it came from; sparsity is a property of the weights, not of this count.

Conventions (``MACs`` = multiply-accumulates; ``n_out`` = output elements of the call):

* ``Conv1D/2D/3D``: ``MACs = prod(out_spatial) * C_out * prod(kernel) * C_in / groups``.
* ``DepthwiseConv1D/2D``: ``MACs = prod(out_spatial) * C_in * depth_multiplier * prod(kernel)``.
* ``SeparableConv1D/2D``: depthwise MACs as above + pointwise
  ``prod(out_spatial) * C_in * depth_multiplier * C_out``.
* ``Conv1D/2D/3DTranspose``: every input element is scattered through the whole kernel:
  ``MACs = prod(in_spatial) * C_in * prod(kernel) * C_out``.
* ``Dense``: ``MACs = in * units``, times every leading (non-batch) dimension.
* For all of these ``FLOPs = 2 * MACs``, plus ``n_out`` when ``use_bias``, plus the fused
  activation (below) per output element.
* ``BatchNormalization``: 2 FLOPs per element (scale and shift once folded), 0 MACs.
* Activations (``ReLU``, ``LeakyReLU``, ``PReLU``, ``ELU``, ``ThresholdedReLU``,
  ``Activation`` and fused ``activation=``): 1 FLOP per element; ``softmax`` 3 (exp, sum,
  divide); ``linear`` 0. ``Softmax`` layer: 3 per element.
* ``Add``, ``Subtract``, ``Multiply``, ``Maximum``, ``Minimum``: ``(n_inputs - 1)`` per output
  element; ``Average``: ``n_inputs`` (the sums and one scaling).
* ``MaxPooling``/``AveragePooling``: ``prod(pool_size)`` per output element;
  ``GlobalAveragePooling``/``GlobalMaxPooling``: one per *input* element.
* ``Rescaling`` and ``Normalization``: 2 per element.
* Layer types of :mod:`pocketflow_tf.layer_rules` with a ``flops`` rule:
  ``LayerNormalization`` and ``GroupNormalization`` 5 per element (mean, variance,
  normalise, scale and shift), ConvNeXt's ``LayerScale`` 1, element-wise tf ops
  (``TFOpLambda`` such as MobileNetV3's ``x + 3``, ``x * (1 / 6)``, ``tf.nn.relu6``) 1;
  user layers registered there with a ``flops`` function count what it returns.
* 0 FLOPs: ``InputLayer``, ``Concatenate``, ``Flatten``, ``Reshape``, ``Permute``,
  ``RepeatVector``, ``Dropout`` (and its spatial variants), ``GaussianNoise``,
  ``GaussianDropout``, ``AlphaDropout``, ``ActivityRegularization``, ``ZeroPadding``,
  ``Cropping``, ``Identity``, nearest-neighbour ``UpSampling``, ``Embedding`` (a lookup) and
  TFMOT's ``QuantizeLayer`` (its min/max variables are not parameters either).
* Any other layer type (``Lambda``, other tf ops, attention, RNNs, custom layers) counts as
  0 FLOPs but is still listed, with ``known=False``, and named in
  :attr:`ModelProfile.unknown_layers`, so that it is never silently invisible. Its weights
  still count as parameters.

``total_params`` counts every real variable once (shared layers are not counted twice),
trainable and non-trainable, and so equals ``model.count_params()`` for a model without
TFMOT wrappers.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import accounting
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
    >>> p = accounting.profile_model(m)
    >>> p.total_macs, p.total_flops, p.total_params  # 4*3; 2*12 + 3 bias + 3 relu; 12 + 3
    (12, 30, 15)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

from pocketflow_tf import errors, interop, layer_rules, options
from pocketflow_tf.compat import keras, tf

# TFMOT wrappers are matched by class name, not imported: their module paths are private and
# move between TFMOT releases, but the public class names have been stable since 0.1.
_TFMOT_WRAPPERS = frozenset(
    {
        "PruneLowMagnitude",
        "QuantizeWrapper",
        "QuantizeWrapperV2",
        "QuantizeAnnotate",
        "ClusterWeights",
        "ClusterWeightsRNN",
        "ClusterWeightsMHA",
    }
)
# Layers whose variables are quantiser state, not model parameters.
_NO_PARAM_LAYERS = frozenset({"QuantizeLayer"})

_L = keras.layers
# Order matters below: the depthwise, separable and transposed convolutions are subclasses
# of the plain `Conv` base, so they are tested first.
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_BATCH_NORM = tuple(
    c
    for c in (
        _L.BatchNormalization,
        getattr(getattr(_L, "experimental", None), "SyncBatchNormalization", None),
    )
    if c is not None
)
_ELEMENTWISE_1 = (_L.ReLU, _L.LeakyReLU, _L.PReLU, _L.ELU, _L.ThresholdedReLU)
_MERGE_N_MINUS_1 = (_L.Add, _L.Subtract, _L.Multiply, _L.Maximum, _L.Minimum)
_POOL = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.MaxPooling3D,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.AveragePooling3D,
)
_GLOBAL_POOL = (
    _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D,
    _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D,
)
_AFFINE = (_L.Rescaling, _L.Normalization)
_UPSAMPLING = (_L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D)
_FREE = (
    _L.InputLayer,
    _L.Concatenate,
    _L.Flatten,
    _L.Reshape,
    _L.Permute,
    _L.RepeatVector,
    _L.Dropout,
    _L.GaussianNoise,
    _L.GaussianDropout,
    _L.AlphaDropout,
    _L.ActivityRegularization,
    _L.ZeroPadding1D,
    _L.ZeroPadding2D,
    _L.ZeroPadding3D,
    _L.Cropping1D,
    _L.Cropping2D,
    _L.Cropping3D,
    _L.Identity,
    _L.Embedding,
)

Shape = tuple[Any, ...]


@dataclasses.dataclass
class LayerCost:
    """Cost of one call of one layer, for one input sample.

    Attributes:
        name: Layer name in the graph; ``"sub/conv"`` inside nested model ``sub``; ``"#2"``
            is appended for the second call of a shared layer or sub-model.
        class_name: Class of the costed layer (the inner layer of a TFMOT wrapper).
        output_shape: Output shape without the batch dimension (a tuple of such tuples
            for a multi-output layer).
        macs: Multiply-accumulates.
        flops: Floating-point operations (see the module conventions).
        params: Parameters first seen at this call (a shared layer's weights count once).
        trainable_params: The trainable part of ``params``.
        wrappers: TFMOT wrapper classes around the layer, outermost first.
        known: ``False`` when the layer type has no cost rule and 0 FLOPs were assumed.

    Example:
        >>> LayerCost("fc", "Dense", (10,), macs=640, flops=1290, params=650).flops
        1290
    """

    name: str
    class_name: str
    output_shape: tuple
    macs: int
    flops: int
    params: int
    trainable_params: int = 0
    wrappers: tuple[str, ...] = ()
    known: bool = True


@dataclasses.dataclass
class ModelProfile:
    """Per-layer and total cost of a model for one input sample.

    Attributes:
        layers: One :class:`LayerCost` per layer call, in graph order.
        total_macs: Sum of ``macs``.
        total_flops: Sum of ``flops``.
        total_params: Real parameters, trainable and non-trainable, each counted once.
        trainable_params: The trainable part of ``total_params``.
        unknown_layers: Names of layer calls costed as 0 FLOPs for lack of a rule.
        model_name: Name of the profiled model.
        input_shapes: Model input shapes without the batch dimension.

    Example:
        >>> p = ModelProfile([LayerCost("fc", "Dense", (2,), 8, 18, 10, 10)], 8, 18, 10, 10)
        >>> p.non_trainable_params
        0
    """

    layers: list[LayerCost]
    total_macs: int
    total_flops: int
    total_params: int
    trainable_params: int
    unknown_layers: list[str] = dataclasses.field(default_factory=list)
    model_name: str = ""
    input_shapes: list[tuple] = dataclasses.field(default_factory=list)

    @property
    def non_trainable_params(self) -> int:
        """Parameters not updated by training (e.g. BatchNorm moving statistics).

        Example:
            >>> ModelProfile([], 0, 0, 10, 6).non_trainable_params
            4
        """
        return self.total_params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: totals, unknown layers and one dict per layer call.

        Example:
            >>> p = ModelProfile([LayerCost("fc", "Dense", (2,), 8, 18, 10, 10)], 8, 18, 10, 10)
            >>> p.to_dict()["layers"][0]["output_shape"]
            [2]
        """
        return {
            "model_name": self.model_name,
            "input_shapes": [_jsonable_shape(s) for s in self.input_shapes],
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "unknown_layers": list(self.unknown_layers),
            "layers": [
                {
                    **dataclasses.asdict(lay),
                    "output_shape": _jsonable_shape(lay.output_shape),
                    "wrappers": list(lay.wrappers),
                }
                for lay in self.layers
            ],
        }

    def table(self, top: int | None = None) -> str:
        """An aligned plain-text table of the layer calls, with a totals line.

        Args:
            top: Show only the ``top`` most expensive calls (by FLOPs, then params),
                most expensive first; ``None`` shows every call in graph order.

        Returns:
            The table; unknown layer types are flagged with ``?`` after the type.

        Example:
            >>> p = ModelProfile([LayerCost("fc", "Dense", (2,), 8, 18, 10, 10)], 8, 18, 10, 10)
            >>> print(p.table())
            Layer  Type    Output shape  MACs  FLOPs  Params  FLOPs %
            -----  ------  ------------  ----  -----  ------  -------
            fc     Dense   (2,)             8     18      10    100.0
            -----  ------  ------------  ----  -----  ------  -------
            Total  1 call                   8     18      10    100.0
            = 8 MACs, 18 FLOPs, 10 params (10 trainable, 0 non-trainable)
        """
        if top is not None:
            top = options.check_integer("top", top, low=1)
        rows = list(self.layers)
        if top is not None:
            rows = sorted(rows, key=lambda r: (r.flops, r.params), reverse=True)[:top]
        flops_total = self.total_flops or 1  # avoid dividing by 0 for an all-free model

        def line(r: LayerCost) -> list[str]:
            kind = r.class_name + (f" ({'>'.join(r.wrappers)})" if r.wrappers else "")
            return [
                r.name,
                kind + ("" if r.known else " ?"),
                _format_shape(r.output_shape),
                f"{r.macs:,}",
                f"{r.flops:,}",
                f"{r.params:,}",
                f"{100.0 * r.flops / flops_total:.1f}",
            ]

        headers = ["Layer", "Type", "Output shape", "MACs", "FLOPs", "Params", "FLOPs %"]
        body = [line(r) for r in rows]
        total = [
            "Total",
            f"{len(self.layers)} call" + ("" if len(self.layers) == 1 else "s"),
            "",
            f"{self.total_macs:,}",
            f"{self.total_flops:,}",
            f"{self.total_params:,}",
            "100.0",
        ]
        widths = [max(len(c[i]) for c in [headers, *body, total]) for i in range(len(headers))]
        numeric = {3, 4, 5, 6}

        def fmt(cells: list[str]) -> str:
            parts = [
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        out = [fmt(headers), rule, *(fmt(b) for b in body)]
        if top is not None and len(self.layers) > len(rows):
            hidden = self.layers_flops_outside(rows)
            out.append(
                f"... {len(self.layers) - len(rows)} more calls "
                f"({100.0 * hidden / flops_total:.1f} % of FLOPs)"
            )
        out += [rule, fmt(total)]
        out.append(
            f"= {_human(self.total_macs)} MACs, {_human(self.total_flops)} FLOPs, "
            f"{_human(self.total_params)} params ({self.trainable_params:,} trainable, "
            f"{self.non_trainable_params:,} non-trainable)"
        )
        if self.unknown_layers:
            out.append(
                "Unknown layer types (counted as 0 FLOPs): " + ", ".join(self.unknown_layers)
            )
        return "\n".join(out)

    def layers_flops_outside(self, shown: Iterable[LayerCost]) -> int:
        """FLOPs of the calls not in ``shown`` (what a ``top`` table leaves out).

        Example:
            >>> a, b = LayerCost("a", "ReLU", (2,), 0, 2, 0), LayerCost("b", "ReLU", (2,), 0, 3, 0)
            >>> ModelProfile([a, b], 0, 5, 0, 0).layers_flops_outside([b])
            2
        """
        shown_ids = {id(r) for r in shown}
        return sum(r.flops for r in self.layers if id(r) not in shown_ids)


def profile_model(model: keras.Model) -> ModelProfile:
    """Costs every layer call of a functional or Sequential tf-keras model, for batch 1.

    Args:
        model: A built functional or Sequential model (tf-keras, or Keras 3: bridged in
            memory); sub-models and TFMOT wrappers inside it are handled (see the module
            conventions).

    Returns:
        The per-call costs and totals.

    Raises:
        InvalidArgumentError: ``model`` is not a Keras model.
        UnsupportedModelError: The model has no layer graph (subclassed, or a Sequential
            model never built), or a costed layer has an undefined non-batch dimension.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> inp = keras.Input((8, 8, 1))
        >>> out = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
        >>> p = profile_model(keras.Model(inp, out))
        >>> p.total_macs  # 8*8 outputs * 4 channels * 3*3*1 taps
        2304
    """
    model = interop.to_framework(model)[0]  # a Keras 3 model is costed as its tf-keras twin
    if not isinstance(model, keras.Model):
        raise errors.InvalidArgumentError(
            "model", model, "a functional or Sequential model (tf-keras or Keras 3)"
        )
    if not getattr(model, "_is_graph_network", False):
        raise errors.UnsupportedModelError(
            f"cannot profile {type(model).__name__} {model.name!r}: it has no layer graph "
            "(a subclassed model, or a Sequential model that was never built; give it a "
            "keras.Input first)"
        )
    rows: list[LayerCost] = []
    _walk(model, "", rows, seen=set(), top_level=True)
    unknown = [r.name for r in rows if not r.known]
    return ModelProfile(
        layers=rows,
        total_macs=sum(r.macs for r in rows),
        total_flops=sum(r.flops for r in rows),
        total_params=sum(r.params for r in rows),
        trainable_params=sum(r.trainable_params for r in rows),
        unknown_layers=unknown,
        model_name=model.name,
        input_shapes=[tuple(t.shape)[1:] for t in model.inputs],
    )


def count_flops(model: keras.Model) -> int:
    """Total FLOPs of one forward pass of one sample; ``profile_model(model).total_flops``.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> count_flops(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
        27
    """
    return profile_model(model).total_flops


# --------------------------------------------------------------------------- graph walk


def _walk(model: keras.Model, prefix: str, rows: list[LayerCost], seen: set, top_level: bool):
    """Appends one row per layer call of ``model``; expands graph sub-models in place."""
    # Only nodes of *this* graph count: a layer reused in another model also has nodes there.
    in_graph = {id(n) for nodes in model._nodes_by_depth.values() for n in nodes}
    for layer in model.layers:
        if isinstance(layer, _L.InputLayer) and not top_level:
            continue  # a nested model's input is the outer tensor; nothing happens there
        nodes = [n for n in layer._inbound_nodes if id(n) in in_graph]
        for call, node in enumerate(nodes, start=1):
            name = prefix + layer.name + (f"#{call}" if call > 1 else "")
            if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
                # The sub-model's own graph carries the shapes of its layers' calls; it is
                # walked once per call of the sub-model.
                _walk(layer, name + "/", rows, seen, top_level=False)
                continue
            rows.append(_cost_call(layer, node, name, seen))


def _cost_call(layer: keras.layers.Layer, node: Any, name: str, seen: set) -> LayerCost:
    inner, wrappers = _unwrap(layer)
    if node.is_input:
        in_shapes = [tuple(t.shape)[1:] for t in tf.nest.flatten(node.outputs)]
    else:
        args = node.call_args[0] if node.call_args else node.keras_inputs
        in_shapes = [tuple(t.shape)[1:] for t in tf.nest.flatten(args) if hasattr(t, "shape")]
    out_shapes = [tuple(t.shape)[1:] for t in tf.nest.flatten(node.outputs)]
    macs, flops, known = _layer_cost(inner, name, in_shapes, out_shapes)
    params, trainable = _new_params(layer, seen)
    out_shape: tuple = out_shapes[0] if len(out_shapes) == 1 else tuple(out_shapes)
    return LayerCost(
        name=name,
        class_name=type(inner).__name__,
        output_shape=out_shape,
        macs=int(macs),
        flops=int(flops),
        params=params,
        trainable_params=trainable,
        wrappers=tuple(wrappers),
        known=known,
    )


def _is_tfmot_wrapper(layer: Any) -> bool:
    return isinstance(layer, _L.Wrapper) and type(layer).__name__ in _TFMOT_WRAPPERS


def _unwrap(layer: keras.layers.Layer) -> tuple[keras.layers.Layer, list[str]]:
    wrappers = []
    while _is_tfmot_wrapper(layer):
        wrappers.append(type(layer).__name__)
        layer = layer.layer
    return layer, wrappers


def _real_weights(layer: keras.layers.Layer) -> list:
    """The model parameters held by ``layer``, without TFMOT's bookkeeping variables."""
    if type(layer).__name__ in _NO_PARAM_LAYERS:
        return []
    if not _is_tfmot_wrapper(layer):
        return list(layer.weights)
    found = _real_weights(layer.layer)
    # QuantizeWrapper and ClusterWeights detach the kernel from the inner layer's weight list
    # (the inner layer then computes with a fake-quantised / clustered tensor) but keep the
    # original variable in these attributes; everything else the wrapper holds is TFMOT state.
    found += [entry[0] for entry in getattr(layer, "_weight_vars", ())]
    found += list(getattr(layer, "original_clusterable_weights", {}).values())
    unique: dict[int, Any] = {}
    for v in found:
        unique.setdefault(id(v), v)
    return list(unique.values())


def _new_params(layer: keras.layers.Layer, seen: set) -> tuple[int, int]:
    """Counts the real weights of ``layer`` not already counted; returns (all, trainable)."""
    # `trainable_weights` (not `Variable.trainable`) honours `layer.trainable = False`.
    trainable_ids = {id(v) for v in layer.trainable_weights}
    total = trainable = 0
    for v in _real_weights(layer):
        if id(v) in seen:
            continue
        seen.add(id(v))
        n = math.prod(int(d) for d in v.shape)
        total += n
        if id(v) in trainable_ids:
            trainable += n
    return total, trainable


# --------------------------------------------------------------------------- cost rules


def _numel(shape: Shape, name: str) -> int:
    if any(d is None for d in shape):
        raise errors.UnsupportedModelError(
            f"layer {name!r} has an undefined dimension in shape {shape}; build the model "
            "with a fixed input shape to count its cost"
        )
    return math.prod(int(d) for d in shape)


def _activation_flops(fn: Any) -> int:
    """FLOPs per element of an activation function (module conventions)."""
    # QAT replaces `layer.activation` with a QuantizeAwareActivation holding the original
    # function in `.activation`; the fake-quant op it adds is not a FLOP of the deployed model.
    while fn is not None and not hasattr(fn, "__name__") and hasattr(fn, "activation"):
        fn = fn.activation
    fn_name = getattr(fn, "__name__", "")
    if fn is None or fn_name == "linear" or type(fn).__name__ == "NoOpActivation":
        return 0
    if fn_name == "softmax":
        return 3
    return 1


def _channels(layer: keras.layers.Layer, shape: Shape, name: str) -> tuple[int, int]:
    """Returns ``(channels, spatial elements)`` of a conv input/output shape."""
    _numel(shape, name)  # reject undefined dimensions with the whole shape in the message
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    channels = shape[0] if channels_first else shape[-1]
    spatial = shape[1:] if channels_first else shape[:-1]
    return _numel((channels,), name), _numel(spatial, name)


def _layer_cost(
    layer: keras.layers.Layer, name: str, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
) -> tuple[int, int, bool]:
    """Returns ``(macs, flops, known)`` of one call of an (unwrapped) layer."""
    if isinstance(layer, _FREE) or type(layer).__name__ in _NO_PARAM_LAYERS:
        return 0, 0, True
    if isinstance(layer, _UPSAMPLING):
        # Nearest-neighbour upsampling only copies; bilinear interpolation has no rule here.
        if getattr(layer, "interpolation", "nearest") == "nearest":
            return 0, 0, True
        return 0, 0, False
    if not out_shapes or not in_shapes:
        return 0, 0, False
    out, inp = out_shapes[0], in_shapes[0]

    if isinstance(layer, _DEPTHWISE + _SEPARABLE + _TRANSPOSE + _CONV):
        taps = math.prod(layer.kernel_size)
        c_in, in_spatial = _channels(layer, inp, name)
        c_out, out_spatial = _channels(layer, out, name)
        if isinstance(layer, _DEPTHWISE):
            macs = out_spatial * c_in * layer.depth_multiplier * taps
        elif isinstance(layer, _SEPARABLE):
            mid = c_in * layer.depth_multiplier
            macs = out_spatial * mid * taps + out_spatial * mid * c_out
        elif isinstance(layer, _TRANSPOSE):
            macs = in_spatial * c_in * taps * c_out
        else:
            macs = out_spatial * c_out * taps * c_in // getattr(layer, "groups", 1)
        n_out = c_out * out_spatial
        flops = 2 * macs + (n_out if layer.use_bias else 0)
        return macs, flops + n_out * _activation_flops(layer.activation), True

    if isinstance(layer, _L.Dense):
        macs = _numel(inp, name) * layer.units  # leading dims multiply; last dim is `in`
        n_out = _numel(out, name)
        flops = 2 * macs + (n_out if layer.use_bias else 0)
        return macs, flops + n_out * _activation_flops(layer.activation), True

    if isinstance(layer, _BATCH_NORM):
        return 0, 2 * _numel(out, name), True
    if isinstance(layer, _ELEMENTWISE_1):
        return 0, _numel(out, name), True
    if isinstance(layer, _L.Activation):
        return 0, _numel(out, name) * _activation_flops(layer.activation), True
    if isinstance(layer, _L.Softmax):
        return 0, 3 * _numel(out, name), True
    if isinstance(layer, _MERGE_N_MINUS_1):
        return 0, (len(in_shapes) - 1) * _numel(out, name), True
    if isinstance(layer, _L.Average):
        return 0, len(in_shapes) * _numel(out, name), True
    if isinstance(layer, _POOL):
        return 0, math.prod(layer.pool_size) * _numel(out, name), True
    if isinstance(layer, _GLOBAL_POOL):
        return 0, _numel(inp, name), True
    if isinstance(layer, _AFFINE):
        return 0, 2 * _numel(out, name), True
    # Layer types described in the shared table (LayerNormalization, ConvNeXt's LayerScale,
    # element-wise tf ops, user layers registered with layer_rules.register).
    rule = layer_rules.rule_for(layer)
    if rule is not None and rule.flops is not None:
        _numel(out, name)  # reject undefined dimensions with the whole shape in the message
        flops = rule.flops(layer, in_shapes, out_shapes)
        if flops is not None:
            return 0, int(flops), True
    return 0, 0, False


# --------------------------------------------------------------------------- formatting


def _jsonable_shape(shape: Any) -> Any:
    if isinstance(shape, tuple | list):
        return [_jsonable_shape(d) for d in shape]
    return shape


def _format_shape(shape: tuple) -> str:
    if shape and all(isinstance(s, tuple) for s in shape):
        return "[" + ", ".join(_format_shape(s) for s in shape) + "]"
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


__all__ = ["LayerCost", "ModelProfile", "count_flops", "profile_model"]
