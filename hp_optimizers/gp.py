"""GP: keras-tuner's Gaussian-process Bayesian optimisation behind the ask/tell contract.

keras-tuner's ``BayesianOptimizationOracle`` is used as a bare oracle (no hypermodel, no
tuner, no Keras model): the space becomes ``keras_tuner.HyperParameters``, and the oracle is
driven with ``create_trial`` / ``update_trial`` / ``end_trial``. It writes no files: its own
JSON files would be a second copy of what ``get_state`` already holds.

Each proposal rebuilds the oracle's knowledge from the optimiser's state: the successful
trials (in the order they were told) are fed in as completed trials, the pending ones as
ongoing trials (which the oracle "hallucinates" pessimistically, so that it does not propose
them again), and the oracle's random state is seeded from the trial's own generator. A
proposal is thus a pure function of the JSON state, and a restored optimiser proposes exactly
what the uninterrupted one would have. A long-lived oracle could not give that: it reseeds
nothing between trials, hallucinates pending trials with whatever GP it fitted last, and
orders its trials by ask rather than tell order.

Example:
    >>> from pocketflow_tf.hp_optimizers import gp, space as space_lib
    >>> space = space_lib.SearchSpace([space_lib.Float("x", -2.0, 2.0)])
    >>> opt = gp.GaussianProcess(space, seed=0, num_initial_points=3)
    >>> for _ in range(5):
    ...     t = opt.ask()
    ...     _ = opt.tell(t.number, -(t.params["x"] - 1.0) ** 2)
    >>> -2.0 <= opt.best().params["x"] <= 2.0
    True
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import warnings
import weakref
from typing import Any

import numpy as np

from pocketflow_tf import errors, options
from pocketflow_tf.hp_optimizers import base, random_search
from pocketflow_tf.hp_optimizers import space as space_lib

_OBJECTIVE = "score"  # the one metric reported to the oracle, always maximised


@functools.cache
def _oracle_class() -> type:
    """keras-tuner's Bayesian oracle, able to take given values and writing no files."""
    # keras-tuner pulls in Keras 3 and TensorFlow. The framework's Keras (tf-keras, for
    # TFMOT) is selected by compat; TF 2.21 reads that choice lazily, so either import order
    # works today (checked), but importing compat first keeps it the one place that decides.
    import pocketflow_tf.compat  # noqa: F401

    # isort: split
    import keras_tuner

    class _Oracle(keras_tuner.oracles.BayesianOptimizationOracle):
        # Values ``create_trial`` must use instead of proposing (to feed known trials
        # through the oracle's own bookkeeping); None means "propose".
        forced: dict[str, Any] | None = None

        def populate_space(self, trial_id):
            if self.forced is not None:
                return {"status": "RUNNING", "values": dict(self.forced)}
            return super().populate_space(trial_id)

        def save(self):
            pass  # the optimiser's get_state is the only persistent copy

        def _save_trial(self, trial):
            pass

    return _Oracle


def hyperparameters(space: space_lib.SearchSpace) -> Any:
    """``space`` as ``keras_tuner.HyperParameters``.

    Floats keep their log scale, integers their step; a Choice becomes a choice of value
    *indices*, because keras-tuner only accepts choices whose values share one type.

    Args:
        space: The space to translate.

    Returns:
        A ``keras_tuner.HyperParameters`` with one entry per parameter, in order.

    Example:
        >>> from pocketflow_tf.hp_optimizers import space as space_lib
        >>> hp = hyperparameters(space_lib.SearchSpace([space_lib.Choice("c", ["a", 1])]))
        >>> hp.space[0].values
        [0, 1]
    """
    _oracle_class()  # imports keras-tuner in the right order
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for p in space.params:
        if isinstance(p, space_lib.Float):
            hp.Float(p.name, p.low, p.high, sampling="log" if p.log else "linear")
        elif isinstance(p, space_lib.Int):
            hp.Int(p.name, p.low, p.high, step=p.step)
        else:
            hp.Choice(p.name, list(range(len(p.values))), ordered=False)
    return hp


def _forget_oracle(oracle: Any) -> None:
    # keras-tuner's @synchronized keeps a lock per oracle in module-level dicts keyed by
    # the oracle itself, which would keep every oracle (and its trials) alive forever.
    from keras_tuner.src.engine import oracle as oracle_module

    oracle_module.LOCKS.pop(oracle, None)
    oracle_module.THREADS.pop(oracle, None)


