"""The ``mixed`` benchmark's recipe knob (issue 21: MobileNet rows beside ResNet-20's), its
int4 record on a depthwise model, and the re-timing of saved files, on tiny models."""

import doctest
import json
import types

import pytest

from bench import baselines, exports, results_io
from bench.benchmarks import mixed
from pocketflow_tf import errors
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.uniform_quant import bits as bits_lib
from tests.tiny_models import quadrant_data

L = keras.layers
R = "mobilenet_at_fmnist"


def depthwise_net(seed=0):
    """conv -> depthwise -> 1x1 conv -> logits on 8x8x1: a MobileNet block in small."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.Conv2D(8, 3, padding="same", name="c1")(inp))
    x = L.ReLU()(L.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = L.ReLU()(L.Conv2D(16, 1, name="pw")(x))
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="tiny_mobilenet")


@pytest.fixture(scope="module")
def tiny():
    x, y = quadrant_data(400, seed=0)
    model = depthwise_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    data = types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:200], y_test=y[:200])
    return model, data


@pytest.fixture
def no_data(monkeypatch):
    """Loading the data set fails: a knob must be refused before anything is loaded."""

    def refuse(name):
        raise AssertionError("data loaded before the knobs were checked")

    monkeypatch.setattr(mixed.datasets, "load_dataset", refuse)


@pytest.mark.parametrize("retime", ["0", "1"])
def test_an_unknown_recipe_is_refused_by_name_first(monkeypatch, no_data, retime):
    monkeypatch.setenv("PFTF_MP_RECIPES", "resnet_at_fmnist,mobilenet")
    monkeypatch.setenv("PFTF_MP_RETIME", retime)
    with pytest.raises(errors.InvalidArgumentError, match="PFTF_MP_RECIPES.*'mobilenet'"):
        mixed.run()


@pytest.mark.parametrize("setting", ["mixed-x", "ternary-2", "uniform"])
def test_a_bad_setting_is_refused_by_name_first(monkeypatch, no_data, setting):
    monkeypatch.setenv("PFTF_MP_RECIPES", R)
    monkeypatch.setenv("PFTF_MP_SETTINGS", f"uniform-4,{setting}")
    with pytest.raises(errors.InvalidArgumentError, match=f"PFTF_MP_SETTINGS.*'{setting}'"):
        mixed.run()


def test_the_int4_record_names_the_depthwise_fallback(tiny, tmp_path):
    # LiteRT's quantizer has no int4 depthwise kernel: the file keeps it int8 and the record
    # says which layer and why (MobileNet's depthwise layers in the real run).
    model, data = tiny
    float_path = str(tmp_path / "m.float.tflite")
    exports.export(model, float_path, data, n_verify=200)
    rep = data.x_train[:64]
    f = mixed.score_int4(model, str(tmp_path / "m.int4.tflite"), data, rep, float_path, 3, 4)
    assert "dw" in f["int4_fallbacks"] and "DEPTHWISE_CONV_2D" in f["int4_fallbacks"]["dw"]
    assert "dw" not in f["int4_layers"] and {"c1", "pw", "fc"} <= set(f["int4_layers"])
    assert f["int4_bytes"] == (tmp_path / "m.int4.tflite").stat().st_size
    assert 0.5 < f["int4_acc"] <= 1 and f["int4_latency_ratio"] > 0


def test_retime_measures_only_the_named_models_rows(tiny, tmp_path, monkeypatch):
    model, data = tiny
    monkeypatch.setattr(baselines, "ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(results_io, "RESULTS", str(tmp_path))
    monkeypatch.setattr(baselines, "train_or_load", lambda name: (model, {}))
    monkeypatch.setattr(mixed.datasets, "load_dataset", lambda name: data)
    exports.export(model, str(tmp_path / f"{R}.float.tflite"), data, n_verify=200)
    exports.export(
        model, str(tmp_path / f"{R}.uniform-4.int8.tflite"), data, mode="int8",
        n_verify=200, rep=data.x_train[:64],
    )  # fmt: skip
    bits = {i.name: 4 for i in bits_lib.layer_infos(model)}
    mine = results_io.make_record(
        model=model.name, method="qat-uniform", setting="avg_bits=4,epochs=2",
        latency_ratio=9.0, bits=bits, host={"cpu_model": "elsewhere"},
    )  # fmt: skip
    other = results_io.make_record(
        model="resnet20", method="qat-uniform", setting="avg_bits=4,epochs=2"
    )
    results_io.write_results("mixed", [other, mine], folder=str(tmp_path))
    monkeypatch.setenv("PFTF_MP_RETIME", "1")
    monkeypatch.setenv("PFTF_MP_RECIPES", R)
    (rec,) = mixed.run()
    assert rec["model"] == "tiny_mobilenet" and rec["latency_ratio"] != 9.0
    assert 0 <= rec["acc_pruned"] <= 1 and "host" not in rec  # measured here, now
    # Written back, the other model's row is kept beside it.
    results_io.write_results("mixed", [rec], folder=str(tmp_path))
    with open(tmp_path / "mixed.json") as f:
        models = [r["model"] for r in json.load(f)["records"]]
    assert sorted(models) == ["resnet20", "tiny_mobilenet"]


def test_docstring_examples():
    # tests/test_doctests.py walks pocketflow_tf only; this benchmark's examples run here.
    result = doctest.testmod(mixed, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
