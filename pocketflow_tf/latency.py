"""TFLite latency: per-invoke timing statistics and interleaved A/B latency ratios.

Only ``Interpreter.invoke()`` is timed (``time.perf_counter_ns``), on a fixed random input of
the model's input dtype set once beforehand: input copies, quantization and Python-side
pre/post-processing are not part of the model's latency.

Absolute milliseconds on a shared machine drift with load and CPU frequency. To compare two
models, :func:`interleaved_ratio` alternates short blocks of each, so that both see the same
conditions, and reports the median of the per-round ratios, which is far more stable than a
ratio of two separately measured medians.

This module imports only NumPy and LiteRT (no TensorFlow), so benchmarks start fast.

Example:
    >>> from pocketflow_tf import latency
    >>> stats = latency.measure_latency("model.tflite", runs=100)  # doctest: +SKIP
    >>> stats.median_ms  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import options, tflite_load


@dataclasses.dataclass
class LatencyStats:
    """Per-``invoke()`` latency of one model, in milliseconds.

    Attributes:
        median_ms: Median invoke time.
        p10_ms: 10th percentile.
        p90_ms: 90th percentile.
        mean_ms: Mean (sensitive to outliers; prefer the median).
        runs: Number of timed invokes.
        batch_size: Samples per invoke.
        num_threads: Interpreter threads.

    Example:
        >>> LatencyStats(1.0, 0.9, 1.2, 1.05, 200, 1, 1).to_dict()["median_ms"]
        1.0
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    batch_size: int
    num_threads: int

    def to_dict(self) -> dict[str, Any]:
        """Returns the stats as a JSON-ready dict.

        Example:
            >>> sorted(LatencyStats(1.0, 0.9, 1.2, 1.05, 200, 1, 1).to_dict())[:2]
            ['batch_size', 'mean_ms']
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RatioResult:
    """Interleaved latency comparison of a candidate model against a reference.

    Attributes:
        candidate_ms: Median over rounds of the candidate's per-round median invoke time.
        reference_ms: Same for the reference.
        latency_ratio: Median over rounds of ``candidate / reference``; < 1 means faster.
        speedup: ``1 / latency_ratio`` (reference / candidate); > 1 means faster.
        rounds: Number of A/B rounds.
        ratio_p10: 10th percentile of the per-round ratios (spread of the estimate).
        ratio_p90: 90th percentile of the per-round ratios.
        runs_per_round: Invokes per model per round.
        batch_size: Samples per invoke.
        num_threads: Interpreter threads.

    Example:
        >>> RatioResult(0.5, 1.0, 0.5, 2.0, 50).to_dict()["speedup"]
        2.0
    """

    candidate_ms: float
    reference_ms: float
    latency_ratio: float
    speedup: float
    rounds: int
    ratio_p10: float | None = None
    ratio_p90: float | None = None
    runs_per_round: int | None = None
    batch_size: int | None = None
    num_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns the result as a JSON-ready dict.

        Example:
            >>> RatioResult(0.5, 1.0, 0.5, 2.0, 50).to_dict()["rounds"]
            50
        """
        return dataclasses.asdict(self)


def _check_int(name: str, value: Any, minimum: int) -> int:
    return options.check_integer(name, value, low=minimum)


def _prepared_interpreter(
    model: bytes | str | os.PathLike, batch_size: int, num_threads: int, seed: int = 0
) -> Interpreter:
    """An interpreter resized to ``batch_size`` with a fixed random input already set."""
    interp = tflite_load.open_interpreter(model, num_threads=num_threads)
    rng = np.random.default_rng(seed)
    for detail in interp.get_input_details():
        shape = [batch_size, *(int(d) for d in detail["shape"][1:])]
        interp.resize_tensor_input(detail["index"], shape)
    interp.allocate_tensors()
    for detail in interp.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = detail["shape"]
        if dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            # Quantized activations: any values of the dtype; the kernels' speed does not
            # depend on them.
            info = np.iinfo(dtype)
            value = rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            # Other integer inputs are usually indices (e.g. embeddings): zeros are always valid.
            value = np.zeros(shape, dtype)
        elif dtype == np.bool_:
            value = rng.random(shape) < 0.5
        else:
            value = rng.random(shape).astype(dtype)
        interp.set_tensor(detail["index"], value)
    return interp


def _time_invokes(interp: Interpreter, n: int) -> np.ndarray:
    """Times ``n`` invokes; returns nanoseconds per invoke."""
    times = np.empty(n, dtype=np.int64)
    invoke, clock = interp.invoke, time.perf_counter_ns  # no attribute lookups in the loop
    for i in range(n):
        t0 = clock()
        invoke()
        times[i] = clock() - t0
    return times


