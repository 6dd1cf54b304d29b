"""How many channels each group keeps: rounding, FLOPs estimates, uniform and per-layer plans.

Pruning learners decide *which* channels to keep; this module decides *how many*. Counts are
rounded to a multiple of ``multiple`` (8 by default): LiteRT/XNNPACK kernels work on SIMD
blocks, and a count off that grain wastes most of the FLOPs it saved (DESIGN.md section 4).

FLOPs of a candidate plan are estimated without building the model: a kernel layer's
multiply-accumulates scale with ``kept_in/in * kept_out/out`` and every per-channel layer
(BN, ReLU, pooling, Add, depthwise) with its kept fraction, which is exact for every layer
type the channel graph prunes except ``SeparableConv`` (its depthwise half is counted
bilinearly, a slight over-estimate). The learners report FLOPs measured on the built model.

Example:
    >>> round_count(10.4, 64, 8), round_count(3.2, 8, 8), round_count(0.2, 6, 8)
    (8, 3, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from pocketflow_tf import accounting, channel_graph, errors
from pocketflow_tf.compat import keras


def round_count(count: float, size: int, multiple: int = 8) -> int:
    """Rounds a channel count to ``multiple`` (groups narrower than ``2*multiple``: to 1).

    The result is in ``[1, size]`` (``[multiple, size]`` for wide groups).

    Example:
        >>> round_count(21, 32, 8), round_count(63, 64, 8), round_count(5, 64, 8)
        (24, 64, 8)
    """
    if multiple <= 1 or size < 2 * multiple:
        return int(min(size, max(1, round(count))))
    return int(min(size, max(multiple, multiple * round(count / multiple))))


def key_of(group: channel_graph.ChannelGroup) -> str:
    """A stable name for a group: its first producer (group ids change between graphs).

    Example:
        >>> key_of(channel_graph.ChannelGroup(3, 8, ["conv"], [], [], []))
        'conv'
    """
    return group.producers[0]


def group_fractions(
    graph: channel_graph.ChannelGraph, counts: Mapping[str, int]
) -> dict[int, float]:
    """Kept fraction per resolved group id for counts keyed by :func:`key_of` (others: 1).

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> g = channel_graph.build(m)
        >>> group_fractions(g, {"h": 2})[g.find(g.layers["h"].output[0].group)]
        0.25
    """
    out = {g.id: 1.0 for g in graph.groups}
    for g in graph.prunable_groups():
        out[g.id] = counts.get(key_of(g), g.size) / g.size
    return out


@dataclasses.dataclass
class FlopsModel:
    """Estimates a model's FLOPs for per-group channel counts without rebuilding it.

    Args:
        model: The dense model.
        graph: Its channel graph.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> fm = FlopsModel.build(m)
        >>> fm.dense_flops, fm.flops({"h": 4}) < fm.dense_flops
        (106, True)
    """

    graph: channel_graph.ChannelGraph
    layer_costs: dict[str, accounting.LayerCost]
    dense_flops: int
    #: Kernel weights per producer layer (they scale with both kept fractions; a bias or a
    #: per-channel weight only with the output's). Empty: every weight counted as a kernel.
    kernel_params: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(
        cls, model: keras.Model, graph: channel_graph.ChannelGraph | None = None
    ) -> FlopsModel:
        """Profiles ``model`` once."""
        profile = accounting.profile_model(model)
        graph = graph or channel_graph.build(model)
        kernels = {}
        for name, lc in graph.layers.items():
            if lc.kind != "producer":
                continue
            try:
                layer = model.get_layer(name)
            except ValueError:  # a layer of a nested model: counted as all kernel
                continue
            kernel = getattr(layer, "kernel", None)
            if kernel is not None:
                kernels[name] = int(np.prod(kernel.shape))
        return cls(graph, {c.name: c for c in profile.layers}, profile.total_flops, kernels)

    @property
    def dense_params(self) -> int:
        """Parameters of the dense model (each layer's weights counted once).

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> FlopsModel.build(m).dense_params
            58
        """
        return sum(c.params for c in self.layer_costs.values())

    def fractions(self, counts: Mapping[str, int]) -> dict[int, float]:
        """Kept fraction per resolved group id for counts keyed by :func:`key_of`."""
        return group_fractions(self.graph, counts)

    def params(self, counts: Mapping[str, int]) -> float:
        """Estimated parameters when each group keeps ``counts[key]`` channels (others: all).

        A producer's kernel scales with its kept input and output fractions, its bias and
        every per-channel layer's weights (BatchNorm, depthwise) with the kept output
        fraction. Byte goals need this rather than FLOPs: a stage-3 convolution of a
        ResNet-20 holds 16x the weights of a stage-1 one at the same FLOPs.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> FlopsModel.build(m).params({"h": 4})  # 4*4+4 and 4*2+2
            30.0
        """

        def scaled(name, c, f_in, f_out):
            if f_in is None:
                return c.params * f_out
            kernel = self.kernel_params.get(name, c.params)
            return kernel * f_in * f_out + (c.params - kernel) * f_out

        return self._total(counts, lambda c: c.params, scaled)

    def flops(self, counts: Mapping[str, int]) -> float:
        """Estimated FLOPs when each group keeps ``counts[key]`` channels (others: all)."""

        def scaled(name, c, f_in, f_out):
            if f_in is None:
                return c.flops * f_out
            macs = c.macs * f_in * f_out
            return 2 * macs + (c.flops - 2 * c.macs) * f_out

        return self._total(counts, lambda c: c.flops, scaled)

    def _total(self, counts, unpruned, scaled) -> float:
        """Sums ``unpruned(cost)`` over layers outside the channel graph and
        ``scaled(name, cost, f_in, f_out)`` over the others (``f_in``: ``None`` unless the
        layer is a producer, whose kernel scales with both kept fractions)."""
        frac = self.fractions(counts)

        def seg_frac(segments):
            width = sum(s.width for s in segments)
            if width == 0:
                return 1.0
            return sum(frac[self.graph.find(s.group)] * s.width for s in segments) / width

        total = 0.0
        for name, cost in self.layer_costs.items():
            lc = self.graph.layers.get(name)
            if lc is None:
                total += unpruned(cost)
                continue
            f_in = seg_frac(lc.inputs[0]) if lc.kind == "producer" else None
            total += scaled(name, cost, f_in, seg_frac(lc.output))
        return total


def counts_for_ratio(
    graph: channel_graph.ChannelGraph, ratio: float, multiple: int = 8
) -> dict[str, int]:
    """The same channel keep ratio in every prunable group, rounded.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> counts_for_ratio(channel_graph.build(m), 0.5)
        {'h': 16}
    """
    _check_ratio("ratio", ratio)
    return {
        key_of(g): round_count(ratio * g.size, g.size, multiple) for g in graph.prunable_groups()
    }


def uniform_counts_for_flops(
    fm: FlopsModel, flops_keep: float, multiple: int = 8
) -> tuple[dict[str, int], float]:
    """The largest uniform channel ratio whose rounded counts meet a FLOPs keep ratio.

    Returns:
        ``(counts, estimated_flops_ratio)``.

    Raises:
        InvalidArgumentError: ``flops_keep`` outside (0, 1], or not reachable even with the
            smallest counts the rounding allows.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> counts, r = uniform_counts_for_flops(FlopsModel.build(m), 0.5)
        >>> counts, r <= 0.5
        ({'h': 24}, True)
    """
    _check_ratio("cp_preserve_ratio", flops_keep)
    lo, hi = 0.0, 1.0
    best = counts_for_ratio(fm.graph, 1e-6, multiple)
    if fm.flops(best) > flops_keep * fm.dense_flops:
        raise errors.InvalidArgumentError(
            "cp_preserve_ratio",
            flops_keep,
            f"a FLOPs keep ratio >= {fm.flops(best) / fm.dense_flops:.3f}, the smallest this "
            f"model reaches with channel counts rounded to multiples of {multiple}",
        )
    for _ in range(40):
        mid = (lo + hi) / 2
        counts = counts_for_ratio(fm.graph, mid, multiple)
        if fm.flops(counts) <= flops_keep * fm.dense_flops:
            lo, best = mid, counts
        else:
            hi = mid
    return best, fm.flops(best) / fm.dense_flops


#: A per-layer allocation search: ``(problem) -> counts``; issue 6's optimisers plug in here.
RatioSearch = Callable[["AllocationProblem"], dict[str, int]]


@dataclasses.dataclass
class AllocationProblem:
    """What an automatic per-layer allocation must solve.

    Attributes:
        flops_model: FLOPs estimator of the dense model.
        flops_keep: Target FLOPs keep ratio.
        multiple: Channel rounding.
        choices: Allowed counts per group key (rounded, ascending).
        evaluate: ``counts -> score`` (higher is better) of a cheap proxy: the model pruned
            to ``counts`` (no fine-tuning) evaluated on calibration data from the
            *training* split.
        latency_ms: Optional ``counts -> predicted latency``: when given, the allocation
            spends its FLOPs budget where it saves the most *time* (see
            :mod:`latency_table`); the FLOPs target stays the stopping rule.
        latency_keep: Optional predicted-latency keep ratio (needs ``latency_ms``): the
            allocation also goes on until ``latency_ms(counts)`` is at most this fraction
            of the dense model's. FLOPs track time poorly on SIMD CPUs, so a FLOPs target
            alone does not promise a speed-up.
        params_keep: Optional parameter keep ratio (:meth:`FlopsModel.params`): the
            allocation spends its budget where it saves the most *weights* and goes on until
            the estimated parameters are at most this fraction of the dense model's (the
            FLOPs target still holds; 1.0 leaves it free). For byte goals: a file's size
            follows its weights, not its FLOPs.

    Example:
        A convolution of 12 filters kept in multiples of 4:

        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(12, 3, name="c"),
        ...                       keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
        >>> fm = FlopsModel.build(m)
        >>> problem = AllocationProblem(fm, 0.5, 4, choices_for(fm.graph, 4),
        ...                             evaluate=lambda counts: counts["c"] / 12)
        >>> problem.choices
        {'c': [4, 8, 12]}
        >>> problem.evaluate({"c": 8})
        0.6666666666666666
    """

    flops_model: FlopsModel
    flops_keep: float
    multiple: int
    choices: dict[str, list[int]]
    evaluate: Callable[[Mapping[str, int]], float]
    latency_ms: Callable[[Mapping[str, int]], float] | None = None
    latency_keep: float | None = None
    params_keep: float | None = None

    def __post_init__(self) -> None:
        if self.params_keep is not None:
            _check_ratio("params_keep", self.params_keep)
            if self.latency_ms is not None:
                # One saving per move ranks the greedy steps: time or weights, not both.
                raise errors.InvalidArgumentError(
                    "params_keep", self.params_keep, "None when the problem has a latency_ms"
                )


def choices_for(graph: channel_graph.ChannelGraph, multiple: int = 8) -> dict[str, list[int]]:
    """Allowed rounded counts per group, ascending.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(24, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> choices_for(channel_graph.build(m))
        {'h': [8, 16, 24]}
    """
    out = {}
    for g in graph.prunable_groups():
        out[key_of(g)] = sorted({round_count(c, g.size, multiple) for c in range(1, g.size + 1)})
    return out


def greedy_sensitivity(problem: AllocationProblem, verbose: bool = False) -> dict[str, int]:
    """Default automatic allocation: greedy steps of least score loss per FLOP (or ms) saved.

    Each group's sensitivity is measured alone (the model pruned in that group only, at every
    allowed count), then channels are taken away one rounding step at a time from the group
    whose next step costs the least score per FLOP saved -- per millisecond saved when the
    problem has a latency model, per weight saved when it has a ``params_keep`` -- until the
    FLOPs target is met (and the predicted latency or parameter target, when the problem has
    one; while a latency target is unmet a move may take several steps at once, to cross a
    SIMD tile). A target that even the smallest counts miss raises
    :class:`~pocketflow_tf.errors.InvalidArgumentError` before any group is evaluated.
    Assuming the groups' losses add up is what makes this cheap (one evaluation per group and
    count); the search optimisers of issue 6 replace it through
    ``ChannelPrunedLearner(ratio_search=...)``.

    Example:
        Only group ``a`` matters to the score here, so the FLOPs come out of ``b``:

        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="a"),
        ...                       keras.layers.Dense(32, name="b"), keras.layers.Dense(2)])
        >>> fm = FlopsModel.build(m)
        >>> problem = AllocationProblem(fm, 0.5, 8, choices_for(fm.graph),
        ...                             evaluate=lambda counts: counts["a"] / 32)
        >>> counts = greedy_sensitivity(problem)
        >>> counts, fm.flops(counts) / fm.dense_flops <= 0.5
        ({'a': 32, 'b': 8}, True)
    """
    fm = problem.flops_model
    full = {k: c[-1] for k, c in problem.choices.items()}
    smallest = {k: c[0] for k, c in problem.choices.items()}
    target = problem.flops_keep * fm.dense_flops
    lat_target = None
    if problem.latency_keep is not None:
        if problem.latency_ms is None:
            raise errors.InvalidArgumentError(
                "latency_keep", problem.latency_keep, "None when the problem has no latency_ms"
            )
        lat_target = problem.latency_keep * problem.latency_ms(full)

    params_target = None
    if problem.params_keep is not None:
        params_target = problem.params_keep * fm.dense_params

    def unmet(counts, flops):
        if flops > target:
            return True
        if params_target is not None and fm.params(counts) > params_target:
            return True
        return lat_target is not None and problem.latency_ms(counts) > lat_target

    def refuse(counts):
        """Raises for the target ``counts`` (the smallest reachable) still misses."""
        if fm.flops(counts) > target:
            raise errors.InvalidArgumentError(
                "cp_preserve_ratio",
                problem.flops_keep,
                f"a FLOPs keep ratio >= {fm.flops(counts) / fm.dense_flops:.3f} (the smallest "
                "reachable)",
            )
        if params_target is not None and fm.params(counts) > params_target:
            raise errors.InvalidArgumentError(
                "cp_params_keep",
                problem.params_keep,
                f"a parameter keep ratio >= {fm.params(counts) / fm.dense_params:.3f} (the "
                "smallest reachable)",
            )
        raise errors.InvalidArgumentError(
            "cp_latency_keep",
            problem.latency_keep,
            f"a predicted latency keep ratio >= "
            f"{problem.latency_ms(counts) / problem.latency_ms(full):.3f} (the smallest "
            "reachable)",
        )

    # Unreachable targets fail here, before the sensitivity sweep (one evaluation per group
    # and count: the expensive part).
    if unmet(smallest, fm.flops(smallest)):
        refuse(smallest)
    base = problem.evaluate(full)
    loss: dict[str, dict[int, float]] = {}
    for key, options in problem.choices.items():
        loss[key] = {options[-1]: 0.0}
        for count in options[:-1]:
            loss[key][count] = max(0.0, base - problem.evaluate({**full, key: count}))
        if verbose:
            print(
                f"  sensitivity {key}: " + ", ".join(f"{c}:{v:.3f}" for c, v in loss[key].items())
            )
    counts = dict(full)
    current = fm.flops(counts)

    while unmet(counts, current):
        best, best_cost = None, np.inf
        # FLOPs fall with every step; time falls in SIMD tiles (16 output channels of f32 on
        # AVX-512), so one step may save nothing where two save a whole tile. While the
        # latency target is unmet every smaller count is a candidate move (nearest first, so
        # a tie goes to the smaller move). Otherwise only single steps: a free multi-step
        # jump would overshoot the FLOPs target, throwing away channels nothing asked for.
        jumps = lat_target is not None and problem.latency_ms(counts) > lat_target
        for key, options in problem.choices.items():
            i = options.index(counts[key])
            moves = range(i - 1, -1, -1) if jumps else range(i - 1, i)
            for j in moves:
                if j < 0:
                    continue
                nxt = {**counts, key: options[j]}
                saved = current - fm.flops(nxt)
                if params_target is not None:
                    # Weights saved; FLOPs break ties between moves that save none.
                    saved = fm.params(counts) - fm.params(nxt)
                    saved += 1e-9 * (current - fm.flops(nxt)) / fm.dense_flops
                if saved <= 0:
                    continue
                if problem.latency_ms is not None:
                    # Time saved; a move the table sees as free (timer noise, a tile not
                    # crossed) stays possible but ranks after every move that saves time.
                    saved = max(problem.latency_ms(counts) - problem.latency_ms(nxt), 0.0)
                    saved += 1e-9 * (current - fm.flops(nxt)) / fm.dense_flops
                cost = (loss[key][options[j]] - loss[key][counts[key]] + 1e-6) / saved
                if cost < best_cost:
                    best, best_cost = nxt, cost
        if best is None:  # a latency table that is not monotone can still end here
            refuse(counts)
        counts, current = best, fm.flops(best)
    return counts


def _check_ratio(name: str, ratio: float) -> None:
    if not isinstance(ratio, int | float) or not 0.0 < float(ratio) <= 1.0:
        raise errors.InvalidArgumentError(name, ratio, "a number in (0, 1]")
