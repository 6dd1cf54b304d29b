"""Keras 3 model objects through the public entries: bridged in memory, answered in Keras 3."""

import keras as keras3
import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import errors, learner, model_io, qat, tflite_verify, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import planner
from pocketflow_tf.learners.auto.compress import compress
from tests import tiny_models

K = keras3.layers


def _user_net3(seed=0, softmax=False):
    """A Keras 3 functional net: Inception-style Concatenate, residual Add with a projection,
    DepthwiseConv2D with an SE Multiply, on 8x8x1 -> 4 classes."""
    keras3.utils.set_random_seed(seed)
    inp = keras3.Input((8, 8, 1))
    a = K.Conv2D(8, 1, padding="same", activation="relu", name="br1")(inp)
    b = K.Conv2D(8, 3, padding="same", activation="relu", name="br3")(inp)
    x = K.Concatenate(name="cat")([a, b])
    y = K.Conv2D(16, 3, padding="same", use_bias=False, name="res_a")(x)
    y = K.BatchNormalization(name="res_bn")(y)
    proj = K.Conv2D(16, 1, name="proj")(x)
    x = K.ReLU()(K.Add(name="res_add")([y, proj]))
    d = K.DepthwiseConv2D(3, padding="same", name="dw")(x)
    se = K.GlobalAveragePooling2D(keepdims=True)(d)
    se = K.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = K.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    x = K.Multiply(name="se_mul")([d, se])
    x = K.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = K.GlobalAveragePooling2D()(x)
    out = K.Dense(4, activation="softmax" if softmax else None, name="fc")(x)
    return keras3.Model(inp, out)


OPTIONS = {
    "channel": {"cp_prune_option": "uniform", "cp_uniform_preserve_ratio": 0.5},
    "weight-sparse": {"ws_min_params": 100},
    "uniform": {},
}


def _fit(name, model, data):
    lrn = learner.get_learner_class(name)(
        training.TrainConfig(epochs=1, batch_size=32, seed=2), verbose=0, **OPTIONS[name]
    )
    return lrn.fit(model, *data)


@pytest.mark.parametrize("name", ["channel", "weight-sparse"])
def test_keras3_model_in_keras3_model_out(name, tiny_data):
    model3 = _user_net3()
    result3 = _fit(name, model3, tiny_data)
    assert model_io.is_keras3(result3)
    # The same model in tf-keras, same learner and seed: the tf-keras result.
    result2 = _fit(name, model_io.from_keras3(model3), tiny_data)
    assert isinstance(result2, keras.Model)
    x = tiny_data[0][:32]
    np.testing.assert_allclose(
        np.asarray(result3(x)), result2.predict(x, verbose=0), atol=1e-5, rtol=1e-5
    )
    if name == "channel":  # physically thinner in Keras 3 too
        assert result3.get_layer("res_a").kernel.shape[-1] < 16


@pytest.mark.parametrize("softmax", [False, True])
def test_keras3_model_through_qat_comes_back_frozen_in_keras3(softmax, tiny_data, tmp_path):
    model3 = _user_net3(softmax=softmax)
    result3 = _fit("uniform", model3, tiny_data)
    assert model_io.is_keras3(result3)
    kinds = [type(layer).__name__ for layer in result3.layers]
    assert "FakeQuant" in kinds and not any("Quantize" in k for k in kinds)
    result2 = _fit("uniform", model_io.from_keras3(model3), tiny_data)
    assert qat.is_quantized(result2)  # the tf-keras caller keeps the trainable QAT model
    x = tiny_data[0][:32]
    want = result2.predict(x, verbose=0)
    np.testing.assert_allclose(np.asarray(result3(x)), want, atol=1e-5, rtol=1e-5)
    if softmax:
        np.testing.assert_allclose(want.sum(axis=1), 1.0, atol=1e-5)
    # It saves and loads as a plain Keras 3 file (FakeQuant is registered).
    result3.save(tmp_path / "q.keras")
    again = keras3.saving.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(result3(x)))


