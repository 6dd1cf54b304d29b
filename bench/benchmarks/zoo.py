"""Benchmark ``zoo``: every keras.applications CNN through the channel graph, surgery and exports.

Structural correctness, no training: each architecture is built offline (``weights=None``,
10 classes, a small input) and taken through every stage; a stage that fails is recorded as
data (``stage``, ``error``), never raised, and the next model runs.

Per model (one record):

* ``groups``, ``prunable_groups``, ``prunable_flops_share`` (share of the dense FLOPs in
  layer calls that read or write a prunable group), ``blocked`` (layer -> reason for every
  layer the graph could not reason about);
* channel pruning to ``flops_keep`` (0.5) with physical removal: the channel learner's
  ``prune`` (uniform channel ratio meeting the FLOPs target, L1 selection, counts rounded to
  8; if 8 cannot reach the target, rounded to 1; the setting says which), ``flops_ratio`` and
  ``params_ratio`` measured on the built models;
* ``dead_channel_err``: the surgery check of :func:`pocketflow_tf.surgery.dead_channel_error`
  (a quarter of every exact prunable group's channels made dead, then removed: the outputs
  must stay within 1e-4, relative to the logits' scale);
* float and int8 ``.tflite`` of the pruned model through ``export_tflite`` (convert, compare
  with Keras, load in a child process, atomic write). Float: logits within 1e-4 of Keras,
  relative to the largest logit (an untrained deep net's logits can be large). int8 of an
  *untrained* net: top-1 agreement means little (its logits are nearly tied), so the record
  keeps the agreement and checks instead that the int8 logits follow the float ones
  (Pearson ``int8_logit_corr`` >= 0.9 over 200 random inputs);
* the QAT wrapper (:func:`pocketflow_tf.qat.quantize_model`) and the weight-sparsity
  wrappers (``WeightSparseLearner.prepare``) build on the pruned model;
* ``latency_ratio``: pruned / dense float ``.tflite``, LiteRT, one thread, batch 1,
  interleaved (``PFTF_ZOO_ROUNDS`` rounds, default 30).

``passed`` is true when the model pruned to at most 0.55x FLOPs and both exports verified.
Knobs: ``PFTF_ZOO_MODELS`` (comma list), ``PFTF_ZOO_ROUNDS``, ``PFTF_ZOO_KEEP``,
``PFTF_ZOO_KERAS`` (``2``, the default: built by tf-keras; ``3``: built by Keras 3).

Under ``PFTF_ZOO_KERAS=3`` each architecture is built by Keras 3's ``keras.applications``
(same sizes), saved by Keras 3 as ``.keras`` into the run's temp dir and loaded with
:func:`pocketflow_tf.model_io.load_model` (the file bridge into tf-keras): this is how a user's
Keras 3 model arrives, so every later stage runs on what the bridge produced, unchanged. The
records' setting ends in ``,keras3`` (distinct rows in the same results file) and
``built_by`` says ``keras3``; their timings ``keras3_build``, ``keras3_save`` and
``bridge_load`` are in ``stage_s``. An architecture Keras 3 does not have (RegNetX002 and
RegNetY002 are absent in Keras 3.15) is a row with ``skipped`` (and ``stages_failed["build"]``)
giving the reason, not a crash.

Example:
    >>> from bench.benchmarks import zoo
    >>> dict(zoo.MODELS)["InceptionV3"]
    75
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from typing import Any

import numpy as np

from bench import results_io
from pocketflow_tf import (
    accounting,
    batchnorm,
    channel_graph,
    latency,
    qat,
    surgery,
    tflite_export,
    tflite_verify,
)
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.channel import learner as channel_learner
from pocketflow_tf.learners.weight_sparse import learner as ws_learner

COMMAND = "python -m bench.run zoo"
#: (keras.applications name, input side): the smallest side each builds at, about 32.
MODELS = (
    ("MobileNet", 32),
    ("MobileNetV2", 32),
    ("MobileNetV3Small", 32),
    ("MobileNetV3Large", 32),
    ("EfficientNetB0", 32),
    ("EfficientNetV2B0", 32),
    ("ResNet50", 32),
    ("ResNet50V2", 32),
    ("DenseNet121", 32),
    ("NASNetMobile", 32),
    ("Xception", 71),
    ("InceptionV3", 75),
    ("ConvNeXtTiny", 32),
    ("RegNetX002", 32),
    ("RegNetY002", 32),
)
#: Models whose graph starts with their own preprocessing (they take 0..255 pixels).
RAW_PIXELS = frozenset(
    {
        "MobileNetV3Small",
        "MobileNetV3Large",
        "EfficientNetB0",
        "EfficientNetV2B0",
        "ConvNeXtTiny",
        "RegNetX002",
        "RegNetY002",
    }
)
N_VERIFY = 200
INT8_MIN_CORR = 0.9


def _inputs(name: str, size: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3)).astype("float32")
    return x * 255.0 if name in RAW_PIXELS else x * 2.0 - 1.0


def _prunable_flops_share(model, graph) -> float:
    profile = accounting.profile_model(model)
    prunable = {g.id for g in graph.prunable_groups()}
    inside = 0
    for cost in profile.layers:
        lc = graph.layers.get(cost.name)
        if lc is None:
            continue
        segs = [s for seg in lc.inputs for s in seg] + list(lc.output)
        if any(graph.find(s.group) in prunable for s in segs):
            inside += cost.flops
    return inside / max(1, profile.total_flops)


def _prune(model, x, keep: float):
    """The channel learner's prune: uniform ratio, L1, rounded to 8 (else 1)."""
    last = None
    for rounding in (8, 1):
        lrn = channel_learner.ChannelPrunedLearner(
            cp_prune_option="uniform",
            cp_preserve_ratio=keep,
            cp_criterion="l1",
            cp_channel_round=rounding,
            cp_nb_samples=len(x),
            cp_nb_eval=len(x),
            verbose=0,
        )
        try:
            return lrn.prune(model, x), rounding
        except ValueError as e:  # the target is out of reach at this rounding
            last = e
    raise last


