"""Benchmark ``mixed``: mixed-precision weights vs uniform low-bit weights, by QAT (``uniform``).

For each setting of ``PFTF_MP_SETTINGS`` (default ``mixed-4,uniform-4,mixed-3,uniform-3``):
``mixed-B`` fine-tunes with ``uql_equivalent_bits=B`` (per-layer bits 2..8 allocated by
measured sensitivity on 1,024 training images), ``uniform-B`` with ``uql_weight_bits=B`` on
every layer. Both fine-tune the trained ResNet-20 for ``PFTF_MP_EPOCHS`` epochs (default 2;
a tenth of the recipe's peak learning rate, distilled from the float model), activations
8-bit. The int8 ``.tflite`` is verified against the QAT model, evaluated on the whole test
split through LiteRT, checked to keep ``2**b - 1`` levels per output channel of each
``b``-bit kernel, and timed against the float export (interleaved, one thread, batch 1).
``compressed_bytes`` is the bit-packed storage (codes + float32 scales + float32 rest).

Each setting is also exported as an ``int4`` file (:mod:`pocketflow_tf.int4_export`: the
layers at <= 4 bits stored as int4, the others int8, the QAT model's levels and activation
ranges kept), verified against the QAT model like the int8 one, scored on the whole test
split and timed against the float file: ``int4_bytes`` (and ``int4_vs_int8``, its share of
the int8 file's raw bytes), ``int4_acc``, ``int4_latency_ratio``, the layers it stores as
int4 and the ones that fell back to int8 (with why), and whether every kernel's levels read
back from the file are within ``2**b - 1``.

``acc_pruned`` ("before fine-tune") is the float model with only its weights put on the
setting's levels (:func:`~pocketflow_tf.learners.uniform_quant.bits.fake_quantize`, the QAT
grid; activations float): how much the allocation alone keeps, before QAT recovers it.

``PFTF_MP_RETIME=1`` re-measures the recorded settings instead (nothing trained): the
latency of their saved files (for latencies timed while something else loaded the machine)
and ``acc_pruned`` from the recorded bits.

Example:
    >>> from bench.benchmarks import mixed
    >>> mixed.COMMAND
    'python -m bench.run mixed'
"""

from __future__ import annotations

import json
import os
import time

from bench import baselines as baseline_cache
from bench import exports, results_io
from bench.benchmarks import qat as qat_bench
from pocketflow_tf import datasets, deploy, distillation, int4_export, latency, learner, training
from pocketflow_tf.learners.uniform_quant import UniformQuantLearner
from pocketflow_tf.learners.uniform_quant import bits as bits_lib
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run mixed"
RECIPE = "resnet_at_fmnist"


def _options(setting: str) -> dict:
    kind, _, bits = setting.partition("-")
    if kind == "mixed":
        return {"uql_equivalent_bits": float(bits)}
    if kind == "uniform":
        return {"uql_weight_bits": int(bits)}
    raise SystemExit(f"PFTF_MP_SETTINGS: unknown setting {setting!r}; use mixed-B or uniform-B")


def weights_only_accuracy(dense, bits: dict[str, int], x, y) -> float:
    """Accuracy of ``dense`` with only its kernels on the ``bits`` levels (no fine-tuning).

    Example:
        >>> weights_only_accuracy(dense, {"conv2d": 4}, x, y)  # doctest: +SKIP
    """
    model = learner.copy_model(dense)
    for info in bits_lib.layer_infos(model):
        variable = bits_lib.kernel_variable(model.get_layer(info.name))
        variable.assign(bits_lib.fake_quantize(variable.numpy(), bits[info.name], info.per_channel))
    return training.evaluate_accuracy(model, x, y)


def score_int4(qat_model, path: str, data, rep, float_path: str, rounds: int = 30) -> dict:
    """The ``int4`` file of ``qat_model``: exported, verified, scored on the whole test split
    and timed against ``float_path``; its record fields.

    Example:
        >>> f = score_int4(qat_model, "m.int4.tflite", data, rep, "f.tflite")  # doctest: +SKIP
        >>> f["int4_bytes"], f["int4_fallbacks"]  # doctest: +SKIP
        (175088, {})
    """
    out = int4_export.convert(qat_model, None, rep)
    d = deploy.deploy(
        qat_model,
        path,
        mode="int8",  # the int8 thresholds: int4 kernels, int8 activations
        content=out.content,
        x_verify=data.x_test[:1000],
        y_verify=data.y_test[:1000],
        x_eval=data.x_test,
        y_eval=data.y_test,
        reference=float_path,
        rounds=rounds,
    )
    return {
        "int4_bytes": d.export.bytes,
        "int4_bytes_gzip": d.export.bytes_gzip,
        "int4_acc": round(d.acc, 4),
        "int4_latency_ratio": round(d.latency_ratio, 4),
        "int4_layers": [s.layer for s in out.layers if s.stored == "INT4"],
        "int4_fallbacks": {s.layer: s.fallback for s in out.fallbacks},
        "int4_levels_within_limit": all(
            s.levels is None or s.levels <= s.max_levels for s in out.layers
        ),
    }


