"""A cluster of several hosts: the host list, its checks, and each worker's environment.

``--hosts h1:2,h2:2`` names the machines and how many worker processes (slots) each runs.
Workers are numbered host by host (``h1``'s are 0 and 1, ``h2``'s 2 and 3); worker 0, the
first slot of the first host, is the chief. Worker ``i`` listens on ``base_port +
local_rank`` of its host, so every host derives the same cluster from the same flags and
no process has to ask another which port it took: the by-hand or scheduler start (one
``python -m pocketflow_tf.launcher --hosts ... --this-host-index i`` per host) needs no
coordination beyond the flags.

Everything here is checked before any worker starts: a malformed or duplicate entry, a
name that does not resolve, a remote host that a TCP connect does not reach within a short
timeout (a refused connection *is* an answer: the host is up, its worker is not started
yet), and a port of this host that is taken.

Example:
    >>> from pocketflow_tf import cluster
    >>> hosts = cluster.parse_hosts("127.0.0.1:2,127.0.0.2:1")
    >>> [(w.index, w.host, w.port) for w in cluster.plan(hosts, 7000)]
    [(0, '127.0.0.1', 7000), (1, '127.0.0.1', 7001), (2, '127.0.0.2', 7000)]
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import socket
from collections.abc import Sequence

from pocketflow_tf import errors

#: First worker port of each host when the hosts are not all this machine (then the ports
#: cannot be chosen free by one process: every host must derive the same ones).
DEFAULT_PORT = 23456
#: How long a TCP connect to a remote host may take before it counts as unreachable.
DEFAULT_CONNECT_TIMEOUT_S = 3.0

_ACCEPTED = (
    "a comma-separated list of host:slots entries, e.g. 'h1:2,h2:2' (host: a name or IPv4 "
    "address, each host once; slots: worker processes on it, a whole number >= 1; "
    "'host' alone means 1 slot)"
)
# A host name (RFC 1123 labels) or a dotted IPv4 address; IPv6 literals are not taken (their
# colons clash with the slots separator, and TF_CONFIG's host:port would need brackets).
_HOST = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclasses.dataclass(frozen=True)
class Host:
    """One entry of ``--hosts``: a machine and its number of worker processes.

    Example:
        >>> Host("h1", 2)
        Host(name='h1', slots=2)
    """

    name: str
    slots: int


@dataclasses.dataclass(frozen=True)
class Worker:
    """One worker process of the cluster.

    Attributes:
        index: Its rank over the whole cluster (0 is the chief).
        host_index: Its host's position in ``--hosts``.
        host: Its host's name as given.
        port: The port it listens on.
        local_rank: Its position among its host's workers.

    Example:
        >>> Worker(0, 0, "h1", 23456, 0).address
        'h1:23456'
    """

    index: int
    host_index: int
    host: str
    port: int
    local_rank: int

    @property
    def address(self) -> str:
        """``host:port``, as ``TF_CONFIG`` lists it."""
        return f"{self.host}:{self.port}"


def parse_hosts(spec: str, name: str = "hosts") -> list[Host]:
    """Parses ``'h1:2,h2:2'`` into hosts, refusing a malformed or duplicate entry.

    Args:
        spec: The host list.
        name: The argument's name in error messages.

    Raises:
        InvalidArgumentError: An empty list or entry, a bad host name, slots that are not a
            whole number >= 1, or a host named twice (the entry is echoed).

    Example:
        >>> parse_hosts("h1:2,h2")
        [Host(name='h1', slots=2), Host(name='h2', slots=1)]
        >>> parse_hosts("h1:0")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `hosts`: 'h1:0' (entry 1, 'h1:0': slots must be a whole number >= 1). Accepted: a comma-separated list of host:slots entries, e.g. 'h1:2,h2:2' (host: a name or IPv4 address, each host once; slots: worker processes on it, a whole number >= 1; 'host' alone means 1 slot).
    """

    def bad(why: str) -> errors.InvalidArgumentError:
        return errors.InvalidArgumentError(name, _Echo(spec, why), _ACCEPTED)

    if not isinstance(spec, str) or not spec.strip():
        raise bad("the list is empty")
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(spec.split(","), start=1):
        entry = raw.strip()
        if not entry:
            raise bad(f"entry {i} is empty")
        host, sep, slots = entry.partition(":")
        if not _HOST.match(host):
            raise bad(f"entry {i}, {entry!r}: {host!r} is not a host name or IPv4 address")
        if sep and not re.fullmatch(r"[0-9]+", slots):
            raise bad(f"entry {i}, {entry!r}: slots must be a whole number >= 1")
        count = int(slots) if sep else 1
        if count < 1:
            raise bad(f"entry {i}, {entry!r}: slots must be a whole number >= 1")
        key = host.lower()
        if key in seen:
            raise bad(
                f"entry {i}, {entry!r}: host {host!r} is already entry {seen[key]} (give each "
                "host once, with all its slots)"
            )
        seen[key] = i
        hosts.append(Host(host, count))
    return hosts


class _Echo(str):
    """The value echoed in an error, followed by what is wrong with it (``repr`` adds it)."""

    def __new__(cls, value: str, why: str):
        obj = super().__new__(cls, value)
        obj.why = why
        return obj

    def __repr__(self) -> str:
        return f"{str.__repr__(self)} ({self.why})"


def plan(hosts: Sequence[Host], ports: int | Sequence[int]) -> list[Worker]:
    """Every worker of the cluster, host by host.

    Args:
        hosts: The parsed host list.
        ports: The first port of every host (worker ``k`` of a host listens on ``port +
            k``), or one first port per host (:func:`parse_ports`).

    Example:
        >>> [w.address for w in plan([Host("a", 1), Host("b", 2)], 9000)]
        ['a:9000', 'b:9000', 'b:9001']
        >>> [w.address for w in plan([Host("a", 1), Host("b", 1)], [9000, 9005])]
        ['a:9000', 'b:9005']
    """
    bases = [ports] * len(hosts) if isinstance(ports, int) else list(ports)
    if len(bases) != len(hosts):
        raise errors.InvalidArgumentError(
            "port", ports, f"one port, or one per host ({len(hosts)} hosts)"
        )
    workers: list[Worker] = []
    for h, host in enumerate(hosts):
        for k in range(host.slots):
            workers.append(Worker(len(workers), h, host.name, bases[h] + k, k))
    return workers


def parse_ports(spec: str | int, hosts: Sequence[Host], name: str = "port") -> list[int]:
    """``'23456'`` (every host) or ``'23456,23500'`` (one per host) into per-host first
    ports; each host's workers use ``port`` .. ``port + slots - 1``.

    Raises:
        InvalidArgumentError: Not whole numbers, the wrong count, or a port range outside
            1024..65535.

    Example:
        >>> parse_ports("9000", [Host("a", 2), Host("b", 1)])
        [9000, 9000]
        >>> parse_ports("9000,x", [Host("a", 2), Host("b", 1)])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `port`: '9000,x'. Accepted: ...
    """
    accepted = (
        f"one TCP port for every host, or {len(hosts)} comma-separated (one per host, in "
        "--hosts order); each host's workers listen on port .. port + slots - 1, within "
        "1024..65535"
    )
    parts = [p.strip() for p in str(spec).split(",")]
    if not all(re.fullmatch(r"[0-9]+", p) for p in parts) or len(parts) not in (1, len(hosts)):
        raise errors.InvalidArgumentError(name, str(spec), accepted)
    bases = [int(p) for p in parts] * (len(hosts) if len(parts) == 1 else 1)
    for base, host in zip(bases, hosts, strict=True):
        if base < 1024 or base + host.slots - 1 > 65535:
            raise errors.InvalidArgumentError(name, str(spec), accepted)
    return bases


def tf_config(workers: Sequence[Worker], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index``: every worker's ``host:port`` and its task.

    Example:
        >>> ws = plan([Host("h1", 1), Host("h2", 1)], 23456)
        >>> json.loads(tf_config(ws, 1))
        {'cluster': {'worker': ['h1:23456', 'h2:23456']}, 'task': {'type': 'worker', 'index': 1}}
    """
    cluster = {"worker": [w.address for w in workers]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def worker_env(workers: Sequence[Worker], index: int) -> dict[str, str]:
    """The variables worker ``index`` must be started with (``tf`` backend).

    ``TF_CONFIG`` is what ``tf.distribute`` reads; ``PFTF_WORKER_INDEX`` is for logs.

    Example:
        >>> sorted(worker_env(plan([Host("h1", 2)], 23456), 1))
        ['PFTF_WORKER_INDEX', 'TF_CONFIG']
    """
    return {"TF_CONFIG": tf_config(workers, index), "PFTF_WORKER_INDEX": str(index)}


def resolve(host: str, name: str = "hosts") -> str:
    """The IPv4 address ``host`` resolves to.

    Raises:
        InvalidArgumentError: The name does not resolve (echoed with the resolver's reason).

    Example:
        >>> resolve("127.0.0.2")
        '127.0.0.2'
        >>> resolve("no-such-host.invalid")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `hosts`: 'no-such-host.invalid'. Accepted: a host name this machine resolves (the resolver said: ...).
    """
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise errors.InvalidArgumentError(
            name, host, f"a host name this machine resolves (the resolver said: {exc})"
        ) from None
    return infos[0][4][0]


def is_local(address: str) -> bool:
    """Whether ``address`` is one of this machine's (a socket can bind to it).

    Every 127/8 address is this machine on Linux (loopback routes the whole block).

    Example:
        >>> is_local("127.0.0.2"), is_local("192.0.2.1")
        (True, False)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def check_reachable(
    host: str,
    address: str,
    port: int,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    name: str = "hosts",
) -> None:
    """Raises unless a TCP connect to ``address:port`` gets an answer within ``timeout_s``.

    An accepted connection and a refused one both prove the host is up (its worker may not
    be listening yet); a timeout, "no route" or "network unreachable" do not.

    Raises:
        InvalidArgumentError: The host did not answer (named, with the reason).

    Example:
        >>> check_reachable("127.0.0.1", "127.0.0.1", 9)  # refused: up, nothing listens
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((address, port))
            return
        except ConnectionRefusedError:
            return
        except TimeoutError:
            why = f"got no answer within {timeout_s:g} s"
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                return
            why = f"failed: {exc.strerror or exc}"
    raise errors.InvalidArgumentError(
        name,
        host,
        f"a host this machine reaches: a TCP connect to {address}:{port} {why} (check the "
        "name, the network and the firewall; --connect_timeout_s sets the wait)",
    )


def check_port_free(address: str, port: int, name: str = "port") -> None:
    """Raises unless ``port`` can be listened on at ``address`` here (and on all addresses,
    as TensorFlow's server binds).

    Example:
        >>> import socket
        >>> s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
        >>> check_port_free("127.0.0.1", s.getsockname()[1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `port`: ...
        >>> s.close()
    """
    for where in (address, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((where, port))
            except OSError as exc:
                raise errors.InvalidArgumentError(
                    name,
                    port,
                    f"a port free on {address} for a worker of this host ({where}:{port}: "
                    f"{exc.strerror or exc}; choose another --port)",
                ) from None


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_PORT",
    "Host",
    "Worker",
    "check_port_free",
    "check_reachable",
    "is_local",
    "parse_hosts",
    "parse_ports",
    "plan",
    "resolve",
    "tf_config",
    "worker_env",
]
