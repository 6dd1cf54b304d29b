"""bench.run: 'all', --quick, unknown names, progress and summary; no real benchmark runs."""

import doctest
import importlib
import json
import os
import sys
import types

import pytest

from bench import run
from pocketflow_tf import errors


def test_all_expands_to_every_benchmark_baselines_first():
    names = run.resolve(["all"])
    assert names == list(run.BENCHMARKS) and names[0] == "baselines"
    assert run.resolve(["ptq", "all"])[:2] == ["ptq", "baselines"]  # each once, in order
    assert len(run.resolve(["all", "ptq"])) == len(run.BENCHMARKS)


def test_unknown_name_names_the_value_and_the_accepted_names():
    with pytest.raises(errors.InvalidArgumentError) as info:
        run.resolve(["baselines", "ptqq"])
    text = str(info.value)
    assert "'ptqq'" in text and "all, baselines, ptq" in text and "zoo" in text


def test_command_line_rejects_an_unknown_name_before_running_anything(monkeypatch, capsys):
    monkeypatch.setattr(run, "run_many", lambda *a: pytest.fail("nothing may run"))
    with pytest.raises(SystemExit) as info:
        run.main(["all", "nonesuch", "--quick"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'nonesuch'" in err and "Accepted: all, baselines" in err


def test_all_quick_runs_every_benchmark_in_quick_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(run, "check_cached_baselines", lambda: calls.append("checked"))
    monkeypatch.setattr(run, "run_many", lambda names, quick: calls.append((names, quick)) or [])
    run.main(["all", "--quick", "--no-table"])
    assert calls == ["checked", (list(run.BENCHMARKS), True)]
    calls.clear()
    run.main(["ptq", "--no-table"])  # full mode: the cache check is the benchmarks' own
    assert calls == [(["ptq"], False)]


def test_every_benchmark_has_a_quick_setting_and_the_list_shows_it(capsys):
    assert set(run.QUICK) == set(run.BENCHMARKS)
    run.main(["--list"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(run.BENCHMARKS)
    listed = dict(zip(run.BENCHMARKS, out, strict=True))
    assert "channel      quick: PFTF_CP_RECIPES=resnet_at_fmnist " in listed["channel"]
    assert "compare      quick: PFTF_CMP_SEEDS=0 " in listed["compare"]
    assert "PFTF_AUTO_TARGETS='5x faster'" in out[-1]


def test_quick_knobs_are_known_to_their_benchmarks():
    """Each knob --quick sets is one its benchmark module reads (a typo would do nothing)."""
    for name, knobs in run.QUICK.items():
        module = importlib.util.find_spec(run.BENCHMARKS[name]).origin
        with open(module) as f:
            source = f.read()
        for knob in knobs:
            assert f'"{knob}"' in source, (name, knob)


@pytest.fixture
def fake_benchmarks(monkeypatch, tmp_path):
    """Two benchmarks: 'fake' returns a record naming its knob, 'broken' raises."""
    fake = types.ModuleType("fake_bench")
    fake.run = lambda: [{"setting": f"k={os.environ.get('PFTF_FAKE_K', 'full')}", "command": "c"}]
    broken = types.ModuleType("broken_bench")
    broken.run = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "fake_bench", fake)
    monkeypatch.setitem(sys.modules, "broken_bench", broken)
    monkeypatch.setattr(run, "BENCHMARKS", {"fake": "fake_bench", "broken": "broken_bench"})
    monkeypatch.setattr(run, "QUICK", {"fake": {"PFTF_FAKE_K": "1"}, "broken": {}})
    written = {}

    def write_results(name, recs):
        written[name] = recs
        return str(tmp_path / f"{name}.json")

    monkeypatch.setattr("bench.results_io.write_results", write_results)
    monkeypatch.delenv("PFTF_FAKE_K", raising=False)
    return written


def test_quick_sets_the_knobs_for_the_run_and_marks_the_records(fake_benchmarks, capsys):
    summary = run.run_many(["fake", "broken"], quick=True)
    (rec,) = fake_benchmarks["fake"]
    assert rec == {
        "setting": "k=1,quick",
        "command": "python -m bench.run fake --quick",
        "quick": True,
    }
    assert "PFTF_FAKE_K" not in os.environ  # restored
    assert [(r["name"], r["records"], r["error"]) for r in summary] == [
        ("fake", 1, None),
        ("broken", 0, "ZeroDivisionError: division by zero"),
    ]
    out = capsys.readouterr().out
    assert "[bench] (1/2) fake (quick: PFTF_FAKE_K=1) ..." in out
    assert "[bench] (2/2) broken: 0 record(s)" in out and "FAILED" in out
    assert "[bench] summary" in out and "  total" in out


def test_full_run_leaves_records_unmarked_and_a_failure_sets_the_exit_status(
    fake_benchmarks, monkeypatch
):
    monkeypatch.setenv("PFTF_FAKE_K", "7")
    run.run_many(["fake"], quick=False)
    assert fake_benchmarks["fake"] == [{"setting": "k=7", "command": "c"}]
    with pytest.raises(SystemExit, match="failed: broken"):
        run.main(["fake", "broken", "--no-table"])


def test_quick_overrides_an_environment_knob_and_says_so(fake_benchmarks, monkeypatch, capsys):
    monkeypatch.setenv("PFTF_FAKE_K", "7")
    run.run_many(["fake"], quick=True)
    assert fake_benchmarks["fake"][0]["setting"] == "k=1,quick"
    assert os.environ["PFTF_FAKE_K"] == "7"
    assert "--quick sets PFTF_FAKE_K=1 (over PFTF_FAKE_K=7" in capsys.readouterr().out


def test_quick_rows_and_full_rows_are_separate_rows_of_a_results_file(tmp_path):
    from bench import results_io

    full = results_io.make_record(model="m", method="qat-int8", setting="epochs=1", acc=0.9)
    results_io.write_results("q", [full], folder=str(tmp_path))
    quick = run.mark_quick([dict(full, acc=0.8)], "q")
    path = results_io.write_results("q", quick, folder=str(tmp_path))
    with open(path) as f:
        rows = {(r["setting"], r["acc"], r.get("quick")) for r in json.load(f)["records"]}
    assert rows == {("epochs=1", 0.9, None), ("epochs=1,quick", 0.8, True)}


def test_quick_stops_when_a_baseline_is_not_cached(monkeypatch, tmp_path):
    from bench import baselines

    monkeypatch.setattr(baselines, "full_recipe_path", lambda name: str(tmp_path / name))
    with pytest.raises(SystemExit, match="resnet_at_fmnist"):
        run.check_cached_baselines()


def test_the_cached_baselines_are_where_quick_looks():
    run.check_cached_baselines()  # the committed bench/artifacts


@pytest.mark.parametrize(
    "name", ["bench.run", "bench.host", "bench.results_io", "bench.make_table", "bench.baselines"]
)
def test_docstring_examples_of_the_harness(name):
    # tests/test_doctests.py walks pocketflow_tf only; the harness's examples run here.
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
