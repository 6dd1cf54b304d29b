"""Safe model loading/saving: formats, Lambda refusal, corrupt files, the Keras 3 bridge."""

import os

import numpy as np
import pytest

from pocketflow_tf import errors, model_io
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import resnet
from tests.tiny_models import SubclassedNet


def _residual_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    y = keras.layers.ReLU()(x)
    x = keras.layers.Add()([y, keras.layers.DepthwiseConv2D(3, padding="same")(y)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _lambda_model():
    inp = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    return keras.Model(inp, keras.layers.Dense(2)(x))


def _save(model, path):
    if path.endswith("_sm"):
        model.save(path, save_format="tf")
    else:
        model.save(path)
    return path


X8 = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)


@pytest.mark.parametrize(
    "name, fmt", [("m.keras", "keras"), ("m.h5", "h5"), ("m_sm", "savedmodel")]
)
def test_round_trip_each_format(tmp_path, name, fmt):
    model = _residual_model()
    path = _save(model, str(tmp_path / name))
    info = model_io.load_model_with_info(path)
    assert info.source_format == fmt and not info.saved_by_keras3
    np.testing.assert_allclose(
        info.model.predict(X8, verbose=0), model.predict(X8, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "m_sm"])
def test_lambda_refused_without_trust(tmp_path, name):
    path = _save(_lambda_model(), str(tmp_path / name))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(errors.ModelLoadError) as e:
        model_io.load_model(path)
    msg = str(e.value)
    assert path in msg and "'double'" in msg and "Lambda" in msg and "trust_model" in msg
    assert sorted(os.listdir(tmp_path)) == before
    loaded = model_io.load_model(path, trust_unsafe=True)
    x = np.ones((1, 4), np.float32)
    assert loaded.predict(x, verbose=0).shape == (1, 2)


def _code_model(witness):
    """A model whose Lambda writes ``witness`` when it runs (as loading it would run it)."""
    inp = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: (open(witness, "w").write("ran"), t)[1], name="runs_code")(
        inp
    )
    return keras.Model(inp, keras.layers.Dense(2)(x))


