import datetime as dt
import hashlib
import io
import json
import os

import numpy as np
import pytest

from pocketflow_tf import atomic_io, errors, records
from pocketflow_tf.accounting import LayerCost, ModelProfile


def _strict_json(text):
    def reject(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture
def artefact(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3" + bytes(range(200)))
    return path


def test_record_round_trips_through_json(tmp_path, artefact):
    rec = records.RunRecord("baseline", {"net": "resnet_20", "lr": np.float32(0.5)}, command=["x"])
    rec.set_metric("top1", np.float32(0.875))
    rec.add_metrics(steps=np.int64(1200), loss=0.25, curve=np.array([1.0, 0.5]))
    entry = rec.add_artifact("tflite", artefact)
    rec.finish()
    path = rec.save(tmp_path / "run.json")
    d = _strict_json(open(path).read())

    expected = hashlib.sha256(artefact.read_bytes()).hexdigest()
    assert entry["sha256"] == expected
    assert d["artifacts"]["tflite"] == {
        "path": str(artefact),
        "type": "file",
        "bytes": 204,
        "sha256": expected,
    }
    assert d["metrics"] == {"top1": 0.875, "steps": 1200, "loss": 0.25, "curve": [1.0, 0.5]}
    assert d["config"] == {"net": "resnet_20", "lr": 0.5}
    assert (d["kind"], d["status"], d["command"]) == ("baseline", "ok", ["x"])
    started = dt.datetime.fromisoformat(d["started"])
    finished = dt.datetime.fromisoformat(d["finished"])
    assert started.utcoffset() == dt.timedelta(0) and finished >= started
    assert 0 <= d["wall_s"] < 60
    assert d["versions"]["tensorflow"] and d["versions"]["tf_keras"]
    assert d["versions"]["cpu_count"] == os.cpu_count()


def test_folder_artefact_and_bad_path(tmp_path):
    folder = tmp_path / "saved_model"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"a" * 10)
    (folder / "variables" / "v.data").write_bytes(b"b" * 5)
    rec = records.RunRecord("export", {}, command=[])
    entry = rec.add_artifact("sm", folder)
    assert (entry["type"], entry["bytes"]) == ("folder", 15)
    assert entry["sha256"] == atomic_io.sha256_file(folder)
    missing = str(tmp_path / "nope.tflite")
    with pytest.raises(errors.InvalidArgumentError, match="nope.tflite"):
        rec.add_artifact("x", missing)


def test_non_finite_metrics_keep_the_file_strict_json(tmp_path):
    rec = records.RunRecord("demo", {}, command=[])
    rec.add_metrics(loss=float("nan"), ratio=np.float64("inf"))
    d = _strict_json(open(rec.save(tmp_path / "r.json")).read())
    assert d["metrics"] == {"loss": "nan", "ratio": "inf"}
    assert d["status"] == "running" and d["finished"] is None


def test_save_is_atomic_when_serialisation_fails(tmp_path, monkeypatch):
    rec = records.RunRecord("demo", {"a": 1}, command=[])
    path = tmp_path / "run.json"
    rec.save(path)
    before = path.read_bytes()
    rec.set_metric("top1", 0.9)

    def boom(*args, **kwargs):
        raise RuntimeError("serialiser died")

    monkeypatch.setattr(atomic_io.json, "dumps", boom)
    with pytest.raises(RuntimeError, match="serialiser died"):
        rec.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.json"]


def test_save_is_atomic_when_the_write_fails_midway(tmp_path, monkeypatch):
    rec = records.RunRecord("demo", {"a": 1}, command=[])
    path = tmp_path / "run.json"
    rec.save(path)
    before = path.read_bytes()
    rec.add_section("big", {"x": list(range(1000))})
    seen = []

    def fail_after_write(fd):
        # By now the new JSON bytes are in the temporary file next to `path`.
        seen.extend(n for n in os.listdir(tmp_path) if n != "run.json")
        raise OSError("disk full")

    monkeypatch.setattr(atomic_io.os, "fsync", fail_after_write)
    with pytest.raises(OSError, match="disk full"):
        rec.save(path)
    assert seen, "the failure was injected after the temporary file existed"
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.json"]


def test_markdown_report(tmp_path, artefact):
    rec = records.RunRecord("channel_pruning", {"net": "resnet_20", "opt": {"lr": 0.1}}, command=[])
    rec.add_metrics(top1_acc=0.9125, flops_ratio=0.5)
    entry = rec.add_artifact("tflite", artefact)
    profile = ModelProfile(
        [
            LayerCost("conv|1", "Conv2D", (6, 6, 4), 2592, 5328, 76, 76),
            LayerCost("lam", "Lambda", (4,), 0, 0, 0, 0, known=False),
        ],
        2592,
        5328,
        76,
        76,
        unknown_layers=["lam"],
    )
    rec.add_section("profile", profile)
    rec.add_section("notes", {"why": "test"})
    rec.finish()
    text = open(rec.save_markdown(tmp_path / "run.md")).read()
    assert text.startswith("# Run record: channel_pruning")
    for needle in ("top1_acc", "0.9125", "flops_ratio", entry["sha256"], "opt.lr", "resnet_20"):
        assert needle in text
    assert "| conv\\|1 | Conv2D | (6, 6, 4) | 2,592 | 5,328 | 76 |" in text
    assert "Lambda ?" in text and "**5,328**" in text
    assert '"why": "test"' in text
    assert rec.to_dict()["sections"]["profile"]["total_macs"] == 2592


def test_context_manager_records_failures():
    with pytest.raises(ZeroDivisionError):
        with records.RunRecord("demo", {}, command=[]) as rec:
            1 / 0  # noqa: B018
    assert rec.status == "failed" and "ZeroDivisionError" in rec.error
    with pytest.raises(errors.InvalidArgumentError, match="`kind`: ''"):
        records.RunRecord("", {})
    with pytest.raises(errors.InvalidArgumentError, match="`config`: 3"):
        records.RunRecord("demo", 3)


def test_library_versions_report_missing_as_none(monkeypatch):
    monkeypatch.setitem(records._DISTRIBUTIONS, "absent", ("pocketflow-tf-no-such-dist",))
    v = records.library_versions()
    assert v["absent"] is None
    for key in ("python", "tensorflow", "tf_keras", "tensorflow_model_optimization", "numpy"):
        assert isinstance(v[key], str)
    assert {"keras", "ai_edge_litert", "keras_tuner", "optuna", "pocketflow_tf", "machine"} <= set(
        v
    )


def test_progress_is_quiet_on_fast_loops_and_prints_a_final_line():
    buf = io.StringIO()
    assert sum(records.progress(range(10_000), desc="calib", stream=buf)) == 49_995_000
    lines = buf.getvalue().splitlines()
    assert 1 <= len(lines) <= 3  # a 10k-step loop well under a few seconds
    assert lines[-1].startswith("calib: 10000/10000 (100%) elapsed ")
    assert "ETA 0:00:00" in lines[-1] and "\r" not in buf.getvalue()


def test_progress_throttles_by_time_and_reports_early_exit():
    t = [0.0]

    def clock():
        t[0] += 0.25  # every call advances a fake clock by 0.25 s
        return t[0]

    buf = io.StringIO()
    bar = records.ProgressBar(100, "eval", stream=buf, every_s=1.0, clock=clock)
    for _ in range(100):
        bar.update()
    bar.close()
    bar.close()  # idempotent
    lines = buf.getvalue().splitlines()
    assert len(lines) == 100 // 4 + 1  # one per simulated second, plus the final line
    assert lines[-1].startswith("eval: 100/100 (100%)")

    buf = io.StringIO()
    for i in records.progress(iter(range(50)), total=50, desc="x", stream=buf, every_s=60):
        if i == 9:
            break
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("x: 9/50 (18%)")


def test_progress_redraws_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    list(records.progress(range(5), desc="t", stream=buf, every_s=0))
    out = buf.getvalue()
    assert out.count("\n") == 1 and out.count("\r") == 6 and out.endswith("\n")
    with pytest.raises(errors.InvalidArgumentError, match="`total`: -1"):
        records.ProgressBar(-1)


def test_a_file_is_never_written_over_a_folder_of_the_users(tmp_path):
    # export_tflite(model, "runs/") deleted the whole "runs" tree before (data loss).
    runs = tmp_path / "runs"
    (runs / "experiment1").mkdir(parents=True)
    (runs / "experiment1" / "IMPORTANT.txt").write_text("results")
    with pytest.raises(errors.InvalidArgumentError, match=r"holds 1 entries.*\['experiment1'\]"):
        atomic_io.write_bytes(runs, b"model")
    assert (runs / "experiment1" / "IMPORTANT.txt").read_text() == "results"
    assert sorted(os.listdir(tmp_path)) == ["runs"]  # the temporary file is gone too
    # A folder writer still replaces its own earlier output (a SavedModel), not a user folder.
    saved = tmp_path / "sm"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"old")
    with atomic_io.atomic_path(saved) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "saved_model.pb"), "wb").write(b"new")
    assert (saved / "saved_model.pb").read_bytes() == b"new"
    with pytest.raises(errors.InvalidArgumentError), atomic_io.atomic_path(runs) as tmp:
        os.makedirs(tmp)
    assert (runs / "experiment1" / "IMPORTANT.txt").exists()


def test_export_tflite_refuses_a_folder_before_any_work(tmp_path):
    from pocketflow_tf import tflite_verify
    from pocketflow_tf.compat import keras

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("x")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.zeros((200, 4), np.float32)
    with pytest.raises(errors.InvalidArgumentError, match="`path`.*existing folder"):
        tflite_verify.export_tflite(model, tmp_path / "runs", mode="float", x_verify=x)
    assert (tmp_path / "runs" / "keep.txt").read_text() == "x"