def _export(model, path, mode, x_verify, x_calib, scale):
    if mode == "float":
        thresholds = {"max_abs_diff": 1e-4 * max(1.0, scale)}
    else:  # untrained logits are nearly tied: agreement is recorded, correlation checked
        thresholds = {"min_agreement": None, "max_acc_drop": None}
    res = tflite_verify.export_tflite(
        model,
        path,
        mode=mode,
        x_verify=x_verify,
        representative_data=x_calib if mode == "int8" else None,
        thresholds=thresholds,
    )
    return res


class AbsentModel(AttributeError):
    """The Keras that was asked to build the model has no such application."""


def _build_keras3(name: str, size: int, workdir: str, lap) -> Any:
    """Builds ``name`` in Keras 3, saves it as Keras 3 ``.keras``, loads it through the bridge.

    Saved and loaded rather than bridged in memory: the file is what a Keras 3 user hands
    over, and loading it also exercises Keras 3's serialisation of every layer.

    Raises:
        AbsentModel: Keras 3 has no such application (the record keeps the message).
    """
    import keras as keras3  # Keras 3: only imported by this variant

    from pocketflow_tf import model_io

    build = getattr(keras3.applications, name, None)
    if build is None:
        raise AbsentModel(
            f"Keras {keras3.__version__} has no keras.applications.{name} (tf-keras only)"
        )
    keras3.backend.clear_session()
    k3_model = build(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
    )
    lap("keras3_build")
    path = os.path.join(workdir, f"{name}.keras3.keras")
    k3_model.save(path)
    del k3_model  # the bridged tf-keras model is all the later stages use
    keras3.backend.clear_session()
    lap("keras3_save")
    keras.backend.clear_session()
    return model_io.load_model(path)