def test_code_hidden_in_other_config_shapes_is_refused_before_it_runs(tmp_path):
    """Config shapes the loaders read but a walk of config["layers"] misses: a legacy .h5
    Sequential whose layers are a bare list, and a SavedModel whose metadata spells the class
    with a JSON escape (a byte search misses it). Both ran the Lambda before."""
    import json

    import h5py
    from tf_keras.protobuf import saved_metadata_pb2

    witness = str(tmp_path / "ran")
    inp = keras.Input((4,))
    seq = keras.Sequential(
        [inp, keras.layers.Lambda(lambda t: (open(witness, "w").write("ran"), t)[1])]
    )
    legacy = str(tmp_path / "legacy.h5")
    seq.save(legacy)
    with h5py.File(legacy, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"] = config["config"]["layers"]  # the legacy bare-list form
        f.attrs["model_config"] = json.dumps(config)
    saved = str(tmp_path / "escaped_sm")
    _code_model(witness).save(saved, save_format="tf")
    meta = os.path.join(saved, "keras_metadata.pb")
    pb = saved_metadata_pb2.SavedMetadata()
    pb.ParseFromString(open(meta, "rb").read())
    for node in pb.nodes:
        node.metadata = node.metadata.replace('"Lambda"', '"Lambd\\u0061"')
    open(meta, "wb").write(pb.SerializeToString())
    os.remove(witness)  # written while the models were built and saved
    for path in (legacy, saved):
        with pytest.raises(errors.ModelLoadError, match="is a Lambda layer.*trust_model"):
            model_io.load_model(path)
        assert not os.path.exists(witness), path
    # Unreadable metadata cannot be checked: refused, not loaded on trust.
    open(meta, "wb").write(b"\x0a\xff\xff not a protobuf")
    with pytest.raises(errors.ModelLoadError, match="cannot be read.*cannot be checked"):
        model_io.load_model(saved)
    assert not os.path.exists(witness)


@pytest.mark.parametrize("name", ["m.keras", "m.h5"])
def test_truncated_file_is_named_and_nothing_written(tmp_path, name):
    path = _save(_residual_model(), str(tmp_path / name))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(errors.ModelLoadError) as e:
        model_io.load_model(path)
    assert path in str(e.value) and "corrupt or truncated" in str(e.value)
    assert "does not exist" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == before


def test_garbage_missing_and_unknown_files(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(errors.ModelLoadError, match="corrupt or truncated"):
        model_io.load_model(str(junk))
    with pytest.raises(errors.ModelLoadError, match="does not exist"):
        model_io.load_model(str(tmp_path / "nope.keras"))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(errors.ModelLoadError, match="unknown extension '.onnx'"):
        model_io.load_model(str(onnx))
    with pytest.raises(errors.ModelLoadError, match="saved_model.pb"):
        model_io.load_model(str(tmp_path))


def test_weights_only_h5_is_explained(tmp_path):
    path = str(tmp_path / "w.h5")
    _residual_model().save_weights(path)
    with pytest.raises(errors.ModelLoadError, match="weights-only"):
        model_io.load_model(path)


# -- Keras 3 ------------------------------------------------------------------------------
keras3 = pytest.importorskip("keras")


def _k3_residual():
    keras3.utils.set_random_seed(1)
    inp = keras3.Input((8, 8, 1))
    x = keras3.layers.Rescaling(1 / 0.35, offset=-0.8)(inp)
    x = keras3.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    bn = keras3.layers.BatchNormalization()
    y = keras3.layers.ReLU()(bn(x))
    x = keras3.layers.Add()([y, keras3.layers.DepthwiseConv2D(3, padding="same")(y)])
    x = keras3.layers.GlobalAveragePooling2D()(x)
    model = keras3.Model(inp, keras3.layers.Dense(3)(x))
    rng = np.random.default_rng(2)  # non-trivial moving statistics must survive the bridge
    bn.set_weights([rng.random(4) + 0.5, rng.random(4), rng.random(4), rng.random(4) + 0.5])
    return model


def test_keras3_is_really_keras3():
    assert keras3.__version__.startswith("3")


def test_keras3_functional_and_sequential_rebuilt_exactly(tmp_path):
    k3 = _k3_residual()
    path = str(tmp_path / "k3.keras")
    k3.save(path)
    info = model_io.load_model_with_info(path)
    assert info.saved_by_keras3 and isinstance(info.model, keras.Model)
    np.testing.assert_allclose(
        info.model.predict(X8, verbose=0), k3.predict(X8, verbose=0), atol=1e-5
    )

    seq = keras3.Sequential(
        [
            keras3.Input((6,)),
            keras3.layers.Dense(4, activation="relu"),
            keras3.layers.Dropout(0.2),
            keras3.layers.Dense(2),
        ]
    )
    spath = str(tmp_path / "seq.keras")
    seq.save(spath)
    x = np.random.default_rng(3).random((3, 6), dtype=np.float32)
    np.testing.assert_allclose(
        model_io.load_model(spath).predict(x, verbose=0), seq.predict(x, verbose=0), atol=1e-5
    )


def test_keras3_copy_round_trip(tmp_path):
    k3 = _k3_residual()
    src = str(tmp_path / "in.keras")
    k3.save(src)
    model = model_io.load_model(src)
    out = model_io.save_model(model, str(tmp_path / "out.keras"), keras3_copy=True)
    assert out["keras3"] == str(tmp_path / "out.keras3.keras")
    back = keras3.models.load_model(out["keras3"])
    np.testing.assert_allclose(back.predict(X8, verbose=0), k3.predict(X8, verbose=0), atol=1e-5)


def test_keras3_copy_of_resnet20(tmp_path):
    model = resnet.build_resnet((28, 28, 1), 10, depth=20, mean=0.286, std=0.353)
    out = model_io.save_model(model, str(tmp_path / "r.keras"), keras3_copy=True)
    back = keras3.models.load_model(out["keras3"])
    x = np.random.default_rng(4).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_keras3_custom_layer_named_in_error(tmp_path):
    @keras3.saving.register_keras_serializable(package="pftf_test")
    class Scale(keras3.layers.Layer):
        def call(self, x):
            return x * 3.0

    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Dense(2)(Scale(name="my_scale")(inp)))
    path = str(tmp_path / "custom.keras")
    model.save(path)
    with pytest.raises(errors.ModelLoadError) as e:
        model_io.load_model(path)
    assert "'my_scale'" in str(e.value) and "Scale" in str(e.value) and path in str(e.value)


def test_keras3_lambda_refused(tmp_path):
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Lambda(lambda t: t + 1.0, name="plus")(inp))
    path = str(tmp_path / "lam.keras")
    model.save(path)
    with pytest.raises(errors.ModelLoadError, match="'plus' is a Lambda"):
        model_io.load_model(path)


# -- saving and graph checks --------------------------------------------------------------
def test_save_is_atomic_and_checks_extension(tmp_path, monkeypatch):
    model = _residual_model()
    with pytest.raises(errors.InvalidArgumentError, match="'m.pt'"):
        model_io.save_model(model, "m.pt")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "save", boom)
    with pytest.raises(RuntimeError):
        model_io.save_model(model, str(tmp_path / "m.keras"))
    assert os.listdir(tmp_path) == []


def test_subclassed_model_needs_graph():
    with pytest.raises(errors.UnsupportedModelError, match="'SubclassedNet' is a subclassed"):
        model_io.require_graph(SubclassedNet(), "channel pruning")
    model_io.require_graph(_residual_model(), "channel pruning")  # functional: fine
