"""Quantization-aware training models through TFMOT, for any functional/Sequential model.

:func:`quantize_model` is TFMOT's ``quantize_model`` made to work on the nets here and on
user models with a few layers TFMOT does not know:

* ``quantize_annotate_model`` refuses a whole model when one layer has no 8-bit quantize
  config -- the in-model ``Rescaling`` normalisation of every net here, for one. Such layers
  are annotated with :class:`NoOpQuantizeConfig` (they run in float during QAT; the
  converter quantises their output at the next quantised layer, with calibration data).
  A ``Rescaling`` without offset (``Rescaling(1/255)``, a multiplication by a constant) gets
  :class:`FloatOutputQuantizeConfig` instead (its output fake-quantized): left
  unquantized, the converter folded ``Rescaling(1/255)`` into the convolution after it and
  quantized the scaled weights with the ranges trained for the unscaled ones: every weight
  of the ``.tflite``'s first convolution was 0 (measured: top-1 agreement 0.46 on a binary
  task, the file refused by verification).
* ``BatchNormalization`` is not in TFMOT's registry but *is* handled by its layout
  transforms (folded into the preceding convolution), so it keeps the default annotation
  where TFMOT folds it (after a linear convolution that feeds it alone) and runs in float
  elsewhere (after ``Conv2D(activation="relu")``, for one).
* TFMOT's registry lists every ``Activation`` layer, but its config raises for functions
  other than relu/relu6/swish/gelu/linear/softmax/sigmoid/tanh (``elu``, ``selu``,
  ``softplus``, ...): those run in float. A Conv2D/Dense whose own ``activation=`` TFMOT
  cannot wrap (``relu6``, ``elu``, ...) keeps its weight quantizer, the activation in float.
* An integer model input (a uint8 image before the model's ``Rescaling``) gets no input
  ``QuantizeLayer`` (TFMOT's fake-quantizes it and fails on the dtype). The learners refuse
  such a model at their input contract (:func:`pocketflow_tf.inputs.float_input`: they feed
  float32 images); this is for callers of :func:`quantize_model` who feed it themselves.
* Lower weight bit-widths per layer (``weight_bits``, mixed precision) are set *after*
  TFMOT's transforms: annotating a convolution with a custom config would make TFMOT skip
  its Conv-BatchNorm-ReLU transforms (``_has_custom_quantize_config``) and quantize the
  convolution's output before BatchNorm. The weights of such a layer take ``2**b - 1``
  levels placed on the int8 grid (:func:`low_bit_weights`), then TFMOT's usual 8-bit
  quantizer (per-channel symmetric for convolutions, per-tensor for Dense). Activations
  stay 8-bit, so the int8 ``.tflite`` runs as usual and holds exactly those levels.

TFMOT caveat (0.8.1, checked here): a QAT model saved as ``.keras`` does not load again (its
``QuantizeLayer`` stores 3 variables and expects 5); ``.h5`` round-trips exactly inside
:func:`quantize_scope`. :mod:`pocketflow_tf.model_io` therefore saves QAT models as ``.h5``
only and always loads inside :func:`quantize_scope`.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(2.0),
    ...                       keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> q = quantize_model(m)
    >>> [type(layer).__name__ for layer in q.layers][:2], is_quantized(q), is_quantized(m)
    (['QuantizeLayer', 'QuantizeWrapperV2'], True, False)
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs as _configs,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_layout_transform as _layout,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as _registry,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_scheme as _scheme,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantizers as _quantizers,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_transforms as _transforms,
)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
    model_transformer as _model_transformer,
)
from tensorflow_model_optimization.python.core.quantization.keras.quantize_aware_activation import (
    QuantizeAwareActivation as _QuantizeAwareActivation,
)

from pocketflow_tf import errors, graph_rebuild
from pocketflow_tf.compat import keras

_qk = tfmot.quantization.keras

#: Weight bit-widths a layer can be fake-quantized to (symmetric narrow range: 1 bit would
#: leave the single level 0).
WEIGHT_BITS = tuple(range(2, 9))

#: Layers TFMOT's registry does not list but its layout transforms fold away.
_FOLDED_BY_TRANSFORMS = ("BatchNormalization",)

#: The functions an ``Activation`` layer may hold for TFMOT's
#: ``Default8BitActivationQuantizeConfig`` (0.8.1 lists them inline in
#: ``get_output_quantizers`` and raises ``ValueError`` for any other when the model is built:
#: elu, selu, softplus, hard_sigmoid, ...).
_ACTIVATION_LAYER_FUNCTIONS = frozenset(
    {"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"}
)

#: The ``activation=`` functions of a Conv2D/Dense that TFMOT's ``QuantizeAwareActivation``
#: can wrap (it raises ``ValueError`` for the others, relu6 and elu among them).
_WRAPPABLE_ACTIVATIONS = (
    _QuantizeAwareActivation._PRE_QUANT_ACTIVATIONS
    | _QuantizeAwareActivation._POST_QUANT_ACTIVATIONS
)


class NoOpQuantizeConfig(_qk.QuantizeConfig):
    """A quantize config that quantises nothing: the layer runs in float during QAT.

    Example:
        >>> NoOpQuantizeConfig().get_config()
        {}
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self) -> dict[str, Any]:
        return {}


