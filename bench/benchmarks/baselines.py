"""Benchmark ``baselines``: the full-recipe full-precision models on Fashion-MNIST.

Trains (or reuses from ``bench/artifacts``) the convnet, ResNet-20 and the MobileNet-style
net (v1) with their documented full recipes, then measures test accuracy, parameters, FLOPs, float ``.tflite`` bytes and
LiteRT latency (one thread, batch 1, median).

Example:
    >>> from bench.benchmarks import baselines
    >>> baselines.RECIPES
    ('convnet_at_fmnist', 'resnet_at_fmnist', 'mobilenet_at_fmnist')
"""

from __future__ import annotations

import os

from bench import baselines as baseline_cache
from bench import exports
from pocketflow_tf import accounting, datasets, latency, training

RECIPES = ("convnet_at_fmnist", "resnet_at_fmnist", "mobilenet_at_fmnist")
COMMAND = "python -m bench.run baselines"


def run() -> list[dict]:
    """Trains/loads each baseline and returns one result record per model.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    data = datasets.load_dataset("fmnist")
    recs = []
    for name in RECIPES:
        model, meta = baseline_cache.train_or_load(name)
        acc = training.evaluate_accuracy(model, data.x_test, data.y_test)
        prof = accounting.profile_model(model)
        path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.float.tflite")
        deployed = exports.export(model, path, data, n_verify=1000)
        lat = latency.measure_latency(path, runs=500)
        recs.append(
            exports.record(
                deployed,
                model=model.name,
                method="full-prec",
                setting=f"epochs={meta['train']['epochs']}",
                acc=acc,
                params=prof.total_params,
                flops=prof.total_flops,
                latency_ms=round(lat.median_ms, 4),
                wall_s=meta["train_wall_s"],
                command=COMMAND,
            )
        )
        print(
            f"[bench] {name}: test acc {acc:.4f}, {prof.total_flops:,} FLOPs, {deployed.export.bytes} B"
        )
    return recs
