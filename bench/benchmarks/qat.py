"""Benchmark ``qat``: int8 quantization-aware fine-tuning (``uniform``) vs the float model.

For each baseline (``PFTF_QAT_RECIPES``, default ``resnet_at_fmnist``): the
:class:`UniformQuantLearner` fine-tunes the trained model for ``PFTF_QAT_EPOCHS`` epochs
(default 2; a tenth of the recipe's peak learning rate, no warm-up, distilled from the float
model), the int8 ``.tflite`` is verified against the QAT Keras model, evaluated on the whole
test split through LiteRT, and timed against the float export of the dense model in the same
run (interleaved, one thread, batch 1). Post-training int8 of the same baseline is the
``ptq`` benchmark.

Example:
    >>> from bench.benchmarks import qat
    >>> qat.COMMAND
    'python -m bench.run qat'
"""

from __future__ import annotations

import os
import time

from bench import baselines as baseline_cache
from bench import exports
from pocketflow_tf import datasets, distillation, training
from pocketflow_tf.learners.uniform_quant import UniformQuantLearner
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run qat"


def score_int8(qat_model, path: str, data, rep, float_path: str, rounds: int = 60):
    """Exports ``qat_model`` to a verified int8 ``path``, scored through LiteRT on the whole
    test split and timed against ``float_path``.

    Example:
        >>> d = score_int8(qat_model, "m.int8.tflite", data, rep, "f.tflite")  # doctest: +SKIP
        >>> d.acc, d.latency_ratio  # doctest: +SKIP
        (0.9212, 0.41)
    """
    return exports.export(
        qat_model,
        path,
        data,
        mode="int8",
        n_verify=1000,
        rep=rep,
        evaluate=True,
        reference=float_path,
        rounds=rounds,
    )


def qat_record(d, *, acc_dense: float, wall: float, command: str = COMMAND, **fields) -> dict:
    """The record of a QAT int8 export ``d`` (:func:`score_int8`): its LiteRT accuracy against
    the float model's, FLOPs and parameter count those of the dense model, ``wall`` seconds.

    Example:
        >>> rec = qat_record(d, acc_dense=0.93, wall=412.3, model="resnet20",
        ...                  method="qat-int8", setting="epochs=2")  # doctest: +SKIP
    """
    return exports.record(
        d,
        acc=d.acc,
        acc_baseline=acc_dense,
        flops_ratio=1.0,
        params_ratio=1.0,
        wall_s=round(wall, 1),
        command=command,
        **fields,
    )


def run() -> list[dict]:
    """QAT-fine-tunes, exports, verifies, evaluates and times; one record per model.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    epochs = int(os.environ.get("PFTF_QAT_EPOCHS", "2"))
    names = baseline_cache.parse_recipes(
        "PFTF_QAT_RECIPES", os.environ.get("PFTF_QAT_RECIPES", "resnet_at_fmnist")
    )
    data = datasets.load_dataset("fmnist")
    rep = exports.calibration(data)
    recs = []
    for name in names:
        dense, acc_dense = baseline_cache.scored(name, data)
        cfg = recipe.get_recipe(name).finetune_config(epochs=epochs)
        float_path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.float.tflite")
        exports.export(dense, float_path, data)
        start = time.time()
        lrn = UniformQuantLearner(
            cfg, distillation=distillation.DistillationConfig(1.0, 2.0), verbose=2
        )
        qat_model = lrn.fit(dense, data.x_train, data.y_train)
        wall = time.time() - start
        acc_keras = training.evaluate_accuracy(qat_model, data.x_test, data.y_test)
        path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.qat-int8.int8.tflite")
        d = score_int8(qat_model, path, data, rep, float_path)
        acc, ratio = d.acc, d.latency_ratio
        recs.append(
            qat_record(
                d,
                acc_dense=acc_dense,
                wall=wall,
                model=dense.name,
                method="qat-int8",
                setting=f"epochs={epochs}",
                acc_keras_qat=round(acc_keras, 4),
                epochs=epochs,
            )
        )
        print(
            f"[bench] {name} qat-int8: acc {acc:.4f} (QAT Keras {acc_keras:.4f}, float "
            f"{acc_dense:.4f}), {d.export.bytes} B, latency ratio {ratio:.3f}, {wall:.0f} s"
        )
    return recs
