"""The ``.sha256`` digest beside every ``.h5`` the project writes, checked on loading."""

import logging
import os

import h5py
import numpy as np
import pytest

from pocketflow_tf import atomic_io, errors, model_io
from pocketflow_tf.compat import keras

X = np.random.default_rng(0).random((4, 6), dtype=np.float32)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu", name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h))


def _flip_byte_inside_a_weight(path):
    """Flips the sign-and-exponent byte of the output layer's first bias; returns its name."""
    found = {}

    def visit(name, obj):  # returns None: visititems stops at the first other value
        if isinstance(obj, h5py.Dataset):
            found[name] = obj.id.get_offset()

    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(visit)
    name = next(n for n in found if "logits" in n and "bias" in n)
    offset = found[name]
    assert offset is not None  # contiguous storage: the weight's bytes lie at that offset
    with open(path, "r+b") as f:
        f.seek(offset + 3)  # little-endian float32: byte 3 holds the sign and the exponent
        byte = f.read(1)
        f.seek(offset + 3)
        f.write(bytes([byte[0] ^ 0x40]))  # a zero bias becomes 2.0
    return name


def test_project_h5_has_a_digest_and_a_flipped_weight_byte_is_refused(tmp_path, caplog):
    model = _model()
    path = str(tmp_path / "m.h5")
    model_io.save_model(model, path)
    with open(path + ".sha256") as f:
        digest, name = f.read().split()
    assert digest == atomic_io.sha256_file(path) and name == "m.h5"  # `sha256sum -c` format
    with caplog.at_level(logging.WARNING, logger="pocketflow_tf.model_io"):
        back = model_io.load_model(path)
    assert "cannot be verified" not in caplog.text
    np.testing.assert_allclose(back.predict(X, verbose=0), model.predict(X, verbose=0))

    weight = _flip_byte_inside_a_weight(path)
    with pytest.raises(errors.ModelLoadError) as e:
        model_io.load_model(path)
    msg = str(e.value)
    assert path in msg and "digest mismatch: the file changed after it was written" in msg

    # What the digest guards against: without it the same file loads, with other outputs.
    os.remove(path + ".sha256")
    with caplog.at_level(logging.WARNING, logger="pocketflow_tf.model_io"):
        silent = model_io.load_model(path)
    assert "cannot be verified" in caplog.text and path in caplog.text
    diff = silent.predict(X, verbose=0) - model.predict(X, verbose=0)
    np.testing.assert_allclose(diff[:, 0], 2.0, rtol=1e-5, err_msg=weight)


def test_foreign_h5_loads_with_a_note(tmp_path, caplog):
    model = _model()
    path = str(tmp_path / "foreign.hdf5")
    model.save(path)  # written by Keras itself, not by the project: no digest
    with caplog.at_level(logging.WARNING, logger="pocketflow_tf.model_io"):
        back = model_io.load_model(path)
    assert f"{path} has no foreign.hdf5.sha256" in caplog.text
    assert "cannot be verified" in caplog.text
    np.testing.assert_allclose(back.predict(X, verbose=0), model.predict(X, verbose=0))
    assert sorted(os.listdir(tmp_path)) == ["foreign.hdf5"]  # loading writes nothing


def test_saving_again_replaces_the_digest_and_a_bad_digest_file_is_named(tmp_path):
    path = str(tmp_path / "m.h5")
    model_io.save_model(_model(0), path)
    second = _model(1)
    model_io.save_model(second, path)
    back = model_io.load_model(path)
    np.testing.assert_allclose(back.predict(X, verbose=0), second.predict(X, verbose=0))
    assert sorted(os.listdir(tmp_path)) == ["m.h5", "m.h5.sha256"]  # no temporary files

    with open(path + ".sha256", "w") as f:
        f.write("not-a-digest  m.h5\n")
    with pytest.raises(errors.ModelLoadError, match="'not-a-digest', not a sha256 digest"):
        model_io.load_model(path)


def test_keras_files_get_no_digest(tmp_path):
    # .keras zips carry CRCs that loading checks; no sidecar is written for them.
    path = str(tmp_path / "m.keras")
    model_io.save_model(_model(), path)
    assert os.listdir(tmp_path) == ["m.keras"]
