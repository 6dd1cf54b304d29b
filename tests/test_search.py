"""The resumable search loop: budgets, resume, locking, failures, and SIGKILLs at random.

The optimiser here is a tiny seeded hill-climber registered under a test-only name, so the
tests depend on the ask/tell contract only. Its proposals depend on the results told so far,
so a lost, duplicated or changed result changes every later proposal: comparing params with
an uninterrupted run checks the whole history, not just the trial count.

Child processes (the lock, crash and SIGKILL tests) run a script built from this module's
optimiser and objective source, so both sides run the same code.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pocketflow_tf import errors
from pocketflow_tf.hp_optimizers import base, search
from pocketflow_tf.hp_optimizers import space as space_lib

SPACE = space_lib.SearchSpace([space_lib.Float("x", -2.0, 2.0), space_lib.Int("k", 0, 3)])


@base.register
class Hill(base.Optimizer):
    """Even trials: uniform; odd trials: a step from the best so far (history-dependent)."""

    name = "test-search-hill"

    def _propose(self, number, rng):
        best = self.best()
        if best is None or number % 2 == 0:
            return {"x": float(rng.uniform(-2.0, 2.0)), "k": int(rng.integers(0, 4))}
        x = float(np.clip(best.params["x"] + rng.normal(0.0, 0.3), -2.0, 2.0))
        return {"x": x, "k": best.params["k"]}


@base.register
class OtherHill(Hill):
    name = "test-search-other"


def value_of(params):
    """The objective's value, recomputable from the params; k == 0 is 'infeasible'."""
    if params["k"] == 0:
        raise ValueError(f"k=0 is infeasible (x={params['x']})")
    return -((params["x"] - 0.7) ** 2) + 0.1 * params["k"]


def make_study(directory, objective=None, **kwargs):
    kwargs.setdefault("optimizer", Hill.name)
    kwargs.setdefault("verbose", False)
    if objective is None:

        def objective(params, trial_seed):
            return value_of(params)

    return search.Study(directory, SPACE, objective, **kwargs)


def load_state(directory):
    """The state file, parsed strictly (NaN/inf are not JSON)."""

    def reject(constant):
        raise AssertionError(f"non-JSON constant {constant} in the state")

    with open(os.path.join(directory, search.STATE_FILE)) as f:
        return json.loads(f.read(), parse_constant=reject)


def params_of(trials):
    return [(t.number, t.params, t.trial_seed) for t in trials]


# -- budgets and results ---------------------------------------------------------------------


def test_runs_to_max_trials_and_records_everything(tmp_path):
    result = make_study(tmp_path, max_trials=10).run()
    assert result.stop_reason == "max_trials"
    assert [t.number for t in result.trials] == list(range(10))
    assert {t.status for t in result.trials} <= {"complete", "failed"}
    for t in result.trials:
        assert t.attempts == 1 and t.wall_s >= 0 and t.ended >= t.started
        assert t.trial_seed == search.trial_seed(0, t.number)
        if t.params["k"] == 0:
            assert t.status == "failed" and "k=0 is infeasible" in t.error
        else:
            assert t.status == "complete" and t.value == value_of(t.params)
    complete = [t for t in result.trials if t.status == "complete"]
    assert result.best is max(complete, key=lambda t: t.value)

    state = load_state(tmp_path)
    assert state["stop_reason"] == "max_trials"
    assert state["config"] == {
        "space": SPACE.to_config(),
        "optimizer": Hill.name,
        "seed": 0,
        "direction": "maximize",
    }
    assert [t["status"] for t in state["trials"]] == [t.status for t in result.trials]
    told = {r["number"]: r["value"] for r in state["optimizer_state"]["history"]}
    assert told == {t.number: t.value for t in result.trials}  # failed ones told None
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp files left


def test_minimize_metrics_and_progress_lines(tmp_path, capsys):
    def objective(params, trial_seed):
        return {"value": params["x"] ** 2, "bytes": np.int64(10 * params["k"]), "bad": math.nan}

    result = make_study(tmp_path, objective, max_trials=4, direction="minimize", verbose=True).run()
    assert result.best is min(result.trials, key=lambda t: t.value)
    assert result.trials[0].metrics == {"bytes": 10 * result.trials[0].params["k"], "bad": None}
    assert load_state(tmp_path)["trials"][0]["metrics"]["bad"] is None
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial")]
    assert len(lines) == 4
    assert "value=" in lines[-1] and f"best={result.best.value:.4g}" in lines[-1]


