"""The Keras 3 <-> tf-keras bridge in memory: each architectural pattern, both ways."""

import numpy as np
import pytest

from pocketflow_tf import errors, model_io
from pocketflow_tf.compat import keras

keras3 = pytest.importorskip("keras")
if not keras3.__version__.startswith("3"):  # the TF 2.15 lane has Keras 2 as `keras`
    pytest.skip("Keras 3 is not installed", allow_module_level=True)

RNG = np.random.default_rng(0)


def _x(shape):
    return RNG.standard_normal((2, *shape)).astype(np.float32)


def _out(model, x):
    y = model(x, training=False)
    return np.asarray(y[0] if isinstance(y, list | tuple) else y)


def _round_trip(model3, x):
    """Keras 3 -> tf-keras -> Keras 3, outputs equal (1e-5) at each step."""
    ref = _out(model3, x)
    m2 = model_io.from_keras3(model3)
    assert isinstance(m2, keras.Model) and not model_io.is_keras3(m2)
    np.testing.assert_allclose(_out(m2, x), ref, atol=1e-5)
    back = model_io.to_keras3(m2)
    assert model_io.is_keras3(back)
    np.testing.assert_allclose(_out(back, x), ref, atol=1e-5)
    return m2, back


def _se_block_model():
    """Concatenate, Add with a projection, DepthwiseConv2D with an SE Multiply."""
    keras3.utils.set_random_seed(0)
    inp = keras3.Input((8, 8, 3))
    a = keras3.layers.Conv2D(4, 3, padding="same")(inp)
    b = keras3.layers.Conv2D(4, 1, name="projection")(inp)
    x = keras3.layers.Add()([a, b])
    d = keras3.layers.DepthwiseConv2D(3, padding="same")(x)
    se = keras3.layers.GlobalAveragePooling2D(keepdims=True)(d)
    se = keras3.layers.Conv2D(4, 1, activation="sigmoid")(se)
    x = keras3.layers.Multiply()([d, se])
    x = keras3.layers.Concatenate()([x, a])
    x = keras3.layers.GlobalAveragePooling2D()(x)
    return keras3.Model(inp, keras3.layers.Dense(3)(x))


def test_is_keras3():
    assert model_io.is_keras3(_se_block_model())
    assert not model_io.is_keras3(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    assert not model_io.is_keras3("model.keras")


def test_concat_add_projection_se_multiply_round_trip():
    m2, back = _round_trip(_se_block_model(), _x((8, 8, 3)))
    assert m2.get_layer("projection").kernel.shape == (1, 1, 3, 4)
    assert back.get_layer("projection").kernel.shape == (1, 1, 3, 4)


def test_sequential_round_trip():
    keras3.utils.set_random_seed(1)
    seq = keras3.Sequential(
        [keras3.Input((6,)), keras3.layers.Dense(4, activation="relu"), keras3.layers.Dense(2)]
    )
    _round_trip(seq, _x((6,)))


def test_wrong_keras_is_refused_with_the_value():
    m2 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(errors.InvalidArgumentError, match="'Sequential'"):
        model_io.from_keras3(m2)
    with pytest.raises(errors.InvalidArgumentError, match="Keras 3 already"):
        model_io.to_keras3(_se_block_model())


def test_subclassed_keras3_model_is_refused():
    class Net(keras3.Model):
        def call(self, x):
            return x

    with pytest.raises(errors.UnsupportedModelError, match="'Net' is a subclassed"):
        model_io.from_keras3(Net())


def test_custom_layer_named_with_remedy():
    class Scale(keras3.layers.Layer):
        def call(self, x):
            return x * 3.0

    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Dense(2)(Scale(name="my_scale")(inp)))
    with pytest.raises(errors.UnsupportedModelError) as e:
        model_io.from_keras3(model)
    msg = str(e.value)
    assert "'my_scale'" in msg and "'Scale'" in msg and "tf-keras" in msg and "replace" in msg


def test_lambda_needs_trust():
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Lambda(lambda t: t * 2.0, name="dbl")(inp))
    with pytest.raises(errors.UnsupportedModelError, match="'dbl' is a Lambda"):
        model_io.from_keras3(model)
    x = _x((4,))
    np.testing.assert_allclose(_out(model_io.from_keras3(model, trust_unsafe=True), x), 2 * x)


