"""Uniform QAT: the QAT model, its full-integer export, saving, options, the run script;
lower and mixed weight precision: the bit grid, sensitivities, the allocation, the file check."""

import itertools
import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import errors, model_io, qat, sparsity, tflite_export, tflite_verify, training
from pocketflow_tf import learner as learner_lib
from pocketflow_tf.app import runner
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.uniform_quant import UniformQuantLearner, bits_search
from pocketflow_tf.learners.uniform_quant import bits as bits_lib
from pocketflow_tf.learners.uniform_quant import storage as storage_lib
from tests.tiny_models import residual_net

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


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
        ({"uql_weight_bits": 0}, "uql_weight_bits", "2..8"),
        ({"uql_weight_bits": 1}, "uql_weight_bits", "only the level 0"),
        ({"uql_weight_bits": 9}, "uql_weight_bits", "2..8"),
        ({"uql_weight_bits": 4.0}, "uql_weight_bits", "2..8"),
        ({"uql_activation_bits": True}, "uql_activation_bits", "8"),
        ({"uql_activation_bits": 4}, "uql_activation_bits", "int8"),
        ({"uql_equivalent_bits": 1.5}, "uql_equivalent_bits", r"\[2, 8\]"),
        ({"uql_equivalent_bits": 3, "uql_w_bit_min": 4}, "uql_equivalent_bits", r"\[4, 8\]"),
        ({"uql_equivalent_bits": 7, "uql_w_bit_max": 6}, "uql_equivalent_bits", r"\[2, 6\]"),
        ({"uql_equivalent_bits": float("nan")}, "uql_equivalent_bits", "number"),
        ({"uql_w_bit_min": 6, "uql_w_bit_max": 4}, "uql_w_bit_min", "at most"),
        ({"uql_calib_samples": 0}, "uql_calib_samples", "positive"),
        ({"bits_search": lambda *a: {}}, "bits_search", "uql_equivalent_bits"),
        ({"uql_equivalent_bits": 4, "bits_search": 3}, "bits_search", "callable"),
        ({"uql_bits_search": "bogus"}, "uql_bits_search", "tpe"),
        ({"uql_search_trials": 0}, "uql_search_trials", "positive"),
    ],
)
def test_bad_bit_widths_are_refused(kwargs, name, says):
    with pytest.raises(errors.InvalidArgumentError, match=says) as e:
        UniformQuantLearner(**kwargs)
    assert e.value.name == name


def test_weight_bits_quantize_model_saves_and_the_int8_file_keeps_the_levels(
    trained, tiny_data, tmp_path
):
    x, y = tiny_data
    want = {"c1": 2, "c2": 3, "logits": 4}
    assert qat.quantized_weight_layers(trained) == ["c1", "c2", "logits"]
    q = qat.quantize_model(trained, weight_bits=want)
    assert qat.weight_bits_of(q) == want
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(x, y, epochs=1, batch_size=32, verbose=0)

    # Saved and loaded, the bit-widths and the outputs stay.
    model_io.save_model(q, tmp_path / "q.h5")
    back = model_io.load_model(tmp_path / "q.h5")
    assert qat.weight_bits_of(back) == want
    np.testing.assert_array_equal(back.predict(x[:16], verbose=0), q.predict(x[:16], verbose=0))

    # In the int8 file each kernel keeps at most 2**b - 1 values per output channel (BatchNorm
    # folded into c1), and an 8-bit kernel is not held to a 2-bit bound: the check can fail.
    buf = tflite_export.convert(q, "int8", representative_data=x)
    levels = {lv.name: lv for lv in storage_lib.tflite_levels(q, buf, want)}
    assert all(lv.within_limit for lv in levels.values()), levels
    assert levels["c1"].max_per_channel <= 3 and levels["c2"].max_per_channel <= 7
    # Exactly the levels QAT trained: 3-bit c2 holds int8 codes from {0, +-42, +-85, +-127}
    # (the converter would have put plain 3-bit fake quantization on a 4-bit grid).
    c2 = next(t for t in sparsity.tflite_kernels(buf) if t.stats.name == levels["c2"].tensor)
    assert set(np.unique(c2.dense).tolist()) <= {-127, -85, -42, 0, 42, 85, 127}
    eight = qat.quantize_model(trained)
    buf8 = tflite_export.convert(eight, "int8", representative_data=x)
    (lv8,) = storage_lib.tflite_levels(eight, buf8, {"c2": 2})
    assert lv8.tensor is not None and not lv8.within_limit and lv8.max_per_channel > 3

    # The Keras QAT model predicts the file: logits within a couple of output steps.
    buf = tflite_export.convert(q, "int8", representative_data=x, int8_io=True)
    step = Interpreter(model_content=buf).get_output_details()[0]["quantization"][0]
    got = tflite_verify.TFLiteRunner(buf).predict(x[:200])
    want = q.predict(x[:200], verbose=0)
    assert np.abs(got - want).max() <= 3 * step, (np.abs(got - want).max(), step)
    assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= 0.95


