"""A trained QAT model rewritten without TFMOT: standard layers plus fixed fake-quant steps.

TFMOT's quantization wrappers exist only in tf-keras, so a quantization-aware result could
not reach a Keras 3 caller. At inference a wrapper computes nothing a standard model cannot:

* each quantized weight is its quantizer's output on the stored ranges (a constant once
  training ends): the frozen layer holds those values;
* an activation is quantized before and/or after it, as TFMOT's ``QuantizeAwareActivation``
  decides for that function (``softmax`` before, ``relu`` after...): the frozen layer runs
  linear and is followed by ``FakeQuant`` / ``Activation`` / ``FakeQuant`` steps;
* an output quantizer, and the ``QuantizeLayer`` on the inputs, become one ``FakeQuant``
  each, holding the learned range.

:func:`freeze` builds that model and checks it against the QAT model on a probe batch
(refusing with the largest difference when they disagree); the bridge
(:func:`pocketflow_tf.model_io.to_keras3`) rebuilds it in Keras 3, where ``FakeQuant`` has a
twin (:mod:`pocketflow_tf.fake_quant`). The frozen model is for inference and further float
use; quantization-aware training itself continues in tf-keras.

The quantizers' inference path is read from TFMOT's objects (``_weight_vars``,
``_quantize_activations``, ``_output_quantizers``): TFMOT has no public API that lists them,
and reading them beats re-deriving TFMOT's per-layer layout transforms here.

Example:
    >>> from pocketflow_tf import qat
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3),
    ...                       keras.layers.BatchNormalization(), keras.layers.ReLU(),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> frozen = freeze(qat.quantize_model(m))
    >>> qat.is_quantized(frozen), "FakeQuant" in [type(x).__name__ for x in frozen.layers]
    (False, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from pocketflow_tf import errors, fake_quant, graph_rebuild, qat
from pocketflow_tf.compat import keras

#: Largest difference between a QAT model and its frozen form on the probe batch. Both run
#: the same kernels; the slack covers the float sums of a convolution running linear and
#: then its activation, against the two fused.
TOLERANCE = 1e-5


def freeze(model: keras.Model, x_probe: Any = None, *, seed: int = 0) -> keras.Model:
    """The QAT ``model`` without TFMOT wrappers, with the same inference outputs.

    Args:
        model: A model built by :func:`pocketflow_tf.qat.quantize_model` (or TFMOT's
            ``quantize_apply``), typically trained.
        x_probe: Inputs to compare the two models on (default: 8 uniform [0, 1) samples of
            the input shape, seeded).
        seed: Seed of the default probe.

    Returns:
        A tf-keras functional model of standard layers (the original names) and
        :class:`~pocketflow_tf.fake_quant.FakeQuant` steps.

    Raises:
        InvalidArgumentError: ``model`` holds no TFMOT wrappers.
        UnsupportedModelError: A quantizer or layer arrangement this cannot freeze (named),
            or a frozen model whose outputs differ from the QAT model's on the probe.

    Example:
        >>> frozen = freeze(trained_qat_model)  # doctest: +SKIP
    """
    if not isinstance(model, keras.Model) or not qat.is_quantized(model):
        raise errors.InvalidArgumentError(
            "model", getattr(model, "name", type(model).__name__), "a TFMOT QAT model"
        )
    # Unwrapped layers keep their names; a wrapped layer takes its inner layer's name unless
    # an unwrapped one holds it (heads.attach names the softmax it adds after the logits).
    taken = {layer.name for layer in model.layers if not hasattr(layer, "quantize_config")}

    def take(name: str) -> str:
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    frozen = graph_rebuild.rebuild(model, lambda layer: _converter(layer, take))
    _check(model, frozen, x_probe, seed)
    return frozen


def _converter(layer, take: Callable[[str], str]) -> Callable:
    """``(args, kwargs) -> outputs`` computing ``layer``'s inference without TFMOT."""
    if type(layer).__name__ == "QuantizeLayer":
        qvars = getattr(layer, "quantizer_vars", None)
        step = _fake_quant(layer.quantizer, qvars, take(layer.name))
        return lambda args, kwargs: step(args[0]) if step is not None else args[0]
    if hasattr(layer, "quantize_config") and hasattr(layer, "layer"):
        return _wrapper_steps(layer, take)
    new = layer.__class__.from_config(layer.get_config())
    return _called_with_weights(new, layer.get_weights())


def _called_with_weights(new, values: Any, after: Callable | None = None) -> Callable:
    """Calls ``new`` like the source layer; once it is built, sets ``values`` (a list, or a
    function of the built layer giving it)."""
    state = {"set": False}

    def call(args, kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k != "training" and v is not None}
        out = new(*args, **kwargs)
        if not state["set"]:
            weights = values(new) if callable(values) else values
            if weights:
                new.set_weights(weights)
            state["set"] = True
        return after(out) if after is not None else out

    return call


