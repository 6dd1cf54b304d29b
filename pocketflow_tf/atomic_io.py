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
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    The temporary path keeps ``suffix`` (e.g. ``".keras"``) because some writers choose the
    format from the extension. On an exception the temporary file or folder is removed and
    ``path`` is left untouched.

    Args:
        path: Final destination.
        suffix: Extension to give the temporary path (defaults to the one of ``path``).

    Yields:
        A path in the same folder as ``path`` to write to.

    Example:
        >>> with atomic_path("/tmp/out.txt") as tmp:  # doctest: +SKIP
        ...     open(tmp, "w").write("hello")
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = suffix or os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".",
        suffix=suffix + ".tmp" if not suffix else suffix,
        dir=folder,
    )
    os.close(fd)
    os.remove(tmp)  # writers such as SavedModel want to create the path themselves
    try:
        yield tmp
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


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