def low_bit_weights(w: Any, bits: int, per_channel: bool) -> tf.Tensor:
    """``w`` on ``2**bits - 1`` symmetric levels that sit exactly on the int8 grid.

    A ``bits``-bit level ``q`` (``|q| <= 2**(bits-1) - 1 = m``) of a channel with range ``r``
    becomes ``round(q * 127 / m) * r / 127``: still ``2**bits - 1`` values, now multiples of
    the int8 step ``r / 127`` that TFMOT's 8-bit weight quantizer and the TFLite converter use
    for that range. So the int8 file holds exactly these weights, also after BatchNorm is
    folded per channel. (Plain ``bits``-bit fake quantization does not survive the converter:
    measured here, TF 2.21 stores a 3-bit kernel on a 4-bit grid, ``round(q * 7 / 3)``, and
    kernels of 5..7 bits are requantized to int8; the int8 file of a 3-bit ResNet-20 then
    lost 1.5 pt against its QAT model.) The gradient passes straight through.

    Args:
        w: A kernel, output channels on the last axis.
        bits: 2..8 (8 returns ``w`` unchanged: TFMOT's quantizer does the rest).
        per_channel: One range per output channel (convolutions) or one per tensor.

    Example:
        >>> import numpy as np
        >>> w = np.array([[-1.0, 0.2], [0.5, 0.9]], np.float32)
        >>> (low_bit_weights(w, 3, per_channel=False).numpy() * 127).round().tolist()
        [[-127.0, 42.0], [85.0, 127.0]]
    """
    w = tf.convert_to_tensor(w, tf.float32)
    if bits >= 8:
        return w
    m = float(2 ** (bits - 1) - 1)
    axes = list(range(len(w.shape) - 1)) if per_channel else None
    r = tf.stop_gradient(tf.reduce_max(tf.abs(w), axis=axes, keepdims=per_channel))
    q = tf.round(tf.math.divide_no_nan(w, r) * m)
    snapped = tf.round(q * (127.0 / m)) * (r / 127.0)
    return w + tf.stop_gradient(snapped - w)


class _LowBitsMixin:
    """Puts the weights on :func:`low_bit_weights` levels before TFMOT's 8-bit quantizer."""

    weight_bits = 8

    def __call__(self, inputs, training, weights, **kwargs):
        inputs = low_bit_weights(inputs, self.weight_bits, bool(self.per_axis))
        return super().__call__(inputs, training, weights, **kwargs)


class _LowBitsQuantizer(_LowBitsMixin, _qk.quantizers.LastValueQuantizer):
    pass


class _LowBitsConvQuantizer(_LowBitsMixin, _quantizers.Default8BitConvWeightsQuantizer):
    pass


