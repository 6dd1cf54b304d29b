"""The resumable search loop: ask an optimiser, run the objective, tell it the score.

A ``Study`` keeps everything in ``<directory>/study.json``, rewritten atomically each time a
trial changes status (started, complete, failed), so a study killed at any instant continues
where it stopped when it is constructed again on the same directory: finished trials are kept,
a trial that was running is rerun with the same params and seed, and new trials are asked
from the optimiser rebuilt from its saved state (the keras-tuner oracle/tuner split, with the
same resumable JSON state). ``<directory>/study.lock`` keeps a second process out.
``workers=N`` (or ``storage=URL``) runs trials in parallel processes on a shared optuna
storage instead (:mod:`parallel`), with the same ``StudyResult``.

An objective maps ``(params, trial_seed)`` to a float, or to a dict holding ``"value"`` and
any extra metrics to record (FLOPs, bytes, latency). A trial *fails* (it is recorded, the
optimiser is told ``None`` and the search goes on) when the objective returns None, NaN or
inf, or raises a ``TrialFailed``, ``PocketFlowError``, ``ValueError`` or ``ArithmeticError``.
Any other exception (``OSError``, ``MemoryError``, ``KeyboardInterrupt``, ``TypeError``...)
is taken to come from the environment or a bug: it propagates, and the trial stays "running"
in the state so the next run retries it.

Example:
    >>> import tempfile
    >>> from pocketflow_tf.hp_optimizers import base, search, space as space_lib
    >>> class Walk(base.Optimizer):
    ...     name = "doc-walk"
    ...     def _propose(self, number, rng):
    ...         return {"x": float(rng.uniform(-1.0, 1.0))}
    >>> _ = base.register(Walk)
    >>> space = space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)])
    >>> d = tempfile.mkdtemp()
    >>> def objective(params, trial_seed):
    ...     return {"value": 1.0 - params["x"] ** 2, "bytes": 100}
    >>> result = search.Study(d, space, objective, optimizer="doc-walk", max_trials=4,
    ...                       verbose=False).run()
    >>> len(result.trials), result.stop_reason
    (4, 'max_trials')
    >>> more = search.Study(d, space, objective, optimizer="doc-walk", max_trials=6,
    ...                     verbose=False).run()  # resumes: only trials 4 and 5 are run
    >>> [t.number for t in more.trials], more.trials[:4] == result.trials
    ([0, 1, 2, 3, 4, 5], True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import json
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pocketflow_tf import atomic_io, errors, options
from pocketflow_tf.hp_optimizers import base
from pocketflow_tf.hp_optimizers import space as space_lib

STATE_FILE = "study.json"
LOCK_FILE = "study.lock"
STATE_FORMAT = 1
# What must be equal for a directory's state to be resumed by a new Study.
CONFIG_FIELDS = ("space", "optimizer", "seed", "direction")
STATUSES = ("running", "complete", "failed")


class TrialFailed(Exception):
    """Raised by an objective to mark its trial failed; the search goes on.

    Example:
        >>> def objective(params, trial_seed):
        ...     raise TrialFailed("the pruned model does not fit the budget")
    """


class StudyLockedError(errors.PocketFlowError):
    """Another process is running the study in this directory.

    Example:
        >>> str(StudyLockedError("the study in /tmp/s is being run by pid 42"))
        'the study in /tmp/s is being run by pid 42'
    """


# A trial error says "these params are bad"; anything else says "this run is broken".
TRIAL_ERRORS = (TrialFailed, errors.PocketFlowError, ValueError, ArithmeticError)


@dataclasses.dataclass
class StudyTrial:
    """One trial of a study as stored in its state file.

    Attributes:
        number: Position in the study (0, 1, ...), as numbered by the optimiser.
        params: The values tried.
        trial_seed: Seed handed to the objective, a function of (study seed, number) only.
        status: ``"running"``, ``"complete"`` or ``"failed"``.
        value: The score (``None`` unless complete).
        metrics: Extra numbers the objective returned beside ``"value"``.
        error: Why the trial failed, or what interrupted its last attempt.
        started: Wall-clock start of the last attempt (seconds since the epoch).
        ended: Wall-clock end of the last attempt (``None`` while running).
        wall_s: Duration of the last attempt in seconds.
        attempts: How many times the objective was started for this trial.

    Example:
        >>> t = StudyTrial(0, {"x": 0.5}, trial_seed(0, 0), "complete", 0.75)
        >>> t.get("value"), t.get("latency_ms")
        (0.75, None)
    """

    number: int
    params: dict[str, Any]
    trial_seed: int
    status: str = "running"
    value: float | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    wall_s: float | None = None
    attempts: int = 0

    def get(self, key: str) -> Any:
        """``value`` for ``"value"``, else the metric ``key`` (``None`` when absent)."""
        return self.value if key == "value" else self.metrics.get(key)


@dataclasses.dataclass
class StudyResult:
    """What ``Study.run`` returns.

    Attributes:
        best: The best complete trial (``None`` when none succeeded); ties go to the earliest.
        trials: Every trial, by number.
        stop_reason: ``"max_trials"``, ``"max_wall_s"`` or ``"max_consecutive_failures"``.
        directory: Where the state lives.
        elapsed_s: Wall-clock seconds the study has run, over every run of it.

    Example:
        >>> trials = [StudyTrial(0, {"x": 0.1}, 1, "complete", 0.5, {"bytes": 10}),
        ...           StudyTrial(1, {"x": 0.9}, 2, "complete", 0.9, {"bytes": 90})]
        >>> r = StudyResult(trials[1], trials, "max_trials", "/tmp/s")
        >>> [t.number for t in r.pareto_front([("value", "max"), ("bytes", "min")])]
        [0, 1]
    """

    best: StudyTrial | None
    trials: list[StudyTrial]
    stop_reason: str
    directory: str
    elapsed_s: float = 0.0

    def pareto_front(self, objectives: Sequence[tuple[str, str]]) -> list[StudyTrial]:
        """The non-dominated complete trials (see the module function ``pareto_front``)."""
        return pareto_front(self.trials, objectives)


def trial_seed(seed: int, number: int) -> int:
    """The seed handed to the objective for trial ``number`` of a study seeded ``seed``.

    It depends on nothing else, so a trial rerun after a crash gets the same seed. The
    spawn key keeps it independent of the optimiser's own ``default_rng([seed, number])``;
    it fits in 31 bits because some seeding APIs take an int32.

    Example:
        >>> trial_seed(0, 3) == trial_seed(0, 3) != trial_seed(0, 4)
        True
    """
    return int(np.random.SeedSequence(seed, spawn_key=(number,)).generate_state(1)[0]) >> 1


def pareto_front(
    trials: Sequence[StudyTrial], objectives: Sequence[tuple[str, str]]
) -> list[StudyTrial]:
    """The complete trials that no other complete trial dominates.

    Trial ``a`` dominates ``b`` when ``a`` is at least as good on every objective and better
    on one. Trials lacking a finite value for one of the objectives are left out (they
    cannot be compared); equal trials are all kept.

    Args:
        trials: Study trials (``StudyTrial``); only complete ones are considered.
        objectives: ``(key, "max" | "min")`` pairs; ``key`` is ``"value"`` or a metric name.

    Returns:
        The non-dominated trials, in the order given.

    Example:
        >>> def t(n, acc, ms):
        ...     return StudyTrial(n, {}, 0, "complete", acc, {"latency_ms": ms})
        >>> trials = [t(0, 0.90, 3.0), t(1, 0.92, 5.0), t(2, 0.89, 4.0), t(3, 0.80, 1.0)]
        >>> [p.number for p in pareto_front(trials, [("value", "max"), ("latency_ms", "min")])]
        [0, 1, 3]
    """
    signs = []
    for key, direction in objectives:
        if direction not in ("max", "min"):
            raise errors.InvalidArgumentError(f"direction of {key!r}", direction, "'max' or 'min'")
        signs.append(1.0 if direction == "max" else -1.0)
    if not signs:
        raise errors.InvalidArgumentError("objectives", objectives, "at least one (key, dir)")
    kept, rows = [], []
    for trial in trials:
        values = [trial.get(key) for key, _ in objectives]
        if trial.status == "complete" and all(_is_finite_number(v) for v in values):
            kept.append(trial)
            rows.append([s * float(v) for s, v in zip(signs, values, strict=True)])
    if not kept:
        return []
    a = np.asarray(rows)  # higher is better in every column
    geq = (a[:, None, :] >= a[None, :, :]).all(axis=-1)  # geq[i, j]: i >= j everywhere
    gt = (a[:, None, :] > a[None, :, :]).any(axis=-1)
    dominated = (geq & gt).any(axis=0)
    return [trial for trial, d in zip(kept, dominated, strict=True) if not d]


class Study:
    """Runs a resumable hyper-parameter search in ``directory``.

    Args:
        directory: Holds ``study.json`` (the state) and ``study.lock``; created if needed.
            An existing state is resumed; its configuration must match the one given.
        space: The search space.
        objective: ``objective(params, trial_seed) -> float | dict``; a dict holds
            ``"value"`` plus extra metrics to record.
        optimizer: Registered name of the optimiser (``base.get``).
        optimizer_kwargs: Extra constructor arguments of the optimiser (not stored: give
            them again on resume).
        seed: Seed of the optimiser and of the trial seeds.
        direction: ``"maximize"`` or ``"minimize"`` the value.
        max_trials: Stop once this many trials have finished (complete or failed), counted
            over every run of the study.
        max_wall_s: Stop before starting a trial once the study has run this long, counted
            over every run (time after the last state write of a killed run is lost).
        max_consecutive_failures: Stop after this many failed trials in a row in one run
            (``None``: never); a run is a deliberate retry, so the count restarts with it.
        verbose: Print one line per trial.
        workers: Trial processes (default 1: this process alone, state in ``study.json``).
            With more, or with ``storage``, the study lives in an optuna storage shared by
            worker processes (:mod:`parallel`): ``run`` starts ``workers - 1`` of them and
            works beside them; more can join with ``python -m
            pocketflow_tf.hp_optimizers.worker --storage URL --study NAME``. Their objective
            must then be importable: a module-level function or a ``parallel.ObjectiveSpec``.
        storage: The shared storage, ``"sqlite:///PATH"`` or a database server's URL
            (default with ``workers > 1``: ``<directory>/study.db``).
        study_name: The study's name in the storage (default ``"study"``).
        heartbeat_s: Seconds between a running parallel trial's heartbeats.
        grace_s: A parallel trial without a heartbeat for this long (its worker was killed)
            is failed and queued again, up to ``max_retries`` times.
        max_retries: How often a parallel trial whose worker died is run again.

    Raises:
        InvalidArgumentError: a bad argument, no budget, or a configuration that differs from
            the state stored in ``directory`` (naming the field, given and stored values);
            with workers: a bad storage URL, a storage holding another study, or an
            objective other processes cannot import.

    Example:
        >>> import tempfile
        >>> import pocketflow_tf.hp_optimizers  # registers "random"
        >>> from pocketflow_tf.hp_optimizers import space as space_lib
        >>> space = space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)])
        >>> d = tempfile.mkdtemp()
        >>> def objective(params, trial_seed):
        ...     if params["x"] > 0.5:
        ...         raise TrialFailed("x too large")
        ...     return -abs(params["x"])
        >>> r = Study(d, space, objective, optimizer="random", max_trials=5,
        ...           verbose=False).run()
        >>> [t.status for t in r.trials], r.best.number
        (['complete', 'failed', 'complete', 'failed', 'failed'], 0)
        >>> Study(d, space, objective, optimizer="random", seed=1, max_trials=5)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `seed`: 1. ...
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        space: space_lib.SearchSpace,
        objective: Callable[[dict[str, Any], int], float | Mapping[str, Any] | None],
        *,
        optimizer: str = "random",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        direction: str = "maximize",
        max_trials: int | None = None,
        max_wall_s: float | None = None,
        max_consecutive_failures: int | None = 5,
        verbose: bool = True,
        workers: int = 1,
        storage: str | None = None,
        study_name: str | None = None,
        heartbeat_s: int = 5,
        grace_s: int = 30,
        max_retries: int = 3,
    ):
        from pocketflow_tf.hp_optimizers import parallel  # it builds on this module

        if not isinstance(space, space_lib.SearchSpace):
            raise errors.InvalidArgumentError("space", space, "a SearchSpace")
        if not (callable(objective) or isinstance(objective, parallel.ObjectiveSpec)):
            raise errors.InvalidArgumentError(
                "objective", objective, "a callable or a parallel.ObjectiveSpec"
            )
        if direction not in base.DIRECTIONS:
            raise errors.InvalidArgumentError("direction", direction, f"one of {base.DIRECTIONS}")
        seed = options.check_integer("seed", seed, low=0)
        if max_trials is None and max_wall_s is None:
            raise errors.InvalidArgumentError(
                "max_trials/max_wall_s", (None, None), "at least one budget"
            )
        if max_trials is not None:
            max_trials = options.check_integer("max_trials", max_trials, low=1)
        if max_consecutive_failures is not None:
            max_consecutive_failures = options.check_integer(
                "max_consecutive_failures", max_consecutive_failures, low=1
            )
        if max_wall_s is not None and not (_is_finite_number(max_wall_s) and max_wall_s > 0):
            raise errors.InvalidArgumentError("max_wall_s", max_wall_s, "a number > 0 or None")
        self.optimizer_cls = base.get(optimizer)  # unknown names fail here, not mid-run
        self.directory = os.fspath(directory)
        self.space = space
        self.objective = objective
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.max_trials = max_trials
        self.max_wall_s = max_wall_s
        self.max_consecutive_failures = max_consecutive_failures
        self.verbose = verbose
        # JSON round trip: compared with what a state file holds (lists, not tuples).
        self.config = json.loads(
            json.dumps(
                {
                    "space": space.to_config(),
                    "optimizer": optimizer,
                    "seed": seed,
                    "direction": direction,
                }
            )
        )
        self.state_path = os.path.join(self.directory, STATE_FILE)
        self.lock_path = os.path.join(self.directory, LOCK_FILE)
        self.workers = options.check_integer("workers", workers, low=1)
        self.parallel = storage is not None or self.workers > 1
        check_mode(self.directory, self.workers, storage)
        if not self.parallel:
            if isinstance(objective, parallel.ObjectiveSpec):
                parallel.ObjectiveSpec.resolve(objective)  # import errors now, not mid-run
            state = self._read_state()
            if state is not None:  # fail at construction, before any work is done
                self._check_config(state)
            return
        self._init_parallel(objective, storage, study_name, heartbeat_s, grace_s, max_retries)

    def _init_parallel(self, objective, storage, study_name, heartbeat_s, grace_s, max_retries):
        """Checks the parallel mode's arguments and the stored study, before any work."""
        from pocketflow_tf.hp_optimizers import parallel, shared_storage

        if storage is None:
            storage = "sqlite:///" + os.path.abspath(os.path.join(self.directory, parallel.DB_FILE))
        shared_storage.check_url(storage)
        if study_name is None:
            study_name = parallel.DEFAULT_STUDY_NAME
        if not isinstance(study_name, str) or not study_name:
            raise errors.InvalidArgumentError("study_name", study_name, "a non-empty string")
        heartbeat_s = options.check_integer("heartbeat_s", heartbeat_s, low=1)
        grace_s = options.check_integer("grace_s", grace_s, low=heartbeat_s + 1)
        max_retries = options.check_integer("max_retries", max_retries, low=0)
        spec = parallel.ObjectiveSpec.of(objective)
        if spec is not None:
            spec.resolve()  # import errors now, not in a worker
        elif self.workers > 1:
            raise errors.InvalidArgumentError(
                "objective",
                objective,
                "a parallel.ObjectiveSpec or a module-level function when workers > 1 (each "
                "worker process rebuilds the objective; a lambda, closure or object cannot "
                "be sent there)",
            )
        self.storage, self.study_name, self.objective_spec = storage, study_name, spec
        self.parallel_settings = parallel.settings(
            self.config,
            optimizer_kwargs=self.optimizer_kwargs,
            objective=spec,
            max_trials=self.max_trials,
            max_wall_s=self.max_wall_s,
            max_consecutive_failures=self.max_consecutive_failures,
            heartbeat_s=heartbeat_s,
            grace_s=grace_s,
            max_retries=max_retries,
        )
        parallel.check_storage(storage, study_name, self.config)

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def direction(self) -> str:
        return self.config["direction"]

    def run(self) -> StudyResult:
        """Runs trials until a budget is spent, holding the directory's lock throughout.

        Returns at once (with the stored trials) when the budgets are already spent.

        Raises:
            StudyLockedError: another process is running this study.
            BaseException: whatever non-trial error the objective raised, with a note
                naming the trial (which stays "running" and is retried by the next run).

        Example:
            >>> import tempfile
            >>> import pocketflow_tf.hp_optimizers  # registers "random"
            >>> from pocketflow_tf.hp_optimizers import space as space_lib
            >>> space = space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)])
            >>> seeds = []
            >>> def objective(params, trial_seed):
            ...     seeds.append(trial_seed)
            ...     if len(seeds) == 2:
            ...         raise OSError("disk full")  # not a trial error: it propagates
            ...     return params["x"]
            >>> study = Study(tempfile.mkdtemp(), space, objective, optimizer="random",
            ...               max_trials=3, verbose=False)
            >>> try:
            ...     study.run()
            ... except OSError as e:
            ...     print(e, "| the note names trial 1:", "trial 1 " in e.__notes__[0])
            disk full | the note names trial 1: True
            >>> r = study.run()  # trial 1 is rerun with the same seed, then trial 2 is asked
            >>> [t.attempts for t in r.trials], seeds[1] == seeds[2]
            ([1, 2, 1], True)
        """
        os.makedirs(self.directory, exist_ok=True)
        if self.parallel:
            return self._run_parallel()
        if isinstance(self.objective, _objective_spec_type()):
            self.objective = self.objective.build()
        with _DirectoryLock(self.lock_path, self.directory):
            # Leftovers of atomic writes cut by a kill; only the lock holder writes here.
            for tmp in glob.glob(os.path.join(glob.escape(self.directory), f".{STATE_FILE}.*")):
                with contextlib.suppress(OSError):
                    os.remove(tmp)
            self._load()
            return self._loop()

    def _run_parallel(self) -> StudyResult:
        """Starts ``workers - 1`` worker processes on the storage, works beside them, waits
        for them and returns the study as every worker left it."""
        from pocketflow_tf.hp_optimizers import parallel

        parallel.prepare(self.storage, self.study_name, self.parallel_settings)
        self._log(
            f"study {self.study_name!r} in {self.storage}: {self.workers} worker(s), optimizer "
            f"{self.config['optimizer']!r}"
        )
        done = parallel.result(self.storage, self.study_name, self.directory)
        if not any(t.status == "running" for t in done.trials):  # no process to start
            if self.max_trials is not None and len(done.trials) >= self.max_trials:
                done.stop_reason = "max_trials"
                return done
            if self.max_wall_s is not None and done.elapsed_s >= self.max_wall_s:
                done.stop_reason = "max_wall_s"
                return done
        procs = [
            subprocess.Popen(
                parallel.worker_command(
                    self.storage, self.study_name, f"worker {i}", verbose=self.verbose
                ),
                env=parallel.worker_env(),
            )
            for i in range(1, self.workers)
        ]
        objective = self.objective
        if isinstance(objective, parallel.ObjectiveSpec):
            objective = objective.build()
        finished = False
        try:
            reason = parallel.Worker(
                self.storage, self.study_name, objective, label="worker 0", verbose=self.verbose
            ).run()
            finished = True
        finally:
            for proc in procs:
                if not finished:  # this process failed: stop the workers it started
                    proc.terminate()
                proc.wait()
        codes = [p.returncode for p in procs]
        if any(codes):
            self._log(
                f"worker exit codes {codes}: a worker failed (its trial, if any, was retried "
                "by another worker; see its output above)"
            )
        return parallel.result(self.storage, self.study_name, self.directory, reason)

    # -- the loop ------------------------------------------------------------------------

    def _load(self) -> None:
        # Reread under the lock: another process may have advanced the study since __init__.
        state = self._read_state()
        self._t0 = time.monotonic()
        self._stop_reason = None
        if state is None:
            self._optimizer = self.optimizer_cls(
                self.space, seed=self.seed, direction=self.direction, **self.optimizer_kwargs
            )
            self._trials: list[StudyTrial] = []
            self._elapsed0 = 0.0
        else:
            self._check_config(state)
            self._optimizer = self.optimizer_cls.from_state(
                state["optimizer_state"], **self.optimizer_kwargs
            )
            self._trials = [StudyTrial(**t) for t in state["trials"]]
            self._elapsed0 = float(state["elapsed_s"])
            for t in self._trials:
                if t.status == "running" and t.number not in self._optimizer.pending:
                    raise errors.PocketFlowError(
                        f"{self.state_path} is inconsistent: trial {t.number} is running but "
                        f"the optimiser has no pending trial of that number"
                    )
        running = [t.number for t in self._trials if t.status == "running"]
        self._log(
            f"study {self.directory}: {len(self._trials) - len(running)} trials finished"
            + (f", rerunning {running}" if running else "")
            + f", optimizer {self.config['optimizer']!r}"
        )
        self._write()

    def _loop(self) -> StudyResult:
        failures = 0
        while (reason := self._budget_spent()) is None:
            trial = next((t for t in self._trials if t.status == "running"), None)
            if trial is None:  # reruns come first: a running trial is never asked again
                asked = self._optimizer.ask()
                trial = StudyTrial(asked.number, asked.params, trial_seed(self.seed, asked.number))
                self._trials.append(trial)
            self._run_trial(trial)
            failures = failures + 1 if trial.status == "failed" else 0
            if self.max_consecutive_failures and failures >= self.max_consecutive_failures:
                reason = "max_consecutive_failures"
                self._log(f"stopping: {failures} trials failed in a row (last: {trial.error})")
                break
        self._stop_reason = reason
        self._write()
        return StudyResult(
            self._best(), list(self._trials), reason, self.directory, self._elapsed()
        )

    def _budget_spent(self) -> str | None:
        finished = sum(t.status != "running" for t in self._trials)
        if self.max_trials is not None and finished >= self.max_trials:
            return "max_trials"
        if self.max_wall_s is not None and self._elapsed() >= self.max_wall_s:
            return "max_wall_s"
        return None

    def _run_trial(self, trial: StudyTrial) -> None:
        trial.status, trial.value, trial.metrics, trial.error = "running", None, {}, None
        trial.attempts += 1
        trial.started, trial.ended, trial.wall_s = time.time(), None, None
        self._write()  # from here on, a crash leaves the trial "running": it will be rerun
        t0 = time.perf_counter()
        try:
            value, metrics = _parse_result(self.objective(dict(trial.params), trial.trial_seed))
        except TRIAL_ERRORS as e:
            value, metrics, trial.error = None, {}, f"{type(e).__name__}: {e}"
        except BaseException as e:
            trial.wall_s = time.perf_counter() - t0
            trial.error = f"interrupted by {type(e).__name__}: {e}"
            e.add_note(
                f"[pocketflow_tf study {self.directory}] trial {trial.number} "
                f"(params {trial.params}, trial_seed {trial.trial_seed}) raised this; it stays "
                f"'running' in {self.state_path} and is rerun when the study is run again."
            )
            with contextlib.suppress(Exception):  # the original error matters more
                self._write()
            raise
        trial.ended, trial.wall_s = time.time(), time.perf_counter() - t0
        if value is None:
            trial.status = "failed"
            trial.error = trial.error or "the objective returned None, NaN or inf"
        else:
            trial.status, trial.value, trial.metrics = "complete", value, metrics
        self._optimizer.tell(trial.number, value)
        self._write()
        self._log(self._progress_line(trial))

    def _best(self) -> StudyTrial | None:
        ok = [t for t in self._trials if t.status == "complete"]
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(ok, key=lambda t: (sign * t.value, -t.number), default=None)

    # -- state ---------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self._elapsed0 + time.monotonic() - self._t0

    def _write(self) -> None:
        atomic_io.write_json(
            self.state_path,
            {
                "format": STATE_FORMAT,
                "config": self.config,
                "optimizer_state": self._optimizer.get_state(),
                "trials": [dataclasses.asdict(t) for t in self._trials],
                "elapsed_s": self._elapsed(),
                "stop_reason": self._stop_reason,
            },
        )

    def _read_state(self) -> dict[str, Any] | None:
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise errors.PocketFlowError(
                f"cannot read the study state {self.state_path}: {e}"
            ) from e
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise errors.PocketFlowError(
                f"{self.state_path} is not a study state of format {STATE_FORMAT}"
            )
        return state

    def _check_config(self, state: Mapping[str, Any]) -> None:
        stored = state.get("config", {})
        for field in CONFIG_FIELDS:
            if stored.get(field) != self.config[field]:
                raise errors.InvalidArgumentError(
                    field,
                    self.config[field],
                    f"{stored.get(field)!r}, the value stored in {self.state_path} (a study "
                    "resumes with its own configuration; use another directory for a new one)",
                )

    # -- progress ------------------------------------------------------------------------

    def _log(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)

    def _progress_line(self, trial: StudyTrial) -> str:
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        if len(params) > 60:
            params = params[:57] + "..."
        outcome = (
            f"value={_short(trial.value)}"
            if trial.status == "complete"
            else f"FAILED ({_short(trial.error, 40)})"
        )
        best = self._best()
        best_s = f"best={_short(best.value)} (#{best.number})" if best else "best=-"
        return (
            f"trial {trial.number:>3}  {outcome}  {best_s}  {params}  "
            f"{trial.wall_s:.1f}s (elapsed {self._elapsed():.1f}s)"
        )