def _key(var: Any, *layer_names: str) -> str:
    """A weight's name below its layer's (``conv/kernel:0`` -> ``kernel:0``)."""
    name = var.name
    for prefix in layer_names:
        if name.startswith(f"{prefix}/"):
            return name[len(prefix) + 1 :]
    return name


def _fake_quant(quantizer: Any, qvars: Any, name: str) -> keras.layers.Layer | None:
    """The ``FakeQuant`` step a TFMOT quantizer takes at inference (``None``: identity)."""
    kind = type(quantizer).__name__
    if quantizer is None or kind == "NoQuantizer":
        return None
    narrow = bool(getattr(quantizer, "narrow_range", False))
    if kind == "FixedQuantizer":  # TFMOT's FixedQuantize is 8-bit whatever num_bits says
        return fake_quant.FakeQuant(quantizer.init_min, quantizer.init_max, 8, narrow, name=name)
    if isinstance(qvars, dict) and {"min_var", "max_var"} <= set(qvars):
        lo = np.asarray(qvars["min_var"]).astype(np.float64)
        hi = np.asarray(qvars["max_var"]).astype(np.float64)
        if lo.ndim == 0:
            lo, hi = float(lo), float(hi)
        else:
            lo, hi = lo.reshape(-1).tolist(), hi.reshape(-1).tolist()
        return fake_quant.FakeQuant(lo, hi, int(quantizer.num_bits), narrow, name=name)
    raise errors.UnsupportedModelError(
        f"{name}: the quantizer {kind} has no fixed range to freeze (supported: TFMOT's "
        "LastValue, MovingAverage, AllValues, Fixed and No quantizers)"
    )


def _wrapper_steps(wrapper, take: Callable[[str], str]) -> Callable:
    """One wrapped layer: the layer (quantized weights, run linear), then its activation's
    and output's quantization steps."""
    inner = wrapper.layer
    config = inner.get_config()
    activations = list(wrapper._quantize_activations)
    if len(activations) > 1:
        raise errors.UnsupportedModelError(
            f"layer {inner.name!r} quantizes {len(activations)} activations; one is supported"
        )
    if activations:
        attrs = list(getattr(wrapper.quantize_config, "activation_attrs", ["activation"]))
        if attrs != ["activation"]:
            raise errors.UnsupportedModelError(
                f"layer {inner.name!r} quantizes the activations {attrs}; 'activation' only"
            )
        config["activation"] = "linear"
    base = config["name"] = take(inner.name)
    new = inner.__class__.from_config(config)
    steps = []
    for qa in activations:
        if qa._should_pre_quantize():
            steps.append(_fake_quant(qa.quantizer, qa._pre_activation_vars, take(f"{base}_pre")))
        act = qa._name(qa.activation)
        if act not in ("linear", "NoOpActivation"):
            steps.append(keras.layers.Activation(act, name=take(f"{base}_{act}")))
        if qa._should_post_quantize():
            steps.append(_fake_quant(qa.quantizer, qa._post_activation_vars, take(f"{base}_q")))
    if wrapper._output_quantizers:
        quantizer, qvars = wrapper._output_quantizers[0], wrapper._output_quantizer_vars
        steps.append(_fake_quant(quantizer, qvars, take(f"{base}_out_q")))
    steps = [step for step in steps if step is not None]

    def after(x):
        for step in steps:
            x = step(x)
        return x

    quantized = {
        w.ref(): np.asarray(quantizer(w, False, weights=qvars))
        for w, quantizer, qvars in wrapper._weight_vars
    }
    # The wrapper re-homes the inner layer's quantized variables (the inner layer tracks only
    # the others), so the values are matched by their names below the inner layer's or, in a
    # cloned QAT model, the wrapper's name.
    source = {_key(w, inner.name, wrapper.name): w for w in wrapper.weights}

    def values(built) -> list:
        out = []
        for w in built.weights:
            var = source.get(_key(w, built.name))  # built.name is `base`
            if var is None:
                raise errors.UnsupportedModelError(
                    f"layer {inner.name!r}: its weight {w.name!r} is not in the QAT wrapper"
                )
            out.append(quantized[var.ref()] if var.ref() in quantized else var.numpy())
        return out

    return _called_with_weights(new, values, after)


def _check(model: keras.Model, frozen: keras.Model, x_probe: Any, seed: int) -> None:
    if x_probe is None:
        shapes = [tuple(t.shape[1:]) for t in model.inputs]
        rng = np.random.default_rng(seed)
        x_probe = [rng.random((8, *s), dtype=np.float32) for s in shapes]
        x_probe = x_probe[0] if len(x_probe) == 1 else x_probe
    want = tf.nest.flatten(model(x_probe, training=False))
    got = tf.nest.flatten(frozen(x_probe, training=False))
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(want, got, strict=True)
    )
    if not diff <= TOLERANCE:
        raise errors.UnsupportedModelError(
            f"the frozen form of QAT model {model.name!r} differs from it by {diff:.3g} "
            f"(> {TOLERANCE}) on the probe batch; keep the tf-keras QAT model"
        )


__all__ = ["TOLERANCE", "freeze"]
