"""Product quantization ("And the Bit Goes Down"): EM maths, averaged codeword gradients,
the learner end to end (structure, exact size, accuracy, BatchNorm, storage, TFLite), options."""

import doctest
import os

import numpy as np
import pytest
from sklearn.cluster import KMeans

from pocketflow_tf import batchnorm, errors, learner, tflite_export, tflite_verify, training
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners import product_quant
from pocketflow_tf.learners.product_quant import (
    compact_export,
    layers,
    plan,
    pq,
    sampling,
    storage,
)
from pocketflow_tf.learners.product_quant import learner as pq_learner
from pocketflow_tf.learners.product_quant.learner import ProductQuantLearner
from tests.tiny_models import quadrant_data, two_conv_net

# -- EM maths ----------------------------------------------------------------------------


def block_inputs(rng, n, m, d, scales):
    """Inputs whose blocks are independent, each with the same anisotropic covariance."""
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    z = rng.normal(size=(n, m, d)) * scales
    return (z @ basis.T).reshape(n, m * d)


def test_em_is_exact_when_codewords_cover_the_distinct_subvectors():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(20, 9))
    # 4 blocks x 15 outputs = 60 sub-vectors drawn from 20 distinct ones.
    sub = distinct[rng.integers(0, 20, size=(4, 15))]
    sub[0, :5] = distinct[np.arange(5)]  # make sure several are used more than once
    grams = pq.block_grams(block_inputs(rng, 500, 4, 9, np.linspace(3, 0.1, 9)), 9)
    n_distinct = len(np.unique(sub.reshape(-1, 9), axis=0))
    for k in (n_distinct, 32):
        res = pq.em(sub, grams, k=k, n_iter=10)
        np.testing.assert_allclose(res.codebook[res.codes], sub, atol=1e-9)
        assert res.objective[-1] < 1e-12
        assert res.empty_left == k - n_distinct  # spare codewords: nothing to split


def test_activation_weighted_em_beats_plain_kmeans_on_the_output_error():
    rng = np.random.default_rng(1)
    m, cout, d, k = 8, 32, 4, 8
    # Strongly anisotropic inputs: weight error along the small directions hardly matters.
    x = block_inputs(rng, 4000, m, d, np.array([10.0, 3.0, 0.3, 0.03]))
    kernel = rng.normal(size=(m * d, cout))
    sub = pq.columns_to_subvectors(kernel, d)
    target = x @ kernel

    weighted = pq.em(sub, pq.block_grams(x, d), k=k, n_iter=50, seed=0)
    err_weighted = pq.output_error(
        x, target, pq.subvectors_to_columns(weighted.codebook[weighted.codes])
    )
    # The objective never goes up (E and M steps each minimise it).
    assert all(
        b <= a * (1 + 1e-9)
        for a, b in zip(weighted.objective, weighted.objective[1:], strict=False)
    )

    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(sub.reshape(-1, d))
    plain = km.cluster_centers_[km.labels_].reshape(sub.shape)
    err_plain = pq.output_error(x, target, pq.subvectors_to_columns(plain))
    ours_unweighted = pq.em(sub, None, k=k, n_iter=50)  # grams=None: our plain k-means
    err_ours_plain = pq.output_error(
        x, target, pq.subvectors_to_columns(ours_unweighted.codebook[ours_unweighted.codes])
    )
    assert err_weighted < 0.5 * err_plain, (err_weighted, err_plain)
    assert err_weighted < 0.5 * err_ours_plain, (err_weighted, err_ours_plain)


def test_empty_clusters_are_reseeded_from_duplicated_codewords():
    rng = np.random.default_rng(2)
    sub = rng.normal(size=(6, 20, 9))
    grams = pq.block_grams(rng.normal(size=(300, 54)), 9)
    init = np.repeat(sub[:1, 0], 16, axis=0)  # 16 identical codewords: 15 empty clusters
    assert len(np.unique(pq.assign(sub, grams, init))) == 1
    res = pq.em(sub, grams, k=16, n_iter=20, init=init)
    assert res.empty_resolved >= 15 and res.empty_left == 0
    assert np.bincount(res.codes.ravel(), minlength=16).min() > 0  # none empty at the end
    assert len(np.unique(res.codebook, axis=0)) == 16


