"""The model's output contract: logits or probabilities, detected, trained on logits.

Learners train with a cross-entropy on logits and distil by comparing softmaxes of
temperature-scaled logits. A model ending in a softmax (``Dense(10, activation="softmax")``,
the Keras tutorials' default, a ``Softmax`` layer or ``Activation("softmax")``) outputs
probabilities: a distillation term over them compares softmaxes of probabilities, which are
nearly uniform, and the cross-entropy is right only through a backend's quiet fallback. So the
learners train the pre-softmax tensor explicitly: :func:`split` returns the logits model and
the :class:`Head` taken off, and :func:`attach` puts the same softmax back on the result, so a
user who handed over probabilities gets probabilities back (Keras model and ``.tflite``).

A **binary classifier with one output unit** (``Dense(1, activation="sigmoid")``, or
``Dense(1)`` giving a logit, as in the Keras tutorials) is two classes: :func:`split` turns its
``Dense(1)`` computing ``z`` into a ``Dense(2)`` computing ``(-z/2, z/2)``, whose softmax is
``(1 - sigmoid(z), sigmoid(z))`` exactly, and :func:`attach` puts a fixed ``Dense(2 -> 1)``
computing ``z1 - z0`` (and the sigmoid) back on the result, so the answer outputs what the
user's model did. Labels are the class indices 0 and 1; a one-unit output decides class 1
above 0.5 (sigmoid) or 0 (logit): :func:`predicted_classes`.

Heads the learners cannot train correctly are refused by name: a ``sigmoid`` over several
units (multi-label), a one-unit output not computed by a ``Dense`` layer or through another
activation, and a softmax over any axis but the last.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> logits_model, head = split(m)
    >>> head.kind, logits_model.layers[-1].get_config()["activation"]
    ('softmax', 'linear')
    >>> output_kind(attach(logits_model, head))
    'softmax'
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pocketflow_tf import errors
from pocketflow_tf.compat import keras

#: Final activations that the learners refuse, with the reason.
_REFUSED = {
    "sigmoid": "a sigmoid over several units scores each class on its own (multi-label); "
    "the learners train single-label classifiers with one logit per class, or a binary "
    "one with one unit",
}
#: Head kinds of a one-unit binary classifier, with the output above which it says class 1.
BINARY_THRESHOLDS = {"binary_sigmoid": 0.5, "binary_logit": 0.0}


@dataclasses.dataclass(frozen=True)
class Head:
    """What :func:`split` took off a model's output.

    Attributes:
        kind: ``"logits"`` (nothing taken off), ``"softmax"``, or a one-unit binary head:
            ``"binary_sigmoid"`` or ``"binary_logit"``.
        layer_name: Name of the layer the softmax or the one-unit output came from
            (``None`` for logits).

    Example:
        >>> Head("logits").kind
        'logits'
    """

    kind: str
    layer_name: str | None = None


LOGITS = Head("logits")


def _output_layer(model: keras.Model):
    history = getattr(model.outputs[0], "_keras_history", None) if model.outputs else None
    # tf-keras names the producing layer `layer`, Keras 3 `operation` (a Keras 3 model is
    # read here before the bridge, e.g. for its class count).
    layer = getattr(history, "layer", None) or getattr(history, "operation", None)
    return layer if layer is not None else model.layers[-1]


def _activation_name(layer) -> str | None:
    """The softmax-like activation a layer applies to its output (``None``: none known)."""
    cls = type(layer).__name__
    cfg = layer.get_config()
    if cls == "Softmax":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
        rank = len(layer.output.shape) if hasattr(layer, "output") else 2
        if axis not in (-1, rank - 1):
            return f"softmax over axis {axis}"
        return "softmax"
    if cls == "TFOpLambda" and cfg.get("function") in ("nn.softmax", "math.softmax"):
        return "softmax"
    if cls == "TFOpLambda" and cfg.get("function") in ("math.sigmoid", "nn.sigmoid"):
        return "sigmoid"
    if cls == "Sigmoid":  # Keras 3's keras.ops.sigmoid / keras.activations.sigmoid on a tensor
        return "sigmoid"
    act = cfg.get("activation")
    if isinstance(act, dict):  # a serialised activation
        act = act.get("config", {}).get("name") or act.get("class_name")
    return act if isinstance(act, str) else None


def _output_width(model: keras.Model) -> int | None:
    try:
        shape = tuple(model.outputs[0].shape) if model.outputs else ()
    except (AttributeError, RuntimeError):  # a subclassed model not built yet
        return None
    return int(shape[-1]) if len(shape) == 2 and shape[-1] is not None else None


def output_kind(model: keras.Model) -> str:
    """``"softmax"`` when ``model`` outputs probabilities through a final softmax,
    ``"binary_sigmoid"`` / ``"binary_logit"`` for a one-unit binary classifier, else
    ``"logits"``.

    Raises:
        InvalidArgumentError: A head the learners cannot train (sigmoid over several units;
            a one-unit output through another activation; softmax over another axis than
            the classes).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> output_kind(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
        'logits'
        >>> output_kind(keras.Sequential([keras.Input((4,)),
        ...                               keras.layers.Dense(3, activation="sigmoid", name="out")]))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: "output layer 'out' applies sigmoid". Accepted: a classifier ending in logits or a softmax over the classes (a sigmoid over several units scores each class on its own (multi-label); the learners train single-label classifiers with one logit per class, or a binary one with one unit).
    """
    layer = _output_layer(model)
    act = _activation_name(layer)
    if _output_width(model) == 1:
        kind = {"sigmoid": "binary_sigmoid", "linear": "binary_logit"}
        if act not in kind:
            # Unknown (a wrapper, an op): a probability read as a logit would be judged at
            # the wrong threshold, so it is not guessed.
            said = f"applying {act}" if act else f"({type(layer).__name__}) of unknown activation"
            raise errors.InvalidArgumentError(
                "model",
                f"a one-unit output layer {layer.name!r} {said}",
                "a binary classifier's one unit from a Dense layer, through a sigmoid or none "
                "(a logit)",
            )
        return kind[act]
    if act == "sigmoid" and _output_width(model) is None:
        # A subclassed model: one unit (binary) or several (multi-label) cannot be told.
        raise errors.InvalidArgumentError(
            "model",
            f"output layer {layer.name!r} applies sigmoid to an output of unknown width "
            f"({type(model).__name__} has no symbolic output)",
            "a functional or Sequential model for a sigmoid head (its width tells a binary "
            "classifier's one unit from a multi-label output), or logits / a softmax",
        )
    if act is None or act in ("linear", None):
        return "logits"
    if act == "softmax":
        return "softmax"
    if act in _REFUSED or act.startswith("softmax over"):
        raise errors.InvalidArgumentError(
            "model",
            f"output layer {layer.name!r} applies {act}",
            "a classifier ending in logits or a softmax over the classes ("
            + _REFUSED.get(act, "the class axis is the last one")
            + ")",
        )
    return "logits"  # e.g. a final ReLU: scores, trained as logits


def split(model: keras.Model) -> tuple[keras.Model, Head]:
    """The logits model of ``model`` (a copy with the same weights) and the head taken off.

    A logits model is returned as it is (``model`` itself, head :data:`LOGITS`).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> inp = keras.Input((4,))
        >>> m = keras.Model(inp, keras.layers.Softmax(name="probs")(keras.layers.Dense(3)(inp)))
        >>> lm, head = split(m)
        >>> head, lm.layers[-1].__class__.__name__
        (Head(kind='softmax', layer_name='probs'), 'Dense')
    """
    kind = output_kind(model)
    if kind == "logits":
        return model, LOGITS
    if kind in BINARY_THRESHOLDS:
        return _two_logits(model), Head(kind, _output_layer(model).name)
    layer = _output_layer(model)
    if type(layer).__name__ in ("Softmax", "Activation", "TFOpLambda"):
        # The softmax is a layer of its own: its input is the logits tensor. The sub-model
        # shares layers with the user's model, so an independent copy is returned.
        sub = keras.Model(model.inputs, layer.input, name=model.name)
        logits = keras.models.clone_model(sub)
        logits.set_weights(sub.get_weights())
        return logits, Head("softmax", layer.name)

    def clone(src):  # a layer with activation="softmax": the same layer, linear
        cfg = src.get_config()
        if src.name == layer.name:
            cfg["activation"] = "linear"
        return src.__class__.from_config(cfg)

    logits = keras.models.clone_model(model, clone_function=clone)
    logits.set_weights(model.get_weights())
    return logits, Head("softmax", layer.name)


def _two_logits(model: keras.Model) -> keras.Model:
    """A copy of a one-unit binary ``model`` whose ``Dense(1)`` (logit ``z``) is a
    ``Dense(2)`` giving ``(-z/2, z/2)``: softmax of those is ``(1 - sigmoid(z), sigmoid(z))``."""
    layer = _output_layer(model)
    if _is_attached_head(layer):
        # A result handed back by a learner: its two logits are right below the fixed head
        # (splitting the head again would stack one more layer per learner run).
        logits = keras.Model(model.inputs, layer.input, name=model.name)
        out = keras.models.clone_model(logits)
        out.set_weights(logits.get_weights())
        return out
    source = model
    separate = type(layer).__name__ in ("Activation", "TFOpLambda", "Sigmoid")
    if separate:  # a sigmoid layer of its own
        source = keras.Model(model.inputs, layer.input, name=model.name)
        layer = _output_layer(source)
    cfg = layer.get_config() if isinstance(layer, keras.layers.Dense) else {}
    # A Dense(1) applying a sigmoid of its own before a separate one would lose it.
    allowed = ("linear",) if separate else ("sigmoid", "linear")
    if cfg.get("units") != 1 or _activation_name(layer) not in allowed:
        raise errors.InvalidArgumentError(
            "model",
            f"a one-unit output computed by layer {layer.name!r} ({type(layer).__name__})",
            "a binary classifier whose one unit is computed by a Dense layer (optionally "
            "followed by a sigmoid)",
        )

    def clone(src):
        cfg = src.get_config()
        if src.name == layer.name:
            cfg.update(units=2, activation="linear")
        return src.__class__.from_config(cfg)

    out = keras.models.clone_model(source, clone_function=clone)
    for src, dst in zip(source.layers, out.layers, strict=True):
        values = src.get_weights()
        if src.name == layer.name:
            # Kernel (n, 1) -> (n, 2), bias (1,) -> (2,): the logit split in halves.
            values = [np.concatenate([-v / 2, v / 2], axis=-1) for v in values]
        dst.set_weights(values)
    return out


def _is_attached_head(layer) -> bool:
    """Whether ``layer`` is the fixed ``Dense(2 -> 1)`` :func:`_one_unit` puts on a result."""
    if not isinstance(layer, keras.layers.Dense) or layer.trainable:
        return False
    cfg = layer.get_config()
    values = layer.get_weights()
    return (
        cfg.get("units") == 1
        and len(values) == 2
        and values[0].shape == (2, 1)
        and np.array_equal(values[0], np.array([[-1.0], [1.0]], values[0].dtype))
        and not np.any(values[1])
    )


def predicted_classes(outputs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The class each row of ``outputs`` says: its argmax, or for a one-unit output 1 where
    it exceeds ``threshold`` (0.5 for a sigmoid, 0 for a logit; see :func:`threshold`).

    Example:
        >>> predicted_classes(np.array([[0.2, 0.9], [3.0, 1.0]]))
        array([1, 0])
        >>> predicted_classes(np.array([[0.7], [0.2]]), threshold=0.5)
        array([1, 0])
    """
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        if threshold is None:
            # Reached by a model whose head cannot be read (e.g. a subclassed model):
            # guessing 0.5 or 0 would score a probability as a logit or the reverse.
            raise errors.InvalidArgumentError(
                "outputs",
                "one unit per sample and no decision threshold",
                "an output per class (decided by argmax), or a one-unit binary classifier "
                "whose head can be read (a functional or Sequential model ending in a "
                "Dense(1) sigmoid or logit: class 1 above 0.5 or 0)",
            )
        return (outputs[:, 0] > threshold).astype(np.int64)
    return outputs.argmax(axis=1)


def threshold(model: keras.Model) -> float | None:
    """The output above which a one-unit binary ``model`` says class 1 (``None`` for a model
    with one output per class).

    Example:
        >>> threshold(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, "sigmoid")]))
        0.5
    """
    if _output_width(model) != 1:  # an output per class: argmax, whatever its head
        return None
    return BINARY_THRESHOLDS.get(output_kind(model))


def attach(model: keras.Model, head: Head) -> keras.Model:
    """``model`` with ``head`` put back on its output (no-op for logits, or when ``model``
    already ends in a softmax, or in one unit for a binary head).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> import numpy as np
        >>> m = attach(keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]),
        ...            Head("softmax", "probs"))
        >>> float(np.round(m.predict(np.ones((1, 2)), verbose=0).sum(), 5))
        1.0
    """
    if head.kind == "logits":
        return model
    if head.kind in BINARY_THRESHOLDS:
        return _one_unit(model, head)
    if output_kind(model) == "softmax":
        return model
    taken = {layer.name for layer in model.layers}
    name = head.layer_name if head.layer_name not in taken else f"{head.layer_name}_softmax"
    while name in taken:
        name += "_"
    out = keras.layers.Activation("softmax", name=name)(model.outputs[0])
    return keras.Model(model.inputs, out, name=model.name)


def _one_unit(model: keras.Model, head: Head) -> keras.Model:
    """A two-logit ``model`` back as one unit: a fixed ``Dense(2 -> 1)`` computing
    ``z1 - z0`` (the logit :func:`_two_logits` split), through the head's sigmoid.

    A layer of its own rather than the final Dense folded back: whatever the learner made of
    that Dense (sparse, clustered, quantized, wrapped) stays as it is.
    """
    if _output_width(model) == 1:
        return model
    taken = {layer.name for layer in model.layers}
    name = head.layer_name if head.layer_name not in taken else f"{head.layer_name}_binary"
    while name in taken:
        name += "_"
    activation = "sigmoid" if head.kind == "binary_sigmoid" else "linear"
    # float32 whatever the global policy: a mixed-precision model's output stays float32.
    dense = keras.layers.Dense(
        1, activation=activation, name=name, trainable=False, dtype="float32"
    )
    out = dense(model.outputs[0])
    dense.set_weights([np.array([[-1.0], [1.0]], np.float32), np.zeros(1, np.float32)])
    return keras.Model(model.inputs, out, name=model.name)
