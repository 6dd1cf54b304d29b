"""int4 kernels in the .tflite through litert-quantizer (pocketflow_tf.int4_export)."""

import numpy as np
import pytest

from pocketflow_tf import errors, int4_export, qat, qat_freeze, tflite_export, tflite_load
from pocketflow_tf.compat import keras
from tests.tiny_models import quadrant_data

L = keras.layers
BITS = {"conv": 4, "dw": 4, "fc": 3, "logits": 8}


@pytest.fixture(scope="module")
def trained():
    """Conv -> depthwise -> pool -> Dense -> Dense logits, trained on the quadrant task."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = L.Flatten()(L.MaxPooling2D(4, name="pool")(x))
    x = L.Dense(16, activation="relu", name="fc")(x)
    model = keras.Model(inp, L.Dense(4, name="logits")(x))
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    x_train, y_train = quadrant_data(512, seed=0)
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    return model, x_train[:256], quadrant_data(300, seed=1)


@pytest.fixture(scope="module")
def exported(trained):
    model, calib, (x_val, y_val) = trained
    return int4_export.export(model, BITS, calib, x_val, y_val)


def test_low_bit_layers_are_int4_in_the_file_and_verified(exported):
    stored = {s.layer: (s.op, s.stored) for s in exported.layers}
    assert stored == {
        "conv": ("CONV_2D", "INT4"),
        "dw": ("DEPTHWISE_CONV_2D", "INT8"),
        "fc": ("FULLY_CONNECTED", "INT4"),
        "logits": ("FULLY_CONNECTED", "INT8"),
    }
    # Read independently from the bytes: int4 packs two weights a byte.
    types = {
        name.split("/")[1]: (t, n) for _, name, t, n in int4_export.kernel_types(exported.content)
    }
    assert types["conv"] == ("INT4", 8 * 3 * 3 * 1 // 2)
    assert types["fc"] == ("INT4", 16 * 32 // 2)
    assert types["logits"] == ("INT8", 4 * 16)
    assert exported.report.passed and exported.report.top1_agreement >= 0.95
    assert exported.report.child_process_ok


def test_depthwise_fallback_is_named_with_its_reason(exported):
    (fallback,) = exported.fallbacks
    assert fallback.layer == "dw" and fallback.bits == 4 and fallback.stored == "INT8"
    assert "DEPTHWISE_CONV_2D has no int4 kernel" in fallback.fallback
    assert exported.to_dict()["fallbacks"] == ["dw"]


def test_fallbacks_are_logged_once_per_reason_not_per_layer(caplog):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    x = L.DepthwiseConv2D(3, padding="same", name="dw1")(inp)
    x = L.DepthwiseConv2D(3, padding="same", name="dw2")(x)
    model = keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(x)))
    calib = np.random.default_rng(0).random((32, 8, 8, 2), dtype=np.float32)
    with caplog.at_level("WARNING", logger=int4_export.logger.name):
        out = int4_export.convert(model, 4, calib)
    assert [s.layer for s in out.fallbacks] == ["dw1", "dw2"]
    lines = [r.getMessage() for r in caplog.records if r.name == int4_export.logger.name]
    assert len(lines) == 1, lines
    assert "DEPTHWISE_CONV_2D has no int4 kernel" in lines[0] and "2 layer(s): dw1, dw2" in lines[0]


def test_int4_levels_read_back_and_file_smaller_than_int8(trained, exported):
    model, calib, _ = trained
    interp = tflite_load.open_interpreter(exported.content)
    kernels = {
        d["name"].split("/")[1]: interp.get_tensor(d["index"])
        for d in interp.get_tensor_details()
        if d["name"].endswith(("/Conv2D", "/MatMul"))
    }
    # LiteRT unpacks int4 to int8 values: symmetric levels -7..7, the largest used per channel.
    for layer in ("conv", "fc"):
        k = kernels[layer].reshape(len(kernels[layer]), -1)
        assert k.min() >= -7 and k.max() <= 7
        assert np.all(np.abs(k).max(axis=1) == 7)
    int8 = tflite_export.convert(model, "int8", representative_data=calib)
    raw8, gz8 = tflite_export.tflite_size(int8)
    assert (exported.bytes, exported.bytes_gzip) == tflite_export.tflite_size(exported.content)
    assert exported.bytes < raw8 and exported.bytes_gzip < gz8


@pytest.mark.parametrize(
    ("bits", "match"),
    [
        ({"nope": 4}, "names of layers with a weight kernel"),
        ({"pool": 4}, "names of layers with a weight kernel"),
        ({"conv": 1}, r"bits in \(2, 3, 4, 5, 6, 7, 8\)"),
        ({"conv": 9}, "bits in"),
        ({"conv": "4"}, "bits in"),
        ({"conv": True}, "bits in"),
        ([("conv", 4)], "a mapping"),
    ],
)
def test_bad_bit_allocations_are_refused(trained, bits, match):
    model, calib, _ = trained
    with pytest.raises(errors.InvalidArgumentError, match=match):
        int4_export.convert(model, bits, calib)


def test_bad_calibration_data_is_refused(trained):
    model, _, _ = trained
    with pytest.raises(errors.InvalidArgumentError, match="representative_data"):
        int4_export.convert(model, {"conv": 4}, np.zeros((4, 8, 8), np.float32))


def test_none_bits_needs_a_qat_model(trained):
    model, calib, _ = trained
    with pytest.raises(errors.InvalidArgumentError, match="None only for a QAT model"):
        int4_export.convert(model, None, calib)


@pytest.fixture(scope="module")
def qat_model():
    """Conv-BN-ReLU -> pool -> Dense -> logits, QAT with 4-bit conv and fc, briefly trained."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.Flatten()(L.MaxPooling2D(4, name="pool")(x))
    x = L.Dense(16, activation="relu", name="fc")(x)
    model = qat.quantize_model(
        keras.Model(inp, L.Dense(4, name="logits")(x)), weight_bits={"conv": 4, "fc": 4}
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*quadrant_data(512, seed=0), epochs=3, batch_size=32, verbose=0)
    return model


