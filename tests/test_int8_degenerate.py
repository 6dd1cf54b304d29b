"""int8 export of a net with a dead ReLU: XNNPACK's scale limits, the repair, the reason given."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import errors, tflite_export, tflite_verify
from pocketflow_tf.compat import keras

L = keras.layers


def _dead_relu_net():
    """Conv-BN-ReLU -> Conv(relu) whose output is 0 on every input -> pool -> Dense(4)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(inp)))
    dead = L.Conv2D(8, 3, padding="same", activation="relu", name="dead")
    x = L.Flatten()(L.MaxPooling2D()(dead(x)))
    model = keras.Model(inp, L.Dense(4, name="fc")(x))
    # Live weights, a bias no input overcomes: a ReLU that died in training (zero weights
    # would also zero the filter scale and hide the problem).
    kernel, bias = dead.get_weights()
    dead.set_weights([kernel, np.full_like(bias, -100.0)])
    fc = model.get_layer("fc")
    fc.set_weights([fc.get_weights()[0], np.array([0.3, -0.2, 0.1, 0.5], np.float32)])
    return model


@pytest.fixture(scope="module")
def dead_net():
    x = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
    return _dead_relu_net(), x


def _plain_int8(model, x):
    # What the converter gives without the repair: the file XNNPACK refuses.
    return bytes(tflite_export._converter(model, "int8", x, int8_io=False, sparse=False).convert())


def test_unrepaired_file_breaks_xnnpack_and_the_problem_names_the_layer(dead_net):
    model, x = dead_net
    content = _plain_int8(model, x)
    with pytest.raises(RuntimeError, match="XNNPACK"):
        Interpreter(model_content=content).allocate_tensors()
    (problem,) = tflite_export.int8_scale_problems(content)
    assert (problem.op, problem.layer) == ("CONV_2D", "dead")
    assert problem.ratio >= 256 and problem.tensor_scale < 1e-7
    assert "dead ReLU" in str(problem)
    # Verification refuses it as before, and now says why.
    with pytest.raises(errors.VerificationError, match="XNNPACK refuses: CONV_2D of layer 'dead'"):
        tflite_verify.verify(model, content, x, mode="int8", min_samples=16, check_child=False)


@pytest.mark.parametrize("int8_io", [False, True], ids=["float_io", "int8_io"])
def test_convert_widens_the_dead_range_and_the_file_runs_like_keras(dead_net, int8_io):
    model, x = dead_net
    content = tflite_export.convert(model, "int8", representative_data=x, int8_io=int8_io)
    assert tflite_export.int8_scale_problems(content) == []
    Interpreter(model_content=content).allocate_tensors()  # default delegates: XNNPACK
    report = tflite_verify.verify(model, content, x, mode="int8", min_samples=16, check_child=False)
    # The dead layer outputs zeros; the net's output is the dense bias, exactly.
    assert report.passed and report.top1_agreement == 1.0
    assert report.max_abs_diff < 0.01


def test_healthy_model_is_converted_as_before():
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(3)])
    x = np.random.default_rng(1).random((32, 6), dtype=np.float32)
    content = tflite_export.convert(m, "int8", representative_data=x)
    assert tflite_export.int8_scale_problems(content) == []
    assert content == _plain_int8(m, x)
