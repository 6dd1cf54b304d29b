"""Cheap channel importance scores: L1 norm of the kernels and BatchNorm |gamma|.

These are the baselines the LASSO selection is compared against (Li et al. 2017 prune by the
L1 norm of filters; Liu et al. 2017's network slimming by the BN scale). A group's score sums
the scores of all its producers (and BNs), so residual groups are ranked as a whole.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import channel_graph
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    >>> m.layers[0].set_weights([np.array([[1.0, -3.0, 0.5], [0.0, 1.0, 0.5]]), np.zeros(3)])
    >>> g = channel_graph.build(m)
    >>> l1_scores(m, g, g.prunable_groups()[0]).tolist()
    [1.0, 4.0, 1.0]
"""

from __future__ import annotations

import numpy as np

from pocketflow_tf import channel_graph, errors
from pocketflow_tf.compat import keras


def _positions(graph, segments, gid):
    out, off = [], 0
    for s in segments:
        if graph.find(s.group) == gid:
            out.append(off + np.arange(s.size))
        off += s.width
    return out


def l1_scores(
    model: keras.Model, graph: channel_graph.ChannelGraph, group: channel_graph.ChannelGroup
) -> np.ndarray:
    """Sum over the group's producers of each output channel's kernel L1 norm.

    Example:
        A residual group sums its producers (here ``a`` and ``b``, joined by ``Add``):

        >>> inp = keras.Input((4, 4, 1))
        >>> a = keras.layers.Conv2D(2, 1, use_bias=False, name="a")(inp)
        >>> b = keras.layers.Conv2D(2, 1, use_bias=False, name="b")(inp)
        >>> m = keras.Model(inp, keras.layers.Conv2D(1, 1)(keras.layers.Add()([a, b])))
        >>> m.get_layer("a").set_weights([np.array([[[[1.0, -2.0]]]])])
        >>> m.get_layer("b").set_weights([np.array([[[[0.5, 0.5]]]])])
        >>> g = channel_graph.build(m)
        >>> [sorted(group.producers) for group in g.prunable_groups()]
        [['a', 'b']]
        >>> l1_scores(m, g, g.prunable_groups()[0]).tolist()
        [1.5, 2.5]
    """
    score = np.zeros(group.size)
    for name in group.producers:
        layer = model.get_layer(name)
        kernel = layer.get_weights()[1 if type(layer).__name__.startswith("Separable") else 0]
        per_out = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
        for pos in _positions(graph, graph.layers[name].output, group.id):
            score += per_out[pos]
    return score


def bn_gamma_scores(
    model: keras.Model, graph: channel_graph.ChannelGraph, group: channel_graph.ChannelGroup
) -> np.ndarray:
    """Sum of ``|gamma|`` over the group's BatchNorm layers (network slimming).

    Raises:
        InvalidArgumentError: The group has no BatchNorm with a scale.

    Example:
        >>> inp = keras.Input((4, 4, 1))
        >>> h = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(3, 1)(inp))
        >>> m = keras.Model(inp, keras.layers.Conv2D(1, 1)(h))
        >>> bn = m.get_layer("bn")
        >>> bn.set_weights([np.array([0.5, -2.0, 1.0])] + bn.get_weights()[1:])
        >>> g = channel_graph.build(m)
        >>> bn_gamma_scores(m, g, g.prunable_groups()[0]).tolist()
        [0.5, 2.0, 1.0]
    """
    score = np.zeros(group.size)
    found = False
    for name in group.members:
        layer = model.get_layer(name)
        if type(layer).__name__ != "BatchNormalization" or not layer.scale:
            continue
        gamma = np.abs(layer.get_weights()[0])
        for pos in _positions(graph, graph.layers[name].inputs[0], group.id):
            score += gamma[pos]
            found = True
    if not found:
        raise errors.InvalidArgumentError(
            "cp_criterion",
            "bn_gamma",
            f"'l1' or 'lasso' for group {group.producers} (it has no BatchNorm scale)",
        )
    return score


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, ascending (ties: lower index first).

    Example:
        >>> top_k(np.array([0.1, 0.9, 0.5, 0.9]), 2).tolist()
        [1, 3]
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:k])
