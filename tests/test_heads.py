"""Probability heads: detected, trained on their logits, handed back as probabilities."""

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import distillation, errors, heads, learner, tflite_verify, training
from pocketflow_tf.compat import keras
from tests import tiny_models

L = keras.layers


def _net(head: str, seed: int = 0):
    """Conv-BN-ReLU -> Conv-ReLU -> pool -> Dense(4) on 8x8x1, ending in logits or in a softmax of a kind."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 3, padding="same", name="conv2")(x)  # a middle layer (linear: never dies)
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    if head == "dense_softmax":
        return keras.Model(inp, L.Dense(4, activation="softmax", name="fc")(x))
    logits = L.Dense(4, name="fc")(x)
    if head == "softmax_layer":
        return keras.Model(inp, L.Softmax(name="probs")(logits))
    if head == "activation_softmax":
        return keras.Model(inp, L.Activation("softmax", name="probs")(logits))
    return keras.Model(inp, logits)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["dense_softmax", "softmax_layer", "activation_softmax"])
def test_split_gives_the_logits_and_attach_the_same_probabilities(kind, tiny_data):
    model = _net(kind)
    logits_model, head = heads.split(model)
    assert head.kind == "softmax" and heads.output_kind(logits_model) == "logits"
    x = tiny_data[0][:16]
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(_softmax(logits_model.predict(x, verbose=0)), probs, atol=1e-6)
    back = heads.attach(logits_model, head)
    np.testing.assert_allclose(back.predict(x, verbose=0), probs, atol=1e-6)
    # The user's model is untouched: its output layer still applies the softmax.
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(axis=1), 1.0, atol=1e-5)


#: Options that fit the learners to the tiny net (its layers are below the size defaults).
OPTIONS = {"product-quant": {"pq_codebook_size": 4}, "weight-sparse": {"ws_min_params": 100}}


def _fit(name, model, data, dst, seed=1):
    lrn = learner.get_learner_class(name)(
        training.TrainConfig(epochs=1, batch_size=32, seed=seed),
        distillation=distillation.DistillationConfig(weight=4.0, temperature=2.0) if dst else None,
        verbose=0,
        **OPTIONS.get(name, {}),
    )
    return lrn.fit(model, *data)


# auto searches on its own held-out split and is covered by its own test below.
TRAINING_LEARNERS = [n for n in learner.available() if n != "auto"]


@pytest.mark.parametrize("dst", [False, True], ids=["plain", "distilled"])
@pytest.mark.parametrize("name", TRAINING_LEARNERS)
def test_softmax_head_learns_exactly_like_its_logits_twin(name, dst, tiny_data):
    x, y = tiny_data[0][:128], tiny_data[1][:128]
    twin = _fit(name, _net("logits"), (x, y), dst)
    probs_model = _fit(name, _net("dense_softmax"), (x, y), dst)
    probe = tiny_data[0][128:192]
    probs = probs_model.predict(probe, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, _softmax(twin.predict(probe, verbose=0)), atol=1e-5)
    assert heads.output_kind(twin) == "logits"


def test_softmax_head_exports_probabilities(tiny_data, tmp_path):
    x, y = tiny_data
    tuned = _fit("full-prec", _net("softmax_layer"), (x, y), dst=True)
    for mode in ("float", "int8"):
        path = str(tmp_path / f"m.{mode}.tflite")
        tflite_verify.export_tflite(
            tuned,
            path,
            mode=mode,
            x_verify=x,
            y_verify=y,
            representative_data=x[:64],
        )
        out = tflite_verify.TFLiteRunner(path).predict(x[:32], batch_size=32)
        # int8 probabilities are multiples of 1/256: their rows sum to 1 within a few steps.
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5 if mode == "float" else 0.02)
        assert (out >= 0).all()


def test_a_softmax_teacher_is_used_through_its_logits(tiny_data):
    x, y = tiny_data[0][:128], tiny_data[1][:128]
    runs = []
    for teacher_kind in ("logits", "activation_softmax"):
        lrn = learner.get_learner_class("full-prec")(
            training.TrainConfig(epochs=1, batch_size=32, seed=1),
            distillation=distillation.DistillationConfig(),
            teacher=_net(teacher_kind, seed=5),
            verbose=0,
        )
        runs.append(lrn.fit(_net("logits"), x, y).get_weights())
        assert heads.output_kind(lrn.teacher) == heads.output_kind(_net(teacher_kind))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("activation", ["sigmoid"])
def test_heads_the_learners_cannot_train_are_refused_before_work(activation, tiny_data):
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Flatten(), L.Dense(4, activation=activation, name="out")]
    )
    with pytest.raises(errors.InvalidArgumentError, match="'out' applies sigmoid"):
        learner.get_learner_class("full-prec")(verbose=0).fit(m, *tiny_data)


def test_softmax_over_the_batch_axis_is_refused():
    inp = keras.Input((4,))
    m = keras.Model(inp, L.Softmax(axis=0, name="s")(L.Dense(3)(inp)))
    with pytest.raises(errors.InvalidArgumentError, match="softmax over axis 0"):
        heads.split(m)


@pytest.mark.parametrize("target", ["int8"])
def test_auto_hands_back_probabilities(target, tiny_data, tmp_path):
    from pocketflow_tf.learners.auto.compress import compress

    result = compress(
        _net("dense_softmax"),
        tiny_data,
        target,
        str(tmp_path / "auto"),
        # PTQ and QAT both export the final model with its softmax.
        **tiny_models.auto_budget(max_trials=1, int8_final="auto"),
    )
    x = tiny_data[0][:8]
    np.testing.assert_allclose(result.model.predict(x, verbose=0).sum(axis=1), 1.0, atol=1e-5)
    out = tflite_verify.TFLiteRunner(result.tflite_path).predict(x, batch_size=8)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=0.02)


# -- one-unit binary classifiers -----------------------------------------------------------------
def _binary_net(head: str, seed: int = 0):
    """The same body ending in one unit: Dense(1, sigmoid), Dense(1) + a sigmoid layer, or a
    Dense(1) logit (the Keras tutorials' binary heads)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.Conv2D(8, 3, padding="same", name="conv2")(x)  # a middle layer, as in _net
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    if head == "dense_sigmoid":
        return keras.Model(inp, L.Dense(1, activation="sigmoid", name="fc")(x))
    z = L.Dense(1, name="fc")(x)
    if head == "sigmoid_layer":
        return keras.Model(inp, L.Activation("sigmoid", name="prob")(z))
    return keras.Model(inp, z)


def _binary(data):
    x, y = data
    return x, (y >= 2).astype(np.int64)  # the brightest quadrant in the bottom half


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


BINARY = {
    "dense_sigmoid": "binary_sigmoid",
    "sigmoid_layer": "binary_sigmoid",
    "logit": "binary_logit",
}


@pytest.mark.parametrize("form", sorted(BINARY))
def test_a_one_unit_binary_head_is_split_into_two_logits_and_put_back(form, tiny_data):
    model = _binary_net(form)
    assert heads.output_kind(model) == BINARY[form]
    logits_model, head = heads.split(model)
    assert head.kind == BINARY[form] and logits_model.output_shape == (None, 2)
    assert heads.output_kind(logits_model) == "logits"
    x = tiny_data[0][:32]
    out = model.predict(x, verbose=0)
    two = logits_model.predict(x, verbose=0)
    # softmax(-z/2, z/2) is (1 - sigmoid(z), sigmoid(z)): the same classifier, two classes.
    p1 = out[:, 0] if form != "logit" else _sigmoid(out[:, 0])
    np.testing.assert_allclose(_softmax(two)[:, 1], p1, atol=1e-6)
    back = heads.attach(logits_model, head)
    assert back.output_shape == (None, 1)
    np.testing.assert_allclose(back.predict(x, verbose=0), out, atol=1e-5)
    assert heads.output_kind(back) == BINARY[form]
    # Class 1 above 0.5 for a probability, above 0 for a logit.
    assert heads.threshold(model) == (0.5 if form != "logit" else 0.0)
    np.testing.assert_array_equal(
        heads.predicted_classes(out, heads.threshold(model)), two.argmax(axis=1)
    )


@pytest.mark.parametrize("name", TRAINING_LEARNERS)
def test_a_binary_sigmoid_model_learns_exactly_like_its_two_logit_twin(name, tiny_data):
    # Every learner trains the two-logit model and hands back one sigmoid unit.
    x, y = _binary((tiny_data[0][:128], tiny_data[1][:128]))
    model = _binary_net("dense_sigmoid")
    twin = _fit(name, heads.split(model)[0], (x, y), dst=False)
    binary = _fit(name, model, (x, y), dst=False)
    assert binary.output_shape == (None, 1) and heads.output_kind(binary) == "binary_sigmoid"
    probe = tiny_data[0][128:192]
    np.testing.assert_allclose(
        binary.predict(probe, verbose=0)[:, 0],
        _softmax(twin.predict(probe, verbose=0))[:, 1],
        atol=1e-5,
    )


def test_a_binary_model_is_scored_and_exported_by_its_threshold(tiny_data, tmp_path):
    x, y = _binary(tiny_data)
    for form in ("dense_sigmoid", "logit"):
        tuned = _fit("full-prec", _binary_net(form), (x, y), dst=False)
        acc = training.evaluate_accuracy(tuned, x, y)
        out = tuned.predict(x, verbose=0)[:, 0]
        assert acc == np.mean((out > heads.threshold(tuned)) == y) and acc > 0.7
        for mode in ("float", "int8"):
            path = str(tmp_path / f"{form}.{mode}.tflite")
            report = tflite_verify.export_tflite(
                tuned, path, mode=mode, x_verify=x, y_verify=y, representative_data=x[:64]
            )
            runner = tflite_verify.TFLiteRunner(path)
            assert runner.output_details["shape"].tolist() == [1, 1]
            assert runner.binary_threshold == (0.5 if form == "dense_sigmoid" else 0.0)
            assert report.report.top1_agreement >= 0.97
            assert abs(tflite_verify.tflite_accuracy(path, x, y) - acc) <= 0.03


@pytest.mark.parametrize(
    "build, said",
    [
        (
            lambda h: L.Dense(1, activation="relu", name="out")(h),
            "one-unit output layer 'out' applying relu",
        ),
        (
            lambda h: L.Reshape((1,), name="flat")(
                L.GlobalAveragePooling1D()(L.Reshape((-1, 1))(h))
            ),
            r"one-unit output layer 'flat' \(Reshape\) of unknown activation",
        ),
    ],
)
def test_one_unit_outputs_the_learners_cannot_train_are_refused(build, said, tiny_data):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    m = keras.Model(inp, build(L.Flatten()(inp)))
    with pytest.raises(errors.InvalidArgumentError, match=said):
        learner.get_learner_class("full-prec")(verbose=0).fit(m, *_binary(tiny_data))


def test_auto_hands_back_a_binary_sigmoid_model(tiny_data, tmp_path):
    from pocketflow_tf.learners.auto.compress import compress

    data = _binary(tiny_data)
    result = compress(
        _binary_net("dense_sigmoid"),
        data,
        "int8",
        str(tmp_path / "auto"),
        **tiny_models.auto_budget(max_trials=1, int8_final="auto"),
    )
    assert result.model.output_shape == (None, 1)
    assert heads.output_kind(result.model) == "binary_sigmoid"
    x = data[0][:64]
    keras_p = result.model.predict(x, verbose=0)[:, 0]
    runner = tflite_verify.TFLiteRunner(result.tflite_path)
    assert runner.binary_threshold == 0.5
    tfl_p = runner.predict(x, batch_size=8)[:, 0]
    # A probability in both, within a few int8 output steps (1/256) of each other.
    assert (tfl_p >= 0).all() and (tfl_p <= 1).all()
    assert np.abs(keras_p - tfl_p).max() <= 3 / 256


def test_a_keras3_binary_model_counts_two_classes_before_the_bridge():
    # The command reads the class count of the loaded Keras 3 model: its output history names
    # the layer `operation`, not `layer` (AttributeError before).
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 is not installed")
    from pocketflow_tf import inputs

    inp = keras3.Input((4,))
    z = keras3.layers.Dense(1, name="z")(inp)
    assert inputs.model_classes(keras3.Model(inp, z)) == 2
    probs = keras3.layers.Activation("sigmoid", name="p")(z)
    assert heads.output_kind(keras3.Model(inp, probs)) == "binary_sigmoid"


def test_review_cases_of_one_unit_heads(tiny_data, tmp_path):
    x, y = _binary(tiny_data)
    model = _binary_net("dense_sigmoid")
    # A second learner on a handed-back result takes off the fixed head, adds no layer.
    two, head = heads.split(model)
    back = heads.attach(two, head)
    again, head2 = heads.split(back)
    assert head2.kind == head.kind and len(again.layers) == len(two.layers)
    assert [la.name for la in heads.attach(again, head2).layers] == [la.name for la in back.layers]
    np.testing.assert_allclose(again.predict(x[:8], verbose=0), two.predict(x[:8], verbose=0))
    # A Dense(1, sigmoid) before a sigmoid layer of its own would lose one: refused.
    inp = keras.Input((8, 8, 1))
    z = L.Dense(1, activation="sigmoid", name="d")(L.Flatten()(inp))
    with pytest.raises(errors.InvalidArgumentError, match="computed by layer 'd'"):
        heads.split(keras.Model(inp, L.Activation("sigmoid")(z)))
    # (N, 1) labels score a .tflite as they score the Keras model (were argmax-ed to 0).
    path = str(tmp_path / "b.tflite")
    tflite_verify.export_tflite(model, path, mode="float", x_verify=x, y_verify=y[:, None])
    assert tflite_verify.tflite_accuracy(path, x, y[:, None]) == training.evaluate_accuracy(
        model, x, y
    )
    # A multi-label sigmoid model the learners refuse still verifies and scores by argmax.
    multi = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(4, "sigmoid")])
    assert heads.threshold(multi) is None
    tflite_verify.export_tflite(multi, str(tmp_path / "m.tflite"), mode="float", x_verify=x)


