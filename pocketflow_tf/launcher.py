"""Starts N local worker processes of one command and watches them.

``tf`` backend: one process per worker, each with its ``TF_CONFIG`` (loopback ports
chosen free), its output prefixed with ``[worker i]`` (the chief's is passed through as
is). ``horovod`` backend: ``horovodrun --gloo`` on loopback, which starts the ranks.

A worker that dies (non-zero exit or a signal) ends the job: the others are stopped
after ``grace_s`` seconds (collectives would otherwise wait for the dead peer forever),
and the launcher names the worker, how it ended, and how to resume: rerunning the same
command continues from the last finished epoch (the learner's per-epoch backup).

Example:
    >>> import sys
    >>> launch([sys.executable, "-c", "print('hi')"], workers=2, backend="tf")  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from pocketflow_tf import errors

#: Backends the launcher starts, in the order ``auto`` prefers them.
BACKENDS = ("horovod", "tf")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on loopback right now.

    Example:
        >>> ports = free_ports(2)
        >>> len(set(ports)) == 2 and all(p > 0 for p in ports)
        True
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a loopback cluster.

    Example:
        >>> json.loads(tf_config([1000, 1001], 1))["task"]
        {'type': 'worker', 'index': 1}
    """
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def horovod_available() -> bool:
    """Whether ``horovodrun`` and Horovod's TensorFlow binding are installed here."""
    import importlib.util

    return shutil.which("horovodrun") is not None and (
        importlib.util.find_spec("horovod") is not None
    )


def resolve_backend(backend: str) -> str:
    """``auto`` -> Horovod where it is installed, else ``tf``; checks the name.

    Example:
        >>> resolve_backend("mpi")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `backend`: 'mpi'. Accepted: one of ('auto', 'horovod', 'tf').
    """
    if backend not in ("auto", *BACKENDS):
        raise errors.InvalidArgumentError("backend", backend, f"one of {('auto', *BACKENDS)}")
    if backend == "auto":
        return "horovod" if horovod_available() else "tf"
    if backend == "horovod" and not horovod_available():
        raise errors.InvalidArgumentError(
            "backend",
            backend,
            "'tf' here: Horovod is not installed in this environment (it builds only "
            "against TensorFlow <= 2.15; tools/horovod_lane.sh prepares that stack)",
        )
    return backend


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, b""):
        out.write(prefix + line.decode(errors="replace"))
        out.flush()
    stream.close()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.2)
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            p.send_signal(sig)
        end = time.monotonic() + wait_s
        while time.monotonic() < end and any(p.poll() is None for p in alive):
            time.sleep(0.1)


def launch_tf(
    command: Sequence[str],
    workers: int,
    *,
    grace_s: float = 15.0,
    env: dict[str, str] | None = None,
    out=None,
) -> int:
    """Runs ``command`` as ``workers`` ``tf.distribute`` workers on loopback.

    Args:
        command: The program and its arguments (e.g. a run script).
        workers: Number of worker processes (>= 1).
        grace_s: After one worker fails, how long the others may take to end by
            themselves before they are stopped.
        env: Base environment (default: this process's).
        out: Where the workers' output goes (default: stdout).

    Returns:
        0 when every worker succeeded, else the first failing worker's status (1 for a
        worker killed by a signal).

    Example:
        >>> import sys
        >>> launch_tf([sys.executable, "-c", "pass"], 1)
        0
    """
    if not isinstance(workers, int) or workers < 1:
        raise errors.InvalidArgumentError("workers", workers, "an integer >= 1")
    out = out or sys.stdout
    base = dict(os.environ if env is None else env)
    ports = free_ports(workers)
    procs, pumps = [], []
    for i in range(workers):
        wenv = dict(base, TF_CONFIG=tf_config(ports, i), PFTF_WORKER_INDEX=str(i))
        if workers == 1:
            wenv.pop("TF_CONFIG")
        p = subprocess.Popen(
            list(command), env=wenv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        t = threading.Thread(
            target=_pump, args=(p.stdout, "" if i == 0 else f"[worker {i}] ", out), daemon=True
        )
        t.start()
        procs.append(p)
        pumps.append(t)
    failed = None
    start = time.monotonic()
    try:
        while failed is None:
            codes = [p.poll() for p in procs]  # every one: a dead worker must be seen at once
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if all(c is not None for c in codes):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(procs, 0.0)
        raise
    if failed is not None:
        code = procs[failed].returncode
        others = [p for j, p in enumerate(procs) if j != failed]
        out.write(
            f"[launcher] worker {failed} (pid {procs[failed].pid}) {_describe_exit(code)} after "
            f"{time.monotonic() - start:.0f} s; stopping the other {len(others)} worker(s) "
            f"within {grace_s:.0f} s. Rerun the same command to resume from the last "
            "finished epoch.\n"
        )
        out.flush()
        _stop(others, grace_s)
    for t in pumps:
        t.join(timeout=5.0)
    if failed is None:
        return 0
    code = procs[failed].returncode
    return code if code > 0 else 1


def horovod_command(command: Sequence[str], workers: int) -> list[str]:
    """The ``horovodrun`` command line running ``command`` on ``workers`` local ranks.

    Example:
        >>> horovod_command(["python", "run.py"], 2)[:6]
        ['horovodrun', '-np', '2', '-H', 'localhost:2', '--gloo']
    """
    return [
        "horovodrun",
        "-np",
        str(workers),
        "-H",
        f"localhost:{workers}",
        "--gloo",
        "--network-interface",
        "lo",
        *command,
    ]


def launch_horovod(command: Sequence[str], workers: int, *, out=None) -> int:
    """Runs ``command`` on ``workers`` Horovod ranks through ``horovodrun --gloo``.

    ``horovodrun`` itself ends every rank when one fails; this adds how to resume.

    Args:
        command: The program and its arguments.
        workers: Number of ranks (>= 1).
        out: Where the ranks' output goes (default: stdout).

    Returns:
        ``horovodrun``'s exit status.

    Example:
        >>> launch_horovod(["python", "run.py"], 0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `workers`: 0. Accepted: an integer >= 1.
    """
    if not isinstance(workers, int) or workers < 1:
        raise errors.InvalidArgumentError("workers", workers, "an integer >= 1")
    out = out or sys.stdout
    full = horovod_command(command, workers)
    out.write(f"[launcher] {' '.join(full)}\n")
    start = time.monotonic()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pump = threading.Thread(target=_pump, args=(proc.stdout, "", out), daemon=True)
    pump.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        _stop([proc], 0.0)
        raise
    pump.join(timeout=5.0)
    if code != 0:
        out.write(
            f"[launcher] horovodrun {_describe_exit(code)} after {time.monotonic() - start:.0f} s "
            "(a rank failed: see its output above; horovodrun stopped the others). Rerun the "
            "same command to resume from the last finished epoch.\n"
        )
        out.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pocketflow_tf.launcher -n 2 [--backend tf] -- cmd ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m pocketflow_tf.launcher", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-n", "--workers", type=int, default=1)
    parser.add_argument("--backend", default="auto", help="auto, horovod or tf")
    parser.add_argument("--grace_s", type=float, default=15.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    if args.workers < 1:
        parser.error(f"-n/--workers: {args.workers}; accepted: an integer >= 1")
    try:
        backend = resolve_backend(args.backend)
    except errors.InvalidArgumentError as exc:
        parser.error(str(exc))
    if backend == "horovod":
        return launch_horovod(command, args.workers)
    return launch_tf(command, args.workers, grace_s=args.grace_s)


if __name__ == "__main__":
    sys.exit(main())
