"""Benchmark ``auto``: ``--learner auto`` on the trained nets, one record per model and target.

Each run is the real command line, ``./run_local.sh nets/<recipe>_run.py --learner auto
--model_path <the cached full-recipe baseline> --auto_target <target> --auto_max_trials
<trials>`` with the learner's default budget (``--auto_max_wall_s`` 3600: search and final
build together), and reads the run record it writes:

* ``met``: whether the learner says the target was met on its own (held-out) measurements;
* ``acc``: the delivered ``.tflite`` on the whole test split, against the baseline Keras
  model on the same split (``acc_baseline``); ``test_drop_pt`` is their difference, and
  ``met_on_test`` whether the resource goals were met *and* the test drop is within the
  target's accuracy drop (what the issue asks of a result);
* ``latency_ratio``: the delivered file's LiteRT latency / the dense float export's,
  measured interleaved in the same run; ``bytes`` and ``flops_ratio`` likewise;
* ``final_epochs`` and ``final_stop``: how long the budget-following final fine-tune ran and
  why it stopped;
* ``wall_s``: the whole command (search, final fine-tune, export, verification), on the
  machine in ``host``. The HTML report and the run's output (``<slug>.log``) are kept in
``bench/results/auto_reports/``; a missed target is recorded (``met`` false), not raised.

Environment: ``PFTF_AUTO_RECIPES`` (``,``-separated, default ``resnet_at_fmnist``),
``PFTF_AUTO_TARGETS`` (``;``-separated, default ``5x faster;10x smaller``),
``PFTF_AUTO_TRIALS`` (default 10), ``PFTF_AUTO_MAX_WALL_S`` (``--auto_max_wall_s`` of each
run, seconds; default unset: the learner's own default).

Example:
    >>> from bench.benchmarks import auto
    >>> auto.DEFAULT_TARGETS.split(";")
    ['5x faster', '10x smaller']
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

from bench import baselines as baseline_cache
from bench import results_io, scripts
from pocketflow_tf import datasets, training

COMMAND = "python -m bench.run auto"
DEFAULT_TARGETS = "5x faster;10x smaller"
DEFAULT_RECIPES = "resnet_at_fmnist"
ROOT = scripts.ROOT
REPORTS = os.path.join(results_io.RESULTS, "auto_reports")


def run() -> list[dict]:
    """Runs the automated compression for every recipe and target; one record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    recipes = [r for r in os.environ.get("PFTF_AUTO_RECIPES", DEFAULT_RECIPES).split(",") if r]
    targets = [t for t in os.environ.get("PFTF_AUTO_TARGETS", DEFAULT_TARGETS).split(";") if t]
    trials = int(os.environ.get("PFTF_AUTO_TRIALS", "10"))
    max_wall = os.environ.get("PFTF_AUTO_MAX_WALL_S")
    data = datasets.load_dataset("fmnist")
    recs = []
    for name in recipes:
        dense, _ = baseline_cache.train_or_load(name)
        acc_dense = training.evaluate_accuracy(dense, data.x_test, data.y_test)
        for text in targets:
            rec = _run_one(name, dense.name, acc_dense, text, trials, max_wall)
            print(f"[bench] {json.dumps(rec)}", flush=True)
            recs.append(rec)
    return recs


def _setting(text: str, trials: int, max_wall: str | None) -> str:
    return f"target={text},trials={trials}" + (f",max_wall_s={max_wall}" if max_wall else "")


def report_slug(model: str, setting: str) -> str:
    """The file name (without extension) of a record's kept report and log.

    Example:
        >>> report_slug("resnet20", "target=5x faster,trials=4,max_wall_s=900")
        'resnet20-target-5x-faster-trials-4-max-wall-s-900'
    """
    return re.sub(r"[^a-z0-9]+", "-", f"{model}-{setting}".lower()).strip("-")


def _run_one(
    name: str, model: str, acc_dense: float, text: str, trials: int, max_wall: str | None
) -> dict:
    from pocketflow_tf.learners.auto.target import Target

    with tempfile.TemporaryDirectory(prefix="pftf-auto-") as tmp:
        save = os.path.join(tmp, "model.keras")
        cmd = [
            os.path.join(ROOT, "run_local.sh"),
            f"nets/{name}_run.py",
            "--learner=auto",
            f"--model_path={baseline_cache.full_recipe_path(name)}",
            f"--auto_target={text}",
            f"--auto_max_trials={trials}",
            f"--save_path={save}",
            f"--log_dir={os.path.join(tmp, 'logs')}",
        ]
        if max_wall:
            cmd.append(f"--auto_max_wall_s={max_wall}")
        # Named by the record's setting, so that a run of another setting (e.g. the
        # ``--quick`` one: 4 trials, 900 s) never overwrites another record's report.
        slug = report_slug(model, _setting(text, trials, max_wall))
        # A missed target exits with EXIT_TARGET_NOT_MET: a result to record, not a failure.
        record, wall = scripts.run_recorded(
            cmd,
            f"auto {name} {text!r}",
            tmp,
            accept=scripts.AUTO_STATUSES,
            log_path=os.path.join(REPORTS, f"{slug}.log"),
        )
        rep = record["sections"]["compression"]
        html = (rep.get("files") or {}).get("html")
        kept = None
        if html and os.path.exists(html):
            os.makedirs(REPORTS, exist_ok=True)
            kept = os.path.join(REPORTS, f"{slug}.html")
            shutil.copyfile(html, kept)
    metrics, final = record["metrics"], rep["final"]
    figures, mode = final["figures"], final["figures"]["mode"]
    acc = metrics[f"tflite_{mode}_acc"]
    target = Target.parse(text)
    test_drop = 100.0 * (acc_dense - acc)
    resources_met = target.check(figures, accuracy=False).met
    fine_tune = final.get("fine_tune") or {}
    return results_io.make_record(
        model=model,
        dataset="fmnist",
        method="auto",
        setting=_setting(text, trials, max_wall),
        acc=round(acc, 4),
        acc_baseline=round(acc_dense, 4),
        flops_ratio=round(figures["flops_ratio"], 4),
        params_ratio=round(figures["params_ratio"], 4),
        bytes=metrics[f"tflite_{mode}_bytes"],
        bytes_gzip=metrics[f"tflite_{mode}_bytes_gzip"],
        latency_ratio=round(figures["latency_ratio"], 4),
        wall_s=round(wall, 1),
        command=f"PFTF_AUTO_RECIPES={name} PFTF_AUTO_TARGETS='{text}' PFTF_AUTO_TRIALS={trials} "
        + (f"PFTF_AUTO_MAX_WALL_S={max_wall} " if max_wall else "")
        + COMMAND,
        met=rep["answer"]["met"],
        test_drop_pt=round(test_drop, 2),
        met_on_test=bool(resources_met and test_drop <= target.max_acc_drop),
        summary=rep["answer"]["summary"],
        chain=final.get("chain"),
        int8_method=final.get("int8_method"),
        bytes_ratio=round(figures["bytes_ratio"], 4),
        trials=len(rep.get("trials", [])),
        final_epochs=len(fine_tune.get("curve") or []) or None,
        final_stop=fine_tune.get("reason"),
        report=None if kept is None else os.path.relpath(kept, ROOT),
    )