def test_a_keras3_sigmoid_op_is_a_probability():
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip("Keras 3 is not installed")
    inp = keras3.Input((4,))
    probs = keras3.ops.sigmoid(keras3.layers.Dense(1)(inp))
    assert heads.output_kind(keras3.Model(inp, probs)) == "binary_sigmoid"


class _Subclassed(keras.Model):
    """A subclassed binary classifier: no symbolic output, so its width cannot be read."""

    def __init__(self):
        super().__init__()
        self.flat, self.out = L.Flatten(), L.Dense(1, activation="sigmoid")

    def call(self, x):
        return self.out(self.flat(x))


def test_a_head_whose_width_cannot_be_read_is_named_not_guessed(tiny_data):
    x, y = _binary(tiny_data)
    model = _Subclassed()
    # Refused as a sigmoid of unknown width (not as "a sigmoid over several units"); a
    # learner refuses a subclassed model before, for want of its layer graph.
    with pytest.raises(errors.InvalidArgumentError, match="unknown width"):
        heads.output_kind(model)
    with pytest.raises(errors.UnsupportedModelError, match="'_Subclassed' is a subclassed"):
        learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1)).fit(model, x, y)
    # Scoring its one-unit outputs says why there is no threshold (not "`threshold`: None").
    with pytest.raises(errors.InvalidArgumentError, match="`outputs`.*no decision threshold"):
        training.evaluate_accuracy(model, x, y)


