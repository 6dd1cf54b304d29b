"""The ARM64 lane: exports run by the aarch64 LiteRT under qemu agree with x86 LiteRT.

The cases marked ``arm64`` run the real lane (qemu-aarch64-static, Debian's arm64 Python,
the aarch64 ai-edge-litert wheel) that ``tools/arm64_lane.sh`` prepares; ``run_tests.sh``
runs them through that script after the Horovod lane. There they must run: the lane exports
``PFTF_ARM64_LANE=1``, and a missing or broken lane is then a failure, not a skip. The main
run deselects them (``-m "not slow and not arm64"``) and so does a plain ``pytest`` outside
the lane (skip). The error paths need no qemu and run everywhere.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny_models

from pocketflow_tf import arm64, errors, records, tflite_export, tflite_verify
from pocketflow_tf.app import runner
from pocketflow_tf.compat import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_LANE = os.environ.get("PFTF_ARM64_LANE") == "1"
in_lane_only = pytest.mark.skipif(
    not IN_LANE, reason="ARM64 lane only: tools/arm64_lane.sh -m pytest tests/test_arm64.py"
)


@pytest.fixture(scope="module")
def trained():
    """A seeded small residual net (12x12x1 in), trained for a few epochs: real decisions."""
    x, y = tiny_models.quadrant_data(n=600, size=12)
    model = tiny_models.small_resnet(seed=0)
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:400], y[:400], epochs=4, batch_size=32, verbose=0)
    return model, x[:400], x[400:], y[400:]


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    """The float export and the int8 export (int8 I/O), both verified on x86 first."""
    model, x_train, x_test, y_test = trained
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for mode in ("float", "int8"):
        paths[mode] = tflite_verify.export_tflite(
            model,
            out / f"m.{mode}.tflite",
            mode=mode,
            x_verify=x_test,
            y_verify=y_test,
            representative_data=x_train[:200] if mode == "int8" else None,
            int8_io=mode == "int8",
        ).path
    return paths


# ---- the real lane ------------------------------------------------------------------------


@pytest.mark.arm64
@in_lane_only
@pytest.mark.parametrize("cpu", ["cortex-a76", "cortex-a53"])
def test_float_export_on_arm64_matches_x86_and_keras(trained, exports, cpu):
    model, _, x_test, _ = trained
    report = arm64.verify_arm64(exports["float"], x_test, keras_model=model, cpu=cpu)
    assert report.n_samples == len(x_test) == 200
    assert report.top1_agreement == 1.0
    # Same float32 graph, other kernels (NEON vs AVX): summation order only.
    assert report.max_abs_diff <= 1e-5
    assert report.output_step is None and report.max_steps is None
    assert report.keras["arm64"]["top1_agreement"] == 1.0
    assert report.keras["arm64"]["max_abs_diff"] <= 1e-4
    # The record says which runtime, qemu and CPU produced the figures.
    lane = arm64.Arm64Lane.find()
    assert lane.info["machine"] == "aarch64"
    assert report.runtime["arm64"] == f"ai-edge-litert {lane.info['runtime_version']}"
    assert report.runtime["arm64"] == report.runtime["x86"]  # the same LiteRT release
    assert report.lane["cpu"] == cpu and "qemu-aarch64" in report.lane["qemu_version"]
    with open(exports["float"] + ".arm64.json") as f:
        assert json.load(f) == json.loads(json.dumps(report.to_dict()))


@pytest.mark.arm64
@in_lane_only
@pytest.mark.parametrize("cpu", ["cortex-a76", "cortex-a53"])
def test_int8_export_on_arm64_is_within_a_couple_of_steps_of_x86(trained, exports, cpu):
    model, _, x_test, _ = trained
    report = arm64.verify_arm64(exports["int8"], x_test, keras_model=model, cpu=cpu)
    assert report.output_dtype == "int8"
    scale = tflite_verify.TFLiteRunner(exports["int8"]).output_details["quantization"][0]
    assert report.output_step == pytest.approx(scale)
    # Integer kernels with other rounding paths (dot-product or not): a step or two at most.
    assert report.max_steps is not None and report.max_steps <= 2
    assert report.max_abs_diff <= 2 * scale + 1e-9
    assert report.top1_agreement >= 0.99
    assert report.keras["arm64"]["top1_agreement"] >= 0.95


@pytest.mark.arm64
@in_lane_only
def test_the_comparison_sees_a_different_model(trained, exports):
    # The ARM outputs of the float file against x86 outputs of the int8 one: the figures
    # must show the difference (the check can fail).
    _, _, x_test, _ = trained
    raw, timing = arm64.run_on_arm64(exports["float"], x_test[:50], batch_size=7)
    assert raw.dtype == np.float32 and raw.shape == (50, 4)
    assert timing["invoke_seconds"] > 0 and timing["child_seconds"] >= timing["invoke_seconds"]
    x86_int8 = tflite_verify.TFLiteRunner(exports["int8"]).predict(x_test[:50])
    x86_float = tflite_verify.TFLiteRunner(exports["float"]).predict(x_test[:50])
    assert np.max(np.abs(raw - x86_int8)) > 1e-3
    assert np.max(np.abs(raw - x86_float)) <= 1e-5


@pytest.mark.arm64
@in_lane_only
def test_export_all_records_the_arm64_figures(trained, tmp_path):
    model, x_train, x_test, y_test = trained

    class Data:
        pass

    data = Data()
    data.x_train, data.x_test, data.y_test = x_train, x_test, y_test
    opts = runner.RunOptions.__new__(runner.RunOptions)  # the fields export_all reads only
    opts.export_modes, opts.num_verify, opts.strict_export = ("float", "int8"), 200, True
    opts.seed, opts.verify_arm64 = 0, True
    record = records.RunRecord("arm64", {}, command=[])
    written = runner.export_all(opts, model, data, str(tmp_path), "model", record)
    for mode, path in written.items():
        m = record.metrics
        assert m[f"tflite_{mode}_arm64_agreement"] >= 0.99
        assert os.path.isfile(path + ".arm64.json")
        assert f"tflite_{mode}_arm64" in record.artifacts
    assert record.metrics["tflite_float_arm64_max_steps"] is None
    assert record.metrics["tflite_float_arm64_max_abs_diff"] <= 1e-5
    assert 0 <= record.metrics["tflite_int8_arm64_max_steps"] <= 2


# ---- error paths (no qemu needed) ----------------------------------------------------------


@pytest.fixture
def tiny_tflite(tmp_path):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tflite_export.convert(m))
    return str(path)


def test_a_missing_lane_says_how_to_prepare_it(tiny_tflite, tmp_path, monkeypatch):
    monkeypatch.setenv("PFTF_ARM64_DIR", str(tmp_path / "no-lane"))
    with pytest.raises(arm64.Arm64LaneError, match=r"not prepared.*tools/arm64_lane\.sh"):
        arm64.verify_arm64(tiny_tflite, np.zeros((3, 4), np.float32))
    assert not os.path.exists(tiny_tflite + ".arm64.json")
    # A lane.json without the sysroot it describes is refused too.
    lane = tmp_path / "half"
    lane.mkdir()
    (lane / "lane.json").write_text(json.dumps({"cpus": ["cortex-a76"]}))
    with pytest.raises(arm64.Arm64LaneError, match=r"incomplete.*python3\.11.*arm64_lane\.sh"):
        arm64.Arm64Lane.find(lane)
    (lane / "lane.json").write_text("{not json")
    with pytest.raises(arm64.Arm64LaneError, match="unreadable"):
        arm64.Arm64Lane.find(lane)


def test_run_options_refuse_verify_arm64_without_a_lane(tmp_path, monkeypatch):
    monkeypatch.setenv("PFTF_ARM64_DIR", str(tmp_path))
    with pytest.raises(arm64.Arm64LaneError, match="arm64_lane.sh"):
        runner.RunOptions(
            "convnet_at_fmnist", save_path=str(tmp_path / "m.keras"), verify_arm64=True
        )


def test_bad_model_paths_and_inputs_are_clear_errors(tiny_tflite, tmp_path):
    # The model is checked before the lane: these errors come even without a lane.
    no_lane = arm64.Arm64Lane(str(tmp_path), {"cpus": ["cortex-a76"]})
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(errors.ModelLoadError, match="does not exist"):
        arm64.verify_arm64(tmp_path / "missing.tflite", x, lane=no_lane)
    with pytest.raises(errors.ModelLoadError, match="folder"):
        arm64.verify_arm64(tmp_path, x, lane=no_lane)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(errors.ModelLoadError, match="not a valid .tflite"):
        arm64.verify_arm64(corrupt, x, lane=no_lane)
    with pytest.raises(errors.InvalidArgumentError, match="`x`"):
        arm64.verify_arm64(tiny_tflite, np.zeros((3, 5), np.float32), lane=no_lane)
    with pytest.raises(errors.InvalidArgumentError, match="`cpu`.*cortex-a76"):
        arm64.verify_arm64(tiny_tflite, x, lane=no_lane, cpu="cortex-a9")
    with pytest.raises(errors.InvalidArgumentError, match="`batch_size`"):
        arm64.verify_arm64(tiny_tflite, x, lane=no_lane, batch_size=0)


def test_the_command_prints_one_error_line_for_a_missing_lane(tiny_tflite, tmp_path):
    env = dict(os.environ, PFTF_ARM64_DIR=str(tmp_path / "no-lane"), TF_CPP_MIN_LOG_LEVEL="3")
    script = os.path.join(ROOT, "tools", "verify_arm64.py")
    proc = subprocess.run(
        [sys.executable, script, tiny_tflite], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: The ARM64 lane is not prepared" in proc.stderr
    assert "tools/arm64_lane.sh" in proc.stderr
