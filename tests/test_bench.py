"""The benchmark harness plumbing: result files and the generated README table."""

import json

import pytest

from bench import make_table, results_io, run
from bench.benchmarks import channel
from pocketflow_tf import errors


def test_results_file_and_table(tmp_path):
    ptq = dict(model="resnet20", dataset="fmnist", acc_baseline=0.9400)
    recs = [
        results_io.make_record(
            **ptq,
            method="float",
            setting="tflite=float",
            acc=0.9400,
            bytes=1100000,
            command="python -m bench.run ptq",
        ),
        results_io.make_record(
            **ptq,
            method="ptq-int8",
            setting="tflite=int8",
            acc=0.9391,
            bytes=300000,
            latency_ratio=0.41,
            command="python -m bench.run ptq",
        ),
    ]
    path = results_io.write_results("ptq", recs, folder=str(tmp_path))
    with open(path) as f:
        doc = json.load(f)
    assert doc["benchmark"] == "ptq" and doc["versions"]["tensorflow"]
    assert set(results_io.RECORD_FIELDS) <= set(doc["records"][0])

    table = make_table.render(str(tmp_path))
    lines = table.splitlines()
    assert lines[0] == "**ptq** (`python -m bench.run ptq`)"
    assert lines[2].startswith("*measured on: ")  # the host of both rows (bench.host)
    header = lines[4]
    assert "test acc" in header and "latency ×" in header and "FLOPs ×" not in header
    assert "| resnet20 | ptq-int8 | tflite=int8 | 93.91 % | -0.09 |" in table
    assert "0.410" in table


def test_partial_rerun_updates_its_rows_and_keeps_the_others(tmp_path):
    def rec(setting, acc):
        return results_io.make_record(model="m", method="x", setting=setting, acc=acc)

    results_io.write_results("b", [rec("keep=0.5", 0.90), rec("keep=0.4", 0.80)], str(tmp_path))
    path = results_io.write_results("b", [rec("keep=0.4", 0.85)], str(tmp_path))
    with open(path) as f:
        got = {(r["setting"], r["acc"]) for r in json.load(f)["records"]}
    assert got == {("keep=0.5", 0.90), ("keep=0.4", 0.85)}


def test_readme_update_keeps_the_rest(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{make_table.START}\nold\n{make_table.END}\noutro\n")
    monkeypatch.setattr(make_table, "render", lambda: "NEW TABLE")
    make_table.update_readme(str(readme))
    assert readme.read_text() == f"intro\n{make_table.START}\nNEW TABLE\n{make_table.END}\noutro\n"


def test_known_benchmarks():
    assert set(run.BENCHMARKS) >= {"baselines", "ptq"}


def test_search_columns():
    assert make_table.format_value("trials_to_random_best", [12, None, 3]) == "12 / – / 3"
    assert make_table.format_value("best_score", -0.30412) == "-0.3041"
    assert "search" in run.BENCHMARKS


def test_first_reaching():
    from bench.benchmarks import search

    assert search.first_reaching([-2.0, -1.5, -1.5, -1.0], -1.5) == 2
    assert search.first_reaching([-2.0], -1.0) is None


def test_seed_rows_are_summarised_per_setting(tmp_path):
    def rec(method, setting, acc):
        return results_io.make_record(model="m", method=method, setting=setting, acc=acc)

    recs = [
        rec("a", "keep=0.4", 0.940),
        rec("a", "seed=2,keep=0.4", 0.944),
        rec("a", "keep=0.4,seed=1", 0.942),
        rec("b", "keep=0.4", 0.930),  # one seed only: no summary row
        rec("a", "keep=0.5,seed=1", 0.950),  # another setting, one seed: none either
    ]
    results_io.write_results("c", recs, folder=str(tmp_path))
    table = make_table.render(str(tmp_path))
    assert "*c, over seeds:*" in table
    assert "| m | a | keep=0.4 | 0, 1, 2 | 94.20 % | 0.20 | 94.00 – 94.40 % |" in table
    summary = table.split("over seeds")[1]
    assert "| m | b |" not in summary and "keep=0.5" not in summary
    assert make_table.seed_summary(recs[3:]) == []


def test_channel_seed_knob_is_checked(monkeypatch):
    monkeypatch.delenv("PFTF_CP_SEED", raising=False)
    assert channel._env_seed() == 0
    monkeypatch.setenv("PFTF_CP_SEED", "3")
    assert channel._env_seed() == 3
    for bad in ("-1", "x", "1.5"):
        monkeypatch.setenv("PFTF_CP_SEED", bad)
        with pytest.raises(errors.InvalidArgumentError, match=f"PFTF_CP_SEED.*'{bad}'"):
            channel._env_seed()


def test_export_step_verifies_on_the_head_of_the_test_split_and_scores_the_file(tmp_path):
    import types

    import numpy as np

    from bench import exports
    from pocketflow_tf import tflite_verify
    from pocketflow_tf.compat import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((300, 4), dtype=np.float32)
    y = np.argmax(model(x).numpy(), axis=1)
    y[:30] = (y[:30] + 1) % 3  # the file scores 0.9 on the whole split
    data = types.SimpleNamespace(x_test=x, y_test=y)
    ref = exports.export(model, str(tmp_path / "ref.tflite"), data, n_verify=200)
    assert ref.export.report.n_samples == 200 and ref.acc is None
    d = exports.export(
        model, str(tmp_path / "m.tflite"), data, evaluate=True, reference=ref.export.path, rounds=2
    )
    assert d.export.report.n_samples == 300
    assert d.acc == pytest.approx(0.9) == tflite_verify.tflite_accuracy(d.export.path, x, y)
    assert d.latency_ratio > 0


def test_run_recorded_reads_the_record_of_an_accepted_status_and_keeps_the_log(tmp_path):
    from bench import scripts

    rec = tmp_path / "model.train.record.json"
    cmd = [
        "sh",
        "-c",
        f"echo hello; echo 'Running Calibration: 5%'; echo '{{\"a\": 1}}' > {rec}; exit 3",
    ]
    with pytest.raises(RuntimeError, match=r"x failed \(3\)"):
        scripts.run_recorded(cmd, "x", str(tmp_path))
    log = tmp_path / "reports" / "x.log"
    record, wall = scripts.run_recorded(cmd, "x", str(tmp_path), accept=(0, 3), log_path=str(log))
    assert record == {"a": 1} and wall >= 0
    text = log.read_text()
    assert "hello" in text and "Calibration" not in text


def test_baselines_examples():
    # tests/test_doctests.py walks pocketflow_tf only; the recipe-knob examples run here.
    import doctest

    from bench import baselines

    result = doctest.testmod(baselines, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 3
