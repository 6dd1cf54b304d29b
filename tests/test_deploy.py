"""The one deploy path: tflite_accuracy and deploy (export -> verify -> accuracy -> latency)."""

import numpy as np
import pytest

from pocketflow_tf import deploy, errors, tflite_export, tflite_verify
from pocketflow_tf.compat import keras


def _model():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    m.layers[0].set_weights([np.eye(4, 3, dtype=np.float32), np.zeros(3, np.float32)])
    return m


def _data(n=200):
    x = np.random.default_rng(0).random((n, 4), dtype=np.float32)
    return x, np.argmax(x[:, :3], axis=1)


def test_tflite_accuracy_matches_keras_on_labels_and_one_hot(tmp_path):
    m = _model()
    x, y = _data()
    y_bad = y.copy()
    y_bad[:50] = (y_bad[:50] + 1) % 3
    content = tflite_export.convert(m)
    assert tflite_verify.tflite_accuracy(content, x, y) == 1.0
    assert tflite_verify.tflite_accuracy(content, x, y_bad, batch_size=7) == 0.75
    assert tflite_verify.tflite_accuracy(content, x, np.eye(3)[y_bad]) == 0.75
    path = tmp_path / "m.tflite"
    path.write_bytes(content)
    assert tflite_verify.tflite_accuracy(str(path), x, y_bad) == 0.75


def test_tflite_accuracy_refuses_labels_of_another_length():
    x, y = _data()
    with pytest.raises(errors.InvalidArgumentError):
        tflite_verify.tflite_accuracy(tflite_export.convert(_model()), x, y[:10])


def test_tflite_accuracy_reads_labels_as_every_learner_does():
    # One label contract (inputs.labels): (N, 1) indices are labels, soft rows and labels
    # the file has no output for are refused by name rather than argmax-ed or miscounted.
    x, y = _data()
    content = tflite_export.convert(_model())
    assert tflite_verify.tflite_accuracy(content, x, y[:, None]) == 1.0
    soft = np.full((len(x), 3), 1 / 3, np.float32)
    with pytest.raises(errors.InvalidArgumentError, match="soft|one-hot"):
        tflite_verify.tflite_accuracy(content, x, soft)
    y_out = y.copy()
    y_out[7] = 3
    with pytest.raises(errors.InvalidArgumentError, match=r"index 7: 3.*the .tflite has 3 classes"):
        tflite_verify.tflite_accuracy(content, x, y_out)


def test_deploy_exports_scores_and_times(tmp_path):
    m = _model()
    x, y = _data()
    ref = deploy.deploy(m, str(tmp_path / "ref.tflite"), x_verify=x, y_verify=y)
    assert ref.acc is None and ref.latency_ratio is None
    assert (tmp_path / "ref.tflite.sha256").exists()
    out = deploy.deploy(
        m,
        str(tmp_path / "m.tflite"),
        x_verify=x,
        x_eval=x,
        y_eval=y,
        reference=ref.export.path,
        rounds=2,
    )
    assert out.acc == 1.0
    assert out.latency_ratio > 0
    assert out.export.bytes == ref.export.bytes


def test_deploy_needs_labels_with_eval_inputs(tmp_path):
    x, _ = _data()
    with pytest.raises(errors.InvalidArgumentError):
        deploy.deploy(_model(), str(tmp_path / "m.tflite"), x_verify=x, x_eval=x)
    assert not (tmp_path / "m.tflite").exists()
