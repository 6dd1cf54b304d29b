"""Compact product-quantized (and clustered) .tflite: codes + codebooks in the file, kernels
rebuilt in the graph, verified against the Keras model in LiteRT; corrupt codes refused."""

import dataclasses

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from pocketflow_tf import errors, tflite_export, tflite_verify
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.product_quant import compact_export, storage


def _net():
    # conv -> BatchNorm (folded into the conv weight by the converter) -> conv -> dense.
    rng = np.random.default_rng(0)
    inp = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(16, 3, use_bias=False, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(16, 3, name="c2", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, name="fc")(h)
    model = keras.Model(inp, out)
    model.get_layer("bn").set_weights(
        [
            rng.uniform(0.5, 2, 16),
            rng.normal(size=16) * 0.1,
            rng.normal(size=16) * 0.1,
            rng.uniform(0.5, 2, 16),
        ]
    )
    return model, rng


def _codes(model, rng, dtype, plan=(("c1", 16, 9), ("c2", 64, 9), ("fc", 32, 8))):
    codes = {}
    for name, k, d in plan:
        shape = model.get_layer(name).get_weights()[0].shape
        rows = int(np.prod(shape[:-1]))
        book = (rng.normal(size=(k, d)) * 0.2).astype(dtype)
        codes[name] = storage.LayerCode(
            name, shape, book, rng.integers(0, k, (rows // d, shape[-1]))
        )
    storage.apply_codes(model, codes)
    return codes


def _ops(content):
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [
        names[obj.operatorCodes[op.opcodeIndex].builtinCode] for op in obj.subgraphs[0].operators
    ]


@pytest.fixture(scope="module")
def pq_model():
    model, rng = _net()
    return model, _codes(model, rng, "float32")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).random((200, 10, 10, 3), dtype=np.float32)


@pytest.mark.parametrize("book_dtype", ["float32", "float16"])
def test_compact_file_is_smaller_and_agrees_with_the_keras_pq_model(book_dtype, x):
    model, rng = _net()
    codes = _codes(model, rng, book_dtype)
    content = compact_export.compact_tflite(model, codes)
    decoded = tflite_export.convert(model, "float")
    assert len(content) < len(decoded) / 3
    ops = _ops(content)
    assert ops.count("GATHER") == 3 and ops.count("TRANSPOSE") == 2
    assert ops.count("MUL") == 1  # c1's folded BatchNorm scale, per output channel
    assert ("DEQUANTIZE" in ops) == (book_dtype == "float16")
    report = tflite_verify.verify(
        model,
        content,
        x,
        mode="float",
        thresholds={"max_abs_diff": 2e-5},
        check_child=book_dtype == "float32",
    )
    assert report.top1_agreement == 1.0 and report.max_abs_diff <= 2e-5


def test_codebook_dtype_float16_halves_the_codebooks(pq_model):
    model, codes = pq_model
    f32 = compact_export.compact_tflite(model, codes, codebook_dtype="float32")
    f16 = compact_export.compact_tflite(model, codes, codebook_dtype="float16")
    books = sum(c.codebook.size for c in codes.values())
    # 2 bytes saved per codeword element, less a few hundred for the DEQUANTIZE ops' tensors.
    assert len(f32) - len(f16) >= 2 * books - 600


def test_more_than_256_codewords_take_int32_codes(x):
    model, rng = _net()
    codes = _codes(model, rng, "float32", plan=(("fc", 512, 4),))
    content = compact_export.compact_tflite(model, codes)
    assert "CAST" not in _ops(content) and "GATHER" in _ops(content)
    report = tflite_verify.verify(model, content, x, mode="float", check_child=False)
    assert report.top1_agreement == 1.0


def _corrupt(codes, name, change):
    out = dict(codes)
    out[name] = dataclasses.replace(codes[name], **change)
    return out


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: {"codes": np.where(c.codes == 0, 16, c.codes)},
            "'16 (max code)'. Accepted: codes in [0, 16)",
        ),
        (lambda c: {"codes": -c.codes - 1}, "(min code)"),
        (lambda c: {"codes": c.codes[:-1]}, "shape (2, 16)"),
        (lambda c: {"codebook": np.where(np.arange(9) == 3, np.nan, c.codebook)}, "16 NaN/inf"),
        (
            lambda c: {"codebook": c.codebook[:, :3]},
            "'shape (3, 16)'. Accepted: shape (9, 16) (block size 3",
        ),
        (lambda c: {"codebook": c.codebook + 0.5}, "away from the layer's kernel"),
        (lambda c: {"codes": c.codes.astype(np.float32)}, "dtype float32"),
        (lambda c: {"kernel_shape": (3, 3, 4, 16)}, "kernel shape of layer c1"),
    ],
)
def test_corrupt_or_mismatched_codes_are_refused_by_value(pq_model, change, message):
    model, codes = pq_model
    bad = _corrupt(codes, "c1", change(codes["c1"]))
    with pytest.raises(errors.InvalidArgumentError, match="layer c1") as e:
        compact_export.compact_tflite(model, bad)
    assert message in str(e.value)


