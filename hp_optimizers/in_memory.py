"""The in-memory search loop: ``trials`` rounds of ask, decode, score (once per plan), tell.

A learner's own search (channel counts, AMC episodes, weight bits, sparsity ratios) runs
inside one ``fit`` and needs neither a directory nor a resume, unlike
:class:`~pocketflow_tf.hp_optimizers.search.Study`. What those searches share lives here:
proposals are *decoded* into the plan actually scored (bounded to a budget, fitted to a
target: every scored plan is feasible), plans given as ``starts`` (closed-form defaults) are
scored first so the answer is never worse than them, a plan that repeats is scored once
when a ``cache_key`` is given, the optimiser is told the score against its own proposal,
and a NaN or infinite score fails its trial: the optimiser does not learn from it and it is
never the best. The best is the earliest of the best finite scores.

Example:
    >>> import pocketflow_tf.hp_optimizers
    >>> from pocketflow_tf.hp_optimizers import base, space as space_lib
    >>> opt = base.get("random")(space_lib.SearchSpace([space_lib.Int("n", 0, 3)]), seed=0)
    >>> result = run(opt, lambda params: 2 * params["n"], lambda n: -abs(n - 4), trials=8,
    ...              starts=[("zero", 0)], cache_key=lambda n: n)
    >>> result.best.plan, result.best.value, len(result.history), result.evaluations
    (4, 0.0, 9, 4)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from pocketflow_tf import errors, options
from pocketflow_tf.hp_optimizers import base

#: The general-purpose optimisers a learner's search offers (``base.get`` names); ``amc``
#: is not one of them: it needs per-layer specifications (``channel.amc_search``).
OPTIMIZERS = ("tpe", "gp", "random")


@dataclasses.dataclass
class Scored:
    """One scored plan of an in-memory search.

    Attributes:
        trial: The optimiser's trial index (0, 1, ...), or the label of a start plan.
        plan: The decoded plan that was scored.
        value: Its score (NaN or inf: failed).
        best: The best finite score so far (``None`` before the first one).

    Example:
        >>> Scored("uniform", {"a": 0.5}, -0.3, -0.3).best
        -0.3
    """

    trial: int | str
    plan: Any
    value: float
    best: float | None


@dataclasses.dataclass
class Result:
    """What :func:`run` returns.

    Attributes:
        best: The best finite-scored plan (``None`` when every score failed).
        history: Every plan in the order scored: the starts, then one per trial.
        evaluations: How many times ``evaluate`` ran (fewer than plans when plans repeat).

    Example:
        >>> r = Result(None, [Scored(0, "p", float("nan"), None)], 1)
        >>> r.best is None, r.history[0].trial
        (True, 0)
    """

    best: Scored | None
    history: list[Scored]
    evaluations: int


def run(
    optimizer: base.Optimizer,
    decode: Callable[[dict[str, Any]], Any],
    evaluate: Callable[[Any], float],
    trials: int,
    *,
    starts: Sequence[tuple[str, Any]] = (),
    cache_key: Callable[[Any], Hashable] | None = None,
    label: str = "search",
    verbose: bool = False,
    describe: Callable[[Any], str] | None = None,
) -> Result:
    """Scores ``starts``, then runs ``trials`` ask/decode/evaluate/tell rounds of ``optimizer``.

    Args:
        optimizer: A fresh optimiser; its ``direction`` says whether scores are maximised.
        decode: Maps a proposal's params to the plan to score (e.g. bounded to a budget).
        evaluate: Scores a plan.
        trials: Proposals asked (>= 1).
        starts: ``(label, plan)`` pairs scored first and not told to the optimiser.
        cache_key: A hashable key of a plan: plans with equal keys are scored once (``None``:
            every plan is scored).
        label: Names the search in progress lines.
        verbose: Print a progress line ten times per search.
        describe: Extra words about a plan for the progress line (e.g. its FLOPs).

    Returns:
        The best plan and the history.

    Raises:
        InvalidArgumentError: If ``trials`` is not an integer >= 1.

    Example:
        >>> import pocketflow_tf.hp_optimizers
        >>> from pocketflow_tf.hp_optimizers import base, space as space_lib
        >>> opt = base.get("random")(space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)]),
        ...                          seed=0, direction="minimize")
        >>> r = run(opt, lambda p: p["x"], lambda x: x * x, trials=20, label="doc",
        ...         verbose=True)  # doctest: +ELLIPSIS
          doc trial 2/20: score ..., best ..., 2 plans scored
        ...
          doc trial 20/20: score ..., best ..., 20 plans scored
        >>> r.best.value == min(s.value for s in r.history) < 0.01
        True
    """
    trials = options.check_integer("trials", trials, low=1)
    sign = 1.0 if optimizer.direction == "maximize" else -1.0
    cache: dict[Hashable, float] = {}
    history: list[Scored] = []
    best: Scored | None = None
    evaluations = 0

    def score(trial: int | str, plan: Any) -> float:
        nonlocal best, evaluations
        key = cache_key(plan) if cache_key is not None else None
        if key is None or key not in cache:
            value = float(evaluate(plan))
            evaluations += 1
            if key is not None:
                cache[key] = value
        else:
            value = cache[key]
        if math.isfinite(value) and (best is None or sign * value > sign * best.value):
            best = Scored(trial, plan, value, value)
        history.append(Scored(trial, plan, value, None if best is None else best.value))
        return value

    for name, plan in starts:
        score(name, plan)
    every = max(1, trials // 10)
    for t in range(trials):
        asked = optimizer.ask()
        plan = decode(asked.params)
        value = score(t, plan)
        optimizer.tell(asked.number, value)  # NaN and inf: a failed trial
        if verbose and (t + 1) % every == 0:
            extra = f", {describe(plan)}" if describe is not None else ""
            best_s = "-" if best is None else f"{best.value:.4f}"
            print(
                f"  {label} trial {t + 1}/{trials}: score {value:.4f}, best {best_s}{extra}, "
                f"{evaluations} plans scored",
                flush=True,
            )
    return Result(best, history, evaluations)


def check_optimizer(name: str, value: Any) -> str:
    """``value`` when it is one of :data:`OPTIMIZERS`; else the error naming option ``name``.

    Example:
        >>> check_optimizer("cp_ratio_search", "gp")
        'gp'
        >>> check_optimizer("cp_ratio_search", "anneal")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `cp_ratio_search`: 'anneal'. Accepted: one of ('tpe', 'gp', 'random').
    """
    if value not in OPTIMIZERS:
        raise errors.InvalidArgumentError(name, value, f"one of {OPTIMIZERS}")
    return value


__all__ = ["OPTIMIZERS", "Result", "Scored", "check_optimizer", "run"]