class _DirectoryLock:
    """An exclusive ``flock`` on ``path`` holding the owner's pid; released by the kernel
    when the owner dies, so a SIGKILLed run never leaves a stale lock behind."""

    def __init__(self, path: str, directory: str):
        self.path, self.directory, self.fd = path, directory, None

    def __enter__(self) -> _DirectoryLock:
        # Not O_TRUNC: the file holds the pid of the current holder until we own the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StudyLockedError(
                f"the study in {self.directory} is being run by another process (pid {holder}, "
                f"lock {self.path}); a study runs in one process at a time: wait for it or "
                "stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the last descriptor releases the flock


def check_mode(directory: str | os.PathLike, workers: int, storage: str | None = None) -> None:
    """Refuses to continue a study of ``directory`` in the other mode: a ``study.json``
    (one process) with workers or a storage, a ``study.db`` (workers) without.

    Raises:
        InvalidArgumentError: naming ``workers`` and saying how the study is continued.

    Example:
        >>> import tempfile
        >>> check_mode(tempfile.mkdtemp(), 2)
    """
    from pocketflow_tf.hp_optimizers import parallel

    directory = os.fspath(directory)
    parallel_mode = storage is not None or workers > 1
    db = os.path.join(directory, parallel.DB_FILE)
    state = os.path.join(directory, STATE_FILE)
    if not parallel_mode and os.path.exists(db):
        raise errors.InvalidArgumentError(
            "workers",
            workers,
            f"> 1 or storage='sqlite:///{os.path.abspath(db)}': {directory} holds a study run "
            "by parallel workers (continue it the same way, or use another directory)",
        )
    if parallel_mode and os.path.exists(state):
        raise errors.InvalidArgumentError(
            "workers",
            workers,
            f"1 and no storage: {state} holds a study run in one process (continue it the "
            "same way, or use another directory)",
        )


