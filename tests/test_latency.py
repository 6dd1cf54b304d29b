"""TFLite latency measurement and interleaved ratios (structure and sanity, no timing goals)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pocketflow_tf import errors, latency, tflite_export

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE: dict = {}


@pytest.fixture
def contents(tiny_model, tiny_data):
    """Float and int8 (int8 I/O) flatbuffers of the tiny model, converted once."""
    if not _CACHE:
        x, _ = tiny_data
        _CACHE["float"] = tflite_export.convert(tiny_model, "float")
        _CACHE["int8"] = tflite_export.convert(
            tiny_model, "int8", representative_data=x[:64], int8_io=True
        )
    return _CACHE


def test_measure_latency_stats(contents, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(contents["float"])
    for model in (contents["float"], str(path), contents["int8"]):
        s = latency.measure_latency(model, batch_size=2, warmup=2, runs=30)
        assert s.runs == 30 and s.batch_size == 2 and s.num_threads == 1
        assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms
        assert s.mean_ms > 0
        assert set(s.to_dict()) == {
            "median_ms",
            "p10_ms",
            "p90_ms",
            "mean_ms",
            "runs",
            "batch_size",
            "num_threads",
        }


def test_model_against_itself_has_ratio_near_one(contents):
    r = latency.interleaved_ratio(
        contents["float"], contents["float"], warmup=5, rounds=21, runs_per_round=20
    )
    assert r.rounds == 21 and r.candidate_ms > 0 and r.reference_ms > 0
    # Loose sanity bounds only: the machine may be busy, speed is the benchmarks' business.
    assert 0.5 <= r.latency_ratio <= 2.0
    assert r.speedup == pytest.approx(1.0 / r.latency_ratio)
    assert r.ratio_p10 <= r.latency_ratio <= r.ratio_p90
    assert r.to_dict()["runs_per_round"] == 20


def test_int8_against_float_runs(contents):
    r = latency.interleaved_ratio(contents["int8"], contents["float"], rounds=3, runs_per_round=3)
    assert np.isfinite(r.latency_ratio) and r.latency_ratio > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"runs": 0}, "runs"),
        ({"runs": -5}, "runs"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_threads": 0}, "num_threads"),
        ({"warmup": -1}, "warmup"),
        ({"runs": 2.5}, "runs"),
    ],
)
def test_measure_latency_rejects_bad_args(contents, kwargs, name):
    with pytest.raises(errors.InvalidArgumentError, match=f"`{name}`: {list(kwargs.values())[0]}"):
        latency.measure_latency(contents["float"], **kwargs)


def test_interleaved_ratio_rejects_bad_args(contents):
    for kwargs in ({"rounds": 0}, {"runs_per_round": 0}):
        with pytest.raises(errors.InvalidArgumentError, match=next(iter(kwargs))):
            latency.interleaved_ratio(contents["float"], contents["float"], **kwargs)
    with pytest.raises(errors.InvalidArgumentError, match="`model`: 'int'"):
        latency.measure_latency(3)


def test_benchmark_tool_writes_json(contents, tmp_path):
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    a.write_bytes(contents["int8"])
    b.write_bytes(contents["float"])
    out = tmp_path / "res" / "bench.json"
    cmd = [
        sys.executable,
        os.path.join(_ROOT, "tools", "benchmark_tflite.py"),
        f"--model={a}",
        f"--reference={b}",
        "--runs=10",
        "--warmup=2",
        "--rounds=3",
        "--runs_per_round=3",
        f"--json={out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "speedup" in proc.stdout
    result = json.loads(out.read_text())
    assert result["latency"]["runs"] == 10 and result["ratio"]["rounds"] == 3
    assert os.listdir(out.parent) == ["bench.json"]


def test_latency_module_does_not_import_tensorflow():
    # Benchmarks start in ~1 s instead of ~10 s because latency.py needs only LiteRT.
    code = "import sys, pocketflow_tf.latency; print('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
