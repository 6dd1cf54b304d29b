"""Benchmark ``baselines``: the full-recipe full-precision models on Fashion-MNIST.

Trains (or reuses from ``bench/artifacts``) the convnet, ResNet-20 and the MobileNet-style
net (v1) with their documented full recipes, then measures test accuracy, parameters, FLOPs, float ``.tflite`` bytes and
LiteRT latency (one thread, batch 1, median).

Environment: ``PFTF_BASELINE_RECIPES`` (``,``-separated recipe names of
:data:`pocketflow_tf.nets.recipe.RECIPES`, default :data:`RECIPES`), e.g.
``PFTF_BASELINE_RECIPES=userstyle_at_fmnist`` trains and caches the functional user-style
model that ``PFTF_AUTO_RECIPES=userstyle_at_fmnist`` compresses.

Example:
    >>> from bench.benchmarks import baselines
    >>> baselines.RECIPES
    ('convnet_at_fmnist', 'resnet_at_fmnist', 'mobilenet_at_fmnist')
"""

from __future__ import annotations

import os

from bench import baselines as baseline_cache
from bench import exports
from pocketflow_tf import accounting, datasets, errors, latency, training
from pocketflow_tf.nets import recipe

RECIPES = ("convnet_at_fmnist", "resnet_at_fmnist", "mobilenet_at_fmnist")
COMMAND = "python -m bench.run baselines"


def recipes() -> tuple[str, ...]:
    """The recipes to train or load: ``PFTF_BASELINE_RECIPES``, else :data:`RECIPES`.

    Example:
        >>> os.environ["PFTF_BASELINE_RECIPES"] = "userstyle_at_fmnist"
        >>> recipes()
        ('userstyle_at_fmnist',)
        >>> os.environ["PFTF_BASELINE_RECIPES"] = "vgg_at_fmnist"
        >>> recipes()
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_BASELINE_RECIPES`: 'vgg_at_fmnist'. Accepted: ,-separated names of Fashion-MNIST recipes: ('convnet_at_fmnist', 'resnet_at_fmnist', 'mobilenet_at_fmnist', 'userstyle_at_fmnist').
        >>> del os.environ["PFTF_BASELINE_RECIPES"]
    """
    raw = os.environ.get("PFTF_BASELINE_RECIPES", "")
    names = tuple(v.strip() for v in raw.split(",") if v.strip()) or RECIPES
    # The benchmark evaluates on Fashion-MNIST, so only its recipes are accepted.
    known = tuple(r for r in recipe.RECIPES if recipe.get_recipe(r).dataset == "fmnist")
    if any(n not in known for n in names):
        raise errors.InvalidArgumentError(
            "PFTF_BASELINE_RECIPES", raw, f",-separated names of Fashion-MNIST recipes: {known}"
        )
    return names


def run() -> list[dict]:
    """Trains/loads each baseline and returns one result record per model.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    names = recipes()
    data = datasets.load_dataset("fmnist")
    recs = []
    for name in names:
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