def test_qat_model_keeps_its_learned_levels_in_the_file(qat_model):
    x_val, y_val = quadrant_data(300, seed=1)
    out = int4_export.export(qat_model, None, quadrant_data(256, seed=0)[0], x_val, y_val)
    assert [(s.layer, s.bits, s.stored) for s in out.layers] == [
        ("conv", 4, "INT4"),
        ("fc", 4, "INT4"),
        ("logits", 8, "INT8"),
    ]
    assert out.report.passed  # against the QAT model itself
    # The fake-quant steps are not carried into the file as QUANTIZE / DEQUANTIZE ops.
    interp = tflite_load.open_interpreter(out.content)
    assert [o["op_name"] for o in interp._get_ops_details()] == [
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
    ]
    kernels = {name for _, name, _, _ in int4_export.kernel_types(out.content)}
    stored = {
        d["name"].split("/")[1]: interp.get_tensor(d["index"])
        for d in interp.get_tensor_details()
        if d["name"] in kernels
    }
    frozen = qat_freeze.freeze(qat_model)
    # The QAT levels: per output channel for the convolution (BatchNorm folds per channel in
    # the file), one range for the Dense kernel.
    for layer, per_channel in (("conv", True), ("fc", False)):
        w = frozen.get_layer(layer).get_weights()[0]
        axes = tuple(range(w.ndim - 1)) if per_channel else None
        levels = np.round(w / np.abs(w).max(axis=axes, keepdims=per_channel) * 7)
        k = stored[layer]
        k = np.moveaxis(k, 0, -1) if k.ndim == 4 else k.T
        np.testing.assert_array_equal(k, levels)


def test_qat_bits_that_differ_from_the_model_are_refused(qat_model):
    with pytest.raises(errors.InvalidArgumentError, match="QAT model's own allocation"):
        int4_export.convert(qat_model, {"conv": 3}, quadrant_data(16, seed=0)[0])


def test_calibration_data_of_the_wrong_kind_is_refused_or_scaled():
    """NaN calibration images are refused by name (shared with the int8 converter); uint8
    images are scaled to [0, 1] as the model is fed, so both dtypes give one file."""
    from pocketflow_tf.compat import keras

    m = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="fc"),
        ]
    )
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    for convert in (
        lambda d: int4_export.convert(m, 4, d),
        lambda d: tflite_export.convert(m, "int8", representative_data=d),
    ):
        with pytest.raises(errors.InvalidArgumentError, match="representative_data.*NaN"):
            convert(bad)
    as_uint8 = np.round(x * 255).astype(np.uint8)
    scaled = as_uint8.astype(np.float32) / 255
    assert int4_export.convert(m, 4, as_uint8).content == int4_export.convert(m, 4, scaled).content