def _with_weight_bits(config: Any, weight_bits: int, quantizer: Any) -> None:
    if isinstance(weight_bits, bool) or weight_bits not in WEIGHT_BITS:
        raise errors.InvalidArgumentError("weight_bits", weight_bits, "an integer in 2..8")
    config.weight_bits = int(weight_bits)
    if weight_bits < 8:
        config.weight_quantizer = quantizer
        quantizer.weight_bits = int(weight_bits)


class BitsQuantizeConfig(_registry.Default8BitQuantizeConfig):
    """TFMOT's Dense config with ``weight_bits`` (2..8) per-tensor weights.

    The weights take ``2**weight_bits - 1`` levels on the int8 grid (:func:`low_bit_weights`)
    and are then quantized by TFMOT's 8-bit quantizer, so the file stores them exactly.

    Example:
        >>> BitsQuantizeConfig(["kernel"], ["activation"], False, weight_bits=4).get_config()
        ... # doctest: +NORMALIZE_WHITESPACE
        {'weight_attrs': ['kernel'], 'activation_attrs': ['activation'],
         'quantize_output': False, 'weight_bits': 4}
    """

    def __init__(self, weight_attrs, activation_attrs, quantize_output, weight_bits: int = 8):
        super().__init__(weight_attrs, activation_attrs, quantize_output)
        quantizer = _LowBitsQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
        _with_weight_bits(self, weight_bits, quantizer)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_bits": self.weight_bits}


class BitsConvQuantizeConfig(_registry.Default8BitConvQuantizeConfig):
    """TFMOT's Conv2D/DepthwiseConv2D config with ``weight_bits`` (2..8) per-channel weights.

    Example:
        >>> BitsConvQuantizeConfig(["kernel"], ["activation"], False, 3).weight_quantizer.weight_bits
        3
    """

    def __init__(self, weight_attrs, activation_attrs, quantize_output, weight_bits: int = 8):
        super().__init__(weight_attrs, activation_attrs, quantize_output)
        _with_weight_bits(self, weight_bits, _LowBitsConvQuantizer())

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_bits": self.weight_bits}


#: TFMOT config class name -> the class that adds ``weight_bits`` to it.
_BITS_CONFIGS = {
    "Default8BitQuantizeConfig": BitsQuantizeConfig,
    "Default8BitConvQuantizeConfig": BitsConvQuantizeConfig,
    "BitsQuantizeConfig": BitsQuantizeConfig,
    "BitsConvQuantizeConfig": BitsConvQuantizeConfig,
}


class FloatOutputQuantizeConfig(NoOpQuantizeConfig):
    """The layer computes in float during QAT; its output is fake-quantized (8 bits,
    per tensor, asymmetric), as the int8 file holds it.

    The range is the min/max of every value seen (TFMOT's ``AllValuesQuantizer``, which its
    input ``QuantizeLayer`` uses too), not a moving average: that starts at [-6, 6] and moves
    by 0.1 % a step, so through a short fine-tune 0..1 pixels kept a step of 12/255, and
    values above 6 were clipped (measured with the config on every float layer: the 0..255
    output of an in-model augmentation, a trained binary CNN at 0.535 after 16 QAT steps).

    Example:
        >>> [type(q).__name__ for q in FloatOutputQuantizeConfig().get_output_quantizers(None)]
        ['AllValuesQuantizer']
    """

    def get_output_quantizers(self, layer):
        return [
            _qk.quantizers.AllValuesQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]


@contextlib.contextmanager
def quantize_scope(extra: Mapping[str, type] | None = None) -> Iterator[None]:
    """Where QAT models (TFMOT wrappers, :class:`NoOpQuantizeConfig`, the ``weight_bits``
    configs) can be deserialised.

    Args:
        extra: More ``{class name: class}`` to know (a model's own layer classes).

    Example:
        >>> with quantize_scope():
        ...     pass
    """
    with _qk.quantize_scope(
        {
            **dict(extra or {}),
            "NoOpQuantizeConfig": NoOpQuantizeConfig,
            "FloatOutputQuantizeConfig": FloatOutputQuantizeConfig,
            "BitsQuantizeConfig": BitsQuantizeConfig,
            "BitsConvQuantizeConfig": BitsConvQuantizeConfig,
        }
    ):
        yield