def _conv_input(shape=(8, 8, 3)):
    keras3.utils.set_random_seed(2)
    return keras3.Input(shape)


def test_hard_activations_rebuilt_as_tf_keras_mobilenet_v3_does():
    inp = _conv_input()
    x = keras3.layers.Conv2D(4, 3, padding="same", activation="hard_swish")(inp)
    x = keras3.layers.Activation("hard_silu", name="hs")(x)
    x = keras3.layers.Activation("hard_sigmoid")(x * 4.0)
    m2, _ = _round_trip(keras3.Model(inp, x), _x((8, 8, 3)) * 4)
    classes = {type(la).__name__ for la in m2.layers}
    assert {"ReLU", "Multiply", "TFOpLambda"} <= classes  # as tf_keras's MobileNetV3
    assert isinstance(m2.get_layer("hs"), keras.layers.Multiply)


def test_tf_keras_hard_sigmoid_keeps_its_meaning_in_keras3():
    # tf-keras's hard_sigmoid is clip(0.2 x + 0.5), Keras 3's relu6(x + 3) / 6.
    inp = keras.Input((5,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="hard_sigmoid")(inp))
    x = _x((5,)) * 5
    np.testing.assert_allclose(_out(model_io.to_keras3(model), x), _out(model, x), atol=1e-6)


def test_keras3_activation_tf_keras_lacks_is_named():
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Dense(2, activation="celu", name="head")(inp))
    with pytest.raises(errors.UnsupportedModelError, match="'head'.*'Dense'.*'celu'"):
        model_io.from_keras3(model)


def test_normalization_given_and_adapted():
    inp = _conv_input()
    x = keras3.layers.Rescaling(1 / 255.0)(inp)
    x = keras3.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.05, 0.06])(x)
    adapted = keras3.layers.Normalization(axis=-1, name="adapted")
    adapted.adapt(RNG.random((16, 8, 8, 3)).astype(np.float32) * 3)
    x = keras3.layers.Conv2D(4, 1)(adapted(x))
    m2, _ = _round_trip(keras3.Model(inp, x), RNG.uniform(0, 255, (2, 8, 8, 3)).astype("f4"))
    assert isinstance(m2.get_layer("adapted"), keras.layers.Normalization)


def test_layer_norm_layer_scale_and_stochastic_depth():
    from keras.src.applications.convnext import LayerScale, StochasticDepth

    inp = _conv_input((8, 8, 4))
    x = keras3.layers.LayerNormalization(epsilon=1e-6)(inp)
    x = keras3.layers.Dense(4)(x)
    scale = LayerScale(0.5, 4, name="scale")
    x = scale(x)
    x = StochasticDepth(0.2, name="drop_path")(x)
    model = keras3.Model(inp, inp + x)  # the residual is an operation node
    scale.gamma.assign(RNG.standard_normal(4).astype(np.float32))
    m2, back = _round_trip(model, _x((8, 8, 4)))
    # Standard layers that TFMOT, the channel graph and both loaders know.
    assert isinstance(m2.get_layer("scale"), keras.layers.DepthwiseConv2D)
    assert m2.get_layer("drop_path").noise_shape == (None, 1, 1, 1)


def test_grouped_conv_and_nested_sequential_inlined():
    inp = _conv_input((8, 8, 4))
    stem = keras3.Sequential(
        [keras3.layers.Conv2D(8, 2, strides=2), keras3.layers.LayerNormalization()], name="stem"
    )
    x = keras3.layers.Conv2D(8, 3, padding="same", groups=4, name="grouped")(stem(inp))
    m2, back = _round_trip(keras3.Model(inp, x), _x((8, 8, 4)))
    assert m2.get_layer("grouped").groups == 4
    assert not any(isinstance(la, keras.Model) for la in m2.layers)  # flat


def test_operations_with_constants():
    inp = _conv_input((4, 4, 2))
    x = keras3.layers.ReLU(6.0)(inp + 3.0) * (1.0 / 6.0)
    x = (3.0 - x) / 2.0 + keras3.ops.mean(x, axis=-1, keepdims=True)
    x = keras3.ops.maximum(-x, keras3.ops.sigmoid(x))
    m2, back = _round_trip(keras3.Model(inp, x), _x((4, 4, 2)))
    assert "TFOpLambda" in {type(la).__name__ for la in m2.layers}


