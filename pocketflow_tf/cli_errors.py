"""How every command (run scripts, tools) reports errors and checks its output paths.

A user error -- any :class:`~pocketflow_tf.errors.PocketFlowError`, which names the file or
argument, echoes the bad value and says what is accepted -- ends a command with ONE line on
stderr and exit status :data:`EXIT_USER_ERROR`; a file-system error (permission denied,
disk full) likewise. The traceback adds nothing for the user, so it is shown only with
``--debug``. Any other exception is a bug of pocketflow-tf: its traceback is kept (it is
what a bug report needs), followed by one line saying so.

Commands use it in two lines::

    cli_errors.define_debug_flag()   # at import: adds --debug to the command
    cli_errors.run(main)             # instead of absl's app.run(main)

This module is core (run scripts and tools both import it) and defines no flag at import:
only :func:`define_debug_flag`, called by a command, does.

Example:
    >>> from pocketflow_tf import cli_errors, errors
    >>> cli_errors.error_line(errors.InvalidArgumentError("runs", 0, "an integer >= 1"))
    'error: Invalid value for `runs`: 0. Accepted: an integer >= 1.'
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pocketflow_tf import errors

#: Exit status of a command refused for its input (a PocketFlowError or a file-system error).
EXIT_USER_ERROR = 2
#: Exit status of a finished ``--learner auto`` run whose target was not met.
EXIT_TARGET_NOT_MET = 3
#: Exit status after an internal error (a bug), as Python's own for an uncaught exception.
EXIT_INTERNAL_ERROR = 1

_DEBUG_HELP = "show the full traceback of an error (default: one line saying what to fix)"


def define_debug_flag(flag_values: Any = None) -> None:
    """Adds the ``--debug`` flag to the calling command (once; later calls do nothing).

    The flag is registered as the caller's, so ``--help`` of a run script or tool lists it.

    Args:
        flag_values: The absl ``FlagValues`` (default: absl's global ``flags.FLAGS``).

    Example:
        >>> define_debug_flag()
        >>> from absl import flags
        >>> flags.FLAGS["debug"].default
        False
    """
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    if "debug" in fv:
        return
    flags.DEFINE_boolean("debug", False, _DEBUG_HELP, flag_values=fv, module_name=_caller_module(2))


def error_line(exc: BaseException) -> str:
    """The one line a command prints for a user error.

    Args:
        exc: A :class:`~pocketflow_tf.errors.PocketFlowError` or an ``OSError``.

    Returns:
        ``"error: <message>"`` on one line (line breaks of the message become spaces).

    Example:
        >>> error_line(FileNotFoundError(2, "No such file or directory", "/x/m.keras"))
        "error: cannot access '/x/m.keras': No such file or directory (check the path, its permissions and the free space)"
    """
    if isinstance(exc, OSError) and not isinstance(exc, errors.PocketFlowError):
        where = exc.filename if exc.filename is not None else "a file"
        what = exc.strerror or str(exc)
        msg = (
            f"cannot access '{where}': {what} (check the path, its permissions and the free space)"
        )
    else:
        msg = str(exc) or type(exc).__name__
    return "error: " + " ".join(msg.split("\n")).strip()


@contextlib.contextmanager
def reported_errors(debug: bool | Callable[[], bool] = False) -> Iterator[None]:
    """Turns user errors raised inside into one line and exit status 2.

    Args:
        debug: True (or a callable returning True, read when an error arrives: absl parses
            flags after the command starts) to let every exception through with its
            traceback.

    Raises:
        SystemExit: With :data:`EXIT_USER_ERROR` after a PocketFlowError or OSError, with
            :data:`EXIT_INTERNAL_ERROR` after any other exception (a bug; its traceback is
            printed first).

    Example:
        >>> with reported_errors():  # doctest: +SKIP
        ...     raise errors.DataError("labels and images differ in length: 10 vs 9")
        error: labels and images differ in length: 10 vs 9
    """
    try:
        yield
    except (errors.PocketFlowError, OSError) as e:
        if _is_on(debug):
            raise
        print(error_line(e), file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        if _is_absl_usage_error(e) or _is_on(debug):
            raise  # absl prints the usage itself
        traceback.print_exc()
        print(
            f"error: internal error {type(e).__name__} (a bug in pocketflow-tf, not a problem "
            "with your input): please report it with the traceback above",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_INTERNAL_ERROR)


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
    """absl's ``app.run(main)`` with :func:`reported_errors` around ``main`` and ``--debug``.

    Args:
        main: The command's ``main(argv)``.
        argv: The command line (default ``sys.argv``).

    Example:
        >>> cli_errors.run(main)  # doctest: +SKIP
    """
    from absl import app, flags

    if "debug" not in flags.FLAGS:
        flags.DEFINE_boolean("debug", False, _DEBUG_HELP, module_name=_caller_module(2))

    def _main(args):
        with reported_errors(lambda: flags.FLAGS.debug):
            return main(args)

    app.run(_main, argv=list(argv) if argv is not None else None)


def check_output_path(
    name: str,
    path: str | os.PathLike,
    *,
    suffixes: Sequence[str] | None = None,
    is_dir: bool = False,
) -> str:
    """Refuses an output path that cannot be written, before any work is done.

    Nothing is created: the path's nearest existing ancestor must be a writable folder
    (missing folders below it are created by the writer later), and the path itself must
    not be of the other kind (a folder where a file goes, or a file where a folder goes).

    Args:
        name: The argument or flag the path came from (echoed in the error).
        path: The output path.
        suffixes: Accepted file-name endings (case-insensitive), e.g. ``(".keras", ".h5")``;
            ``None`` accepts any.
        is_dir: The output is a folder (e.g. a TensorBoard log folder), not a file.

    Returns:
        ``path`` as a string.

    Raises:
        InvalidArgumentError: Naming ``name`` and ``path`` and saying what is accepted.

    Example:
        >>> check_output_path("save_path", "/tmp/run/model.txt", suffixes=(".keras", ".h5"))
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `save_path`: '/tmp/run/model.txt'. Accepted: a file name ending in .keras, .h5.
    """
    path = os.fspath(path)
    kind = "folder" if is_dir else "file"
    if not path:
        raise errors.InvalidArgumentError(name, path, f"the path of an output {kind}")
    if suffixes and not path.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise errors.InvalidArgumentError(
            name, path, f"a file name ending in {', '.join(suffixes)}"
        )
    full = os.path.abspath(path)
    if os.path.exists(full):
        if is_dir and not os.path.isdir(full):
            raise errors.InvalidArgumentError(
                name, path, "a folder; this path is an existing file (choose another path)"
            )
        if not is_dir and os.path.isdir(full):
            raise errors.InvalidArgumentError(
                name, path, "a file path; this path is an existing folder (add a file name)"
            )
    parent = full if is_dir else os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise errors.InvalidArgumentError(
            name,
            path,
            f"a path inside a folder; '{parent}' is a file, so no folder can be made below it "
            f"(choose another {kind})",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise errors.InvalidArgumentError(
            name, path, f"a path you can write; the folder '{parent}' is not writable"
        )
    # os.access answers from the permission bits: root passes it for folders no one can
    # write (/proc, a read-only mount). A folder made and removed at once says for sure.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".pocketflow-probe-", dir=parent))
    except OSError as e:
        raise errors.InvalidArgumentError(
            name,
            path,
            f"a path you can write; nothing can be made in the folder '{parent}' "
            f"({e.strerror or e})",
        ) from None
    return path


def _caller_module(depth: int) -> str:
    # absl files a flag under its defining module and lists the main module's flags (named
    # by sys.argv[0], as absl names it) in --help: register --debug as the command's own.
    name = sys._getframe(depth).f_globals.get("__name__", "__main__")
    return sys.argv[0] if name == "__main__" and sys.argv else name


def _is_on(debug: bool | Callable[[], bool]) -> bool:
    try:
        return bool(debug() if callable(debug) else debug)
    except Exception:  # flags not parsed yet (an error before parsing): no debug
        return False


def _is_absl_usage_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("absl") and type(exc).__name__ == "UsageError"
