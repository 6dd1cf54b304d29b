"""Reading pickled data files without running code from them.

``pickle.load`` calls whatever callable a file names, so a data folder handed over by a user
is code unless it is read through a restricted unpickler. CIFAR-10's python format is a
pickled ``dict`` of bytes keys, lists of ints / bytes and one ``uint8`` numpy array; this
module's unpickler resolves only the few globals such a file needs to rebuild those plain
values (numpy's array reconstructors and ``dtype``, ``_codecs.encode`` for bytes pickled by
Python 3 at protocol 2) and refuses every other one with the file's name.

The standard library documents exactly this pattern ("Restricting Globals" in the ``pickle``
docs); no maintained library offers a safe loader for the format, and numpy's own
``allow_pickle=False`` refuses the arrays the format holds, so it is written here.

Example:
    >>> import io, pickle
    >>> blob = pickle.dumps({b"labels": [1, 2]})
    >>> loads(blob, "batch")
    {b'labels': [1, 2]}
    >>> class Evil:
    ...     def __reduce__(self):
    ...         return (print, ("pwned",))
    >>> loads(pickle.dumps(Evil()), "evil.pkl")
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.DataError: Refusing to read 'evil.pkl': it asks to call builtins.print, which a data file never needs (only plain values and numpy arrays are read; pickled data files are code, so nothing else is run).
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from pocketflow_tf import errors

#: ``(module, name)`` pairs a plain-data pickle may name: numpy's array and dtype
#: reconstructors (under numpy 1 and numpy 2 module names) and the bytes codec.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise errors.DataError(
                f"Refusing to read '{self._source}': it asks to call {module}.{name}, which a "
                "data file never needs (only plain values and numpy arrays are read; pickled "
                "data files are code, so nothing else is run)."
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise errors.DataError(
            f"Refusing to read '{self._source}': it holds a persistent reference, which a "
            "data file never needs."
        )


def loads(data: bytes, source: str = "<bytes>", *, encoding: str = "bytes"):
    """Unpickles ``data`` allowing plain values and numeric numpy arrays only.

    Args:
        data: The pickled bytes.
        source: Name used in error messages (usually the file's path).
        encoding: How Python 2 ``str`` objects are decoded (``"bytes"`` keeps them as
            bytes, as CIFAR-10's files need).

    Returns:
        The unpickled value.

    Raises:
        DataError: The data names a callable outside :data:`ALLOWED_GLOBALS`, holds an
            object-dtype array, or is not a readable pickle.

    Example:
        >>> import pickle, numpy as np
        >>> loads(pickle.dumps(np.arange(3, dtype=np.uint8)), "a").tolist()
        [0, 1, 2]
    """
    try:
        value = _RestrictedUnpickler(io.BytesIO(data), source, encoding=encoding).load()
    except errors.DataError:
        raise
    except Exception as e:  # truncated or garbled files surface as many exception types
        raise errors.DataError(f"Cannot read '{source}' as a pickle: {e}") from e
    _refuse_object_arrays(value, source)
    return value


def load(path: str, *, encoding: str = "bytes"):
    """Reads the pickle file at ``path`` with :func:`loads`.

    Example:
        >>> load("/nonexistent/batch")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.DataError: Cannot read '/nonexistent/batch': [Errno 2] No such file or directory: '/nonexistent/batch'
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise errors.DataError(f"Cannot read '{path}': {e}") from e
    return loads(data, path, encoding=encoding)


def _refuse_object_arrays(value, source: str, depth: int = 0) -> None:
    # An object-dtype array holds arbitrary Python objects; the allowed globals cannot
    # build any, but the array itself is no data a loader can use.
    if depth > 8:
        return
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise errors.DataError(
            f"Refusing to read '{source}': it holds an object array (dtype {value.dtype}); "
            "only numeric arrays are accepted."
        )
    if isinstance(value, dict):
        for v in value.values():
            _refuse_object_arrays(v, source, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value[:16]:  # labels lists hold thousands of ints: a sample is enough
            _refuse_object_arrays(v, source, depth + 1)
