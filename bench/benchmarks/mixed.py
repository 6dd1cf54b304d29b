"""Benchmark ``mixed``: mixed-precision weights vs uniform low-bit weights, by QAT (``uniform``).

For each setting of ``PFTF_MP_SETTINGS`` (default ``mixed-4,uniform-4,mixed-3,uniform-3``):
``mixed-B`` fine-tunes with ``uql_equivalent_bits=B`` (per-layer bits 2..8 allocated by
measured sensitivity on 1,024 training images), ``uniform-B`` with ``uql_weight_bits=B`` on
every layer. Both fine-tune the trained baseline of each recipe of ``PFTF_MP_RECIPES``
(comma list, default ``resnet_at_fmnist``; ``mobilenet_at_fmnist`` for MobileNet-v1) for
``PFTF_MP_EPOCHS`` epochs (default 2; a tenth of the recipe's peak learning rate, distilled
from the float model), activations 8-bit. Files are named per recipe
(``bench/artifacts/<recipe>.<setting>.int8.tflite`` and ``.int4.tflite``) and records by
their model (``resnet20``, ``mobilenet_v1``...), so rows of several models sit side by side
in ``bench/results/mixed.json`` (a rerun replaces only its own model's rows).

The int8 ``.tflite`` is verified against the QAT model, evaluated on the whole test split
through LiteRT, checked to keep ``2**b - 1`` levels per output channel of each
``b``-bit kernel, and timed against the float export (interleaved, one thread, batch 1).
``compressed_bytes`` is the bit-packed storage (codes + float32 scales + float32 rest).

Each setting is also exported as an ``int4`` file (:mod:`pocketflow_tf.int4_export`: the
layers at <= 4 bits stored as int4, the others int8, the QAT model's levels and activation
ranges kept), verified against the QAT model like the int8 one, scored on the whole test
split and timed against the float file: ``int4_bytes`` (and ``int4_vs_int8``, its share of
the int8 file's raw bytes), ``int4_acc``, ``int4_latency_ratio``, the layers it stores as
int4 and the ones that fell back to int8 (``int4_fallbacks``, layer -> why: a
``DEPTHWISE_CONV_2D``, e.g. MobileNet's depthwise layers, has no int4 kernel in LiteRT's
quantizer and stays int8), and whether every kernel's levels read back from the file are
within ``2**b - 1``.

``acc_pruned`` ("before fine-tune") is the float model with only its weights put on the
setting's levels (:func:`~pocketflow_tf.learners.uniform_quant.bits.fake_quantize`, the QAT
grid; activations float): how much the allocation alone keeps, before QAT recovers it.

``PFTF_MP_RETIME=1`` re-measures the recorded settings of the ``PFTF_MP_RECIPES`` models
instead (nothing trained): the latency of their saved files (for latencies timed while
something else loaded the machine) and ``acc_pruned`` from the recorded bits.

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
from pocketflow_tf import (
    datasets,
    deploy,
    distillation,
    errors,
    int4_export,
    latency,
    learner,
    training,
)
from pocketflow_tf.learners.uniform_quant import UniformQuantLearner
from pocketflow_tf.learners.uniform_quant import bits as bits_lib
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run mixed"
DEFAULT_RECIPES = "resnet_at_fmnist"


def _recipes() -> list[str]:
    return baseline_cache.parse_recipes(
        "PFTF_MP_RECIPES", os.environ.get("PFTF_MP_RECIPES", DEFAULT_RECIPES)
    )


def _options(setting: str) -> dict:
    """The learner options of one ``PFTF_MP_SETTINGS`` entry (checked before any training)."""
    kind, _, bits = setting.partition("-")
    try:
        if kind == "mixed":
            return {"uql_equivalent_bits": float(bits)}
        if kind == "uniform":
            return {"uql_weight_bits": int(bits)}
    except ValueError:
        pass
    raise errors.InvalidArgumentError(
        "PFTF_MP_SETTINGS", setting, "mixed-B or uniform-B, e.g. mixed-4, uniform-3"
    )


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


def score_int4(
    qat_model, path: str, data, rep, float_path: str, rounds: int = 30, bits: int | None = None
) -> dict:
    """The ``int4`` file of ``qat_model``: exported, verified, scored on the whole test split
    and timed against ``float_path``; its record fields.

    ``bits`` is :func:`pocketflow_tf.int4_export.convert`'s: ``None`` (a QAT model's own
    allocation) here; one bit-width for a float model. ``int4_fallbacks`` names each layer
    allocated <= 4 bits that the file keeps int8, with the reason (e.g. a depthwise conv).

    Example:
        >>> f = score_int4(qat_model, "m.int4.tflite", data, rep, "f.tflite")  # doctest: +SKIP
        >>> f["int4_bytes"], f["int4_fallbacks"]  # doctest: +SKIP
        (175088, {})
    """
    out = int4_export.convert(qat_model, bits, rep)
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
    """The recorded settings of the ``PFTF_MP_RECIPES`` models with ``latency_ratio``
    measured again from their saved files and ``acc_pruned`` from their recorded bits.

    Records of other models are left as they are (:func:`bench.results_io.write_results`
    keeps them); a row whose ``.int8.tflite`` is missing here keeps its latency and host.

    Example:
        >>> recs = retime()  # doctest: +SKIP
    """
    names = _recipes()
    with open(os.path.join(results_io.RESULTS, "mixed.json")) as f:
        saved = json.load(f)["records"]
    data = datasets.load_dataset("fmnist")
    recs = []
    for name in names:
        float_path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.float.tflite")
        dense, _ = baseline_cache.train_or_load(name)
        for rec in [r for r in saved if r["model"] == dense.name]:
            rec = dict(rec)
            # acc_pruned does not depend on the host; the latency does.
            rec["acc_pruned"] = round(
                weights_only_accuracy(dense, rec["bits"], data.x_test, data.y_test), 4
            )
            # "qat-mixed" + "avg_bits=4,epochs=2" -> the file of setting "mixed-4".
            bits = rec["setting"].split(",")[0].split("=")[1]
            setting = f"{rec['method'].removeprefix('qat-')}-{bits}"
            path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.{setting}.int8.tflite")
            if os.path.exists(path):
                ratio = latency.interleaved_ratio(path, float_path, rounds=rounds).latency_ratio
                print(
                    f"[bench] {name} {setting}: latency ratio {rec['latency_ratio']} -> {ratio:.4f}"
                )
                rec["latency_ratio"] = round(ratio, 4)
                rec.pop("host", None)  # measured here, now: write_results names this host
            else:
                # Files are not committed: its latency (and host) stay as recorded.
                print(f"[bench] {name} {setting}: no {path}, latency left as recorded")
            print(f"[bench] {name} {setting}: weights-only {rec['acc_pruned']:.4f}")
            recs.append(rec)
    return recs


def run() -> list[dict]:
    """Fine-tunes, exports, verifies, evaluates and times each setting of each recipe; one
    record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    names = _recipes()  # a bad name fails before any training
    if os.environ.get("PFTF_MP_RETIME") == "1":
        return retime()
    epochs = int(os.environ.get("PFTF_MP_EPOCHS", "2"))
    settings = os.environ.get("PFTF_MP_SETTINGS", "mixed-4,uniform-4,mixed-3,uniform-3")
    settings = [s for s in settings.split(",") if s]
    for setting in settings:
        _options(setting)
    data = datasets.load_dataset("fmnist")
    rep = exports.calibration(data)
    recs = []
    for name in names:
        recs += _run_recipe(name, settings, epochs, data, rep)
    return recs


