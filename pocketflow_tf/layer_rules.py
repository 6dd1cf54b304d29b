"""One class-keyed table of how a layer type behaves under channel pruning and costing.

The channel graph asks a layer's rule how the layer couples channels (:class:`Coupling`);
the surgery asks it how to resize the layer's config and slice its weights when channels go;
the accounting asks it for FLOPs of a layer type it has no built-in formula for. A layer type
without a rule is *opaque*: the graph blocks only the channel groups it touches, by name and
reason, and never raises.

User layers join the table with :func:`register` (the extension point, in the spirit of
TFMOT's ``PrunableLayer``): say how the layer couples channels and, if it holds per-channel
weights in an unusual layout, how to slice them.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import layer_rules
    >>> layer_rules.coupling(keras.layers.ReLU(), LayerCall()).kind
    'pass'
    >>> layer_rules.coupling(keras.layers.Conv2D(4, 3), LayerCall()).kind
    'producer'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pocketflow_tf import errors

KINDS = ("producer", "member", "pass", "merge", "concat", "flatten", "opaque")

#: Data augmentation inside a model (the Keras tutorials' first block): random in training,
#: the identity at inference, every channel transformed alike.
AUGMENTATION_LAYERS = (
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
)

Shape = tuple[Any, ...]


@dataclasses.dataclass
class LayerCall:
    """What a rule may look at for one call of a layer.

    Attributes:
        input_shapes: Shapes (with batch dimension) of the Keras tensors the call reads.
        output_shape: Shape of its (first) output.
        constants: The call's arguments that are not Keras tensors (a tf op's ``3.0``),
            keyword ``name`` excluded.

    Example:
        >>> LayerCall([(None, 4, 4, 8)], (None, 4, 4, 8), [3.0]).constants
        [3.0]
    """

    input_shapes: list[Shape] = dataclasses.field(default_factory=list)
    output_shape: Shape = ()
    constants: list[Any] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Coupling:
    """How a layer call maps channel spaces.

    Attributes:
        kind: ``"producer"`` (new channel space, reads its input through a kernel),
            ``"member"`` (one weight or op per channel: BN, depthwise), ``"pass"`` (no
            per-channel weights, channels kept), ``"merge"`` (element-wise join of inputs),
            ``"concat"`` (channel concatenation), ``"flatten"`` or ``"opaque"``.
        reason: Why an ``"opaque"`` layer is not understood (reported as a blocker).
        note: A caveat that does not block: e.g. LayerNormalization over the channels
            prunes structurally but its statistics change with the channel count, so the
            thin model is not exactly the masked one.

    Example:
        >>> Coupling("opaque", reason="attention").kind
        'opaque'
    """

    kind: str
    reason: str = ""
    note: str = ""


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """The behaviour of one layer type.

    Attributes:
        couple: ``(layer, call) -> Coupling``.
        resize: ``(config, kept output channels) -> config`` for a layer whose config
            states its channel count (producers; grouped convolutions acting per channel;
            ConvNeXt's LayerScale; a Reshape to ``(1, 1, C)``).
        slice_weights: ``(layer, weights, in_mask, out_mask) -> weights``; ``None`` uses the
            default of the coupling kind (kernels on their input and output axes for a
            producer, the last axis of every per-channel weight for a member).
        flops: ``(layer, in_shapes, out_shapes) -> FLOPs`` per sample (shapes without
            batch dimension), for the accounting of types it has no formula for; the
            function may return ``None`` for a call it cannot cost (listed as unknown).

    Example:
        >>> LayerRule(lambda layer, call: Coupling("pass")).resize is None
        True
    """

    couple: Callable[[Any, LayerCall], Coupling]
    resize: Callable[[dict, int], dict] | None = None
    slice_weights: Callable[[Any, list, np.ndarray, np.ndarray], list] | None = None
    flops: Callable[[Any, Sequence[Shape], Sequence[Shape]], int | None] | None = None


_RULES: dict[str, LayerRule] = {}


def register(class_name: str | type, rule: LayerRule, *, override: bool = False) -> None:
    """Adds the rule of a layer type (by class or class name) to the table.

    Args:
        class_name: The layer class or its ``__name__``; matched exactly (a subclass is a
            different layer type until it is registered).
        rule: Its :class:`LayerRule`.
        override: Replace an existing rule (built-in ones included).

    Raises:
        InvalidArgumentError: The type already has a rule and ``override`` is false, or
            ``rule`` is not a :class:`LayerRule`.

    Example:
        >>> class Gate(keras.layers.Layer):  # doctest: +SKIP
        ...     def call(self, x): return x * tf.sigmoid(x)
        >>> register(Gate, LayerRule(lambda layer, call: Coupling("pass")))  # doctest: +SKIP
    """
    name = class_name if isinstance(class_name, str) else class_name.__name__
    if not isinstance(rule, LayerRule):
        raise errors.InvalidArgumentError("rule", rule, "a layer_rules.LayerRule")
    if name in _RULES and not override:
        raise errors.InvalidArgumentError(
            "class_name", name, "a layer type without a rule (or pass override=True)"
        )
    _RULES[name] = rule


def rule_for(layer: Any) -> LayerRule | None:
    """The rule of ``layer``'s exact class, or ``None``.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> rule_for(keras.layers.Dense(2)) is not None
        True
    """
    return _RULES.get(type(layer).__name__)


def coupling(layer: Any, call: LayerCall) -> Coupling:
    """How ``layer`` couples channels on this call (``"opaque"`` with a reason if unknown).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> coupling(keras.layers.Lambda(lambda x: x), LayerCall()).reason
        'layer type Lambda has no channel rule (register one with layer_rules.register)'
    """
    rule = rule_for(layer)
    if rule is None:
        return Coupling(
            "opaque",
            reason=f"layer type {type(layer).__name__} has no channel rule "
            "(register one with layer_rules.register)",
        )
    return rule.couple(layer, call)


# --------------------------------------------------------------------------- built-in rules


def _const(kind: str, reason: str = "") -> Callable[[Any, LayerCall], Coupling]:
    return lambda layer, call: Coupling(kind, reason)


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _conv(layer, call: LayerCall) -> Coupling:
    if not _channels_last(layer):
        return Coupling("opaque", "channels_first data format")
    groups = getattr(layer, "groups", 1) or 1
    if groups == 1:
        return Coupling("producer")
    c_in = call.input_shapes[0][-1] if call.input_shapes else None
    if groups == c_in == layer.filters:
        # One filter per input channel: a depthwise convolution written as Conv2D (ConvNeXt).
        return Coupling("member")
    return Coupling(
        "opaque",
        f"grouped convolution (groups={groups}, {c_in} -> {layer.filters} channels): its "
        "channels are tied per group and pruning in whole groups is not implemented",
    )


def _resize_filters(cfg: dict, n: int) -> dict:
    cfg = dict(cfg)
    if (cfg.get("groups") or 1) > 1:  # a per-channel grouped conv keeps one group a channel
        cfg["groups"] = n
    cfg["filters"] = n
    return cfg


def _resize_units(cfg: dict, n: int) -> dict:
    return {**cfg, "units": n}


def _depthwise(layer, call: LayerCall) -> Coupling:
    if not _channels_last(layer):
        return Coupling("opaque", "channels_first data format")
    if layer.depth_multiplier != 1:
        return Coupling(
            "opaque", f"depthwise convolution with depth_multiplier={layer.depth_multiplier}"
        )
    return Coupling("member")


def _axis_is_channels(axis, rank: int) -> bool:
    axes = [axis] if isinstance(axis, int) else list(axis)
    return [a % rank for a in axes] == [rank - 1]


def _batch_norm(layer, call: LayerCall) -> Coupling:
    rank = len(call.input_shapes[0]) if call.input_shapes else 0
    if not _axis_is_channels(layer.axis, rank):
        return Coupling("opaque", f"BatchNormalization over axis {layer.axis} (not channels)")
    return Coupling("member")


def _layer_norm(layer, call: LayerCall) -> Coupling:
    rank = len(call.input_shapes[0]) if call.input_shapes else 0
    if not _axis_is_channels(layer.axis, rank):
        return Coupling("opaque", f"LayerNormalization over axis {layer.axis} (not channels)")
    return Coupling(
        "member",
        note=f"LayerNormalization '{layer.name}' normalises over the channels: removing "
        "channels changes its statistics, so the thin model is close to, not equal to, the "
        "masked one",
    )


def _group_norm(layer, call: LayerCall) -> Coupling:
    return Coupling("opaque", f"GroupNormalization (groups={layer.groups}) ties channels")


def _prelu(layer, call: LayerCall) -> Coupling:
    return Coupling("member" if layer.get_weights()[0].shape[-1] > 1 else "pass")


def _is_scalar(v: Any) -> bool:
    if isinstance(v, bool | int | float | np.number):
        return True
    arr = np.asarray(v) if isinstance(v, list | tuple | np.ndarray) else None
    if arr is None and hasattr(v, "shape") and hasattr(v, "numpy"):  # a constant tf.Tensor
        arr = np.asarray(v.numpy())
    return arr is not None and arr.size == 1


def _rescaling(layer, call: LayerCall) -> Coupling:
    cfg = layer.get_config()
    if all(_is_scalar(cfg[k]) for k in ("scale", "offset")):
        return Coupling("pass")
    return Coupling("opaque", "per-channel rescaling")


def _normalization(layer, call: LayerCall) -> Coupling:
    c = call.output_shape[-1] if call.output_shape else None
    weights = layer.get_weights()
    if weights and all(w.ndim == 0 or w.shape[-1] == c for w in weights):
        if _axis_is_channels(layer.axis, len(call.output_shape)):
            return Coupling("member")
    return Coupling(
        "opaque", "Normalization with statistics in its config (not per-channel weights)"
    )


def _reshape(layer, call: LayerCall) -> Coupling:
    # (C,) <-> (1, 1, C): only unit dimensions move, the channel axis is untouched (SE blocks).
    if not call.input_shapes:
        return Coupling("opaque", "Reshape without input")
    src, dst = call.input_shapes[0][1:], call.output_shape[1:]
    if src and dst and src[-1] == dst[-1]:
        if all(d == 1 for d in src[:-1]) and all(d == 1 for d in dst[:-1]):
            return Coupling("pass")
    return Coupling("opaque", f"Reshape {tuple(src)} -> {tuple(dst)} moves the channel axis")


def _activation(layer, call: LayerCall) -> Coupling:
    if layer.get_config()["activation"] == "softmax":
        return Coupling("opaque", "softmax mixes channels")
    return Coupling("pass")


def _concat(layer, call: LayerCall) -> Coupling:
    rank = len(call.output_shape)
    return Coupling("concat" if layer.axis in (-1, rank - 1) else "merge")


# tf ops (TFOpLambda) that act element by element: the channel of every output element is
# the channel of the input element it came from.
_TF_UNARY = frozenset(
    {
        "nn.relu",
        "nn.relu6",
        "nn.elu",
        "nn.selu",
        "nn.gelu",
        "nn.silu",
        "nn.swish",
        "nn.sigmoid",
        "nn.softplus",
        "nn.leaky_relu",
        "math.sigmoid",
        "math.tanh",
        "math.exp",
        "math.abs",
        "math.negative",
        "math.sqrt",
        "math.rsqrt",
        "math.square",
        "math.erf",
        "math.softplus",
        "identity",
        "clip_by_value",
        "cast",
    }
)
_TF_BINARY = frozenset(
    {
        "__operators__.add",
        "math.add",
        "math.subtract",
        "math.multiply",
        "math.truediv",
        "math.divide",
        "math.maximum",
        "math.minimum",
        "math.pow",
    }
)


def _tf_op(layer, call: LayerCall) -> Coupling:
    fn = layer.get_config().get("function", "")
    if not all(_is_scalar(c) or isinstance(c, str) or c is None for c in call.constants):
        return Coupling("opaque", f"tf op {fn} with a non-scalar constant")
    if fn in _TF_UNARY and len(call.input_shapes) == 1:
        return Coupling("pass")
    if fn in _TF_BINARY:
        if len(call.input_shapes) == 1:
            return Coupling("pass")  # x + 3.0, x * (1 / 6): a scalar constant
        if len(call.input_shapes) == 2:
            return Coupling("merge")
    return Coupling("opaque", f"tf op {fn} is not known to act per channel")


def _per_element(k: int) -> Callable[[Any, Sequence[Shape], Sequence[Shape]], int]:
    return lambda layer, ins, outs: k * int(np.prod(outs[0])) if outs else 0


def _tf_op_flops(layer, ins, outs) -> int | None:
    fn = layer.get_config().get("function", "")
    if fn in _TF_UNARY or fn in _TF_BINARY:
        return int(np.prod(outs[0])) if outs else 0
    return None  # an op without a cost rule: the accounting lists it as unknown


_PASS = (
    "ReLU",
    "LeakyReLU",
    "ELU",
    "ThresholdedReLU",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "Cropping1D",
    "Cropping2D",
    "UpSampling1D",
    "UpSampling2D",
    "Identity",
)
for _name in _PASS:
    _RULES[_name] = LayerRule(_const("pass"))
for _name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"):
    _RULES[_name] = LayerRule(_const("merge"))
for _name in ("Conv1D", "Conv2D"):
    _RULES[_name] = LayerRule(_conv, resize=_resize_filters)
for _name in ("SeparableConv1D", "SeparableConv2D"):
    _RULES[_name] = LayerRule(_conv, resize=_resize_filters)
_RULES["Dense"] = LayerRule(_const("producer"), resize=_resize_units)
for _name in ("DepthwiseConv1D", "DepthwiseConv2D"):
    _RULES[_name] = LayerRule(_depthwise)
_RULES["BatchNormalization"] = LayerRule(_batch_norm)
_RULES["LayerNormalization"] = LayerRule(_layer_norm, flops=_per_element(5))
_RULES["GroupNormalization"] = LayerRule(_group_norm, flops=_per_element(5))
# tf-keras ConvNeXt's drop path: the identity at inference.
_RULES["StochasticDepth"] = LayerRule(_const("pass"), flops=lambda layer, ins, outs: 0)
for _name in AUGMENTATION_LAYERS:
    _RULES[_name] = LayerRule(_const("pass"), flops=lambda layer, ins, outs: 0)
# Deterministic resizing and cropping: spatial only (bilinear: about 4 multiply-adds per
# output value; a crop copies).
_RULES["Resizing"] = LayerRule(_const("pass"), flops=_per_element(4))
_RULES["CenterCrop"] = LayerRule(_const("pass"), flops=lambda layer, ins, outs: 0)
# tf-keras ConvNeXt's LayerScale: gamma per channel, its width in the config.
_RULES["LayerScale"] = LayerRule(
    _const("member"),
    resize=lambda cfg, n: {**cfg, "projection_dim": n},
    flops=_per_element(1),
)
_RULES["PReLU"] = LayerRule(_prelu)
_RULES["Rescaling"] = LayerRule(_rescaling)
_RULES["Normalization"] = LayerRule(_normalization)
# An SE block's Reshape((1, 1, C)) states the channel count in its config.
_RULES["Reshape"] = LayerRule(
    _reshape, resize=lambda cfg, n: {**cfg, "target_shape": (*tuple(cfg["target_shape"])[:-1], n)}
)
_RULES["Activation"] = LayerRule(_activation)
_RULES["Concatenate"] = LayerRule(_concat)
_RULES["Flatten"] = LayerRule(_const("flatten"))
_RULES["TFOpLambda"] = LayerRule(_tf_op, flops=_tf_op_flops)


__all__ = [
    "KINDS",
    "Coupling",
    "LayerCall",
    "LayerRule",
    "coupling",
    "register",
    "rule_for",
]