def _softmax_input(path: str, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The dequantized input of the file's SOFTMAX on ``x`` and its quantization step, from
    the reference kernels (a delegate keeps no intermediate tensor)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        path,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    (softmax,) = [op for op in it._get_ops_details() if op["op_name"] == "SOFTMAX"]
    index = int(softmax["inputs"][0])
    (detail,) = [d for d in it.get_tensor_details() if d["index"] == index]
    scale, zero_point = detail["quantization"]
    assert scale > 0, "the softmax's input is quantized in an int8 file"
    return (it.get_tensor(index).astype(np.float32) - zero_point) * scale, float(scale)


@pytest.mark.parametrize("int8_final", ["ptq", "qat"])
def test_keras3_softmax_model_through_compress(int8_final, tiny_data, tmp_path, monkeypatch):
    # The Keras 3 and softmax contract is under test, not the search: the int8 target keeps
    # one chain, the dense model's int8 (a heavily pruned tiny net's int8 probabilities
    # drift further from its float ones than the few steps checked below).
    monkeypatch.setitem(planner.RULES, "int8", (("int8",), "the int8 chain alone (a test)"))
    model3 = _user_net3(softmax=True)
    # A trained model, as users bring: int8 probabilities of an untrained one sit within a
    # step or two of each other and the int8 verification (rightly) cannot tell them apart.
    model3.compile(keras3.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model3.fit(*tiny_data, epochs=4, batch_size=32, verbose=0)
    # ptq: a float final model; qat: a QAT one, frozen.
    options = tiny_models.auto_budget(max_trials=1, int8_final=int8_final)
    result = compress(model3, tiny_data, "int8", str(tmp_path / "auto"), **options)
    assert model_io.is_keras3(result.model)
    kinds = [type(layer).__name__ for layer in result.model.layers]
    assert ("FakeQuant" in kinds) == (int8_final == "qat")
    x = tiny_data[0][:16]
    probs = np.asarray(result.model(x))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    out = tflite_verify.TFLiteRunner(result.tflite_path).predict(x, batch_size=16)
    if int8_final == "ptq":
        # A float model against its int8 file: probabilities (steps of 1/256) a few steps
        # apart.
        np.testing.assert_allclose(out, probs, atol=4 / 256)
    else:
        # A QAT model simulates the file's rounding, so it is held to the file's own units:
        # its logits (the softmax's input) within two of their steps, and its probabilities
        # within what two logit steps can move a softmax output (|dp_i| <= 2 p_i (1 - p_i)
        # max|dz| <= max|dz| / 2) plus one output step of 1/256. A bare 4/256 on the
        # probabilities was tighter than two logit steps: an Intel AMX host measured logits
        # exactly 2 steps (of 0.047) off, 4.4/256 in probability.
        assert type(result.model.layers[-1]).__name__ == "Activation"
        logits3 = keras3.Model(result.model.inputs, result.model.layers[-2].output)
        got, step = _softmax_input(result.tflite_path, x)
        np.testing.assert_allclose(got, np.asarray(logits3(x)), atol=2.0001 * step)
        np.testing.assert_allclose(out, probs, atol=step + 1 / 256)
    # The same run on the model's tf-keras twin: the same answer, in tf-keras.
    twin = compress(
        model_io.from_keras3(model3), tiny_data, "int8", str(tmp_path / "tfk"), **options
    )
    assert not model_io.is_keras3(twin.model)
    np.testing.assert_allclose(probs, twin.model.predict(x, verbose=0), atol=1e-5)


def test_export_tflite_takes_a_keras3_model(tiny_data, tmp_path):
    model3 = _user_net3()
    x, y = tiny_data
    res = tflite_verify.export_tflite(
        model3, str(tmp_path / "m.tflite"), mode="float", x_verify=x, y_verify=y
    )
    out = tflite_verify.TFLiteRunner(res.path).predict(x[:8], batch_size=8)
    np.testing.assert_allclose(out, np.asarray(model3(x[:8])), atol=1e-5)


def test_a_keras3_layer_the_bridge_cannot_rebuild_is_named_before_work(tiny_data):
    class Doubler(keras3.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras3.Input((8, 8, 1))
    x = Doubler(name="my_doubler")(inp)
    out = K.Dense(4)(K.Flatten()(x))
    with pytest.raises(errors.UnsupportedModelError, match="my_doubler"):
        _fit("channel", keras3.Model(inp, out), tiny_data)


def test_accounting_costs_a_keras3_model_like_its_tf_keras_twin():
    from pocketflow_tf import accounting

    model3 = _user_net3()
    p3 = accounting.profile_model(model3)
    p2 = accounting.profile_model(model_io.from_keras3(model3))
    assert p3.total_flops == p2.total_flops > 0 and p3.total_params == p2.total_params