def measure(
    name: str, size: int, keep: float, rounds: int, workdir: str, keras_major: int = 2
) -> dict[str, Any]:
    """Runs every stage on one architecture; failures are recorded, never raised.

    ``keras_major=3`` builds the model in Keras 3, saves it and loads it through the file
    bridge (see the module docstring); every later stage is the same.

    Example:
        >>> rec = measure("MobileNetV3Small", 32, 0.5, 10, "/tmp")  # doctest: +SKIP
    """
    rec: dict[str, Any] = {"input": [size, size, 3], "stages_failed": {}, "stage_s": {}}
    rec["built_by"] = "keras3" if keras_major == 3 else "tf-keras"
    t0 = time.time()
    clock = [t0]

    def lap(stage: str) -> None:
        now = time.time()
        rec["stage_s"][stage] = round(now - clock[0], 1)
        clock[0] = now

    def fail(stage: str, e: BaseException) -> None:
        rec["stages_failed"][stage] = f"{type(e).__name__}: {e}"[:500]
        print(f"[zoo] {name}: {stage} failed: {type(e).__name__}: {str(e)[:200]}")
        if os.environ.get("PFTF_ZOO_TRACE"):
            traceback.print_exc()

    try:
        if keras_major == 3:
            model = _build_keras3(name, size, workdir, lap)
            lap("bridge_load")
        else:
            keras.backend.clear_session()
            model = getattr(keras.applications, name)(
                weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
            )
            lap("build")
    except Exception as e:
        fail("build", e)
        if isinstance(e, AbsentModel):  # not a failure of the pipeline: say why no numbers
            rec["skipped"] = str(e)
        rec["failed_stages"] = list(rec["stages_failed"])
        rec["passed"] = False
        rec["wall_s"] = round(time.time() - t0, 1)
        return rec
    x_calib = _inputs(name, size, 64, seed=0)
    x_verify = _inputs(name, size, N_VERIFY, seed=1)
    # Untrained BatchNorm statistics (mean 0, variance 1) let activations vanish or explode
    # (MobileNetV3Small's logits are ~1e-11): re-estimated on the inputs, the net computes
    # with a trained net's scales, so the parity and int8 checks compare real signals.
    batchnorm.reestimate(model, tf.data.Dataset.from_tensor_slices(x_calib).batch(32), 2)
    dense_flops = accounting.count_flops(model)
    rec.update(flops=dense_flops, params=model.count_params())
    try:
        graph = channel_graph.build(model)
        rec.update(
            groups=len(graph.groups),
            prunable_groups=len(graph.prunable_groups()),
            prunable_flops_share=round(_prunable_flops_share(model, graph), 4),
            blocked=dict(graph.unsupported),
            blocked_layers=len(graph.unsupported),
            inexact_groups=sum(1 for g in graph.prunable_groups() if not g.exact),
            unknown_cost_layers=accounting.profile_model(model).unknown_layers,
        )
    except Exception as e:
        fail("graph", e)
        return rec
    lap("graph")
    try:
        err, cut = surgery.dead_channel_error(model, graph, x_verify[:4])
        scale = float(np.max(np.abs(model(x_verify[:4], training=False))))
        rec.update(
            dead_channel_err=err,
            dead_channel_groups=cut,
            dead_channel_ok=bool(err <= 1e-4 * max(1.0, scale)),
        )
    except Exception as e:
        fail("dead_channel_check", e)
    lap("dead_channel_check")
    try:
        t = time.time()
        thin, rounding = _prune(model, x_calib, keep)
        rec.update(
            channel_round=rounding,
            flops_ratio=round(accounting.count_flops(thin) / dense_flops, 4),
            params_ratio=round(thin.count_params() / model.count_params(), 4),
            prune_wall_s=round(time.time() - t, 1),
        )
    except Exception as e:
        fail("prune", e)
        thin = None
    lap("prune")
    paths = {}
    if thin is not None:
        y_keras = thin.predict(x_verify, batch_size=50, verbose=0)
        scale = float(np.max(np.abs(y_keras)))
        rec["logit_scale"] = round(scale, 4)
        for mode in ("float", "int8"):
            path = os.path.join(workdir, f"{name}.pruned.{mode}.tflite")
            try:
                res = _export(thin, path, mode, x_verify, x_calib, scale)
                rec[f"{mode}_export_ok"] = bool(res.report.passed)
                rec[f"{mode}_agreement"] = res.report.top1_agreement
                if mode == "float":
                    rec.update(bytes=res.bytes, bytes_gzip=res.bytes_gzip)
                    rec["float_max_abs_diff"] = res.report.max_abs_diff
                else:
                    y8 = tflite_verify.TFLiteRunner(path).predict(x_verify, batch_size=50)
                    corr = float(np.corrcoef(y8.ravel(), y_keras.ravel())[0, 1])
                    rec["int8_logit_corr"] = round(corr, 4)
                    rec["int8_export_ok"] = bool(res.report.passed and corr >= INT8_MIN_CORR)
                    rec["int8_bytes"] = res.bytes
                paths[mode] = path
            except Exception as e:
                rec[f"{mode}_export_ok"] = False
                fail(f"export_{mode}", e)
        lap("exports")
        try:
            qat.quantize_model(thin)
            rec["qat_wrapper_ok"] = True
        except Exception as e:
            rec["qat_wrapper_ok"] = False
            fail("qat_wrapper", e)
        lap("qat_wrapper")
        try:
            ws = ws_learner.WeightSparseLearner(ws_prune_ratio=0.5, verbose=0)
            ws.total_steps = 100
            wrapped = ws.prepare(thin)
            rec["sparsity_wrapped_layers"] = sum(
                1 for layer in wrapped.layers if type(layer).__name__ == "PruneLowMagnitude"
            )
            rec["sparsity_wrapper_ok"] = rec["sparsity_wrapped_layers"] > 0
        except Exception as e:
            rec["sparsity_wrapper_ok"] = False
            fail("sparsity_wrapper", e)
    lap("sparsity_wrapper")
    if "float" in paths and rounds > 0:
        try:
            dense_path = os.path.join(workdir, f"{name}.dense.float.tflite")
            with open(dense_path, "wb") as f:
                f.write(tflite_export.convert(model, "float"))
            r = latency.interleaved_ratio(paths["float"], dense_path, rounds=rounds, warmup=5)
            rec["latency_ratio"] = round(r.latency_ratio, 4)
            rec["latency_ms_dense"] = round(r.reference_ms, 4)
        except Exception as e:
            fail("latency", e)
    lap("latency")
    rec["failed_stages"] = list(rec["stages_failed"])
    rec["passed"] = bool(
        rec.get("flops_ratio") is not None
        and rec["flops_ratio"] <= 0.55
        and rec.get("float_export_ok")
        and rec.get("int8_export_ok")
    )
    rec["wall_s"] = round(time.time() - t0, 1)
    return rec


