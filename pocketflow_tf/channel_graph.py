"""Channel dependency graph: which channels of a Keras model must be pruned together.

Removing output channel ``c`` of a convolution also removes input row ``c`` of every layer
that reads it, the ``c``-th entry of the BatchNorm behind it, and, across a residual ``Add``,
channel ``c`` of every other branch feeding that ``Add``. Such a coupled set is a
:class:`ChannelGroup`. Each tensor's channel axis is described as a list of
:class:`Segment` s (a ``Concatenate`` joins its inputs' segments; a ``Flatten`` repeats the
channel axis once per spatial position), and groups are merged with union-find wherever an
element-wise layer joins two channel spaces.

A group is *prunable* unless something blocks it: it is the model's input or output, it
touches a layer the graph does not understand (``Reshape``, ``Lambda``, attention, ...), or
the user excluded one of its layers. Blockers are kept as readable reasons, so the pruner can
report exactly why a layer was left alone. Importance scoring lives elsewhere (the learners);
the graph only says what is coupled, in the spirit of Torch-Pruning's dependency graph.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import channel_graph
    >>> inp = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> g = channel_graph.build(keras.Model(inp, keras.layers.Dense(2, name="fc")(x)))
    >>> [(grp.producers, grp.consumers, grp.members) for grp in g.prunable_groups()]
    [(['c1'], ['fc'], ['bn'])]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from pocketflow_tf import errors, layer_rules, model_io
from pocketflow_tf.compat import keras, tf


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of a tensor's channel axis that belongs to one group.

    Attributes:
        group: Group id (resolve with :meth:`ChannelGraph.find`).
        size: Channels of the group.
        repeat: How often the group's channels repeat in this run with the channel index
            innermost (``Flatten`` of an ``HxWxC`` map gives ``repeat = H*W``).

    Example:
        >>> Segment(group=0, size=4, repeat=9).width
        36
    """

    group: int
    size: int
    repeat: int = 1

    @property
    def width(self) -> int:
        """Number of tensor channels this run covers."""
        return self.size * self.repeat


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are pruned together.

    Attributes:
        id: Group id.
        size: Number of channels.
        producers: Layers whose *output* channels are the group (kernels sliced on output).
        consumers: Layers that read the group through a kernel (sliced on input).
        members: Per-channel layers the group passes through (BatchNorm, depthwise conv).
        blockers: Reasons the group may not be pruned (empty: prunable).
        notes: Caveats that do not block (e.g. a LayerNormalization over the channels: the
            thin model is close to, not equal to, the masked one).

    Example:
        >>> ChannelGroup(0, 8, ["conv"], [], [], []).prunable
        True
    """

    id: int
    size: int
    producers: list[str]
    consumers: list[str]
    members: list[str]
    blockers: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def exact(self) -> bool:
        """``True`` when zeroing the readers of a channel equals removing it (no notes)."""
        return not self.notes

    @property
    def prunable(self) -> bool:
        """``True`` when nothing blocks pruning this group."""
        return not self.blockers and bool(self.producers)

    @property
    def layers(self) -> list[str]:
        """Every layer the group touches (producers, members, consumers)."""
        return self.producers + self.members + self.consumers


@dataclasses.dataclass
class LayerChannels:
    """How one layer call maps channel spaces (what surgery needs to slice it).

    Attributes:
        name: Layer name.
        kind: ``"producer"``, ``"member"``, ``"pass"``, ``"merge"``, ``"concat"``,
            ``"flatten"``, ``"input"`` or ``"opaque"``.
        inputs: Segments of each input tensor.
        output: Segments of the output tensor.

    Example:
        >>> LayerChannels("fc", "producer", [[Segment(0, 4)]], [Segment(1, 2)]).kind
        'producer'
    """

    name: str
    kind: str
    inputs: list[list[Segment]]
    output: list[Segment]


class ChannelGraph:
    """The channel groups of a model and the per-layer channel maps.

    Build it with :func:`build`. Group ids in :class:`Segment` may have been merged: always
    resolve them with :meth:`find` (the public accessors already do).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
        >>> g = build(m)
        >>> len(g.groups), len(g.prunable_groups())
        (3, 1)
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._parent: dict[int, int] = {}
        self._groups: dict[int, ChannelGroup] = {}
        self.layers: dict[str, LayerChannels] = {}
        self.unsupported: dict[str, str] = {}
        self._splits: dict[int, list[int]] = {}

    # -- union-find ------------------------------------------------------------------
    def _new_group(self, size: int) -> int:
        gid = len(self._parent)
        self._parent[gid] = gid
        self._groups[gid] = ChannelGroup(gid, int(size), [], [], [], [])
        return gid

    def find(self, gid: int) -> int:
        """The representative id of the group ``gid`` was merged into.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> g = build(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
            >>> g.find(0)
            0
        """
        while self._parent[gid] != gid:
            self._parent[gid] = self._parent[self._parent[gid]]
            gid = self._parent[gid]
        return gid

    def _union(self, a: int, b: int, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self._groups[ra], self._groups[rb]
        if ga.size != gb.size:  # shapes were already checked by Keras; this is a bug guard
            raise errors.UnsupportedModelError(
                f"layer '{where}' joins channel spaces of different sizes ({ga.size} and "
                f"{gb.size}); channel pruning cannot couple them"
            )
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self._parent[drop] = keep
        g, d = self._groups[keep], self._groups.pop(drop)
        g.producers += d.producers
        g.consumers += d.consumers
        g.members += d.members
        g.blockers += d.blockers
        g.notes += [n for n in d.notes if n not in g.notes]

    def _split(self, gid: int, sizes: list[int]) -> None:
        """Cuts group ``gid`` into consecutive parts of ``sizes`` channels.

        Every layer of the group is copied into each part; segments that refer to the group
        are rewritten lazily by :meth:`resolve_split` (they all have ``repeat == 1`` here).
        """
        root = self.find(gid)
        g = self._groups.pop(root)
        parts = []
        for size in sizes:
            pid = self._new_group(size)
            p = self._groups[pid]
            p.producers, p.consumers = list(g.producers), list(g.consumers)
            p.members, p.blockers = list(g.members), list(g.blockers)
            p.notes = list(g.notes)
            parts.append(pid)
        self._splits[root] = parts

    def resolve_split(self, segments: Sequence[Segment]) -> list[Segment]:
        """``segments`` with split groups replaced by their parts, ids resolved."""
        out: list[Segment] = []
        for s in segments:
            root = self.find(s.group)
            if root in self._splits:
                parts = self._splits[root]
                if s.repeat != 1:
                    raise errors.UnsupportedModelError(
                        f"a flattened channel space of group {root} was split; "
                        "channel pruning cannot slice it"
                    )
                out += self.resolve_split([Segment(p, self._size(p)) for p in parts])
            else:
                out.append(Segment(root, s.size, s.repeat))
        return out

    def _size(self, gid: int) -> int:
        return self._groups[self.find(gid)].size

    def _group(self, gid: int) -> ChannelGroup:
        return self._groups[self.find(gid)]

    def _block(self, segments: Iterable[Segment], reason: str) -> None:
        for s in segments:
            g = self._group(s.group)
            if reason not in g.blockers:
                g.blockers.append(reason)

    # -- public accessors ------------------------------------------------------------
    @property
    def groups(self) -> list[ChannelGroup]:
        """All groups, in order of their first appearance in the model."""
        return [self._groups[k] for k in sorted(self._groups)]

    def prunable_groups(self) -> list[ChannelGroup]:
        """Groups that may be pruned, in the order their first producer runs."""
        return [g for g in self.groups if g.prunable]

    def require_prunable(self) -> list[ChannelGroup]:
        """:meth:`prunable_groups`, refusing a model without any (the error lists every
        group with what blocks it).

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> build(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])).require_prunable()
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'sequential...'. Accepted: a model with at least one prunable channel group; this one has none:...
        """
        groups = self.prunable_groups()
        if not groups:
            raise errors.InvalidArgumentError(
                "model",
                self.model.name,
                "a model with at least one prunable channel group; this one has none:\n"
                + self.summary(),
            )
        return groups

    def group(self, gid: int) -> ChannelGroup:
        """The group with id ``gid`` (after merges).

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> g = build(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
            >>> g.group(0).blockers
            ['model input']
        """
        return self._group(gid)

    def group_of(self, layer_name: str) -> ChannelGroup:
        """The group of ``layer_name``'s output channels.

        Raises:
            InvalidArgumentError: No such layer, or its output has several groups.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="d")])
            >>> build(m).group_of("d").producers
            ['d']
        """
        if layer_name not in self.layers:
            raise errors.InvalidArgumentError(
                "layer", layer_name, f"a layer of model '{self.model.name}' ({self._names()})"
            )
        out = self.layers[layer_name].output
        if len(out) != 1:
            raise errors.InvalidArgumentError(
                "layer", layer_name, "a layer whose output is a single channel group"
            )
        return self._group(out[0].group)

    def input_groups(self, layer_name: str) -> list[int]:
        """Resolved group ids read by ``layer_name``, in input-channel order."""
        return [self.find(s.group) for seg in self.layers[layer_name].inputs for s in seg]

    def output_groups(self, layer_name: str) -> list[int]:
        """Resolved group ids of ``layer_name``'s output channels."""
        return [self.find(s.group) for s in self.layers[layer_name].output]

    def resolve(self, segments: Sequence[Segment]) -> list[Segment]:
        """``segments`` with group ids resolved to their representatives."""
        return [dataclasses.replace(s, group=self.find(s.group)) for s in segments]

    def summary(self) -> str:
        """A readable table of the groups.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="d")])
            >>> print(build(m).summary())
            group 0: 2 ch, blocked (model input); producers=[] members=[] consumers=['d']
            group 1: 2 ch, blocked (model output); producers=['d'] members=[] consumers=[]
        """
        lines = []
        for g in self.groups:
            state = (
                "prunable" if g.prunable else f"blocked ({'; '.join(g.blockers) or 'no producer'})"
            )
            lines.append(
                f"group {g.id}: {g.size} ch, {state}; producers={g.producers} "
                f"members={g.members} consumers={g.consumers}"
            )
        return "\n".join(lines)

    def _names(self) -> str:
        names = list(self.layers)
        return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def build(model: keras.Model, exclude: Sequence[str] = ()) -> ChannelGraph:
    """Builds the channel dependency graph of a functional or Sequential model.

    Args:
        model: A built tf-keras functional or Sequential model (channels-last).
        exclude: Names of layers that must keep all their channels; every group touching
            one is blocked.

    Returns:
        The :class:`ChannelGraph`.

    Raises:
        UnsupportedModelError: A subclassed model (no layer graph), or a layer called more
            than once (shared layers).
        InvalidArgumentError: A name in ``exclude`` is not a layer of the model.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> inp = keras.Input((8, 8, 3))
        >>> a = keras.layers.Conv2D(4, 1, name="a")(inp)
        >>> b = keras.layers.Conv2D(4, 1, name="b")(inp)
        >>> s = keras.layers.Add(name="add")([a, b])
        >>> g = build(keras.Model(inp, keras.layers.Conv2D(2, 1, name="c")(s)))
        >>> [(x.producers, x.consumers) for x in g.prunable_groups()]
        [(['a', 'b'], ['c'])]
    """
    calls = layer_calls(model)
    names = {layer.name for layer, _ in calls}
    for name in exclude:
        if name not in names:
            raise errors.InvalidArgumentError(
                "exclude", name, f"names of layers of model '{model.name}'"
            )
    graph = ChannelGraph(model)
    nodes = _graph_nodes(model)
    tensors: dict[tuple[str, int], list[Segment]] = {}
    for layer, inbound in calls:
        ins = [graph.resolve_split(tensors[k]) for k in inbound]
        shapes = _output_shapes(layer)
        if len(shapes) != 1:
            outs = _opaque_outputs(graph, layer, ins, shapes, "layer with several outputs")
        else:
            try:
                outs = [
                    _visit(graph, layer, ins, _layer_call(nodes.get(layer.name), layer, shapes[0]))
                ]
            except errors.PocketFlowError:
                raise
            except Exception as e:  # a rule that fails blocks its layer, never the build
                outs = _opaque_outputs(
                    graph, layer, ins, shapes, f"channel rule failed: {type(e).__name__}: {e}"
                )
        for i, out in enumerate(outs):
            tensors[(layer.name, i)] = out
    if graph._splits:
        for k in tensors:
            tensors[k] = graph.resolve_split(tensors[k])
        for lc in graph.layers.values():
            lc.inputs = [graph.resolve_split(seg) for seg in lc.inputs]
            lc.output = graph.resolve_split(lc.output)
    for key in _output_keys(model):
        graph._block(tensors[key], "model output")
    for name in exclude:
        lc = graph.layers[name]
        graph._block([s for seg in lc.inputs for s in seg] + lc.output, f"layer '{name}' excluded")
    by_name = {layer.name: layer for layer in model.layers}
    for name, lc in graph.layers.items():
        layer = by_name.get(name)
        # A frozen convolution or dense layer (trainable=False: a transfer-learning base)
        # pruned, or cut off from input channels, could not be fine-tuned back: measured on
        # a frozen MobileNetV2 base, channel pruning took it from 0.683 to 0.527 and no
        # fine-tune could recover. BatchNormalization frozen for inference mode is no reason.
        frozen = (
            layer is not None
            and not layer.trainable
            and any(hasattr(layer, attr) for attr in ("kernel", "depthwise_kernel"))
        )
        if frozen:
            graph._block(
                [s for seg in lc.inputs for s in seg] + lc.output,
                f"layer '{name}' is frozen (trainable=False; set it trainable to prune it)",
            )
    for g in graph._groups.values():
        g.producers = list(dict.fromkeys(g.producers))
        g.consumers = list(dict.fromkeys(g.consumers))
        g.members = list(dict.fromkeys(g.members))
    return graph


def _output_shapes(layer: keras.layers.Layer) -> list[tuple]:
    shape = layer.output_shape
    if isinstance(shape, list):  # InputLayer reports [shape]; multi-output layers a list
        return [tuple(s) for s in shape]
    return [tuple(shape)]


def _layer_call(node, layer: keras.layers.Layer, out_shape: tuple):
    """The :class:`layer_rules.LayerCall` of ``layer``'s call (``node``, may be ``None``)."""
    constants = []
    if node is not None and not node.is_input:
        args = list(node.call_args) + [v for k, v in node.call_kwargs.items() if k != "name"]
        constants = [a for a in tf.nest.flatten(args) if not hasattr(a, "_keras_history")]
    if node is not None:
        # The node's Keras tensors, not ``layer.input_shape``: a tf op such as ``x + y``
        # reports only its first argument there.
        in_shapes = [] if node.is_input else [tuple(t.shape) for t in node.keras_inputs]
    else:
        in_shapes = layer.input_shape
        in_shapes = [in_shapes] if isinstance(in_shapes, tuple) else list(in_shapes)
    return layer_rules.LayerCall([tuple(x) for x in in_shapes], out_shape, constants)


def _opaque_outputs(graph, layer, ins, shapes, reason) -> list[list[Segment]]:
    name, kind_name = layer.name, type(layer).__name__
    graph.unsupported[name] = reason
    graph._block([s for seg in ins for s in seg], f"unsupported layer '{name}' ({kind_name})")
    outs = []
    for shape in shapes:
        c = int(shape[-1]) if shape and shape[-1] else 1
        out = [Segment(graph._new_group(c), c)]
        graph._block(out, f"output of unsupported layer '{name}' ({kind_name})")
        outs.append(out)
    graph.layers[name] = LayerChannels(name, "opaque", ins, outs[0])
    return outs


def _visit(graph: ChannelGraph, layer, ins: list[list[Segment]], call) -> list[Segment]:
    kind_name = type(layer).__name__
    name = layer.name
    out_shape = call.output_shape

    def opaque(reason: str) -> list[Segment]:
        return _opaque_outputs(graph, layer, ins, [out_shape], reason)[0]

    if kind_name == "InputLayer":
        out = [Segment(graph._new_group(out_shape[-1]), out_shape[-1])]
        graph._block(out, "model input")
        graph.layers[name] = LayerChannels(name, "input", [], out)
        return out
    if isinstance(layer, keras.Model):
        return opaque("nested model (inline it to prune inside)")
    if len(ins) == 0:
        return opaque("layer without inputs")
    rule = layer_rules.coupling(layer, call)
    in_segs = ins[0]
    if rule.kind == "opaque":
        return opaque(rule.reason)
    if rule.kind in ("member", "pass", "flatten", "producer") and len(ins) != 1:
        return opaque(f"a {rule.kind} layer with {len(ins)} inputs")
    if rule.kind == "producer":
        size = out_shape[-1]
        gid = graph._new_group(size)
        graph._group(gid).producers.append(name)
        for s in in_segs:
            g = graph._group(s.group)
            g.consumers.append(name)
            if kind_name.startswith("Separable"):
                g.members.append(name)  # its depthwise half is sliced per input channel
        out = [Segment(gid, size)]
        graph.layers[name] = LayerChannels(name, "producer", ins, out)
        return out
    if rule.kind == "member":
        if rule.note:
            for s in in_segs:
                g = graph._group(s.group)
                if rule.note not in g.notes:
                    g.notes.append(rule.note)
        return _member(graph, name, ins)
    if rule.kind == "pass":
        return _pass(graph, name, ins)
    if rule.kind == "merge":
        return _merge(graph, name, ins, layer)
    if rule.kind == "concat":
        out = [s for seg in ins for s in seg]
        graph.layers[name] = LayerChannels(name, "concat", ins, out)
        return out
    if rule.kind == "flatten":
        in_shape = call.input_shapes[0]
        positions = 1
        for d in in_shape[1:-1]:
            positions *= int(d)
        out = [dataclasses.replace(s, repeat=s.repeat * positions) for s in in_segs]
        if len(in_segs) != 1 or in_segs[0].repeat != 1:
            # A flattened concat interleaves segments per position; not expressible as runs.
            if positions != 1:
                return opaque("Flatten of a concatenated or already flattened tensor")
        graph.layers[name] = LayerChannels(name, "flatten", ins, out)
        return out
    return opaque(f"unknown coupling kind {rule.kind!r} (one of {layer_rules.KINDS})")


def _pass(graph: ChannelGraph, name: str, ins: list[list[Segment]]) -> list[Segment]:
    out = list(ins[0])
    graph.layers[name] = LayerChannels(name, "pass", ins, out)
    return out


def _member(graph: ChannelGraph, name: str, ins: list[list[Segment]]) -> list[Segment]:
    for s in ins[0]:
        graph._group(s.group).members.append(name)
    out = list(ins[0])
    graph.layers[name] = LayerChannels(name, "member", ins, out)
    return out


def _merge(graph: ChannelGraph, name: str, ins: list[list[Segment]], layer) -> list[Segment]:
    # Broadcast inputs of one channel (e.g. a per-pixel gate) do not couple channels.
    full = [i for i, seg in enumerate(ins) if sum(s.width for s in seg) != 1]
    if not full:
        return _pass(graph, name, ins)
    # Inputs may be cut differently (an SE gate of 18 channels times a concat of 12 + 6):
    # split groups at every boundary any input has, then couple run by run.
    cuts = set()
    for i in full:
        off = 0
        for s in ins[i]:
            off += s.width
            cuts.add(off)
    changed = True
    while changed:  # split one run at a time, re-reading the inputs after each split
        changed = False
        for i in full:
            off = 0
            for seg in graph.resolve_split(ins[i]):
                inner = sorted(c - off for c in cuts if off < c < off + seg.width)
                if inner:
                    if seg.repeat != 1:
                        graph.unsupported[name] = "merge that splits a flattened channel space"
                        graph._block(
                            [s for sg in ins for s in graph.resolve_split(sg)],
                            f"unsupported layer '{name}'",
                        )
                        return _pass(graph, name, [graph.resolve_split(sg) for sg in ins])
                    sizes = [b - a for a, b in zip([0, *inner], [*inner, seg.width], strict=True)]
                    graph._split(seg.group, sizes)
                    changed = True
                    break
                off += seg.width
            if changed:
                break
    ins[:] = [graph.resolve_split(seg) for seg in ins]
    ref = ins[full[0]]
    for i in full[1:]:
        for a, b in zip(ref, ins[i], strict=True):
            graph._union(a.group, b.group, name)
    out = list(ref)
    graph.layers[name] = LayerChannels(name, "merge", ins, out)
    return out


def layer_calls(model: keras.Model) -> list[tuple[keras.layers.Layer, list[tuple[str, int]]]]:
    """Layers in execution order with the ``(layer name, tensor index)`` of their inputs.

    Raises:
        UnsupportedModelError: A subclassed model, or a layer called more than once.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((2,), name="x"), keras.layers.Dense(1, name="d")])
        >>> [(layer.name, inbound) for layer, inbound in layer_calls(m)]
        [('x', []), ('d', [('x', 0)])]
    """
    if model_io.is_keras3(model):
        # The public entries (Learner.fit, compress, export_tflite, the accounting) bridge a
        # Keras 3 model; this internal walk needs the tf-keras twin they compute on.
        raise errors.UnsupportedModelError(
            f"model '{model.name}' is a Keras 3 {type(model).__name__}: the layer graph is "
            "read from its tf-keras twin; convert it with "
            "pocketflow_tf.interop.to_framework(model)[0] first (Learner.fit, compress and "
            "export_tflite do this themselves)"
        )
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise errors.UnsupportedModelError(
            f"model '{getattr(model, 'name', model)}' ({type(model).__name__}) is subclassed: "
            "channel pruning needs a layer graph; rebuild it as a functional or Sequential model"
        )
    if isinstance(model, keras.Sequential):
        # A Sequential model's config has no inbound nodes: each layer reads the previous one.
        first = model.inputs[0]._keras_history.layer
        calls, prev = [(first, [])], first.name
        for layer in model.layers:
            if layer is not first:
                calls.append((layer, [(prev, 0)]))
                prev = layer.name
        return calls
    # The nodes themselves, not the config: a tf op's config entry holds its constants
    # (``x + 3.0``) in a format that changed across Keras versions.
    in_graph = {id(n) for nodes in model._nodes_by_depth.values() for n in nodes}
    calls = []
    for layer in model.layers:
        nodes = [n for n in layer._inbound_nodes if id(n) in in_graph]
        if len(nodes) > 1:
            raise errors.UnsupportedModelError(
                f"layer '{layer.name}' is called {len(nodes)} times (a shared layer); "
                "channel pruning needs each layer to be called once"
            )
        inbound = []
        for node in nodes:
            if node.is_input:
                continue
            for t in node.keras_inputs:
                history = t._keras_history
                inbound.append((history.layer.name, history.tensor_index))
        calls.append((layer, inbound))
    return calls


def _graph_nodes(model: keras.Model) -> dict[str, object]:
    """Layer name -> the node of its (single) call in ``model``'s graph."""
    in_graph = {id(n) for nodes in model._nodes_by_depth.values() for n in nodes}
    found = {}
    for layer in model.layers:
        nodes = [n for n in layer._inbound_nodes if id(n) in in_graph]
        if nodes:
            found[layer.name] = nodes[0]
    return found


def _output_keys(model: keras.Model) -> list[tuple[str, int]]:
    return [(t._keras_history.layer.name, t._keras_history.tensor_index) for t in model.outputs]