def test_codes_of_an_unknown_layer_or_a_bad_dtype_are_refused(pq_model):
    model, codes = pq_model
    ghost = {"nope": dataclasses.replace(codes["c1"], name="nope")}
    with pytest.raises(errors.InvalidArgumentError, match="nope"):
        compact_export.compact_tflite(model, ghost)
    with pytest.raises(errors.InvalidArgumentError, match="codebook_dtype"):
        compact_export.compact_tflite(model, codes, codebook_dtype="int8")


def test_corrupt_npz_codebook_is_refused(pq_model, tmp_path):
    model, codes = pq_model
    path = storage.save(tmp_path / "m.pq.npz", model, codes)
    decoded, content = compact_export.compact_tflite_from_file(path)
    assert len(content) < len(tflite_export.convert(decoded, "float"))
    with np.load(path) as f:
        arrays = dict(f)
    arrays["codebooks"][5] = np.nan
    np.savez(tmp_path / "bad.pq.npz", **arrays)
    with pytest.raises(errors.InvalidArgumentError, match="NaN/inf"):
        compact_export.compact_tflite_from_file(tmp_path / "bad.pq.npz")


def test_a_clustered_model_exports_indices_and_centroids(x):
    model, rng = _net()
    codes = {}
    for name in ("c2", "fc"):
        layer = model.get_layer(name)
        kernel, *rest = layer.get_weights()
        centroids = np.sort(rng.normal(size=16) * 0.1).astype(np.float32)
        layer.set_weights([centroids[rng.integers(0, 16, kernel.shape)], *rest])
        codes[name] = compact_export.cluster_code(name, layer.get_weights()[0])
    assert codes["c2"].codebook.shape == (16, 1)  # one byte per weight is the fewest bytes
    assert codes["fc"].codebook.shape == (256, 2)  # 16 values: two weights per byte
    content = compact_export.compact_tflite(model, codes)
    assert len(content) < len(tflite_export.convert(model, "float")) / 2.5
    report = tflite_verify.verify(model, content, x, mode="float", check_child=False)
    assert report.top1_agreement == 1.0


def test_cluster_code_refuses_an_unclustered_kernel():
    kernel = np.arange(300, dtype=np.float32).reshape(30, 10)
    with pytest.raises(errors.InvalidArgumentError, match="300 distinct values"):
        compact_export.cluster_code("fc", kernel)


