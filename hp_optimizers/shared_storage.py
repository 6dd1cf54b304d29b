"""Where parallel trial workers meet: checking and opening an optuna RDB storage URL.

Parallel trials (:mod:`parallel`) keep one study in an optuna ``RDBStorage`` -- SQLite for
processes of one machine (``sqlite:///PATH``), or a database server's SQLAlchemy URL for
several machines -- because it is the storage of optuna 5.0 that has a *heartbeat*: each
running trial records a heartbeat every ``heartbeat_s`` seconds, and a trial whose worker
stopped sending them for ``grace_s`` seconds (killed, out of memory, machine lost) is failed
and queued again by ``RetryHeartbeatStaleTrialCallback``. optuna 5.0's ``JournalStorage``
(``JournalFileBackend``) has no heartbeat, so a killed worker's trial would stay "running"
forever: it is refused with that reason.

Example:
    >>> check_url("journal:/tmp/s.log")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.InvalidArgumentError: Invalid value for `storage`: 'journal:/tmp/s.log'...
    >>> check_url("sqlite:////tmp/study.db")
    '/tmp/study.db'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from pocketflow_tf import errors

#: What ``storage`` accepts, as error messages say it.
ACCEPTED = (
    "'sqlite:///PATH' (a SQLite file every worker can reach: processes of one machine) or "
    "the SQLAlchemy URL of a database server ('postgresql://...', 'mysql://...')"
)
#: SQLite waits this long for a lock another worker holds before failing a write (the
#: default 5 s is short when several workers tell their trials at once on a busy machine).
SQLITE_TIMEOUT_S = 60


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silences optuna's INFO lines and its experimental-feature warnings (the heartbeat and
    the retry callback are "experimental" in optuna 5.0) for one block, then puts back the
    user's verbosity, a global setting that is theirs.

    Example:
        >>> with quiet_optuna():
        ...     pass
    """
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # ask/tell with a heartbeat is what we do on purpose (optuna's own optimize loop
            # cannot hold back surplus trials or tell trial errors from broken runs).
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            yield
    finally:
        optuna.logging.set_verbosity(previous)


def check_url(url: Any) -> str | None:
    """Checks a storage URL before any work and returns its SQLite file (``None`` otherwise).

    A SQLite file must not be in memory (workers are processes), and its folder must exist
    or be creatable, and be writable; an existing file must be readable and writable.

    Args:
        url: The storage URL.

    Returns:
        The SQLite file's path, or ``None`` for a database server's URL.

    Raises:
        InvalidArgumentError: naming ``storage``, the URL and what is accepted.

    Example:
        >>> check_url("sqlite:///:memory:")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `storage`: ...
    """
    if not isinstance(url, str) or not url.strip():
        raise errors.InvalidArgumentError("storage", url, ACCEPTED)
    if url.startswith("journal:"):
        raise errors.InvalidArgumentError(
            "storage",
            url,
            f"{ACCEPTED}; optuna 5.0's JournalStorage has no heartbeat, so the trial of a "
            "killed worker would never be detected and retried",
        )
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise errors.InvalidArgumentError("storage", url, ACCEPTED)
        path = url[len("sqlite:///") :].split("?", 1)[0]
        if path in (":memory:", "") or path.startswith("file::memory:"):
            raise errors.InvalidArgumentError(
                "storage", url, f"{ACCEPTED}; an in-memory database is not shared by processes"
            )
        path = os.path.abspath(path)
        if os.path.isdir(path):
            raise errors.InvalidArgumentError("storage", url, f"{ACCEPTED} (that is a folder)")
        if os.path.exists(path):
            if not os.access(path, os.R_OK | os.W_OK):
                raise errors.InvalidArgumentError(
                    "storage", url, f"{ACCEPTED}; {path} is not readable and writable"
                )
            return path
        existing = os.path.dirname(path)
        while not os.path.isdir(existing):
            if os.path.exists(existing):  # a file where a folder should be
                raise errors.InvalidArgumentError(
                    "storage", url, f"{ACCEPTED}; {existing} is a file, not a folder"
                )
            existing = os.path.dirname(existing)
        # SQLite writes the database and its journal files in that folder. A real probe,
        # not os.access: root passes access() on read-only and pseudo file systems.
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=existing)
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise errors.InvalidArgumentError(
                "storage", url, f"{ACCEPTED}; cannot create {path} (folder {existing}: {e})"
            ) from None
        return path
    if "://" not in url:
        raise errors.InvalidArgumentError("storage", url, ACCEPTED)
    return None


def open_storage(
    url: str,
    *,
    heartbeat_s: int | None = None,
    grace_s: int | None = None,
    max_retries: int | None = None,
):
    """Opens (creating when needed) the optuna ``RDBStorage`` at ``url``.

    Args:
        url: A URL ``check_url`` accepts.
        heartbeat_s: Seconds between the heartbeats of a running trial (``None``: no
            heartbeat, e.g. to only read the study).
        grace_s: A running trial without a heartbeat for this long is failed.
        max_retries: How often a failed-by-heartbeat trial is queued again.

    Returns:
        The ``optuna.storages.RDBStorage``.

    Raises:
        InvalidArgumentError: the URL is malformed, or opening it failed (not a database,
            no driver, no access), naming the URL and the reason.

    Example:
        >>> import tempfile
        >>> storage = open_storage(f"sqlite:///{tempfile.mkdtemp()}/s.db")
        >>> storage.get_all_studies()
        []
    """
    path = check_url(url)
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    try:
        with quiet_optuna():
            callback = None
            if heartbeat_s is not None:
                callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=callback,
            )
            storage.get_all_studies()  # reads the tables now, not in the middle of a run
    except Exception as e:  # sqlalchemy/optuna raise many types; all mean "not usable"
        raise errors.InvalidArgumentError(
            "storage", url, f"{ACCEPTED} that opens ({type(e).__name__}: {e})"
        ) from None
    return storage
