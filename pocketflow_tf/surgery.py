"""Model surgery: build a physically thinner Keras model from a channel keep-map.

Given the :mod:`channel_graph` of a model and, per channel group, which channels to keep,
:func:`prune` clones the model with smaller ``filters``/``units`` and copies the sliced
weights (kernels on their input and output axes, biases, BatchNorm statistics, depthwise
kernels). The result is an ordinary Keras model: no masks, no selector convolutions, no zero
channels, so its ``.tflite`` kernels are really smaller and it really runs faster.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import channel_graph, surgery
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.Dense(6, name="h")(inp)
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    >>> g = channel_graph.build(m)
    >>> gid = g.group_of("h").id
    >>> thin = surgery.prune(m, g, {gid: np.array([0, 2, 5])})
    >>> thin.get_layer("h").units, thin.get_layer("out").kernel.shape.as_list()
    (3, [3, 2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pocketflow_tf import channel_graph, errors
from pocketflow_tf.compat import keras

_SIZE_KEY = {
    "Conv1D": "filters",
    "Conv2D": "filters",
    "SeparableConv1D": "filters",
    "SeparableConv2D": "filters",
    "Dense": "units",
}


def keep_masks(
    graph: channel_graph.ChannelGraph, keep: Mapping[int, np.ndarray | Sequence[int]]
) -> dict[int, np.ndarray]:
    """Validates a keep-map and turns it into boolean masks per (resolved) group id.

    ``keep`` maps a group id to either a boolean mask of the group's size or the indices of
    the channels to keep. Groups that are not mentioned keep every channel.

    Raises:
        InvalidArgumentError: Unknown or blocked group, wrong mask length, out-of-range
            index, or nothing kept.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        >>> g = channel_graph.build(m)
        >>> keep_masks(g, {g.prunable_groups()[0].id: [1]})[1].tolist()
        [False, True, False]
    """
    masks = {g.id: np.ones(g.size, dtype=bool) for g in graph.groups}
    for gid, spec in keep.items():
        try:
            group = graph.group(int(gid))
        except KeyError:
            raise errors.InvalidArgumentError(
                "keep", gid, f"ids of channel groups ({[g.id for g in graph.groups]})"
            ) from None
        spec = np.asarray(spec)
        if spec.dtype == bool:
            if spec.shape != (group.size,):
                raise errors.InvalidArgumentError(
                    f"keep[{gid}]",
                    f"mask of shape {spec.shape}",
                    f"a mask of shape ({group.size},)",
                )
            mask = spec.copy()
        else:
            idx = spec.astype(int).ravel()
            if idx.size and (idx.min() < 0 or idx.max() >= group.size):
                raise errors.InvalidArgumentError(
                    f"keep[{gid}]", idx.tolist(), f"channel indices in [0, {group.size})"
                )
            mask = np.zeros(group.size, dtype=bool)
            mask[idx] = True
        if not mask.any():
            raise errors.InvalidArgumentError(f"keep[{gid}]", "no channel", "at least one channel")
        if not mask.all() and not group.prunable:
            raise errors.InvalidArgumentError(
                f"keep[{gid}]",
                f"{int(mask.sum())} of {group.size} channels",
                f"all channels: the group of {group.layers} is blocked "
                f"({'; '.join(group.blockers) or 'no producer'})",
            )
        masks[group.id] = mask
    return masks


def prune(
    model: keras.Model,
    graph: channel_graph.ChannelGraph,
    keep: Mapping[int, np.ndarray | Sequence[int]],
) -> keras.Model:
    """Returns a thinner copy of ``model`` keeping only the given channels.

    Args:
        model: The model ``graph`` was built from, or a copy with the same layers (not
            modified).
        graph: Its :class:`channel_graph.ChannelGraph`.
        keep: Group id -> boolean mask or indices of the channels to keep.

    Returns:
        A new model of the same architecture with fewer channels and sliced weights.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> inp = keras.Input((6, 6, 1))
        >>> x = keras.layers.Conv2D(8, 3, name="c")(inp)
        >>> x = keras.layers.BatchNormalization(name="bn")(x)
        >>> x = keras.layers.GlobalAveragePooling2D()(x)
        >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(x))
        >>> g = channel_graph.build(m)
        >>> thin = prune(m, g, {g.group_of("c").id: list(range(4))})
        >>> thin.get_layer("bn").gamma.shape.as_list()
        [4]
    """
    # The graph may come from a structural twin (e.g. a copy whose weights were edited).
    if [x.name for x in graph.model.layers] != [x.name for x in model.layers]:
        raise errors.InvalidArgumentError(
            "graph", f"graph of '{graph.model.name}'", f"the channel graph of '{model.name}'"
        )
    masks = keep_masks(graph, keep)

    def seg_mask(segments):
        return segment_mask(graph, masks, segments)

    def clone_layer(layer):
        cfg = layer.get_config()
        key = _SIZE_KEY.get(type(layer).__name__)
        lc = graph.layers.get(layer.name)
        if key is not None and lc is not None and lc.kind == "producer":
            cfg[key] = int(seg_mask(lc.output).sum())
        return type(layer).from_config(cfg)

    thin = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        lc = graph.layers[layer.name]
        in_mask = seg_mask(lc.inputs[0]) if lc.inputs else None
        out_mask = seg_mask(lc.output)
        thin.get_layer(layer.name).set_weights(_slice(layer, lc.kind, weights, in_mask, out_mask))
    return thin


def segment_mask(
    graph: channel_graph.ChannelGraph, masks: Mapping[int, np.ndarray], segments
) -> np.ndarray:
    """The keep mask of a tensor's channel axis described by ``segments``.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="h"),
        ...                       keras.layers.Dense(1, name="o")])
        >>> g = channel_graph.build(m)
        >>> masks = keep_masks(g, {1: [0, 2]})
        >>> segment_mask(g, masks, g.layers["o"].inputs[0]).tolist()
        [True, False, True]
    """
    parts = [np.tile(masks[graph.find(s.group)], s.repeat) for s in segments]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def mask_consumers(
    model: keras.Model,
    graph: channel_graph.ChannelGraph,
    keep: Mapping[int, np.ndarray | Sequence[int]],
) -> None:
    """Simulates :func:`prune` in place: zeroes the kernel rows that read dropped channels.

    Every layer between a group's producers and its consumers is per-channel, so once the
    consumers ignore a channel the model computes exactly what the thinner model of
    :func:`prune` computes, without rebuilding anything (rebuilding a functional model takes
    seconds; this takes milliseconds). Pruning searches and layer-by-layer selection use it,
    and build the thin model once at the end.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        >>> g = channel_graph.build(m)
        >>> mask_consumers(m, g, {1: [0, 2]})
        >>> float(abs(m.layers[1].get_weights()[0][1]).sum())
        0.0
    """
    masks = keep_masks(graph, keep)
    for name, lc in graph.layers.items():
        if lc.kind != "producer":
            continue
        drop = ~segment_mask(graph, masks, lc.inputs[0])
        if not drop.any():
            continue
        layer = model.get_layer(name)
        w = layer.get_weights()
        if type(layer).__name__.startswith("Separable"):
            w[0][..., drop, :] = 0
            w[1][..., np.repeat(drop, w[0].shape[-1]), :] = 0
        else:
            w[0][..., drop, :] = 0
        layer.set_weights(w)


def _slice(layer, kind: str, weights: list[np.ndarray], in_mask, out_mask) -> list[np.ndarray]:
    cls = type(layer).__name__
    if kind == "producer":
        if cls.startswith("Separable"):
            depthwise, pointwise, *rest = weights
            mult = depthwise.shape[-1]
            depthwise = depthwise[..., in_mask, :]
            pointwise = pointwise[..., np.repeat(in_mask, mult), :][..., out_mask]
            return [depthwise, pointwise] + [b[out_mask] for b in rest]
        kernel, *rest = weights
        kernel = kernel[..., in_mask, :][..., out_mask]
        return [kernel] + [b[out_mask] for b in rest]
    if kind == "member":
        if cls.startswith("DepthwiseConv"):
            kernel, *rest = weights
            return [kernel[..., in_mask, :]] + [b[in_mask] for b in rest]
        # BatchNorm statistics and PReLU slopes: one entry per channel on the last axis.
        return [w[..., in_mask] if w.shape[-1] == in_mask.size else w for w in weights]
    # Pass-through and opaque layers: their channels are never pruned (opaque ones block
    # their groups), so their weights are unchanged.
    return weights
