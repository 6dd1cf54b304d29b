"""Benchmark ``channel``: channel pruning at fixed FLOPs keep ratios, ours vs uniform L1-norm.

For each baseline and FLOPs keep ratio (0.5 and 0.4 by default):

* ``channel-lasso-auto``: per-group counts from the sensitivity allocation, LASSO selection
  and least-squares refit, then distilled fine-tuning (teacher: the dense baseline);
* ``channel-lasso-auto-latency``: the same, but the allocation spends the FLOPs budget where
  it saves the most LiteRT time (``cp_cost="latency"``, per-layer latencies measured here);
* ``channel-lasso-auto-2x``: the latency-cost allocation, going on past the FLOPs target
  until the table predicts at most 0.49 of the dense latency (``cp_latency_keep``; 0.49
  leaves room for the table's error, so the measured speed-up is 2x or more);
* ``channel-lasso-amc``: the same, but the per-group counts are searched by the AMC agent
  (DDPG with action bounding, ``PFTF_CP_AMC_EPISODES`` episodes, default 300), each episode
  scored by the same no-fine-tuning proxy (AMC's own: L1 selection with every reader refitted
  by least squares, ``cp_proxy="refit"``);
* ``channel-lasso-uniform``: LASSO selection with one channel ratio everywhere (what AMC
  is compared with);
* ``channel-l1-uniform``: the same FLOPs target with one channel ratio everywhere, L1-norm
  selection, the same fine-tuning (Li et al. 2017; like with like).

Each record holds accuracy before (``acc_pruned``) and after fine-tuning, FLOPs and params
ratios measured on the built model, float ``.tflite`` bytes, and the LiteRT latency ratio
against the dense float export measured interleaved in the same run (one thread, batch 1).
Every export is verified before it is timed.

Environment knobs (for smoke runs): ``PFTF_CP_EPOCHS`` (fine-tune epochs, default 6),
``PFTF_CP_LR`` (peak fine-tuning learning rate, default the recipe's; named in the
setting when given), ``PFTF_CP_RECIPES`` (comma list, default ``resnet_at_fmnist,mobilenet_at_fmnist``),
``PFTF_CP_KEEP`` (comma list of FLOPs keep ratios, default ``0.5,0.4``), ``PFTF_CP_METHODS``
(comma list of methods, default all), ``PFTF_CP_SEED`` (seed of the calibration sample, the
selection and the fine-tuning's shuffling and augmentation, default 0; any other seed is named
in the setting, so repeated seeds are separate rows).

Example:
    >>> from bench.benchmarks import channel
    >>> channel.METHODS
    ('channel-lasso-auto', 'channel-lasso-auto-latency', 'channel-lasso-auto-2x', 'channel-lasso-amc', 'channel-lasso-uniform', 'channel-l1-uniform')
"""

from __future__ import annotations

import os
import time

from bench import baselines as baseline_cache
from bench import exports
from pocketflow_tf import (
    accounting,
    datasets,
    distillation,
    errors,
    training,
)
from pocketflow_tf.learners.channel import ChannelPrunedLearner, amc_search
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run channel"


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def _env_seed() -> int:
    """``PFTF_CP_SEED`` as an integer >= 0 (0 when unset: the recipe's seed).

    Example:
        >>> os.environ["PFTF_CP_SEED"] = "x"
        >>> _env_seed()
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_CP_SEED`: 'x'. Accepted: an integer >= 0.
        >>> del os.environ["PFTF_CP_SEED"]
        >>> _env_seed()
        0
    """
    raw = os.environ.get("PFTF_CP_SEED", "0").strip()
    if not raw.isdigit():
        raise errors.InvalidArgumentError("PFTF_CP_SEED", raw, "an integer >= 0")
    return int(raw)


#: method -> (cp_prune_option, cp_criterion, cp_cost, allocation search, cp_latency_keep);
#: everything else is shared, like with like.
_SETTINGS = {
    "channel-lasso-auto": ("auto", "lasso", "flops", "greedy", None),
    "channel-lasso-auto-latency": ("auto", "lasso", "latency", "greedy", None),
    "channel-lasso-auto-2x": ("auto", "lasso", "latency", "greedy", 0.49),
    "channel-lasso-amc": ("auto", "lasso", "flops", "amc", None),
    "channel-lasso-uniform": ("uniform", "lasso", "flops", "greedy", None),
    "channel-l1-uniform": ("uniform", "l1", "flops", "greedy", None),
}


