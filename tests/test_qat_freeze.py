"""A trained QAT model frozen to standard layers + FakeQuant: same outputs, in both Keras."""

import keras as keras3
import numpy as np
import pytest

from pocketflow_tf import errors, fake_quant, graph_rebuild, model_io, qat, qat_freeze
from pocketflow_tf.compat import keras

L = keras.layers


def _net(softmax=False):
    """Conv-BN-ReLU, a residual Add, a Concatenate, a depthwise conv with an SE Multiply, on
    8x8x1 -> 4 classes."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    x = L.Rescaling(2.0, offset=-1.0, name="normalize")(inp)
    a = L.Conv2D(8, 3, padding="same", use_bias=False, name="a")(x)
    a = L.ReLU(name="a_relu")(L.BatchNormalization(name="a_bn")(a))
    b = L.Conv2D(8, 1, activation="relu", name="b")(x)
    x = L.Add(name="add")([a, b])
    x = L.Concatenate(name="cat")([x, b])
    d = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    se = L.GlobalAveragePooling2D(keepdims=True)(d)
    se = L.Conv2D(16, 1, activation="sigmoid", name="se")(se)
    x = L.Multiply(name="se_mul")([d, se])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, activation="softmax" if softmax else None, name="fc")(x))


@pytest.fixture(scope="module")
def trained(tiny_data_module):
    """Trained QAT models: logits head with 3-bit 'a' and 4-bit 'fc', and a softmax head."""
    x, y = tiny_data_module
    out = {}
    for softmax in (False, True):
        q = qat.quantize_model(
            _net(softmax), weight_bits={"a": 3, "fc": 4} if not softmax else None
        )
        q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
        q.fit(x, y, epochs=2, batch_size=32, verbose=0)
        out[softmax] = q
    return out


@pytest.fixture(scope="module")
def tiny_data_module():
    rng = np.random.default_rng(0)
    return rng.random((128, 8, 8, 1), dtype=np.float32), rng.integers(0, 4, 128)


@pytest.mark.parametrize("softmax", [False, True])
def test_frozen_model_equals_the_qat_model_in_both_keras(softmax, trained, tiny_data_module):
    q = trained[softmax]
    x = tiny_data_module[0]
    frozen = qat_freeze.freeze(q)
    assert not qat.is_quantized(frozen)
    kinds = [type(layer).__name__ for layer in frozen.layers]
    # One FakeQuant on the input, after each activation/output TFMOT quantizes.
    assert kinds[:3] == ["InputLayer", "FakeQuant", "Rescaling"] and kinds.count("FakeQuant") >= 6
    want = q.predict(x, verbose=0)
    np.testing.assert_allclose(frozen.predict(x, verbose=0), want, atol=1e-6)
    m3 = model_io.to_keras3(frozen)
    np.testing.assert_allclose(np.asarray(m3(x)), want, atol=1e-6)
    if softmax:
        np.testing.assert_allclose(np.asarray(m3(x)).sum(axis=1), 1.0, atol=1e-5)
    back = model_io.from_keras3(m3)  # and back: FakeQuant bridges both ways
    np.testing.assert_allclose(back.predict(x, verbose=0), want, atol=1e-6)


def test_frozen_weights_hold_the_learned_low_bit_levels(trained):
    frozen = qat_freeze.freeze(trained[False])
    kernel = frozen.get_layer("a").get_weights()[0]
    # 3 bits: at most 7 levels per output channel, on the int8 grid of that channel.
    for c in range(kernel.shape[-1]):
        assert len(np.unique(kernel[..., c])) <= 7
    assert len(np.unique(frozen.get_layer("fc").get_weights()[0])) <= 15


def test_frozen_model_saves_and_loads_in_both_keras(trained, tiny_data_module, tmp_path):
    x = tiny_data_module[0][:16]
    frozen = qat_freeze.freeze(trained[True])
    path = str(tmp_path / "frozen.keras")
    model_io.save_model(frozen, path)
    again = model_io.load_model(path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), frozen.predict(x, verbose=0))
    m3 = model_io.to_keras3(frozen)
    m3.save(tmp_path / "k3.keras")
    loaded = keras3.saving.load_model(tmp_path / "k3.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(m3(x)))


def test_a_frozen_form_that_disagrees_is_refused(trained, monkeypatch):
    real = qat_freeze._fake_quant

    def coarse(quantizer, qvars, name):  # every activation range on 2 bits: wrong outputs
        step = real(quantizer, qvars, name)
        if step is None:
            return None
        return fake_quant.FakeQuant(step.minimum, step.maximum, 2, step.narrow_range, name=name)

    monkeypatch.setattr(qat_freeze, "_fake_quant", coarse)
    with pytest.raises(errors.UnsupportedModelError, match="differs from it by"):
        qat_freeze.freeze(trained[False])


def test_freeze_refuses_what_it_cannot_freeze():
    plain = _net()
    with pytest.raises(errors.InvalidArgumentError, match="model"):
        qat_freeze.freeze(plain)
    with pytest.raises(errors.UnsupportedModelError, match="odd_layer.*object"):
        qat_freeze._fake_quant(object(), None, "odd_layer")


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"minimum": [0.0, 1.0], "maximum": 1.0}, "minimum/maximum"),
        ({"minimum": [0.0], "maximum": [1.0, 2.0]}, "minimum/maximum"),
        ({"minimum": 0.0, "maximum": 1.0, "num_bits": 1}, "num_bits"),
        ({"minimum": 0.0, "maximum": 1.0, "num_bits": True}, "num_bits"),
    ],
)
def test_fake_quant_refuses_bad_arguments(kwargs, bad):
    for cls in (fake_quant.FakeQuant, fake_quant.FakeQuant3):
        with pytest.raises(errors.InvalidArgumentError, match=bad):
            cls(**kwargs)


def test_fake_quant_per_channel_matches_tensorflow():
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(2, 3, 3, 2)).astype(np.float32)
    fq = fake_quant.FakeQuant([-1.0, -0.5], [1.0, 0.25], num_bits=4, narrow_range=True)
    want = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, [-1.0, -0.5], [1.0, 0.25], num_bits=4, narrow_range=True
    )
    np.testing.assert_array_equal(fq(x).numpy(), want.numpy())
    twin = fake_quant.FakeQuant3(**{k: fq.get_config()[k] for k in fake_quant._ARGS})
    np.testing.assert_array_equal(np.asarray(twin(x)), want.numpy())


def _zoo_like_net():
    """What keras.applications puts in the way of TFMOT: a tf op with a constant (hard-swish's
    `x + 3`), a pre-activation BatchNormalization, a BatchNormalization after a grouped
    convolution, a nested Sequential stem, and a layer class from outside keras.layers."""

    @keras.utils.register_keras_serializable(package="pftf_test")
    class Scale(L.Layer):
        def build(self, shape):
            self.gamma = self.add_weight(name="gamma", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gamma

    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 3))
    stem = keras.Sequential([L.Conv2D(8, 3, padding="same", name="stem_conv")], name="stem")
    x = stem(inp)
    x = L.Multiply(name="hswish")([x, L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])
    y = L.BatchNormalization(name="preact_bn")(x)
    y = L.Conv2D(8, 3, padding="same", groups=2, use_bias=False, name="grouped")(L.ReLU()(y))
    y = L.BatchNormalization(name="grouped_bn")(y)
    x = Scale(name="scale")(L.Add(name="add")([x, y]))
    x = L.BatchNormalization(name="c_bn")(L.Conv2D(8, 1, use_bias=False, name="c")(x))
    x = L.GlobalAveragePooling2D()(L.ReLU()(x))
    return keras.Model(inp, L.Dense(4, name="fc")(x))


def test_quantize_model_takes_what_keras_applications_hold():
    model = _zoo_like_net()
    q = qat.quantize_model(model)
    kinds = {type(layer).__name__ for layer in q.layers}
    assert "Sequential" not in kinds and "TFOpLambda" in kinds  # stem inlined, op unwrapped
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(x, np.arange(8) % 4, epochs=1, verbose=0)  # it trains
    frozen = qat_freeze.freeze(q, x)
    np.testing.assert_allclose(frozen.predict(x, verbose=0), q.predict(x, verbose=0), atol=1e-6)
    # Only a BatchNormalization right after a plain convolution is left to TFMOT's fold;
    # the others are annotated to run in float (TFMOT refuses or breaks on them).
    flat = graph_rebuild.inline_nested(model)
    folded = {
        n: qat._folded_by_transforms(flat.get_layer(n)) for n in ("preact_bn", "grouped_bn", "c_bn")
    }
    assert folded == {"preact_bn": False, "grouped_bn": False, "c_bn": True}
    # The float model's outputs are kept by the inlining (QAT's ranges start untrained).
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_frozen_keras3_model_exports_verified_tflite(trained, tiny_data_module, tmp_path):
    from pocketflow_tf import tflite_verify

    rng = np.random.default_rng(5)  # verification takes >= 200 samples
    x, y = rng.random((256, 8, 8, 1), dtype=np.float32), rng.integers(0, 4, 256)
    q = trained[False]
    m3 = model_io.to_keras3(qat_freeze.freeze(q))
    res = tflite_verify.export_tflite(
        m3, str(tmp_path / "f.tflite"), mode="float", x_verify=x, y_verify=y
    )
    out = tflite_verify.TFLiteRunner(res.path).predict(x, batch_size=64)
    np.testing.assert_allclose(out, q.predict(x, verbose=0), atol=1e-5)
    # int8: the FakeQuant ranges are taken as QAT ranges; export_tflite verifies the file.
    res8 = tflite_verify.export_tflite(
        m3, str(tmp_path / "q.tflite"), mode="int8", x_verify=x, y_verify=y,
        representative_data=x[:64],
    )  # fmt: skip
    assert res8.path.endswith("q.tflite")