def run() -> list[dict]:
    """One record per architecture (see the module docstring).

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    keep = float(os.environ.get("PFTF_ZOO_KEEP", "0.5"))
    rounds = int(os.environ.get("PFTF_ZOO_ROUNDS", "30"))
    keras_major = int(os.environ.get("PFTF_ZOO_KERAS", "2"))
    if keras_major not in (2, 3):
        raise SystemExit(f"PFTF_ZOO_KERAS={keras_major!r}: accepted 2 (tf-keras) or 3 (Keras 3)")
    # tf-keras rows keep their original setting, so earlier results files still match them.
    suffix = ",keras3" if keras_major == 3 else ""
    command = f"PFTF_ZOO_KERAS=3 {COMMAND}" if keras_major == 3 else COMMAND
    wanted = os.environ.get("PFTF_ZOO_MODELS")
    models = [m for m in MODELS if not wanted or m[0] in wanted.split(",")]
    recs = []
    with tempfile.TemporaryDirectory(prefix="pftf-zoo-") as workdir:
        for name, size in models:
            try:
                extra = measure(name, size, keep, rounds, workdir, keras_major)
            except Exception as e:  # a bug in the benchmark itself: still a row, not a crash
                extra = {"stages_failed": {"benchmark": f"{type(e).__name__}: {e}"[:500]}}
            extra.setdefault("built_by", "keras3" if keras_major == 3 else "tf-keras")
            extra.setdefault("failed_stages", list(extra.get("stages_failed", {})))
            extra.setdefault("passed", False)
            rec = results_io.make_record(
                model=name,
                dataset=f"random {size}x{size}x3, 10 classes (untrained, weights=None)",
                method="channel-l1-uniform",
                setting=f"flops_keep={keep}{suffix}",
                flops_ratio=extra.pop("flops_ratio", None),
                params_ratio=extra.pop("params_ratio", None),
                bytes=extra.pop("bytes", None),
                bytes_gzip=extra.pop("bytes_gzip", None),
                latency_ratio=extra.pop("latency_ratio", None),
                wall_s=extra.pop("wall_s", None),
                command=command,
                **extra,
            )
            recs.append(rec)
            print(
                f"[zoo] {name} ({rec.get('built_by')}): passed={rec.get('passed')} groups={rec.get('groups')} "
                f"prunable={rec.get('prunable_groups')} share={rec.get('prunable_flops_share')} "
                f"FLOPs x{rec['flops_ratio']} float={rec.get('float_export_ok')} "
                f"int8={rec.get('int8_export_ok')} (r={rec.get('int8_logit_corr')}) "
                f"dead_err={rec.get('dead_channel_err')} latency x{rec['latency_ratio']} "
                f"failed={list(rec.get('stages_failed', {}))} {rec['wall_s']} s",
                flush=True,
            )
    return recs