def _learner(method: str, keep: float, cfg: training.TrainConfig) -> ChannelPrunedLearner:
    option, criterion, cost, search, latency_keep = _SETTINGS[method]
    ratio_search = None
    if search == "amc":
        episodes = int(os.environ.get("PFTF_CP_AMC_EPISODES", "300"))
        ratio_search = amc_search.amc_ratio_search(episodes=episodes, seed=0, verbose=True)
    return ChannelPrunedLearner(
        cfg,
        cp_prune_option=option,
        cp_preserve_ratio=keep,
        cp_criterion=criterion,
        cp_cost=cost,
        cp_latency_keep=latency_keep,
        ratio_search=ratio_search,
        distillation=distillation.DistillationConfig(1.0, 2.0),
        verbose=2,
    )


METHODS = tuple(_SETTINGS)


def run() -> list[dict]:
    """Prunes, fine-tunes, exports, verifies and times; one record per (model, keep, method).

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    epochs = int(os.environ.get("PFTF_CP_EPOCHS", "6"))
    lr = os.environ.get("PFTF_CP_LR")  # None: the recipe's fine-tuning rate
    # 0 is the recipe's seed and keeps the untagged setting, so it stays one row.
    seed = _env_seed()
    setting = (
        f"epochs={epochs}" + (f",lr={float(lr)}" if lr else "") + (f",seed={seed}" if seed else "")
    )
    data = datasets.load_dataset("fmnist")
    recs = []
    for name in _env_list("PFTF_CP_RECIPES", "resnet_at_fmnist,mobilenet_at_fmnist"):
        dense, acc_dense = baseline_cache.scored(name, data)
        changes = {"learning_rate": float(lr)} if lr else {}
        if seed:
            changes["seed"] = seed
        cfg = recipe.get_recipe(name).finetune_config(epochs=epochs, **changes)
        dense_path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.float.tflite")
        dense_exp = exports.export(dense, dense_path, data).export
        dense_profile = accounting.profile_model(dense)
        for keep in (float(k) for k in _env_list("PFTF_CP_KEEP", "0.5,0.4")):
            for method in _env_list("PFTF_CP_METHODS", ",".join(METHODS)):
                start = time.time()
                lrn = _learner(method, keep, cfg)
                out = lrn.fit(dense, data.x_train, data.y_train)
                wall = time.time() - start
                acc_pruned = training.evaluate_accuracy(lrn.pruned_model, data.x_test, data.y_test)
                acc = training.evaluate_accuracy(out, data.x_test, data.y_test)
                prof = accounting.profile_model(out)
                path = os.path.join(
                    baseline_cache.ARTIFACTS, f"{name}.{method}.keep{keep}.float.tflite"
                )
                deployed = exports.export(out, path, data, reference=dense_path, rounds=60)
                ratio = deployed.latency_ratio
                rec = exports.record(
                    deployed,
                    model=dense.name,
                    method=method,
                    setting=f"flops_keep={keep},{setting}",
                    acc=acc,
                    acc_baseline=acc_dense,
                    flops_ratio=round(prof.total_flops / dense_profile.total_flops, 4),
                    params_ratio=round(prof.total_params / dense_profile.total_params, 4),
                    wall_s=round(wall, 1),
                    command=COMMAND,
                    acc_pruned=round(acc_pruned, 4),
                    epochs=epochs,
                    kept=[g["kept"] for g in lrn.report["groups"]],
                    dense_bytes=dense_exp.bytes,
                    prune_wall_s=lrn.report["prune_wall_s"],
                    proxy=lrn.cp_proxy if lrn.cp_prune_option == "auto" else None,
                    latency_keep=lrn.cp_latency_keep,
                    predicted_latency_ratio=lrn.report.get("latency_table", {}).get(
                        "predicted_latency_ratio"
                    ),
                )
                recs.append(rec)
                print(
                    f"[bench] {name} keep {keep} {method}: acc {acc:.4f} (pruned {acc_pruned:.4f}, "
                    f"dense {acc_dense:.4f}), FLOPs x{rec['flops_ratio']}, latency x{ratio:.3f}, "
                    f"speed-up {1 / ratio:.2f}x, {wall:.0f} s"
                )
    return recs
