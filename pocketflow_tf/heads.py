"""The model's output contract: logits or probabilities, detected, trained on logits.

Learners train with a cross-entropy on logits and distil by comparing softmaxes of
temperature-scaled logits. A model ending in a softmax (``Dense(10, activation="softmax")``,
the Keras tutorials' default, a ``Softmax`` layer or ``Activation("softmax")``) outputs
probabilities: a distillation term over them compares softmaxes of probabilities, which are
nearly uniform, and the cross-entropy is right only through a backend's quiet fallback. So the
learners train the pre-softmax tensor explicitly: :func:`split` returns the logits model and
the :class:`Head` taken off, and :func:`attach` puts the same softmax back on the result, so a
user who handed over probabilities gets probabilities back (Keras model and ``.tflite``).

Heads the learners cannot train correctly are refused by name: a ``sigmoid`` output
(multi-label or binary with one unit) and a softmax over any axis but the last.

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

from pocketflow_tf import errors
from pocketflow_tf.compat import keras

#: Final activations that the learners refuse, with the reason.
_REFUSED = {
    "sigmoid": "a sigmoid output scores each class on its own (multi-label or one-unit "
    "binary); the learners train single-label classifiers with one logit per class",
}


@dataclasses.dataclass(frozen=True)
class Head:
    """What :func:`split` took off a model's output.

    Attributes:
        kind: ``"logits"`` (nothing taken off) or ``"softmax"``.
        layer_name: Name of the layer the softmax came from (``None`` for logits).

    Example:
        >>> Head("logits").kind
        'logits'
    """

    kind: str
    layer_name: str | None = None


LOGITS = Head("logits")


def _output_layer(model: keras.Model):
    history = getattr(model.outputs[0], "_keras_history", None) if model.outputs else None
    return history.layer if history is not None else model.layers[-1]


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
    act = cfg.get("activation")
    if isinstance(act, dict):  # a serialised activation
        act = act.get("config", {}).get("name") or act.get("class_name")
    return act if isinstance(act, str) else None


def output_kind(model: keras.Model) -> str:
    """``"softmax"`` when ``model`` outputs probabilities through a final softmax, else
    ``"logits"``.

    Raises:
        InvalidArgumentError: A head the learners cannot train (sigmoid; softmax over
            another axis than the classes).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> output_kind(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
        'logits'
        >>> output_kind(keras.Sequential([keras.Input((4,)),
        ...                               keras.layers.Dense(3, activation="sigmoid", name="out")]))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: "output layer 'out' applies sigmoid". Accepted: a classifier ending in logits or a softmax over the classes (a sigmoid output scores each class on its own (multi-label or one-unit binary); the learners train single-label classifiers with one logit per class).
    """
    layer = _output_layer(model)
    act = _activation_name(layer)
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
    if output_kind(model) == "logits":
        return model, LOGITS
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


def attach(model: keras.Model, head: Head) -> keras.Model:
    """``model`` with ``head`` put back on its output (no-op for logits, or when ``model``
    already ends in a softmax).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> import numpy as np
        >>> m = attach(keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]),
        ...            Head("softmax", "probs"))
        >>> float(np.round(m.predict(np.ones((1, 2)), verbose=0).sum(), 5))
        1.0
    """
    if head.kind == "logits" or output_kind(model) == "softmax":
        return model
    taken = {layer.name for layer in model.layers}
    name = head.layer_name if head.layer_name not in taken else f"{head.layer_name}_softmax"
    while name in taken:
        name += "_"
    out = keras.layers.Activation("softmax", name=name)(model.outputs[0])
    return keras.Model(model.inputs, out, name=model.name)