def test_export_compact_writes_a_verified_file_with_its_checksum(pq_model, x, tmp_path):
    model, codes = pq_model
    res = compact_export.export_compact(model, codes, tmp_path / "m.tflite", x_verify=x)
    assert res.report.passed and res.report.child_process_ok and res.report.mode == "float"
    assert res.bytes == (tmp_path / "m.tflite").stat().st_size
    assert (tmp_path / "m.tflite.sha256").read_text().startswith(res.sha256)
    # Rounding float32 codebooks to float16 is judged by the float16 thresholds.
    res16 = compact_export.export_compact(
        model, codes, tmp_path / "m16.tflite", x_verify=x, codebook_dtype="float16"
    )
    assert res16.report.mode == "float16" and res16.bytes < res.bytes


def test_export_compact_writes_nothing_when_verification_fails(pq_model, x, tmp_path):
    model, codes = pq_model
    with pytest.raises(errors.VerificationError, match="max"):
        compact_export.export_compact(
            model,
            codes,
            tmp_path / "m.tflite",
            x_verify=x,
            thresholds={"max_abs_diff": 0.0},
            codebook_dtype="float16",
        )
    assert not list(tmp_path.iterdir())


def test_two_layers_with_the_same_codes_share_one_rebuilt_kernel(x):
    # The converter gives equal constants one tensor (here it even merges the two equal
    # FULLY_CONNECTED ops): the second layer finds its kernel already rebuilt.
    inp = keras.Input((10, 10, 3))
    flat = keras.layers.Flatten()(inp)
    a = keras.layers.Dense(10, name="a")(flat)
    b = keras.layers.Dense(10, name="b")(flat)
    model = keras.Model(inp, keras.layers.Add()([a, b * 2.0]))
    rng = np.random.default_rng(3)
    codes = _codes(model, rng, "float32", plan=(("a", 16, 4),))
    codes["b"] = dataclasses.replace(codes["a"], name="b")
    storage.apply_codes(model, codes)
    content = compact_export.compact_tflite(model, codes)
    assert _ops(content).count("GATHER") == 1
    report = tflite_verify.verify(model, content, x, mode="float", check_child=False)
    assert report.top1_agreement == 1.0


def _tensors(content):
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = obj.subgraphs[0]
    return obj, {t.name.decode(): t for t in graph.tensors}


def test_the_file_stores_uint8_codes_and_no_dense_kernel(x):
    model, rng = _net()
    codes = _codes(model, rng, "float16")
    content = compact_export.compact_tflite(model, codes, keep_names=True)
    obj, tensors = _tensors(content)
    for name, code in codes.items():
        t = tensors[f"{name}/pq_codes"]
        assert t.type == schema.TensorType.UINT8
        assert tuple(t.shape) == code.codes.T.shape  # (O, m): output channel first
        stored = np.frombuffer(obj.buffers[t.buffer].data.tobytes(), np.uint8)
        np.testing.assert_array_equal(stored.reshape(t.shape), code.codes.T)
        book = tensors[f"{name}/pq_codebook"]
        assert book.type == schema.TensorType.FLOAT16 and tuple(book.shape) == code.codebook.shape
    # No float32 constant of a kernel's size is left: every dense weight left the file.
    sizes = {int(np.prod(c.kernel_shape)) for c in codes.values()}
    for t in obj.subgraphs[0].tensors:
        data = obj.buffers[t.buffer].data if t.buffer else None
        if data is not None and t.type == schema.TensorType.FLOAT32:
            assert int(np.prod(t.shape)) not in sizes, t.name
    # LiteRT's outputs are the Keras PQ model's within float tolerance.
    report = tflite_verify.verify(model, content, x, mode="float", check_child=False)
    assert report.top1_agreement == 1.0 and report.max_abs_diff <= 2e-5
    # By default only the input and output keep their names (the bytes of the others).
    stripped = compact_export.compact_tflite(model, codes)
    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(stripped)).subgraphs[0]
    named = [i for i, t in enumerate(graph.tensors) if t.name]
    assert sorted(named) == sorted(set(graph.inputs) | set(graph.outputs))
    assert len(stripped) < len(content) - sum(len(t.name) for t in tensors.values()) // 2


