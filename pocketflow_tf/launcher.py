"""Starts the worker processes of one command, on this host or several, and watches them.

``tf`` backend: one process per worker, each with its ``TF_CONFIG`` (loopback ports
chosen free), its output prefixed with ``[worker i]`` (the chief's is passed through as
is). ``horovod`` backend: ``horovodrun --gloo`` on loopback, which starts the ranks.
``--hosts h1:2,h2:2`` (:func:`launch_hosts`, :func:`launch_horovod_hosts`): workers on
several hosts, every check made before any starts (:mod:`pocketflow_tf.cluster`); with
``--this-host-index i`` the launcher starts host ``i``'s workers only, which is how a
person or a scheduler starts a cluster without ssh.

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
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from pocketflow_tf import cluster, errors

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
    base = dict(os.environ if env is None else env)
    if workers == 1:
        base.pop("TF_CONFIG", None)  # one worker trains alone, whatever the caller had set
    ports = free_ports(workers)
    starts = []
    for i in range(workers):
        wenv = {"TF_CONFIG": tf_config(ports, i)} if workers > 1 else {}
        wenv["PFTF_WORKER_INDEX"] = str(i)
        starts.append((list(command), wenv, "" if i == 0 else f"[worker {i}] "))
    return run_processes(starts, grace_s=grace_s, env=base, out=out)


def run_processes(
    starts: Sequence[tuple[Sequence[str], dict[str, str], str]],
    *,
    grace_s: float = 15.0,
    env: dict[str, str] | None = None,
    out=None,
    what: str = "worker",
) -> int:
    """Starts processes, pumps their output with a prefix each, and ends them all when one
    fails.

    Args:
        starts: ``(argv, extra environment, output prefix)`` of each process; the first
            one's failure is reported as ``{what} 0`` and so on.
        grace_s: After one process fails, how long the others may take to end by
            themselves before they are stopped.
        env: Base environment (default: this process's).
        out: Where the output goes (default: stdout).
        what: What a process is called in the launcher's messages.

    Returns:
        0 when every process succeeded, else the first failing one's status (1 for a
        process killed by a signal).

    Example:
        >>> import sys
        >>> run_processes([([sys.executable, "-c", "pass"], {}, "")])
        0
    """
    out = out or sys.stdout
    base = dict(os.environ if env is None else env)
    procs, pumps = [], []
    for argv, extra, prefix in starts:
        p = subprocess.Popen(
            list(argv), env=dict(base, **extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        t = threading.Thread(target=_pump, args=(p.stdout, prefix, out), daemon=True)
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
            f"[launcher] {what} {failed} (pid {procs[failed].pid}) {_describe_exit(code)} after "
            f"{time.monotonic() - start:.0f} s; stopping the other {len(others)} {what}(s) "
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


def free_port_range(slots: int, attempts: int = 50) -> int:
    """A first port ``p`` with ``p`` .. ``p + slots - 1`` all free here right now.

    Example:
        >>> p = free_port_range(3)
        >>> 1024 <= p < 65535
        True
    """
    for _ in range(attempts):
        base = free_ports(1)[0]
        if base + slots - 1 > 65535:
            continue
        try:
            for port in range(base, base + slots):
                cluster.check_port_free("127.0.0.1", port)
        except errors.InvalidArgumentError:
            continue
        return base
    raise RuntimeError(f"no {slots} consecutive free ports found in {attempts} attempts")


def host_command(
    command: Sequence[str], hosts_spec: str, index: int, ports: Sequence[int]
) -> list[str]:
    """The command that starts host ``index``'s workers on that host (by hand, by a
    scheduler or over ssh): this launcher with ``--this-host-index``, the same host list
    and ports as every other host's.

    Example:
        >>> host_command(["python", "run.py"], "h1:2,h2:2", 1, [23456, 23456])[3:9]
        ['--hosts', 'h1:2,h2:2', '--port', '23456', '--this-host-index', '1']
    """
    port_spec = str(ports[0]) if len(set(ports)) == 1 else ",".join(map(str, ports))
    return [
        sys.executable,
        "-m",
        "pocketflow_tf.launcher",
        "--hosts",
        hosts_spec,
        "--port",
        port_spec,
        "--this-host-index",
        str(index),
        "--backend",
        "tf",
        "--",
        *command,
    ]


def launch_hosts(
    command: Sequence[str],
    hosts_spec: str,
    *,
    port: str | int | None = None,
    this_host_index: int | None = None,
    ssh: bool = False,
    print_env: bool = False,
    connect_timeout_s: float = cluster.DEFAULT_CONNECT_TIMEOUT_S,
    grace_s: float = 15.0,
    env: dict[str, str] | None = None,
    out=None,
) -> int:
    """Runs ``command`` as ``tf.distribute`` workers on several hosts (``tf`` backend).

    Every check runs before any process starts: the host list (:func:`cluster.parse_hosts
    <pocketflow_tf.cluster.parse_hosts>`), that each host resolves and is named once, that
    each remote host answers a TCP connect, and that the ports of the workers started here
    are free. Then, depending on where the hosts are:

    * ``this_host_index`` given: starts that host's workers here and watches them (the
      by-hand / scheduler start: one such launcher per host, same flags); with
      ``print_env``, prints their variables as ``export`` lines instead;
    * every host is this machine (e.g. 127.0.0.1 and 127.0.0.2): starts every worker here;
    * otherwise, with ``ssh``: starts each remote host's launcher over ``ssh`` (in the same
      working directory there) and this machine's workers here;
    * otherwise: prints the command to run on each host and starts nothing.

    Args:
        command: The program and its arguments, the same on every host.
        hosts_spec: ``'h1:2,h2:2'``.
        port: First worker port of every host, or one per host (``'23456,23500'``).
            Default: free ports when every host is this machine and all start here, else
            :data:`cluster.DEFAULT_PORT <pocketflow_tf.cluster.DEFAULT_PORT>`.
        this_host_index: Start only this host's workers (its 0-based position in the list).
        ssh: Start remote hosts over ``ssh`` (non-interactive: keys must be set up).
        print_env: With ``this_host_index``: print its workers' variables, start nothing.
        connect_timeout_s: How long a remote host may take to answer a TCP connect.
        grace_s: After one worker fails, how long the others may take to end by themselves.
        env: Base environment (default: this process's).
        out: Where output goes (default: stdout).

    Returns:
        0 when every started worker succeeded (or nothing had to start), else the first
        failing worker's status.

    Raises:
        InvalidArgumentError: A bad host list or port, an unresolvable, duplicate or
            unreachable host, a taken port, or a ``this_host_index`` out of range or not
            this machine.

    Example:
        >>> launch_hosts(["python", "run.py"], "h1:0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `hosts`: 'h1:0' (entry 1, ...
    """
    out = out or sys.stdout
    hosts = cluster.parse_hosts(hosts_spec)
    if sum(h.slots for h in hosts) < 2:
        raise errors.InvalidArgumentError(
            "hosts", hosts_spec, "two or more worker slots in all (one worker: run_local.sh)"
        )
    bases = None if port is None else cluster.parse_ports(port, hosts)
    if this_host_index is not None and not 0 <= this_host_index < len(hosts):
        raise errors.InvalidArgumentError(
            "this_host_index",
            this_host_index,
            f"the position of this machine in --hosts, 0 to {len(hosts) - 1}",
        )
    if print_env and this_host_index is None:
        raise errors.InvalidArgumentError(
            "print_env", True, "only with --this-host-index (the host whose workers to print)"
        )
    addresses, locals_ = check_hosts(hosts_spec, hosts)
    if this_host_index is not None and not locals_[this_host_index]:
        raise errors.InvalidArgumentError(
            "this_host_index",
            this_host_index,
            f"the position of this machine in --hosts: entry {this_host_index} is "
            f"{hosts[this_host_index].name!r} ({addresses[this_host_index]}), not an address "
            "of this machine",
        )
    here_all = this_host_index is None and all(locals_)
    if bases is None:
        # One process may choose free ports only when it starts every worker itself;
        # otherwise every host must derive the same ports from the same flags.
        if here_all:
            bases = []
            for h in hosts:
                bases.append(free_port_range(h.slots))
        else:
            bases = [cluster.DEFAULT_PORT] * len(hosts)
    workers = cluster.plan(hosts, bases)
    mine = (
        {this_host_index}
        if this_host_index is not None
        else {h for h, local in enumerate(locals_) if local}
    )
    # A remote host must answer on its first worker's port (refused is an answer: the
    # worker is not started yet), or on ssh's when ssh will start it.
    for h, host in enumerate(hosts):
        if not locals_[h]:
            probe = 22 if ssh and this_host_index is None else bases[h]
            cluster.check_reachable(host.name, addresses[h], probe, connect_timeout_s)
    if print_env:
        for w in workers:
            if w.host_index == this_host_index:
                out.write(f"# worker {w.index} ({w.address})\n")
                for key, value in cluster.worker_env(workers, w.index).items():
                    out.write(f"export {key}={shlex.quote(value)}\n")
        out.flush()
        return 0
    if this_host_index is None and not all(locals_) and not ssh:
        out.write(
            "[launcher] not every host is this machine and --ssh was not given: nothing "
            "was started. Run on each host, in the same directory (data and model files at "
            "the same paths), with the same Python environment:\n"
        )
        for h, host in enumerate(hosts):
            cmd = host_command(command, hosts_spec, h, bases)
            out.write(f"  # {host.name} ({host.slots} worker(s))\n  {shlex.join(cmd)}\n")
        out.flush()
        return 0
    for w in workers:
        if w.host_index in mine:
            cluster.check_port_free(addresses[w.host_index], w.port)
    starts = [
        (list(command), cluster.worker_env(workers, w.index), _prefix(w))
        for w in workers
        if w.host_index in mine
    ]
    if ssh and this_host_index is None:
        cwd = os.getcwd()
        for h, host in enumerate(hosts):
            if h not in mine:
                remote = shlex.join(host_command(command, hosts_spec, h, bases))
                ssh_cmd = ["ssh", "-o", "BatchMode=yes", host.name]
                starts.append(
                    (ssh_cmd + [f"cd {shlex.quote(cwd)} && {remote}"], {}, f"[{host.name}] ")
                )
    out.write(
        f"[launcher] {len(workers)} workers on {len(hosts)} host(s) "
        f"({', '.join(w.address for w in workers)}); "
        f"{sum(1 for w in workers if w.host_index in mine)} start here\n"
    )
    out.flush()
    return run_processes(starts, grace_s=grace_s, env=env, out=out)


def check_hosts(hosts_spec: str, hosts: Sequence[cluster.Host]) -> tuple[list[str], list[bool]]:
    """Each host's address and whether it is this machine; refuses a name that does not
    resolve and two entries for one machine.

    Example:
        >>> check_hosts("127.0.0.1:1,127.0.0.2:1", cluster.parse_hosts("127.0.0.1:1,127.0.0.2:1"))
        (['127.0.0.1', '127.0.0.2'], [True, True])
    """
    addresses = [cluster.resolve(h.name) for h in hosts]
    seen: dict[str, str] = {}
    for h, addr in zip(hosts, addresses, strict=True):
        if addr in seen:
            raise errors.InvalidArgumentError(
                "hosts",
                hosts_spec,
                f"each machine once: {seen[addr]!r} and {h.name!r} are both {addr} (give "
                "one entry with all its slots)",
            )
        seen[addr] = h.name
    return addresses, [cluster.is_local(a) for a in addresses]


def resolve_hosts_backend(backend: str) -> str:
    """The backend of a ``--hosts`` run: ``auto`` is ``tf`` (it needs no ssh); ``horovod``
    must be installed (the TF 2.15 lane).

    Example:
        >>> resolve_hosts_backend("auto")
        'tf'
    """
    if backend == "auto":
        return "tf"
    return resolve_backend(backend)


def launch_horovod_hosts(
    command: Sequence[str],
    hosts_spec: str,
    *,
    connect_timeout_s: float = cluster.DEFAULT_CONNECT_TIMEOUT_S,
    grace_s: float = 15.0,
    out=None,
) -> int:
    """Runs ``command`` as Horovod (Gloo) ranks on several hosts.

    When every host is this machine (e.g. 127.0.0.1 and 127.0.0.2), the ranks are started
    here the way ``horovodrun --gloo`` starts them, without its ssh: this process runs
    Horovod's rendezvous server with the host plan of ``-H hosts_spec`` and starts each
    rank with ``HOROVOD_GLOO_RENDEZVOUS_ADDR/PORT``, ``HOROVOD_RANK``, ``HOROVOD_SIZE``,
    ``HOROVOD_LOCAL_RANK``... (``horovodrun`` itself would ssh to 127.0.0.2: it starts
    locally only the addresses of this machine's interfaces). Otherwise it runs
    ``horovodrun --gloo -np N -H hosts_spec``, which starts the remote ranks over ssh;
    each remote host must answer on ssh's port first.

    Args:
        command: The program and its arguments.
        hosts_spec: ``'h1:2,h2:2'``.
        connect_timeout_s: How long a remote host may take to answer a TCP connect.
        grace_s: After one rank fails, how long the others may take to end by themselves.
        out: Where output goes (default: stdout).

    Returns:
        0 when every rank succeeded, else the first failing one's status.

    Example:
        >>> launch_horovod_hosts(["python", "run.py"], "h1:2,h1:1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `hosts`: 'h1:2,h1:1' (entry 2, ...
    """
    out = out or sys.stdout
    hosts = cluster.parse_hosts(hosts_spec)
    total = sum(h.slots for h in hosts)
    if total < 2:
        raise errors.InvalidArgumentError(
            "hosts", hosts_spec, "two or more worker slots in all (one worker: run_local.sh)"
        )
    addresses, locals_ = check_hosts(hosts_spec, hosts)
    if not all(locals_):
        for h, host in enumerate(hosts):
            if not locals_[h]:
                cluster.check_reachable(host.name, addresses[h], 22, connect_timeout_s)
        full = ["horovodrun", "-np", str(total), "-H", hosts_spec, "--gloo", *command]
        out.write(f"[launcher] {shlex.join(full)}\n")
        out.flush()
        return run_processes([(full, {}, "")], grace_s=grace_s, out=out, what="horovodrun")
    # Horovod's own pieces, as horovod.runner.gloo_run.launch_gloo uses them.
    from horovod.runner.common.util import hosts as hvd_hosts
    from horovod.runner.gloo_run import create_run_env_vars, create_slot_env_vars
    from horovod.runner.http.http_server import RendezvousServer

    slots = hvd_hosts.get_host_assignments(hvd_hosts.parse_hosts(hosts_spec), total)
    server = RendezvousServer()
    port = server.start()
    try:
        server.init(slots)
        common = {k: str(v) for k, v in create_run_env_vars(addresses[0], ["lo"], port).items()}
        common["PYTHONUNBUFFERED"] = "1"
        starts = []
        for slot in slots:
            env = dict(common, **create_slot_env_vars(slot), PFTF_WORKER_INDEX=str(slot.rank))
            prefix = "" if slot.rank == 0 else f"[rank {slot.rank} {slot.hostname}] "
            starts.append((list(command), env, prefix))
        out.write(
            f"[launcher] {total} Horovod ranks on {len(hosts)} host(s) of this machine "
            f"({hosts_spec}), Gloo rendezvous at {addresses[0]}:{port}\n"
        )
        out.flush()
        return run_processes(starts, grace_s=grace_s, out=out, what="rank")
    finally:
        server.stop()


def _prefix(worker: cluster.Worker) -> str:
    return "" if worker.index == 0 else f"[worker {worker.index} {worker.host}] "


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pocketflow_tf.launcher -n 2 [--backend tf] -- cmd ...``, or
    ``--hosts h1:2,h2:2 [--this-host-index i] [--port P] [--ssh] [--print-env] -- cmd``."""
    parser = argparse.ArgumentParser(
        prog="python -m pocketflow_tf.launcher", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-n", "--workers", type=int, default=None)
    parser.add_argument("--backend", default="auto", help="auto, horovod or tf")
    parser.add_argument("--grace_s", type=float, default=15.0)
    parser.add_argument("--hosts", default=None, help="h1:2,h2:2 (host:slots, each host once)")
    parser.add_argument(
        "--port", default=None, help="first worker port of every host, or one per host (P1,P2)"
    )
    parser.add_argument("--this-host-index", "--this_host_index", type=int, default=None)
    parser.add_argument("--ssh", action="store_true", help="start remote hosts over ssh")
    parser.add_argument("--print-env", "--print_env", action="store_true")
    parser.add_argument(
        "--connect_timeout_s", type=float, default=cluster.DEFAULT_CONNECT_TIMEOUT_S
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.print_env:
        parser.error("no command given")
    if args.hosts is None:
        for flag, value in (
            ("--port", args.port),
            ("--this-host-index", args.this_host_index),
            ("--ssh", args.ssh or None),
            ("--print-env", args.print_env or None),
        ):
            if value is not None:
                parser.error(f"{flag} is for several hosts: give --hosts too")
    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        parser.error(f"-n/--workers: {workers}; accepted: an integer >= 1")
    try:
        if args.hosts is not None:
            if args.workers is not None:
                raise errors.InvalidArgumentError(
                    "workers",
                    args.workers,
                    "no -n with --hosts (the slots of --hosts are the workers: 'h1:2,h2:2')",
                )
            backend = resolve_hosts_backend(args.backend)
            if backend == "horovod":
                for flag, value in (
                    ("port", args.port),
                    ("this_host_index", args.this_host_index),
                    ("ssh", args.ssh or None),
                    ("print_env", args.print_env or None),
                ):
                    if value is not None:
                        raise errors.InvalidArgumentError(
                            flag,
                            value,
                            "not given with --backend horovod (horovodrun starts the ranks "
                            "of other machines over ssh itself; the by-hand start per host "
                            "is the tf backend's)",
                        )
                return launch_horovod_hosts(
                    command, args.hosts, connect_timeout_s=args.connect_timeout_s
                )
            return launch_hosts(
                command,
                args.hosts,
                port=args.port,
                this_host_index=args.this_host_index,
                ssh=args.ssh,
                print_env=args.print_env,
                connect_timeout_s=args.connect_timeout_s,
                grace_s=args.grace_s,
            )
        backend = resolve_backend(args.backend)
    except errors.InvalidArgumentError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if backend == "horovod":
        return launch_horovod(command, workers)
    return launch_tf(command, workers, grace_s=args.grace_s)


if __name__ == "__main__":
    sys.exit(main())
