"""AMC (He et al. 2018) as the automatic per-group allocation of the channel learner.

``amc_ratio_search()`` gives ``ChannelPrunedLearner(ratio_search=...)`` a DDPG agent
(:mod:`pocketflow_tf.hp_optimizers.amc`) that walks the channel groups, proposes a keep
ratio per group under action bounding (every plan meets the FLOPs target), scores the plan
with the learner's no-fine-tuning proxy on training data and learns from the score. It lives
here, not in ``hp_optimizers``, so that the optimisers never depend on a learner.

Example:
    >>> amc_ratio_search(episodes=40, seed=1)
    AMCRatioSearch(episodes=40, seed=1, reward='error', verbose=False, options={})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketflow_tf import errors
from pocketflow_tf import options as options_lib
from pocketflow_tf.hp_optimizers import amc, in_memory
from pocketflow_tf.hp_optimizers import space as space_lib
from pocketflow_tf.learners.channel import allocation


def layer_specs(problem: allocation.AllocationProblem) -> list[amc.LayerSpec]:
    """One :class:`~pocketflow_tf.hp_optimizers.amc.LayerSpec` per group of ``problem.choices``, in the order producers run.

    Shapes come from the group's first producer (kernel, stride, input channels and input
    map size); FLOPs and parameters add up every layer the group touches, since pruning the
    group thins all of them.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, name="a"),
        ...                       keras.layers.Dense(32, name="b"), keras.layers.Dense(2)])
        >>> fm = allocation.FlopsModel.build(m)
        >>> problem = allocation.AllocationProblem(
        ...     fm, 0.5, 8, allocation.choices_for(fm.graph), evaluate=lambda counts: 0.0)
        >>> [(s.key, s.index, s.c_in, s.c_out) for s in layer_specs(problem)]
        [('a', 0, 16, 32), ('b', 1, 32, 32)]
    """
    fm = problem.flops_model
    graph = fm.graph
    specs = []
    for g in graph.prunable_groups():
        key = allocation.key_of(g)
        if key not in problem.choices:
            continue
        name = g.producers[0]
        layer = _find_layer(graph.model, name)
        kernel = getattr(layer, "kernel_size", (1,))
        strides = getattr(layer, "strides", (1,))
        lc = graph.layers.get(name)
        c_in = sum(s.width for s in lc.inputs[0]) if lc is not None and lc.inputs else 0
        shape = _input_shape(layer)
        feature = int(np.prod(shape[1:-1])) if shape is not None and len(shape) > 2 else 1
        costs = [fm.layer_costs[n] for n in dict.fromkeys(g.layers) if n in fm.layer_costs]
        specs.append(
            amc.LayerSpec(
                key=key,
                index=len(specs),
                c_in=int(c_in),
                c_out=int(g.size),
                kernel=int(kernel[0]) if kernel else 1,
                stride=int(strides[0]) if strides else 1,
                feature_size=feature,
                flops=float(sum(c.flops for c in costs)),
                params=float(sum(c.params for c in costs)),
            )
        )
    missing = sorted(set(problem.choices) - {s.key for s in specs})
    if missing:
        raise errors.InvalidArgumentError(
            "problem.choices", missing, "keys of prunable groups of problem.flops_model.graph"
        )
    return specs


def _find_layer(model, name: str):
    """The layer called ``name`` (None when nested out of reach: defaults are used)."""
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _input_shape(layer) -> tuple | None:
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError):
        return None
    return tuple(shape) if shape and not isinstance(shape[0], tuple | list) else None


@dataclasses.dataclass
class AMCRatioSearch:
    """A ``RatioSearch`` for ``ChannelPrunedLearner``: AMC episodes over the channel groups.

    Build it with :func:`amc_ratio_search`. After a call, ``optimizer`` holds the finished
    :class:`~pocketflow_tf.hp_optimizers.amc.AMCSearch` (its history is the search curve). Groups with a single allowed count
    stay full and are not searched. ``problem.latency_ms`` is not used: the FLOPs target is
    the budget the bounding enforces and the reward ranks accuracy only.

    Example:
        >>> AMCRatioSearch(episodes=50).episodes
        50
    """

    episodes: int = 300
    seed: int = 0
    reward: str = "error"
    verbose: bool = False
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimizer: amc.AMCSearch | None = dataclasses.field(default=None, repr=False, compare=False)

    def __call__(self, problem: allocation.AllocationProblem) -> dict[str, int]:
        """Searches ``problem`` and returns the best counts meeting its FLOPs target."""
        fm = problem.flops_model
        specs = [s for s in layer_specs(problem) if len(problem.choices[s.key]) > 1]
        if not specs:  # nothing to choose: every group has a single allowed count
            return {k: v[-1] for k, v in problem.choices.items()}
        size = {s.key: s.c_out for s in specs}
        fixed = {k: v[-1] for k, v in problem.choices.items() if k not in size}
        choices = {k: [c / size[k] for c in problem.choices[k]] for k in size}
        space = space_lib.SearchSpace(
            [space_lib.Float(f"keep:{k}", choices[k][0], 1.0) for k in size]
        )

        def counts_of(keeps: Mapping[str, float]) -> dict[str, int]:
            # keeps are exact choices c/size, so rounding recovers the allowed count c
            return {**fixed, **{k: int(round(keeps[k] * size[k])) for k in size}}

        def resource(keeps: Mapping[str, float]) -> float:
            return fm.flops(counts_of(keeps)) / fm.dense_flops

        options = {"warmup": min(100, self.episodes // 4), **self.options}
        opt = amc.AMCSearch(
            space,
            self.seed,
            layers=specs,
            budget=problem.flops_keep,
            resource=resource,
            reward=self.reward,
            choices=choices,
            **options,
        )
        self.optimizer = opt
        in_memory.run(
            opt,
            lambda params: counts_of({k: params[f"keep:{k}"] for k in size}),
            problem.evaluate,
            self.episodes,
            cache_key=lambda counts: tuple(sorted(counts.items())),  # discrete plans repeat
            label="amc",
            verbose=self.verbose,
            describe=lambda counts: f"flops {fm.flops(counts) / fm.dense_flops:.3f}",
        )
        target = problem.flops_keep * fm.dense_flops
        ranked = sorted(
            (r for r in opt.history if not r.failed), key=lambda r: (-r.value, r.number)
        )
        for rec in ranked:
            counts = counts_of({k: rec.params[f"keep:{k}"] for k in size})
            if fm.flops(counts) <= target:
                return counts
        # every score failed (NaN): fall back to the largest uniform plan meeting the target
        return allocation.uniform_counts_for_flops(fm, problem.flops_keep, problem.multiple)[0]


def amc_ratio_search(
    episodes: int = 300,
    seed: int = 0,
    reward: str = "error",
    verbose: bool = False,
    **options: Any,
) -> allocation.RatioSearch:
    """AMC as the automatic per-layer allocation of ``ChannelPrunedLearner``.

    Each episode proposes one allowed channel count per group (action bounding keeps every
    plan inside the FLOPs target), scores it with ``problem.evaluate`` (the no-fine-tuning
    proxy on training data) and teaches the agent; the best plan is returned.

    Args:
        episodes: Episodes (proxy evaluations, fewer when plans repeat).
        seed: Seed of the search.
        reward: See :class:`~pocketflow_tf.hp_optimizers.amc.AMCSearch`.
        verbose: Print progress ten times per search.
        **options: Further :class:`~pocketflow_tf.hp_optimizers.amc.AMCSearch` settings (default warm-up: a quarter of the
            episodes, at most 100).

    Returns:
        A callable ``(problem) -> counts``.

    Example:
        >>> amc_ratio_search(episodes=40, seed=1)
        AMCRatioSearch(episodes=40, seed=1, reward='error', verbose=False, options={})
    """
    episodes = options_lib.check_integer("episodes", episodes, low=1)
    seed = options_lib.check_integer("seed", seed, low=0)
    if reward not in amc.REWARDS:
        raise errors.InvalidArgumentError("reward", reward, f"one of {amc.REWARDS}")
    return AMCRatioSearch(episodes, seed, reward, verbose, dict(options))
