"""Benchmark ``codebooks``: product quantization and weight clustering (ResNet-20 by default).

Both methods replace weights by shared values from a small codebook, so the compact storage
(codes + codebooks + the few float parameters) is what shrinks; the deployable float
``.tflite`` holds the decoded weights (LiteRT has no codebook kernels), which gzip well.

* ``pq-k<k>``: :class:`ProductQuantLearner` ("And the Bit Goes Down"), ``k`` codewords per
  layer, sub-vectors of 9 (3x3 convs) / 4 (1x1, dense), layer-wise EM on activations,
  codeword fine-tuning, then ``PFTF_CB_EPOCHS`` epochs of global distilled fine-tuning and
  BatchNorm re-estimation;
* ``cluster-<n>``: :class:`NonUniformQuantLearner` (TFMOT weight clustering, ``n`` clusters
  per layer, k-means++ init, first and last layer float), ``PFTF_CB_EPOCHS`` epochs of
  distilled fine-tuning at a tenth of the usual fine-tune learning rate.

Each record: Keras accuracy on the whole test split (and of the verified float ``.tflite``),
the exact compressed bytes (``compressed_bytes``) and ``compression_ratio`` against float32
parameters, raw and gzip ``.tflite`` bytes and the LiteRT latency ratio against the dense
export (interleaved, one thread; about 1 by construction). Every record also holds its
compact ``.tflite`` (codes and codebooks in the file, rebuilt in the graph), written to
``bench/artifacts/<recipe>.<method>.<mode>.tflite`` and verified against the Keras model:

* PQ (``pq-compact``): :func:`~pocketflow_tf.learners.product_quant.compact_export.export_from_codes_file`
  from the codes file the run saved, what ``--learner product-quant`` deploys;
* clustering (``cluster-compact``): the learner's own export path
  (:meth:`NonUniformQuantLearner.export_file`, what ``--learner non-uniform --export_modes
  float,cluster-compact`` writes): each clustered kernel as indices + centroids.

Its fields: ``compact_bytes``, ``compact_bytes_gzip``, ``compact_acc`` (LiteRT, whole test
split), ``compact_latency_ratio`` (its latency over the decoded float file's, interleaved)
and ``compact_vs_float`` (its raw bytes over the decoded float file's: above 1 when the
compact form does not pay off for that model, recorded as measured). When no compact file
can be written (no kernel gains bytes as codes, or the file fails verification) the
record keeps its other figures and ``compact`` says why.

Environment: ``PFTF_CB_METHODS`` (default ``pq-k32,pq-k64,cluster-16,cluster-8``),
``PFTF_CB_EPOCHS`` (default 2), ``PFTF_CB_RECIPES`` (default ``resnet_at_fmnist``;
``mobilenet_at_fmnist`` for MobileNet-v1); ``PFTF_CB_COMPACT_ONLY=1`` redoes only the
compact step of the records of that epoch count, from the model (and PQ codes file) their
run saved in ``bench/artifacts`` (after a change to the compact export; the model must
still score the record's accuracy).

Example:
    >>> from bench.benchmarks import codebooks
    >>> codebooks.parse_method("pq-k32"), codebooks.parse_method("cluster-8")
    (('pq', 32), ('cluster', 8))
"""

from __future__ import annotations

import json
import math
import os
import time

from bench import baselines as baseline_cache
from bench import exports, results_io
from pocketflow_tf import (
    accounting,
    datasets,
    distillation,
    errors,
    latency,
    model_io,
    tflite_verify,
    training,
)
from pocketflow_tf.learners.non_uniform import NonUniformQuantLearner
from pocketflow_tf.learners.product_quant import ProductQuantLearner, compact_export
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run codebooks"
DEFAULT_METHODS = "pq-k32,pq-k64,cluster-16,cluster-8"
DEFAULT_RECIPES = "resnet_at_fmnist"


def parse_method(method: str) -> tuple[str, int]:
    """``"pq-k32"`` -> ``("pq", 32)``; ``"cluster-16"`` -> ``("cluster", 16)``.

    Example:
        >>> parse_method("pq-32")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_CB_METHODS`: 'pq-32'. Accepted: pq-k<codewords> or cluster-<clusters>, e.g. pq-k32, cluster-16.
    """
    kind, _, size = method.partition("-")
    if kind == "pq" and size.startswith("k") and size[1:].isdigit():
        return "pq", int(size[1:])
    if kind == "cluster" and size.isdigit():
        return "cluster", int(size)
    raise errors.InvalidArgumentError(
        "PFTF_CB_METHODS", method, "pq-k<codewords> or cluster-<clusters>, e.g. pq-k32, cluster-16"
    )


