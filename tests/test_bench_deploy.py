"""The ``deploy`` benchmark (issue 21): every file of a model measured alike, missing files
named with their command, the ARM64 columns, on a tiny model."""

import doctest
import json
import os
import types

import pytest

from bench import baselines, make_table, results_io
from bench import run as bench_run
from bench.benchmarks import deploy
from pocketflow_tf import arm64, int4_export
from pocketflow_tf.compat import keras
from tests.tiny_models import quadrant_data, two_conv_net

R = "resnet_at_fmnist"


@pytest.fixture
def tiny_setup(monkeypatch, tmp_path):
    """Artifacts in tmp_path for recipe 'resnet_at_fmnist' (named so; a real recipe name is
    required): a trained two-conv net as the baseline, an int4 file as its 'uniform 4-bit'
    variant; no ARM64 lane."""
    x, y = quadrant_data(600, seed=0)
    model = two_conv_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    data = types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:220], y_test=y[:220])
    monkeypatch.setattr(baselines, "ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(baselines, "scored", lambda recipe, d: (model, 0.9))
    monkeypatch.setattr(deploy.datasets, "load_dataset", lambda name: data)
    monkeypatch.setenv("PFTF_DEPLOY_RECIPES", R)
    monkeypatch.setenv("PFTF_DEPLOY_ROUNDS", "3")
    monkeypatch.setenv("PFTF_ARM64_DIR", str(tmp_path / "no-lane"))
    content = int4_export.convert(model, 4, x[:64]).content
    with open(tmp_path / f"{R}.uniform-4.int4.tflite", "wb") as f:
        f.write(content)
    return model, tmp_path


def test_deploy_measures_each_file_and_names_the_missing_ones(tiny_setup):
    model, folder = tiny_setup
    recs = {r["method"]: r for r in deploy.run()}
    assert list(recs) == [v.name for v in deploy.VARIANTS]
    # float and PTQ int8 made here from the baseline; the int4 file measured as found.
    assert os.path.exists(folder / f"{R}.float.tflite") and os.path.exists(
        folder / f"{R}.int8.tflite"
    )
    for name in ("float", "int8 (PTQ)", "uniform 4-bit, int4 file"):
        r = recs[name]
        assert r["bytes"] == os.path.getsize(folder / r["file"]) and 0 <= r["acc"] <= 1
        assert r["latency_ratio"] > 0 and "skipped" not in r
        # No lane here: the ARM64 column says so and how to prepare it.
        assert "not measured" in r["arm64"] and arm64.LANE_SCRIPT in r["arm64"]
    assert recs["float"]["bytes_ratio"] == 1.0
    assert recs["uniform 4-bit, int4 file"]["bytes_ratio"] < recs["int8 (PTQ)"]["bytes_ratio"]
    missing = recs["PQ k32, compact file"]
    assert "bytes" not in missing and "PFTF_CB_METHODS=pq-k32" in missing["skipped"]
    # The clustered file is the codebooks benchmark's too, for this very recipe.
    clustered = recs["clustered 16, compact file"]["skipped"]
    assert f"{R}.cluster-16.cluster-compact.tflite" in clustered
    assert f"`PFTF_CB_RECIPES={R} PFTF_CB_METHODS=cluster-16 python -m bench.run codebooks`" in (
        clustered
    )
    assert (
        f"PFTF_MP_RECIPES={R} PFTF_MP_SETTINGS=mixed-4"
        in (recs["mixed 4-bit average, int4 file"]["skipped"])
    )
    # The README table shows the new columns.
    table = "\n".join(make_table._table(list(recs.values())))  # noqa: SLF001
    assert "× float bytes" in table and "ARM64" in table


@pytest.mark.parametrize("value", ["0", "abc", "1.5"])
def test_deploy_refuses_a_bad_sample_count(tiny_setup, monkeypatch, value):
    monkeypatch.setenv("PFTF_DEPLOY_ARM64_SAMPLES", value)
    with pytest.raises(deploy.errors.InvalidArgumentError, match="PFTF_DEPLOY_ARM64_SAMPLES"):
        deploy.run()


def test_deploy_refuses_an_unknown_recipe_by_name(tiny_setup, monkeypatch):
    monkeypatch.setenv("PFTF_DEPLOY_RECIPES", "resnet_at_fmnist,mobilenet")
    with pytest.raises(
        deploy.errors.InvalidArgumentError, match="PFTF_DEPLOY_RECIPES.*'mobilenet'"
    ):
        deploy.run()


def test_deploy_defaults_to_both_models_quick_to_resnet():
    assert baselines.parse_recipes("PFTF_DEPLOY_RECIPES", deploy.DEFAULT_RECIPES) == [
        "resnet_at_fmnist",
        "mobilenet_at_fmnist",
    ]
    assert bench_run.QUICK["deploy"]["PFTF_DEPLOY_RECIPES"] == "resnet_at_fmnist"


def test_rows_of_two_models_coexist_in_results_and_table(tmp_path):
    # A rerun for one model (PFTF_*_RECIPES=mobilenet_at_fmnist) adds its rows and keeps the
    # other model's: records are keyed by (model, method, setting).
    def row(model, acc):
        return results_io.make_record(
            model=model, dataset="fmnist", method="float", setting="file", acc=acc,
            command=deploy.COMMAND,
        )  # fmt: skip

    results_io.write_results("deploy", [row("resnet20", 0.9)], folder=str(tmp_path))
    results_io.write_results("deploy", [row("mobilenet_v1", 0.8)], folder=str(tmp_path))
    results_io.write_results("deploy", [row("mobilenet_v1", 0.85)], folder=str(tmp_path))
    with open(tmp_path / "deploy.json") as f:
        recs = json.load(f)["records"]
    assert [(r["model"], r["acc"]) for r in recs] == [("resnet20", 0.9), ("mobilenet_v1", 0.85)]
    table = make_table.render(str(tmp_path))
    assert "| resnet20 | float | file |" in table and "| mobilenet_v1 | float | file |" in table


def test_docstring_examples():
    # tests/test_doctests.py walks pocketflow_tf only; this benchmark's examples run here.
    result = doctest.testmod(deploy, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