def test_unbridged_operation_is_named():
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.ops.cumsum(inp, axis=-1))
    with pytest.raises(errors.UnsupportedModelError, match="'Cumsum'.*no tf-keras rule"):
        model_io.from_keras3(model)


def test_tf_ops_of_tf_keras_round_trip():
    from pocketflow_tf.compat import tf

    inp = keras.Input((4, 4, 2))
    x = keras.layers.ReLU(6.0)(inp + 3.0) * (1.0 / 6.0)
    x = tf.reduce_mean(x, axis=[1, 2], keepdims=True) - tf.nn.relu6(inp)
    model = keras.Model(inp, x)
    x = _x((4, 4, 2))
    m3 = model_io.to_keras3(model)
    np.testing.assert_allclose(_out(m3, x), _out(model, x), atol=1e-6)
    np.testing.assert_allclose(_out(model_io.from_keras3(m3), x), _out(model, x), atol=1e-6)


def test_registered_rule_converts_a_user_layer(monkeypatch):
    class Triple(keras3.layers.Layer):
        def call(self, x):
            return x * 3.0

    monkeypatch.setitem(
        model_io._USER_RULES,
        "Triple",
        lambda layer, k: k.layers.Rescaling(3.0, name=layer.name),
    )
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Dense(2)(Triple(name="t")(inp)))
    m2 = model_io.from_keras3(model)
    x = _x((4,))
    np.testing.assert_allclose(_out(m2, x), _out(model, x), atol=1e-6)


def test_options_renamed_or_inherited_keep_their_values():
    # LeakyReLU's slope is `negative_slope` in Keras 3 and `alpha` in tf-keras; tf-keras's
    # GlobalAveragePooling1D takes `keepdims` through its base class; Keras 3's SpatialDropout
    # takes no `trainable`; BatchNormalization's renorm options reach tf-keras.
    keras3.utils.set_random_seed(3)
    inp = keras3.Input((6, 3))
    x = keras3.layers.Conv1D(4, 3, padding="same")(inp)
    x = keras3.layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    x = keras3.layers.SpatialDropout1D(0.2, name="sd1")(x)
    x = keras3.layers.BatchNormalization(renorm=True, name="bn")(x)
    x = keras3.layers.GlobalAveragePooling1D(keepdims=True, name="gap")(x)
    model = keras3.Model(inp, keras3.layers.Flatten()(x))
    m2, back = _round_trip(model, _x((6, 3)))
    assert m2.get_layer("leaky").alpha == pytest.approx(0.1)
    assert back.get_layer("leaky").negative_slope == pytest.approx(0.1)
    assert m2.get_layer("gap").keepdims is True and m2.get_layer("bn").renorm is True
    assert tuple(m2.output_shape) == (None, 4)
    inp = keras3.Input((6, 6, 3))
    model = keras3.Model(inp, keras3.layers.SpatialDropout2D(0.3, name="sd2")(inp))
    _round_trip(model, _x((6, 6, 3)))


def test_an_option_the_other_keras_lacks_is_refused_with_its_value():
    inp = keras3.Input((4,))
    lora = keras3.Model(inp, keras3.layers.Dense(3, lora_rank=2, name="adapted")(inp))
    with pytest.raises(errors.UnsupportedModelError, match=r"'adapted'.*lora_rank=2"):
        model_io.from_keras3(lora)
    # At its default the option changes nothing and is dropped.
    plain = keras3.Model(inp, keras3.layers.Dense(3, lora_rank=None)(inp))
    _round_trip(plain, _x((4,)))
    ghost = keras.Sequential(
        [keras.Input((4,)), keras.layers.BatchNormalization(virtual_batch_size=2, name="gbn")]
    )
    with pytest.raises(errors.UnsupportedModelError, match=r"'gbn'.*virtual_batch_size=2"):
        model_io.to_keras3(ghost)


