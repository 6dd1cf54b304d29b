"""The results files of the benchmark suite: ``bench/results/<benchmark>.json``.

Every file holds ``{"benchmark", "machine", "versions", "records": [...]}``; each record has
the fields of :data:`RECORD_FIELDS` (``None`` where it measures nothing) and may add more.
Other tools (the README table, later issues' comparisons) read these names.

``machine`` is the host of the file's last write (:func:`bench.host.facts`: CPU model, ISA
flags, CPU count, LiteRT and TensorFlow versions, plus ``processor`` and ``system``); each
record written since hosts were recorded carries the same facts in its ``host`` field, so
rows kept from earlier runs, possibly on other hosts, stay attributable. Records of older
runs have no ``host`` and are kept as they are.

Example:
    >>> from bench import results_io
    >>> r = results_io.make_record(model="resnet20", dataset="fmnist", method="full-prec",
    ...                            setting="epochs=30", acc=0.94, command="python -m bench.run")
    >>> r["latency_ratio"] is None
    True
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from bench import host
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


def _key(rec: dict[str, Any]) -> tuple:
    return rec.get("model"), rec.get("method"), rec.get("setting")


def write_results(benchmark: str, recs: list[dict[str, Any]], folder: str = RESULTS) -> str:
    """Writes ``<folder>/<benchmark>.json`` atomically and returns its path.

    Records already in the file whose (model, method, setting) the new run did not measure
    are kept, so a partial rerun (one keep ratio, one model: the benchmarks' environment
    knobs) updates its rows without dropping the others. The new records get this host's
    :func:`bench.host.facts` as ``host`` (unless they name one); kept records are unchanged.

    Example:
        >>> write_results("demo", [make_record(model="m")], folder="/tmp")  # doctest: +SKIP
        '/tmp/demo.json'
    """
    path = os.path.join(folder, f"{benchmark}.json")
    fresh = {_key(r) for r in recs}
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [r for r in json.load(f).get("records", []) if _key(r) not in fresh]
    here = host.facts()
    recs = [r if r.get("host") else {**r, "host": here} for r in recs]
    doc = {
        "benchmark": benchmark,
        "machine": {**here, "processor": platform.machine(), "system": platform.system()},
        "versions": records.library_versions(),
        "records": kept + list(recs),
    }
    return atomic_io.write_json(path, doc)