def measure_latency(
    model: bytes | str | os.PathLike,
    *,
    batch_size: int = 1,
    num_threads: int = 1,
    warmup: int = 20,
    runs: int = 200,
) -> LatencyStats:
    """Measures the per-``invoke()`` latency of a TFLite model.

    Args:
        model: Flatbuffer bytes or the path of a ``.tflite`` file.
        batch_size: Batch the input tensor is resized to.
        num_threads: Interpreter threads.
        warmup: Untimed invokes first (XNNPACK packs weights lazily, caches warm up).
        runs: Timed invokes.

    Returns:
        The :class:`LatencyStats`.

    Raises:
        InvalidArgumentError: If an integer argument is out of range.

    Example:
        >>> s = measure_latency("m.tflite", num_threads=4)  # doctest: +SKIP
        >>> print(f"{s.median_ms:.2f} ms")  # doctest: +SKIP
        0.41 ms
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    num_threads = _check_int("num_threads", num_threads, 1)
    warmup = _check_int("warmup", warmup, 0)
    runs = _check_int("runs", runs, 1)
    interp = _prepared_interpreter(model, batch_size, num_threads)
    _time_invokes(interp, warmup)
    ms = _time_invokes(interp, runs) / 1e6
    return LatencyStats(
        median_ms=float(np.median(ms)),
        p10_ms=float(np.percentile(ms, 10)),
        p90_ms=float(np.percentile(ms, 90)),
        mean_ms=float(np.mean(ms)),
        runs=runs,
        batch_size=batch_size,
        num_threads=num_threads,
    )


def interleaved_ratio(
    candidate: bytes | str | os.PathLike,
    reference: bytes | str | os.PathLike,
    *,
    batch_size: int = 1,
    num_threads: int = 1,
    warmup: int = 20,
    rounds: int = 50,
    runs_per_round: int = 10,
) -> RatioResult:
    """Compares the latency of two TFLite models by interleaving them.

    Each round times ``runs_per_round`` invokes of the candidate, then as many of the
    reference (A B A B ...), and keeps each block's median. The ratio is the median over
    rounds of ``candidate_median / reference_median``: a load spike or a frequency change
    hits both blocks of a round alike and cancels out of that round's ratio.

    Args:
        candidate: The model under test (bytes or path).
        reference: The model to compare against, e.g. the float baseline.
        batch_size: Batch of both input tensors.
        num_threads: Interpreter threads of both models.
        warmup: Untimed invokes of each model before the first round.
        rounds: A/B rounds.
        runs_per_round: Timed invokes per model per round.

    Returns:
        The :class:`RatioResult`.

    Raises:
        InvalidArgumentError: If an integer argument is out of range.

    Example:
        >>> r = interleaved_ratio("m_int8.tflite", "m_float.tflite")  # doctest: +SKIP
        >>> print(f"int8 is {r.speedup:.2f}x faster")  # doctest: +SKIP
        int8 is 2.31x faster
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    num_threads = _check_int("num_threads", num_threads, 1)
    warmup = _check_int("warmup", warmup, 0)
    rounds = _check_int("rounds", rounds, 1)
    runs_per_round = _check_int("runs_per_round", runs_per_round, 1)
    interp_c = _prepared_interpreter(candidate, batch_size, num_threads)
    interp_r = _prepared_interpreter(reference, batch_size, num_threads)
    _time_invokes(interp_c, warmup)
    _time_invokes(interp_r, warmup)
    cand = np.empty(rounds)
    ref = np.empty(rounds)
    for i in range(rounds):
        cand[i] = np.median(_time_invokes(interp_c, runs_per_round)) / 1e6
        ref[i] = np.median(_time_invokes(interp_r, runs_per_round)) / 1e6
    # A zero median is possible only with a clock coarser than an invoke; avoid dividing by it.
    ratios = cand / np.maximum(ref, 1e-9)
    ratio = float(np.median(ratios))
    return RatioResult(
        candidate_ms=float(np.median(cand)),
        reference_ms=float(np.median(ref)),
        latency_ratio=ratio,
        speedup=1.0 / ratio if ratio > 0 else float("inf"),
        rounds=rounds,
        ratio_p10=float(np.percentile(ratios, 10)),
        ratio_p90=float(np.percentile(ratios, 90)),
        runs_per_round=runs_per_round,
        batch_size=batch_size,
        num_threads=num_threads,
    )


__all__ = ["LatencyStats", "RatioResult", "interleaved_ratio", "measure_latency"]