class FakeClock:
    """A ``time`` module for search.py whose monotonic clock moves only when told to.

    The wall-clock budget then counts trials exactly, however busy the machine is.
    """

    def __init__(self):
        self.time, self.perf_counter = time.time, time.perf_counter  # left real
        self.now = 1000.0

    def monotonic(self):
        return self.now


def test_max_wall_s_stops_and_is_cumulative(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(search, "time", clock)

    def slow(params, trial_seed):
        clock.now += 0.25  # each trial "takes" 0.25 s (exact in binary floating point)
        return 1.0

    # Checked before each trial: 0, 0.25, 0.5, 0.75 < 0.9 start a trial; 1.0 stops.
    result = make_study(tmp_path, slow, max_wall_s=0.9).run()
    assert result.stop_reason == "max_wall_s"
    assert len(result.trials) == 4
    assert load_state(tmp_path)["elapsed_s"] == 1.0
    clock.now += 100.0  # time between runs is not study time
    again = make_study(tmp_path, slow, max_wall_s=0.9).run()  # budget already spent
    assert again.stop_reason == "max_wall_s" and len(again.trials) == 4
    assert load_state(tmp_path)["elapsed_s"] == 1.0
    # A larger budget continues from the 1.0 s already spent: 1.0, 1.25 < 1.4; 1.5 stops.
    more = make_study(tmp_path, slow, max_wall_s=1.4).run()
    assert more.stop_reason == "max_wall_s"
    assert [t.number for t in more.trials] == list(range(6))
    assert load_state(tmp_path)["elapsed_s"] == 1.5


def test_bad_arguments(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="max_trials/max_wall_s"):
        make_study(tmp_path)
    with pytest.raises(errors.InvalidArgumentError, match="optimizer"):
        make_study(tmp_path, optimizer="no-such-optimizer", max_trials=1)
    with pytest.raises(errors.InvalidArgumentError, match="max_trials"):
        make_study(tmp_path, max_trials=0)
    with pytest.raises(errors.InvalidArgumentError, match="max_wall_s"):
        make_study(tmp_path, max_wall_s=math.inf)
    with pytest.raises(TypeError, match="number or a dict"):
        make_study(tmp_path, lambda p, s: "high", max_trials=1).run()


# -- resume ----------------------------------------------------------------------------------


def test_resume_continues_the_same_sequence(tmp_path):
    first = make_study(tmp_path / "a", max_trials=3).run()
    assert len(first.trials) == 3
    resumed = make_study(tmp_path / "a", max_trials=8).run()
    reference = make_study(tmp_path / "b", max_trials=8).run()
    assert resumed.trials[:3] == first.trials  # finished trials are kept as they were
    assert params_of(resumed.trials) == params_of(reference.trials)
    assert [t.value for t in resumed.trials] == [t.value for t in reference.trials]
    assert all(t.attempts == 1 for t in resumed.trials)


@pytest.mark.parametrize(
    "field, kwargs, space",
    [
        ("seed", {"seed": 1}, SPACE),
        ("direction", {"direction": "minimize"}, SPACE),
        ("optimizer", {"optimizer": OtherHill.name}, SPACE),
        ("space", {}, space_lib.SearchSpace([space_lib.Float("x", -1.0, 2.0)])),
    ],
)
def test_config_mismatch_names_the_field(tmp_path, field, kwargs, space):
    make_study(tmp_path, max_trials=1).run()
    before = (tmp_path / search.STATE_FILE).read_text()
    with pytest.raises(errors.InvalidArgumentError) as info:
        search.Study(
            tmp_path, space, lambda p, s: 0.0, max_trials=2, **{"optimizer": Hill.name, **kwargs}
        )
    assert info.value.name == field
    stored = load_state(tmp_path)["config"][field]
    assert repr(stored)[:30] in str(info.value)
    assert str(tmp_path) in str(info.value)
    assert (tmp_path / search.STATE_FILE).read_text() == before  # never overwritten


# -- failures --------------------------------------------------------------------------------


class _Flaky:
    """Returns/raises the scripted outcome of each call in turn, then 1.0."""

    def __init__(self, outcomes):
        self.outcomes, self.calls = list(outcomes), []

    def __call__(self, params, trial_seed):
        self.calls.append((dict(params), trial_seed))
        out = self.outcomes.pop(0) if self.outcomes else 1.0
        if isinstance(out, BaseException):
            raise out
        return out


def test_trial_failures_are_recorded_and_the_search_goes_on(tmp_path):
    objective = _Flaky(
        [
            math.nan,
            ValueError("bad lr"),
            None,
            {"value": math.inf},
            ZeroDivisionError("empty batch"),
            search.TrialFailed("over budget"),
            errors.DataError("no samples"),
            2.0,
        ]
    )
    result = make_study(tmp_path, objective, max_trials=9, max_consecutive_failures=None).run()
    assert [t.status for t in result.trials] == ["failed"] * 7 + ["complete"] * 2
    errs = [t.error for t in result.trials[:7]]
    assert "ValueError: bad lr" in errs and "TrialFailed: over budget" in errs
    assert "ZeroDivisionError: empty batch" in errs and "DataError: no samples" in errs
    assert errs.count("the objective returned None, NaN or inf") == 3
    assert result.best.number == 7 and result.best.value == 2.0
    history = load_state(tmp_path)["optimizer_state"]["history"]
    assert [h["value"] for h in history] == [None] * 7 + [2.0, 1.0]


def test_consecutive_failure_limit(tmp_path):
    objective = _Flaky([1.0] + [ValueError("diverged")] * 10)
    result = make_study(tmp_path, objective, max_trials=20, max_consecutive_failures=3).run()
    assert result.stop_reason == "max_consecutive_failures"
    assert [t.status for t in result.trials] == ["complete"] + ["failed"] * 3


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt(), MemoryError()])
def test_environment_errors_propagate_and_the_trial_is_retried(tmp_path, error):
    objective = _Flaky([1.0, 1.0, error])
    with pytest.raises(type(error)) as info:
        make_study(tmp_path, objective, max_trials=5).run()
    assert "trial 2 " in info.value.__notes__[0] and str(tmp_path) in info.value.__notes__[0]
    state = load_state(tmp_path)
    assert [t["status"] for t in state["trials"]] == ["complete", "complete", "running"]
    assert state["trials"][2]["error"].startswith(f"interrupted by {type(error).__name__}")
    assert (tmp_path / search.LOCK_FILE).read_text() == ""  # released, pid cleared

    result = make_study(tmp_path, objective, max_trials=5).run()
    assert objective.calls[3] == objective.calls[2]  # same params and seed, not re-asked
    assert [t.attempts for t in result.trials] == [1, 1, 2, 1, 1]
    assert [t.status for t in result.trials] == ["complete"] * 5 and result.trials[2].error is None
    reference = make_study(tmp_path / "ref", _Flaky([]), max_trials=5).run()
    assert params_of(result.trials) == params_of(reference.trials)


