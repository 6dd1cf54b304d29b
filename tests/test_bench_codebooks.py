"""The ``codebooks`` benchmark's clustered records (issue 21): the compact clustered file
written through the learner's own export mode, its record fields, the compact-only redo and
the recipe knob, on a tiny residual net."""

import doctest
import json
import os
import types

import pytest

from bench import baselines, make_table, results_io
from bench.benchmarks import codebooks
from pocketflow_tf import errors, tflite_export
from pocketflow_tf.compat import keras
from tests.tiny_models import quadrant_data, small_resnet

R = "resnet_at_fmnist"  # a real recipe name (its fine-tune config); the model is tiny


def narrow_net(seed=0):
    """conv 4 -> conv 4 (144 weights) -> logits: its one clustered kernel is too small for
    indices + centroids + their graph ops to take fewer bytes than float32."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(6)(x))
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x), name="narrow")


@pytest.fixture(params=[small_resnet])
def tiny_setup(monkeypatch, tmp_path, request):
    x, y = quadrant_data(512, seed=0, size=12)
    model = request.param()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    data = types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:200], y_test=y[:200])
    monkeypatch.setattr(baselines, "ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(results_io, "RESULTS", str(tmp_path))
    monkeypatch.setattr(baselines, "scored", lambda name, d: (model, 0.9))
    monkeypatch.setattr(codebooks.datasets, "load_dataset", lambda name: data)
    monkeypatch.setenv("PFTF_CB_RECIPES", R)
    monkeypatch.setenv("PFTF_CB_METHODS", "cluster-4")
    monkeypatch.setenv("PFTF_CB_EPOCHS", "1")
    return model, tmp_path


def test_cluster_records_write_and_measure_the_compact_file(tiny_setup, monkeypatch):
    model, folder = tiny_setup
    (rec,) = codebooks.run()
    compact = folder / f"{R}.cluster-4.cluster-compact.tflite"
    decoded = folder / f"{R}.cluster-4.float.tflite"
    # The file the deploy benchmark measures, with its checksum, as the learner writes it.
    assert compact.exists() and (folder / f"{compact.name}.sha256").exists()
    raw, gz = tflite_export.tflite_size(compact.read_bytes())
    assert (rec["compact_bytes"], rec["compact_bytes_gzip"]) == (raw, gz)
    assert rec["compact_vs_float"] == round(raw / decoded.stat().st_size, 4)
    assert rec["compact_vs_float"] < 1  # three 16x16x3x3 kernels at 2 bits: it pays here
    assert 0 <= rec["compact_acc"] <= 1 and rec["compact_latency_ratio"] > 0
    assert rec["model"] == model.name and rec["method"] == "cluster-4"
    assert rec["command"] == "PFTF_CB_METHODS=cluster-4 PFTF_CB_EPOCHS=1 " + codebooks.COMMAND
    table = "\n".join(make_table._table([rec]))  # noqa: SLF001
    assert "compact ÷ float B" in table and f"{rec['compact_vs_float']:.3f}" in table

    # The compact step alone, again, from the model the run saved.
    results_io.write_results("codebooks", [rec], folder=str(folder))
    os.remove(compact)
    monkeypatch.setenv("PFTF_CB_COMPACT_ONLY", "1")
    (again,) = codebooks.run()
    assert compact.exists() and again["compact_bytes"] == rec["compact_bytes"]
    assert again["acc"] == rec["acc"] and "host" not in again

    # A model that no longer scores the record's accuracy is refused, not measured.
    with open(folder / "codebooks.json") as f:
        doc = json.load(f)
    doc["records"][0]["acc"] = 0.0001
    (folder / "codebooks.json").write_text(json.dumps(doc))
    with pytest.raises(errors.InvalidArgumentError, match="cluster-4.keras"):
        codebooks.run()


@pytest.mark.parametrize("tiny_setup", [narrow_net], indirect=True)
def test_a_compact_file_that_cannot_pay_off_is_recorded_as_such(tiny_setup):
    model, folder = tiny_setup
    (rec,) = codebooks.run()
    # The trained record is kept with its other figures; no compact file, and why.
    assert rec["acc"] is not None and rec["bytes"] > 0 and "compact_bytes" not in rec
    assert rec["compact"].startswith("not written:") and "clustered Conv2D/Dense" in rec["compact"]
    assert not (folder / f"{R}.cluster-4.cluster-compact.tflite").exists()
    table = "\n".join(make_table._table([rec]))  # noqa: SLF001
    assert "| compact file |" in table and "| not written: " in table


def test_an_unknown_recipe_is_refused_by_name_first(monkeypatch):
    def refuse(name):
        raise AssertionError("data loaded before the knobs were checked")

    monkeypatch.setattr(codebooks.datasets, "load_dataset", refuse)
    monkeypatch.setenv("PFTF_CB_RECIPES", "resnet_at_fmnist,mobilenet")
    with pytest.raises(errors.InvalidArgumentError, match="PFTF_CB_RECIPES.*'mobilenet'"):
        codebooks.run()


def test_docstring_examples():
    # tests/test_doctests.py walks pocketflow_tf only; this benchmark's examples run here.
    result = doctest.testmod(codebooks, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
