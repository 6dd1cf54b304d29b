"""What a channel count costs on the runtime: per-layer LiteRT latencies, measured on demand.

FLOPs are a poor proxy for latency on XNNPACK: measured on ResNet-20/Fashion-MNIST (float,
one thread), a plan at 0.40x FLOPs ran at 0.52x latency, while another at 0.35x FLOPs ran at
0.39x, because a 28x28 map with few channels costs more per FLOP than a 7x7 one with many
(memory traffic, SIMD tiles). Like NetAdapt and AMC's latency variant, this module times
each channel-dependent layer *alone*, as a one-layer ``.tflite`` at the input/output channel
counts a plan gives it, and predicts a plan's latency as the sum. Entries are measured the
first time a plan needs them and kept, so an allocation search pays only for what it visits.

Timed layers: convolutions (also depthwise/separable), ``Dense``, ``Add``/``Multiply``/
``Maximum``..., pooling. Batch normalisation and activations are left out: the converter
folds them into the preceding kernel. The table is measured on *this* machine's CPU; for a
phone, build it there (the figures rank plans, they do not promise milliseconds elsewhere).

Example:
    >>> from pocketflow_tf import channel_graph
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3, name="c"),
    ...                       keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> table = LatencyTable(m, channel_graph.build(m), runs=5)
    >>> table.measured  # the dense plan: conv 3->16, pooling of 16, dense 16->2
    3
    >>> _ = table.model_ms({"c": 8}); table.measured  # the same three layers at 8 channels
    6
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from pocketflow_tf import channel_graph, errors, latency, layer_rules, tflite_export
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.channel import allocation

#: Kernel layer types that are timed; their config is resized through the layer rules
#: (:mod:`pocketflow_tf.layer_rules`), as the surgery resizes them.
_KERNELS = frozenset(
    {
        "Conv1D",
        "Conv2D",
        "SeparableConv1D",
        "SeparableConv2D",
        "Dense",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
    }
)
_ELEMENTWISE = {
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
}


class LatencyTable:
    """Per-layer LiteRT latency of a model at any per-group channel counts.

    Args:
        model: The dense model.
        graph: Its channel graph.
        num_threads: Interpreter threads (as deployed).
        runs: Timed invokes per entry (median).
        verbose: Print a line per batch of new measurements.

    Attributes:
        measured: Number of one-layer models timed so far.
        wall_s: Time spent measuring.

    Example:
        >>> from pocketflow_tf import channel_graph
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> t = LatencyTable(m, channel_graph.build(m), runs=5)
        >>> t.dense_ms > 0, t.measured
        (True, 2)
    """

    def __init__(
        self,
        model: keras.Model,
        graph: channel_graph.ChannelGraph,
        *,
        num_threads: int = 1,
        runs: int = 50,
        verbose: int = 0,
    ):
        if not isinstance(runs, int) or runs < 1:
            raise errors.InvalidArgumentError("runs", runs, "an integer >= 1")
        self.graph = graph
        self.num_threads = num_threads
        self.runs = runs
        self.verbose = verbose
        self.measured = 0
        self.wall_s = 0.0
        self._cache: dict[tuple, float] = {}
        timed = _KERNELS | _ELEMENTWISE
        self._layers = {
            layer.name: layer
            for layer in model.layers
            if layer.name in graph.layers and type(layer).__name__ in timed
        }
        self.dense_ms = self.model_ms({})

    def model_ms(self, counts: Mapping[str, int]) -> float:
        """Predicted latency (ms) with ``counts[group key]`` channels kept per group.

        Example:
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> t = LatencyTable(m, channel_graph.build(m), runs=5)
            >>> t.model_ms({}) == t.dense_ms, t.measured  # the dense plan: already timed
            (True, 2)
            >>> half = t.model_ms({"h": 32})  # both layers see 32 channels: 2 new entries
            >>> half > 0, t.measured, t.model_ms({"h": 32}) == half, t.measured
            (True, 4, True, 4)
        """
        frac = allocation.group_fractions(self.graph, counts)
        total = 0.0
        for name, layer in self._layers.items():
            lc = self.graph.layers[name]
            cin = self._width(lc.inputs[0], frac)
            cout = self._width(lc.output, frac)
            total += self.layer_ms(layer, len(lc.inputs), cin, cout)
        return total

    def layer_ms(self, layer: keras.layers.Layer, n_inputs: int, cin: int, cout: int) -> float:
        """Median latency of ``layer`` alone with ``cin`` input and ``cout`` output channels.

        Example:
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(64, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> t = LatencyTable(m, channel_graph.build(m), runs=5)
            >>> ms = t.layer_ms(m.get_layer("h"), 1, 4, 16)  # "h" with 16 of its 64 units
            >>> ms > 0, t.measured, t.layer_ms(m.get_layer("h"), 1, 4, 16) == ms, t.measured
            (True, 3, True, 3)
        """
        key = (layer.name, cin, cout)
        if key not in self._cache:
            t0 = time.time()
            probe = _one_layer_model(layer, n_inputs, cin, cout)
            buf = tflite_export.convert(probe)
            stats = latency.measure_latency(
                buf, num_threads=self.num_threads, warmup=10, runs=self.runs
            )
            self._cache[key] = stats.median_ms
            self.measured += 1
            self.wall_s += time.time() - t0
            if self.verbose >= 2:
                print(f"  [latency table] {layer.name} {cin}->{cout}: {stats.median_ms:.4f} ms")
        return self._cache[key]

    def _width(self, segments, frac) -> int:
        return int(round(sum(frac[self.graph.find(s.group)] * s.width for s in segments)))


def _one_layer_model(layer, n_inputs: int, cin: int, cout: int) -> keras.Model:
    """``layer``'s type and settings on inputs of ``cin`` channels, ``cout`` out."""
    cfg = dict(layer.get_config())
    cfg["name"] = "probe"
    rule = layer_rules.rule_for(layer)
    if rule is not None and rule.resize is not None:
        cfg = rule.resize(cfg, cout)  # filters/units (and groups of a per-channel conv)
    shapes = layer.input_shape if n_inputs > 1 else [layer.input_shape]
    inputs = [keras.Input(tuple(s[1:-1]) + (cin,)) for s in shapes]
    out = type(layer).from_config(cfg)(inputs if n_inputs > 1 else inputs[0])
    probe = keras.Model(inputs, out)
    # Random weights: the time of a dense float kernel does not depend on its values.
    rng = np.random.default_rng(0)
    probe.set_weights([rng.standard_normal(w.shape).astype("float32") for w in probe.weights])
    return probe
