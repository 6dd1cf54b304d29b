"""Benchmark ``compare``: searched channel allocations and mixed bits against uniform, over seeds.

Issue 22's restated comparisons on the trained ResNet-20 / Fashion-MNIST baseline, where the
earlier criteria could not be reached (uniform pruning at 0.5x FLOPs and uniform 4-bit weights
cost too little for an allocation to win much):

* **allocation** (``PFTF_CMP_PARTS`` has ``allocation``): channel pruning to a FLOPs keep
  ratio of ``PFTF_CMP_KEEP`` (default 0.3). ``alloc-uniform`` keeps one channel ratio
  everywhere (the largest meeting the FLOPs target); ``alloc-greedy`` (sensitivity),
  ``alloc-amc`` (the AMC agent, ``PFTF_CMP_AMC_EPISODES`` episodes, default 300),
  ``alloc-tpe`` and ``alloc-gp`` (``PFTF_CMP_TRIALS`` plans, default 100) search per-group
  counts, each plan scored by the learner's no-fine-tuning proxy. Everything else is shared:
  LASSO selection with least-squares refit, then the same distilled fine-tune (teacher: the
  dense baseline). ``before`` is the test accuracy right after pruning, BatchNorm statistics
  as the learner leaves them (it does not re-estimate them after its refit);
  ``acc_before_bn`` is the same pruned model with them re-estimated on 2,000 training
  images (EagleEye's adaptive BN), mean over the seeds (``acc_before_bn_per_seed``).
* **precision** (``PFTF_CMP_PARTS`` has ``precision``): weight bits by QAT, activations
  8-bit, each setting of ``PFTF_CMP_BITS`` (default ``mixed-3,uniform-3,mixed-2.5,uniform-2``)
  as in :mod:`bench.benchmarks.mixed` (``mixed-B``: per-layer bits 2..8 by measured
  sensitivity, weighted average <= B; ``uniform-B``: B bits on every layer). Uniform bits
  are whole numbers, so 2.5 average bits has no uniform twin: ``mixed-2.5`` is compared
  with ``uniform-2`` (fewer bits) and ``uniform-3`` (more). ``before`` is the float model
  with only its kernels on the setting's levels; ``after`` is the QAT model's Keras
  accuracy after the same fine-tune (no LiteRT export: ``mixed`` verifies and times those).

Every method runs once per seed of ``PFTF_CMP_SEEDS`` (default ``0,1,2``): the seed draws the
calibration images, seeds the searches and the fine-tune's shuffling and augmentation. Each
fine-tune lasts ``PFTF_CMP_EPOCHS`` epochs (default 2) at the recipe's fine-tuning rate.

Records, two per method (``phase`` ``before`` and ``after``, also named in the setting):
``acc`` is the mean test accuracy over the seeds, ``acc_std`` its sample standard deviation
(``None`` with one seed), ``acc_per_seed`` the values in the order of ``seeds``;
``flops_ratio`` (allocation) is the mean measured FLOPs ratio of the pruned models and
``flops_ratio_per_seed`` the values; ``average_bits`` (precision) likewise; ``kept``
(channels kept per group) and ``bits`` (bits per layer) list each seed's plan. ``wall_s`` is
the method's total time over the seeds.

Example:
    >>> from bench.benchmarks import compare
    >>> compare.ALLOCATIONS
    ('alloc-uniform', 'alloc-greedy', 'alloc-amc', 'alloc-tpe', 'alloc-gp')
    >>> compare.summary_records("alloc-tpe", "flops_keep=0.3,epochs=2", [0, 1],
    ...     {"before": [0.5, 0.7], "after": [0.9, 0.92]}, {"flops_ratio": [0.3, 0.29]},
    ...     acc_baseline=0.94, model="resnet20", wall_s=12.0)[1]["acc_std"]
    0.0141
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from bench import baselines as baseline_cache
from bench import results_io
from bench.benchmarks import mixed as mixed_bench
from pocketflow_tf import accounting, batchnorm, datasets, distillation, errors, learner, training
from pocketflow_tf.compat import tf
from pocketflow_tf.learners.channel import ChannelPrunedLearner
from pocketflow_tf.learners.uniform_quant import UniformQuantLearner
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run compare"
RECIPE = "resnet_at_fmnist"
PARTS = ("allocation", "precision")
PHASES = ("before", "after")

#: method -> ChannelPrunedLearner options that differ; the search budgets are added by
#: :func:`_channel_options`. The same criterion (LASSO + refit) everywhere: like with like.
_ALLOCATION_OPTIONS: dict[str, dict[str, Any]] = {
    "alloc-uniform": {"cp_prune_option": "uniform"},
    "alloc-greedy": {"cp_prune_option": "auto"},
    "alloc-amc": {"cp_prune_option": "auto", "cp_ratio_search": "amc"},
    "alloc-tpe": {"cp_prune_option": "auto", "cp_ratio_search": "tpe"},
    "alloc-gp": {"cp_prune_option": "auto", "cp_ratio_search": "gp"},
}
ALLOCATIONS = tuple(_ALLOCATION_OPTIONS)

#: Options every allocation shares (the learner's defaults unless a test makes them small).
CHANNEL_OPTIONS: dict[str, Any] = {"cp_criterion": "lasso"}
#: Training images on which ``acc_before_bn`` re-estimates the pruned model's BatchNorm
#: statistics (the learner's calibration sample size).
BN_IMAGES = 2000
#: The distillation of every fine-tune here and in ``channel`` / ``mixed``: T=2, weight 1.
DISTILLATION = distillation.DistillationConfig(1.0, 2.0)


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def _env_int(name: str, default: int, low: int) -> int:
    """The integer knob ``name`` (>= ``low``), or a clear error.

    Example:
        >>> os.environ["PFTF_CMP_EPOCHS"] = "0"
        >>> _env_int("PFTF_CMP_EPOCHS", 2, 1)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_CMP_EPOCHS`: '0'. Accepted: an integer >= 1.
        >>> del os.environ["PFTF_CMP_EPOCHS"]
        >>> _env_int("PFTF_CMP_EPOCHS", 2, 1)
        2
    """
    raw = os.environ.get(name, str(default)).strip()
    if not raw.isdigit() or int(raw) < low:
        raise errors.InvalidArgumentError(name, raw, f"an integer >= {low}")
    return int(raw)


def _env_ratio(name: str, default: float) -> float:
    """The ratio knob ``name``, a number in (0, 1], or a clear error.

    Example:
        >>> os.environ["PFTF_CMP_KEEP"] = "1.5"
        >>> _env_ratio("PFTF_CMP_KEEP", 0.3)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_CMP_KEEP`: '1.5'. Accepted: a number in (0, 1].
        >>> del os.environ["PFTF_CMP_KEEP"]
    """
    raw = os.environ.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:  # also refuses nan
        raise errors.InvalidArgumentError(name, raw, "a number in (0, 1]")
    return value


def knobs() -> dict[str, Any]:
    """Every environment knob of this benchmark, parsed and checked (the one place that
    reads them).

    Example:
        >>> k = knobs()
        >>> k["seeds"], k["keep"], k["epochs"], k["parts"]
        ([0, 1, 2], 0.3, 2, ['allocation', 'precision'])
    """
    out = {
        "parts": _env_list("PFTF_CMP_PARTS", ",".join(PARTS)),
        "seeds": _env_list("PFTF_CMP_SEEDS", "0,1,2"),
        "epochs": _env_int("PFTF_CMP_EPOCHS", 2, 1),
        "keep": _env_ratio("PFTF_CMP_KEEP", 0.3),
        "methods": _env_list("PFTF_CMP_METHODS", ",".join(ALLOCATIONS)),
        "trials": _env_int("PFTF_CMP_TRIALS", 100, 1),
        "amc_episodes": _env_int("PFTF_CMP_AMC_EPISODES", 300, 1),
        "bits": _env_list("PFTF_CMP_BITS", "mixed-3,uniform-3,mixed-2.5,uniform-2"),
    }
    for raw in out["seeds"]:
        if not raw.isdigit():
            raise errors.InvalidArgumentError(
                "PFTF_CMP_SEEDS", raw, "integers >= 0, comma-separated"
            )
    out["seeds"] = [int(raw) for raw in out["seeds"]]
    for name, values, accepted in (
        ("PFTF_CMP_PARTS", out["parts"], PARTS),
        ("PFTF_CMP_METHODS", out["methods"], ALLOCATIONS),
    ):
        for v in values:
            if v not in accepted:
                raise errors.InvalidArgumentError(name, v, ", ".join(accepted))
    for setting in out["bits"]:
        try:  # an unknown setting stops here, before any training, named by this knob
            mixed_bench._options(setting)
        except errors.InvalidArgumentError:
            raise errors.InvalidArgumentError(
                "PFTF_CMP_BITS", setting, "mixed-B or uniform-B, e.g. mixed-3, uniform-2"
            ) from None
    return out


# The defaults of the knobs a record depends on, as :func:`knobs` parses them.
_DEFAULTS = {"seeds": [0, 1, 2], "epochs": 2, "keep": 0.3, "trials": 100, "amc_episodes": 300}
_ENV = {
    "seeds": "PFTF_CMP_SEEDS",
    "epochs": "PFTF_CMP_EPOCHS",
    "keep": "PFTF_CMP_KEEP",
    "trials": "PFTF_CMP_TRIALS",
    "amc_episodes": "PFTF_CMP_AMC_EPISODES",
}


def command_for(k: dict[str, Any], part: str, item: str) -> str:
    """The command that reproduces the records of one method or bits setting: its part,
    the item alone, and every knob it depends on that differs from the default (a record
    whose command is the bare default run would not say that it came from a partial one).

    Example:
        >>> k = {**knobs(), "seeds": [0], "trials": 7}
        >>> command_for(k, "allocation", "alloc-tpe")
        'PFTF_CMP_PARTS=allocation PFTF_CMP_METHODS=alloc-tpe PFTF_CMP_SEEDS=0 PFTF_CMP_TRIALS=7 python -m bench.run compare'
        >>> command_for(k, "precision", "mixed-3")
        'PFTF_CMP_PARTS=precision PFTF_CMP_BITS=mixed-3 PFTF_CMP_SEEDS=0 python -m bench.run compare'
    """
    env = [f"PFTF_CMP_PARTS={part}"]
    env.append(f"PFTF_CMP_METHODS={item}" if part == "allocation" else f"PFTF_CMP_BITS={item}")
    used = ["seeds", "epochs"]
    if part == "allocation":
        used.append("keep")
        search = _ALLOCATION_OPTIONS[item].get("cp_ratio_search")
        if search == "amc":
            used.append("amc_episodes")
        elif search is not None:
            used.append("trials")
    for name in used:
        if k[name] != _DEFAULTS[name]:
            value = k[name]
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            env.append(f"{_ENV[name]}={text}")
    return " ".join([*env, COMMAND])


def _finetune_config(epochs: int, seed: int) -> training.TrainConfig:
    """The fine-tune every method of both parts gets (the recipe's, with this seed)."""
    return recipe.get_recipe(RECIPE).finetune_config(epochs=epochs, seed=seed)


def _baseline():
    """``(data, dense, acc_dense)``: Fashion-MNIST and the cached trained baseline."""
    data = datasets.load_dataset("fmnist")
    dense, acc_dense = baseline_cache.scored(RECIPE, data)
    return data, dense, acc_dense


def _channel_options(method: str, k: dict[str, Any]) -> dict[str, Any]:
    opts = {**CHANNEL_OPTIONS, **_ALLOCATION_OPTIONS[method], "cp_preserve_ratio": k["keep"]}
    search = opts.get("cp_ratio_search")
    if search == "amc":
        opts["cp_amc_episodes"] = k["amc_episodes"]
    elif search is not None:
        opts["cp_search_trials"] = k["trials"]
    return opts


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value), rounded to 4 places.

    Example:
        >>> _mean_std([0.9, 0.92]), _mean_std([0.9])
        ((0.91, 0.0141), (0.9, None))
    """
    std = statistics.stdev(values) if len(values) > 1 else None
    return round(statistics.mean(values), 4), None if std is None else round(std, 4)


def summary_records(
    method: str,
    setting: str,
    seeds: list[int],
    accs: dict[str, list[float]],
    measured: dict[str, list[float]],
    command: str = COMMAND,
    **fields: Any,
) -> list[dict[str, Any]]:
    """One record per phase of ``accs`` (``{phase: per-seed accuracies}``): mean, std and
    the per-seed values; each ``measured`` field (``{"flops_ratio": per-seed values}``) as
    its mean plus the values under ``<field>_per_seed``; ``command`` reproduces them
    (:func:`command_for`).

    Example:
        >>> r = summary_records("m", "s", [0], {"after": [0.9]}, {"average_bits": [2.5]})[0]
        >>> r["setting"], r["acc"], r["acc_std"], r["average_bits"], r["average_bits_per_seed"]
        ('s,phase=after', 0.9, None, 2.5, [2.5])
    """
    extra = {}
    for name, values in measured.items():
        extra[name] = _mean_std(values)[0]
        extra[f"{name}_per_seed"] = [round(v, 4) for v in values]
    recs = []
    for phase, values in accs.items():
        mean, std = _mean_std(values)
        recs.append(
            results_io.make_record(
                dataset="fmnist",
                method=method,
                setting=f"{setting},phase={phase}",
                acc=mean,
                command=command,
                phase=phase,
                seeds=list(seeds),
                acc_std=std,
                acc_per_seed=[round(a, 4) for a in values],
                **extra,
                **fields,
            )
        )
    return recs


def _over_seeds(method, setting, k, base, make, measure, detail: str, command: str) -> list[dict]:
    """Fine-tunes ``make(train_config)`` (a learner) from the dense model once per seed and
    summarises the seeds (:func:`summary_records`).

    ``base`` is ``(data, dense, acc_dense)``; ``measure(learner, fine-tuned model)`` returns
    ``(acc before fine-tune, {field: measured value}, detail)``, and ``detail`` names the
    field listing the per-seed details (kept channels, bits per layer).
    """
    data, dense, acc_dense = base
    accs: dict[str, list[float]] = {p: [] for p in PHASES}
    measured: dict[str, list[float]] = {}
    details, start = [], time.time()
    for seed in k["seeds"]:
        lrn = make(_finetune_config(k["epochs"], seed))
        out = lrn.fit(dense, data.x_train, data.y_train)
        before, values, info = measure(lrn, out)
        accs["before"].append(before)
        accs["after"].append(training.evaluate_accuracy(out, data.x_test, data.y_test))
        for name, value in values.items():
            measured.setdefault(name, []).append(value)
        details.append(info)
        print(
            f"[bench] compare {method} {setting} seed {seed}: before {before:.4f}, after "
            f"{accs['after'][-1]:.4f} (dense {acc_dense:.4f}), {values}",
            flush=True,
        )
    return summary_records(
        method,
        setting,
        k["seeds"],
        accs,
        measured,
        command=command,
        model=dense.name,
        acc_baseline=round(acc_dense, 4),
        wall_s=round(time.time() - start, 1),
        epochs=k["epochs"],
        **{detail: details},
    )


def allocation(base, k: dict[str, Any]) -> list[dict[str, Any]]:
    """Prunes with each allocation and seed, fine-tunes; two summary records per method.

    Example:
        >>> recs = allocation((data, dense, acc_dense), knobs())  # doctest: +SKIP
    """
    data, dense, _ = base
    dense_flops = accounting.profile_model(dense).total_flops

    bn_images = tf.data.Dataset.from_tensor_slices(data.x_train[:BN_IMAGES]).batch(128)

    def measure(lrn, out):
        # The learner keeps BatchNorm statistics as they were; the same pruned model with
        # them re-estimated (EagleEye's adaptive BN) is measured too, as a second figure.
        adapted = learner.copy_model(lrn.pruned_model)
        batchnorm.reestimate(adapted, bn_images, max_batches=BN_IMAGES // 128 + 1)
        return (
            training.evaluate_accuracy(lrn.pruned_model, data.x_test, data.y_test),
            {
                "flops_ratio": accounting.profile_model(out).total_flops / dense_flops,
                "acc_before_bn": training.evaluate_accuracy(adapted, data.x_test, data.y_test),
            },
            [g["kept"] for g in lrn.report["groups"]],
        )

    recs = []
    for method in k["methods"]:
        opts = _channel_options(method, k)

        def make(cfg, opts=opts):
            return ChannelPrunedLearner(cfg, distillation=DISTILLATION, verbose=1, **opts)

        setting = f"flops_keep={k['keep']},epochs={k['epochs']}"
        command = command_for(k, "allocation", method)
        recs += _over_seeds(method, setting, k, base, make, measure, "kept", command)
    return recs


def precision(base, k: dict[str, Any]) -> list[dict[str, Any]]:
    """QAT with each bits setting and seed; two summary records per setting.

    Example:
        >>> recs = precision((data, dense, acc_dense), knobs())  # doctest: +SKIP
    """
    data, dense, _ = base

    def measure(lrn, out):
        return (
            mixed_bench.weights_only_accuracy(dense, lrn.weight_bits, data.x_test, data.y_test),
            {"average_bits": lrn.report["storage"]["average_bits"]},
            dict(lrn.weight_bits),
        )

    recs = []
    for setting in k["bits"]:
        opts = mixed_bench._options(setting)

        def make(cfg, opts=opts):
            return UniformQuantLearner(cfg, distillation=DISTILLATION, verbose=1, **opts)

        kind, _, bits = setting.partition("-")
        name, how = f"bits-{kind}", f"avg_bits={bits},epochs={k['epochs']}"
        command = command_for(k, "precision", setting)
        recs += _over_seeds(name, how, k, base, make, measure, "bits", command)
    return recs


def run() -> list[dict]:
    """Both parts (``PFTF_CMP_PARTS``) on the cached baseline; two records per method.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    k = knobs()  # every knob checked before the baseline loads
    base = _baseline()
    recs = []
    if "allocation" in k["parts"]:
        recs += allocation(base, k)
    if "precision" in k["parts"]:
        recs += precision(base, k)
    return recs