def is_quantized(model: keras.Model) -> bool:
    """Whether ``model`` holds TFMOT quantization wrappers (a QAT model).

    Example:
        >>> is_quantized(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
        False
    """
    return any(".quantization." in type(layer).__module__ for layer in model.layers)


def registry_config(layer: keras.layers.Layer) -> Any:
    """TFMOT's 8-bit quantize config for ``layer`` as :func:`quantize_model` uses it.

    ``None`` where TFMOT has no config that works for the layer: its registry does not list
    it, or it is an ``Activation`` whose function TFMOT's config refuses (``elu``, ``selu``,
    ``softplus``, ...); :func:`quantize_model` runs such layers in float. A Conv2D/Dense whose
    own ``activation=`` TFMOT cannot wrap (``relu6``, ``elu``, ...) keeps its weight
    quantizer, and its activation runs in float inside the layer.

    Example:
        >>> type(registry_config(keras.layers.Dense(2))).__name__
        'Default8BitQuantizeConfig'
        >>> registry_config(keras.layers.Activation("elu")) is None
        True
        >>> registry_config(keras.layers.Dense(2, activation="elu")).activation_attrs
        []
    """
    return _quantize_config(layer)[0]


def _activation_name(fn: Any) -> str:
    # TFMOT's own test (QuantizeAwareActivation._name): a function's name, else its class's.
    return getattr(fn, "__name__", type(fn).__name__)


def _quantize_config(layer: keras.layers.Layer) -> tuple[Any, bool]:
    """``(config, as_registered)``: the config of :func:`registry_config`, and whether it is
    the registry's own (then the layer is annotated without a config, so TFMOT's layout
    transforms still see it as theirs)."""
    registry = _registry.Default8BitQuantizeRegistry()
    if not registry.supports(layer):
        return None, False
    config = registry.get_quantize_config(layer)
    if isinstance(layer, keras.layers.Activation):
        if _activation_name(layer.activation) not in _ACTIVATION_LAYER_FUNCTIONS:
            return None, False
        return config, True
    attrs = getattr(config, "activation_attrs", None)
    if (
        isinstance(config, _registry.Default8BitQuantizeConfig)
        and isinstance(attrs, list)
        and "activation" in attrs
        and _activation_name(getattr(layer, "activation", None)) not in _WRAPPABLE_ACTIVATIONS
    ):
        # Weights fake-quantized as registered; the activation is left out of the config, so
        # TFMOT does not wrap it (it would raise) and it runs in float inside the layer. The
        # converter quantizes the layer's output from calibration data.
        kept = [a for a in attrs if a != "activation"]
        return type(config)(config.weight_attrs, kept, config.quantize_output), False
    return config, True