@base.register
class GaussianProcess(base.Optimizer):
    """keras-tuner's GP Bayesian optimisation (registered as ``"gp"``).

    Args:
        space: What to search.
        seed: Seed of every proposal and of the GP's kernel fitting.
        direction: ``"maximize"`` (default) or ``"minimize"``.
        num_initial_points: Successful trials proposed at random before the GP is used
            (>= 1; default: keras-tuner's ``max(3 * len(space), 3)``).
        beta: Exploration weight of the upper-confidence-bound acquisition (> 0).

    Example:
        >>> from pocketflow_tf.hp_optimizers import base, space as space_lib
        >>> space = space_lib.SearchSpace([space_lib.Int("n", 1, 9, step=2)])
        >>> base.get("gp")(space, seed=3).ask().params["n"] in (1, 3, 5, 7, 9)
        True
    """

    name = "gp"
    SETTINGS = ("num_initial_points", "beta")

    def __init__(
        self,
        space: space_lib.SearchSpace,
        seed: int = 0,
        direction: str = "maximize",
        num_initial_points: int | None = None,
        beta: float = 2.6,
    ):
        super().__init__(space, seed=seed, direction=direction)
        if num_initial_points is not None:
            num_initial_points = options.check_integer(
                "num_initial_points", num_initial_points, low=1
            )
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta > 0:
            raise errors.InvalidArgumentError("beta", beta, "a number > 0")
        for module in ("keras_tuner", "sklearn"):
            # Fail here, not at the first ask hours into a search (importing keras-tuner
            # itself is deferred: it takes seconds).
            if importlib.util.find_spec(module) is None:
                raise ImportError(
                    f"The 'gp' optimiser needs {module}: pip install 'keras-tuner[bayesian]'"
                )
        self.num_initial_points = num_initial_points
        self.beta = float(beta)
        self._oracle: Any = None  # built on first ask: importing keras-tuner takes seconds
        self._blank_state: dict[str, Any] = {}

    # -- the oracle ------------------------------------------------------------------------

    def _make_oracle(self) -> None:
        import keras_tuner

        self._oracle = _oracle_class()(
            objective=keras_tuner.Objective(_OBJECTIVE, direction="max"),
            max_trials=None,  # the search loop decides when to stop, not the oracle
            num_initial_points=self.num_initial_points,
            beta=self.beta,
            # keras-tuner replaces a seed of 0 by a random one, and sklearn wants < 2**32.
            seed=self.seed % (2**31 - 1) + 1,
            hyperparameters=hyperparameters(self.space),
            allow_new_entries=False,
            tune_new_entries=False,
        )
        self._oracle.verbose = 0  # no per-trial tables on stdout
        self._blank_state = copy.deepcopy(self._oracle.get_state())
        weakref.finalize(self, _forget_oracle, self._oracle)

    def _reset_oracle(self, rng: np.random.Generator) -> Any:
        """The oracle emptied of trials and seeded for one proposal."""
        if self._oracle is None:
            self._make_oracle()
        oracle = self._oracle
        oracle.trials = {}
        # set_state (keras-tuner's own restore path) clears the oracle's bookkeeping; the
        # Bayesian oracle's version also replaces the GP by a fresh, unfitted one.
        oracle.set_state(copy.deepcopy(self._blank_state))
        oracle.tuner_ids = set()
        # The two random sources of the oracle (random phase / acquisition restarts), seeded
        # per trial instead of advancing across trials: that is what makes replays exact.
        oracle._seed_state = int(rng.integers(1, 2**31))
        oracle._random_state = np.random.RandomState(int(rng.integers(2**31)))
        return oracle

    def _to_oracle(self, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        for p in self.space.params:
            if isinstance(p, space_lib.Choice):
                out[p.name] = p.values.index(params[p.name])
        return out

    def _from_oracle(self, values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.space.params:
            v = values[p.name]
            if isinstance(p, space_lib.Float):
                # low * (high/low) ** prob can miss the bounds by an ulp: clip.
                out[p.name] = min(max(float(v), p.low), p.high)
            elif isinstance(p, space_lib.Int):
                out[p.name] = int(v)
            else:
                out[p.name] = p.values[int(v)]
        return out

    def _feed(self, oracle: Any, tuner_id: str, params: dict[str, Any]) -> Any:
        oracle.forced = self._to_oracle(params)
        try:
            return oracle.create_trial(tuner_id)
        finally:
            oracle.forced = None

    # -- the contract ----------------------------------------------------------------------

    def _propose(self, number: int, rng: np.random.Generator) -> dict[str, Any]:
        import sklearn
        import threadpoolctl
        from sklearn.exceptions import ConvergenceWarning

        # The GP's matrices are tiny (trials x trials): multi-threaded BLAS only adds
        # synchronisation, which on a busy 2-core machine made a 15-trial search 6x slower
        # (71 s -> 11 s). The oracle already replaces NaN/inf, so skip sklearn's checks.
        with (
            threadpoolctl.threadpool_limits(limits=1, user_api="blas"),
            sklearn.config_context(assume_finite=True),
            warnings.catch_warnings(),
        ):
            # "length_scale is close to the bound": about keras-tuner's fixed kernel, which
            # the user cannot change; the fit is still usable.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._propose_with_oracle(number, rng)

    def _propose_with_oracle(self, number: int, rng: np.random.Generator) -> dict[str, Any]:
        oracle = self._reset_oracle(rng)
        done = [r for r in self.history if not r.failed]
        for rec in done:
            trial = self._feed(oracle, f"done-{rec.number}", rec.params)
            oracle.update_trial(trial.trial_id, {_OBJECTIVE: self.score(rec.value)})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
        n_initial = self.num_initial_points or max(3 * len(self.space), 3)
        if self.pending and len(done) >= n_initial:
            # The oracle hallucinates ongoing trials with its current GP: fit it on the
            # finished trials first (a long-lived oracle would use its last, stale fit).
            x, y = oracle._vectorize_trials()
            oracle.gpr.fit(np.nan_to_num(x), np.nan_to_num(y))
        for n, params in sorted(self.pending.items()):
            self._feed(oracle, f"pending-{n}", params)
        trial = oracle.create_trial(f"ask-{number}")
        if trial.status != "RUNNING":
            # The random phase gives up after 20 draws that were all tried already (a small
            # discrete space): repeating a point is allowed here, so draw one ourselves.
            return random_search.sample(self.space, rng)
        return self._from_oracle(trial.hyperparameters.values)
