"""Uniform int8 QAT: the QAT model, its full-integer export, saving, options, the run script."""

import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import errors, model_io, qat, tflite_export, tflite_verify, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.uniform_quant import UniformQuantLearner
from pocketflow_tf.nets import runner

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def residual_net(seed=0):
    """Rescaling -> conv-BN-ReLU -> residual conv -> GAP -> logits, 8x8x1 in."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    x = L.Rescaling(2.0, offset=-1.0, name="normalize")(inp)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    y = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = L.ReLU()(L.Add()([x, y]))
    x = L.MaxPooling2D(4)(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x))


@pytest.fixture
def trained(tiny_data):
    x, y = tiny_data
    m = residual_net()
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return m


def test_qat_fine_tune_exports_a_full_integer_model_that_matches(trained, tiny_data):
    x, y = tiny_data
    before = [w.copy() for w in trained.get_weights()]
    cfg = training.TrainConfig(epochs=2, batch_size=32, learning_rate=0.01)
    out = UniformQuantLearner(cfg, verbose=0).fit(trained, x, y)
    assert qat.is_quantized(out) and not qat.is_quantized(trained)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights(), strict=True))
    assert training.evaluate_accuracy(out, x, y) > 0.9  # a learnable task stays learned

    buf = tflite_export.convert(out, "int8", representative_data=x, int8_io=True)
    interp = Interpreter(model_content=buf)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    # TFMOT's QuantizeLayer at the input keeps its own range, so the converter requantizes the
    # image once (DEQUANTIZE -> QUANTIZE); after that every op is integer, BatchNorm folded.
    assert [op["op_name"] for op in ops[:2]] == ["DEQUANTIZE", "QUANTIZE"]
    assert {op["op_name"] for op in ops[2:]} == {
        "MUL",
        "ADD",
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
    }
    for op in ops[2:]:
        dtypes = {tensors[i]["dtype"] for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0}
        assert dtypes <= {np.int8, np.int32}, op
    assert sum(op["op_name"] == "CONV_2D" for op in ops) == 2

    # The Keras QAT model predicts what the int8 file computes: logits within a couple of
    # output quantization steps.
    step = interp.get_output_details()[0]["quantization"][0]
    got = tflite_verify.TFLiteRunner(buf).predict(x[:200])
    want = out.predict(x[:200], verbose=0)
    assert np.abs(got - want).max() <= 3 * step, (np.abs(got - want).max(), step)


def test_qat_model_saves_as_h5_only(trained, tmp_path):
    q = qat.quantize_model(trained)
    with pytest.raises(errors.InvalidArgumentError) as e:
        model_io.save_model(q, tmp_path / "q.keras")
    assert e.value.name == "path"
    assert os.listdir(tmp_path) == []
    model_io.save_model(q, tmp_path / "q.h5")
    back = model_io.load_model(tmp_path / "q.h5")
    x = np.random.default_rng(1).random((16, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(back.predict(x, verbose=0), q.predict(x, verbose=0))


def test_subclassed_or_already_quantized_models_are_refused(trained):
    with pytest.raises(errors.UnsupportedModelError, match="already"):
        qat.quantize_model(qat.quantize_model(trained))

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(errors.UnsupportedModelError, match="functional or Sequential"):
        qat.quantize_model(Net())


@pytest.mark.parametrize(
    "kwargs, name, says",
    [
        ({"uql_weight_bits": 0}, "uql_weight_bits", "1..8"),
        ({"uql_weight_bits": 9}, "uql_weight_bits", "1..8"),
        ({"uql_activation_bits": True}, "uql_activation_bits", "1..8"),
        ({"uql_weight_bits": 4}, "uql_weight_bits", "planned"),
    ],
)
def test_bad_bit_widths_are_refused(kwargs, name, says):
    with pytest.raises(errors.InvalidArgumentError, match=says) as e:
        UniformQuantLearner(**kwargs)
    assert e.value.name == name


@pytest.mark.parametrize(
    "kwargs, name",
    [({"save_path": "m.keras"}, "save_path"), ({"export_modes": ("float",)}, "export_modes")],
)
def test_run_options_for_qat(tmp_path, kwargs, name):
    if "save_path" in kwargs:
        kwargs = {"save_path": str(tmp_path / kwargs["save_path"])}
    with pytest.raises(errors.InvalidArgumentError) as e:
        runner.RunOptions("convnet_at_fmnist", learner="uniform", **kwargs)
    assert e.value.name == name
    opts = runner.RunOptions("convnet_at_fmnist", learner="uniform")
    assert opts.export_modes == ("int8",) and opts.save_path.endswith("model.h5")


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist")
def test_run_script_qat_from_a_trained_model(tmp_path):
    common = dict(nb_train_samples=1024, num_verify=200, latency_runs=10, verbose=0)
    base = runner.run(
        runner.RunOptions(
            "convnet_at_fmnist",
            nb_epochs_rat=0.07,
            batch_size=32,
            save_path=str(tmp_path / "fp" / "model.keras"),
            log_dir=str(tmp_path / "logs"),
            export_modes=(),
            **common,
        )
    )
    rec = runner.run(
        runner.RunOptions(
            "convnet_at_fmnist",
            learner="uniform",
            model_path=base["artifacts"]["model_keras"]["path"],
            nb_epochs_rat=0.07,
            batch_size=32,
            enbl_dst=True,
            save_path=str(tmp_path / "q" / "model.h5"),
            log_dir=str(tmp_path / "logs_q"),
            **common,
        )
    )
    m = rec["metrics"]
    assert set(rec["artifacts"]) == {"model_keras", "tflite_int8"}
    assert m["tflite_int8_agreement"] >= 0.95
    # The fine-tune kept the float model's accuracy (within 3 pt on 10k test images).
    assert m["test_acc"] >= base["metrics"]["test_acc"] - 0.03
    assert (
        rec["config"]["learning_rate"] is None
        and rec["sections"]["learner"]["train"]["warmup_epochs"] == 0
    )
    ev = runner.run(
        runner.RunOptions(
            "convnet_at_fmnist",
            learner="uniform",
            exec_mode="eval",
            model_path=str(tmp_path / "q" / "model.h5"),
            save_path=str(tmp_path / "e" / "model.h5"),
            verbose=0,
        )
    )
    assert ev["metrics"]["test_acc"] == pytest.approx(m["test_acc"], abs=1e-6)
