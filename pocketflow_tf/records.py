"""Run records: what was run, with which libraries, what came out, and how long it took.

A :class:`RunRecord` collects the configuration, library versions, metrics, artefacts (path,
size, sha256) and free-form sections (e.g. a per-layer cost profile) of one run, and saves
them atomically as JSON and as a human-readable Markdown report. :func:`progress` reports
the progress of long loops that are not Keras ``fit`` calls.

This module does not import TensorFlow, so that reading or writing a record stays cheap.

Example:
    >>> import os, tempfile
    >>> from pocketflow_tf import records
    >>> rec = records.RunRecord("baseline", {"net": "resnet_20", "epochs": 2})
    >>> rec.add_metrics(top1=0.91, loss=0.25)
    >>> rec.finish()
    >>> d = tempfile.mkdtemp()
    >>> path = rec.save(os.path.join(d, "run.json"))
    >>> import json; json.load(open(path))["metrics"]["top1"]
    0.91
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import IO, Any, TypeVar

from pocketflow_tf import atomic_io, errors, options

T = TypeVar("T")

#: Version keys of :func:`library_versions` and the distributions they are read from (the
#: first one installed wins; e.g. TensorFlow may be installed as ``tensorflow-cpu``).
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"),
    "tf_keras": ("tf-keras", "tf_keras"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization",),
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "keras_tuner": ("keras-tuner",),
    "optuna": ("optuna",),
    "pocketflow_tf": ("pocketflow-tf",),
}

_STATUS_RUNNING = "running"


def library_versions() -> dict[str, str | int | None]:
    """Versions of Python, of the libraries a result depends on, and of the machine.

    Read from installed package metadata, so nothing heavy (TensorFlow) is imported.
    A library that is not installed maps to ``None``.

    Returns:
        A dict with keys ``python``, ``tensorflow``, ``tf_keras``,
        ``tensorflow_model_optimization``, ``ai_edge_litert``, ``keras`` (Keras 3, which
        pocketflow-tf does not use but which may shadow ``tf.keras``), ``numpy``,
        ``keras_tuner``, ``optuna``, ``pocketflow_tf``, ``platform``, ``machine`` and
        ``cpu_count`` (an int).

    Example:
        >>> v = library_versions()
        >>> v["python"] == platform.python_version()
        True
    """
    versions: dict[str, str | int | None] = {"python": platform.python_version()}
    for key, dists in _DISTRIBUTIONS.items():
        versions[key] = None
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    versions["platform"] = platform.platform()
    versions["machine"] = platform.machine()
    versions["cpu_count"] = os.cpu_count()
    return versions


class RunRecord:
    """The record of one run: config, versions, metrics, artefacts, sections, timing.

    Timestamps are ISO 8601 in UTC; ``wall_s`` is measured with a monotonic clock so a
    clock change during the run does not distort it. Values are converted to JSON-ready
    types when added (NumPy scalars and arrays, tuples, sets, paths, dataclasses, objects
    with ``to_dict()``), so a record never fails to save at the end of a long run; non-finite
    floats are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"`` to keep the file strict
    JSON.

    Used as a context manager, the record finishes with status ``"ok"``, or ``"failed"`` (and
    the exception in ``error``) when the block raises.

    Args:
        kind: What the run was, e.g. ``"baseline"``, ``"channel_pruning"``.
        config: The configuration of the run (deep-copied: later edits do not leak in).
        command: The command line; defaults to ``sys.argv``.

    Example:
        >>> with RunRecord("demo", {"lr": 0.1}, command=["demo"]) as rec:
        ...     rec.set_metric("top1", 0.5)
        >>> rec.status, rec.to_dict()["metrics"]
        ('ok', {'top1': 0.5})
    """

    def __init__(self, kind: str, config: Mapping[str, Any], *, command: list[str] | None = None):
        if not isinstance(kind, str) or not kind.strip():
            raise errors.InvalidArgumentError("kind", kind, "a non-empty string")
        if not isinstance(config, Mapping):
            raise errors.InvalidArgumentError("config", config, "a dict")
        if command is not None and (
            isinstance(command, str) or not all(isinstance(c, str) for c in command)
        ):
            raise errors.InvalidArgumentError("command", command, "None or a list of strings")
        self.kind = kind
        self.config: dict[str, Any] = _jsonable(dict(config))
        self.command: list[str] = list(sys.argv if command is None else command)
        self.versions = library_versions()
        self.metrics: dict[str, Any] = {}
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.sections: dict[str, Any] = {}
        self.status = _STATUS_RUNNING
        self.error: str | None = None
        self.started = _utc_now()
        self.finished: _dt.datetime | None = None
        self._t0 = time.monotonic()
        self._wall_s: float | None = None

    # -- collecting ---------------------------------------------------------------------

    def set_metric(self, name: str, value: Any) -> None:
        """Sets (or overwrites) one metric.

        Example:
            >>> rec = RunRecord("demo", {}, command=[])
            >>> rec.set_metric("", 1)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `name`: ''. Accepted: a non-empty string.
        """
        _check_name("name", name)
        self.metrics[name] = _jsonable(value)

    def add_metrics(self, **metrics: Any) -> None:
        """Sets several metrics at once.

        Example:
            >>> rec = RunRecord("demo", {}, command=[])
            >>> rec.add_metrics(top1=0.9, top5=0.99)
            >>> sorted(rec.metrics)
            ['top1', 'top5']
        """
        for name, value in metrics.items():
            self.set_metric(name, value)

    def add_artifact(self, name: str, path: str | os.PathLike) -> dict[str, Any]:
        """Records an output file or folder with its size and sha256.

        Hash the artefact once it is final: the record keeps the hash of the bytes seen now.

        Args:
            name: Key of the artefact, e.g. ``"tflite_int8"``.
            path: An existing file or folder (a folder is hashed file by file, sorted).

        Returns:
            The entry: ``{"path", "type", "bytes", "sha256"}`` with an absolute path.

        Example:
            >>> rec = RunRecord("demo", {}, command=[])
            >>> rec.add_artifact("src", __file__)["type"]
            'file'
        """
        _check_name("name", name)
        p = os.fspath(path)
        if not os.path.exists(p):
            raise errors.InvalidArgumentError("path", p, "an existing file or folder")
        if os.path.isdir(p):
            size = sum(
                os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(p)
                for f in files
            )
            kind = "folder"
        else:
            size, kind = os.path.getsize(p), "file"
        entry = {
            "path": os.path.abspath(p),
            "type": kind,
            "bytes": size,
            "sha256": atomic_io.sha256_file(p),
        }
        self.artifacts[name] = entry
        return dict(entry)

    def add_section(self, name: str, obj: Any) -> None:
        """Attaches a free-form section, e.g. ``"profile"`` = a ``ModelProfile`` or its dict.

        Objects with a ``to_dict()`` method are stored as that dict. A ``"profile"`` section
        is rendered as a per-layer table by :meth:`save_markdown`.

        Example:
            >>> rec = RunRecord("demo", {}, command=[])
            >>> rec.add_section("notes", {"why": "smoke test"})
            >>> rec.to_dict()["sections"]["notes"]["why"]
            'smoke test'
        """
        _check_name("name", name)
        self.sections[name] = _jsonable(obj)

    def finish(self, status: str = "ok", error: str | None = None) -> None:
        """Stamps the finish time and wall time and sets the final status.

        Args:
            status: e.g. ``"ok"``, ``"failed"``, ``"interrupted"``.
            error: Optional error message to keep with a failed run.

        Example:
            >>> rec = RunRecord("demo", {}, command=[])
            >>> rec.finish("failed", error="diverged")
            >>> rec.to_dict()["status"], rec.to_dict()["error"]
            ('failed', 'diverged')
        """
        _check_name("status", status)
        self.finished = _utc_now()
        self._wall_s = time.monotonic() - self._t0
        self.status = status
        if error is not None:
            self.error = str(error)

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("ok")
        else:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
            self.finish(status, error=f"{exc_type.__name__}: {exc}")

    # -- output -------------------------------------------------------------------------

    @property
    def wall_s(self) -> float:
        """Seconds from creation to :meth:`finish` (or to now while running).

        Example:
            >>> RunRecord("demo", {}, command=[]).wall_s >= 0
            True
        """
        return self._wall_s if self._wall_s is not None else time.monotonic() - self._t0

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict.

        Example:
            >>> d = RunRecord("demo", {"a": 1}, command=["x"]).to_dict()
            >>> d["kind"], d["status"], d["finished"], d["config"]
            ('demo', 'running', None, {'a': 1})
        """
        return {
            "kind": self.kind,
            "status": self.status,
            "error": self.error,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            "wall_s": round(self.wall_s, 3),
            "command": list(self.command),
            "config": copy.deepcopy(self.config),
            "versions": dict(self.versions),
            "metrics": copy.deepcopy(self.metrics),
            "artifacts": copy.deepcopy(self.artifacts),
            "sections": copy.deepcopy(self.sections),
        }

    def save(self, path: str | os.PathLike) -> str:
        """Writes the record as indented JSON, atomically; returns the path.

        Example:
            >>> rec = RunRecord("demo", {}, command=[])
            >>> rec.save("/tmp/run.json")  # doctest: +SKIP
            '/tmp/run.json'
        """
        return atomic_io.write_json(path, self.to_dict())

    def save_markdown(self, path: str | os.PathLike) -> str:
        """Writes a human-readable Markdown report, atomically; returns the path.

        The report has a title, the run summary, then tables of config, metrics, artefacts
        (with sha256), library versions, the per-layer table of a ``"profile"`` section, and
        every other section as JSON.

        Example:
            >>> rec = RunRecord("demo", {"lr": 0.1}, command=[])
            >>> rec.save_markdown("/tmp/run.md")  # doctest: +SKIP
            '/tmp/run.md'
        """
        return atomic_io.write_text(path, self.to_markdown())

    def to_markdown(self) -> str:
        """The Markdown report written by :meth:`save_markdown`.

        Example:
            >>> print(RunRecord("demo", {}, command=[]).to_markdown().splitlines()[0])
            # Run record: demo
        """
        d = self.to_dict()
        out = [f"# Run record: {d['kind']}", ""]
        out += [
            f"- **Status:** {d['status']}" + (f" ({_md_cell(d['error'])})" if d["error"] else ""),
            f"- **Started:** {d['started']}",
            f"- **Finished:** {d['finished'] or '-'}",
            f"- **Wall time:** {_format_duration(d['wall_s'])} ({d['wall_s']} s)",
            "",
        ]
        if d["command"]:
            out += ["## Command", "", "```", " ".join(d["command"]), "```", ""]
        out += ["## Config", ""]
        out += _md_table(["Key", "Value"], _flatten(d["config"])) + [""]
        out += ["## Metrics", ""]
        out += _md_table(["Metric", "Value"], sorted(d["metrics"].items())) + [""]
        out += ["## Artefacts", ""]
        art_rows = [
            [name, a["type"], f"`{a['path']}`", f"{a['bytes']:,}", f"`{a['sha256']}`"]
            for name, a in sorted(d["artifacts"].items())
        ]
        out += _md_table(["Name", "Type", "Path", "Bytes", "sha256"], art_rows) + [""]
        out += ["## Versions", ""]
        out += _md_table(["Library", "Version"], sorted(d["versions"].items())) + [""]
        sections = dict(d["sections"])
        profile = sections.pop("profile", None)
        if profile is not None:
            out += ["## Per-layer cost (batch 1)", ""] + _profile_markdown(profile) + [""]
        for name, obj in sorted(sections.items()):
            out += [f"## {name}", "", "```json", json.dumps(obj, indent=2, sort_keys=True)]
            out += ["```", ""]
        return "\n".join(out)


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """Throttled progress reports for long loops outside Keras ``fit``.

    Prints ``desc: i/total (pct) elapsed h:mm:ss, ETA h:mm:ss`` at most once per
    ``every_s`` seconds and once at the end. On a terminal the line is redrawn in place; on
    anything else (log files, CI) each report is a plain line, so a fast loop writes only a
    handful of lines and never a stream of carriage returns.

    Args:
        total: Number of steps, or ``None`` if unknown (then a rate is shown instead).
        desc: Label printed in front of each report.
        stream: Where to write; ``None`` disables output.
        every_s: Minimum seconds between two reports.
        clock: Monotonic time source (injectable for tests).

    Example:
        >>> import io
        >>> buf = io.StringIO()
        >>> with ProgressBar(3, "calib", stream=buf) as bar:
        ...     for _ in range(3):
        ...         bar.update()
        >>> buf.getvalue().startswith("calib: 3/3 (100%)")
        True
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        stream: IO[str] | None = sys.stderr,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if total is not None:
            options.check_integer("total", total, low=0)
        if not (isinstance(every_s, int | float) and every_s >= 0):
            raise errors.InvalidArgumentError("every_s", every_s, "a number of seconds >= 0")
        self.total = None if total is None else int(total)
        self.desc = desc
        self.stream = stream
        self.every_s = float(every_s)
        self.n = 0
        self.lines_written = 0
        self._clock = clock
        self._t0 = clock()
        self._last = self._t0
        self._closed = False
        isatty = getattr(stream, "isatty", None)
        self._tty = bool(isatty and isatty())

    def update(self, n: int = 1) -> None:
        """Advances by ``n`` steps; reports if ``every_s`` has passed since the last report.

        Example:
            >>> bar = ProgressBar(10, stream=None)
            >>> bar.update(4); bar.n
            4
        """
        self.n += n
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._write(self.format(now), final=False)

    def close(self) -> None:
        """Writes the final report (once).

        Example:
            >>> ProgressBar(0, stream=None).close()
        """
        if self._closed:
            return
        self._closed = True
        self._write(self.format(self._clock()), final=True)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def format(self, now: float | None = None) -> str:
        """The current report line (without newline).

        Example:
            >>> t = iter([0.0, 10.0])
            >>> bar = ProgressBar(4, "eval", stream=None, clock=lambda: next(t))
            >>> bar.n = 1
            >>> bar.format()
            'eval: 1/4 (25%) elapsed 0:00:10, ETA 0:00:30'
        """
        elapsed = (self._clock() if now is None else now) - self._t0
        head = f"{self.desc}: " if self.desc else ""
        if self.total is None:
            rate = self.n / elapsed if elapsed > 0 else 0.0
            return f"{head}{self.n} it, elapsed {_format_duration(elapsed)}, {rate:.1f} it/s"
        pct = 100.0 * self.n / self.total if self.total else 100.0
        if 0 < self.n < self.total:
            eta = _format_duration(elapsed / self.n * (self.total - self.n))
        elif self.n >= self.total:
            eta = _format_duration(0)
        else:
            eta = "?"
        return (
            f"{head}{self.n}/{self.total} ({pct:.0f}%) "
            f"elapsed {_format_duration(elapsed)}, ETA {eta}"
        )

    def _write(self, line: str, final: bool) -> None:
        if self.stream is None:
            return
        if self._tty:
            # Redraw in place; only the final report ends the line.
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.lines_written += 1


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    stream: IO[str] | None = sys.stderr,
    every_s: float = 1.0,
) -> Iterator[T]:
    """Yields from ``iterable`` while reporting progress with a :class:`ProgressBar`.

    Args:
        iterable: The loop to wrap.
        total: Number of items; defaults to ``len(iterable)`` when it has one.
        desc: Label of the reports.
        stream: Where to write (``None``: silent).
        every_s: Minimum seconds between reports; a final report is always written, also
            when the loop is left early.

    Example:
        >>> import io
        >>> buf = io.StringIO()
        >>> sum(progress(range(1000), desc="sum", stream=buf))
        499500
        >>> buf.getvalue().splitlines()[-1].split(" elapsed")[0]
        'sum: 1000/1000 (100%)'
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = ProgressBar(total, desc, stream=stream, every_s=every_s)
    try:
        for item in iterable:
            yield item
            bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------------- helpers