def _relu_layer_net():
    """Conv2D -> ReLU(), DepthwiseConv2D -> ReLU(), Conv2D -> Activation("relu"), Dense ->
    ReLU(): the way users write activations, as layers of their own."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp))
    x = keras.layers.ReLU()(keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = keras.layers.Activation("relu")(keras.layers.Conv2D(8, 1, name="pw")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.ReLU()(keras.layers.Dense(16, name="fc")(x))
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x))


def test_layers_feeding_a_relu_layer_keep_their_weight_quantizer(tiny_data):
    # TFMOT's default transforms gave them a no-op config: weights trained in float under
    # QAT, and weight_bits for them was refused.
    x, y = tiny_data
    m = _relu_layer_net()
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    want = {"c1": 3, "dw": 4, "pw": 4, "fc": 4, "logits": 8}
    q = qat.quantize_model(m, weight_bits={k: v for k, v in want.items() if v != 8})
    assert qat.weight_bits_of(q) == want
    by_inner = {getattr(layer, "layer", layer).name: layer for layer in q.layers}
    for name in ("c1", "dw", "pw", "fc"):
        config = by_inner[name].quantize_config
        assert config.get_weights_and_quantizers(by_inner[name].layer), name
        # ... and no fake quant between it and its ReLU.
        assert not config.get_output_quantizers(by_inner[name].layer), name
        assert not config.get_activations_and_quantizers(by_inner[name].layer), name
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(x, y, epochs=1, batch_size=32, verbose=0)
    buf = tflite_export.convert(q, "int8", representative_data=x)
    levels = {lv.name: lv for lv in storage_lib.tflite_levels(q, buf, want)}
    assert all(lv.within_limit for lv in levels.values()), levels
    assert levels["c1"].max_per_channel <= 7 and levels["pw"].max_per_channel <= 15
    got = tflite_verify.TFLiteRunner(buf).predict(x[:200])
    ref = q.predict(x[:200], verbose=0)
    assert np.mean(np.argmax(got, -1) == np.argmax(ref, -1)) >= 0.95


def test_weight_bits_for_layers_without_quantized_weights_are_refused(trained):
    with pytest.raises(errors.InvalidArgumentError, match="c1") as e:
        qat.quantize_model(trained, weight_bits={"bn1": 4})
    assert e.value.name == "weight_bits"
    with pytest.raises(errors.InvalidArgumentError, match="2..8") as e:
        qat.quantize_model(trained, weight_bits={"c1": 1})
    assert e.value.name == "weight_bits['c1']"


@pytest.mark.parametrize("b", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("per_channel", [True, False])
def test_low_bit_weights_are_2_to_the_b_minus_1_levels_on_the_int8_grid(b, per_channel):
    w = np.random.default_rng(b).normal(size=(3, 3, 4, 6)).astype(np.float32)
    q = bits_lib.fake_quantize(w, b, per_channel)
    m = 2 ** (b - 1) - 1
    allowed = {round(k * 127 / m) for k in range(-m, m + 1)}
    groups = [(q[..., c], w[..., c]) for c in range(6)] if per_channel else [(q, w)]
    for g, o in groups:
        r = np.abs(o).max()
        codes = g / (r / 127)
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)  # on the int8 grid
        assert set(np.round(codes).astype(int).ravel()) <= allowed  # at most 2**b - 1 levels
        assert np.abs(g).max() == pytest.approx(r, rel=1e-6)  # the largest weight sets the range
        # The nearest b-bit level, moved at most half an int8 step.
        assert np.abs(g - o).max() <= r / m / 2 + r / 127 / 2 + 1e-6
    # The gradient passes straight through.
    x = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(qat.low_bit_weights(x, b, per_channel) * 3.0)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 3.0)


def _random_layers(rng, count, low, high):
    sizes = rng.integers(low, high, count)
    return [bits_lib.LayerInfo(f"l{i}", "Conv2D", int(n)) for i, n in enumerate(sizes)]


def test_allocate_finds_the_best_allocation_within_the_budget():
    rng = np.random.default_rng(0)
    for _ in range(20):
        layers = _random_layers(rng, 4, 10, 1000)
        widths = [2, 3, 4, 6, 8]
        table = {
            ly.name: {
                b: float(v)
                for b, v in zip(widths, np.sort(rng.random(5))[::-1] * rng.random(), strict=True)
            }
            for ly in layers
        }
        budget = float(rng.uniform(2.5, 7.0))
        got = bits_lib.allocate(layers, table, budget)
        best = min(
            (
                sum(table[ly.name][b] for ly, b in zip(layers, combo, strict=True)),
                combo,
            )
            for combo in itertools.product(widths, repeat=4)
            if bits_lib.average_bits(
                layers, dict(zip([ly.name for ly in layers], combo, strict=True))
            )
            <= budget
        )
        assert bits_lib.average_bits(layers, got) <= budget + 1e-9
        assert sum(table[n][b] for n, b in got.items()) == pytest.approx(best[0], abs=1e-9)


def test_sensitivity_falls_with_more_bits_and_the_weights_are_restored(trained, tiny_data):
    x, _ = tiny_data
    before = [w.copy() for w in trained.get_weights()]
    infos = bits_lib.layer_infos(trained)
    assert [(i.name, i.n_weights, i.channels, i.per_channel) for i in infos] == [
        ("c1", 72, 8, True),
        ("c2", 576, 8, True),
        ("logits", 32 * 4, 4, False),
    ]
    table = bits_lib.measure_sensitivity(trained, x, infos, [2, 4, 8])
    for name, row in table.items():
        assert row[2] > row[4] > row[8] >= 0.0, (name, row)
        assert row[8] < 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights(), strict=True))


def test_storage_report_counts_packed_codes_scales_and_the_rest(trained):
    infos = bits_lib.layer_infos(trained)
    rep = storage_lib.storage_report(trained, infos, {"c1": 2, "c2": 3, "logits": 8})
    rows = {r.name: r for r in rep.layers}
    assert (rows["c1"].code_bytes, rows["c1"].scale_bytes) == (18, 32)  # 72 x 2 bits, 8 scales
    assert (rows["c2"].code_bytes, rows["logits"].code_bytes) == (216, 128)
    assert rows["logits"].scale_bytes == 4  # Dense: one scale per kernel
    params = trained.count_params()  # BatchNorm moving statistics included
    assert rep.float_bytes == 4 * params
    assert rep.other_bytes == 4 * (params - 72 - 576 - 128)
    assert rep.total_bytes == 18 + 216 + 128 + 32 + 32 + 4 + rep.other_bytes
    assert rep.average_bits == pytest.approx((72 * 2 + 576 * 3 + 128 * 8) / 776)


def test_mixed_precision_fit_meets_the_budget_and_reports(trained, tiny_data):
    x, y = tiny_data
    cfg = training.TrainConfig(epochs=1, batch_size=32, learning_rate=0.005)
    lrn = UniformQuantLearner(cfg, uql_equivalent_bits=4.0, uql_calib_samples=128, verbose=0)
    out = lrn.fit(trained, x, y)
    rep = lrn.report
    infos = bits_lib.layer_infos(trained)
    assert rep["allocation"] == "sensitivity" and set(lrn.weight_bits) == {"c1", "c2", "logits"}
    assert bits_lib.average_bits(infos, lrn.weight_bits) <= 4.0
    assert qat.weight_bits_of(out) == lrn.weight_bits
    assert rep["storage"]["average_bits"] <= 4.0
    assert rep["storage"]["total_bytes"] < rep["storage"]["int8_bytes"]
    assert all(set(row["sensitivity"]) == set(range(2, 9)) for row in rep["layers"])
    low = {n for n, b in lrn.weight_bits.items() if b < 8}
    assert {lv["name"] for lv in rep["tflite_int8_levels"]} == low
    assert all(lv["within_limit"] for lv in rep["tflite_int8_levels"])
    # A fifth of the weights' bits kept the float model's accuracy on this task.
    acc_float = training.evaluate_accuracy(trained, x, y)
    assert training.evaluate_accuracy(out, x, y) >= acc_float - 0.05


def test_bits_search_hook_is_used_and_held_to_the_budget(trained, tiny_data):
    x, y = tiny_data
    cfg = training.TrainConfig(epochs=1, batch_size=32)
    seen = []

    def search(layers, budget, lo, hi):
        seen.append(([ly.name for ly in layers], budget, lo, hi))
        return {"c1": 8, "c2": 3, "logits": 3}

    lrn = UniformQuantLearner(cfg, uql_equivalent_bits=3.5, bits_search=search, verbose=0)
    out = lrn.fit(trained, x, y)
    assert seen == [(["c1", "c2", "logits"], 3.5, 2, 8)]
    assert qat.weight_bits_of(out) == {"c1": 8, "c2": 3, "logits": 3}
    assert lrn.report["allocation"] == "search"

    greedy = UniformQuantLearner(
        cfg, uql_equivalent_bits=3.0, bits_search=lambda *a: {"c1": 8, "c2": 8, "logits": 8}
    )
    with pytest.raises(errors.InvalidArgumentError, match="averaging <= 3.0") as e:
        greedy.fit(trained, x, y)
    assert e.value.name == "bits_search result"
    assert greedy.history is None  # refused before training


def test_budget_bounding_always_fits_and_only_lowers_bits():
    rng = np.random.default_rng(1)
    for _ in range(50):
        layers = _random_layers(rng, 5, 1, 500)
        want = {ly.name: int(b) for ly, b in zip(layers, rng.integers(2, 9, 5), strict=True)}
        budget = float(rng.uniform(2.0, 8.0))
        got = bits_search.bound_to_budget(layers, want, budget, 2)
        assert bits_lib.average_bits(layers, got) <= budget + 1e-9
        assert all(2 <= got[n] <= want[n] for n in want)
        if bits_lib.average_bits(layers, want) <= budget:
            assert got == want


def test_optimiser_search_scores_whole_allocations_and_never_loses_to_its_start(trained, tiny_data):
    x, y = tiny_data
    infos = bits_lib.layer_infos(trained)
    before = [w.copy() for w in trained.get_weights()]
    start = {"c1": 8, "c2": 3, "logits": 4}  # averages 3.63 bits
    res = bits_search.search_bits(
        trained, x[:128], infos, 4.0, 2, 8, optimizer="random", trials=6, start=start
    )
    assert len(res.trials) == 7 and res.trials[0]["bits"] == start
    assert res.start_kl == pytest.approx(bits_search.joint_kl(trained, x[:128], infos, start))
    assert res.kl == min(t["kl"] for t in res.trials) <= res.start_kl
    assert all(bits_lib.average_bits(infos, t["bits"]) <= 4.0 + 1e-9 for t in res.trials)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights(), strict=True))
    # Fewer bits everywhere cannot be closer to the float model than 8 bits everywhere.
    all8 = bits_search.joint_kl(trained, x[:128], infos, dict.fromkeys(start, 8))
    all2 = bits_search.joint_kl(trained, x[:128], infos, dict.fromkeys(start, 2))
    assert all8 < 1e-3 < all2

    cfg = training.TrainConfig(epochs=1, batch_size=32)
    lrn = UniformQuantLearner(
        cfg,
        uql_equivalent_bits=4.0,
        uql_bits_search="tpe",
        uql_search_trials=4,
        uql_calib_samples=128,
        verbose=0,
    )
    out = lrn.fit(trained, x, y)
    assert lrn.report["allocation"] == "tpe" and len(lrn.report["search"]["trials"]) == 5
    assert lrn.report["search"]["kl"] <= lrn.report["search"]["start_kl"]
    assert qat.weight_bits_of(out) == lrn.weight_bits


def test_layers_tfmot_cannot_quantize_are_stated_and_run_in_float(tiny_data, caplog):
    x, y = tiny_data
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, name="c")(inp)
    h = L.LayerNormalization(name="ln")(h)
    out = L.Dense(4, name="fc")(L.Flatten()(h))
    m = keras.Model(inp, out)
    lrn = UniformQuantLearner(
        training.TrainConfig(epochs=1, batch_size=32), uql_weight_bits=4, verbose=0
    )
    with caplog.at_level("WARNING"):
        q = lrn.fit(m, x, y)
    assert "kept in float" in caplog.text and "ln" in caplog.text
    assert lrn.report["float_layers"] == ["ln"]
    assert qat.weight_bits_of(q) == {"c": 4, "fc": 4}


def test_a_model_with_nothing_to_quantize_is_refused_before_training(tiny_data):
    x, y = tiny_data
    # Four input channels pooled: a valid 4-class output, but no layer with weights.
    x = np.repeat(x, 4, axis=-1)
    m = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(errors.UnsupportedModelError, match="nothing to quantize"):
        UniformQuantLearner(training.TrainConfig(epochs=1, batch_size=32)).fit(m, x, y)


def _wrapped(q):
    return {getattr(layer, "layer", layer).name: layer for layer in q.layers}


def _in_float(wrapper, output_quantized: bool = False):
    """Whether a QAT wrapper quantizes nothing (a no-op config: qat's own, or TFMOT's of the
    same name after a clone through configs), or with ``output_quantized`` its output only
    (qat.FloatOutputQuantizeConfig)."""
    config, layer = wrapper.quantize_config, wrapper.layer
    kind = "FloatOutputQuantizeConfig" if output_quantized else "NoOpQuantizeConfig"
    return (
        type(config).__name__ == kind
        and not config.get_weights_and_quantizers(layer)
        and not config.get_activations_and_quantizers(layer)
        and len(config.get_output_quantizers(layer)) == int(output_quantized)
    )


def test_batchnorm_after_a_conv_with_its_own_relu_runs_in_float(tiny_data):
    # TFMOT folds a BatchNorm only into a linear convolution; after Conv2D(activation="relu")
    # it was left to TFMOT all the same, which refused it ("Layer bn is not supported").
    x, y = tiny_data
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    h = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, activation="relu", name="c")(inp))
    h = L.BatchNormalization(name="bn2")(L.Conv2D(4, 3, name="c2")(h))  # folded, as before
    m = keras.Model(inp, L.Dense(4, name="fc")(L.Flatten()(L.ReLU()(h))))
    assert not qat._folded_by_transforms(m.get_layer("bn"))
    assert qat._folded_by_transforms(m.get_layer("bn2"))
    lrn = UniformQuantLearner(
        training.TrainConfig(epochs=1, batch_size=32), uql_weight_bits=4, verbose=0
    )
    q = lrn.fit(m, x, y)  # 4-bit weights: fit ends with the int8 conversion's level check
    by_inner = _wrapped(q)
    assert _in_float(by_inner["bn"])
    # TFMOT's fold marks the convolution it folds into: its activation becomes a no-op.
    acts = {n: getattr(by_inner[n].layer.activation, "activation", None) for n in ("c", "c2")}
    assert type(acts["c2"]).__name__ == "NoOpActivation" and acts["c"].__name__ == "relu"
    assert qat.weight_bits_of(q) == {"c": 4, "c2": 4, "fc": 4}
    assert np.isfinite(q.predict(x[:32], verbose=0)).all()


def test_activations_tfmot_cannot_quantize_run_in_float(tiny_data):
    # TFMOT's registry lists every Activation layer, but its config raises ValueError at
    # build time for any function but relu/relu6/swish/gelu/linear/softmax/sigmoid/tanh; and
    # a Conv2D/Dense's own activation= other than those made TFMOT's wrapper raise.
    x, y = tiny_data
    keras.utils.set_random_seed(0)
    L = keras.layers
    funcs = ("elu", "selu", "softplus", "hard_sigmoid")
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, activation="relu6", name="c")(inp)
    for f in funcs:
        h = L.Activation(f, name=f"act_{f}")(h)
    h = L.Dense(8, activation="elu", name="d")(L.Flatten()(h))
    m = keras.Model(inp, L.Dense(4, name="fc")(L.Activation("tanh", name="act_tanh")(h)))
    for f in funcs:
        assert qat.registry_config(m.get_layer(f"act_{f}")) is None, f
    assert qat.registry_config(m.get_layer("act_tanh")) is not None
    q = UniformQuantLearner(training.TrainConfig(epochs=1, batch_size=32), verbose=0).fit(m, x, y)
    by_inner = _wrapped(q)
    for f in funcs:
        assert _in_float(by_inner[f"act_{f}"]), f
    assert not _in_float(by_inner["act_tanh"])
    # The layers with their own activation keep their weight quantizer; the activation runs
    # in float inside them.
    for name in ("c", "d"):
        config = by_inner[name].quantize_config
        assert config.get_weights_and_quantizers(by_inner[name].layer), name
        assert not config.get_activations_and_quantizers(by_inner[name].layer), name
    assert qat.weight_bits_of(q) == {"c": 8, "d": 8, "fc": 8}
    assert np.isfinite(q.predict(x[:32], verbose=0)).all()


def test_a_uint8_input_model_is_refused_before_any_work(tiny_data, tmp_path):
    # Images are fed as float32 in [0, 1]; a uint8 input would truncate them to 0/1 and the
    # model would train on black images without a word (the input contract refuses it).
    x, y = tiny_data
    L = keras.layers
    inp = keras.Input((8, 8, 1), dtype="uint8")
    h = L.Conv2D(4, 3, name="c")(L.Rescaling(1 / 255, name="scale")(inp))
    m = keras.Model(inp, L.Dense(4, name="fc")(L.Flatten()(h)))
    images = np.round(x * 255).astype(np.uint8)
    lrn = UniformQuantLearner(
        training.TrainConfig(epochs=1, batch_size=32),
        checkpoint_dir=str(tmp_path / "ckpt"),
        verbose=0,
    )
    with pytest.raises(errors.InvalidArgumentError, match="a model whose input is uint8"):
        lrn.fit(m, images, y)
    ds = tf.data.Dataset.from_tensor_slices((images, y)).batch(32)
    with pytest.raises(errors.InvalidArgumentError, match="keras.Input\\(dtype='float32'\\)"):
        lrn.fit(m, ds)
    assert not os.path.exists(tmp_path / "ckpt")  # refused before anything was written
    # qat itself still wraps such a model (TFMOT's input quantizer skips the integer input).
    assert [type(la).__name__ for la in qat.quantize_model(m).layers][:2] == [
        "InputLayer",
        "QuantizeWrapperV2",
    ]


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


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist")
def test_run_script_4_bit_weights_export_an_int4_file_with_the_levels(tmp_path):
    base = tmp_path / "fp" / "model.keras"
    common = dict(nb_train_samples=1024, num_verify=200, latency_runs=10, verbose=0)
    runner.run(
        runner.RunOptions(
            "convnet_at_fmnist",
            nb_epochs_rat=0.07,
            batch_size=32,
            save_path=str(base),
            log_dir=str(tmp_path / "logs"),
            export_modes=(),
            **common,
        )
    )
    opts = runner.RunOptions(
        "convnet_at_fmnist",
        learner="uniform",
        learner_options={"uql_weight_bits": 4},
        model_path=str(base),
        nb_epochs_rat=0.07,
        batch_size=32,
        save_path=str(tmp_path / "q" / "model.h5"),
        log_dir=str(tmp_path / "logs_q"),
        **common,
    )
    # 4-bit weights deploy as int8 storage and as int4 storage, both by default.
    assert opts.export_modes == ("int8", "int4")
    rec = runner.run(opts)
    m, layers = rec["metrics"], rec["sections"]["storage_int4"]["layers"]
    assert {"tflite_int8", "tflite_int4"} <= set(rec["artifacts"])
    # Every kernel is int4 in the file with at most 2**4 - 1 values per output channel.
    assert layers and all(s["stored"] == "INT4" and s["levels"] <= 15 for s in layers)
    assert all(s["max_levels"] == 15 for s in layers) and m["tflite_int4_fallbacks"] == []
    assert m["tflite_int4_bytes"] < 0.7 * m["tflite_int8_bytes"]
    # Same model, same levels: the two files agree with the QAT model alike.
    assert m["tflite_int4_agreement"] >= 0.95
    assert abs(m["tflite_int4_acc"] - m["tflite_int8_acc"]) <= 0.02


def test_int4_export_mode_is_checked_before_any_work(tmp_path):
    with pytest.raises(errors.InvalidArgumentError) as e:
        runner.RunOptions(
            "convnet_at_fmnist",
            learner="uniform",
            learner_options={"uql_weight_bits": 4},
            export_modes=("int4-sparse",),
            save_path=str(tmp_path / "m.h5"),
        )
    assert e.value.name == "export_modes" and "int4-sparse" in str(e.value)
    # int8 storage only: no layer can get <= 4 bits, so no int4 file is offered.
    with pytest.raises(errors.InvalidArgumentError, match="modes among"):
        runner.RunOptions(
            "convnet_at_fmnist",
            learner="uniform",
            export_modes=("int4",),
            save_path=str(tmp_path / "m.h5"),
        )


def test_an_in_model_rescaling_of_0_255_pixels_survives_the_int8_file(tiny_data, tmp_path):
    # The Keras tutorials' first layer: Rescaling(1/255) of 0..255 pixels. Unquantized in QAT,
    # the converter folded it into the convolution after it and quantized the scaled weights
    # with the ranges trained for the unscaled ones: every weight of the file's convolution
    # was 0, the exported model answered one class (agreement 0.46, refused by verification).
    x, y = tiny_data
    x255 = x * 255.0
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="c")(L.Rescaling(1 / 255, name="scale")(inp))
    h = L.ReLU()(L.BatchNormalization(name="bn")(h))
    m = keras.Model(inp, L.Dense(4, name="fc")(L.GlobalAveragePooling2D()(h)))
    q = UniformQuantLearner(training.TrainConfig(epochs=2, batch_size=32), verbose=0).fit(
        m, x255, y
    )
    scale = _wrapped(q)["scale"]
    assert _in_float(scale, output_quantized=True)
    # Its range is the pixels' [0, 1] (every value seen), not a moving average from [-6, 6].
    rng = {w.name.split("/")[-1]: float(w.numpy()) for w in scale.weights if "output_m" in w.name}
    assert rng["output_min:0"] == 0.0 and 0.9 <= rng["output_max:0"] <= 1.0
    path = str(tmp_path / "m.int8.tflite")
    result = tflite_verify.export_tflite(
        q, path, mode="int8", x_verify=x255, y_verify=y, representative_data=x255[:64]
    )
    assert result.report.top1_agreement >= 0.95
    interp = Interpreter(model_path=path)
    interp.allocate_tensors()
    conv = next(op for op in interp._get_ops_details() if op["op_name"] == "CONV_2D")
    assert np.count_nonzero(interp.get_tensor(int(conv["inputs"][1]))) > 0


def test_an_in_model_augmentation_on_0_255_pixels_keeps_its_accuracy_through_qat(tiny_data):
    # An in-model augmentation runs in float under QAT. With its output fake-quantized by a
    # moving-average range (from [-6, 6], 0.1 % a step) the 0..255 pixels were clipped at
    # 6 through a short fine-tune and a trained model fell to chance (0.535 on a binary task).
    x, y = tiny_data
    x255 = x * 255.0
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    aug = L.RandomBrightness(0.05, value_range=(0, 255), name="bright")  # keeps the quadrants
    h = L.Rescaling(1 / 255, name="scale")(aug(inp))
    h = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="c")(h)))
    m = keras.Model(inp, L.Dense(4, name="fc")(L.Flatten()(L.MaxPooling2D(4)(h))))
    cfg = training.TrainConfig(epochs=6, batch_size=32)
    trained = learner_lib.get_learner_class("full-prec")(cfg, verbose=0).fit(m, x255, y)
    float_acc = training.evaluate_accuracy(trained, x255, y)
    q = UniformQuantLearner(training.TrainConfig(epochs=1, batch_size=32), verbose=0).fit(
        trained, x255, y
    )
    assert _in_float(_wrapped(q)["bright"])  # identity at inference: nothing to quantize
    assert _in_float(_wrapped(q)["scale"], output_quantized=True)
    assert training.evaluate_accuracy(q, x255, y) >= float_acc - 0.05 >= 0.5