# -- child processes: lock, hard crash, SIGKILL ----------------------------------------------

# The child imports only what a study needs (not pytest: start-up time matters when a test
# starts a dozen processes); it gets the optimiser and objective as source from this module.
CHILD = """
import os, sys, time
import numpy as np
from pocketflow_tf.hp_optimizers import base, search
from pocketflow_tf.hp_optimizers import space as space_lib

SPACE = space_lib.SearchSpace.from_config({space!r})
{hill}
{value_of}
directory, log_path, n_trials, sleep_s, crash_at, hold = sys.argv[1:7]
n_trials, sleep_s, crash_at = int(n_trials), float(sleep_s), int(crash_at)
numbers = {{search.trial_seed(0, n): n for n in range(n_trials)}}

def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\\n")

def objective(params, trial_seed):
    n = numbers[trial_seed]
    log(f"start {{n}}")
    if n == crash_at:
        os._exit(3)  # a hard crash: no exception handler, no final write
    while hold and not os.path.exists(hold):
        time.sleep(0.01)
    time.sleep(sleep_s)
    try:
        value = value_of(params)
    except ValueError:
        log(f"end {{n}} failed")
        raise
    log(f"end {{n}}")
    return value

search.Study(directory, SPACE, objective, optimizer=Hill.name, max_trials=n_trials,
             max_consecutive_failures=None, verbose=False).run()
"""


