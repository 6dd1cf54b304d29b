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

from collections.abc import Callable
from typing import Any

from pocketflow_tf import model_io
from pocketflow_tf.compat import keras

#: ``(positional args, keyword args) -> output(s)`` of one layer call in the new model.
Call = Callable[[list, dict], Any]


def rebuild(model: keras.Model, convert: Callable[[Any], Call]) -> keras.Model:
    """A new functional model computing ``model``'s graph with each layer converted.

    Args:
        model: A tf-keras functional or Sequential model.
        convert: ``layer -> call``, called once per layer (a shared layer's calls share
            the result); nested models are inlined and their layers converted.

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

    def walk(graph) -> None:
        for layer, node in model_io._nodes_in_order(graph):
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.Model):
                for inner, outer in zip(layer.inputs, model_io._node_inputs(node), strict=True):
                    made[id(inner)] = mapped(outer)
                walk(layer)
                outs = [made[id(t)] for t in layer.outputs]
            else:
                if id(layer) not in calls:
                    calls[id(layer)] = convert(layer)
                args, kwargs = model_io._node_arguments(node)
                outs = calls[id(layer)](mapped(list(args)), mapped(kwargs))
                outs = list(outs) if isinstance(outs, list | tuple) else [outs]
            for src, out in zip(model_io._node_outputs(node), outs, strict=True):
                made[id(src)] = out

    for t in model.inputs:
        name = t._keras_history.layer.name  # the InputLayer's name is kept
        made[id(t)] = keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=name)
    inputs = [made[id(t)] for t in model.inputs]
    walk(model)
    outputs = [made[id(t)] for t in model.outputs]
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=model.name,
    )


def copy(model: keras.Model, skip: Callable[[Any], bool] | None = None) -> keras.Model:
    """A copy of ``model`` (nested models inlined) whose layers are fresh copies with the
    same weights; a layer for which ``skip(layer)`` holds is left out, its first input
    passed on in its place.

    Args:
        model: A tf-keras functional or Sequential model.
        skip: ``layer -> bool``; ``None`` keeps every layer.

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

    out = rebuild(model, convert)
    for new, layer in copies:
        new.set_weights(layer.get_weights())
    return out


__all__ = ["Call", "copy", "rebuild"]
