"""The ``mixed`` benchmark's recipe knob (issue 21: MobileNet rows beside ResNet-20's), its
int4 record on a depthwise model, and the re-timing of saved files, on tiny models."""

import doctest
import json
import types

import pytest

from bench import baselines, exports, results_io
from bench.benchmarks import mixed
from pocketflow_tf import errors, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.uniform_quant import bits as bits_lib
from tests.tiny_models import quadrant_data

L = keras.layers
R = "mobilenet_at_fmnist"


def depthwise_net(seed=0):
    """conv-BN-ReLU -> depthwise-BN-ReLU6 -> 1x1 conv-BN-ReLU -> logits on 8x8x1: a MobileNet
    v1 block in small (nets/mobilenet.py's layer pattern)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.ReLU(6.0)(L.BatchNormalization(name="dw_bn")(x))
    x = L.Conv2D(16, 1, use_bias=False, name="pw")(x)
    x = L.ReLU()(L.BatchNormalization(name="pw_bn")(x))
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="tiny_mobilenet")


@pytest.fixture(scope="module")
def tiny():
    x, y = quadrant_data(640, seed=0)  # >= 512: exports.calibration draws 512
    model = depthwise_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
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
    no_file = {**mine, "method": "qat-mixed", "setting": "avg_bits=3,epochs=2"}
    results_io.write_results("mixed", [other, mine, no_file], folder=str(tmp_path))
    monkeypatch.setenv("PFTF_MP_RETIME", "1")
    monkeypatch.setenv("PFTF_MP_RECIPES", R)
    rec, kept = mixed.run()
    assert rec["model"] == "tiny_mobilenet" and rec["latency_ratio"] != 9.0
    assert 0 <= rec["acc_pruned"] <= 1 and "host" not in rec  # measured here, now
    # No int8 file for the 3-bit row here: its latency and host stay, acc_pruned is new.
    assert kept["setting"] == "avg_bits=3,epochs=2" and kept["latency_ratio"] == 9.0
    assert kept["host"] == {"cpu_model": "elsewhere"} and 0 <= kept["acc_pruned"] <= 1
    # Written back, the other model's row is kept beside it.
    results_io.write_results("mixed", [rec, kept], folder=str(tmp_path))
    with open(tmp_path / "mixed.json") as f:
        models = [r["model"] for r in json.load(f)["records"]]
    assert sorted(models) == ["resnet20", "tiny_mobilenet", "tiny_mobilenet"]


def test_docstring_examples():
    # tests/test_doctests.py walks pocketflow_tf only; this benchmark's examples run here.
    result = doctest.testmod(mixed, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_a_depthwise_model_runs_end_to_end_with_its_own_files(tiny, tmp_path, monkeypatch):
    # The path MobileNet-v1 takes (PFTF_MP_RECIPES=mobilenet_at_fmnist): QAT with a depthwise
    # layer, int8 and int4 files named by the recipe, the depthwise fallback in the record.
    model, data = tiny
    monkeypatch.setattr(baselines, "ARTIFACTS", str(tmp_path))
    monkeypatch.setattr(baselines, "scored", lambda name, d: (model, 0.9))
    monkeypatch.setattr(mixed.datasets, "load_dataset", lambda name: data)
    # The recipe's own fine-tune (SGD at batch 128, flips and crops) is MobileNet's on 28x28
    # Fashion-MNIST; a few Adam steps suit the 8x8 quadrant task.
    small = training.TrainConfig(
        epochs=1, batch_size=32, learning_rate=1e-3, optimizer="adam", weight_decay=0.0
    )
    recipes = []
    monkeypatch.setattr(
        mixed.recipe,
        "get_recipe",
        lambda name: (
            recipes.append(name)
            or types.SimpleNamespace(finetune_config=lambda epochs: small.replace(epochs=epochs))
        ),
    )
    monkeypatch.setenv("PFTF_MP_RECIPES", R)
    monkeypatch.setenv("PFTF_MP_SETTINGS", "uniform-4")
    monkeypatch.setenv("PFTF_MP_EPOCHS", "1")
    (rec,) = mixed.run()
    assert (tmp_path / f"{R}.uniform-4.int8.tflite").exists()
    assert rec["int4_bytes"] == (tmp_path / f"{R}.uniform-4.int4.tflite").stat().st_size
    assert (rec["model"], rec["method"], rec["setting"]) == (
        "tiny_mobilenet", "qat-uniform", "avg_bits=4,epochs=1",
    )  # fmt: skip
    assert rec["command"] == f"PFTF_MP_RECIPES={R} {mixed.COMMAND}"
    assert rec["bits"]["dw"] == 4 and "DEPTHWISE_CONV_2D" in rec["int4_fallbacks"]["dw"]
    assert rec["levels_within_limit"] and rec["int4_levels_within_limit"]
    assert set(recipes) == {R}