def test_a_binary_model_on_more_class_folders_is_named_as_one_unit():
    from pocketflow_tf import inputs

    with pytest.raises(errors.InvalidArgumentError, match="one output unit.*3 classes in the data"):
        inputs.model_classes(_binary_net("dense_sigmoid"), num_classes=3)


def test_the_op_behind_an_output_is_found_through_its_dequantize(tiny_data, tmp_path):
    from pocketflow_tf import tflite_load

    x, y = _binary(tiny_data)
    path = str(tmp_path / "b.tflite")
    tflite_verify.export_tflite(
        _binary_net("dense_sigmoid"), path, mode="int8", x_verify=x, representative_data=x
    )
    interp = tflite_load.open_interpreter(path)
    interp.allocate_tensors()  # XNNPACK's DELEGATE nodes appear: they are skipped
    out = interp.get_output_details()[0]["index"]
    assert tflite_load.producer(interp, out)["op_name"] == "DEQUANTIZE"
    found = tflite_load.producer(interp, out, through=("DEQUANTIZE", "QUANTIZE"))
    assert found["op_name"] == "LOGISTIC"
    assert tflite_load.producer(interp, interp.get_input_details()[0]["index"]) is None
    assert all(op["op_name"] != "DELEGATE" for op in tflite_load.file_ops(interp))