def child_command(tmp_path, directory, log, n_trials, sleep_s=0.0, crash_at=-1, hold=""):
    script = tmp_path / "child.py"
    if not script.exists():
        source = CHILD.format(
            space=SPACE.to_config(),
            hill=inspect.getsource(Hill),
            value_of=inspect.getsource(value_of),
        )
        script.write_text(source)
    args = [directory, log, n_trials, sleep_s, crash_at, hold]
    return [sys.executable, str(script), *map(str, args)]


def wait_for(predicate, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)
    return True


def read_log(path):
    return path.read_text().splitlines() if path.exists() else []


def test_second_process_gets_a_clear_lock_error(tmp_path):
    log, hold = tmp_path / "log", tmp_path / "release"
    cmd = child_command(tmp_path, tmp_path / "s", log, 2, hold=hold)
    proc = subprocess.Popen(cmd)
    try:
        assert wait_for(lambda: "start 0" in read_log(log), proc=proc)
        with pytest.raises(search.StudyLockedError) as info:
            make_study(tmp_path / "s", max_trials=2).run()
        assert str(tmp_path / "s") in str(info.value) and f"pid {proc.pid}" in str(info.value)
        hold.touch()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert len(make_study(tmp_path / "s", max_trials=2).run().trials) == 2  # lock free again


