"""``compress(model, data, target=...)``: the Python entry point of automated compression.

A thin front to :class:`~learner.AutoLearner`: it accepts training arrays or a
:class:`pocketflow_tf.datasets.DataSplits`, a :class:`~target.Target` or a target string,
runs the search and the final build in ``directory`` (rerunning continues the search), and
returns a :class:`CompressResult`.

The test split of a ``DataSplits`` is never shown to the search: it is evaluated once the
final model is built, for the report only (``evaluate_test``).

Example:
    >>> from pocketflow_tf.learners.auto import compress
    >>> res = compress(model, (x_train, y_train), "2x faster", "runs/auto")  # doctest: +SKIP
    >>> res.met, res.tflite_path  # doctest: +SKIP
    (True, 'runs/auto/final/model.float.tflite')
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from pocketflow_tf import cli_errors, datasets, distillation, errors, model_io, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto.auto_options import AutoOptions
from pocketflow_tf.learners.auto.learner import DEFAULT_DISTILLATION, AutoLearner
from pocketflow_tf.learners.auto.target import Target


@dataclasses.dataclass
class CompressResult:
    """What :func:`compress` returns.

    Attributes:
        model: The final Keras model (float, or a QAT model when QAT won the int8 final).
        tflite_path: Its verified deployable ``.tflite``.
        report_path: ``<directory>/auto_report.json``.
        html_path: ``<directory>/auto_report.html``.
        met: Whether the final model meets the target (re-measured on held-out data).
        pareto: The Pareto-optimal trials (accuracy x latency x bytes), as report rows.
        report: The whole report (as in the JSON file).

    Example:
        >>> CompressResult(None, "m.tflite", "r.json", "r.html", False, []).met
        False
    """

    model: keras.Model | None
    tflite_path: str | None
    report_path: str | None
    html_path: str | None
    met: bool
    pareto: list[dict[str, Any]]
    report: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The report's one-paragraph answer.

        Example:
            >>> CompressResult(None, None, None, None, True, [],
            ...                {"answer": {"summary": "Target met"}}).summary
            'Target met'
        """
        return (self.report.get("answer") or {}).get("summary", "")


