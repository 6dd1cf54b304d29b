"""Non-uniform quantization (weight clustering): codebooks in Keras and in the files, storage,
accuracy, cluster-preserving int8, and option checks before training."""

import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import (
    distillation,
    errors,
    learner,
    model_io,
    qat,
    tflite_export,
    tflite_verify,
    training,
)
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.non_uniform import NonUniformQuantLearner, options, storage
from pocketflow_tf.learners.product_quant import compact_export
from tests.tiny_models import quadrant_data

L = keras.layers


def net(seed=0):
    """Rescaling, conv-BN (first), conv-BN, depthwise, 1x1 conv with bias, logits.

    Kernel shapes are all different, so a test can find each one in a .tflite file by shape.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.Rescaling(2.0, offset=-1.0, name="normalize")(inp)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="c2")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn2")(x))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(16, 1, name="c3")(x)
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    return keras.Model(inp, L.Dense(4, name="logits")(x))


@pytest.fixture(scope="module")
def data():
    return quadrant_data(seed=0), quadrant_data(seed=1)


@pytest.fixture(scope="module")
def trained(data):
    (x, y), _ = data
    m = net()
    m.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(True))
    m.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return m


def fine_tune(epochs=2):
    return training.TrainConfig(
        epochs=epochs, batch_size=32, learning_rate=0.01, optimizer="adam", weight_decay=0.0
    )


@pytest.fixture(scope="module")
def clustered(trained, data):
    """4 clusters (2 bits), PocketFlow's default first/last policy, float deployment."""
    (x, y), _ = data
    before = [w.copy() for w in trained.get_weights()]
    lrn = NonUniformQuantLearner(
        fine_tune(), nuql_weight_bits=2, nuql_report_tflite=False, verbose=0
    )
    out = lrn.fit(trained, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights(), strict=True))
    return lrn, out


@pytest.fixture(scope="module")
def int8_run(trained, data, tmp_path_factory):
    """8 clusters, every layer, CQAT to int8, distilled from the input model, checkpointed."""
    (x, y), _ = data
    ckpt = str(tmp_path_factory.mktemp("nuq") / "ckpt")
    lrn = NonUniformQuantLearner(
        fine_tune(),
        nuql_weight_bits=3,
        nuql_quantize_all_layers=True,
        nuql_int8=True,
        distillation=distillation.DistillationConfig(weight=1.0, temperature=2.0),
        checkpoint_dir=ckpt,
        verbose=0,
    )
    return lrn, lrn.fit(trained, x, y), ckpt


def file_kernels(path):
    """{TFLite shape: array} of every constant 4-D/2-D tensor of a .tflite, read from the file."""
    interp = Interpreter(model_path=str(path))
    found = {}
    for d in interp.get_tensor_details():
        try:
            value = interp.get_tensor(d["index"])
        except ValueError:
            continue  # not a constant
        if value.ndim in (2, 4) and value.size > 16:
            found.setdefault(tuple(value.shape), []).append(value)
    return found


def per_channel_distinct(a, axis=0):
    return max(np.unique(np.take(a, c, axis=axis)).size for c in range(a.shape[axis]))


# -- float deployment -------------------------------------------------------------------------
def test_clustered_kernels_hold_at_most_2_pow_bits_values(clustered):
    lrn, out = clustered
    assert not any("Cluster" in type(layer).__name__ for layer in out.layers)  # stripped
    assert [p.name for p in lrn.plan.clustered] == ["c2", "c3"]
    for name in ("c2", "c3"):
        kernel = out.get_layer(name).kernel.numpy()
        n = np.unique(kernel).size
        assert 2 <= n <= 4, (name, n)
        assert {k.name: k.distinct for k in lrn.report.keras_kernels}[f"{name}/kernel"] == n
    # Unclustered layers are listed with their reason.
    fallback = lrn.report.float_fallback
    assert [f.split(" ")[0] for f in fallback] == ["c1", "bn1", "bn2", "dw", "logits"]
    assert "first clusterable layer" in fallback[0] and "last clusterable layer" in fallback[-1]
    assert "DepthwiseConv2D" in fallback[3] and "BatchNormalization" in fallback[1]
    assert np.unique(out.get_layer("c1").kernel.numpy()).size > 4  # really left float