def _run_recipe(name: str, settings: list[str], epochs: int, data, rep) -> list[dict]:
    """The records of one recipe's settings (see :func:`run`)."""
    dense, acc_dense = baseline_cache.scored(name, data)
    float_path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.float.tflite")
    exports.export(dense, float_path, data)
    recs = []
    for setting in settings:
        cfg = recipe.get_recipe(name).finetune_config(epochs=epochs)
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
        path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.{setting}.int8.tflite")
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
                # The default recipe's rows keep the plain command (as recorded before).
                command=COMMAND if name == DEFAULT_RECIPES else f"PFTF_MP_RECIPES={name} {COMMAND}",
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
            f"[bench] {name} {setting}: acc {acc:.4f} (QAT Keras {acc_keras:.4f}, float "
            f"{acc_dense:.4f}), avg {storage['average_bits']:.3f} bits, packed "
            f"{storage['total_bytes']} B (float {storage['float_bytes']} B), levels ok "
            f"{recs[-1]['levels_within_limit']}, latency ratio {ratio:.3f}, {wall:.0f} s; int4 "
            f"file {int4['int4_bytes']} B ({recs[-1]['int4_vs_int8']:.3f}x int8), acc "
            f"{int4['int4_acc']:.4f}, latency ratio {int4['int4_latency_ratio']:.3f}, "
            f"fallbacks {int4['int4_fallbacks']}",
            flush=True,
        )
    return recs