def compress(
    model: keras.Model,
    data: tuple[np.ndarray, np.ndarray] | datasets.DataSplits,
    target: Target | str,
    directory: str | os.PathLike,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    train_config: training.TrainConfig | None = None,
    distill: distillation.DistillationConfig | bool | None = DEFAULT_DISTILLATION,
    evaluate_test: bool = True,
    seed: int = 0,
    verbose: int = 1,
    **options: Any,
) -> CompressResult:
    """Compresses ``model`` to meet ``target``; see :class:`~learner.AutoLearner` for the steps.

    Args:
        model: The trained dense Keras model (tf-keras, or Keras 3: the result is then
            Keras 3 too; never modified).
        data: ``(x_train, y_train)`` arrays, or a ``DataSplits`` (its ``x_val`` is used as
            the held-out split when set, as unbiased unless it was carved from the training
            data (``val_from_training``); its test split only for the final report).
        target: E.g. ``"2x faster"``, ``"int8,<=0.3x bytes"``, ``"under 1 MB"``,
            ``"flops<=0.5, drop<=0.5"`` or a :class:`~target.Target`.
        directory: Work directory; rerunning with it continues the search.
        x_val: Held-out images from the training distribution that the model never saw
            (default: ``holdout`` of the training data, reported as biased). Never the test
            set.
        y_val: Their labels.
        train_config: The fine-tunes' optimiser, learning rate, batch and seed (default:
            Adam at 1e-3, batch 64). Its ``epochs`` is not used: the final fine-tune takes
            what the wall budget leaves, at most the ``final_epochs`` keyword when given.
        distill: Distillation of every fine-tune: a ``DistillationConfig``, ``True`` (the
            default settings) or ``None``/``False`` (off).
        evaluate_test: With a ``DataSplits`` holding a test split: report the dense and final
            accuracy on it after the search (never used to choose).
        seed: Seed of the split, the search and the builds.
        verbose: 0 silent, 1 progress lines, 2 Keras epochs too.
        **options: Any option of :class:`~.auto_options.AutoOptions` without its ``auto_``
            prefix, with the same default (:func:`keywords` lists them): ``optimizer``
            (``"tpe"``, ``"random"`` or ``"gp"``), ``max_trials`` (trial budget over every run
            of the directory), ``max_wall_s`` (search wall-clock budget in seconds),
            ``proxy_steps`` (distilled fine-tuning steps per trial), ``holdout`` (share of the
            training data held out when no ``x_val`` is given), ``int8_final``
            (``"auto"``, ``"ptq"`` or ``"qat"``), ``qat_epochs``, ``latency_rounds``...

    Returns:
        The :class:`CompressResult`.

    Raises:
        InvalidArgumentError: A bad argument, target or data, or a directory holding
            another study; raised before any work.

    Example:
        >>> compress(None, ([], []), "2x faster", "/tmp/x")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'NoneType'. Accepted: a keras.Model (tf-keras or Keras 3).
    """
    if not (isinstance(model, keras.Model) or model_io.is_keras3(model)):
        raise errors.InvalidArgumentError(
            "model", type(model).__name__, "a keras.Model (tf-keras or Keras 3)"
        )
    if directory is None:
        raise errors.InvalidArgumentError(
            "directory", None, "a work directory (it holds the resumable study)"
        )
    cli_errors.check_output_path("directory", directory, is_dir=True)
    x, y, (xv, yv, val_from_training), x_test, y_test = _unpack(data, x_val, y_val)
    cfg = train_config or training.TrainConfig(
        epochs=1, batch_size=64, learning_rate=1e-3, optimizer="adam", weight_decay=0.0, seed=seed
    )
    names = keywords()
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise errors.InvalidArgumentError(
            unknown[0], options[unknown[0]], f"a keyword of compress: one of {sorted(names)}"
        )
    try:
        lrn = AutoLearner(
            cfg,
            auto_target=target,
            auto_dir=directory,
            auto_seed=seed,
            distillation=distill,
            verbose=verbose,
            **{names[k]: v for k, v in options.items()},
        )
    except errors.InvalidArgumentError as e:
        # Named as the caller spelled it: compress(holdout=...), not auto_holdout.
        keyword = {v: k for k, v in names.items()}.get(e.name)
        if e.name == "distillation":
            keyword = "distill"  # compress's name for AutoLearner's `distillation`
        if keyword is None:
            raise
        raise errors.InvalidArgumentError(keyword, e.value, e.accepted) from None
    validation = (x_test, y_test) if evaluate_test and x_test is not None and len(x_test) else None
    final = lrn.fit(
        model,
        x,
        y,
        x_val=xv,
        y_val=yv,
        val_from_training=val_from_training,
        validation_data=validation,
    )
    return CompressResult(
        model=final,
        tflite_path=lrn.tflite_path,
        report_path=lrn.report_path,
        html_path=lrn.html_path,
        met=bool(lrn.met),
        pareto=list(lrn.pareto),
        report=lrn.report,
    )


#: AutoOptions given by :func:`compress`'s own arguments rather than as keywords.
_OWN_ARGUMENTS = ("auto_target", "auto_dir", "auto_seed")


def keywords() -> dict[str, str]:
    """``{compress keyword: AutoLearner option}``: every ``auto_*`` option of
    :class:`~.auto_options.AutoOptions` but those :func:`compress` takes as arguments,
    without the prefix (generated from the fields, so the two cannot drift apart).

    Example:
        >>> names = keywords()
        >>> names["max_trials"], names["int8_final"], "target" in names
        ('auto_max_trials', 'auto_int8_final', False)
    """
    prefix = AutoOptions.prefix
    return {name[len(prefix) :]: name for name in AutoOptions.names() if name not in _OWN_ARGUMENTS}


def _unpack(data: Any, x_val: Any, y_val: Any):
    """``(x, y, (x_val, y_val, val_from_training), x_test, y_test)`` of the accepted ``data``
    forms: a caller's ``x_val`` is taken as unseen; a ``DataSplits``' says where it came from."""
    if isinstance(data, datasets.DataSplits):
        val = (x_val, y_val, False)
        if x_val is None and data.x_val is not None:
            val = (data.x_val, data.y_val, bool(data.val_from_training))
        return data.x_train, data.y_train, val, data.x_test, data.y_test
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1], (x_val, y_val, False), None, None
    raise errors.InvalidArgumentError(
        "data",
        type(data).__name__,
        "(x_train, y_train) arrays or a pocketflow_tf.datasets.DataSplits",
    )


__all__ = ["CompressResult", "compress", "keywords"]
