"""Benchmark ``trials``: the ``auto`` search with 1 and with 2 trial worker processes.

Each run is the real command line, ``./run_local.sh nets/<recipe>_run.py --learner auto
--model_path <the cached full-recipe baseline> --auto_target <target> --auto_max_trials
<trials> --auto_trial_workers <n>``, once per worker count, on the same model, target and
seed. One record per worker count:

* ``search_s``: the search's own wall time (the span during which a trial ran, read back
  from the study), and ``search_ratio``: that of 1 worker divided by this one's (> 1: faster);
* ``wall_s``: the whole command (search, final build, export, verification);
* ``best_value``: the best trial's proxy score; ``complete``, ``failed`` and ``lost`` (asked
  trials without a result: must be 0), and ``attempts`` (> trials when a trial was retried).

On 2 cores two workers share the cores, and each trial (TensorFlow fine-tune, export,
LiteRT latency) uses both: the ratio says how much of a trial's time leaves a core idle.

Environment: ``PFTF_TRIALS_RECIPE`` (default ``convnet_at_fmnist``, the smallest net),
``PFTF_TRIALS_TARGET`` (default ``2x faster``), ``PFTF_TRIALS_TRIALS`` (default 8),
``PFTF_TRIALS_WORKERS`` (``,``-separated, default ``1,2``).

Example:
    >>> from bench.benchmarks import trials
    >>> trials.DEFAULT_WORKERS
    '1,2'
"""

from __future__ import annotations

import json
import os
import tempfile

from bench import baselines as baseline_cache
from bench import results_io, scripts

COMMAND = "python -m bench.run trials"
DEFAULT_RECIPE = "convnet_at_fmnist"
DEFAULT_TARGET = "2x faster"
DEFAULT_WORKERS = "1,2"
ROOT = scripts.ROOT


def run() -> list[dict]:
    """Runs the search once per worker count; one record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    recipe = os.environ.get("PFTF_TRIALS_RECIPE", DEFAULT_RECIPE)
    target = os.environ.get("PFTF_TRIALS_TARGET", DEFAULT_TARGET)
    trials = int(os.environ.get("PFTF_TRIALS_TRIALS", "8"))
    workers = [int(w) for w in os.environ.get("PFTF_TRIALS_WORKERS", DEFAULT_WORKERS).split(",")]
    dense, _ = baseline_cache.train_or_load(recipe)
    recs: list[dict] = []
    for n in workers:
        rec = _run_one(recipe, dense.name, target, trials, n)
        base = next((r for r in recs if r["workers"] == 1), None)
        if base and rec["search_s"]:
            rec["search_ratio"] = round(base["search_s"] / rec["search_s"], 2)
        print(f"[bench] {json.dumps(rec)}", flush=True)
        recs.append(rec)
    return recs


def search_figures(auto_dir: str) -> dict:
    """The search's figures read back from its study (either form of it).

    Example:
        >>> search_figures("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...
    """
    from pocketflow_tf.hp_optimizers import parallel, search

    folder = os.path.join(auto_dir, "study")
    db = os.path.join(folder, parallel.DB_FILE)
    if os.path.exists(db):
        result = parallel.result(f"sqlite:///{db}", parallel.DEFAULT_STUDY_NAME, folder)
        rows, elapsed = result.trials, result.elapsed_s
    else:
        with open(os.path.join(folder, search.STATE_FILE)) as f:
            state = json.load(f)
        rows = [search.StudyTrial(**t) for t in state["trials"]]
        elapsed = state["elapsed_s"]
    done = [t for t in rows if t.status == "complete"]
    return {
        "search_s": round(elapsed, 1),
        "best_value": max((t.value for t in done), default=None),
        "complete": len(done),
        "failed": sum(t.status == "failed" for t in rows),
        "lost": sum(t.status == "running" for t in rows),
        "attempts": sum(t.attempts for t in rows),
    }


def _run_one(name: str, model: str, target: str, trials: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pftf-trials-") as tmp:
        auto_dir = os.path.join(tmp, "auto")
        cmd = [
            os.path.join(ROOT, "run_local.sh"),
            f"nets/{name}_run.py",
            "--learner=auto",
            f"--model_path={baseline_cache.full_recipe_path(name)}",
            f"--auto_target={target}",
            f"--auto_max_trials={trials}",
            f"--auto_trial_workers={workers}",
            f"--auto_dir={auto_dir}",
            "--auto_final_epochs=1",  # the search is what is measured: a short final build
            f"--save_path={os.path.join(tmp, 'model.keras')}",
            f"--log_dir={os.path.join(tmp, 'logs')}",
        ]
        # A missed target (EXIT_TARGET_NOT_MET) still measured the search: record it.
        record, wall = scripts.run_recorded(
            cmd,
            f"trials {name} workers={workers}",
            tmp,
            accept=scripts.AUTO_STATUSES,
        )
        figures = search_figures(auto_dir)
    return results_io.make_record(
        model=model,
        dataset="fmnist",
        method="auto-trials",
        setting=f"target={target},trials={trials},workers={workers}",
        wall_s=round(wall, 1),
        command=f"PFTF_TRIALS_RECIPE={name} PFTF_TRIALS_TARGET='{target}' "
        f"PFTF_TRIALS_TRIALS={trials} PFTF_TRIALS_WORKERS={workers} {COMMAND}",
        workers=workers,
        trials=trials,
        met=record["sections"]["compression"]["answer"]["met"],
        **figures,
    )