def _compress(kind: str, size: int, cfg: training.TrainConfig, dense, data):
    """Fits one method; returns (model, compressed bytes, float32 bytes, learner)."""
    dst = distillation.DistillationConfig(1.0, 2.0)
    if kind == "pq":
        lrn = ProductQuantLearner(cfg, pq_codebook_size=size, distillation=dst, verbose=2)
        model = lrn.fit(dense, data.x_train, data.y_train)
        return model, lrn.report["compressed_bytes"], lrn.report["float_bytes"], lrn
    bits = int(math.log2(size))
    if 2**bits != size:
        raise errors.InvalidArgumentError("clusters", size, "a power of two (2**nuql_weight_bits)")
    cfg = cfg.replace(learning_rate=cfg.learning_rate * NonUniformQuantLearner.finetune_lr_scale)
    lrn = NonUniformQuantLearner(cfg, nuql_weight_bits=bits, distillation=dst, verbose=2)
    model = lrn.fit(dense, data.x_train, data.y_train)
    storage = lrn.report.storage
    return model, storage.total_bytes, storage.float32_bytes, lrn


def _score(res, data, reference: str, rounds: int) -> dict:
    """The record fields of a written compact file ``res`` (an ``ExportResult``)."""
    acc = tflite_verify.tflite_accuracy(res.path, data.x_test, data.y_test, batch_size=100)
    ratio = latency.interleaved_ratio(res.path, reference, rounds=rounds)
    return {
        "compact_bytes": res.bytes,
        "compact_bytes_gzip": res.bytes_gzip,
        "compact_acc": round(acc, 4),
        "compact_latency_ratio": round(ratio.latency_ratio, 4),
        "compact_vs_float": round(res.bytes / os.path.getsize(reference), 4),
    }


def compact(model, codes_path: str, path: str, data, reference: str, rounds: int = 30) -> dict:
    """The compact ``.tflite`` (codes + codebooks in the file) of a PQ model and its figures.

    Written by :func:`compact_export.export_from_codes_file` from the saved codes file (as a
    ``--learner product-quant`` run does), scored by LiteRT on the whole test split and timed
    against ``reference`` (the decoded float file of the same model).

    Example:
        >>> compact(model, "m.pq.npz", "m.pq-compact.tflite", data, "m.float.tflite")  # doctest: +SKIP
        {'compact_bytes': 70120, 'compact_bytes_gzip': 60002, 'compact_acc': 0.9169, ...}
    """
    res = compact_export.export_from_codes_file(
        model,
        codes_path,
        path,
        x_verify=data.x_test[: exports.N_VERIFY],
        y_verify=data.y_test[: exports.N_VERIFY],
    )
    return _score(res, data, reference, rounds)


def cluster_compact(model, path: str, data, reference: str, rounds: int = 30) -> dict:
    """The compact ``.tflite`` (indices + centroids) of a clustered model and its figures.

    Written through the learner's own file mode (``NonUniformQuantLearner.export_file``
    with ``"cluster-compact"``, as ``--export_modes float,cluster-compact`` does), verified
    against ``model``, scored by LiteRT on the whole test split and timed against
    ``reference`` (the float file of the same clustered model).

    Example:
        >>> cluster_compact(model, "m.cluster-compact.tflite", data, "m.float.tflite")  # doctest: +SKIP
        {'compact_bytes': 101230, 'compact_bytes_gzip': 80211, 'compact_acc': 0.9301, ...}
    """
    res = NonUniformQuantLearner.export_file(
        compact_export.CLUSTER_MODE,
        model,
        path,
        prefix=path.removesuffix(".tflite"),
        x_verify=data.x_test[: exports.N_VERIFY],
        y_verify=data.y_test[: exports.N_VERIFY],
    )
    return _score(res, data, reference, rounds)


def _compact_step(kind: str, model, stem: str, data, reference: str) -> dict:
    """The compact file of one record (from ``stem``'s saved files) and its fields."""
    if kind == "pq":
        return compact(model, stem + ".pq.npz", stem + ".pq-compact.tflite", data, reference)
    return cluster_compact(model, f"{stem}.{compact_export.CLUSTER_MODE}.tflite", data, reference)


