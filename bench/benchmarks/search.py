"""Benchmark ``search``: TPE and GP against random search on one channel allocation problem.

The problem is the one ``ChannelPrunedLearner(cp_prune_option="auto")`` hands to its
search for ResNet-20 / Fashion-MNIST at 0.5x FLOPs: one channel count per group (12 groups),
every proposal bounded to the FLOPs target, each plan scored by the learner's proxy (L1
selection, readers refitted by least squares, minus the cross-entropy on 2,000 *training*
images, no fine-tuning). Every optimiser gets the same budget of trials on the same
problem, for several seeds; a plan two searches both visit is scored once (the score is
deterministic), which changes no result and saves time.

Per optimiser, one record:

* ``best_score``: the best proxy score found, median over the seeds;
* ``trials_to_random_best``: per seed, the first trial at which the search's best so far
  reached random search's final best of the same seed ("–": not within the budget);
* ``acc_pruned``, ``flops_ratio``: test accuracy of the seed-0 best plan after the
  learner's real pruning (LASSO selection and refit, no fine-tuning), and its FLOPs ratio;
* ``curves``: best-so-far per trial and seed; ``wall_s``: search time over all seeds.

Environment knobs: ``PFTF_SEARCH_TRIALS`` (default 60), ``PFTF_SEARCH_SEEDS`` (default 3),
``PFTF_SEARCH_KEEP`` (FLOPs keep ratio, default 0.5).

Example:
    >>> from bench.benchmarks import search
    >>> search.OPTIMIZERS
    ('random', 'tpe', 'gp')
"""

from __future__ import annotations

import os
import statistics
import time

from bench import baselines as baseline_cache
from bench import results_io
from pocketflow_tf import accounting, datasets, training
from pocketflow_tf.learners.channel import ChannelPrunedLearner, optimizer_search
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run search"
OPTIMIZERS = ("random", "tpe", "gp")
RECIPE = "resnet_at_fmnist"


def first_reaching(curve: list[float | None], level: float | None) -> int | None:
    """1-based index of the first entry of ``curve`` at or above ``level`` (None: never).

    ``None`` entries (no trial scored yet) never reach; a ``None`` level (the reference
    search scored nothing) is reached by nobody.

    Example:
        >>> first_reaching([-3.0, -2.0, -1.0], -2.0), first_reaching([-3.0], -1.0)
        (2, None)
        >>> first_reaching([None, -1.0], None)
    """
    if level is None:
        return None
    for i, value in enumerate(curve):
        if value is not None and value >= level:
            return i + 1
    return None


def _median(values: list[float | None]) -> float | None:
    """Median of the scored values, rounded; None when none scored.

    Example:
        >>> _median([-0.3, None, -0.5, -0.1]), _median([None])
        (-0.3, None)
    """
    scored = [v for v in values if v is not None]
    return round(statistics.median(scored), 4) if scored else None


def run() -> list[dict]:
    """Searches the allocation with each optimiser and seed; one record per optimiser.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    trials = int(os.environ.get("PFTF_SEARCH_TRIALS", "60"))
    seeds = int(os.environ.get("PFTF_SEARCH_SEEDS", "3"))
    keep = float(os.environ.get("PFTF_SEARCH_KEEP", "0.5"))
    data = datasets.load_dataset("fmnist")
    dense, acc_dense = baseline_cache.scored(RECIPE, data)
    cfg = recipe.get_recipe(RECIPE).finetune_config(epochs=1)
    lrn = ChannelPrunedLearner(cfg, cp_prune_option="auto", cp_preserve_ratio=keep)
    problem = lrn.allocation_problem(dense, data.x_train, data.y_train)
    scored: dict[tuple, float] = {}
    proxy = problem.evaluate

    def evaluate(counts):
        key = tuple(sorted(counts.items()))
        if key not in scored:
            scored[key] = proxy(counts)
        return scored[key]

    problem.evaluate = evaluate
    runs: dict[str, list] = {name: [] for name in OPTIMIZERS}
    walls = dict.fromkeys(OPTIMIZERS, 0.0)
    for seed in range(seeds):
        for name in OPTIMIZERS:
            start = time.time()
            searcher = optimizer_search.optimizer_ratio_search(name, trials=trials, seed=seed)
            counts = searcher(problem)
            walls[name] += time.time() - start
            curve = [h["best"] for h in searcher.history]
            runs[name].append({"counts": counts, "curve": curve, "best": curve[-1]})
            print(f"[bench] search {name} seed {seed}: best {curve[-1]} ({counts})")
    dense_flops = accounting.profile_model(dense).total_flops
    recs = []
    for name in OPTIMIZERS:
        reach = [
            first_reaching(r["curve"], rand["best"])
            for r, rand in zip(runs[name], runs["random"], strict=True)
        ]
        counts = runs[name][0]["counts"]
        prune = ChannelPrunedLearner(
            cfg, cp_prune_option="auto", cp_preserve_ratio=keep, ratio_search=lambda p, c=counts: c
        )
        thin = prune.prune(dense, data.x_train, data.y_train)
        recs.append(
            results_io.make_record(
                model=dense.name,
                dataset="fmnist",
                method=f"search-{name}",
                setting=f"flops_keep={keep},trials={trials},seeds={seeds}",
                acc_baseline=round(acc_dense, 4),
                acc_pruned=round(training.evaluate_accuracy(thin, data.x_test, data.y_test), 4),
                flops_ratio=round(accounting.profile_model(thin).total_flops / dense_flops, 4),
                wall_s=round(walls[name], 1),
                command=COMMAND,
                # None when every trial of every seed failed (no score to take a median of)
                best_score=_median([r["best"] for r in runs[name]]),
                trials_to_random_best=reach,
                curves=[[round(v, 4) for v in r["curve"]] for r in runs[name]],
                best_counts=[r["counts"] for r in runs[name]],
                plans_scored=len(scored),
            )
        )
    return recs