def quantized_weight_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose weights TFMOT's 8-bit scheme fake-quantizes (in order).

    These are the layers a ``weight_bits`` map of :func:`quantize_model` can name; the rest
    (e.g. ``Rescaling``, or a layer type TFMOT does not know) run in float during QAT.

    Example:
        >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Rescaling(2.0),
        ...                       keras.layers.Conv2D(2, 3, name="c"), keras.layers.Flatten(),
        ...                       keras.layers.Dense(2, name="fc")])
        >>> quantized_weight_layers(m)
        ['c', 'fc']
    """
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = registry_config(layer)
        if type(config).__name__ in _BITS_CONFIGS and config.get_weights_and_quantizers(layer):
            out.append(layer.name)
    return out


def weight_bits_of(model: keras.Model) -> dict[str, int]:
    """``{layer name: weight bits}`` of the fake-quantized layers of a QAT model.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> weight_bits_of(quantize_model(m, weight_bits={"fc": 3}))
        {'fc': 3}
    """
    out = {}
    for layer in model.layers:
        config = getattr(layer, "quantize_config", None)
        inner = getattr(layer, "layer", None)
        if inner is None or type(config).__name__ not in _BITS_CONFIGS:
            continue
        if config.weight_attrs:
            out[inner.name] = int(getattr(config, "weight_bits", 8))
    return out


def _weights_only_config(class_name: str) -> Any:
    """The config of a layer whose output feeds a ReLU directly: its weights fake-quantized
    as the registry would, no fake quant on its output (the converter fuses the ReLU)."""
    if class_name == "Conv2D":
        return _registry.Default8BitConvQuantizeConfig(["kernel"], [], False)
    if class_name == "DepthwiseConv2D":
        return _registry.Default8BitConvQuantizeConfig(["depthwise_kernel"], [], False)
    if class_name == "Dense":
        return _registry.Default8BitQuantizeConfig(["kernel"], [], False)
    return _configs.NoOpQuantizeConfig()  # Add: no weights


class _ReLUKeepsWeights(_transforms.LayerReLUQuantize):
    """TFMOT 0.8.1's ``LayerReLUQuantize`` gives the Conv2D/DepthwiseConv2D/Dense before a
    ``ReLU`` layer a no-op config to keep fake quant off the tensor between them, which also
    drops the fake quant of that layer's *weights*: a user's ``Conv2D -> ReLU()`` trained in
    float under QAT and refused ``weight_bits``. This keeps the weights' quantizer."""

    def replacement(self, match_layer):
        producer = match_layer.input_layers[0]
        producer.metadata["quantize_config"] = _weights_only_config(producer.layer["class_name"])
        return match_layer

    def custom_objects(self):
        return {
            "NoOpQuantizeConfig": _configs.NoOpQuantizeConfig,
            "Default8BitQuantizeConfig": _registry.Default8BitQuantizeConfig,
            "Default8BitConvQuantizeConfig": _registry.Default8BitConvQuantizeConfig,
        }


class _ReLUActivationKeepsWeights(_ReLUKeepsWeights):
    """The same for ``Activation("relu")`` (TFMOT's ``LayerReluActivationQuantize``)."""

    def pattern(self):
        return _transforms.LayerReluActivationQuantize().pattern()


class _FloatInputQuantize(_transforms.InputLayerQuantize):
    """TFMOT's ``InputLayerQuantize`` for float inputs only: its ``QuantizeLayer`` fake-quantizes
    the input, which raises a TypeError on an integer input (a uint8 image before the
    model's own ``Rescaling``). An integer input is left as it is; the first quantized layer
    after the conversion to float quantizes its input."""

    def replacement(self, match_layer):
        dtype = match_layer.layer["config"].get("dtype") or "float32"
        if not tf.as_dtype(dtype).is_floating:
            return match_layer
        return super().replacement(match_layer)


class _LayoutTransform(_layout.Default8BitQuantizeLayoutTransform):
    """TFMOT's default layout transforms with the input and the two ReLU ones above in place
    of its own."""

    def apply(self, model, layer_quantize_map):
        t = _transforms
        # TFMOT 0.8.1's list (Default8BitQuantizeLayoutTransform.apply builds it inline, so
        # it is repeated here; the version is pinned), the first and the last two replaced.
        transforms = [
            _FloatInputQuantize(),
            t.SeparableConv1DQuantize(),
            t.SeparableConvQuantize(),
            t.Conv2DReshapeBatchNormReLUQuantize(),
            t.Conv2DReshapeBatchNormActivationQuantize(),
            t.Conv2DBatchNormReLUQuantize(),
            t.Conv2DBatchNormActivationQuantize(),
            t.Conv2DReshapeBatchNormQuantize(),
            t.Conv2DBatchNormQuantize(),
            t.ConcatTransform6Inputs(),
            t.ConcatTransform5Inputs(),
            t.ConcatTransform4Inputs(),
            t.ConcatTransform3Inputs(),
            t.ConcatTransform(),
            t.DenseBatchNormQuantize(),
            t.DenseBatchNormReLUQuantize(),
            t.DenseBatchNormActivationQuantize(),
            _ReLUKeepsWeights(),
            _ReLUActivationKeepsWeights(),
        ]
        return _model_transformer.ModelTransformer(
            model, transforms, set(layer_quantize_map.keys()), layer_quantize_map
        ).transform()


