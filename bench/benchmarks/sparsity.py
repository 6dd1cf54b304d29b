"""Benchmark ``sparsity``: weight-sparse learner vs TFMOT's plain recipe vs dense.

For ResNet-20 and the MobileNet-style net on Fashion-MNIST, starting from the cached
full-recipe baselines (:mod:`bench.baselines`), at 50 / 75 / 90 % sparsity:

* ``weight-sparse``: this framework's learner -- PocketFlow schedule (pruning over 10-50 % of
  the steps, exponent 3), ``heurist`` per-layer ratios (first/last and small layers dense),
  distillation from the dense model;
* ``tfmot-default``: TFMOT's plain recipe from its pruning guide -- every prunable layer
  wrapped, ``PolynomialDecay(0 -> target, begin_step=0, end_step=<last step>)`` with TFMOT's
  default ``frequency=100`` and ``power=3``, no distillation (the whole-model
  ``prune_low_magnitude`` call itself refuses these nets' ``Rescaling`` layer, so the same
  wrapping is done layer by layer);

both fine-tuned with the same data pipeline, optimiser, learning rate and number of epochs.
Each model is exported as ``float``, ``float-sparse``, ``int8`` and ``int8-sparse``
``.tflite`` (every file verified against its Keras model), evaluated with LiteRT on the whole
test split, measured for raw and gzip bytes and for the kernel sparsity read back from the
file, and timed against the dense model's export of the same type (interleaved, one thread,
batch 1, medians).

Record fields (DESIGN.md section 5) plus: ``export``, ``target_sparsity``,
``sparsity_keras`` / ``sparsity_tflite`` (size-weighted zero share of all kernels, in the
Keras model / in the file), ``acc_keras``, ``bytes_dense`` / ``bytes_gzip_dense`` (the dense
model's file of the same export type), ``epochs``. ``acc`` is the LiteRT accuracy of the
file and ``acc_baseline`` that of the dense model's file of the same type (deltas compare
like with like). ``flops_ratio`` is 1: LiteRT densifies sparse kernels when it loads them.
``params_ratio`` is the share of non-zero parameters.

Configuration (environment, since ``bench.run`` calls :func:`run` without arguments):
``PFTF_SPARSITY_EPOCHS`` (fine-tuning epochs, default 8), ``PFTF_SPARSITY_LR`` (peak
learning rate, default 0.05), ``PFTF_SPARSITY_PRTL`` (ratio protocol of ``weight-sparse``,
default ``heurist``), ``PFTF_SPARSITY_RECIPES`` and ``PFTF_SPARSITY_TARGETS`` (comma lists,
default all). Pruned models are cached in ``bench/artifacts/sparsity``, keyed by
:func:`code_key`, and training is resumable, so a killed run started again continues.

Example:
    >>> from bench.benchmarks import sparsity
    >>> sparsity.SPARSITIES, sparsity.METHODS
    ((0.5, 0.75, 0.9), ('weight-sparse', 'tfmot-default'))
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np
import tensorflow_model_optimization as tfmot

from bench import baselines as baseline_cache
from bench import exports, results_io
from pocketflow_tf import (
    accounting,
    atomic_io,
    datasets,
    distillation,
    errors,
    latency,
    learner,
    training,
)
from pocketflow_tf import sparsity as sparsity_lib
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.weight_sparse import WeightSparseLearner, ratios
from pocketflow_tf.nets import recipe

RECIPES = ("resnet_at_fmnist", "mobilenet_at_fmnist")
SPARSITIES = (0.5, 0.75, 0.9)
METHODS = ("weight-sparse", "tfmot-default")
EXPORTS = ("float", "float-sparse", "int8", "int8-sparse")
DEFAULT_EPOCHS = 8
#: Measured on ResNet-20 at 90 %, 8 epochs: 0.01 ended at -0.80 pt (16 epochs: -0.77), 0.05 at
#: -0.49; with 0.1 the training accuracy after 7 epochs was 90.5 % against 95.2 % with 0.05 (run
#: stopped). A network losing 90 % of its weights needs a larger step to re-organise.
DEFAULT_LR = 0.05
DEFAULT_PRTL = "heurist"
CACHE = os.path.join(baseline_cache.ARTIFACTS, "sparsity")
COMMAND = "python -m bench.run sparsity"


class TFMOTDefaultRecipe(learner.Learner):
    """TFMOT's plain pruning recipe, run through the same ``fit`` as the learners.

    Args:
        train_config: Fine-tuning settings (same as the compared learner's).
        final_sparsity: Target of the ``PolynomialDecay``.
        **kwargs: Base learner arguments.

    Example:
        >>> TFMOTDefaultRecipe(final_sparsity=0.5).final_sparsity
        0.5
    """

    name = "tfmot-default"

    def __init__(self, train_config=None, *, final_sparsity: float, **kwargs):
        super().__init__(train_config, **kwargs)
        self.final_sparsity = ratios.check_target(final_sparsity)

    def prepare(self, model: keras.Model) -> keras.Model:
        # TFMOT's guide: begin at step 0, end at the last step, default frequency and power.
        sched = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=self.final_sparsity,
            begin_step=0,
            end_step=self.total_steps,
        )

        def wrap(layer):
            if not ratios.prunable_weights(layer):
                return layer
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched)

        return keras.models.clone_model(learner.copy_model(model), clone_function=wrap)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [tfmot.sparsity.keras.UpdatePruningStep()]

    def finalize(self, model: keras.Model) -> keras.Model:
        return tfmot.sparsity.keras.strip_pruning(model)


def code_key(dense: keras.Model) -> str:
    """A digest of what a cached sparse model was trained with: the dense model's weights
    and the source of the code that trains it (this module, the learner base, training,
    distillation, the weight-sparsity package). A cached model whose key differs is trained
    again: before this key, a change to the training code went unnoticed by later runs.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> len(code_key(m)), code_key(m) == code_key(learner.copy_model(m))
        (64, True)
    """
    digest = hashlib.sha256()
    for w in dense.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    files = [
        sys.modules[__name__].__file__,
        learner.__file__,
        training.__file__,
        distillation.__file__,
        ratios.__file__,
        *sorted(glob.glob(os.path.join(os.path.dirname(ratios.__file__), "*.py"))),
    ]
    for path in dict.fromkeys(files):  # ordered, without repeats
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def _command(settings: dict) -> str:
    """The command that reproduces a record (epochs, learning rate, a non-default protocol).

    Example:
        >>> _command({"epochs": 8, "lr": 0.05, "prtl": "heurist"})
        'PFTF_SPARSITY_EPOCHS=8 PFTF_SPARSITY_LR=0.05 python -m bench.run sparsity'
        >>> _command({"epochs": 4, "lr": 0.05, "prtl": "uniform"})
        'PFTF_SPARSITY_EPOCHS=4 PFTF_SPARSITY_LR=0.05 PFTF_SPARSITY_PRTL=uniform python -m bench.run sparsity'
    """
    prtl = "" if settings["prtl"] == DEFAULT_PRTL else f"PFTF_SPARSITY_PRTL={settings['prtl']} "
    return (
        f"PFTF_SPARSITY_EPOCHS={settings['epochs']} PFTF_SPARSITY_LR={settings['lr']} "
        f"{prtl}{COMMAND}"
    )


def _settings() -> dict:
    return {
        "epochs": int(os.environ.get("PFTF_SPARSITY_EPOCHS", DEFAULT_EPOCHS)),
        "lr": float(os.environ.get("PFTF_SPARSITY_LR", DEFAULT_LR)),
        "prtl": os.environ.get("PFTF_SPARSITY_PRTL", DEFAULT_PRTL),
    }


def prune_or_load(
    name: str, method: str, target: float, dense: keras.Model, data, settings: dict
) -> tuple[keras.Model, dict]:
    """Fine-tunes ``dense`` with ``method`` at ``target`` sparsity, or loads the cached result.

    Example:
        >>> model, meta = prune_or_load("resnet_at_fmnist", "weight-sparse", 0.9, dense,
        ...                             data, _settings())  # doctest: +SKIP
    """
    epochs, lr = settings["epochs"], settings["lr"]
    tag = f"{name}_{method}_s{target}_e{epochs}_lr{lr}"
    if method == "weight-sparse":
        tag += f"_{settings['prtl']}"
    path = os.path.join(CACHE, tag + ".keras")
    key = code_key(dense)
    if os.path.exists(path) and os.path.exists(path + ".json"):
        with open(path + ".json") as f:
            meta = json.load(f)
        if meta.get("code_key") == key:
            return keras.models.load_model(path, compile=False), meta
        print(f"[bench] {tag}: cached model trained by other code or weights: training again")
        shutil.rmtree(path + ".ckpt", ignore_errors=True)  # its checkpoints are as stale
    # The recipe's optimiser, weight decay and augmentation; a fine-tuning length and LR.
    cfg = recipe.get_recipe(name).finetune_config(epochs=epochs, learning_rate=lr, seed=0)
    common = {"checkpoint_dir": path + ".ckpt", "verbose": 2}
    if method == "weight-sparse":
        lrn = WeightSparseLearner(
            cfg,
            ws_prune_ratio=target,
            ws_prune_ratio_prtl=settings["prtl"],
            distillation=distillation.DistillationConfig(),
            **common,
        )
    else:
        lrn = TFMOTDefaultRecipe(cfg, final_sparsity=target, **common)
    start = time.time()
    pruned = lrn.fit(dense, data.x_train, data.y_train)
    meta = {
        "tag": tag,
        "wall_s": round(time.time() - start, 1),
        "config": lrn.get_config(),
        "code_key": key,
    }
    os.makedirs(CACHE, exist_ok=True)
    with atomic_io.atomic_path(path) as tmp:
        pruned.save(tmp)
    atomic_io.write_json(path + ".json", meta)
    return pruned, meta


def _exports(model: keras.Model, stem: str, data, rep: np.ndarray) -> dict[str, dict]:
    """Exports ``model`` in every :data:`EXPORTS` type; LiteRT accuracy, bytes and sparsity."""
    out = {}
    for export in EXPORTS:
        mode, sparse = export.removesuffix("-sparse"), export.endswith("-sparse")
        path = os.path.join(CACHE, f"{stem}.{export}.tflite")
        try:
            d = exports.export(
                model, path, data, mode=mode, n_verify=1000, rep=rep, sparse=sparse, evaluate=True
            )
        except (errors.VerificationError, RuntimeError) as e:
            # E.g. LiteRT's XNNPACK delegate fails to prepare a FULLY_CONNECTED whose int8
            # weights are stored sparse (a RuntimeError from allocate_tensors, raised before
            # anything is written): recorded as a failure, not skipped silently.
            print(f"[bench] {stem} {export}: export refused: {e}")
            out[export] = {"error": str(e)[:500]}
            continue
        report = sparsity_lib.sparsity_report(model, path)
        out[export] = {
            "path": path,
            "acc": d.acc,
            "bytes": d.export.bytes,
            "bytes_gzip": d.export.bytes_gzip,
            "sparsity_tflite": report.tflite_sparsity,
        }
    return out


def _nonzero_params_ratio(model: keras.Model) -> float:
    total = accounting.profile_model(model).total_params
    zeros = sum(k.zeros for k in sparsity_lib.keras_kernel_sparsity(model))
    return (total - zeros) / total


def run(
    recipes: tuple[str, ...] | None = None,
    sparsities: tuple[float, ...] | None = None,
    methods: tuple[str, ...] = METHODS,
) -> list[dict]:
    """Prunes, exports, evaluates and times; one record per (model, method, sparsity, export).

    ``recipes`` and ``sparsities`` default to ``PFTF_SPARSITY_RECIPES`` /
    ``PFTF_SPARSITY_TARGETS`` (comma lists) when set, else to all of them.

    Example:
        >>> recs = run(recipes=("resnet_at_fmnist",), sparsities=(0.9,))  # doctest: +SKIP
    """
    if recipes is None:
        recipes = tuple(_env_list("PFTF_SPARSITY_RECIPES", ",".join(RECIPES)))
    if sparsities is None:
        sparsities = tuple(
            float(v) for v in _env_list("PFTF_SPARSITY_TARGETS", ",".join(map(str, SPARSITIES)))
        )
    settings = _settings()
    data = datasets.load_dataset("fmnist")
    rep = exports.calibration(data)
    os.makedirs(CACHE, exist_ok=True)
    recs = []
    for name in recipes:
        dense, _ = baseline_cache.train_or_load(name, data=data)
        dense_files = _exports(dense, f"{name}_dense", data, rep)
        dense_acc = training.evaluate_accuracy(dense, data.x_test, data.y_test)
        for export, row in dense_files.items():
            if "error" in row:
                continue
            recs.append(
                results_io.make_record(
                    model=dense.name,
                    dataset="fmnist",
                    method="dense",
                    setting=f"tflite={export}",
                    export=export,
                    acc=round(row["acc"], 4),
                    acc_baseline=round(dense_files[export.removesuffix("-sparse")]["acc"], 4),
                    acc_keras=round(dense_acc, 4),
                    flops_ratio=1.0,
                    params_ratio=round(_nonzero_params_ratio(dense), 4),
                    bytes=row["bytes"],
                    bytes_gzip=row["bytes_gzip"],
                    sparsity_tflite=row["sparsity_tflite"],
                    command=COMMAND,
                )
            )
        for method in methods:
            for target in sparsities:
                pruned, meta = prune_or_load(name, method, target, dense, data, settings)
                files = _exports(pruned, meta["tag"], data, rep)
                acc_keras = training.evaluate_accuracy(pruned, data.x_test, data.y_test)
                kernel_sparsity = sparsity_lib.overall_sparsity(
                    sparsity_lib.keras_kernel_sparsity(pruned)
                )
                for export, row in files.items():
                    ref = dense_files[export.removesuffix("-sparse")]
                    # The fields of both rows of this (method, sparsity, export), in this order.
                    row_id = dict(
                        model=dense.name,
                        dataset="fmnist",
                        method=method,
                        setting=f"sparsity={target},tflite={export}",
                        export=export,
                        target_sparsity=target,
                    )
                    if "error" in row:
                        recs.append(
                            results_io.make_record(
                                **row_id,
                                acc_baseline=round(ref["acc"], 4),
                                acc_keras=round(acc_keras, 4),
                                sparsity_keras=round(kernel_sparsity, 4),
                                error=row["error"],
                                wall_s=meta["wall_s"],
                                command=_command(settings),
                            )
                        )
                        continue
                    ratio = latency.interleaved_ratio(row["path"], ref["path"], rounds=40)
                    recs.append(
                        results_io.make_record(
                            **row_id,
                            epochs=settings["epochs"],
                            acc=round(row["acc"], 4),
                            acc_baseline=round(ref["acc"], 4),
                            acc_keras=round(acc_keras, 4),
                            flops_ratio=1.0,
                            params_ratio=round(_nonzero_params_ratio(pruned), 4),
                            bytes=row["bytes"],
                            bytes_gzip=row["bytes_gzip"],
                            bytes_dense=ref["bytes"],
                            bytes_gzip_dense=ref["bytes_gzip"],
                            sparsity_keras=round(kernel_sparsity, 4),
                            sparsity_tflite=row["sparsity_tflite"],
                            latency_ratio=round(ratio.latency_ratio, 4),
                            wall_s=meta["wall_s"],
                            command=_command(settings),
                        )
                    )
                    print(
                        f"[bench] {name} {method} {target:.0%} {export}: acc {row['acc']:.4f} "
                        f"(dense {ref['acc']:.4f}), {row['bytes']} B / {row['bytes_gzip']} gz "
                        f"(dense {ref['bytes']} / {ref['bytes_gzip']}), latency x"
                        f"{ratio.latency_ratio:.3f}, file sparsity {row['sparsity_tflite']:.4f}"
                    )
    return recs
