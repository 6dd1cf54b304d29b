"""The results files of the benchmark suite: ``bench/results/<benchmark>.json``.

Every file holds ``{"benchmark", "machine", "versions", "records": [...]}``; each record has
the fields of :data:`RECORD_FIELDS` (``None`` where it measures nothing) and may add more.
Other tools (the README table, later issues' comparisons) read these names.

Example:
    >>> from bench import results_io
    >>> r = results_io.make_record(model="resnet20", dataset="fmnist", method="full-prec",
    ...                            setting="epochs=30", acc=0.94, command="python -m bench.run")
    >>> r["latency_ratio"] is None
    True
"""

from __future__ import annotations

import os
import platform
from typing import Any

from pocketflow_tf import atomic_io, records

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

RECORD_FIELDS = (
    "model",
    "dataset",
    "method",
    "setting",
    "acc",
    "acc_baseline",
    "flops_ratio",
    "params_ratio",
    "bytes",
    "bytes_gzip",
    "latency_ratio",
    "wall_s",
    "command",
)


def make_record(**fields: Any) -> dict[str, Any]:
    """A result record with every standard field present (``None`` when not given).

    Example:
        >>> sorted(make_record(model="m")).count("acc")
        1
    """
    rec = {name: None for name in RECORD_FIELDS}
    rec.update(fields)
    return rec


def write_results(benchmark: str, recs: list[dict[str, Any]], folder: str = RESULTS) -> str:
    """Writes ``<folder>/<benchmark>.json`` atomically and returns its path.

    Example:
        >>> write_results("demo", [make_record(model="m")], folder="/tmp")  # doctest: +SKIP
        '/tmp/demo.json'
    """
    doc = {
        "benchmark": benchmark,
        "machine": {
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            "system": platform.system(),
        },
        "versions": records.library_versions(),
        "records": recs,
    }
    return atomic_io.write_json(os.path.join(folder, f"{benchmark}.json"), doc)
