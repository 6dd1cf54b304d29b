"""Parallel trials (hp_optimizers.parallel): real worker processes sharing one SQLite study.

The objective (tests/parallel_objectives.py) sleeps instead of computing, so two workers on
the 2 shared cores run two trials at once, and logs every start and finish: the log, not the
study's own records, shows which trial ran where and how often.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import pocketflow_tf.hp_optimizers  # noqa: F401  (registers the optimisers)
from pocketflow_tf import errors
from pocketflow_tf.hp_optimizers import parallel, search
from pocketflow_tf.hp_optimizers import space as space_lib

SPACE = space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)])
FAST = {"heartbeat_s": 1, "grace_s": 2}


def _spec(log_dir, **kwargs):
    return parallel.ObjectiveSpec(
        "tests.parallel_objectives:make_sleepy", {"log_dir": str(log_dir), **kwargs}
    )


def _events(log_dir):
    """``{"start"|"done": Counter(trial_seed)}`` and the pids that finished trials."""
    counts = {"start": collections.Counter(), "done": collections.Counter()}
    pids = {"start": collections.defaultdict(list), "done": collections.defaultdict(list)}
    with open(os.path.join(log_dir, "log")) as f:
        for line in f:
            event, seed, pid = line.split()
            counts[event][int(seed)] += 1
            pids[event][int(seed)].append(int(pid))
    return counts, pids


def test_two_workers_finish_every_trial_once(tmp_path):
    study = search.Study(
        tmp_path / "s",
        SPACE,
        _spec(tmp_path, sleep_s=0.3, wait_for_peer=True),
        optimizer="tpe",
        optimizer_kwargs={"n_startup_trials": 3},
        max_trials=6,
        workers=2,
        verbose=False,
        **FAST,
    )
    result = study.run()
    assert result.stop_reason == "max_trials"
    assert [t.number for t in result.trials] == list(range(6))
    assert all(t.status == "complete" and t.attempts == 1 for t in result.trials)
    counts, _ = _events(tmp_path)
    seeds = {t.trial_seed for t in result.trials}
    assert counts["done"] == collections.Counter({s: 1 for s in seeds})  # each ran once
    assert len({t.metrics["pid"] for t in result.trials}) == 2  # both processes worked
    best = max(result.trials, key=lambda t: t.value)
    assert result.best.number == best.number and result.elapsed_s > 0
    assert result.pareto_front([("value", "max")]) == [best]
    # Reading the same study again gives the same trials (they live in the storage).
    again = parallel.result(study.storage, "study", str(tmp_path / "s"))
    assert again.trials == result.trials


def test_killed_worker_trial_is_retried_not_lost(tmp_path):
    # The child worker's first trial hangs; the test SIGKILLs that process mid-trial.
    (tmp_path / "kill-me").write_text(str(os.getpid()))  # this process is spared
    victim = tmp_path / "victim.pid"
    killed = []

    def killer():
        deadline = time.monotonic() + 120
        while not victim.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if victim.exists():
            pid, seed = map(int, victim.read_text().split())
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, seed))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = search.Study(
        tmp_path / "s",
        SPACE,
        _spec(tmp_path, sleep_s=0.2, wait_for_peer=True),
        optimizer="random",
        max_trials=5,
        workers=2,
        verbose=False,
        **FAST,
    ).run()
    thread.join(timeout=5)
    assert killed, "no worker took the hanging trial"
    pid, seed = killed[0]
    assert [t.number for t in result.trials] == list(range(5))
    assert all(t.status == "complete" for t in result.trials)  # none lost
    counts, pids = _events(tmp_path)
    assert all(n == 1 for n in counts["done"].values()) and len(counts["done"]) == 5
    assert counts["start"][seed] == 2  # the killed attempt and its retry
    assert pids["done"][seed] == [os.getpid()]  # the retry ran in the surviving worker
    retried = [t for t in result.trials if t.trial_seed == seed]
    assert len(retried) == 1 and retried[0].attempts == 2
    assert all(t.attempts == 1 for t in result.trials if t.trial_seed != seed)


_DIES_AFTER_ASK = """
import os, sys
import pocketflow_tf.hp_optimizers
from pocketflow_tf.hp_optimizers import parallel
parallel.announce = lambda *args: os._exit(9)  # dies between ask and its first heartbeat
parallel.Worker(sys.argv[1], "study", verbose=False).run()
"""


def test_worker_killed_between_ask_and_first_heartbeat_is_retried(tmp_path):
    # optuna fails a running trial only by its last heartbeat; this attempt never had one.
    url = f"sqlite:///{tmp_path}/s.db"
    study = search.Study(
        tmp_path / "s",
        SPACE,
        _spec(tmp_path, sleep_s=0.1),
        optimizer="random",
        max_trials=3,
        storage=url,
        verbose=False,
        **FAST,
    )
    parallel.prepare(study.storage, study.study_name, study.parallel_settings)
    env = parallel.worker_env()
    died = subprocess.run(
        [sys.executable, "-c", _DIES_AFTER_ASK, url], env=env, timeout=120, check=False
    )
    assert died.returncode == 9
    lost = parallel.result(url, "study", str(tmp_path / "s")).trials
    assert [(t.number, t.status) for t in lost] == [(0, "running")]
    t0 = time.monotonic()
    survivor = subprocess.run(  # hung forever, waiting for trial 0, before the fix
        parallel.worker_command(url, "study", "survivor", verbose=False),
        env=env,
        timeout=120,
        check=False,
    )
    assert survivor.returncode == 0
    assert time.monotonic() - t0 >= FAST["grace_s"]  # trial 0 was failed after the grace
    trials = parallel.result(url, "study", str(tmp_path / "s")).trials
    assert [(t.number, t.status) for t in trials] == [(n, "complete") for n in range(3)]
    assert [t.attempts for t in trials] == [2, 1, 1]
    counts, _ = _events(tmp_path)
    assert sorted(counts["done"].values()) == [1, 1, 1] and sum(counts["start"].values()) == 3


@pytest.mark.slow  # about 20 s: two full searches of sleeping trials
def test_two_workers_are_faster_on_a_sleep_bound_objective(tmp_path):
    walls = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        result = search.Study(
            tmp_path / f"w{workers}",
            SPACE,
            _spec(tmp_path / f"w{workers}", sleep_s=0.8),
            optimizer="random",
            max_trials=10,
            workers=workers,
            storage=f"sqlite:///{tmp_path}/w{workers}.db",
            verbose=False,
            **FAST,
        ).run()
        walls[workers] = time.perf_counter() - t0
        assert sum(t.status == "complete" for t in result.trials) == 10
    print(f"wall 1 worker {walls[1]:.1f} s, 2 workers {walls[2]:.1f} s")
    assert walls[2] < 0.85 * walls[1]


def test_bad_inputs_are_refused_before_work(tmp_path):
    spec = _spec(tmp_path)

    def study(**kwargs):
        args = {"optimizer": "random", "max_trials": 2, "verbose": False, **kwargs}
        return search.Study(tmp_path / "s", SPACE, spec, **args)

    for workers in (0, -1, 1.5):
        with pytest.raises(errors.InvalidArgumentError, match="workers"):
            study(workers=workers)
    bad_urls = [
        "journal:/tmp/x.log",  # no heartbeat in optuna 5's journal storage
        "sqlite:///:memory:",
        "sqlite:/relative.db",
        "nothing-like-a-url",
        "sqlite:////sys/study.db",  # a folder nobody can write, root included
        f"sqlite:///{tmp_path}/file.txt/study.db",
    ]
    (tmp_path / "file.txt").write_text("x")
    for url in bad_urls:
        with pytest.raises(errors.InvalidArgumentError, match="storage") as info:
            study(storage=url)
        assert url in str(info.value)
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    with pytest.raises(errors.InvalidArgumentError, match="garbage.db"):
        study(storage=f"sqlite:///{tmp_path}/garbage.db", workers=2)
    with pytest.raises(errors.InvalidArgumentError, match="objective"):
        search.Study(tmp_path / "s", SPACE, lambda p, s: 0.0, max_trials=2, workers=2)
    with pytest.raises(errors.InvalidArgumentError, match="optimizer_kwargs"):
        study(workers=2, optimizer_kwargs={"f": object()})
    assert not (tmp_path / "s").exists()  # nothing was written

    # A storage another study owns, and a study of another configuration.
    url = f"sqlite:///{tmp_path}/shared.db"
    study(storage=url, study_name="first", max_trials=1).run()
    with pytest.raises(errors.InvalidArgumentError, match="second.*'first'"):
        study(storage=url, study_name="second")
    with pytest.raises(errors.InvalidArgumentError, match="seed") as info:
        study(storage=url, study_name="first", seed=3)
    assert "3" in str(info.value) and "0" in str(info.value)
    # The single-process state and the shared one are not mixed in one directory.
    fast = _spec(tmp_path, sleep_s=0.0)
    shared = tmp_path / "shared-dir"
    search.Study(
        shared, SPACE, fast, max_trials=1, storage=f"sqlite:///{shared}/study.db", verbose=False
    ).run()
    with pytest.raises(errors.InvalidArgumentError, match="parallel workers"):
        search.Study(shared, SPACE, fast, max_trials=1)
    single = tmp_path / "single-dir"
    search.Study(single, SPACE, fast, max_trials=1, verbose=False).run()
    with pytest.raises(errors.InvalidArgumentError, match="one process"):
        search.Study(single, SPACE, fast, max_trials=1, workers=2)


def test_auto_refuses_bad_trial_workers_before_work(tmp_path):
    from pocketflow_tf.learners.auto.learner import AutoLearner

    for bad in (0, -2, 1.5):
        with pytest.raises(errors.InvalidArgumentError, match="auto_trial_workers"):
            AutoLearner(auto_target="2x faster", auto_dir=str(tmp_path), auto_trial_workers=bad)
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text("{}")
    with pytest.raises(errors.InvalidArgumentError, match="one process"):
        search.check_mode(tmp_path / "study", 2)


def test_worker_command_line_refuses_an_unknown_study(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    search.Study(
        tmp_path / "s",
        SPACE,
        _spec(tmp_path, sleep_s=0.0),
        max_trials=1,
        storage=url,
        verbose=False,
    ).run()
    proc = subprocess.run(
        parallel.worker_command(url, "nope", "w"),
        env=parallel.worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "'nope'" in proc.stderr and "['study']" in proc.stderr
    # A worker joining a finished study has nothing to do and says so.
    proc = subprocess.run(
        parallel.worker_command(url, "study", "late"),
        env=parallel.worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "done: max_trials" in proc.stdout


@pytest.mark.slow  # about a minute: two processes build, fine-tune and export real trials
def test_auto_search_with_two_trial_workers(tmp_path, monkeypatch):
    import optuna

    from pocketflow_tf import datasets
    from pocketflow_tf.learners.auto import proxy
    from pocketflow_tf.learners.auto.compress import compress
    from tests import tiny_models
    from tests.test_auto import conv_net

    x, y = tiny_models.quadrant_data(300, seed=0, size=16)
    model = conv_net()
    model.compile("adam", keras_loss(), metrics=["acc"])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    data = datasets.DataSplits("quadrants", x, y, x[:50], y[:50], 4)
    url = f"sqlite:///{tmp_path}/auto/study/study.db"
    call = proxy.Proxy.__call__
    waited = []

    def wait_then_call(self, params, trial_seed):
        # This process's first trial waits for the worker process to take one, so that
        # both surely run trials however slowly the worker starts (TF import, models).
        deadline = time.monotonic() + 300
        while not waited and time.monotonic() < deadline:
            with parallel.shared_storage.quiet_optuna():
                trials = optuna.load_study(study_name="study", storage=url).get_trials()
            if sum(t.state == optuna.trial.TrialState.RUNNING for t in trials) >= 2:
                break
            time.sleep(0.5)
        waited.append(True)
        return call(self, params, trial_seed)

    monkeypatch.setattr(proxy.Proxy, "__call__", wait_then_call)
    budget = tiny_models.auto_budget(proxy_steps=10, samples=64, int8_final="ptq")
    result = compress(
        model,
        data,
        "flops<=0.5",
        str(tmp_path / "auto"),
        max_trials=3,
        seed=0,
        trial_workers=2,
        **budget,
    )
    assert not os.path.exists(tmp_path / "auto" / "study" / "study.json")
    rows = result.report["trials"]
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert all(r["status"] in ("complete", "failed") for r in rows)
    assert any(r["status"] == "complete" for r in rows) and os.path.exists(result.tflite_path)
    with parallel.shared_storage.quiet_optuna():
        stored = optuna.load_study(study_name="study", storage=url).get_trials()
    # Only trials a worker ran and told name it: on a loaded machine a worker asking while
    # the other takes the last of max_trials tells its trial as surplus, unrun (seen once).
    ran = [t for t in stored if "trial_seed" in t.user_attrs]
    assert {t.user_attrs.get("worker") for t in ran} == {"worker 0", "worker 1"}
    # Continued without workers, the run is refused before any work.
    with pytest.raises(errors.InvalidArgumentError, match="workers.*parallel workers"):
        compress(model, data, "flops<=0.5", str(tmp_path / "auto"), max_trials=3, seed=0, **budget)


def keras_loss():
    from pocketflow_tf.compat import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_stored_attempts_read_back_as_one_trial_per_number():
    # optuna numbers every attempt; the study numbers trials 0, 1, ... by first attempt.
    import optuna

    state = optuna.trial.TrialState
    dist = {"x": optuna.distributions.FloatDistribution(-1.0, 1.0)}

    def attempt(number, x, value=None, fail=False, retry_of=None, **user_attrs):
        t = optuna.trial.create_trial(
            params={"x": x},
            distributions=dist,
            value=value,
            state=state.FAIL if fail else state.COMPLETE,
            system_attrs={} if retry_of is None else {"failed_trial": retry_of},
            user_attrs=user_attrs,
        )
        t.number = number
        return t

    stored = [
        attempt(0, 0.1, 0.5),
        attempt(1, 0.2, fail=True),  # its worker was killed: no error attribute
        attempt(2, 0.3, 0.7),
        attempt(3, 0.2, 0.6, retry_of=1),  # the retry of trial 1
        attempt(4, 0.4, fail=True, error="TrialFailed: no"),
        attempt(5, 0.9, fail=True, surplus=True),  # asked beyond max_trials
    ]
    rows = parallel.to_study_trials(stored, seed=0)
    assert [(r.number, r.status, r.attempts) for r in rows] == [
        (0, "complete", 1),
        (1, "complete", 2),
        (2, "complete", 1),
        (3, "failed", 1),
    ]
    assert rows[1].params == {"x": 0.2} and rows[3].error == "TrialFailed: no"
    assert [r.trial_seed for r in rows] == [search.trial_seed(0, n) for n in range(4)]
    assert parallel.rank(stored, 4) == 3 and parallel.rank(stored, 6) == 4
    # A stale trial nobody retried (retries used up) reads as failed, saying why.
    lost = parallel.to_study_trials(stored[:2], seed=0)[1]
    assert lost.status == "failed" and "heartbeats" in lost.error


def test_a_parallel_study_resumes_and_reruns_a_trial_cut_by_an_error(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    spec = parallel.ObjectiveSpec(
        "tests.parallel_objectives:make_flaky", {"log_dir": str(tmp_path)}
    )

    def study(max_trials):
        return search.Study(
            tmp_path / "s",
            SPACE,
            spec,
            optimizer="random",
            max_trials=max_trials,
            storage=url,
            verbose=False,
            **FAST,
        )

    first = study(3).run()
    assert [t.number for t in first.trials] == [0, 1, 2]
    (tmp_path / "broken").write_text("")
    with pytest.raises(OSError, match="disk full") as info:
        study(5).run()
    assert "trial 3 " in info.value.__notes__[0]
    (tmp_path / "broken").unlink()
    t0 = time.monotonic()
    again = study(5).run()  # trial 3 is failed by its lost heartbeat, then rerun
    assert time.monotonic() - t0 >= FAST["grace_s"]
    assert again.trials[:3] == first.trials
    assert [(t.number, t.status) for t in again.trials] == [(n, "complete") for n in range(5)]
    assert again.trials[3].attempts == 2 and again.trials[4].attempts == 1
    counts, _ = _events(tmp_path)
    assert counts["start"][again.trials[3].trial_seed] == 2
    assert all(n == 1 for n in counts["done"].values())
    # With the budget spent, a run starts no worker and returns the stored study.
    t0 = time.monotonic()
    spent = search.Study(
        tmp_path / "s",
        SPACE,
        spec,
        optimizer="random",
        max_trials=5,
        workers=3,
        storage=url,
        verbose=False,
        **FAST,
    ).run()
    assert spent.trials == again.trials and spent.stop_reason == "max_trials"
    assert time.monotonic() - t0 < 10
