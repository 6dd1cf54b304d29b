"""Rebuilds a tf-keras functional model node by node, each layer replaced by a computation.

The rewrites that are not one layer for one layer (a QAT wrapper becoming a layer plus
fake-quant steps, nested models inlined) need what ``keras.models.clone_model`` does not
give: a function per layer that may build several layers, called on the mapped arguments
of each of the layer's calls. This walks the graph in topological order (the same node
helpers as the Keras 3 bridge in :mod:`pocketflow_tf.model_io`), inlines nested models and
builds the new functional model.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
    >>> def twice(layer):  # each layer followed by a doubling
    ...     new = layer.__class__.from_config(layer.get_config())
    ...     return lambda args, kwargs: keras.layers.Rescaling(2.0)(new(*args, **kwargs))
    >>> [type(x).__name__ for x in rebuild(m, twice).layers]
    ['InputLayer', 'Dense', 'Rescaling']
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pocketflow_tf import layer_rules, model_io
from pocketflow_tf.compat import keras

#: ``(positional args, keyword args) -> output(s)`` of one layer call in the new model.
Call = Callable[[list, dict], Any]


def rebuild(
    model: keras.Model,
    convert: Callable[[Any], Call],
    input_shapes: list[tuple[int | None, ...]] | None = None,
) -> keras.Model:
    """A new functional model computing ``model``'s graph with each layer converted.

    Args:
        model: A tf-keras functional or Sequential model.
        convert: ``layer -> call``, called once per layer (a shared layer's calls share
            the result); nested models are inlined and their layers converted.
        input_shapes: Per-sample shapes of the new model's inputs (default: ``model``'s).

    Returns:
        The new model, with ``model``'s input shapes, dtypes and name.

    Example:
        >>> same = rebuild(keras.Sequential([keras.Input((2,)), keras.layers.ReLU()]),
        ...                lambda layer: lambda args, kwargs: layer(*args, **kwargs))
        >>> same.output_shape
        (None, 2)
    """
    made: dict[int, Any] = {}  # id(source KerasTensor) -> new tensor
    calls: dict[int, Call] = {}  # id(source layer) -> its conversion

    def mapped(obj: Any) -> Any:
        if isinstance(obj, list | tuple):
            return type(obj)(mapped(v) for v in obj)
        if isinstance(obj, dict):
            return {k: mapped(v) for k, v in obj.items()}
        return made.get(id(obj), obj) if type(obj).__name__ == "KerasTensor" else obj

    def walk(graph, training: bool | None = None) -> None:
        for layer, node in model_io._nodes_in_order(graph):
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.Model):
                for inner, outer in zip(layer.inputs, model_io._node_inputs(node), strict=True):
                    made[id(inner)] = mapped(outer)
                # `base(x, training=False)` (the transfer-learning idiom) holds every layer
                # of `base` in inference mode in tf-keras, whatever mode the outer model runs
                # in; inlined, each of its layers is called so.
                said = model_io._node_arguments(node)[1].get("training")
                walk(layer, training if said is None else bool(said))
                outs = [made[id(t)] for t in layer.outputs]
            else:
                if id(layer) not in calls:
                    calls[id(layer)] = convert(layer)
                args, kwargs = model_io._node_arguments(node)
                if (
                    training is not None
                    and kwargs.get("training") is None
                    and _takes_training(layer)
                ):
                    kwargs = {**kwargs, "training": training}
                outs = calls[id(layer)](mapped(list(args)), mapped(kwargs))
                outs = list(outs) if isinstance(outs, list | tuple) else [outs]
            for src, out in zip(model_io._node_outputs(node), outs, strict=True):
                made[id(src)] = out

    for i, t in enumerate(model.inputs):
        name = t._keras_history.layer.name  # the InputLayer's name is kept
        shape = tuple(t.shape) if input_shapes is None else (None, *input_shapes[i])
        made[id(t)] = keras.Input(batch_shape=shape, dtype=t.dtype, name=name)
    inputs = [made[id(t)] for t in model.inputs]
    walk(model)
    outputs = [made[id(t)] for t in model.outputs]
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=model.name,
    )


def _takes_training(layer) -> bool:
    # Only a `call` that names `training` (BatchNormalization, Dropout, ...): a tf op
    # layer's **kwargs would hand it on to the op.
    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


#: Layers that pass their input through unchanged in inference mode (the noise and dropout
#: layers, the random augmentations): called with ``training=False`` they are left out.
IDENTITY_AT_INFERENCE = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
        *layer_rules.AUGMENTATION_LAYERS,
    }
)


def inline_nested(model: keras.Model) -> keras.Model:
    """``model`` flat: nested models inlined, calls with ``training=False`` made structural.

    The channel graph sees a nested model as one opaque layer and TFMOT annotates layers,
    not models, so the learners work on flat models: each takes a nested tf-keras model
    flattened here (a Keras 3 one arrives flattened by the bridge). ``trainable=False``
    stays on each layer. A nested model called with ``training=False``
    (``base(x, training=False)``, the transfer-learning idiom) holds its layers in inference
    mode in tf-keras; the rebuilds after this one (TFMOT's, the surgery's) drop call
    arguments, so that mode is kept in a form they keep: a ``BatchNormalization`` so called
    becomes ``trainable=False`` (tf-keras runs such a layer in inference mode; its scale and
    offset are frozen too), a dropout, noise or random augmentation layer so called (an
    identity in inference mode) is left out. Any other layer keeps ``training=False`` in its
    call. A model with neither is returned as it is.

    Example:
        >>> inner = keras.Sequential([keras.layers.Dense(4, name="h")], name="block")
        >>> m = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2, name="o")])
        >>> [lay.name for lay in inline_nested(m).layers[1:]]
        ['h', 'o']
    """
    graph = isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
    if not graph:
        return model  # no graph to inline into (a subclassed model)
    nested = any(isinstance(lay, keras.Model) for lay in model.layers)
    held = any(
        model_io._node_arguments(node)[1].get("training") is False
        for _, node in model_io._nodes_in_order(model)
    )
    if not nested and not held:
        return model
    copies: list[tuple[Any, Any]] = []

    def convert(layer) -> Call:
        made: list = []  # the copy, made at the first call (which says the mode)

        def call(args, kwargs):
            held = kwargs.get("training") is False
            if held and type(layer).__name__ in IDENTITY_AT_INFERENCE:
                return args[0]
            if not made:
                cfg = layer.get_config()
                if held and isinstance(layer, keras.layers.BatchNormalization):
                    cfg["trainable"] = False
                made.append(layer.__class__.from_config(cfg))
                copies.append((made[0], layer))
            if (
                held
                and not made[0].trainable
                and isinstance(layer, keras.layers.BatchNormalization)
            ):
                kwargs = {k: v for k, v in kwargs.items() if k != "training"}
            return made[0](*args, **kwargs)

        return call

    out = rebuild(model, convert)
    for new, layer in copies:
        new.set_weights(layer.get_weights())
    return out


def at_input_shape(model: keras.Model, shape: tuple[int, ...]) -> keras.Model:
    """``model`` with an input left open (``Input((None, None, 3))``) fixed to ``shape``.

    The learners and the export work at one image size: FLOPs, the channel graph's costs,
    calibration and the ``.tflite`` all need it. A model whose size is open is taken at the
    size of its data (same layers, names and weights); one whose size is fixed, or a
    subclassed model, is returned as it is.

    Example:
        >>> inp = keras.Input((None, None, 3))
        >>> m = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inp)))
        >>> at_input_shape(m, (16, 16, 3)).input_shape
        (None, 16, 16, 3)
    """
    graph = isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
    if not graph or len(model.inputs) != 1:
        return model
    own = tuple(model.inputs[0].shape[1:])
    if None not in own or len(own) != len(shape):
        return model
    fixed = tuple(int(s) if o is None else int(o) for o, s in zip(own, shape, strict=True))
    return copy(model, input_shapes=[fixed])


def copy(
    model: keras.Model,
    skip: Callable[[Any], bool] | None = None,
    input_shapes: list[tuple[int | None, ...]] | None = None,
) -> keras.Model:
    """A copy of ``model`` (nested models inlined) whose layers are fresh copies with the
    same weights; a layer for which ``skip(layer)`` holds is left out, its first input
    passed on in its place.

    Args:
        model: A tf-keras functional or Sequential model.
        skip: ``layer -> bool``; ``None`` keeps every layer.
        input_shapes: Per-sample shapes of the copy's inputs (default: ``model``'s).

    Returns:
        The new model.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.ReLU()])
        >>> [type(x).__name__ for x in copy(m, lambda l: type(l).__name__ == "ReLU").layers]
        ['InputLayer', 'Dense']
    """
    copies: list[tuple[Any, Any]] = []

    def convert(layer) -> Call:
        if skip is not None and skip(layer):
            return lambda args, kwargs: args[0]
        new = layer.__class__.from_config(layer.get_config())
        copies.append((new, layer))
        return lambda args, kwargs: new(*args, **kwargs)

    out = rebuild(model, convert, input_shapes)
    for new, layer in copies:
        new.set_weights(layer.get_weights())
    return out


__all__ = ["IDENTITY_AT_INFERENCE", "Call", "at_input_shape", "copy", "inline_nested", "rebuild"]
