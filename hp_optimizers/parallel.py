"""Parallel trials: worker processes sharing one study in an optuna storage.

``search.Study(..., workers=N)`` (or ``storage=URL``) keeps the study in an optuna
``RDBStorage`` (:mod:`shared_storage`) instead of ``study.json``. Every worker -- the
calling process and ``N - 1`` processes it starts, plus any started by hand with
``python -m pocketflow_tf.hp_optimizers.worker --storage URL --study NAME`` -- loops:
ask the storage for a trial, run the objective with a heartbeat, tell the result.

* The proposals still come from the study's optimiser (``"tpe"``, ``"random"``, ``"gp"``...):
  an optuna sampler (:class:`OptimizerSampler`) rebuilds it from the stored trials (finished
  ones as history, running ones as pending) and asks it for the new trial's params.
* A worker killed mid-trial stops its heartbeat; after ``grace_s`` seconds any other worker
  (or the next run) fails that trial and optuna's ``RetryHeartbeatStaleTrialCallback``
  queues a copy with the same params, which the next free worker runs. The copy keeps the
  number and seed of the first attempt, so results show one trial per number; a killed
  worker's late ``tell`` would be refused by the storage, so no trial completes twice.
* ``max_trials`` is shared: a worker whose newly asked trial has ``max_trials`` earlier ones
  marks it surplus (user attribute ``surplus``) and stops, so concurrent asks never
  overshoot the budget. ``max_consecutive_failures`` counts per worker.
* The objective must be rebuilt in each worker process: it is given as an
  :class:`ObjectiveSpec` (an importable factory and JSON arguments) or as a module-level
  function, and stored with the study.

Results come back as the same :class:`~pocketflow_tf.hp_optimizers.search.StudyResult`.

Example:
    >>> ObjectiveSpec("math:hypot").build()(3.0, 4.0)
    5.0
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from pocketflow_tf import errors
from pocketflow_tf.hp_optimizers import base, search, shared_storage
from pocketflow_tf.hp_optimizers import space as space_lib

#: The study user attribute holding our settings (what a worker needs to join).
SETTINGS_ATTR = "pocketflow_tf"
SETTINGS_FORMAT = 1
DEFAULT_STUDY_NAME = "study"
#: The SQLite file a parallel Study keeps in its directory when no storage is given.
DB_FILE = "study.db"
#: How often an idle worker looks for retried trials while others finish theirs.
POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """An objective another process can rebuild: ``"module:attr"`` and optional arguments.

    Without ``kwargs`` the target *is* the objective; with them, the target is a factory
    called as ``target(**kwargs)`` that returns it (e.g. one that loads a model).

    Args:
        target: ``"package.module:name"`` (``name`` may be dotted: ``"mod:Class.make"``).
        kwargs: JSON arguments of the factory, or ``None``.

    Example:
        >>> spec = ObjectiveSpec("math:hypot")
        >>> ObjectiveSpec.from_dict(spec.to_dict()) == spec
        True
    """

    target: str
    kwargs: Mapping[str, Any] | None = None

    def __post_init__(self):
        if not isinstance(self.target, str) or self.target.count(":") != 1:
            raise errors.InvalidArgumentError(
                "objective target", self.target, "'package.module:name'"
            )
        if self.kwargs is not None:
            try:
                json.dumps(dict(self.kwargs))
            except (TypeError, ValueError):
                raise errors.InvalidArgumentError(
                    "objective kwargs", self.kwargs, "a dict of JSON data"
                ) from None

    def resolve(self) -> Callable[..., Any]:
        """The target object (imported; raises a clear error when it cannot be)."""
        module, name = self.target.split(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise errors.InvalidArgumentError(
                "objective", self.target, f"an importable 'module:name' ({e})"
            ) from None
        if not callable(obj):
            raise errors.InvalidArgumentError("objective", self.target, "a callable")
        return obj

    def build(self) -> Callable[..., Any]:
        """The objective: the target, or ``target(**kwargs)``."""
        target = self.resolve()
        return target if self.kwargs is None else target(**dict(self.kwargs))

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kwargs": None if self.kwargs is None else dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectiveSpec:
        return cls(data["target"], data.get("kwargs"))

    @classmethod
    def of(cls, objective: Any) -> ObjectiveSpec | None:
        """The spec of an objective: itself, its ``objective_spec`` attribute (an object
        saying how other processes rebuild it), or that of a module-level function
        (``None`` for a lambda, a closure or another object: nothing to import).

        Example:
            >>> import math
            >>> ObjectiveSpec.of(math.hypot).target, ObjectiveSpec.of(lambda p, s: 0.0)
            ('math:hypot', None)
        """
        if isinstance(objective, ObjectiveSpec):
            return objective
        carried = getattr(objective, "objective_spec", None)
        if isinstance(carried, ObjectiveSpec):  # an object saying how to rebuild itself
            return carried
        module = getattr(objective, "__module__", None)
        qualname = getattr(objective, "__qualname__", None)
        if not module or not qualname or "<" in qualname or module == "__main__":
            return None
        spec = cls(f"{module}:{qualname}")
        try:
            return spec if spec.resolve() is objective else None
        except errors.InvalidArgumentError:
            return None


# -- the study's settings --------------------------------------------------------------


def settings(
    config: Mapping[str, Any],
    *,
    optimizer_kwargs: Mapping[str, Any],
    objective: ObjectiveSpec | None,
    max_trials: int | None,
    max_wall_s: float | None,
    max_consecutive_failures: int | None,
    heartbeat_s: int,
    grace_s: int,
    max_retries: int,
) -> dict[str, Any]:
    """What the study stores for its workers (``config`` must match on every run).

    Example:
        >>> s = settings({"seed": 0}, optimizer_kwargs={}, objective=None, max_trials=4,
        ...              max_wall_s=None, max_consecutive_failures=None, heartbeat_s=5,
        ...              grace_s=30, max_retries=3)
        >>> s["budgets"]["max_trials"]
        4
    """
    try:
        kwargs = json.loads(json.dumps(dict(optimizer_kwargs)))
    except (TypeError, ValueError):
        raise errors.InvalidArgumentError(
            "optimizer_kwargs",
            optimizer_kwargs,
            "JSON data when trials run in parallel (each worker rebuilds the optimiser)",
        ) from None
    return {
        "format": SETTINGS_FORMAT,
        "config": dict(config),
        "optimizer_kwargs": kwargs,
        "objective": None if objective is None else objective.to_dict(),
        "budgets": {
            "max_trials": max_trials,
            "max_wall_s": max_wall_s,
            "max_consecutive_failures": max_consecutive_failures,
        },
        "heartbeat": {"heartbeat_s": heartbeat_s, "grace_s": grace_s, "max_retries": max_retries},
    }


def check_storage(url: str, study_name: str, config: Mapping[str, Any]) -> bool:
    """Checks that ``url`` holds no other study and, when it holds ``study_name``, that its
    configuration is ``config``. Returns whether the study exists (opens nothing new when
    an SQLite file does not exist yet).

    Raises:
        InvalidArgumentError: naming ``study_name`` (another study owns the storage) or the
            first differing field of the configuration, with both values.

    Example:
        >>> import tempfile
        >>> check_storage(f"sqlite:///{tempfile.mkdtemp()}/s.db", "study", {"seed": 0})
        False
    """
    path = shared_storage.check_url(url)
    if path is not None and not os.path.exists(path):
        return False
    storage = shared_storage.open_storage(url)
    try:
        return _check_stored(storage, url, study_name, config) is not None
    finally:
        storage.remove_session()


def _check_stored(storage, url: str, study_name: str, config: Mapping[str, Any]):
    """The stored settings of ``study_name`` (``None`` when absent), after the checks."""
    studies = {s.study_name: s for s in storage.get_all_studies()}
    if study_name not in studies:
        if studies:
            other = sorted(studies)[0]
            raise errors.InvalidArgumentError(
                "study_name",
                study_name,
                f"{other!r}, the study {url} holds (a storage holds one study; use another "
                "storage for a new one)",
            )
        return None
    stored = studies[study_name].user_attrs.get(SETTINGS_ATTR)
    if not isinstance(stored, dict) or stored.get("format") != SETTINGS_FORMAT:
        raise errors.InvalidArgumentError(
            "study_name",
            study_name,
            f"a study written by pocketflow_tf; {url} holds an optuna study of that name made "
            "by something else: use another storage",
        )
    for field in search.CONFIG_FIELDS:
        if stored["config"].get(field) != config.get(field):
            raise errors.InvalidArgumentError(
                field,
                config.get(field),
                f"{stored['config'].get(field)!r}, the value of study {study_name!r} in {url} "
                "(a study resumes with its own configuration; use another storage or study "
                "name for a new one)",
            )
    return stored


def prepare(url: str, study_name: str, study_settings: Mapping[str, Any]) -> None:
    """Creates the study in ``url`` (or checks the stored one) and stores the settings
    (budgets may change from one run to the next, the configuration may not).

    Example:
        >>> import tempfile
        >>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"
        >>> cfg = {"space": [], "optimizer": "random", "seed": 0, "direction": "maximize"}
        >>> s = settings(cfg, optimizer_kwargs={}, objective=None, max_trials=2,
        ...              max_wall_s=None, max_consecutive_failures=None, heartbeat_s=5,
        ...              grace_s=30, max_retries=3)
        >>> prepare(url, "study", s)
        >>> check_storage(url, "study", cfg)
        True
    """
    import optuna

    storage = shared_storage.open_storage(url)
    try:
        _check_stored(storage, url, study_name, study_settings["config"])
        with shared_storage.quiet_optuna():
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                direction=study_settings["config"]["direction"],
                load_if_exists=True,
            )
        study.set_user_attr(SETTINGS_ATTR, dict(study_settings))
    finally:
        storage.remove_session()


def load_settings(url: str, study_name: str) -> dict[str, Any]:
    """The settings a worker needs, read from the storage.

    Raises:
        InvalidArgumentError: no such study (naming the ones the storage holds).

    Example:
        >>> import tempfile
        >>> load_settings(f"sqlite:///{tempfile.mkdtemp()}/s.db", "study")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `study`: 'study'. ...
    """
    path = shared_storage.check_url(url)
    studies = {}
    if path is None or os.path.exists(path):  # reading must not create a database
        storage = shared_storage.open_storage(url)
        try:
            studies = {s.study_name: s for s in storage.get_all_studies()}
        finally:
            storage.remove_session()
    stored = studies.get(study_name)
    data = None if stored is None else stored.user_attrs.get(SETTINGS_ATTR)
    if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
        raise errors.InvalidArgumentError(
            "study",
            study_name,
            f"one of the pocketflow_tf studies in {url}: {sorted(studies)} (start the study "
            "with search.Study(..., storage=URL) before its workers)",
        )
    return data


# -- proposals: the study's optimiser behind optuna's sampler interface ----------------


class OptimizerSampler:
    """An optuna sampler whose proposals come from one of our optimisers.

    Each new trial rebuilds the optimiser from the stored trials -- finished ones (complete
    or failed, in the order they finished) as its history, running ones as pending -- and
    asks it for the params of that trial number, so every worker proposes from the same
    shared knowledge (``tpe`` and ``gp`` steer away from the pending ones). A retried trial
    already holds its params: nothing is proposed for it.

    Args:
        study_settings: The study's settings (:func:`settings`).

    Example:
        >>> import optuna
        >>> import pocketflow_tf.hp_optimizers
        >>> cfg = {"space": [{"kind": "int", "name": "k", "low": 0, "high": 3, "step": 1}],
        ...        "optimizer": "random", "seed": 0, "direction": "maximize"}
        >>> s = settings(cfg, optimizer_kwargs={}, objective=None, max_trials=2,
        ...              max_wall_s=None, max_consecutive_failures=None, heartbeat_s=5,
        ...              grace_s=30, max_retries=3)
        >>> sampler = OptimizerSampler(s)
        >>> with shared_storage.quiet_optuna():
        ...     study = optuna.create_study(sampler=sampler.optuna_sampler())
        ...     trial = study.ask()
        >>> suggest_all(trial, sampler.space)["k"] in range(4)
        True
    """

    def __init__(self, study_settings: Mapping[str, Any]):
        config = study_settings["config"]
        self.space = space_lib.SearchSpace.from_config(config["space"])
        self.optimizer_cls = base.get(config["optimizer"])
        self.seed = config["seed"]
        self.direction = config["direction"]
        self.optimizer_kwargs = dict(study_settings.get("optimizer_kwargs") or {})

    def propose(self, trials: list[Any], number: int) -> dict[str, Any]:
        """The params of new trial ``number`` given the stored ``trials``."""
        import optuna

        history, pending = [], []
        groups = logical_trials(trials)
        for first, attempts in groups.items():  # first: the study trial number
            last = attempts[-1]
            if last.number == number:
                continue
            if last.state == optuna.trial.TrialState.COMPLETE:
                history.append((last.datetime_complete, first, last.params, last.value))
            elif last.state == optuna.trial.TrialState.FAIL:
                history.append((last.datetime_complete, first, last.params, None))
            elif set(last.params) == set(self.space.names):
                pending.append({"number": first, "params": dict(last.params)})
        history.sort(key=lambda h: (h[0] or datetime.datetime.max, h[1]))
        # A fresh optimiser's state carries what its class adds (AMC's settings); the
        # history, pending trials and number are then the study's.
        state = self.optimizer_cls(
            self.space, seed=self.seed, direction=self.direction, **self.optimizer_kwargs
        ).get_state()
        state.update(
            history=[{"number": n, "params": dict(p), "value": v} for _, n, p, v in history],
            pending=pending,
            next_number=rank(trials, number),
        )
        optimizer = self.optimizer_cls.from_state(state, **self.optimizer_kwargs)
        return optimizer.ask().params

    def optuna_sampler(self):
        """This sampler as an ``optuna.samplers.BaseSampler``."""
        import optuna

        outer = self

        class _Sampler(optuna.samplers.BaseSampler):
            def infer_relative_search_space(self, study, trial):
                return distributions(outer.space)

            def sample_relative(self, study, trial, search_space):
                if trial.params or not search_space:  # a retried trial keeps its params
                    return {}
                return outer.propose(study.get_trials(deepcopy=False), trial.number)

            def sample_independent(self, study, trial, param_name, param_distribution):
                raise errors.PocketFlowError(
                    f"parameter {param_name!r} is not in the study's space {outer.space.names}"
                )

        return _Sampler()


def distributions(space: space_lib.SearchSpace) -> dict[str, Any]:
    """The optuna distributions of ``space`` (shared with the ``tpe`` optimiser).

    Example:
        >>> sorted(distributions(space_lib.SearchSpace([space_lib.Float("x", 0.0, 1.0)])))
        ['x']
    """
    from pocketflow_tf.hp_optimizers import tpe

    return tpe.distributions(space)


def suggest_all(trial: Any, space: space_lib.SearchSpace) -> dict[str, Any]:
    """Suggests every parameter of ``space`` on an optuna trial; returns the params.

    Example:
        >>> import optuna
        >>> with shared_storage.quiet_optuna():
        ...     t = optuna.create_study().ask()
        >>> suggest_all(t, space_lib.SearchSpace([space_lib.Choice("c", ["a"])]))
        {'c': 'a'}
    """
    params = {}
    for name, dist in distributions(space).items():
        if hasattr(dist, "choices"):
            params[name] = trial.suggest_categorical(name, list(dist.choices))
        elif hasattr(dist, "log") and isinstance(dist.low, float):
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        else:
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step)
    return space.validate(params)


# -- reading the trials back ------------------------------------------------------------


def first_number(trial: Any) -> int:
    """The number of a trial's first attempt (a retry's own number otherwise differs).

    Example:
        >>> import optuna
        >>> first_number(optuna.trial.create_trial(value=1.0, system_attrs={"failed_trial": 3}))
        3
    """
    return trial.system_attrs.get("failed_trial", trial.number)


def logical_trials(trials: list[Any]) -> dict[int, list[Any]]:
    """``{study trial number: its attempts in order}``, surplus trials left out.

    A study trial's number is its rank among the first attempts (0, 1, ... without gaps):
    optuna numbers every attempt, and a retry's own number would otherwise leave a gap. The
    rank of a trial never changes: an earlier first attempt not yet known to be surplus is
    counted, and when it turns out surplus so do all later ones.

    Example:
        >>> logical_trials([])
        {}
    """
    groups: dict[int, list[Any]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if not t.user_attrs.get("surplus"):
            groups.setdefault(first_number(t), []).append(t)
    return dict(enumerate(attempts for _, attempts in sorted(groups.items())))


def rank(trials: list[Any], first: int) -> int:
    """The study trial number of the trial whose first attempt is optuna trial ``first``.

    Example:
        >>> rank([], 7)
        0
    """
    firsts = {first_number(t) for t in trials if not t.user_attrs.get("surplus")}
    return sum(n < first for n in firsts)


def elapsed_s(trials: list[Any], now: datetime.datetime | None = None) -> float:
    """Seconds during which at least one trial ran: the union of the trials' intervals,
    over every run of the study (pauses between runs are not counted).

    Example:
        >>> elapsed_s([])
        0.0
    """
    now = now or datetime.datetime.now()
    spans = sorted(
        (t.datetime_start, t.datetime_complete or now) for t in trials if t.datetime_start
    )
    total, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def to_study_trials(trials: list[Any], seed: int) -> list[search.StudyTrial]:
    """The stored optuna trials as ``StudyTrial`` s, one per number (its last attempt).

    Example:
        >>> to_study_trials([], seed=0)
        []
    """
    import optuna

    state = optuna.trial.TrialState
    out = []
    for number, attempts in logical_trials(trials).items():
        last = attempts[-1]
        attrs = last.user_attrs
        if last.state == state.COMPLETE:
            status, value = "complete", last.value
        elif last.state == state.FAIL:
            status, value = "failed", None
        else:
            status, value = "running", None
        error = attrs.get("error") if status != "complete" else None
        if status == "failed" and not error:
            error = (
                f"its worker stopped sending heartbeats {len(attempts)} time(s) (killed or "
                "lost); not retried again"
            )
        started = last.datetime_start.timestamp() if last.datetime_start else None
        ended = last.datetime_complete.timestamp() if last.datetime_complete else None
        wall = attrs.get("wall_s")
        if wall is None and started is not None and ended is not None:
            wall = ended - started
        out.append(
            search.StudyTrial(
                number=number,
                params=dict(last.params),
                trial_seed=search.trial_seed(seed, number),
                status=status,
                value=value,
                metrics=dict(attrs.get("metrics") or {}) if status == "complete" else {},
                error=error,
                started=started,
                ended=ended,
                wall_s=wall,
                attempts=len(attempts),
            )
        )
    return out


def result(
    url: str, study_name: str, directory: str, stop_reason: str | None = None
) -> search.StudyResult:
    """The study in ``url`` as a ``StudyResult`` (what ``Study.run`` returns).

    Example:
        >>> import tempfile
        >>> url = f"sqlite:///{tempfile.mkdtemp()}/s.db"
        >>> cfg = {"space": [], "optimizer": "random", "seed": 0, "direction": "maximize"}
        >>> prepare(url, "study", settings(cfg, optimizer_kwargs={}, objective=None,
        ...     max_trials=2, max_wall_s=None, max_consecutive_failures=None,
        ...     heartbeat_s=5, grace_s=30, max_retries=3))
        >>> result(url, "study", "/tmp/d").trials
        []
    """
    import optuna

    stored = load_settings(url, study_name)
    storage = shared_storage.open_storage(url)
    try:
        with shared_storage.quiet_optuna():
            study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.remove_session()
    config = stored["config"]
    rows = to_study_trials(trials, config["seed"])
    sign = 1.0 if config["direction"] == "maximize" else -1.0
    ok = [t for t in rows if t.status == "complete"]
    best = max(ok, key=lambda t: (sign * t.value, -t.number), default=None)
    return search.StudyResult(best, rows, stop_reason or "", directory, elapsed_s(trials))


# -- the worker loop --------------------------------------------------------------------


class Worker:
    """One process's share of a parallel study: ask, run with a heartbeat, tell, repeat.

    Args:
        url: The storage.
        study_name: The study (made by :func:`prepare`).
        objective: The objective; ``None`` builds it from the stored ``ObjectiveSpec``.
        label: Names this worker in progress lines and in each trial's ``worker`` attribute.
        verbose: Print one line per trial.

    Raises:
        InvalidArgumentError: no such study, or no objective to build.

    Example:
        >>> Worker("sqlite:///:memory:", "study")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `storage`: ...
    """

    def __init__(
        self,
        url: str,
        study_name: str,
        objective: Callable[..., Any] | None = None,
        *,
        label: str | None = None,
        verbose: bool = True,
    ):
        self.url, self.study_name, self.verbose = url, study_name, verbose
        self.settings = load_settings(url, study_name)
        self.label = label or f"pid {os.getpid()}"
        if objective is None:
            if self.settings.get("objective") is None:
                raise errors.InvalidArgumentError(
                    "objective",
                    None,
                    f"an importable objective stored with study {study_name!r}; it was started "
                    "with a function no other process can import (pass an ObjectiveSpec or a "
                    "module-level function to search.Study)",
                )
            objective = ObjectiveSpec.from_dict(self.settings["objective"]).build()
        self.objective = objective
        self.sampler = OptimizerSampler(self.settings)
        budgets = self.settings["budgets"]
        self.max_trials = budgets["max_trials"]
        self.max_wall_s = budgets["max_wall_s"]
        self.max_consecutive_failures = budgets["max_consecutive_failures"]

    def run(self) -> str:
        """Runs trials until the budgets are spent and every trial has finished.

        Returns:
            Why it stopped: ``"max_trials"``, ``"max_wall_s"`` or
            ``"max_consecutive_failures"``.

        Raises:
            BaseException: a non-trial error of the objective (with a note naming the
                trial, which stays running until its heartbeat times out and is retried).
        """
        import optuna

        hb = self.settings["heartbeat"]
        storage = shared_storage.open_storage(
            self.url,
            heartbeat_s=hb["heartbeat_s"],
            grace_s=hb["grace_s"],
            max_retries=hb["max_retries"],
        )
        try:
            with shared_storage.quiet_optuna():
                study = optuna.load_study(
                    study_name=self.study_name,
                    storage=storage,
                    sampler=self.sampler.optuna_sampler(),
                )
                return self._loop(study, storage)
        finally:
            storage.remove_session()

    def _loop(self, study: Any, storage: Any) -> str:
        import optuna

        failures, reason = 0, None
        while True:
            # Fails the trials of dead workers; the callback queues their retries (WAITING).
            optuna.storages.fail_stale_trials(study)
            fail_unannounced_trials(study, storage, self.settings["heartbeat"]["grace_s"])
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
            reason = reason or self._budget_spent(trials)
            if reason is not None and not waiting:
                running = [
                    t for t in to_study_trials(trials, self.sampler.seed) if t.status == "running"
                ]
                if not running:
                    return reason
                time.sleep(POLL_S)  # one of them may still need a worker to retry it
                continue
            trial = study.ask()  # a queued retry first, else a new trial
            announce(storage, trial._trial_id, trial.number)
            frozen = storage.get_trial(trial._trial_id)  # a live Trial hides system attrs
            with _heartbeat(trial, storage):
                number = rank(study.get_trials(deepcopy=False), first_number(frozen))
                if first_number(frozen) == trial.number and (
                    reason is not None
                    or (self.max_trials is not None and number >= self.max_trials)
                ):  # max_trials trials were asked before this one (by any worker)
                    self._tell(study, trial, None, {"surplus": True})
                    reason = reason or "max_trials"
                    continue
                row = self._run_trial(study, trial, number)
            if row is None:
                continue
            failures = failures + 1 if row.status == "failed" else 0
            if self.max_consecutive_failures and failures >= self.max_consecutive_failures:
                self._log(f"[{self.label}] stopping: {failures} trials failed in a row")
                reason = "max_consecutive_failures"

    def _budget_spent(self, trials: list[Any]) -> str | None:
        if self.max_trials is not None and len(logical_trials(trials)) >= self.max_trials:
            return "max_trials"
        if self.max_wall_s is not None and elapsed_s(trials) >= self.max_wall_s:
            return "max_wall_s"
        return None

    def _run_trial(self, study: Any, trial: Any, first: int) -> search.StudyTrial | None:
        """Runs the objective for study trial number ``first`` and tells the result."""
        params = suggest_all(trial, self.sampler.space)
        seed = search.trial_seed(self.sampler.seed, first)
        t0 = time.perf_counter()
        error = None
        try:
            value, metrics = search.parse_result(self.objective(dict(params), seed))
        except search.TRIAL_ERRORS as e:
            value, metrics, error = None, {}, f"{type(e).__name__}: {e}"
        except BaseException as e:
            e.add_note(
                f"[pocketflow_tf study {self.study_name!r} in {self.url}] trial {first} "
                f"(params {params}, trial_seed {seed}) raised this in worker {self.label}; "
                "it stays running until its heartbeat times out, then another worker or the "
                "next run retries it."
            )
            raise
        wall = time.perf_counter() - t0
        if value is None:
            error = error or "the objective returned None, NaN or inf"
        attrs = {"trial_seed": seed, "metrics": metrics, "error": error, "wall_s": wall}
        attrs["worker"] = self.label
        if not self._tell(study, trial, value, attrs):
            self._log(
                f"[{self.label}] trial {first}: result dropped, the trial was declared lost "
                "(no heartbeat for the grace period) and retried by another worker"
            )
            return None
        rows = to_study_trials(study.get_trials(deepcopy=False), self.sampler.seed)
        row = next(r for r in rows if r.number == first)
        self._log(self._progress_line(row, rows))
        return row

    def _tell(self, study: Any, trial: Any, value: float | None, attrs: dict) -> bool:
        """Records ``attrs`` and the result; ``False`` when the storage had already failed
        the trial (its heartbeat was declared lost): optuna refuses to finish it twice."""
        import optuna

        state = optuna.trial.TrialState
        try:
            for key, item in attrs.items():
                trial.set_user_attr(key, item)
            if value is None:
                study.tell(trial, state=state.FAIL)
            else:
                study.tell(trial, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def _log(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)

    def _progress_line(self, row: search.StudyTrial, rows: list[search.StudyTrial]) -> str:
        params = " ".join(f"{k}={search.short(v)}" for k, v in row.params.items())
        if len(params) > 60:
            params = params[:57] + "..."
        outcome = (
            f"value={search.short(row.value)}"
            if row.status == "complete"
            else f"FAILED ({search.short(row.error, 40)})"
        )
        sign = 1.0 if self.sampler.direction == "maximize" else -1.0
        ok = [t for t in rows if t.status == "complete"]
        best = max(ok, key=lambda t: (sign * t.value, -t.number), default=None)
        best_s = f"best={search.short(best.value)} (#{best.number})" if best else "best=-"
        retry = f" (attempt {row.attempts})" if row.attempts > 1 else ""
        return (
            f"trial {row.number:>3}{retry} [{self.label}]  {outcome}  {best_s}  {params}  "
            f"{row.wall_s:.1f}s"
        )


#: System attribute of a trial attempt whose worker recorded its first heartbeat: the optuna
#: number of that attempt (a retry inherits its first attempt's system attributes, so the
#: number tells whose mark it is).
ANNOUNCED_ATTR = "pocketflow_tf_heartbeat_of"


def announce(storage: Any, trial_id: int, number: int) -> None:
    """Records a just-asked trial's first heartbeat, then marks the attempt as announced.

    optuna fails a running trial only when its *last* heartbeat is older than the grace
    period; a worker killed between ``ask`` and its heartbeat thread's first beat leaves a
    running trial with no heartbeat at all, which optuna never fails and the other workers
    would wait for forever. Beating synchronously right after ``ask`` shrinks that window to
    one storage write, and :func:`fail_unannounced_trials` closes it: a running attempt
    without this mark after the grace period was lost before it beat.

    Example:
        >>> import optuna
        >>> storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=5)
        >>> with shared_storage.quiet_optuna():
        ...     study = optuna.create_study(storage=storage)
        ...     trial = study.ask()
        >>> announce(storage, trial._trial_id, trial.number)
        >>> storage.get_trial(trial._trial_id).system_attrs[ANNOUNCED_ATTR]
        0
    """
    storage.record_heartbeat(trial_id)
    storage.set_trial_system_attr(trial_id, ANNOUNCED_ATTR, number)


def fail_unannounced_trials(
    study: Any, storage: Any, grace_s: float, now: datetime.datetime | None = None
) -> list[int]:
    """Fails the running attempts that were never announced (:func:`announce`) within
    ``grace_s`` seconds of their start, and queues their retries as optuna does for stale
    heartbeats. Returns the optuna numbers of the attempts it failed.

    Two workers may sweep at once: the storage lets only one of them fail a trial, and only
    that one queues the retry, so a lost attempt is retried once. ``datetime_start`` is the
    asking worker's clock: hosts' clocks must agree to well within ``grace_s``.

    Example:
        >>> import optuna
        >>> storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=5)
        >>> with shared_storage.quiet_optuna():
        ...     study = optuna.create_study(storage=storage)
        ...     lost = study.ask()  # its worker died before announcing it
        >>> later = datetime.datetime.now() + datetime.timedelta(seconds=60)
        >>> fail_unannounced_trials(study, storage, grace_s=30, now=later)
        [0]
    """
    import optuna

    now = now or datetime.datetime.now()
    limit = datetime.timedelta(seconds=grace_s)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.system_attrs.get(ANNOUNCED_ATTR) == t.number or t.datetime_start is None:
            continue
        if now - t.datetime_start <= limit:
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(t)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first (and queued its retry)
    retry = storage.get_heartbeat_stale_trial_callback()
    for t in failed:
        if retry is not None:
            retry(study, storage.get_trial(t._trial_id))
    return [t.number for t in failed]


class _heartbeat:
    """Records the trial's heartbeat in a thread while the block runs: optuna's own
    heartbeat thread (what ``Study.optimize`` uses; the ask/tell interface has none)."""

    def __init__(self, trial: Any, storage: Any):
        from optuna.storages._heartbeat import get_heartbeat_thread

        self.thread = get_heartbeat_thread(trial._trial_id, storage)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: Any) -> None:
        self.thread.join()


def worker_command(url: str, study_name: str, label: str, *, verbose: bool = True) -> list[str]:
    """The command line of one worker process (:mod:`worker`) on ``url``.

    Example:
        >>> worker_command("sqlite:////tmp/s.db", "study", "worker 1")[1:3]
        ['-m', 'pocketflow_tf.hp_optimizers.worker']
    """
    cmd = [sys.executable, "-m", "pocketflow_tf.hp_optimizers.worker"]
    cmd += ["--storage", url, "--study", study_name, "--label", label]
    return cmd + ([] if verbose else ["--quiet"])


def worker_env() -> dict[str, str]:
    """This process's environment, with its ``sys.path`` as ``PYTHONPATH``: a worker must
    import the objective's module from wherever this process did (a test folder, a script's
    folder).

    Example:
        >>> os.getcwd() in worker_env()["PYTHONPATH"].split(os.pathsep) or True
        True
    """
    paths = [p or os.getcwd() for p in sys.path]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
