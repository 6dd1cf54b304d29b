"""The ``deploy`` benchmark (issue 21): every file of a model measured alike, missing files
named with their command, the ARM64 columns, on a tiny model."""

import os
import types

import pytest

from bench import baselines, make_table
from bench.benchmarks import deploy
from pocketflow_tf import arm64, int4_export
from pocketflow_tf.compat import keras
from tests.tiny_models import quadrant_data, two_conv_net


@pytest.fixture
def tiny_setup(monkeypatch, tmp_path):
    """Artifacts in tmp_path for recipe 'tiny': a trained two-conv net as the baseline, an
    int4 file as its 'uniform 4-bit' variant; no ARM64 lane."""
    x, y = quadrant_data(600, seed=0)
    model = two_conv_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    data = types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:220], y_test=y[:220])
    monkeypatch.setattr(baselines, "ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(baselines, "scored", lambda recipe, d: (model, 0.9))
    monkeypatch.setattr(deploy.datasets, "load_dataset", lambda name: data)
    monkeypatch.setenv("PFTF_DEPLOY_RECIPES", "tiny")
    monkeypatch.setenv("PFTF_DEPLOY_ROUNDS", "3")
    monkeypatch.setenv("PFTF_ARM64_DIR", str(tmp_path / "no-lane"))
    content = int4_export.convert(model, 4, x[:64]).content
    with open(tmp_path / "tiny.uniform-4.int4.tflite", "wb") as f:
        f.write(content)
    return model, tmp_path


def test_deploy_measures_each_file_and_names_the_missing_ones(tiny_setup):
    model, folder = tiny_setup
    recs = {r["method"]: r for r in deploy.run()}
    assert list(recs) == [v.name for v in deploy.VARIANTS]
    # float and PTQ int8 made here from the baseline; the int4 file measured as found.
    assert os.path.exists(folder / "tiny.float.tflite") and os.path.exists(
        folder / "tiny.int8.tflite"
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
    # The README table shows the new columns.
    table = "\n".join(make_table._table(list(recs.values())))  # noqa: SLF001
    assert "× float bytes" in table and "ARM64" in table


@pytest.mark.parametrize("value", ["0", "abc", "1.5"])
def test_deploy_refuses_a_bad_sample_count(tiny_setup, monkeypatch, value):
    monkeypatch.setenv("PFTF_DEPLOY_ARM64_SAMPLES", value)
    with pytest.raises(deploy.errors.InvalidArgumentError, match="PFTF_DEPLOY_ARM64_SAMPLES"):
        deploy.run()
