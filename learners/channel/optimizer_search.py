"""Per-group channel counts searched with the ask/tell optimisers (TPE, GP, random).

The greedy default adds up one-group-at-a-time losses; the optimisers score whole plans
with the same no-fine-tuning proxy (``problem.evaluate``), like the AMC agent but without
its per-layer state. Each group's count is a parameter (an index into its allowed counts);
a proposal over the FLOPs target is bounded to it the way AMC bounds its actions
(:func:`fit_to_flops`, which also fills a plan under the target up to it), so every
scored plan is feasible and uses the budget. The optimiser is told that score against the
indices it proposed, not the fitted ones (its ask/tell interface has no way to record
other parameters), so it learns a many-to-one, step-shaped surface; with 12 groups that may
be why TPE's start-up was no better than random in the ``search`` benchmark. Plans that
repeat are scored once.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, name="h"),
    ...                       keras.layers.Dense(2)])
    >>> fm = allocation.FlopsModel.build(m)
    >>> problem = allocation.AllocationProblem(
    ...     fm, 0.6, 8, allocation.choices_for(fm.graph), lambda counts: counts["h"])
    >>> search = optimizer_ratio_search("random", trials=5)
    >>> search(problem)  # the largest count within 0.6 of the FLOPs
    {'h': 16}
    >>> len(search.history)
    5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pocketflow_tf.hp_optimizers  # noqa: F401  (registers the optimisers)
from pocketflow_tf import errors, options
from pocketflow_tf.hp_optimizers import base, in_memory, space
from pocketflow_tf.learners.channel import allocation

#: Optimisers a search can use (``hp_optimizers`` names).
OPTIMIZERS = in_memory.OPTIMIZERS


def fit_to_flops(
    problem: allocation.AllocationProblem, counts: Mapping[str, int]
) -> dict[str, int]:
    """``counts`` moved onto the FLOPs target: cut down to it, then filled up to it.

    Cuts (one allowed step at a time) come from the group keeping the largest fraction of
    its channels, the most FLOPs saved on ties; then steps back up go to the group keeping
    the smallest fraction while the target still holds. Either way the proposal's
    preferences between groups survive, and no scored plan leaves budget unused: a search
    over raw counts mostly proposes plans far under the target (their scores say little
    about the plans that matter).

    Raises:
        InvalidArgumentError: If even the smallest counts miss the target.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, name="h"),
        ...                       keras.layers.Dense(2)])
        >>> fm = allocation.FlopsModel.build(m)
        >>> p = allocation.AllocationProblem(fm, 0.6, 8, allocation.choices_for(fm.graph), None)
        >>> fit_to_flops(p, {"h": 32}), fit_to_flops(p, {"h": 8})
        ({'h': 16}, {'h': 16})
    """
    fm = problem.flops_model
    target = problem.flops_keep * fm.dense_flops + 1e-9
    out = {k: int(counts[k]) for k in problem.choices}

    def frac(key):
        return out[key] / problem.choices[key][-1]

    def step(key, by):
        options = problem.choices[key]
        return {**out, key: options[options.index(out[key]) + by]}

    current = fm.flops(out)
    while current > target:
        down = [k for k, c in problem.choices.items() if c.index(out[k]) > 0]
        if not down:
            raise errors.InvalidArgumentError(
                "cp_preserve_ratio",
                problem.flops_keep,
                f"a FLOPs keep ratio >= {current / fm.dense_flops:.3f} (the smallest reachable)",
            )
        key = max(down, key=lambda k: (frac(k), current - fm.flops(step(k, -1))))
        out = step(key, -1)
        current = fm.flops(out)
    while True:
        up = [
            k
            for k, c in problem.choices.items()
            if c.index(out[k]) < len(c) - 1 and fm.flops(step(k, +1)) <= target
        ]
        if not up:
            return out
        key = min(up, key=lambda k: (frac(k), fm.flops(step(k, +1))))
        out = step(key, +1)


@dataclasses.dataclass
class OptimizerRatioSearch:
    """A ``RatioSearch`` for ``ChannelPrunedLearner`` driven by an ask/tell optimiser.

    Build it with :func:`optimizer_ratio_search`. After a call, ``history`` holds one entry
    per trial: ``{"trial", "counts", "score", "best"}`` (``best``: the best score so far,
    the search curve).

    Example:
        >>> OptimizerRatioSearch("tpe", trials=20).trials
        20
    """

    optimizer: str = "tpe"
    trials: int = 100
    seed: int = 0
    verbose: bool = False
    history: list[dict[str, Any]] = dataclasses.field(
        default_factory=list, repr=False, compare=False
    )

    def __call__(self, problem: allocation.AllocationProblem) -> dict[str, int]:
        """Searches ``problem``; the best-scoring plan (the earliest on ties)."""
        keys = [k for k, c in problem.choices.items() if len(c) > 1]
        fixed = {k: c[-1] for k, c in problem.choices.items() if k not in keys}
        if not keys:  # nothing to choose
            return fixed
        opt = base.get(self.optimizer)(
            space.SearchSpace([space.Int(k, 0, len(problem.choices[k]) - 1) for k in keys]),
            seed=self.seed,
        )
        result = in_memory.run(
            opt,
            lambda params: fit_to_flops(
                problem, {**fixed, **{k: problem.choices[k][params[k]] for k in keys}}
            ),
            problem.evaluate,
            self.trials,
            cache_key=lambda counts: tuple(sorted(counts.items())),
            label=self.optimizer,
            verbose=self.verbose,
        )
        self.history = [
            {"trial": h.trial, "counts": h.plan, "score": h.value, "best": h.best}
            for h in result.history
        ]
        if result.best is None:  # every score failed: the largest uniform plan
            fm = problem.flops_model
            return allocation.uniform_counts_for_flops(fm, problem.flops_keep, problem.multiple)[0]
        return result.best.plan


def optimizer_ratio_search(
    optimizer: str = "tpe", trials: int = 100, seed: int = 0, verbose: bool = False
) -> OptimizerRatioSearch:
    """TPE, GP or random search as the automatic per-group allocation of the channel learner.

    Args:
        optimizer: ``"tpe"``, ``"gp"`` or ``"random"``.
        trials: Plans proposed (proxy evaluations, fewer when plans repeat).
        seed: The optimiser's seed.
        verbose: Print progress ten times per search.

    Example:
        >>> optimizer_ratio_search("gp", trials=30, seed=2)
        OptimizerRatioSearch(optimizer='gp', trials=30, seed=2, verbose=False)
        >>> optimizer_ratio_search("anneal")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `cp_ratio_search`: 'anneal'. Accepted: one of ('tpe', 'gp', 'random').
    """
    in_memory.check_optimizer("cp_ratio_search", optimizer)
    trials = options.check_integer("cp_search_trials", trials, low=1)
    seed = options.check_integer("seed", seed, low=0)
    return OptimizerRatioSearch(optimizer, trials, seed, verbose)


__all__ = ["OPTIMIZERS", "OptimizerRatioSearch", "fit_to_flops", "optimizer_ratio_search"]
