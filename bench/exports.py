"""The benchmarks' deploy step: one call to :func:`pocketflow_tf.deploy.deploy` on a data set.

Every benchmark exports on the test split of a :mod:`pocketflow_tf.datasets` data set the same
way: verified on its first ``n_verify`` test images (with labels), int8 calibrated on ``rep``,
optionally scored through LiteRT on the whole test split and timed against a reference file.
:func:`export` is that step, so the benchmarks differ only in the arguments they pass.

Example:
    >>> from bench import exports
    >>> exports.N_VERIFY
    500
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench import results_io
from pocketflow_tf import deploy
from pocketflow_tf.compat import keras

#: Test images an export is verified on by default (``n_verify``).
N_VERIFY = 500


def calibration(data: Any, n: int = 512, seed: int = 0) -> np.ndarray:
    """``n`` int8 calibration images drawn without replacement from the training split.

    From the training split, not the test images the exports are verified and scored on,
    and fed to the converter exactly as the Keras model is fed them.

    Example:
        >>> import types
        >>> data = types.SimpleNamespace(x_train=np.arange(10.0)[:, None])
        >>> rep = calibration(data, n=4)
        >>> rep.shape, len(np.unique(rep)), bool(np.array_equal(rep, calibration(data, n=4)))
        ((4, 1), 4, True)
    """
    rng = np.random.default_rng(seed)
    return data.x_train[rng.choice(len(data.x_train), n, replace=False)]


def export(
    model: keras.Model,
    path: str,
    data: Any,
    *,
    mode: str = "float",
    n_verify: int = N_VERIFY,
    rep: np.ndarray | None = None,
    sparse: bool = False,
    evaluate: bool = False,
    reference: str | None = None,
    rounds: int = 60,
) -> deploy.Deployed:
    """Exports ``model`` to a verified ``path``; scores and times it on request.

    Args:
        model: The Keras model.
        path: Destination ``.tflite``.
        data: A data set with ``x_test`` and ``y_test`` (:func:`pocketflow_tf.datasets.load_dataset`).
        mode: TFLite conversion mode.
        n_verify: Verify on ``x_test[:n_verify]`` against ``y_test[:n_verify]``.
        rep: int8 calibration images (used only when ``mode == "int8"``).
        sparse: The converter's sparsity encoding.
        evaluate: Score the file on the whole test split (``Deployed.acc``), 100 per invoke.
        reference: A ``.tflite`` to time the file against (``Deployed.latency_ratio``).
        rounds: Interleaved timing rounds.

    Returns:
        The :class:`pocketflow_tf.deploy.Deployed` file and figures.

    Example:
        >>> d = export(model, "m.int8.tflite", data, mode="int8", n_verify=1000, rep=rep,
        ...            evaluate=True, reference="m.float.tflite")  # doctest: +SKIP
        >>> d.acc, d.export.bytes, d.latency_ratio  # doctest: +SKIP
        (0.9212, 301234, 0.41)
    """
    return deploy.deploy(
        model,
        path,
        mode=mode,
        x_verify=data.x_test[:n_verify],
        y_verify=data.y_test[:n_verify],
        representative_data=rep if mode == "int8" else None,
        sparse=sparse,
        x_eval=data.x_test if evaluate else None,
        y_eval=data.y_test if evaluate else None,
        eval_batch_size=100,
        reference=reference,
        rounds=rounds,
    )


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def record(
    deployed: deploy.Deployed,
    *,
    acc: float,
    acc_baseline: float | None = None,
    dataset: str = "fmnist",
    **fields: Any,
) -> dict[str, Any]:
    """A result record of a deployed model (:func:`bench.results_io.make_record`).

    Fills ``bytes``, ``bytes_gzip`` and ``latency_ratio`` from ``deployed`` and rounds the
    accuracies and the ratio to 4 digits, as every benchmark records them.

    Args:
        deployed: What :func:`export` returned.
        acc: The accuracy the row reports (Keras or LiteRT: the benchmark decides).
        acc_baseline: The dense model's accuracy.
        dataset: The data set's name.
        **fields: The other fields (``model``, ``method``, ``setting``, ``wall_s``, extras).

    Returns:
        The record.

    Example:
        >>> from pocketflow_tf import deploy, tflite_verify
        >>> exp = tflite_verify.ExportResult("m.tflite", "ab" * 32, 1000, 600, None)
        >>> r = record(deploy.Deployed(exp, latency_ratio=0.512345), acc=0.91234, model="m")
        >>> r["acc"], r["bytes_gzip"], r["latency_ratio"], r["acc_baseline"]
        (0.9123, 600, 0.5123, None)
    """
    return results_io.make_record(
        dataset=dataset,
        acc=_round4(acc),
        acc_baseline=_round4(acc_baseline),
        bytes=deployed.export.bytes,
        bytes_gzip=deployed.export.bytes_gzip,
        latency_ratio=_round4(deployed.latency_ratio),
        **fields,
    )
