"""Atomic file output: write to a temporary file in the target folder, then rename.

A crash, a kill or an exception while writing never leaves a half-written checkpoint, export
or record at the final path: either the old file stays or the new one is complete.

Example:
    >>> import json, os, tempfile
    >>> from pocketflow_tf import atomic_io
    >>> d = tempfile.mkdtemp()
    >>> p = atomic_io.write_json(os.path.join(d, "r.json"), {"acc": 0.9})
    >>> json.load(open(p))["acc"]
    0.9
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from pocketflow_tf import errors

#: A temporary file of a writer on another machine (a shared folder) whose process cannot be
#: looked up is only removed after this long: no single write of the project takes a day.
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600
#: Temporary files of the naming used before writers put their host and pid in it.
LEGACY_TEMP_MAX_AGE_S = 3600


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    The temporary path keeps ``suffix`` (e.g. ``".keras"``) because some writers choose the
    format from the extension. On an exception the temporary file or folder is removed and
    ``path`` is left untouched. A writer killed with SIGKILL cannot clean up; its temporary
    file is removed by the next write of the same ``path`` (see :func:`remove_stale_temps`).

    Args:
        path: Final destination.
        suffix: Extension to give the temporary path (defaults to the one of ``path``).

    Yields:
        A path in the same folder as ``path`` to write to, named
        ``.<name>.<host>-<pid>.<random><suffix>``.

    Example:
        >>> with atomic_path("/tmp/out.txt") as tmp:  # doctest: +SKIP
        ...     open(tmp, "w").write("hello")
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = _temp_suffix(path, suffix)
    remove_stale_temps(path, suffix)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.{_HOST}-{os.getpid()}.", suffix=suffix, dir=folder
    )
    os.close(fd)
    os.remove(tmp)  # writers such as SavedModel want to create the path themselves
    _WRITING.add(tmp)
    try:
        yield tmp
        if os.path.isdir(path) and not os.path.islink(path):
            # Only an earlier output of the same kind is replaced: a file written where a
            # folder stands (export_tflite(model, "runs/")) must never delete the folder.
            _check_replaceable(path, tmp)
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _WRITING.discard(tmp)


def remove_stale_temps(path: str | os.PathLike, suffix: str = "") -> list[str]:
    """Removes the temporary files that killed writers of ``path`` left beside it.

    Only names of ``path``'s own temporary pattern are considered, and of those only the
    ones no live writer can still be using: the writer's host and pid are in the name, so
    a file of this host whose process is gone is removed at once. Age alone would either
    leave a fresh leftover for hours or cut a slow concurrent write (a large SavedModel) in
    half; a pid check does neither. A file of another host (a shared folder) cannot have
    its process looked up and is removed only after :data:`FOREIGN_TEMP_MAX_AGE_S`, one of
    the naming without host and pid after :data:`LEGACY_TEMP_MAX_AGE_S`.

    Args:
        path: The final destination whose leftovers to remove.
        suffix: The ``suffix`` its writers pass to :func:`atomic_path`.

    Returns:
        The removed paths.

    Example:
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> dead = os.path.join(d, f".m.keras.{_HOST}-999999999.abc123xy.keras")
        >>> open(dead, "w").close()  # a writer with that pid cannot be alive
        >>> remove_stale_temps(os.path.join(d, "m.keras")) == [dead], os.path.exists(dead)
        (True, False)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    suffix = _temp_suffix(path, suffix)
    pattern = re.compile(
        re.escape("." + os.path.basename(path) + ".")
        + r"(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)\.)?[a-z0-9_]{8}"
        + re.escape(suffix)
        + r"\Z"
    )
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    now = time.time()
    for name in names:
        match = pattern.match(name)
        if match is None:
            continue
        full = os.path.join(folder, name)
        try:
            age = now - os.lstat(full).st_mtime
        except OSError:  # removed meanwhile (its writer finished)
            continue
        if match["pid"] is None:
            stale = age > LEGACY_TEMP_MAX_AGE_S
        elif match["host"] == _HOST:
            pid = int(match["pid"])
            # Our own pid: a container restarted with the same pid as the killed run, or
            # another thread of this process writing the same path right now.
            stale = full not in _WRITING if pid == os.getpid() else not _pid_alive(pid)
        else:
            stale = age > FOREIGN_TEMP_MAX_AGE_S
        if stale:
            _remove(full)
            removed.append(full)
    return removed


def _temp_suffix(path: str, suffix: str) -> str:
    suffix = suffix or os.path.splitext(path)[1]
    return suffix or ".tmp"


def _host() -> str:
    # Letters and digits only: the "-" after it then separates host and pid unambiguously.
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


_HOST = _host()
#: Temporary paths this process is writing now (never stale, whatever their pid says).
_WRITING: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError) as e:
        # PermissionError: the process exists under another user. A pid beyond the
        # platform's range cannot be alive.
        return isinstance(e, PermissionError)
    return True


#: Files that mark a folder as a model this project (or Keras) wrote: a SavedModel.
_MODEL_FOLDER_MARKERS = ("saved_model.pb", "saved_model.pbtxt", "keras_metadata.pb")


def _check_replaceable(path: str, tmp: str) -> None:
    """Refuses to replace the folder ``path`` unless by a folder, and only an empty one or
    a SavedModel (what a folder writer writes)."""
    entries = os.listdir(path)
    if os.path.isdir(tmp) and (
        not entries or any(marker in entries for marker in _MODEL_FOLDER_MARKERS)
    ):
        return
    raise errors.InvalidArgumentError(
        "path",
        path,
        f"a path that is not an existing folder: it holds {len(entries)} entries (e.g. "
        f"{sorted(entries)[:3]}), which writing there would delete; name a file inside it",
    )


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes ``data`` to ``path`` atomically and returns the path.

    Example:
        >>> write_bytes("/tmp/a.bin", b"\\x00")  # doctest: +SKIP
        '/tmp/a.bin'
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)


def write_text(path: str | os.PathLike, text: str) -> str:
    """Writes UTF-8 ``text`` to ``path`` atomically and returns the path.

    Example:
        >>> write_text("/tmp/a.txt", "hi")  # doctest: +SKIP
        '/tmp/a.txt'
    """
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Writes ``obj`` as indented JSON to ``path`` atomically and returns the path.

    NumPy scalars and arrays are converted to plain Python values.

    Example:
        >>> write_json("/tmp/a.json", {"x": 1})  # doctest: +SKIP
        '/tmp/a.json'
    """
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # NumPy is imported lazily so that this module stays importable without it.
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def sha256_file(path: str | os.PathLike) -> str:
    """Returns the hex sha256 of a file, or of every file of a folder in sorted order.

    Example:
        >>> len(sha256_file(__file__))
        64
    """
    h = hashlib.sha256()
    path = os.fspath(path)
    files = [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    for name in files:
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_with_sha256(path: str | os.PathLike, data: bytes) -> tuple[str, str]:
    """Writes ``data`` atomically and a ``<path>.sha256`` file beside it.

    Returns:
        ``(path, hex_digest)``.

    Example:
        >>> write_with_sha256("/tmp/m.tflite", b"TFL3")  # doctest: +SKIP
        ('/tmp/m.tflite', '...')
    """
    digest = hashlib.sha256(data).hexdigest()
    write_bytes(path, data)
    write_text(os.fspath(path) + ".sha256", f"{digest}  {os.path.basename(path)}\n")
    return os.fspath(path), digest