def refresh_compact(names: list[str], methods: list[str], epochs: int, data) -> list[dict]:
    """The saved records of ``epochs`` with their compact figures measured again.

    Each record's model (and PQ codes file) are the ones its run saved in ``bench/artifacts``;
    a model that no longer scores the record's accuracy (another run overwrote it) is
    refused rather than measured.

    Example:
        >>> refresh_compact(["resnet_at_fmnist"], ["pq-k32"], 1, data)  # doctest: +SKIP
    """
    with open(os.path.join(results_io.RESULTS, "codebooks.json")) as f:
        saved = json.load(f)["records"]
    recs = []
    for name in names:
        for method in methods:
            kind = parse_method(method)[0]
            stem = os.path.join(baseline_cache.ARTIFACTS, f"{name}.{method}")
            model = model_io.load_model(stem + ".keras")
            key = (model.name, method, f"epochs={epochs}")
            (rec,) = [r for r in saved if (r["model"], r["method"], r["setting"]) == key]
            acc = round(training.evaluate_accuracy(model, data.x_test, data.y_test), 4)
            if acc != rec["acc"]:
                raise errors.InvalidArgumentError(
                    f"{stem}.keras", f"accuracy {acc}", f"the record's {rec['acc']} (same run)"
                )
            # Measured here, now; a former "not written" note no longer holds.
            rec = {k: v for k, v in rec.items() if k not in ("host", "compact")}
            rec.update(_compact_step(kind, model, stem, data, stem + ".float.tflite"))
            print(
                f"[bench] {name} {method}: compact {rec['compact_bytes']:,} B, acc "
                f"{rec['compact_acc']}, latency x{rec['compact_latency_ratio']}"
            )
            recs.append(rec)
    return recs


def run() -> list[dict]:
    """Compresses, exports, verifies, evaluates and times; one record per (model, method).

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    epochs = int(os.environ.get("PFTF_CB_EPOCHS", "2"))
    methods = [m for m in os.environ.get("PFTF_CB_METHODS", DEFAULT_METHODS).split(",") if m]
    parsed = [parse_method(m) for m in methods]  # bad names fail before any training
    recipes = baseline_cache.parse_recipes(
        "PFTF_CB_RECIPES", os.environ.get("PFTF_CB_RECIPES", DEFAULT_RECIPES)
    )
    data = datasets.load_dataset("fmnist")
    if os.environ.get("PFTF_CB_COMPACT_ONLY") == "1":
        return refresh_compact(recipes, methods, epochs, data)
    recs = []
    for name in recipes:
        dense, acc_dense = baseline_cache.scored(name, data)
        cfg = recipe.get_recipe(name).finetune_config(epochs=epochs)
        dense_path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.float.tflite")
        dense_exp = exports.export(dense, dense_path, data).export
        for method, (kind, size) in zip(methods, parsed, strict=True):
            start = time.time()
            model, packed, float32, lrn = _compress(kind, size, cfg, dense, data)
            wall = time.time() - start
            acc = training.evaluate_accuracy(model, data.x_test, data.y_test)
            path = os.path.join(baseline_cache.ARTIFACTS, f"{name}.{method}.float.tflite")
            deployed = exports.export(model, path, data, reference=dense_path, rounds=30)
            rec = exports.record(
                deployed,
                model=dense.name,
                method=method,
                setting=f"epochs={epochs}",
                acc=acc,
                acc_baseline=acc_dense,
                flops_ratio=1.0,
                params_ratio=round(
                    accounting.profile_model(model).total_params
                    / accounting.profile_model(dense).total_params,
                    4,
                ),
                wall_s=round(wall, 1),
                command=("" if name == DEFAULT_RECIPES else f"PFTF_CB_RECIPES={name} ")
                + f"PFTF_CB_METHODS={method} PFTF_CB_EPOCHS={epochs} {COMMAND}",
                compressed_bytes=int(packed),
                float32_bytes=int(float32),
                compression_ratio=round(float32 / packed, 2),
                dense_bytes=dense_exp.bytes,
                dense_bytes_gzip=dense_exp.bytes_gzip,
                epochs=epochs,
            )
            stem = os.path.join(baseline_cache.ARTIFACTS, f"{name}.{method}")
            if kind == "pq":
                lrn.save_compressed(stem + ".pq.npz")
            model_io.save_model(model, stem + ".keras")  # the compact step can be redone
            try:
                rec.update(_compact_step(kind, model, stem, data, path))
                got = (
                    f"compact file {rec['compact_bytes']:,} B ({rec['compact_vs_float']:.3f}x "
                    f"its float file), acc {rec['compact_acc']:.4f}, latency "
                    f"x{rec['compact_latency_ratio']:.3f}"
                )
            except (errors.InvalidArgumentError, errors.VerificationError) as e:
                # No kernel gains bytes as codes, or the file failed verification: the
                # trained record is kept and says why (nothing written, see atomic_io).
                rec["compact"] = got = f"not written: {e}"
            recs.append(rec)
            print(
                f"[bench] {name} {method}: acc {acc:.4f} (dense {acc_dense:.4f}), compressed "
                f"{packed:,} B vs {float32:,} B float32 (x{rec['compression_ratio']}), "
                f".tflite gzip {deployed.export.bytes_gzip:,} B; {got}; {wall:.0f} s",
                flush=True,
            )
    return recs