def test_a_rebuilt_model_computing_something_else_is_refused(monkeypatch):
    class Triple(keras3.layers.Layer):
        def call(self, x):
            return x * 3.0

    # A wrong user rule: every later check would compare against the rebuilt model.
    monkeypatch.setitem(
        model_io._USER_RULES, "Triple", lambda layer, k: k.layers.Rescaling(2.0, name=layer.name)
    )
    inp = keras3.Input((4,))
    x = keras3.layers.Dense(3, name="d")(inp)
    model = keras3.Model(inp, keras3.layers.Dense(2)(Triple(name="tri")(x)))
    with pytest.raises(
        errors.UnsupportedModelError,
        match=r"does not compute the same function.*first at layer 'tri' \(Triple\)",
    ):
        model_io.from_keras3(model)


def test_an_in_memory_lambda_model_comes_back_in_keras3():
    from pocketflow_tf import interop

    inp = keras3.Input((4,))
    x = keras3.layers.Lambda(lambda t: t * 2.0, name="dbl")(keras3.layers.Dense(3)(inp))
    model = keras3.Model(inp, x)
    m2, came_as_keras3 = interop.to_framework(model)
    back = interop.to_caller(m2, came_as_keras3)
    assert model_io.is_keras3(back) and back.get_layer("dbl").__class__.__name__ == "Lambda"
    x = _x((4,))
    np.testing.assert_allclose(_out(back, x), _out(model, x), atol=1e-6)


def test_a_keras3_h5_file_loads(tmp_path):
    keras3.utils.set_random_seed(4)
    model = keras3.Sequential(
        [keras3.Input((6, 6, 2)), keras3.layers.Conv2D(3, 3), keras3.layers.Flatten()]
    )
    path = str(tmp_path / "k3.h5")
    model.save(path)
    info = model_io.load_model_with_info(path)
    assert info.saved_by_keras3 and info.source_format == "h5"
    x = _x((6, 6, 2))
    np.testing.assert_allclose(_out(info.model, x), _out(model, x), atol=1e-5)


def test_keras3_file_with_operations_loads(tmp_path):
    inp = _conv_input()
    x = keras3.layers.Conv2D(4, 3, activation="hard_silu")(inp)
    x = keras3.layers.Normalization(mean=0.5, variance=2.0)(x + 1.0)
    model = keras3.Model(inp, x)
    path = str(tmp_path / "ops.keras")
    model.save(path)
    x = _x((8, 8, 3))
    loaded = model_io.load_model(path)
    np.testing.assert_allclose(_out(loaded, x), _out(model, x), atol=1e-5)


# -- the keras.applications zoo (slow; `python tests/test_keras3_bridge.py` prints the table)
ZOO = {
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "DenseNet121": 32,
    "NASNetMobile": 32,
    "Xception": 71,  # the smallest input each accepts
    "InceptionV3": 75,
    "ConvNeXtTiny": 32,
    "RegNetX002": 32,  # Keras 3 has no RegNet: only the tf-keras build is bridged
    "RegNetY002": 32,
}
#: Models that rescale 0..255 inputs themselves; the others get inputs in -1..1.
_PREPROCESSING = {"MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetV2B0"}
_PREPROCESSING |= {"ConvNeXtTiny", "RegNetX002", "RegNetY002"}


