"""TPE: optuna's Tree-structured Parzen Estimator behind the ask/tell contract.

optuna is driven through its ask-and-tell interface with fixed distributions (one per
parameter of the space). Successful trials become optuna ``FrozenTrial`` s in ``_observe``;
each proposal is computed on a scratch in-memory study holding them (in the order they were
told) plus the pending trials (as RUNNING, so TPE's constant liar steers away from them),
with a sampler seeded from the trial's own generator. A proposal is therefore a pure
function of the optimiser's JSON state, and a restored optimiser proposes exactly what the
uninterrupted one would have. (A long-lived study could not give that: optuna orders trials
by number, i.e. by ask order, which a replay of the history cannot reproduce, and a trial
once asked cannot be removed from a study.)

Example:
    >>> from pocketflow_tf.hp_optimizers import space as space_lib, tpe
    >>> space = space_lib.SearchSpace([space_lib.Float("x", -2.0, 2.0)])
    >>> opt = tpe.TPE(space, seed=0, n_startup_trials=3)
    >>> for _ in range(6):
    ...     t = opt.ask()
    ...     _ = opt.tell(t.number, -(t.params["x"] - 1.0) ** 2)
    >>> -2.0 <= opt.best().params["x"] <= 2.0
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from pocketflow_tf import errors, options
from pocketflow_tf.hp_optimizers import base
from pocketflow_tf.hp_optimizers import space as space_lib


def _optuna():
    # Imported on first use: optuna is an optional dependency of the other optimisers.
    import optuna

    return optuna


@contextlib.contextmanager
def _quiet(optuna) -> Iterator[None]:
    """Silences optuna's INFO lines ("A new study created ...") for one block, then puts
    back the user's verbosity (a global setting we must not change for them)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def distributions(space: space_lib.SearchSpace) -> dict[str, Any]:
    """The optuna distribution of every parameter of ``space``.

    Args:
        space: The space to translate.

    Returns:
        ``{name: FloatDistribution | IntDistribution | CategoricalDistribution}``.

    Example:
        >>> from pocketflow_tf.hp_optimizers import space as space_lib
        >>> d = distributions(space_lib.SearchSpace([space_lib.Int("n", 1, 10, step=4)]))
        >>> d["n"].low, d["n"].high, d["n"].step
        (1, 9, 4)
    """
    dist = _optuna().distributions
    out: dict[str, Any] = {}
    for p in space.params:
        if isinstance(p, space_lib.Float):
            out[p.name] = dist.FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, space_lib.Int):
            # optuna wants high on the step grid (and warns when it moves it): put it there.
            high = p.low + (p.high - p.low) // p.step * p.step
            out[p.name] = dist.IntDistribution(p.low, high, step=p.step)
        else:
            out[p.name] = dist.CategoricalDistribution(list(p.values))
    return out


@base.register
class TPE(base.Optimizer):
    """optuna's TPE sampler (registered as ``"tpe"``).

    Args:
        space: What to search.
        seed: Seed of every proposal (each trial's sampler is seeded from it and the
            trial number).
        direction: ``"maximize"`` (default) or ``"minimize"``.
        n_startup_trials: Successful trials proposed at random before TPE models the
            results (>= 1).
        multivariate: Model the parameters jointly (optuna's multivariate TPE, better on
            correlated parameters) instead of one by one.

    Example:
        >>> from pocketflow_tf.hp_optimizers import base, space as space_lib
        >>> space = space_lib.SearchSpace([space_lib.Choice("c", ["a", "b"])])
        >>> base.get("tpe")(space, n_startup_trials=2).ask().params["c"] in ("a", "b")
        True
    """

    name = "tpe"
    SETTINGS = ("n_startup_trials", "multivariate")

    def __init__(
        self,
        space: space_lib.SearchSpace,
        seed: int = 0,
        direction: str = "maximize",
        n_startup_trials: int = 8,
        multivariate: bool = True,
    ):
        super().__init__(space, seed=seed, direction=direction)
        n_startup_trials = options.check_integer("n_startup_trials", n_startup_trials, low=1)
        if not isinstance(multivariate, bool):
            raise errors.InvalidArgumentError("multivariate", multivariate, "True or False")
        self.n_startup_trials = n_startup_trials
        self.multivariate = multivariate
        self._distributions = distributions(space)
        self._completed: list[Any] = []  # optuna FrozenTrials, in the order they were told

    def _observe(self, record: base.Record) -> None:
        optuna = _optuna()
        self._completed.append(
            optuna.trial.create_trial(
                params=record.params,
                distributions=self._distributions,
                value=self.score(record.value),  # the study maximises
            )
        )

    def _propose(self, number: int, rng: np.random.Generator) -> dict[str, Any]:
        optuna = _optuna()
        running = [
            optuna.trial.create_trial(
                params=params,
                distributions=self._distributions,
                state=optuna.trial.TrialState.RUNNING,
            )
            for _, params in sorted(self.pending.items())
        ]
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=self.n_startup_trials,
            multivariate=self.multivariate,
            constant_liar=True,
            seed=int(rng.integers(2**31)),
        )
        with _quiet(optuna):
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.add_trials(self._completed + running)
            trial = study.ask(self._distributions)
        return dict(trial.params)
