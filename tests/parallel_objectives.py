"""Objectives of the parallel-trial tests, importable by worker processes.

``sleepy`` sleeps (the machine has 2 shared cores: sleep, not CPU, shows parallelism) and
records each start and finish in ``<log_dir>/log`` (one ``O_APPEND`` line per event, atomic
for lines this short). When ``<log_dir>/kill-me`` exists, the first trial run by a process
other than the one named in it claims the file (an atomic rename) and hangs, writing its pid
to ``victim.pid`` so that the test can SIGKILL it.
"""

from __future__ import annotations

import os
import time

from pocketflow_tf.hp_optimizers import search


def _log(log_dir: str, line: str) -> None:
    fd = os.open(os.path.join(log_dir, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _peer_started(log_dir: str) -> bool:
    with open(os.path.join(log_dir, "log")) as f:
        return any(line.split()[2] != str(os.getpid()) for line in f if line.startswith("start"))


def make_sleepy(log_dir: str, sleep_s: float = 0.5, wait_for_peer: bool = False):
    """The objective factory: ``value = -(x - 0.3) ** 2`` after ``sleep_s`` seconds.

    With ``wait_for_peer`` a trial first waits (60 s at most) until another process has
    started a trial, so that every worker surely takes part however slowly it starts.
    """

    def sleepy(params, trial_seed):
        _log(log_dir, f"start {trial_seed} {os.getpid()}")
        deadline = time.monotonic() + 60
        while wait_for_peer and not _peer_started(log_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        marker = os.path.join(log_dir, "kill-me")
        if os.path.exists(marker):
            with open(marker) as f:
                spared = int(f.read().strip() or 0)
            claimed = os.path.join(log_dir, "kill-me.claimed")
            if os.getpid() != spared:
                try:
                    os.rename(marker, claimed)  # one process wins
                except FileNotFoundError:
                    pass
                else:
                    with open(os.path.join(log_dir, "victim.tmp"), "w") as f:
                        f.write(f"{os.getpid()} {trial_seed}\n")
                    os.rename(
                        os.path.join(log_dir, "victim.tmp"), os.path.join(log_dir, "victim.pid")
                    )
                    time.sleep(600)  # killed by the test long before
        time.sleep(sleep_s)
        if params.get("fail"):
            raise search.TrialFailed("asked to fail")
        _log(log_dir, f"done {trial_seed} {os.getpid()}")
        return {"value": -((params["x"] - 0.3) ** 2), "pid": os.getpid()}

    return sleepy


def make_flaky(log_dir: str):
    """Raises ``OSError`` (an environment error, not a trial error) while
    ``<log_dir>/broken`` exists; returns ``x`` otherwise."""

    def flaky(params, trial_seed):
        _log(log_dir, f"start {trial_seed} {os.getpid()}")
        if os.path.exists(os.path.join(log_dir, "broken")):
            raise OSError("disk full")
        _log(log_dir, f"done {trial_seed} {os.getpid()}")
        return params["x"]

    return flaky
