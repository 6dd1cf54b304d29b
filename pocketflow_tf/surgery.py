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

from pocketflow_tf import channel_graph, errors, layer_rules
from pocketflow_tf.compat import keras


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
        rule = layer_rules.rule_for(layer)
        lc = graph.layers.get(layer.name)
        if rule is not None and rule.resize is not None and lc is not None:
            if lc.kind != "opaque":
                kept = int(seg_mask(lc.output).sum())
                if kept != sum(s.width for s in lc.output):
                    cfg = rule.resize(cfg, kept)
        return type(layer).from_config(cfg)

    thin = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        lc = graph.layers[layer.name]
        in_mask = seg_mask(lc.inputs[0]) if lc.inputs else None
        out_mask = seg_mask(lc.output)
        rule = layer_rules.rule_for(layer)
        if rule is not None and rule.slice_weights is not None and lc.kind != "opaque":
            sliced = rule.slice_weights(layer, weights, in_mask, out_mask)
        else:
            sliced = _slice(layer, lc.kind, weights, in_mask, out_mask)
        thin.get_layer(layer.name).set_weights(sliced)
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
        # BatchNorm statistics, PReLU slopes, LayerNormalization and LayerScale weights,
        # Normalization statistics, a depthwise Conv2D's (kh, kw, 1, C) kernel: one entry
        # per channel on the last axis (a scalar such as Normalization's count stays).
        return [w[..., in_mask] if w.ndim and w.shape[-1] == in_mask.size else w for w in weights]
    # Pass-through and opaque layers: their channels are never pruned (opaque ones block
    # their groups), so their weights are unchanged.
    return weights


def dead_channel_error(
    model: keras.Model,
    graph: channel_graph.ChannelGraph,
    x: np.ndarray,
    *,
    drop: float = 0.25,
    seed: int = 0,
) -> tuple[float, int]:
    """Checks the surgery: removing channels nobody reads must not change the outputs.

    In every prunable group without notes (see :attr:`channel_graph.ChannelGroup.exact`),
    a random ``drop`` share of the channels is made dead in a copy of ``model`` (every
    reader's kernel rows zeroed with :func:`mask_consumers`); :func:`prune` then removes
    exactly those channels from ``model``. Both models must compute the same function.

    Args:
        model: The dense model ``graph`` was built from (not modified).
        graph: Its channel graph.
        x: A few inputs.
        drop: Share of each group's channels made dead (at least one, never all).
        seed: Seed of the channel choice.

    Returns:
        ``(largest absolute output difference, number of groups cut)``.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> err, n = dead_channel_error(m, channel_graph.build(m), np.ones((2, 4), "float32"))
        >>> err < 1e-5, n
        (True, 1)
    """
    rng = np.random.default_rng(seed)
    keep = {}
    for g in graph.prunable_groups():
        if not g.exact or g.size < 2:
            continue
        n_drop = min(g.size - 1, max(1, int(round(drop * g.size))))
        keep[g.id] = np.sort(rng.choice(g.size, g.size - n_drop, replace=False))
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    mask_consumers(masked, graph, keep)
    thin = prune(model, graph, keep)
    a = np.asarray(masked(x, training=False))
    b = np.asarray(thin(x, training=False))
    return float(np.max(np.abs(a - b))), len(keep)