def _objective_spec_type() -> type:
    from pocketflow_tf.hp_optimizers import parallel

    return parallel.ObjectiveSpec


def _parse_result(out: Any) -> tuple[float | None, dict[str, Any]]:
    """(value, metrics) of an objective's return; value ``None`` marks a failed trial."""
    metrics: dict[str, Any] = {}
    if isinstance(out, Mapping):
        if "value" not in out:
            raise TypeError(f"the objective returned a dict without 'value': {out!r}")
        metrics = {str(k): _jsonable(v) for k, v in out.items() if k != "value"}
        out = out["value"]
    if out is None:
        return None, metrics
    if not _is_number(out):
        raise TypeError(f"the objective must return a number or a dict, not {out!r}")
    value = float(out)
    return (value if math.isfinite(value) else None), metrics


def _jsonable(value: Any) -> Any:
    # Metrics land in the state file: NumPy values become plain ones, NaN/inf become None
    # (Python's json would write NaN, which is not JSON), and anything else must be JSON.
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is not None and not isinstance(value, str | int | float | bool):
        raise TypeError(f"metric values must be JSON data, not {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _is_finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(float(value))


def _short(value: Any, width: int = 12) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# Shared with the parallel workers (hp_optimizers.parallel), which record trials the same way.
parse_result = _parse_result
short = _short