def test_float_tflite_keeps_the_codebooks_and_verifies(clustered, data, tmp_path):
    lrn, out = clustered
    _, (xt, yt) = data
    res = tflite_verify.export_tflite(
        out, tmp_path / "m.float.tflite", mode="float", x_verify=xt, y_verify=yt
    )
    assert res.report.passed and res.report.max_abs_diff < 1e-4
    stored = file_kernels(res.path)
    # c3 (1x1 conv, bias, no BatchNorm after it) is stored as is: <= 4 values in total.
    (c3,) = stored[(16, 1, 1, 16)]
    assert np.unique(c3).size <= 4
    np.testing.assert_array_equal(c3, out.get_layer("c3").kernel.numpy().transpose(3, 0, 1, 2))
    # c2 has bn2 folded into it by the converter: each output channel is rescaled, so the
    # file keeps <= 4 values per output channel (and more in total).
    (c2,) = stored[(16, 3, 3, 8)]
    assert per_channel_distinct(c2) <= 4 < np.unique(c2).size
    # The learner's own reading of the file says the same.
    got = {k.name: k for k in lrn.inspect_tflite(res.path)}
    assert got["c3/kernel"].distinct == np.unique(c3).size and got["c3/kernel"].stored_as_is
    assert got["c2/kernel"].max_per_channel == per_channel_distinct(c2)
    assert not got["c2/kernel"].stored_as_is and not got["c2/kernel"].within_limit


def test_compact_tflite_stores_indices_and_centroids_and_verifies(clustered, data):
    # The product-quantization compact export takes clustered kernels as codes + codebook
    # (g indices per byte); c2's folded BatchNorm becomes a per-channel MUL in the graph.
    lrn, out = clustered
    _, (xt, yt) = data
    codes = {
        p.name: compact_export.cluster_code(p.name, out.get_layer(p.name).kernel.numpy())
        for p in lrn.plan.clustered
    }
    content = compact_export.compact_tflite(out, codes)
    report = tflite_verify.verify(out, content, xt, yt, mode="float", check_child=False)
    assert report.top1_agreement == 1.0 and report.max_abs_diff < 1e-4
    assert len(content) < len(tflite_export.convert(out, "float"))


def test_cluster_compact_export_codes_exactly_the_clustered_layers(
    clustered, trained, data, tmp_path
):
    # The learner's own export mode: the clustered layers are found by their kernels (the
    # float first and last layers stay dense), verified in LiteRT, written with a checksum.
    lrn, out = clustered
    _, (xt, yt) = data
    codes = compact_export.cluster_codes(out)
    assert sorted(codes) == sorted(p.name for p in lrn.plan.clustered)
    res = NonUniformQuantLearner.export_file(
        "cluster-compact", out, tmp_path / "m.tflite", prefix="unused", x_verify=xt, y_verify=yt
    )
    assert res.report.passed and res.report.top1_agreement == 1.0
    assert res.bytes < len(tflite_export.convert(out, "float"))
    with pytest.raises(errors.InvalidArgumentError, match="pq-compact"):
        NonUniformQuantLearner.export_file(
            "pq-compact", out, tmp_path / "x.tflite", prefix="unused", x_verify=xt
        )
    with pytest.raises(errors.InvalidArgumentError, match="clustered Conv2D/Dense"):
        compact_export.export_clustered(trained, tmp_path / "y.tflite", x_verify=xt)


def test_storage_equals_a_hand_computation(clustered, trained):
    lrn, _ = clustered
    rows = {r.name: r for r in lrn.report.storage.layers}
    # c3: 1x1x16x16 kernel = 256 weights at 2 bits, bit-packed = 64 bytes; 4 float32
    # centroids = 16 bytes; its 16 biases stay float32 = 64 bytes.
    c3 = rows["c3"]
    assert (c3.index_bytes, c3.codebook_bytes, c3.float_bytes) == (64, 16, 64)
    assert c3.total_bytes == 144 and c3.float32_bytes == (256 + 16) * 4
    # Float layers count at float32: bn1 holds 4 x 8 values (gamma, beta, mean, variance).
    assert rows["bn1"].total_bytes == rows["bn1"].float32_bytes == 4 * 8 * 4
    total = lrn.report.storage
    assert total.float32_bytes == 4 * trained.count_params()
    assert total.total_bytes == sum(r.total_bytes for r in total.layers) < total.float32_bytes
    assert storage.packed_index_bytes(1152, 2) == rows["c2"].index_bytes == 288


def test_accuracy_stays_near_the_float_model(clustered, trained, data):
    _, out = clustered
    _, (xt, yt) = data
    before = training.evaluate_accuracy(trained, xt, yt)
    after = training.evaluate_accuracy(out, xt, yt)
    print(f"held-out accuracy: float {before:.4f}, 4 clusters {after:.4f}")
    assert before > 0.9 and after >= before - 0.03