def test_hard_crash_leaves_a_running_trial_that_is_rerun(tmp_path):
    log = tmp_path / "log"
    proc = subprocess.run(child_command(tmp_path, tmp_path / "s", log, 6, crash_at=3))
    assert proc.returncode == 3
    state = load_state(tmp_path / "s")
    running = state["trials"][3]
    assert running["status"] == "running" and running["attempts"] == 1
    assert [p["number"] for p in state["optimizer_state"]["pending"]] == [3]

    seen = []

    def objective(params, trial_seed):
        seen.append((params, trial_seed))
        return value_of(params)

    result = make_study(tmp_path / "s", objective, max_trials=6).run()
    assert seen[0] == (running["params"], running["trial_seed"])
    assert result.trials[3].attempts == 2 and result.trials[3].status != "running"
    reference = make_study(tmp_path / "ref", max_trials=6).run()
    assert params_of(result.trials) == params_of(reference.trials)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path):
    """Kill a running study again and again, then check it matches an uninterrupted run."""
    # No machine can finish the study inside the kill schedule, so every run is killed and
    # the kill count is exact: a run killed after a random delay (< 0.8 s) finishes at most
    # 5 trials of 0.15 s, one killed after an "end" line at most 1 (its next trial is 0.15 s
    # away, the kill at most 4 ms), one killed after a "start" line none; 4 x 5 + 4 x 1 + 0
    # = 24 < 30 trials. (The count used to depend on the machine's speed.)
    n_trials, sleep_s, n_kills = 30, 0.15, 12
    t_start = time.monotonic()
    ref_log = tmp_path / "ref.log"
    subprocess.run(
        child_command(tmp_path, tmp_path / "ref", ref_log, n_trials, sleep_s), check=True
    )
    reference = load_state(tmp_path / "ref")

    directory, log = tmp_path / "killed", tmp_path / "killed.log"
    cmd = child_command(tmp_path, directory, log, n_trials, sleep_s)
    rng = random.Random(20240607)
    kills, torn, modes = 0, 0, []
    for i in range(n_kills):
        n_lines = len(read_log(log))
        proc = subprocess.Popen(cmd)
        # Kill modes: at a random instant (often during start-up or a trial), or a few ms
        # after a trial's "end"/"start" line - that is, while the state is being written.
        mode = ("delay", "after_end", "after_start")[i % 3]
        if mode == "delay":
            time.sleep(rng.uniform(0.0, 0.8))
            alive = proc.poll() is None
        else:
            word = mode.split("_")[1]
            alive = wait_for(
                lambda w=word, n=n_lines: any(x.startswith(w) for x in read_log(log)[n:]),
                proc=proc,
            )
            time.sleep(rng.uniform(0.0, 0.004))
            alive = alive and proc.poll() is None
        assert alive, f"run {i} ({mode}) finished the study before its kill"
        proc.send_signal(signal.SIGKILL)
        kills += 1
        modes.append(mode)
        proc.wait()
        # A temporary state file left behind means the kill cut an atomic write.
        left = os.listdir(directory) if directory.exists() else []
        torn += any(n.startswith(f".{search.STATE_FILE}.") for n in left)
    final = subprocess.run(cmd, timeout=60)
    assert final.returncode == 0
    runtime = time.monotonic() - t_start

    state = load_state(directory)
    trials, ref_trials = state["trials"], reference["trials"]
    assert [t["number"] for t in trials] == list(range(n_trials))
    assert all(t["status"] in ("complete", "failed") for t in trials)
    for t, ref in zip(trials, ref_trials, strict=True):
        assert (t["params"], t["trial_seed"], t["status"]) == (
            ref["params"],
            ref["trial_seed"],
            ref["status"],
        )
        if t["status"] == "complete":
            assert t["value"] == value_of(t["params"])
    assert any(t["status"] == "failed" for t in trials)  # the failure path was killed too
    assert state["optimizer_state"]["pending"] == []
    assert [h["number"] for h in state["optimizer_state"]["history"]] == list(range(n_trials))
    assert not [n for n in os.listdir(directory) if n.startswith(".")]

    # The log: trials start in order (a finished trial is never run again), and a trial was
    # started at most as many times as the state counts attempts (attempt then start).
    starts = [int(x.split()[1]) for x in read_log(log) if x.startswith("start")]
    assert starts == sorted(starts) and set(starts) == set(range(n_trials))
    for t in trials:
        assert 1 <= starts.count(t["number"]) <= t["attempts"]
    # Results lost between the objective's end and the state write, then recomputed.
    lines = read_log(log)
    lost = sum(
        1
        for i, x in enumerate(lines)
        if x.startswith("end") and f"start {x.split()[1]}" in lines[i + 1 :]
    )
    print(
        f"\nSIGKILL test: {kills} kills ({', '.join(modes)}), {n_trials} trials, "
        f"{sum(t['attempts'] for t in trials)} attempts, {lost} finished results lost to a "
        f"kill and rerun, {torn} kills inside a state write, {runtime:.1f} s"
    )
    assert kills == n_kills


# -- Pareto front ----------------------------------------------------------------------------


def test_pareto_front_on_a_hand_made_set():
    def trial(n, acc, ms, status="complete", **metrics):
        return search.StudyTrial(n, {}, 0, status, acc, {"latency_ms": ms, **metrics})

    trials = [
        trial(0, 0.90, 3.0),  # front
        trial(1, 0.92, 5.0),  # front (most accurate)
        trial(2, 0.89, 4.0),  # dominated by 0
        trial(3, 0.80, 1.0),  # front (fastest)
        trial(4, 0.90, 3.0),  # equal to 0: kept
        trial(5, 0.85, 3.0),  # dominated by 0 (equal latency, worse accuracy)
        trial(6, 0.99, 0.5, status="failed"),  # not complete: ignored
        search.StudyTrial(7, {}, 0, "complete", 0.95, {}),  # no latency: ignored
        trial(8, 0.95, math.nan),  # not comparable: ignored
    ]
    front = search.pareto_front(trials, [("value", "max"), ("latency_ms", "min")])
    assert [t.number for t in front] == [0, 1, 3, 4]
    assert [t.number for t in search.pareto_front(trials, [("value", "max")])] == [7, 8]
    assert [t.number for t in search.pareto_front(trials, [("latency_ms", "min")])] == [3]
    assert search.pareto_front([], [("value", "max")]) == []
    with pytest.raises(errors.InvalidArgumentError, match="'max' or 'min'"):
        search.pareto_front(trials, [("value", "up")])