def test_codes_pack_to_exactly_log2_k_bits():
    rng = np.random.default_rng(3)
    for bits in (1, 3, 8, 11, 16):
        codes = rng.integers(0, 2**bits, size=(7, 13))
        packed = storage.pack_codes(codes, bits)
        assert packed.dtype == np.uint8 and packed.size == -(-codes.size * bits // 8)
        np.testing.assert_array_equal(storage.unpack_codes(packed, bits, codes.shape), codes)


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=3, strides=2, padding="same"),
        dict(kernel_size=(2, 3), strides=1, padding="same"),
        dict(kernel_size=3, dilation_rate=2, padding="valid"),
        dict(kernel_size=1, strides=2, padding="same"),
    ],
)
def test_sampled_rows_times_the_columns_give_the_layer_output(conv):
    rng = np.random.default_rng(5)
    inp = keras.Input((9, 9, 3))
    layer = keras.layers.Conv2D(4, use_bias=False, name="c", **conv)
    model = keras.Model(inp, layer(inp))
    x = rng.random((2, 9, 9, 3)).astype("float32")
    rows = sampling._rows(layer, x)  # every position, in the column order of pq
    got = rows @ pq.kernel_to_columns(layer.get_weights()[0])
    want = model.predict(x, verbose=0).reshape(2, -1, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- averaged codeword gradients ------------------------------------------------------------


def test_codeword_update_is_the_mean_of_its_subvectors_gradients():
    rng = np.random.default_rng(4)
    k, d = 4, 9
    codebook = rng.normal(size=(k, d)).astype("float32")
    codes = np.array([[0, 0, 0, 1, 2, 0], [1, 0, 2, 2, 0, 0]])  # codeword 3 is unused
    x = tf.constant(rng.normal(size=(3, 6, 6, 2)).astype("float32"))

    layer = layers.PQConv2D(6, 3, pq_codebook_size=k, pq_block_size=d, use_bias=False)
    layer.build(x.shape)
    layer.codebook.assign(codebook)
    layer.codes.assign(codes.astype("int32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x)))
    g_codebook = tape.gradient(loss, layer.codebook).numpy()

    # Reference: the gradient w.r.t. the dense decoded kernel, cut into sub-vectors.
    kernel = tf.Variable(pq.decode(codebook, codes, (3, 3, 2, 6)))
    with tf.GradientTape() as tape:
        ref = tf.reduce_sum(tf.sin(tf.nn.conv2d(x, kernel, 1, "VALID")))
    g_sub = pq.to_subvectors(tape.gradient(ref, kernel).numpy(), d)
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    for c in range(k):
        used = codes == c
        want = g_sub[used].mean(axis=0) if used.any() else np.zeros(d)
        np.testing.assert_allclose(g_codebook[c], want, rtol=1e-4, atol=1e-5)

    # One SGD step moves each codeword by lr x that mean, whatever its popularity.
    opt = keras.optimizers.SGD(learning_rate=0.1)
    opt.apply_gradients([(tf.constant(g_codebook), layer.codebook)])
    np.testing.assert_allclose(layer.codebook.numpy(), codebook - 0.1 * g_codebook, rtol=1e-6)
    assert layer.trainable_weights == [layer.codebook]  # codes never train


# -- the learner end to end ---------------------------------------------------------------


K = 8


@pytest.fixture(scope="module")
def compressed():
    x, y = quadrant_data(512, 0)
    xv, yv = quadrant_data(256, 1)
    dense = two_conv_net()
    dense.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dense.fit(x, y, epochs=8, batch_size=32, verbose=0)
    before = [w.copy() for w in dense.get_weights()]
    lrn = ProductQuantLearner(
        training.TrainConfig(epochs=1, batch_size=32, learning_rate=0.01),
        pq_codebook_size=K,
        pq_nb_samples=256,
        pq_nb_iters_layer=10,
        pq_bn_batches=8,
        verbose=0,
    )
    out = lrn.fit(dense, x, y)
    return {
        "dense": dense,
        "before": before,
        "learner": lrn,
        "out": out,
        "train": (x, y),
        "val": (xv, yv),
    }


def test_fit_quantizes_every_layer_and_leaves_the_input_model_alone(compressed):
    lrn, out, dense = compressed["learner"], compressed["out"], compressed["dense"]
    assert lrn.report["quantized_layers"] == ["c1", "c2", "fc"]
    assert all(
        np.array_equal(a, b) for a, b in zip(compressed["before"], dense.get_weights(), strict=True)
    )
    # The result is a plain Keras model of the original architecture.
    assert [type(layer).__name__ for layer in out.layers] == [
        type(layer).__name__ for layer in dense.layers
    ]
    rows = {r["name"]: r for r in lrn.report["layers"]}
    for name in ("c2", "fc"):
        assert rows[name]["err_em"] < rows[name]["err_init"]  # EM improved on its start


def test_decoded_kernels_hold_at_most_k_distinct_subvectors(compressed):
    lrn, out = compressed["learner"], compressed["out"]
    for name, code in lrn.codes.items():
        kernel = out.get_layer(name).get_weights()[0]
        assert np.array_equal(kernel, code.decode())  # exactly codebook[codes]
        sub = pq.to_subvectors(kernel, code.block_size).reshape(-1, code.block_size)
        assert len(np.unique(sub, axis=0)) <= K
        # Every decoded sub-vector is a float16 codeword (the stored dtype).
        assert np.array_equal(sub, sub.astype(np.float16).astype(np.float32))


def test_compressed_size_matches_a_hand_computation(compressed):
    lrn, dense = compressed["learner"], compressed["dense"]
    row = next(r for r in lrn.report["layers"] if r["name"] == "c2")
    # c2: kernel 3x3x8x16, d = 9 -> 8 blocks x 16 outputs = 128 sub-vectors at log2(8) = 3
    # bits = 48 bytes; codebook 8 x 9 float16 = 144 bytes; bias 16 float32 = 64 bytes.
    assert (row["n_subvectors"], row["code_bits"], row["code_bytes"]) == (128, 3, 48)
    assert row["codebook_bytes"] == 144
    assert row["compressed_bytes"] == 48 + 144 + 64
    assert row["float_bytes"] == 4 * (3 * 3 * 8 * 16 + 16)
    # Total: every quantized kernel at codes + codebook, every other parameter at 4 bytes.
    kernels = {"c1": (72, 9, 8), "c2": (1152, 9, 128), "fc": (256, 4, 64)}  # size, d, n_sub
    pq_bytes = sum(-(-n_sub * 3 // 8) + K * d * 2 for _, d, n_sub in kernels.values())
    other = dense.count_params() - sum(size for size, _, _ in kernels.values())
    assert lrn.report["compressed_bytes"] == pq_bytes + 4 * other
    assert lrn.report["float_bytes"] == 4 * dense.count_params()
    assert lrn.report["ratio"] == pytest.approx(
        4 * dense.count_params() / lrn.report["compressed_bytes"]
    )
    assert lrn.report["ratio"] > 5


def test_accuracy_stays_near_the_float_model(compressed):
    xv, yv = compressed["val"]
    acc_float = training.evaluate_accuracy(compressed["dense"], xv, yv)
    acc_pq = training.evaluate_accuracy(compressed["out"], xv, yv)
    assert acc_float > 0.9
    assert acc_pq >= acc_float - 0.05, (acc_float, acc_pq)


def test_batchnorm_statistics_are_reestimated(compressed):
    lrn, out = compressed["learner"], compressed["out"]
    info = lrn.report["bn_reestimation"]
    assert info["layers"] == 2 and info["batches"] == 8 and info["mean_abs_change_mean"] > 0
    # Re-estimating directly: bn1's moving mean becomes the exact mean of c1's outputs.
    x = compressed["train"][0][:128]
    model = learner.copy_model(out)
    bn1 = model.get_layer("bn1")
    old = bn1.moving_mean.numpy().copy()
    bn1.moving_mean.assign(old + 1.0)
    batchnorm.reestimate(model, tf.data.Dataset.from_tensor_slices(x).batch(32), 10)
    conv_out = keras.Model(model.inputs, model.get_layer("c1").output).predict(x, verbose=0)
    np.testing.assert_allclose(bn1.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), conv_out.var(axis=(0, 1, 2)), rtol=1e-4)


def test_codes_and_codebooks_round_trip_through_the_npz(compressed, tmp_path):
    lrn, out = compressed["learner"], compressed["out"]
    path = lrn.save_compressed(tmp_path / "model.pq.npz")
    for model_arg in (None, compressed["dense"]):
        loaded, codes = storage.load(path, model=model_arg)
        assert set(codes) == set(lrn.codes)
        for name, code in codes.items():
            np.testing.assert_array_equal(code.codes, lrn.codes[name].codes)
            assert code.codebook.dtype == np.float16
        for a, b in zip(loaded.get_weights(), out.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # The payload arrays hold exactly the reported compressed size; headers add little.
    with np.load(path) as data:
        assert sorted(data.files) == ["codebooks", "codes", "floats", "header"]
        payload = sum(data[key].nbytes for key in ("codes", "codebooks", "floats"))
    assert payload == lrn.report["compressed_bytes"]
    assert os.path.getsize(path) < payload + 3000
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_decoded_model_exports_to_a_verified_float_tflite(compressed, tmp_path):
    xv, yv = compressed["val"]
    res = tflite_verify.export_tflite(
        compressed["out"],
        tmp_path / "pq.tflite",
        mode="float",
        x_verify=xv[:200],
        y_verify=yv[:200],
    )
    assert res.report.passed and os.path.exists(res.path) and res.bytes > 0


def test_learner_codes_export_to_a_verified_compact_tflite(compressed, tmp_path):
    # The learner's own codes (float16 codebooks, BatchNorm folded by the converter) rebuild
    # its decoded model exactly in LiteRT, from a file holding codes and codebooks.
    xv, yv = compressed["val"]
    lrn, out = compressed["learner"], compressed["out"]
    res = compact_export.export_compact(
        out, lrn.codes, tmp_path / "pq.tflite", x_verify=xv[:200], y_verify=yv[:200]
    )
    assert res.report.top1_agreement == 1.0 and res.report.max_abs_diff <= 2e-5
    assert res.bytes < len(tflite_export.convert(out, "float"))


def test_fit_on_a_dataset_without_distillation_with_float32_codebooks(tiny_model, tiny_data):
    x, y = tiny_data
    ds = training.make_dataset(x, y, 32, training=True)
    lrn = ProductQuantLearner(
        training.TrainConfig(epochs=1, batch_size=32, learning_rate=0.01),
        distillation=None,
        pq_codebook_size=8,
        pq_codebook_dtype="float32",
        pq_nb_samples=64,
        pq_nb_iters_layer=0,
        pq_bn_batches=2,
        verbose=0,
    )
    out = lrn.fit(tiny_model, ds)
    assert lrn.distillation is None and lrn.report["bn_reestimation"]["batches"] == 2
    assert all(code.codebook.dtype == np.float32 for code in lrn.codes.values())
    row = next(r for r in lrn.report["layers"] if r["name"] == lrn.report["quantized_layers"][0])
    assert row["codebook_bytes"] == 8 * row["block_size"] * 4 and "err_finetuned" not in row
    for name, code in lrn.codes.items():
        assert np.array_equal(out.get_layer(name).get_weights()[0], code.decode())


# -- options and errors before training ------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pq_codebook_size": 100},
        {"pq_codebook_size": 1},
        {"pq_codebook_size": 131072},
        {"pq_codebook_size": 8.0},
        {"pq_block_size_conv": 0},
        {"pq_block_size_1x1": -4},
        {"pq_target_ratio": 0.5},
        {"pq_target_ratio": float("inf")},
        {"pq_codebook_dtype": "int8"},
        {"pq_nb_iters_em": 0},
        {"pq_nb_samples": 0},
        {"pq_exclude": ["c1", 3]},
    ],
)
def test_bad_options_are_refused_in_the_constructor(kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(errors.InvalidArgumentError) as e:
        ProductQuantLearner(**kwargs)
    assert e.value.name == name and repr(value) in str(e.value)


class _Recorder(ProductQuantLearner):
    """Fails the test if any quantization or training starts."""

    def prepare(self, model):
        raise AssertionError("prepare() ran: the error should come before any training")


@pytest.mark.parametrize(
    "kwargs, name, value, words",
    [
        ({"pq_block_size_conv": 4}, "pq_block_size_conv", 4, "layer 'c1'"),
        ({"pq_block_size_1x1": 5}, "pq_block_size_1x1", 5, "layer 'fc'"),
        ({"pq_target_ratio": 500.0}, "pq_target_ratio", 500.0, "the most this model reaches"),
        ({"pq_exclude": ["nope"]}, "pq_exclude", "nope", "names of layers"),
    ],
)
def test_options_that_do_not_fit_the_model_fail_before_training(kwargs, name, value, words):
    x, y = quadrant_data(64, 0)
    lrn = _Recorder(training.TrainConfig(epochs=1), pq_codebook_size=8, verbose=0, **kwargs)
    with pytest.raises(errors.InvalidArgumentError) as e:
        lrn.fit(two_conv_net(), x, y)
    assert e.value.name == name and repr(value) in str(e.value) and words in str(e.value)
    assert lrn.history is None


def test_unquantizable_layers_stay_float_and_a_model_without_any_is_refused():
    L = keras.layers
    inp = keras.Input((8, 8, 4))
    x = L.DepthwiseConv2D(3, name="dw")(inp)
    x = L.Conv2D(16, 1, name="pw")(x)
    logits = L.Dense(4, name="fc")(L.GlobalAveragePooling2D()(x))
    p = plan.make_plan(keras.Model(inp, logits), codebook_size=4)
    assert [lp.name for lp in p.quantized] == ["pw", "fc"]
    assert "DepthwiseConv2D is not product-quantized" in p.to_dict()["float_layers"]["dw"]
    assert p.compressed_bytes == p.to_dict()["code_bytes"] + p.to_dict()["codebook_bytes"] + (
        4 * (p.total_params - 4 * 16 - 16 * 4)
    )

    only_dw = keras.Model(inp, L.GlobalAveragePooling2D()(L.DepthwiseConv2D(3)(inp)))
    with pytest.raises(errors.InvalidArgumentError) as e:
        # Data the model takes (8x8x4 images, 4 classes): the model itself is refused.
        _Recorder(verbose=0).fit(only_dw, np.zeros((8, 8, 8, 4), np.float32), np.arange(8) % 4)
    assert e.value.name == "model" and "DepthwiseConv2D" in str(e.value)


def test_target_ratio_picks_the_largest_codebook_that_reaches_it():
    model = two_conv_net()
    lrn = ProductQuantLearner(pq_codebook_size=256, pq_target_ratio=6.0)
    p = lrn.make_plan(model)
    assert p.ratio >= 6.0
    k = p.quantized[0].codebook_size
    assert all(lp.codebook_size == k for lp in p.quantized)
    bigger = plan.make_plan(model, 2 * k) if 2 * k <= 256 else None
    assert bigger is None or bigger.ratio < 6.0


def test_registered_under_its_pocketflow_name():
    assert learner.get_learner_class("product-quant") is ProductQuantLearner
    assert product_quant.ProductQuantLearner is ProductQuantLearner


@pytest.mark.parametrize("module", [pq, layers, plan, storage, sampling])
def test_docstring_examples(module):
    # The learner module's examples train models; pytest --doctest-modules runs them all.
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_learner_docstring_lists_every_option():
    doc = ProductQuantLearner.__doc__
    for option in ProductQuantLearner().get_config():
        if option.startswith("pq_"):
            assert option in doc, option
    assert pq_learner.__doc__