# -- the codes file (.pq.npz) as the deployment reads it --------------------------------


@pytest.fixture()
def npz(pq_model, tmp_path):
    model, codes = pq_model
    return storage.save(tmp_path / "m.pq.npz", model, codes)


def _rewrite(path, tmp_path, **changes):
    with np.load(path) as f:
        arrays = dict(f)
    for key, change in changes.items():
        if change is None:
            del arrays[key]
        else:
            arrays[key] = change(arrays[key])
    out = tmp_path / "bad.pq.npz"
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return out


def _header(arrays_header, edit):
    import json
    import zlib

    header = json.loads(zlib.decompress(arrays_header.tobytes()))
    edit(header)
    return np.frombuffer(zlib.compress(json.dumps(header).encode()), np.uint8)


def test_export_from_codes_file_writes_the_verified_compact_file(pq_model, npz, x, tmp_path):
    model, _ = pq_model
    res = compact_export.export_from_codes_file(model, npz, tmp_path / "c.tflite", x_verify=x)
    assert res.report.passed and res.report.top1_agreement == 1.0
    assert res.bytes == (tmp_path / "c.tflite").stat().st_size
    assert "GATHER" in _ops((tmp_path / "c.tflite").read_bytes())


def _bad_header_offset(h):
    h["layers"][0]["codebook_at"] = 10**6


def _bad_float_range(h):
    h["layers"][-1]["weights"][-1][0] = 10**6


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"codes": lambda a: a ^ 1}, errors.InvalidArgumentError, "away from the layer's kernel"),
        ({"floats": lambda a: a + 1}, errors.InvalidArgumentError, "differs from the model's"),
        ({"codes": lambda a: a[:-3]}, errors.ModelLoadError, "'codes' range"),
        ({"codes": None}, errors.ModelLoadError, "no 'codes' array"),
        ({"floats": lambda a: a.astype(np.float64)}, errors.ModelLoadError, "expected a flat"),
        (
            {"header": lambda a: _header(a, _bad_header_offset)},
            errors.ModelLoadError,
            "'codebooks' range 1000000",
        ),
        (
            {"header": lambda a: _header(a, _bad_float_range)},
            errors.ModelLoadError,
            "'floats' range",
        ),
        ({"header": lambda a: a[:-5]}, errors.ModelLoadError, "unreadable header"),
    ],
)
def test_a_corrupt_codes_file_is_refused_and_nothing_written(
    pq_model, npz, x, tmp_path, changes, error, message
):
    model, _ = pq_model
    bad = _rewrite(npz, tmp_path, **changes)
    with pytest.raises(error, match="bad.pq.npz") as e:
        compact_export.export_from_codes_file(model, bad, tmp_path / "c.tflite", x_verify=x)
    assert message in str(e.value)
    assert not (tmp_path / "c.tflite").exists()


@pytest.mark.parametrize("cut", [0, 100, -50])
def test_a_truncated_or_garbled_codes_file_is_refused(pq_model, npz, x, tmp_path, cut):
    model, _ = pq_model
    raw = open(npz, "rb").read()
    bad = tmp_path / "bad.pq.npz"
    bad.write_bytes(raw[:cut] if cut else b"not a zip file at all")
    with pytest.raises(errors.ModelLoadError, match="bad.pq.npz.*unreadable"):
        compact_export.export_from_codes_file(model, bad, tmp_path / "c.tflite", x_verify=x)


def test_the_codes_file_of_another_model_is_refused(pq_model, x, tmp_path):
    model, _ = pq_model
    other, rng = _net()
    other_codes = _codes(other, np.random.default_rng(7), "float32")
    path = storage.save(tmp_path / "other.pq.npz", other, other_codes)
    with pytest.raises(errors.InvalidArgumentError, match="away from the layer's kernel"):
        compact_export.export_from_codes_file(model, path, tmp_path / "c.tflite", x_verify=x)