def retime(rounds: int = 60) -> list[dict]:
    """The recorded settings with ``latency_ratio`` measured again from their saved files
    and ``acc_pruned`` from their recorded bits.

    Example:
        >>> recs = retime()  # doctest: +SKIP
    """
    with open(os.path.join(results_io.RESULTS, "mixed.json")) as f:
        recs = json.load(f)["records"]
    float_path = os.path.join(baseline_cache.ARTIFACTS, f"{RECIPE}.float.tflite")
    dense, _ = baseline_cache.train_or_load(RECIPE)
    data = datasets.load_dataset("fmnist")
    for rec in recs:
        rec["acc_pruned"] = round(
            weights_only_accuracy(dense, rec["bits"], data.x_test, data.y_test), 4
        )
        # "qat-mixed" + "avg_bits=4,epochs=2" -> the file of setting "mixed-4".
        bits = rec["setting"].split(",")[0].split("=")[1]
        setting = f"{rec['method'].removeprefix('qat-')}-{bits}"
        path = os.path.join(baseline_cache.ARTIFACTS, f"{RECIPE}.{setting}.int8.tflite")
        ratio = latency.interleaved_ratio(path, float_path, rounds=rounds).latency_ratio
        print(
            f"[bench] {setting}: latency ratio {rec['latency_ratio']} -> {ratio:.4f}, "
            f"weights-only {rec['acc_pruned']:.4f}"
        )
        rec["latency_ratio"] = round(ratio, 4)
    return recs


def run() -> list[dict]:
    """Fine-tunes, exports, verifies, evaluates and times each setting; one record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    if os.environ.get("PFTF_MP_RETIME") == "1":
        return retime()
    epochs = int(os.environ.get("PFTF_MP_EPOCHS", "2"))
    settings = os.environ.get("PFTF_MP_SETTINGS", "mixed-4,uniform-4,mixed-3,uniform-3")
    data = datasets.load_dataset("fmnist")
    rep = exports.calibration(data)
    dense, acc_dense = baseline_cache.scored(RECIPE, data)
    float_path = os.path.join(baseline_cache.ARTIFACTS, f"{RECIPE}.float.tflite")
    exports.export(dense, float_path, data)
    recs = []
    for setting in [s for s in settings.split(",") if s]:
        cfg = recipe.get_recipe(RECIPE).finetune_config(epochs=epochs)
        start = time.time()
        lrn = UniformQuantLearner(
            cfg,
            distillation=distillation.DistillationConfig(1.0, 2.0),
            verbose=2,
            **_options(setting),
        )
        qat_model = lrn.fit(dense, data.x_train, data.y_train)
        wall = time.time() - start
        acc_keras = training.evaluate_accuracy(qat_model, data.x_test, data.y_test)
        path = os.path.join(baseline_cache.ARTIFACTS, f"{RECIPE}.{setting}.int8.tflite")
        d = qat_bench.score_int8(qat_model, path, data, rep, float_path, rounds=30)
        acc, ratio = d.acc, d.latency_ratio
        int4 = score_int4(qat_model, path.replace(".int8.", ".int4."), data, rep, float_path)
        storage = lrn.report["storage"]
        levels = lrn.report.get("tflite_int8_levels", [])
        recs.append(
            qat_bench.qat_record(
                d,
                acc_dense=acc_dense,
                wall=wall,
                command=COMMAND,
                model=dense.name,
                method=f"qat-{setting.split('-')[0]}",
                setting=f"avg_bits={setting.split('-')[1]},epochs={epochs}",
                compressed_bytes=storage["total_bytes"],
                compression_ratio=round(storage["float_bytes"] / storage["total_bytes"], 2),
                average_bits=storage["average_bits"],
                acc_keras_qat=round(acc_keras, 4),
                acc_pruned=round(
                    weights_only_accuracy(dense, lrn.weight_bits, data.x_test, data.y_test), 4
                ),
                bits={row["name"]: row["bits"] for row in lrn.report["layers"]},
                levels_within_limit=all(lv["within_limit"] for lv in levels),
                allocation_s=lrn.report["allocation_s"],
                epochs=epochs,
                **int4,
                int4_vs_int8=round(int4["int4_bytes"] / d.export.bytes, 4),
            )
        )
        print(
            f"[bench] {setting}: acc {acc:.4f} (QAT Keras {acc_keras:.4f}, float "
            f"{acc_dense:.4f}), avg {storage['average_bits']:.3f} bits, packed "
            f"{storage['total_bytes']} B (float {storage['float_bytes']} B), levels ok "
            f"{recs[-1]['levels_within_limit']}, latency ratio {ratio:.3f}, {wall:.0f} s; int4 "
            f"file {int4['int4_bytes']} B ({recs[-1]['int4_vs_int8']:.3f}x int8), acc "
            f"{int4['int4_acc']:.4f}, latency ratio {int4['int4_latency_ratio']:.3f}, "
            f"fallbacks {int4['int4_fallbacks']}",
            flush=True,
        )
    return recs