def _randomize(model, seed=0):
    """weights=None leaves BN statistics, biases and LayerScale constant: perturb them so
    that every path of the graph changes the outputs the comparison sees."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = np.asarray(w)
        if v.size and v.std() == 0:
            noise = rng.standard_normal(v.shape).astype(v.dtype) * 0.1
            w.assign(v + (np.abs(noise) if "variance" in w.name else noise))


def zoo_row(name, tmp_dir):
    """Bridges one architecture every way; returns the max abs output differences."""
    import os

    s = ZOO[name]
    rng = np.random.default_rng(0)
    low, high = (0, 255) if name in _PREPROCESSING else (-1, 1)
    x = rng.uniform(low, high, (2, s, s, 3)).astype(np.float32)
    kw = dict(weights=None, input_shape=(s, s, 3), classes=10, classifier_activation=None)
    row = {"model": name}
    if hasattr(keras3.applications, name):
        m3 = getattr(keras3.applications, name)(**kw)
        _randomize(m3)
        ref = _out(m3, x)
        m2 = model_io.from_keras3(m3)
        row["k3->tfk"] = float(np.abs(_out(m2, x) - ref).max())
        row["tfk->k3"] = float(np.abs(_out(model_io.to_keras3(m2), x) - ref).max())
        path = os.path.join(tmp_dir, f"{name}.keras")
        m3.save(path)
        row["k3 file"] = float(np.abs(_out(model_io.load_model(path), x) - ref).max())
    mt = getattr(keras.applications, name)(**kw)  # tf-keras's own build, the other way
    _randomize(mt)
    ref = _out(mt, x)
    back3 = model_io.to_keras3(mt)
    row["tf-keras app ->k3->tfk"] = max(
        float(np.abs(_out(back3, x) - ref).max()),
        float(np.abs(_out(model_io.from_keras3(back3), x) - ref).max()),
    )
    row["max |y|"] = float(np.abs(ref).max())
    return row


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_bridges_both_ways(name, tmp_path):
    row = zoo_row(name, str(tmp_path))
    diffs = {k: v for k, v in row.items() if k not in ("model", "max |y|")}
    assert diffs and max(diffs.values()) <= 1e-5, row


if __name__ == "__main__":  # the zoo pass table
    import tempfile
    import time

    cols = ["k3->tfk", "tfk->k3", "k3 file", "tf-keras app ->k3->tfk"]
    print("| model | " + " | ".join(cols) + " | max abs diff | s |")
    print("|---" * (len(cols) + 3) + "|")
    for zoo_name in ZOO:
        t0 = time.time()
        try:
            r = zoo_row(zoo_name, tempfile.mkdtemp())
            cells = [
                ("ok" if r[c] <= 1e-5 else "DIFF") if c in r else "no Keras 3 build" for c in cols
            ]
            worst = max(v for k, v in r.items() if k in cols)
            print(
                f"| {zoo_name} | "
                + " | ".join(cells)
                + f" | {worst:.1e} | {time.time() - t0:.0f} |"
            )
        except Exception as e:  # noqa: BLE001  (a row, not a crash, per model)
            print(f"| {zoo_name} | FAILED {type(e).__name__}: {str(e)[:200]} |")


def test_a_mixed_precision_model_is_compared_at_float16_rounding():
    # float16 compute rounds far above float32's 1e-4 of the output scale: a correct
    # mixed_float16 model must not be refused as "computing something else".
    keras3.utils.set_random_seed(5)
    inp = keras3.Input((16, 16, 3))
    x = inp
    for i in range(4):
        x = keras3.layers.Conv2D(16, 3, padding="same", dtype="mixed_float16", name=f"c{i}")(x)
        x = keras3.layers.BatchNormalization(dtype="mixed_float16", name=f"bn{i}")(x)
        x = keras3.layers.ReLU(dtype="mixed_float16", name=f"r{i}")(x)
    x = keras3.layers.GlobalAveragePooling2D(dtype="mixed_float16")(x)
    model = keras3.Model(inp, keras3.layers.Dense(10, dtype="float32", name="logits")(x))
    m2 = model_io.from_keras3(model)
    assert m2.get_layer("c0").compute_dtype == "float16"
    x = _x((16, 16, 3))
    np.testing.assert_allclose(_out(m2, x), _out(model, x), atol=1e-2)


def test_dropout_and_augmentation_follow_the_models_mode_after_the_bridge():
    # Keras 3 records each layer's `training` default in its node (Dropout False, RandomFlip
    # True); passed on, the rebuilt Dropout never dropped in a fine-tune and the rebuilt
    # augmentation layers augmented at inference (the bridge refused them as different).
    keras3.utils.set_random_seed(0)
    L = keras3.layers
    inp = keras3.Input((16, 16, 3))
    h = keras3.Sequential(
        [
            L.RandomFlip("horizontal"),
            L.RandomRotation(0.1),
            L.RandomZoom(0.1),
            L.RandomTranslation(0.1, 0.1),
            L.RandomContrast(0.2),
            L.RandomBrightness(0.2, name="brightness"),
        ],
        name="data_augmentation",
    )(inp)
    h = L.CenterCrop(14, 14)(L.Resizing(18, 18)(h))
    h = L.Conv2D(4, 3, activation="relu")(L.Rescaling(1 / 255)(h))
    h = L.Dropout(0.5, name="drop")(L.GlobalAveragePooling2D()(h))
    model3 = keras3.Model(inp, L.Dense(2)(h))
    x = np.abs(_x((16, 16, 3))) * 100
    m2, _ = _round_trip(model3, x)  # the same function at inference, both ways
    assert {"RandomFlip", "RandomBrightness", "Resizing", "CenterCrop"} <= {
        type(la).__name__ for la in m2.layers
    }
    # In training mode the rebuilt layers still drop and augment.
    drop = m2.get_layer("drop")
    through = keras.Model(drop.input, drop.output)  # the rebuilt node, as it was wired
    ones = np.ones((4, 4), np.float32)
    assert set(np.unique(through(ones, training=True).numpy())) == {0.0, 2.0}
    np.testing.assert_array_equal(through(ones, training=False).numpy(), ones)
    augmented = keras.Model(m2.inputs, m2.get_layer("brightness").output)
    np.testing.assert_allclose(augmented(x, training=False).numpy(), x, atol=1e-5)
    assert not np.allclose(augmented(x, training=True).numpy(), x, atol=1e-3)


def test_a_bridged_dropout_still_drops_in_training():
    # Keras 3 records Dropout's `training=False` default in its node: passed on, the rebuilt
    # Dropout was frozen at inference and never dropped in the learners' fine-tunes.
    keras3.utils.set_random_seed(0)
    inp = keras3.Input((6,))
    h = keras3.layers.Dropout(0.5, name="drop")(keras3.layers.Dense(4)(inp))
    m2 = model_io.from_keras3(keras3.Model(inp, keras3.layers.Dense(2)(h)))
    drop = m2.get_layer("drop")
    through = keras.Model(drop.input, drop.output)
    ones = np.ones((8, 4), np.float32)
    assert set(np.unique(through(ones, training=True).numpy())) == {0.0, 2.0}


def test_constraints_and_penalties_cross_the_bridge_both_ways():
    # They were dropped without a word: a bridged UnitNorm kernel came back from a
    # fine-tune with norms 0.75-0.88, a NonNeg bias negative.
    C, R = keras3.constraints, keras3.regularizers
    inp = keras3.Input((8, 8, 3))
    x = keras3.layers.Conv2D(4, 3, bias_constraint=C.NonNeg(), name="nonneg")(inp)
    x = keras3.layers.Conv2D(
        4,
        3,
        kernel_constraint=C.UnitNorm(axis=[0, 1, 2]),
        kernel_regularizer=R.OrthogonalRegularizer(0.02, mode="columns"),
        name="unit",
    )(x)
    x = keras3.layers.Flatten()(x)
    out = keras3.layers.Dense(
        2, kernel_constraint=C.MinMaxNorm(0.5, 2.0, rate=0.5), bias_regularizer=R.L2(0.01)
    )(x)
    m2, back = _round_trip(keras3.Model(inp, out), np.random.default_rng(0).random((4, 8, 8, 3)))
    for model in (m2, back):
        unit, dense = model.get_layer("unit"), model.layers[-1]
        assert type(model.get_layer("nonneg").bias_constraint).__name__ == "NonNeg"
        assert type(unit.kernel_constraint).__name__ == "UnitNorm"
        assert unit.kernel_constraint.get_config()["axis"] == [0, 1, 2]
        orth = unit.kernel_regularizer.get_config()
        assert orth["factor"] == pytest.approx(0.02) and orth["mode"] == "columns"
        cfg = dense.kernel_constraint.get_config()
        assert (cfg["min_value"], cfg["max_value"], cfg["rate"]) == (0.5, 2.0, 0.5)
        assert float(dense.bias_regularizer.get_config()["l2"]) == pytest.approx(0.01)


def test_a_constraint_the_bridge_cannot_carry_is_refused_by_name():
    class Clip(keras3.constraints.Constraint):
        def __call__(self, w):
            return keras3.ops.clip(w, -1.0, 1.0)

    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Dense(2, kernel_constraint=Clip(), name="clip")(inp))
    with pytest.raises(errors.UnsupportedModelError, match=r"'clip'.*kernel_constraint=.*lost"):
        model_io.from_keras3(model)
