"""Running and verifying TFLite exports against their Keras model; verified atomic export.

An export is only kept when the TFLite model, run by the LiteRT interpreter on real inputs,
agrees with the Keras model it came from (:func:`verify`) *and* loads and runs in a fresh
Python process that has nothing but LiteRT and NumPy (:func:`check_in_child_process`).
:func:`export_tflite` chains conversion, both checks and the atomic write of the file and of
its ``.sha256``; when a check fails, nothing is written.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf import tflite_export, tflite_verify
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).random((200, 4), dtype=np.float32)
    >>> report = tflite_verify.verify(m, tflite_export.convert(m), x, mode="float")
    >>> report.passed, report.top1_agreement
    (True, 1.0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from pocketflow_tf import (
    atomic_io,
    cli_errors,
    errors,
    graph_rebuild,
    heads,
    inputs,
    interop,
    model_io,
    options,
    tflite_export,
    tflite_load,
)
from pocketflow_tf.compat import keras, tf

#: Pass/fail thresholds per mode. Keys:
#:
#: * ``max_abs_diff``: largest allowed ``|keras_logit - tflite_logit|`` over all samples and
#:   classes (float-weight modes only; quantized logits legitimately move more), for outputs
#:   up to :data:`STATED_SCALE` in magnitude; beyond, it scales with the largest ``|logit|``.
#: * ``min_agreement``: smallest allowed share of samples whose top-1 class is the same.
#: * ``max_acc_drop``: largest allowed ``acc_keras - acc_tflite`` (checked only when labels
#:   are given).
#:
#: Why these values: float TFLite runs the same float32 graph with other kernels (XNNPACK),
#: so logits differ by summation order only (~1e-6); 1e-4 leaves two orders of margin yet
#: catches any real mismatch (a wrong layer, missing normalisation). float16 rounds every
#: weight to 11 significant bits (relative error <= 2^-11 ~ 5e-4 each), which moves logits of
#: magnitude ~10 by a few 1e-3; 0.05 is ~10x that, still far below a wrong model. Quantized
#: modes are judged on decisions: dynamic-range quantization keeps activations float and
#: flips few predictions (>= 97 % agreement); full int8 also quantizes activations (>= 95 %).
#: Neither may cost more than one accuracy point.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "float": {"max_abs_diff": 1e-4, "min_agreement": 1.0},
    "float16": {"max_abs_diff": 0.05, "min_agreement": 0.99, "max_acc_drop": 0.005},
    "dynamic": {"min_agreement": 0.97, "max_acc_drop": 0.01},
    "int8": {"min_agreement": 0.95, "max_acc_drop": 0.01},
}
_THRESHOLD_KEYS = ("max_abs_diff", "min_agreement", "max_acc_drop")

#: The output magnitude ``max_abs_diff`` is stated for, per mode. Float rounding grows with
#: the values summed, so for larger outputs the limit grows in proportion (it is then
#: relative to the largest ``|logit|``). Measured on Keras 3 MobileNetV3-Small nets: the
#: dense one (logits up to 47) differed from its float file by 1.1e-4 (4.6e-6 of its largest
#: logit; layer by layer no more than summation order), a pruned and fine-tuned one (logits
#: up to 302) by 4.6e-3 (1.5e-5), every prediction the same; a flat 1e-4 refused both. A real
#: mismatch (a wrong layer option, a missing normalisation) moves logits by far more. float16's
#: 0.05 was set for logits of magnitude ~10 (see above).
STATED_SCALE: dict[str, float] = {"float": 1.0, "float16": 10.0}


def _logit_scale(ref: np.ndarray) -> float:
    """The largest finite ``|output|`` (0 when there is none)."""
    finite = np.abs(ref[np.isfinite(ref)])
    return float(finite.max()) if finite.size else 0.0


class TFLiteRunner:
    """Runs a single-input, single-output TFLite model on float inputs, in batches.

    Integer-quantized I/O (int8 or uint8 tensors) is handled here, once: float inputs are
    quantized with the input tensor's scale and zero-point, integer outputs are dequantized
    with the output's, so :meth:`predict` always takes and returns what the Keras model does.

    Args:
        model: Flatbuffer bytes or the path of a ``.tflite`` file.
        num_threads: Interpreter threads (1 by default: reproducible and what a phone's
            single big core sees).

    Raises:
        InvalidArgumentError: If ``num_threads`` < 1.
        UnsupportedModelError: If the model has several inputs or outputs.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import keras
        >>> from pocketflow_tf import tflite_export
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> runner = TFLiteRunner(tflite_export.convert(m))
        >>> runner.predict(np.zeros((5, 4), np.float32), batch_size=2).shape
        (5, 3)
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int = 1):
        options.check_integer("num_threads", num_threads, low=1)
        self._interp = tflite_load.open_interpreter(model, num_threads=num_threads)
        n_in = len(self._interp.get_input_details())
        n_out = len(self._interp.get_output_details())
        if n_in != 1 or n_out != 1:
            raise errors.UnsupportedModelError(
                f"TFLiteRunner needs exactly one input and one output; the model has "
                f"{n_in} input(s) and {n_out} output(s)"
            )
        self.num_threads = num_threads
        self._interp.allocate_tensors()
        self._batch = int(self.input_details["shape"][0])

    @property
    def input_details(self) -> dict[str, Any]:
        """LiteRT details of the input tensor (current shape, dtype, quantization).

        Example:
            >>> runner.input_details["dtype"]  # doctest: +SKIP
            <class 'numpy.float32'>
        """
        return self._interp.get_input_details()[0]

    @property
    def output_details(self) -> dict[str, Any]:
        """LiteRT details of the output tensor.

        Example:
            >>> runner.output_details["shape"]  # doctest: +SKIP
            array([1, 10], dtype=int32)
        """
        return self._interp.get_output_details()[0]

    @property
    def is_int8_input(self) -> bool:
        """``True`` when the input tensor is 8-bit integer (int8, or legacy uint8).

        Example:
            >>> runner.is_int8_input  # doctest: +SKIP
            False
        """
        return np.dtype(self.input_details["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8))

    def predict(self, x: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Returns the model's float32 outputs (logits) for float inputs ``x``.

        The input tensor is resized to ``batch_size`` (and once more for a smaller last
        batch), so any ``len(x)`` works.

        Args:
            x: Float inputs ``(N, ...)``, preprocessed exactly as for the Keras model
                (uint8 pixels are scaled to ``[0, 1]``, as by every entry; NaN/inf refused).
            batch_size: Samples per ``invoke()``.

        Returns:
            float32 array ``(N, *output_shape[1:])``.

        Raises:
            InvalidArgumentError: On a bad ``batch_size`` or a per-sample shape of ``x`` that
                the model does not accept.

        Example:
            >>> runner.predict(x, batch_size=32).dtype  # doctest: +SKIP
            dtype('float32')
        """
        batch_size = options.check_integer("batch_size", batch_size, low=1)
        # The input contract: finite values, uint8 pixels scaled to [0, 1] as everywhere.
        x = inputs.images(x)
        signature = tuple(int(d) for d in self.input_details["shape_signature"])
        ok = x.ndim == len(signature) and all(
            s == -1 or s == d for s, d in zip(signature[1:], x.shape[1:], strict=True)
        )
        if not ok or len(x) == 0:
            raise errors.InvalidArgumentError(
                "x",
                f"array of shape {x.shape}",
                f"a non-empty array of shape (N, {', '.join(map(str, signature[1:]))})",
            )
        in_index = self.input_details["index"]
        out_index = self.output_details["index"]
        outputs = []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            self._resize(len(xb))
            self._interp.set_tensor(in_index, self._quantize_input(xb))
            self._interp.invoke()
            outputs.append(self._dequantize_output(self._interp.get_tensor(out_index)))
        return np.concatenate(outputs, axis=0)

    @property
    def binary_threshold(self) -> float | None:
        """For a one-unit output, the value above which it says class 1: 0.5 when a
        ``LOGISTIC`` op computes it (a sigmoid), else 0 (a logit); ``None`` for an output
        per class (decided by argmax).

        Example:
            >>> runner.binary_threshold is None  # doctest: +SKIP
            True
        """
        if int(np.prod(self.output_details["shape"][1:])) != 1:
            return None
        # Through the (de)quantize ops an int8 file puts around its output.
        op = tflite_load.producer(
            self._interp, self.output_details["index"], through=("DEQUANTIZE", "QUANTIZE")
        )
        return 0.5 if op is not None and op["op_name"] == "LOGISTIC" else 0.0

    def _resize(self, batch: int) -> None:
        # Re-allocating is costly, so only when the batch actually changes (first batch and
        # the remainder batch).
        if batch != self._batch:
            shape = [batch, *(int(d) for d in self.input_details["shape"][1:])]
            self._interp.resize_tensor_input(self.input_details["index"], shape)
            self._interp.allocate_tensors()
            self._batch = batch

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs -> the input tensor's dtype, applying scale and zero-point if integer."""
        detail = self.input_details
        dtype = np.dtype(detail["dtype"])
        if not np.issubdtype(dtype, np.integer):
            return x.astype(dtype, copy=False)
        scale, zero_point = detail["quantization"]
        if scale == 0:
            raise errors.UnsupportedModelError(
                f"integer input tensor of dtype {dtype} has no quantization parameters"
            )
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        """Output tensor -> float32, applying scale and zero-point if integer."""
        if not np.issubdtype(y.dtype, np.integer):
            return y.astype(np.float32, copy=False)
        scale, zero_point = self.output_details["quantization"]
        if scale == 0:
            raise errors.UnsupportedModelError(
                f"integer output tensor of dtype {y.dtype} has no quantization parameters"
            )
        return ((y.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def tflite_accuracy(
    model: bytes | str | os.PathLike, x: np.ndarray, y: np.ndarray, batch_size: int = 64
) -> float:
    """Top-1 accuracy of a TFLite model on arrays, run by LiteRT through :class:`TFLiteRunner`.

    The one place the framework scores a ``.tflite`` (the runner, auto's proxy and every
    benchmark call it), so int8 I/O, input checks and one-hot labels are handled alike.

    Args:
        model: Flatbuffer bytes or the path of a ``.tflite`` file.
        x: Float inputs ``(N, ...)``, preprocessed as for the Keras model.
        y: Integer labels ``(N,)`` or one-hot rows ``(N, classes)``.
        batch_size: Samples per ``invoke()``.

    Returns:
        The share of samples whose predicted class (argmax, or a one-unit output against
        its threshold: :attr:`TFLiteRunner.binary_threshold`) is their label.

    Raises:
        InvalidArgumentError: If ``y`` does not hold one label per sample of ``x``.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.compat import keras
        >>> from pocketflow_tf import tflite_export
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> m.layers[0].set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
        >>> x = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
        >>> tflite_accuracy(tflite_export.convert(m), x, np.array([0, 1, 1, 1]))
        0.75
    """
    runner = TFLiteRunner(model)
    threshold = runner.binary_threshold
    width = int(np.prod(runner.output_details["shape"][1:]))
    classes = 2 if threshold is not None else width
    # A label the file has no output for would only lower the score without a word.
    y = inputs.labels(y, num_classes=classes, n=len(x), why=f"the .tflite has {classes} classes")
    logits = runner.predict(x, batch_size=batch_size)
    return float(np.mean(heads.predicted_classes(logits, threshold) == y))


@dataclasses.dataclass
class VerificationReport:
    """What :func:`verify` measured and decided.

    Attributes:
        mode: Conversion mode the export was verified as.
        n_samples: Number of inputs both models were run on.
        max_abs_diff: Largest ``|keras - tflite|`` over all outputs (dequantized for int8 I/O).
        top1_agreement: Share of samples with the same argmax in both models.
        acc_keras: Keras top-1 accuracy (``None`` without labels).
        acc_tflite: TFLite top-1 accuracy (``None`` without labels).
        acc_delta: ``acc_tflite - acc_keras``; negative means the export lost accuracy.
        passed: ``True`` when every threshold (and the child-process check, if run) passed.
        child_process_ok: Result of :func:`check_in_child_process`; ``None`` if not run.
        thresholds: The thresholds actually applied.
        failures: One human-readable line per failed check (empty when passed).

    Example:
        >>> r = VerificationReport("float", 200, 1e-6, 1.0, None, None, None, True, True,
        ...                        {"max_abs_diff": 1e-4})
        >>> r.to_dict()["top1_agreement"]
        1.0
    """

    mode: str
    n_samples: int
    max_abs_diff: float
    top1_agreement: float
    acc_keras: float | None
    acc_tflite: float | None
    acc_delta: float | None
    passed: bool
    child_process_ok: bool | None
    thresholds: dict[str, float]
    failures: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as a JSON-ready dict.

        Example:
            >>> VerificationReport("int8", 200, 0.1, 0.98, 0.9, 0.9, 0.0, True, None,
            ...                    {}).to_dict()["mode"]
            'int8'
        """
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """Returns a one-line summary for logs.

        Example:
            >>> print(VerificationReport("float", 200, 1e-6, 1.0, None, None, None, True,
            ...                          True, {}).summary())
            float: PASSED on 200 samples, max|diff|=1e-06, top-1 agreement=1.0000, child process ok
        """
        parts = [
            f"{self.mode}: {'PASSED' if self.passed else 'FAILED'} on {self.n_samples} samples",
            f"max|diff|={self.max_abs_diff:.3g}",
            f"top-1 agreement={self.top1_agreement:.4f}",
        ]
        if self.acc_keras is not None:
            parts.append(
                f"acc keras={self.acc_keras:.4f} tflite={self.acc_tflite:.4f} "
                f"delta={self.acc_delta:+.4f}"
            )
        if self.child_process_ok is not None:
            parts.append("child process " + ("ok" if self.child_process_ok else "FAILED"))
        return ", ".join(parts)


def _resolve_thresholds(mode: str, thresholds: dict[str, float] | None) -> dict[str, float]:
    # User thresholds override the mode's defaults key by key; a None value disables a check.
    # Unknown keys are errors, so that a typo ("min_agrement") cannot silently disable a check.
    merged = dict(DEFAULT_THRESHOLDS[mode])
    for key, value in (thresholds or {}).items():
        if key not in _THRESHOLD_KEYS:
            raise errors.InvalidArgumentError(
                "thresholds", {key: value}, f"keys among {_THRESHOLD_KEYS}"
            )
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
        ):
            raise errors.InvalidArgumentError("thresholds", {key: value}, "numbers or None")
        merged[key] = value
    return {k: v for k, v in merged.items() if v is not None}


def _check_single_io(model: keras.Model) -> None:
    """Refuses, before any work, a model that verification cannot compare (see below).

    Verification feeds one array and compares one output by its argmax (agreement, labels),
    and :class:`TFLiteRunner` runs one input tensor and one output tensor. With several of
    either, which TFLite tensor is which Keras one is not reliably known (the converter orders
    them by signature name), so such models are refused by name rather than guessed at. One
    output inside a list or dict (``outputs={"logits": t}``) is one output and is accepted.
    """
    ins, outs = model.inputs, model.outputs
    if ins is None or outs is None:
        # A subclassed model has no symbolic inputs; TFLiteRunner refuses, by count, a file
        # with several inputs or outputs.
        return
    if len(ins) == 1 and len(outs) == 1:
        return
    in_names = ", ".join(map(repr, getattr(model, "input_names", None) or []))
    out_names = ", ".join(map(repr, getattr(model, "output_names", None) or []))
    raise errors.UnsupportedModelError(
        f"TFLite export verifies models with one input and one output (e.g. images -> "
        f"logits); model {model.name!r} has {len(ins)} input(s) ({in_names}) and "
        f"{len(outs)} output(s) ({out_names}). Export a single-input, single-output model, "
        f"e.g. keras.Model(model.input, model.outputs[0]) for one head"
    )


def _keras_outputs(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    # Direct calls in inference mode rather than model.predict: no tf.data pipeline or
    # callbacks, and BatchNorm/Dropout in inference mode exactly as the converter freezes them.
    # A single output may come back wrapped in a list or dict: flatten it to its one tensor.
    outs = []
    for i in range(0, len(x), batch_size):
        (out,) = tf.nest.flatten(model(x[i : i + batch_size], training=False))
        outs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outs, axis=0)


def _xnnpack_reason(model_content: bytes, mode: str) -> str:
    # Names the int8 op whose scales XNNPACK refused (convert() widens calibrated ranges
    # where it can; a QAT model's trained ranges it cannot), else adds nothing.
    if mode != "int8":
        return ""
    try:
        problems = tflite_export.int8_scale_problems(model_content)
    except Exception:  # noqa: BLE001  (the diagnosis must never hide the load error)
        return ""
    if not problems:
        return ""
    return " (XNNPACK refuses: " + "; ".join(map(str, problems[:3])) + ")"


#: LiteRT's words for a node that failed (``... Node number 26 (BROADCAST_TO) failed to
#: prepare.``); the number indexes the file's operators.
_NODE_FAILED = re.compile(r"Node number (\d+) \((\w+)\) failed")


def _failing_layer(model: keras.Model, model_content: bytes, error: BaseException) -> str:
    """Names the Keras layer behind the LiteRT node an error names, else adds nothing.

    LiteRT reports a node number, which says nothing to the model's author; the converter
    names each tensor by the TF name scope it came from (``<model>/<layer>/...``), so the
    node's tensors lead back to the layer.
    """
    found = _NODE_FAILED.search(str(error))
    if not found:
        return ""
    node, op = int(found.group(1)), found.group(2)
    try:
        interp = tflite_load.open_interpreter(model_content)
        ops = tflite_load.file_ops(interp)
        names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    except Exception:  # noqa: BLE001  (the diagnosis must never hide the load error)
        return ""
    detail = next((o for o in ops if o["index"] == node), None)
    if detail is None:
        return ""
    layers = {
        m.name: type(m).__name__ for m in model.submodules if isinstance(m, keras.layers.Layer)
    }
    # The outputs first: a node's inputs come from the layer before it.
    for index in [*detail["outputs"], *detail["inputs"]]:
        parts = str(names.get(int(index), "")).split(";")[0].split("/")
        hits = [p for p in parts[1:] if p in layers]  # parts[0] is the model's own scope
        if hits:
            return f" (node {node}, {op}, computes layer {hits[-1]!r} ({layers[hits[-1]]}))"
    return ""


def verify(
    model: keras.Model,
    model_content: bytes,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    mode: str,
    thresholds: dict[str, float] | None = None,
    min_samples: int = 200,
    check_child: bool = True,
    raise_on_fail: bool = True,
    batch_size: int = 32,
) -> VerificationReport:
    """Runs the Keras model and its TFLite export on the same inputs and compares them.

    Args:
        model: The Keras model the export was converted from.
        model_content: The TFLite flatbuffer.
        x: Inputs, preprocessed exactly as fed to ``model.predict`` (for this framework's
            nets: the float32 ``[0, 1]`` images of :mod:`pocketflow_tf.datasets`).
        y: Optional integer labels (or one-hot rows) for the accuracy checks.
        mode: Conversion mode, one of :data:`pocketflow_tf.tflite_export.MODES`; selects
            the default thresholds.
        thresholds: Overrides of :data:`DEFAULT_THRESHOLDS` ``[mode]``, key by key; a ``None``
            value disables that check.
        min_samples: Fewer inputs than this are refused: agreement on a handful of samples
            proves nothing (at 200 samples one flip is 0.5 %).
        check_child: Also load and run the model in a fresh Python process
            (:func:`check_in_child_process`), from a temporary file.
        raise_on_fail: Raise :class:`VerificationError` when a check fails; otherwise return
            the report with ``passed=False``.
        batch_size: Samples per TFLite ``invoke()``.

    Returns:
        The :class:`VerificationReport`.

    Raises:
        InvalidArgumentError: On an unknown mode, too few samples, mismatched labels or bad
            thresholds.
        UnsupportedModelError: For a model with several inputs or outputs (named): the
            comparison is of one input array and one output.
        VerificationError: When a check fails and ``raise_on_fail`` is set; the message
            carries the measured figures and the thresholds they missed.

    Example:
        >>> report = verify(model, content, x_test[:1000], y_test[:1000],
        ...                 mode="int8")  # doctest: +SKIP
        >>> report.top1_agreement >= 0.95  # doctest: +SKIP
        True
    """
    if mode not in tflite_export.MODES:
        raise errors.InvalidArgumentError("mode", mode, f"one of {tflite_export.MODES}")
    limits = _resolve_thresholds(mode, thresholds)
    _check_single_io(model)  # first: several input arrays would read as a few samples
    x = np.asarray(x)
    if x.ndim < 1 or len(x) < min_samples:
        raise errors.InvalidArgumentError(
            "x",
            f"{len(x) if x.ndim else 0} samples",
            f"at least {min_samples} samples (min_samples)",
        )
    if y is not None:
        y = inputs.labels(y, n=len(x))

    ref = _keras_outputs(model, x).reshape(len(x), -1)
    try:
        runner = TFLiteRunner(model_content)
        out = runner.predict(x, batch_size=batch_size).reshape(len(x), -1)
    except RuntimeError as e:
        # LiteRT refuses some files only when tensors are allocated (e.g. XNNPACK and
        # sparse-stored int8 fully-connected weights): that is a failed export, not a crash.
        raise errors.VerificationError(
            f"the {mode} TFLite model could not be loaded and run by LiteRT: {e}"
            + _failing_layer(model, model_content, e)
            + _xnnpack_reason(model_content, mode)
        ) from e
    if ref.shape != out.shape:
        raise errors.VerificationError(
            f"TFLite output shape {out.shape} differs from Keras output shape {ref.shape}"
        )
    max_abs_diff = float(np.max(np.abs(ref - out)))
    threshold = heads.threshold(model)  # a one-unit binary output: class 1 above it
    pred_ref = heads.predicted_classes(ref, threshold)
    pred_out = heads.predicted_classes(out, threshold)
    agreement = float(np.mean(pred_ref == pred_out))
    acc_keras = acc_tflite = acc_delta = None
    if y is not None:
        correct_keras, correct_tflite = int(np.sum(pred_ref == y)), int(np.sum(pred_out == y))
        acc_keras, acc_tflite = correct_keras / len(x), correct_tflite / len(x)
        # From the sample counts, in one division: acc_tflite - acc_keras would carry both
        # roundings (0.635 - 0.625 is 0.010000000000000009), refusing a drop of exactly
        # max_acc_drop. k / n is the double nearest the true ratio, as the threshold literal
        # is, so a drop exactly at the threshold compares equal to it.
        acc_delta = (correct_tflite - correct_keras) / len(x)

    failures = []
    # `not (a <= b)` rather than `a > b`, so that NaN outputs fail instead of passing.
    if "max_abs_diff" in limits:
        scale = _logit_scale(ref)
        limit = limits["max_abs_diff"]
        if mode in STATED_SCALE and "max_abs_diff" not in (thresholds or {}):
            # The defaults are stated for a scale; a caller's own limit is taken as given.
            limit *= max(1.0, scale / STATED_SCALE[mode])
        if not max_abs_diff <= limit:
            failures.append(
                f"max|diff| {max_abs_diff:.3g} > {limit:.3g}"
                + (
                    f" ({limits['max_abs_diff']:.3g} x largest |output| {scale:.3g} / "
                    f"{STATED_SCALE[mode]:g})"
                    if limit != limits["max_abs_diff"]
                    else ""
                )
            )
    if "min_agreement" in limits and not agreement >= limits["min_agreement"]:
        failures.append(f"top-1 agreement {agreement:.4f} < {limits['min_agreement']:.4f}")
    if (
        "max_acc_drop" in limits
        and acc_delta is not None
        and not -acc_delta <= limits["max_acc_drop"]
    ):
        failures.append(
            f"accuracy drop {-acc_delta:.4f} (keras {acc_keras:.4f} -> tflite "
            f"{acc_tflite:.4f}) > {limits['max_acc_drop']:.4f}"
        )

    child_ok = None
    if check_child:
        # The file goes to the system temp folder here; export_tflite checks its own temp file
        # in the destination folder instead (the very file that is then renamed into place).
        fd, tmp = tempfile.mkstemp(suffix=".tflite")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(model_content)
            check_in_child_process(tmp, x.shape[1:])
            child_ok = True
        except errors.VerificationError as e:
            child_ok = False
            failures.append(str(e))
        finally:
            os.remove(tmp)

    report = VerificationReport(
        mode=mode,
        n_samples=len(x),
        max_abs_diff=max_abs_diff,
        top1_agreement=agreement,
        acc_keras=acc_keras,
        acc_tflite=acc_tflite,
        acc_delta=acc_delta,
        passed=not failures,
        child_process_ok=child_ok,
        thresholds=limits,
        failures=failures,
    )
    if failures and raise_on_fail:
        raise errors.VerificationError(_failure_message(report))
    return report


def _failure_message(report: VerificationReport) -> str:
    return (
        f"TFLite export ({report.mode}) failed verification: {'; '.join(report.failures)}. "
        f"Measured: {report.summary()}. Thresholds: {report.thresholds}."
    )


# Runs in a fresh interpreter with nothing but LiteRT and NumPy imported: no TensorFlow, no
# pocketflow_tf, no state left by the conversion. Feeds zeros and random values of the input
# dtype and requires finite outputs of the right batch size.
_CHILD_CODE = r"""
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

path, dims = sys.argv[1], [int(d) for d in sys.argv[2].split(",") if d]
interp = Interpreter(model_path=path, num_threads=1)
inp = interp.get_input_details()[0]
interp.resize_tensor_input(inp["index"], [1, *dims])
interp.allocate_tensors()
dtype = np.dtype(inp["dtype"])
rng = np.random.default_rng(0)
if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    probes = [np.full([1, *dims], inp["quantization"][1], dtype),
              rng.integers(info.min, info.max + 1, [1, *dims]).astype(dtype)]
else:
    probes = [np.zeros([1, *dims], dtype), rng.random([1, *dims]).astype(dtype)]
for probe in probes:
    interp.set_tensor(inp["index"], probe)
    interp.invoke()
    for out in interp.get_output_details():
        y = interp.get_tensor(out["index"])
        if y.shape[0] != 1 or not np.all(np.isfinite(y.astype(np.float64))):
            sys.exit(f"bad output {out['name']}: shape {y.shape}, finite={np.isfinite(y).all()}")
print("PFTF_CHILD_OK")
"""


def check_in_child_process(
    path: str | os.PathLike, input_shape: tuple[int, ...], timeout_s: float = 120
) -> None:
    """Loads and invokes a ``.tflite`` file in a fresh Python process.

    Catches exports that only work inside the converting process (e.g. ops that need the
    TensorFlow runtime or a custom op registered in-process) and files that are truncated or
    unreadable on disk. The child imports only LiteRT and NumPy, runs one sample of zeros
    (the zero-point for integer inputs) and one random sample, and requires finite outputs.

    Args:
        path: The ``.tflite`` file.
        input_shape: Shape of one input sample, without the batch axis, e.g. ``(28, 28, 1)``.
        timeout_s: Seconds before the child is killed and the check fails.

    Raises:
        InvalidArgumentError: On a bad ``input_shape`` or ``timeout_s``.
        VerificationError: If the child fails, exits abnormally or times out; the message
            holds the tail of the child's stderr.

    Example:
        >>> check_in_child_process("/tmp/model.tflite", (28, 28, 1))  # doctest: +SKIP
    """
    dims = tuple(input_shape)
    if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d > 0 for d in dims):
        raise errors.InvalidArgumentError(
            "input_shape", input_shape, "positive integer dims of one sample, without batch"
        )
    if not timeout_s > 0:
        raise errors.InvalidArgumentError("timeout_s", timeout_s, "a number of seconds > 0")
    cmd = [sys.executable, "-c", _CHILD_CODE, os.fspath(path), ",".join(str(int(d)) for d in dims)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as e:
        raise errors.VerificationError(
            f"child process check of '{path}' did not finish within {timeout_s} s; "
            f"stderr: {_tail(e.stderr)}"
        ) from None
    if proc.returncode != 0 or "PFTF_CHILD_OK" not in proc.stdout:
        raise errors.VerificationError(
            f"child process could not load and run '{path}' (exit code {proc.returncode}); "
            f"stderr: {_tail(proc.stderr)}"
        )


def _tail(text: str | bytes | None, limit: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclasses.dataclass
class ExportResult:
    """A verified TFLite file on disk.

    Attributes:
        path: Where the ``.tflite`` file was written (``<path>.sha256`` sits beside it).
        sha256: Hex sha256 of the file.
        bytes: Raw size in bytes.
        bytes_gzip: Size after gzip level 9 (see :func:`pocketflow_tf.tflite_export.tflite_size`).
        report: The :class:`VerificationReport` the file passed.

    Example:
        >>> r = ExportResult("/tmp/m.tflite", "ab" * 32, 1000, 600,
        ...                  VerificationReport("float", 200, 0.0, 1.0, None, None, None,
        ...                                     True, True, {}))
        >>> r.to_dict()["report"]["passed"]
        True
    """

    path: str
    sha256: str
    bytes: int
    bytes_gzip: int
    report: VerificationReport

    def to_dict(self) -> dict[str, Any]:
        """Returns the result (report included) as a JSON-ready dict.

        Example:
            >>> result.to_dict()["sha256"]  # doctest: +SKIP
            '3f2a...'
        """
        return dataclasses.asdict(self)


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    mode: str = "float",
    x_verify: np.ndarray,
    y_verify: np.ndarray | None = None,
    representative_data: np.ndarray | None = None,
    int8_io: bool = False,
    sparse: bool = False,
    thresholds: dict[str, float] | None = None,
    content: bytes | None = None,
) -> ExportResult:
    """Converts, verifies and atomically writes a TFLite model plus ``<path>.sha256``.

    Steps: :func:`~pocketflow_tf.tflite_export.convert`; :func:`verify` against the Keras
    model on ``x_verify`` (nothing touches the disk if it fails); write the bytes to a
    temporary file in the destination folder and :func:`check_in_child_process` it; rename
    that very file onto ``path``; write ``<path>.sha256`` (``"<hex>  <basename>\\n"``, the
    ``sha256sum`` format, so ``sha256sum -c`` works in that folder).

    If any check fails, :class:`VerificationError` is raised, the temporary file is removed
    and ``path`` is left as it was (absent for a first export).

    Args:
        model: The Keras model to export (tf-keras, or Keras 3: rebuilt in memory first).
        path: Destination ``.tflite`` path.
        mode: One of :data:`pocketflow_tf.tflite_export.MODES`.
        x_verify: Verification inputs (at least 200), preprocessed as fed to ``model.predict``.
        y_verify: Optional labels, to check the accuracy drop.
        representative_data: Calibration inputs for int8, same preprocessing as ``x_verify``
            (use training samples, not the verification ones).
        int8_io: int8 input/output tensors (``mode="int8"`` only).
        sparse: Enable the converter's sparsity encoding.
        thresholds: Overrides of :data:`DEFAULT_THRESHOLDS` ``[mode]``.
        content: A flatbuffer already built from ``model`` by other means (e.g. the compact
            product-quantized file); it is verified and written instead of converting, and
            ``mode`` then only picks the thresholds.

    Returns:
        The :class:`ExportResult`.

    Raises:
        UnsupportedModelError: Before converting, for a model with several inputs or
            outputs; or as raised by :func:`~pocketflow_tf.tflite_export.convert` (a failed
            conversion, a layer LiteRT cannot run).
        VerificationError: When a check fails; nothing is written.

    Example:
        >>> res = export_tflite(model, "out/m_int8.tflite", mode="int8", x_verify=x_test[:1000],
        ...                     y_verify=y_test[:1000],
        ...                     representative_data=x_train[:256])  # doctest: +SKIP
        >>> res.report.passed  # doctest: +SKIP
        True
    """
    # Before any work: a folder where the file goes is refused, never replaced.
    cli_errors.check_output_path("path", path)
    inputs.built(model)
    model = interop.to_framework(model)[0]  # a Keras 3 model is rebuilt in tf-keras
    model_io.require_graph(model, "the verified .tflite export")
    _check_single_io(model)  # before converting: verification could not compare the file
    # An open image size (Input((None, None, 3))) is exported at the size of x_verify.
    model = graph_rebuild.at_input_shape(model, np.shape(x_verify)[1:])
    inputs.float_input(model)  # verification feeds float32 images (see inputs.float_input)
    if content is None:
        content = tflite_export.convert(
            model, mode, representative_data=representative_data, int8_io=int8_io, sparse=sparse
        )
    x_verify = np.asarray(x_verify)
    report = verify(
        model, content, x_verify, y_verify, mode=mode, thresholds=thresholds, check_child=False
    )
    digest = hashlib.sha256(content).hexdigest()
    with atomic_io.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        # Read back what the disk holds: the child below checks this file, and the sha256
        # must describe it, not just the bytes we meant to write.
        if atomic_io.sha256_file(tmp) != digest:
            raise errors.VerificationError(f"'{tmp}' does not read back as written")
        try:
            check_in_child_process(tmp, x_verify.shape[1:])
        except errors.VerificationError as e:
            report.child_process_ok, report.passed = False, False
            report.failures.append(str(e))
            raise errors.VerificationError(_failure_message(report)) from None
        report.child_process_ok = True
    path = os.fspath(path)
    atomic_io.write_text(path + ".sha256", f"{digest}  {os.path.basename(path)}\n")
    raw, gz = tflite_export.tflite_size(content)
    return ExportResult(path=path, sha256=digest, bytes=raw, bytes_gzip=gz, report=report)


__all__ = [
    "DEFAULT_THRESHOLDS",
    "ExportResult",
    "TFLiteRunner",
    "VerificationReport",
    "check_in_child_process",
    "export_tflite",
    "tflite_accuracy",
    "verify",
]