# -- int8 deployment --------------------------------------------------------------------------
def test_int8_export_keeps_codebooks_per_channel_and_verifies(int8_run, data, tmp_path):
    lrn, out, ckpt = int8_run
    (x, _), (xt, yt) = data
    assert qat.is_quantized(out) and lrn.deploy_modes == ("int8",)
    assert lrn.teacher is None and not os.path.exists(ckpt)  # restored; backups cleaned up
    assert training.evaluate_accuracy(out, xt, yt) > 0.9
    res = tflite_verify.export_tflite(
        out,
        tmp_path / "m.int8.tflite",
        mode="int8",
        x_verify=xt,
        y_verify=yt,
        representative_data=x,
    )
    assert res.report.passed
    # Read back from the file: convolutions are quantized per output channel (and have
    # their BatchNorm folded), Dense per tensor; CQAT keeps <= 8 values in each.
    stored = file_kernels(res.path)
    for shape in ((8, 3, 3, 1), (16, 3, 3, 8), (16, 1, 1, 16)):
        (k,) = stored[shape]
        assert k.dtype == np.int8 and per_channel_distinct(k) <= 8, shape
    (fc,) = stored[(4, 64)]
    assert fc.dtype == np.int8 and np.unique(fc).size <= 8
    got = {k.name: k for k in lrn.inspect_tflite(res.path, out)}
    assert set(got) == {"c1/kernel", "c2/kernel", "c3/kernel", "logits/kernel"}
    assert all(k.dtype == "int8" and k.within_limit_per_channel for k in got.values())
    assert got["logits/kernel"].within_limit
    # The report measured the same from its own conversions.
    rep = lrn.report
    assert rep.tflite_int8 is not None and rep.tflite_float is not None
    assert all(k.within_limit_per_channel for k in rep.tflite_int8.kernels + rep.qat_kernels)
    assert rep.tflite_float.bytes_gzip < rep.tflite_float.baseline_bytes_gzip
    print(rep.table())


def test_int8_model_round_trips_h5(int8_run, data, tmp_path):
    _, out, _ = int8_run
    _, (xt, _) = data
    path = tmp_path / "m.h5"
    model_io.save_model(out, path)
    back = model_io.load_model(path)
    np.testing.assert_allclose(back.predict(xt[:32], verbose=0), out.predict(xt[:32], verbose=0))


# -- options, registration, refusals ------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"nuql_weight_bits": 0}, "nuql_weight_bits"),
        ({"nuql_weight_bits": 9}, "nuql_weight_bits"),
        ({"nuql_weight_bits": True}, "nuql_weight_bits"),
        ({"nuql_weight_bits": 4.0}, "nuql_weight_bits"),
        ({"nuql_init_style": "kmeans"}, "nuql_init_style"),
        ({"nuql_int8": "yes"}, "nuql_int8"),
        ({"nuql_int8_epochs": 0}, "nuql_int8_epochs"),
        ({"nuql_quantize_all_layers": 1}, "nuql_quantize_all_layers"),
    ],
)
def test_bad_options_name_the_option(kwargs, name):
    with pytest.raises(errors.InvalidArgumentError) as e:
        NonUniformQuantLearner(**kwargs)
    value = next(iter(kwargs.values()))
    assert e.value.name == name and e.value.value == value and e.value.accepted


def test_init_styles_and_registration():
    assert learner.get_learner_class("non-uniform") is NonUniformQuantLearner
    assert NonUniformQuantLearner(nuql_init_style="quantile").nuql_init_style == "density"
    assert options.centroid_init("kmeans_plus_plus").name == "KMEANS_PLUS_PLUS"
    assert {options.centroid_init(s).name for s in options.INIT_STYLES} == {
        "KMEANS_PLUS_PLUS",
        "LINEAR",
        "DENSITY_BASED",
        "RANDOM",
    }
    assert NonUniformQuantLearner.deployment(nuql_int8=True) == (("int8",), ".h5")
    assert NonUniformQuantLearner().save_extension == ".keras"


def refused_before_training(model, data, **kwargs):
    (x, y), _ = data
    lrn = NonUniformQuantLearner(fine_tune(1), verbose=0, **kwargs)
    with pytest.raises(errors.InvalidArgumentError) as e:
        lrn.fit(model, x, y)
    assert lrn.history is None  # nothing trained
    return e.value


def test_model_without_clusterable_layer_is_refused_before_training(data):
    only_float = keras.Sequential(
        [keras.Input((8, 8, 1)), L.DepthwiseConv2D(3), L.BatchNormalization(), L.Flatten()]
    )
    err = refused_before_training(only_float, data, nuql_quantize_all_layers=True)
    assert err.name == "model" and "DepthwiseConv2D" in str(err)
    # A net whose only kernel layers are the first and last one: say which option helps.
    two = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3), L.Flatten(), L.Dense(4)])
    err = refused_before_training(two, data)
    assert err.name == "model" and "nuql_quantize_all_layers" in str(err)


def test_layer_int8_cannot_quantize_is_refused_before_training(data):
    m = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Conv2D(4, 3), L.Conv2DTranspose(4, 3), L.Flatten(), L.Dense(4)]
    )
    err = refused_before_training(m, data, nuql_int8=True, nuql_quantize_all_layers=True)
    assert err.name == "nuql_int8" and "Conv2DTranspose" in str(err)