def _utc_now() -> _dt.datetime:
    # `timezone.utc`, not `datetime.UTC`: setup.py still allows Python 3.10.
    return _dt.datetime.now(_dt.timezone.utc)  # noqa: UP017


def _check_name(arg: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise errors.InvalidArgumentError(arg, value, "a non-empty string")


def _jsonable(obj: Any) -> Any:
    """A JSON-ready deep copy of ``obj`` (see :class:`RunRecord`)."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)  # 'nan', 'inf', '-inf'
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    # NumPy scalars and arrays (and TF eager tensors via .numpy()) without importing either.
    if hasattr(obj, "numpy") and callable(obj.numpy):
        obj = obj.numpy()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return _jsonable(obj.item())
    # Last resort: keep a readable trace rather than failing the save at the end of a run.
    return repr(obj)


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _md_cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True)
    else:
        text = "-" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    rows = [[_md_cell(c) for c in r] for r in rows]
    if not rows:
        return ["_(none)_"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts become dotted keys so a config fits a two-column table."""
    items: list[tuple[str, Any]] = []
    for k, v in sorted(d.items()):
        if isinstance(v, Mapping) and v:
            items += _flatten(v, f"{prefix}{k}.")
        else:
            items.append((f"{prefix}{k}", v))
    return items


def _profile_markdown(profile: Any) -> list[str]:
    """Renders ``ModelProfile.to_dict()`` output; anything else is shown as JSON."""
    if not isinstance(profile, Mapping) or not isinstance(profile.get("layers"), list):
        return ["```json", json.dumps(profile, indent=2, sort_keys=True), "```"]
    rows = []
    for lay in profile["layers"]:
        kind = str(lay.get("class_name", "?"))
        if lay.get("wrappers"):
            kind += f" ({'>'.join(lay['wrappers'])})"
        if lay.get("known") is False:
            kind += " ?"
        shape = lay.get("output_shape")
        rows.append(
            [
                lay.get("name"),
                kind,
                "(" + ", ".join(map(str, shape)) + ")" if isinstance(shape, list) else shape,
                f"{lay.get('macs', 0):,}",
                f"{lay.get('flops', 0):,}",
                f"{lay.get('params', 0):,}",
            ]
        )
    totals = ["**Total**", "", ""] + [
        f"**{profile.get(k, 0):,}**" for k in ("total_macs", "total_flops", "total_params")
    ]
    lines = _md_table(["Layer", "Type", "Output shape", "MACs", "FLOPs", "Params"], rows)
    if rows:
        lines.append("| " + " | ".join(totals) + " |")
    if profile.get("unknown_layers"):
        lines += [
            "",
            "Unknown layer types (0 FLOPs assumed): "
            + ", ".join(map(str, profile["unknown_layers"])),
        ]
    return lines


__all__ = ["ProgressBar", "RunRecord", "library_versions", "progress"]
