"""Benchmark ``auto``: ``--learner auto`` on the trained ResNet-20, one record per target.

Each target is the real command line, ``./run_local.sh nets/resnet_at_fmnist_run.py
--learner auto --model_path <the cached ResNet-20 baseline> --auto_target <target>
--auto_max_trials <trials>``, and reads the run record it writes:

* ``met``: whether the learner says the target was met on its own measurements;
* ``acc``: the delivered ``.tflite`` on the whole test split, against the baseline Keras
  model on the same split (``acc_baseline``);
* ``latency_ratio``: the delivered file's LiteRT latency / the dense float export's,
  measured interleaved in the same run; ``bytes`` and ``flops_ratio`` likewise;
* ``wall_s``: the whole command (search, final fine-tune, export, verification), on the
  machine in ``machine``.

Environment: ``PFTF_AUTO_TARGETS`` (``;``-separated, default ``2x faster,drop<=0.5;
int8,<=0.3x bytes,drop<=0.5``), ``PFTF_AUTO_TRIALS`` (default 8), ``PFTF_AUTO_MAX_WALL_S``
(``--auto_max_wall_s`` of each run, seconds; default unset: the learner's own default).

Example:
    >>> from bench.benchmarks import auto
    >>> auto.DEFAULT_TARGETS.split(";")[0]
    '2x faster,drop<=0.5'
"""

from __future__ import annotations

import json
import os
import tempfile

from bench import baselines as baseline_cache
from bench import results_io, scripts
from pocketflow_tf import datasets, training

COMMAND = "python -m bench.run auto"
DEFAULT_TARGETS = "2x faster,drop<=0.5;int8,<=0.3x bytes,drop<=0.5"
RECIPE = "resnet_at_fmnist"
ROOT = scripts.ROOT


def run() -> list[dict]:
    """Runs the automated compression for every target; one record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    targets = [t for t in os.environ.get("PFTF_AUTO_TARGETS", DEFAULT_TARGETS).split(";") if t]
    trials = int(os.environ.get("PFTF_AUTO_TRIALS", "8"))
    max_wall = os.environ.get("PFTF_AUTO_MAX_WALL_S")
    dense, _ = baseline_cache.train_or_load(RECIPE)
    path = baseline_cache.full_recipe_path(RECIPE)
    data = datasets.load_dataset("fmnist")
    acc_dense = training.evaluate_accuracy(dense, data.x_test, data.y_test)
    recs = []
    for text in targets:
        with tempfile.TemporaryDirectory(prefix="pftf-auto-") as tmp:
            save = os.path.join(tmp, "model.keras")
            cmd = [
                os.path.join(ROOT, "run_local.sh"),
                f"nets/{RECIPE}_run.py",
                "--learner=auto",
                f"--model_path={path}",
                f"--auto_target={text}",
                f"--auto_max_trials={trials}",
                f"--save_path={save}",
                f"--log_dir={os.path.join(tmp, 'logs')}",
            ]
            if max_wall:
                cmd.append(f"--auto_max_wall_s={max_wall}")
            record, wall = scripts.run_recorded(cmd, f"auto {text!r}", tmp)
        metrics, rep = record["metrics"], record["sections"]["compression"]
        final = rep["final"]
        figures, mode = final["figures"], final["figures"]["mode"]
        rec = results_io.make_record(
            model=dense.name,
            dataset="fmnist",
            method="auto",
            setting=f"target={text},trials={trials}"
            + (f",max_wall_s={max_wall}" if max_wall else ""),
            acc=round(metrics[f"tflite_{mode}_acc"], 4),
            acc_baseline=round(acc_dense, 4),
            flops_ratio=round(figures["flops_ratio"], 4),
            params_ratio=round(figures["params_ratio"], 4),
            bytes=metrics[f"tflite_{mode}_bytes"],
            bytes_gzip=metrics[f"tflite_{mode}_bytes_gzip"],
            latency_ratio=round(figures["latency_ratio"], 4),
            wall_s=round(wall, 1),
            command=f"PFTF_AUTO_TARGETS='{text}' PFTF_AUTO_TRIALS={trials} "
            + (f"PFTF_AUTO_MAX_WALL_S={max_wall} " if max_wall else "")
            + COMMAND,
            met=rep["answer"]["met"],
            summary=rep["answer"]["summary"],
            chain=final.get("chain"),
            int8_method=final.get("int8_method"),
            bytes_ratio=round(figures["bytes_ratio"], 4),
            trials=len(rep.get("trials", [])),
        )
        print(f"[bench] {json.dumps(rec)}", flush=True)
        recs.append(rec)
    return recs