class _Scheme(_scheme.Default8BitQuantizeScheme):
    """TFMOT's default 8-bit scheme with :class:`_LayoutTransform`."""

    def get_layout_transformer(self):
        return _LayoutTransform()


def quantize_model(
    model: keras.Model, scheme: Any = None, weight_bits: Mapping[str, int] | None = None
) -> keras.Model:
    """A QAT copy of ``model`` (same weights) with 8-bit fake quantization.

    Train it with ``compile``/``fit`` (or a learner), then convert it with
    :func:`pocketflow_tf.tflite_export.convert` in ``"int8"`` mode.

    Args:
        model: A functional or Sequential model without other TFMOT wrappers.
        scheme: A TFMOT quantize scheme (default: ``Default8BitQuantizeScheme``; e.g.
            ``Default8BitPrunePreserveQuantizeScheme`` to keep pruned zeros).
        weight_bits: ``{layer name: bits}`` (2..8) for layers whose weights are fake-quantized
            to fewer levels (see :func:`quantized_weight_layers`); the others keep 8 bits.

    Returns:
        The quantize-wrapped model (the input model is not modified).

    Raises:
        UnsupportedModelError: For subclassed models and models that are already QAT models.
        InvalidArgumentError: For ``weight_bits`` naming a layer whose weights are not
            quantized, or bits outside 2..8.

    Example:
        >>> qat = quantize_model(trained)  # doctest: +SKIP
        >>> qat.compile(...); qat.fit(x, y, epochs=1)  # doctest: +SKIP
    """
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise errors.UnsupportedModelError(
            f"model {getattr(model, 'name', model)!r} is not a functional or Sequential model"
        )
    if is_quantized(model):
        raise errors.UnsupportedModelError(
            f"model {model.name!r} already holds TFMOT wrappers; quantize the plain model"
        )
    # TFMOT annotates layers, not models (ConvNeXt's Sequential stem).
    model = graph_rebuild.inline_nested(model)
    # A convolution that is also a model output has two consumers: TFMOT does not fold it.
    outputs = {t._keras_history.layer.name for t in model.outputs}

    def annotate(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.InputLayer) or type(layer).__name__ == "TFOpLambda":
            # A wrapped tf op receives its tensor inside a one-element list and fails (TFMOT
            # 0.8.1: MobileNetV3's hard-swish `x + 3`); unannotated, it runs in float and
            # the converter quantizes its output, as for a NoOp-annotated layer.
            return fresh
        if _folded_by_transforms(layer, outputs):
            return _qk.quantize_annotate_layer(fresh)
        config, as_registered = _quantize_config(layer)
        if config is None:
            config = (
                FloatOutputQuantizeConfig() if _ends_in_a_scale(layer) else NoOpQuantizeConfig()
            )
        elif as_registered:
            config = None
        return _qk.quantize_annotate_layer(fresh, quantize_config=config)

    bits = dict(weight_bits or {})
    if bits:
        quantizable = quantized_weight_layers(model)
        unknown = sorted(set(bits) - set(quantizable))
        if unknown:
            raise errors.InvalidArgumentError(
                "weight_bits",
                {k: bits[k] for k in unknown},
                f"layers whose weights are quantized: {quantizable}",
            )
        for name, b in bits.items():
            if isinstance(b, bool) or b not in WEIGHT_BITS:
                raise errors.InvalidArgumentError(f"weight_bits[{name!r}]", b, "an integer in 2..8")
    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    # TFMOT clones through configs: layer classes outside keras.layers (keras.applications'
    # LayerScale, a user's registered layer) must be known by name while it does.
    own = {
        type(layer).__name__: type(layer)
        for layer in model.layers
        if not type(layer).__module__.startswith(("tf_keras.src.layers", "keras.src.layers"))
    }
    with quantize_scope(own):
        if scheme is None:
            q = _qk.quantize_apply(annotated, _Scheme())
        else:
            q = _qk.quantize_apply(annotated, scheme)
        return _set_weight_bits(q, bits) if bits else q


