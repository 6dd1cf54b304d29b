"""Where DCP splits a network into stages, and which part of it a channel group affects.

DCP (Zhuang et al. 2018) attaches an auxiliary classifier at the end of each of ``P`` stages
and prunes the channels of a stage against that classifier. A stage boundary must be a *cut*
of the layer graph: a tensor through which everything that happens before it reaches the
rest of the network (for a ResNet, the ReLU after the residual ``Add`` that ends a block;
for a plain conv stack, any layer). Boundaries are chosen among the cuts so that the stages
hold about equal FLOPs, which for a CIFAR-style ResNet puts them at the ends of its three
resolution stages. The last boundary is always the model output, whose own classifier plays
the last stage's auxiliary classifier.

Example:
    >>> from pocketflow_tf.nets import resnet
    >>> m = resnet.build_resnet((28, 28, 1), 10, depth=20)
    >>> choose_boundaries(m, 3)
    ['s1b3_relu', 's2b3_relu', 'logits']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from pocketflow_tf import accounting, channel_graph, errors
from pocketflow_tf.compat import keras

#: A tensor of the layer graph: ``(layer name, output index)``.
Key = tuple[str, int]


@dataclasses.dataclass
class LayerGraph:
    """The layer calls of a model in execution order, with what each call reads.

    Attributes:
        layers: Layer objects in execution (topological) order, inputs first.
        inbound: ``name -> keys`` of the tensors each layer reads, in call order.
        position: ``name -> index`` in :attr:`layers`.

    Example:
        >>> m = keras.Sequential([keras.Input((2,), name="x"), keras.layers.Dense(2, name="d")])
        >>> LayerGraph.of(m).inbound["d"]
        [('x', 0)]
    """

    layers: list[keras.layers.Layer]
    inbound: dict[str, list[Key]]
    position: dict[str, int]

    @classmethod
    def of(cls, model: keras.Model) -> LayerGraph:
        """Reads the layer graph of a functional or Sequential model.

        Example:
            >>> m = keras.Sequential([keras.Input((2,), name="x"), keras.layers.Dense(2)])
            >>> [layer.name for layer in LayerGraph.of(m).layers][0]
            'x'
        """
        # The channel graph already parses functional and Sequential configs (and refuses
        # shared layers and subclassed models); reuse its walk so both agree on the order.
        calls = channel_graph.layer_calls(model)
        layers = [layer for layer, _ in calls]
        return cls(
            layers,
            {layer.name: list(inb) for layer, inb in calls},
            {layer.name: i for i, layer in enumerate(layers)},
        )

    def descendants(self, names: Iterable[str]) -> set[str]:
        """``names`` and every layer that reads (transitively) from one of them.

        Example:
            >>> m = keras.Sequential([keras.Input((2,), name="x"),
            ...     keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")])
            >>> sorted(LayerGraph.of(m).descendants(["a"]))
            ['a', 'b']
        """
        out = set(names)
        for layer in self.layers:
            if any(k[0] in out for k in self.inbound[layer.name]):
                out.add(layer.name)
        return out

    def ancestors(self, name: str) -> set[str]:
        """``name`` and every layer it reads from (transitively).

        Example:
            >>> m = keras.Sequential([keras.Input((2,), name="x"),
            ...     keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")])
            >>> sorted(LayerGraph.of(m).ancestors("a"))
            ['a', 'x']
        """
        out = {name}
        for layer in reversed(self.layers):
            if layer.name in out:
                out.update(k[0] for k in self.inbound[layer.name])
        return out

    def cuts(self) -> list[str]:
        """Layers whose output is the only tensor alive at that point of the order.

        Example:
            >>> inp = keras.Input((4,), name="x")
            >>> a = keras.layers.Dense(4, name="a")(inp)
            >>> s = keras.layers.Add(name="s")([inp, a])
            >>> m = keras.Model(inp, keras.layers.Dense(2, name="out")(s))
            >>> LayerGraph.of(m).cuts()  # 'a' is not: the input is still needed by 's'
            ['s', 'out']
        """
        last_use: dict[str, int] = {}
        for layer in self.layers:
            for k in self.inbound[layer.name]:
                last_use[k[0]] = self.position[layer.name]
        out, reach = [], -1
        for i, layer in enumerate(self.layers):
            # Every tensor made before layer i is dead once layer i has run.
            if reach <= i and i > 0:
                out.append(layer.name)
            reach = max(reach, last_use.get(layer.name, i))
        return out


def choose_boundaries(
    model: keras.Model,
    nb_stages: int,
    graph: channel_graph.ChannelGraph | None = None,
) -> list[str]:
    """Names of the layers whose outputs end the stages, shallow to deep.

    The last entry is the model's output layer. Fewer than ``nb_stages`` boundaries come
    back when the model has fewer usable cuts (a shallow net with three stages asked for).

    Args:
        model: A functional or Sequential model with one output.
        nb_stages: Number of stages ``P`` (>= 1).
        graph: Its channel graph (built when omitted).

    Raises:
        InvalidArgumentError: ``nb_stages`` < 1.

    Example:
        >>> L = keras.layers
        >>> m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, name="c1"),
        ...     L.ReLU(name="r1"), L.Conv2D(8, 3, name="c2"), L.ReLU(name="r2"),
        ...     L.GlobalAveragePooling2D(name="gap"), L.Dense(4, name="fc")])
        >>> choose_boundaries(m, 2)
        ['r1', 'fc']
    """
    if not isinstance(nb_stages, int) or nb_stages < 1:
        raise errors.InvalidArgumentError("dcp_nb_stages", nb_stages, "an integer >= 1")
    lg = LayerGraph.of(model)
    graph = graph or channel_graph.build(model)
    output = model.outputs[0]._keras_history.layer.name
    prunable = graph.prunable_groups()
    first = min((lg.position[p] for g in prunable for p in g.producers), default=len(lg.layers) - 1)
    cost = {c.name: c.flops for c in accounting.profile_model(model).layers}
    cum, total = {}, 0.0
    for layer in lg.layers:
        total += cost.get(layer.name, 0)
        cum[layer.name] = total
    candidates = [
        n for n in lg.cuts() if first <= lg.position[n] < lg.position[output] and _rank(lg, n) >= 2
    ]
    chosen: list[str] = []
    for p in range(1, nb_stages):
        rest = [c for c in candidates if not chosen or lg.position[c] > lg.position[chosen[-1]]]
        if not rest:
            break
        target = total * p / nb_stages
        best = min(rest, key=lambda c: abs(cum[c] - target))
        # Prefer the end of a conv -> BN -> ReLU chain of cuts: the activation is what the
        # next stage reads, and the cheap per-channel layers barely move the FLOPs split.
        i = candidates.index(best)
        while (
            i + 1 < len(candidates)
            and lg.position[candidates[i + 1]] == lg.position[candidates[i]] + 1
            and graph.layers[candidates[i + 1]].kind in ("member", "pass")
            and cum[candidates[i + 1]] - cum[best] <= 0.02 * total
        ):
            i += 1
        chosen.append(candidates[i])
    return chosen + [output]


def _rank(lg: LayerGraph, name: str) -> int:
    shape = lg.layers[lg.position[name]].output_shape
    if isinstance(shape, list):
        return 0 if len(shape) != 1 else len(shape[0])
    return len(shape)


def stage_of(lg: LayerGraph, boundaries: Sequence[str], name: str) -> int:
    """Index of the stage ``name`` runs in (the first boundary at or after it).

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="a"),
        ...     keras.layers.Dense(2, name="b")])
        >>> stage_of(LayerGraph.of(m), ["a", "b"], "b")
        1
    """
    pos = lg.position[name]
    for i, b in enumerate(boundaries):
        if pos <= lg.position[b]:
            return i
    return len(boundaries) - 1
