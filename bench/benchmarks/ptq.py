"""Benchmark ``ptq``: float vs dynamic-range vs full-int8 post-training ``.tflite``.

For each full-recipe baseline: every export is verified (parity / agreement thresholds of
:mod:`pocketflow_tf.tflite_verify`), then evaluated on the whole test split with the LiteRT
interpreter, and its latency is measured against the float export in the same run,
interleaved (A B A B ...), one thread, batch 1, medians.

Example:
    >>> from bench.benchmarks import ptq
    >>> ptq.MODES
    ('float', 'dynamic', 'int8')
"""

from __future__ import annotations

import os
import time

from bench import baselines as baseline_cache
from bench import exports
from pocketflow_tf import datasets, latency

RECIPES = ("convnet_at_fmnist", "resnet_at_fmnist")
MODES = ("float", "dynamic", "int8")
COMMAND = "python -m bench.run ptq"


def run() -> list[dict]:
    """Exports, verifies, evaluates and times each mode; one record per (model, mode).

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    data = datasets.load_dataset("fmnist")
    rep = exports.calibration(data)
    recs = []
    for name in RECIPES:
        model, acc_keras = baseline_cache.scored(name, data)
        deployed, walls = {}, {}
        for mode in MODES:
            start = time.time()
            path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.{mode}.tflite")
            deployed[mode] = exports.export(
                model, path, data, mode=mode, n_verify=1000, rep=rep, evaluate=True
            )
            walls[mode] = round(time.time() - start, 1)
        # Timed once every file exists, each against the float export of the same model.
        for mode in MODES:
            d = deployed[mode]
            if mode != "float":
                ref = deployed["float"].export.path
                d.latency_ratio = latency.interleaved_ratio(
                    d.export.path, ref, rounds=60
                ).latency_ratio
            recs.append(
                exports.record(
                    d,
                    model=model.name,
                    method=f"ptq-{mode}" if mode != "float" else "float",
                    setting=f"tflite={mode}",
                    acc=d.acc,
                    acc_baseline=acc_keras,
                    flops_ratio=1.0,
                    params_ratio=1.0,
                    wall_s=walls[mode],
                    command=COMMAND,
                )
            )
            print(
                f"[bench] {name} {mode}: acc {d.acc:.4f} (keras {acc_keras:.4f}), "
                f"{d.export.bytes} B, latency ratio {recs[-1]['latency_ratio']}"
            )
    return recs