def _ends_in_a_scale(layer) -> bool:
    """Whether a layer run in float is a multiplication by a constant, which the converter
    folds into the convolution after it unless a quantized output stands between them:
    ``Rescaling`` without offset (checked: with an offset, ``Rescaling(1/127.5, offset=-1)``,
    and an adapted ``Normalization`` the int8 files agree with the QAT model without it).
    """
    if type(layer).__name__ != "Rescaling":
        return False
    return not np.any(np.asarray(layer.get_config().get("offset", 0.0), dtype=np.float64))


def _folded_by_transforms(layer, outputs: Collection[str] = ()) -> bool:
    """Whether TFMOT's layout transforms fold ``layer`` (a BatchNormalization) into the
    convolution before it.

    TFMOT's ``Conv2DBatchNormQuantize`` matches (and the BatchNorm, which its registry does
    not list, only works folded) when the convolution is a Conv2D/DepthwiseConv2D with a
    linear activation, called once, whose only consumer is this BatchNorm (``outputs``: the
    names of the model's output layers, which count as consumers). A BatchNormalization
    elsewhere runs in float: after ``Conv2D(activation="relu")`` (TFMOT does not fold it and
    refuses it unfolded), ResNet50V2's pre-activation, after a SeparableConv2D or a grouped
    convolution (where TFMOT's fold breaks).
    """
    if type(layer).__name__ not in _FOLDED_BY_TRANSFORMS:
        return False
    nodes = getattr(layer, "_inbound_nodes", [])
    producers = [getattr(n, "inbound_layers", None) for n in nodes]
    if len(producers) != 1 or isinstance(producers[0], list | tuple):
        return False
    conv = producers[0]
    return (
        type(conv).__name__ in ("Conv2D", "DepthwiseConv2D")
        and int(getattr(conv, "groups", 1) or 1) == 1
        # TFMOT's pattern compares the serialised config: {"activation": "linear"}.
        and str(conv.get_config().get("activation")) == "linear"
        and len(getattr(conv, "_inbound_nodes", [])) == 1
        and len(getattr(conv, "_outbound_nodes", [])) == 1
        and conv.name not in outputs
    )


def _set_weight_bits(q: keras.Model, bits: Mapping[str, int]) -> keras.Model:
    """Clones the QAT model ``q`` with the ``weight_bits`` configs swapped in (same weights).

    Going through the layer configs (rather than mutating built quantizers) keeps the
    bit-widths in what ``save``/``load`` and the multi-worker rebuild see.
    """
    seen = set()

    def clone(layer):
        config = layer.get_config()
        inner = getattr(layer, "layer", None)
        qc = config.get("quantize_config")
        if inner is not None and inner.name in bits and isinstance(qc, dict):
            cls = _BITS_CONFIGS.get(qc.get("class_name"))
            if cls is not None and qc["config"].get("weight_attrs"):
                config["quantize_config"] = {
                    "class_name": cls.__name__,
                    "config": {**qc["config"], "weight_bits": int(bits[inner.name])},
                }
                seen.add(inner.name)
        return layer.__class__.from_config(config)

    rebuilt = keras.models.clone_model(q, clone_function=clone)
    if seen != set(bits):  # a layer TFMOT's scheme did not wrap with a weight quantizer
        raise errors.UnsupportedModelError(
            f"weight_bits for {sorted(set(bits) - seen)}: TFMOT did not quantize their weights"
        )
    rebuilt.set_weights(q.get_weights())
    return rebuilt


__all__ = [
    "WEIGHT_BITS",
    "low_bit_weights",
    "BitsConvQuantizeConfig",
    "BitsQuantizeConfig",
    "NoOpQuantizeConfig",
    "is_quantized",
    "quantize_model",
    "quantize_scope",
    "quantized_weight_layers",
    "registry_config",
    "weight_bits_of",
]
