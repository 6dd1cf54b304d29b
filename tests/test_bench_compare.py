"""The ``compare`` benchmark (issue 22 item 4): its knobs, its summary records, their README
table, and its whole code path on a tiny model."""

import doctest
import types

import pytest

from bench import make_table, results_io, run
from bench.benchmarks import compare
from pocketflow_tf import errors, training
from tests.tiny_models import quadrant_data, two_conv_net

KNOBS = (
    "PFTF_CMP_PARTS",
    "PFTF_CMP_SEEDS",
    "PFTF_CMP_EPOCHS",
    "PFTF_CMP_KEEP",
    "PFTF_CMP_METHODS",
    "PFTF_CMP_TRIALS",
    "PFTF_CMP_AMC_EPISODES",
    "PFTF_CMP_BITS",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_knobs_are_the_issue_s_comparisons(clean_env):
    k = compare.knobs()
    assert k["seeds"] == [0, 1, 2] and k["keep"] == 0.3 and k["epochs"] == 2
    assert k["methods"] == list(compare.ALLOCATIONS)
    assert k["bits"] == ["mixed-3", "uniform-3", "mixed-2.5", "uniform-2"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("PFTF_CMP_SEEDS", "0,x"),
        ("PFTF_CMP_EPOCHS", "0"),
        ("PFTF_CMP_METHODS", "alloc-random-walk"),
        ("PFTF_CMP_PARTS", "latency"),
        ("PFTF_CMP_TRIALS", "-3"),
        ("PFTF_CMP_KEEP", "0"),
        ("PFTF_CMP_KEEP", "a third"),
    ],
)
def test_a_bad_knob_stops_before_anything_loads(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(errors.InvalidArgumentError, match=name):
        compare.knobs()


def test_an_unknown_bits_setting_stops_before_anything_loads(clean_env):
    clean_env.setenv("PFTF_CMP_BITS", "mixed-3,ternary-2")
    with pytest.raises(errors.InvalidArgumentError, match="PFTF_CMP_BITS.*ternary-2"):
        compare.knobs()


def test_searched_allocations_get_their_budget_and_share_the_rest(clean_env):
    k = {**compare.knobs(), "trials": 7, "amc_episodes": 9}
    amc = compare._channel_options("alloc-amc", k)
    tpe = compare._channel_options("alloc-tpe", k)
    uniform = compare._channel_options("alloc-uniform", k)
    assert amc["cp_amc_episodes"] == 9 and "cp_search_trials" not in amc
    assert tpe["cp_search_trials"] == 7 and "cp_amc_episodes" not in tpe
    assert uniform["cp_prune_option"] == "uniform" and "cp_ratio_search" not in uniform
    for opts in (amc, tpe, uniform):
        assert opts["cp_preserve_ratio"] == 0.3 and opts["cp_criterion"] == "lasso"


def test_before_and_after_are_rendered_side_by_side_with_mean_and_std(tmp_path):
    # SYNTHETIC records, made up for this test only: no benchmark measured these numbers.
    recs = compare.summary_records(
        "alloc-greedy",
        "flops_keep=0.3,epochs=2",
        [0, 1, 2],
        {"before": [0.50, 0.52, 0.54], "after": [0.90, 0.91, 0.92]},
        {"flops_ratio": [0.30, 0.29, 0.31], "acc_before_bn": [0.80, 0.82, 0.84]},
        model="synthetic-net",
        acc_baseline=0.94,
    )
    recs += compare.summary_records(
        "bits-mixed",
        "avg_bits=2.5,epochs=2",
        [0],
        {"before": [0.80], "after": [0.93]},
        {"average_bits": [2.49]},
        model="synthetic-net",
    )
    assert [r["phase"] for r in recs] == ["before", "after", "before", "after"]
    assert recs[1]["setting"] == "flops_keep=0.3,epochs=2,phase=after"
    assert recs[1]["acc_per_seed"] == [0.9, 0.91, 0.92] and recs[1]["seeds"] == [0, 1, 2]
    plain = results_io.make_record(model="synthetic-net", method="float", setting="s", acc=0.94)
    results_io.write_results("compare", [plain, *recs], folder=str(tmp_path))
    table = make_table.render(str(tmp_path))
    assert (
        "| synthetic-net | alloc-greedy | flops_keep=0.3,epochs=2 | 0, 1, 2 "
        "| 52.00 ± 2.00 % | 82.00 ± 2.00 % | 91.00 ± 1.00 % | FLOPs × 0.300 |"
    ) in table
    # One seed: no spread to show; no BatchNorm to re-estimate in a bits row.
    assert "| avg_bits=2.5,epochs=2 | 0 | 80.00 % | – | 93.00 % | 2.49 avg bits |" in table
    assert "| before, BN re-estimated |" in table
    # Phase records only in the summary; the plain record still in the per-record table.
    assert "phase=" not in table and "| synthetic-net | float | s |" in table


def test_no_results_no_summary_table(tmp_path):
    results_io.write_results(
        "compare", [results_io.make_record(model="m", method="x", acc=0.5)], folder=str(tmp_path)
    )
    assert "before fine-tune (mean ± std)" not in make_table.render(str(tmp_path))


def test_compare_has_a_quick_setting_of_one_seed():
    assert run.resolve(["compare"]) == ["compare"]
    assert run.QUICK["compare"]["PFTF_CMP_SEEDS"] == "0"


def test_whole_benchmark_on_a_tiny_model(clean_env):
    """Both parts, two seeds, on a two-conv net and 128 images: every allocation but GP
    (the same optimizer-search path as TPE, and the slowest), both kinds of bits."""
    x, y = quadrant_data(128)
    data = types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:64], y_test=y[:64])
    dense = two_conv_net()  # untrained: the path is what is tested, not the accuracy
    clean_env.setattr(compare, "_baseline", lambda: (data, dense, 0.5))
    clean_env.setattr(
        compare,
        "_finetune_config",
        lambda epochs, seed: training.TrainConfig(epochs=epochs, batch_size=64, seed=seed),
    )
    clean_env.setattr(
        compare,
        "CHANNEL_OPTIONS",
        {**compare.CHANNEL_OPTIONS, "cp_channel_round": 2, "cp_nb_samples": 64, "cp_nb_eval": 64},
    )
    for name, value in {
        "PFTF_CMP_SEEDS": "0,1",
        "PFTF_CMP_METHODS": "alloc-uniform,alloc-greedy,alloc-amc,alloc-tpe",
        "PFTF_CMP_EPOCHS": "1",
        "PFTF_CMP_KEEP": "0.6",
        "PFTF_CMP_TRIALS": "3",
        "PFTF_CMP_AMC_EPISODES": "3",
        "PFTF_CMP_BITS": "mixed-2.5,uniform-2",
    }.items():
        clean_env.setenv(name, value)
    recs = compare.run()
    methods = ["alloc-uniform", "alloc-greedy", "alloc-amc", "alloc-tpe"]
    methods += ["bits-mixed", "bits-uniform"]
    assert [r["method"] for r in recs] == [m for m in methods for _ in compare.PHASES]
    for r in recs:
        assert r["seeds"] == [0, 1] and len(r["acc_per_seed"]) == 2
        assert 0 <= r["acc"] <= 1 and r["acc_std"] is not None
        if r["method"].startswith("alloc-"):
            assert r["flops_ratio"] <= 0.6 + 1e-6 and len(r["flops_ratio_per_seed"]) == 2
            assert len(r["acc_before_bn_per_seed"]) == 2
        else:
            assert r["average_bits"] <= 2.5 + 1e-6


def test_docstring_examples(clean_env):
    # tests/test_doctests.py walks pocketflow_tf only; bench's examples run in its tests.
    result = doctest.testmod(compare, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_a_partial_run_records_the_command_that_reproduces_it(clean_env, monkeypatch):
    monkeypatch.setenv("PFTF_CMP_EPOCHS", "1")
    k = compare.knobs()
    amc = compare.command_for(k, "allocation", "alloc-amc")
    assert amc == (
        "PFTF_CMP_PARTS=allocation PFTF_CMP_METHODS=alloc-amc PFTF_CMP_EPOCHS=1 "
        "python -m bench.run compare"
    )
    # the uniform allocation searches nothing: the search budgets are not part of it
    k["trials"] = 5
    assert "TRIALS" not in compare.command_for(k, "allocation", "alloc-uniform")
    recs = compare.summary_records("alloc-amc", "s", [0], {"after": [0.9]}, {}, command=amc)
    assert recs[0]["command"] == amc
