"""The bad-input catalogue of issue 20: each class ends in a clear error before work, or in
the one documented correct behaviour, at every entry that takes data.

Classes covered here: crafted pickles (1), NaN/inf images (2), uint8 scale (3), labels (4),
shapes and output counts (5). The command-line cases (tracebacks, exit codes, output paths)
are in ``test_cli_errors.py``; resume and ``.h5`` integrity in ``test_resume.py``.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import datasets, errors, inputs, learner, safe_pickle, training
from pocketflow_tf.compat import keras, tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- 1. pickled data files are code -----------------------------------------------------------
class _Payload:
    """Unpickling this writes the marker file: what a crafted ``data_batch_1`` would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cifar_folder(tmp_path, crafted_marker=None, label=None, rows=4):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (rows, 3072)).astype(np.uint8)
        labels = list(map(int, rng.integers(0, 10, rows)))
        if label is not None and name == "test_batch":
            labels[1] = label
        payload = {b"data": x, b"labels": labels, b"batch_label": b"x"}
        if crafted_marker is not None and name == "data_batch_1":
            payload[b"filenames"] = [_Payload(str(crafted_marker))]
        with open(folder / name, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    return folder


def test_crafted_cifar_pickle_does_not_run_api(tmp_path):
    marker = tmp_path / "pwned"
    _cifar_folder(tmp_path, crafted_marker=marker)
    with pytest.raises(errors.DataError, match=r"data_batch_1.*io\.open"):
        datasets.load_cifar10(str(tmp_path))
    assert not marker.exists()


def test_crafted_cifar_pickle_does_not_run_cli(tmp_path):
    marker = tmp_path / "pwned"
    _cifar_folder(tmp_path, crafted_marker=marker)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "nets", "lenet_at_cifar10_run.py"),
         "--data_dir", str(tmp_path), "--save_path", str(tmp_path / "out" / "model.keras")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert not marker.exists()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data_batch_1" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_plain_values_and_arrays_still_load():
    blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"l": [1, 2]})
    out = safe_pickle.loads(blob, "ok")
    assert out[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]] and out[b"l"] == [1, 2]


def test_object_arrays_are_refused():
    blob = pickle.dumps(np.array([1, "a"], dtype=object))
    with pytest.raises(errors.DataError, match="object"):
        safe_pickle.loads(blob, "obj.pkl")


def test_garbled_pickle_is_a_data_error(tmp_path):
    with pytest.raises(errors.DataError, match="garbled"):
        safe_pickle.loads(b"\x80\x02}q\x00(X", "garbled")


def test_cifar_label_out_of_range_is_refused_at_load(tmp_path):
    _cifar_folder(tmp_path, label=42)
    with pytest.raises(errors.InvalidArgumentError, match=r"test labels.*index 1: 42"):
        datasets.load_cifar10(str(tmp_path))


def test_cifar_batch_of_the_wrong_size_is_refused(tmp_path):
    folder = _cifar_folder(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(errors.DataError, match=r"test_batch.*\(2, 100\)"):
        datasets.load_cifar10(str(tmp_path))


# -- the learners: every registered one, before any work ------------------------------------
def _make(name, tmp_path):
    cls = learner.get_learner_class(name)
    cfg = training.TrainConfig(epochs=1, batch_size=16)
    if name == "auto":
        return cls(cfg, auto_target="2x faster", auto_dir=str(tmp_path / "auto"), verbose=0)
    return cls(cfg, verbose=0)


ALL_LEARNERS = learner.available()


def _nan_images(x):
    x = x.copy()
    x[5, 0, 0, 0] = np.nan
    x[9, 1, 1, 0] = np.inf
    return x


BAD_FIT_INPUTS = {
    # case: (transform of (x, y), error pattern)
    "nan_images": (lambda x, y: (_nan_images(x), y), r"2 image\(s\) holding NaN or inf.*index 5"),
    "label_equal_classes": (
        lambda x, y: (x, np.where(np.arange(len(y)) == 3, 4, y)),
        r"outside \[0, 4\), first at index 3: 4",
    ),
    "negative_label": (
        lambda x, y: (x, np.where(np.arange(len(y)) == 7, -1, y)),
        r"outside \[0, 4\), first at index 7: -1",
    ),
    "fractional_label": (
        lambda x, y: (x, y.astype(np.float32) + (np.arange(len(y)) == 2) * 0.5),
        r"1 fractional label\(s\), first at index 2",
    ),
    "soft_labels": (
        lambda x, y: (x, np.full((len(y), 4), 0.25, np.float32)),
        r"not one-hot rows",
    ),
    "wrong_image_shape": (
        lambda x, y: (x[:, :6, :6], y),
        r"shape \(256, 6, 6, 1\).*\(N, 8, 8, 1\)",
    ),
    "length_mismatch": (lambda x, y: (x, y[:-3]), r"253 labels for 256 images"),
    "int32_images": (lambda x, y: ((x * 255).astype(np.int32), y), r"dtype int32"),
    "string_labels": (lambda x, y: (x, y.astype(str)), r"labels of dtype <U"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIT_INPUTS))
@pytest.mark.parametrize("name", ALL_LEARNERS)
def test_every_learner_refuses_bad_data_before_work(name, case, tiny_model, tiny_data, tmp_path):
    transform, pattern = BAD_FIT_INPUTS[case]
    x, y = transform(*tiny_data)
    before = [w.copy() for w in tiny_model.get_weights()]
    with pytest.raises(errors.InvalidArgumentError, match=pattern):
        _make(name, tmp_path).fit(tiny_model, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_model.get_weights(), strict=True))
    assert not (tmp_path / "auto").exists() or not os.listdir(tmp_path / "auto")


@pytest.mark.parametrize("name", ALL_LEARNERS)
def test_every_learner_refuses_an_output_count_below_the_labels(name, tiny_data, tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same")(inp)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(h))  # 3 outputs, labels reach 3
    with pytest.raises(errors.InvalidArgumentError, match=r"outside \[0, 3\)"):
        _make(name, tmp_path).fit(keras.Model(inp, out), *tiny_data)


@pytest.mark.parametrize("name", ALL_LEARNERS)
def test_every_learner_refuses_bad_validation_data(name, tiny_model, tiny_data, tmp_path):
    x, y = tiny_data
    with pytest.raises(errors.InvalidArgumentError, match=r"validation_data\[0\].*NaN"):
        _make(name, tmp_path).fit(tiny_model, x, y, validation_data=(_nan_images(x[:16]), y[:16]))


def test_a_one_unit_model_is_refused_on_more_than_two_classes(tiny_data):
    # One unit is a binary classifier (pocketflow_tf.heads): labels 2 and 3 are out of range.
    m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(
        errors.InvalidArgumentError,
        match=r"label\(s\) outside \[0, 2\).*Accepted: class indices 0\.\.1 \(a binary "
        r"classifier with one output unit: class 0 or 1\)",
    ):
        learner.get_learner_class("full-prec")(verbose=0).fit(m, *tiny_data)
    # A one-unit output through an activation that is not a sigmoid is no classifier.
    m = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1, "tanh", name="o")]
    )
    with pytest.raises(
        errors.InvalidArgumentError, match="one-unit output layer 'o' applying tanh"
    ):
        learner.get_learner_class("full-prec")(verbose=0).fit(m, *tiny_data)


def test_a_model_with_two_outputs_is_refused(tiny_data):
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    m = keras.Model(inp, [keras.layers.Dense(4)(h), keras.layers.Dense(4)(h)])
    with pytest.raises(errors.InvalidArgumentError, match="2 outputs"):
        learner.get_learner_class("full-prec")(verbose=0).fit(m, *tiny_data)


# -- 3. one documented scale for uint8, one-hot labels converted ----------------------------
def _train_once(model, x, y):
    lrn = learner.get_learner_class("full-prec")(
        training.TrainConfig(epochs=1, batch_size=32, seed=3), verbose=0
    )
    return lrn.fit(model, x, y).get_weights()


def test_uint8_images_train_exactly_like_their_scaled_floats(tiny_model, tiny_data):
    x, y = tiny_data
    x8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    w8 = _train_once(tiny_model, x8, y)
    wf = _train_once(tiny_model, x8.astype(np.float32) / 255, y)
    for a, b in zip(w8, wf, strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_hot_labels_train_exactly_like_indices(tiny_model, tiny_data):
    x, y = tiny_data
    w1 = _train_once(tiny_model, x, np.eye(4, dtype=np.float32)[y])
    w2 = _train_once(tiny_model, x, y)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tflite_runner_scales_uint8_and_refuses_nan(tiny_model, tiny_data):
    from pocketflow_tf import tflite_export, tflite_verify

    runner = tflite_verify.TFLiteRunner(tflite_export.convert(tiny_model, "float"))
    x8 = np.round(np.clip(tiny_data[0][:8], 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(
        runner.predict(x8), runner.predict(x8.astype(np.float32) / np.float32(255))
    )
    with pytest.raises(errors.InvalidArgumentError, match="NaN or inf"):
        runner.predict(_nan_images(tiny_data[0][:16]))


# -- 4/5. evaluation: a meaningless accuracy is an error --------------------------------------
def test_evaluation_refuses_labels_beyond_the_outputs(tiny_model, tiny_data):
    x, y = tiny_data
    with pytest.raises(errors.InvalidArgumentError, match="outside"):
        training.evaluate_accuracy(tiny_model, x, y + 1)


def test_evaluation_refuses_the_wrong_input_shape(tiny_model):
    with pytest.raises(errors.InvalidArgumentError, match=r"shape \(4, 9, 9, 1\)"):
        training.evaluate_accuracy(tiny_model, np.zeros((4, 9, 9, 1), np.float32), np.zeros(4))


def test_output_count_is_checked_against_the_data_sets_classes(tiny_model):
    with pytest.raises(errors.InvalidArgumentError, match=r"4 outputs.*10 classes"):
        inputs.model_classes(tiny_model, num_classes=10)


def test_from_arrays_refuses_nan_and_negative_labels():
    with pytest.raises(errors.InvalidArgumentError, match="NaN"):
        datasets.from_arrays(np.full((4, 2, 2, 1), np.nan, np.float32), np.arange(4) % 2)
    with pytest.raises(errors.InvalidArgumentError, match=r"index 2: -1"):
        datasets.from_arrays(np.zeros((4, 2, 2, 1), np.float32), np.array([0, 1, -1, 1]))


# -- tf.data: the element spec and the first batch --------------------------------------------
def test_dataset_first_batch_and_spec_are_checked(tiny_model, tiny_data):
    x, y = tiny_data
    lrn = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1), verbose=0)
    bad = tf.data.Dataset.from_tensor_slices((_nan_images(x), y)).batch(32)
    with pytest.raises(errors.InvalidArgumentError, match=r"x \(first batch\) images.*NaN"):
        lrn.fit(tiny_model, bad)
    wrong = tf.data.Dataset.from_tensor_slices((x[:, :6, :6], y)).batch(32)
    with pytest.raises(errors.InvalidArgumentError, match=r"shaped \(None, 6, 6, 1\)"):
        lrn.fit(tiny_model, wrong)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(errors.InvalidArgumentError, match=r"shaped \(8, 8, 1\)"):
        lrn.fit(tiny_model, unbatched)


def test_uint8_dataset_trains_like_uint8_arrays(tiny_model, tiny_data):
    x, y = tiny_data
    x8 = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    lrn = learner.get_learner_class("full-prec")(
        training.TrainConfig(epochs=1, batch_size=32, seed=3), verbose=0
    )
    ds = tf.data.Dataset.from_tensor_slices((x8, y)).batch(32)
    out = lrn.fit(tiny_model, ds)
    assert np.isfinite(out.get_weights()[0]).all()
    probe = x8[:4].astype(np.float32) / 255
    # The map scaled the images: a model trained on 0..255 would give logits far larger.
    assert np.abs(out.predict(probe, verbose=0)).max() < 50


def test_eval_of_a_model_with_the_wrong_output_count_exits_2(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(5)]
    )  # 5 outputs; Fashion-MNIST has 10 classes
    path = str(tmp_path / "m5.keras")
    m.save(path)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "nets", "convnet_at_fmnist_run.py"),
         "--exec_mode", "eval", "--model_path", path,
         "--save_path", str(tmp_path / "out" / "model.keras")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "5 outputs" in proc.stderr and "10 classes" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- tf.data: every later batch, and datasets that never end -----------------------------------
def _later_batch_bad(x, y, case):
    x, y = x.copy(), y.copy()
    if case == "nan":
        x[100, 2, 3, 0] = np.nan  # in the 4th batch of 32: the first batch is clean
    else:
        y[100] = 7
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


LATER_BATCH = {
    "nan": r"Invalid value for `x`: 'a later batch holding NaN or inf images'\. "
    r"Accepted: finite values only\.",
    "label": r"Invalid value for `x`: 'a later batch with label\(s\) outside \[0, 4\)'\. "
    r"Accepted: class indices 0\.\.3",
}


@pytest.mark.parametrize("case", sorted(LATER_BATCH))
@pytest.mark.parametrize(
    "name, options",
    [("full-prec", {}), ("channel", {"cp_preserve_ratio": 0.5, "cp_nb_samples": 64})],
)
def test_a_later_batch_with_nan_images_or_a_bad_label_is_refused_by_name(
    name, options, case, tiny_model, tiny_data
):
    # channel reads batches for its calibration (its Lasso failed with "alpha nan"),
    # full-prec only in training: both end in the input contract's error.
    ds = _later_batch_bad(*tiny_data, case)
    cfg = training.TrainConfig(epochs=1, batch_size=32)
    lrn = learner.get_learner_class(name)(cfg, verbose=0, **options)
    with pytest.raises(errors.InvalidArgumentError, match=LATER_BATCH[case]):
        lrn.fit(tiny_model, ds)


def test_a_later_validation_batch_with_nan_is_refused_by_name(tiny_model, tiny_data):
    x, y = tiny_data
    val = _later_batch_bad(x, y, "nan")
    lrn = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1), verbose=0)
    with pytest.raises(errors.InvalidArgumentError, match=r"`validation_data`: 'a later batch"):
        lrn.fit(tiny_model, x, y, validation_data=val)


def test_an_infinite_dataset_is_refused_before_work(tiny_model, tiny_data):
    x, y = tiny_data
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    lrn = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1), verbose=0)
    for args, kwargs, name in (
        ((endless,), {}, "x"),
        ((x, y), {"validation_data": endless}, "validation_data"),
    ):
        with pytest.raises(errors.InvalidArgumentError) as caught:
            lrn.fit(tiny_model, *args, **kwargs)
        assert caught.value.name == name
        assert caught.value.value == "an infinite dataset (made by .repeat())"
        assert "drop .repeat()" in caught.value.accepted
    assert lrn.history is None  # refused before any training
    # A bounded repeat is a finite dataset, one epoch of 3 steps.
    bounded = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat().take(3)
    lrn.fit(tiny_model, bounded)
    assert len(lrn.history.history["loss"]) == 1


@pytest.mark.parametrize("given, missing", [("x_val", "y_val"), ("y_val", "x_val")])
def test_x_val_and_y_val_come_together(given, missing, tiny_model, tiny_data):
    x, y = tiny_data
    half = {"x_val": x[:16], "y_val": y[:16]}
    lrn = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1), verbose=0)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        lrn.fit(tiny_model, x, y, **{given: half[given]})
    assert (caught.value.name, caught.value.value) == (missing, None)
    assert f"of {given}: x_val and y_val are given together" in str(caught.value)


def test_uint8_labels_of_a_model_with_more_than_256_classes_pass_the_batch_check():
    # The later-batch check compared labels with the class count cast to the labels' dtype:
    # 300 as uint8 is 44, so label 100 was refused.
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(300)])
    y = np.array([0, 1, 2, 100, 255], np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 2), np.float32), y)).batch(2)
    assert [int(v) for _, b in inputs.dataset(m, ds) for v in b] == [0, 1, 2, 100, 255]


def test_a_later_batch_of_soft_or_multi_label_rows_is_refused_by_name(tiny_model, tiny_data):
    # The first batch holds one-hot rows, so the dataset is taken as one-hot; a later batch of
    # soft labels was turned into indices by argmax without a word.
    x, y = tiny_data
    rows = np.eye(4, dtype=np.float32)[y]
    for bad in (np.array([0.7, 0.3, 0.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.0])):
        r = rows.copy()
        r[100] = bad  # in the 4th batch of 32
        ds = tf.data.Dataset.from_tensor_slices((x, r)).batch(32)
        lrn = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1), verbose=0)
        with pytest.raises(
            errors.InvalidArgumentError,
            match=r"`x`: 'a later batch with labels that are not one-hot rows'\. "
            r"Accepted: one-hot rows \(N, 4\)",
        ):
            lrn.fit(tiny_model, ds)
    # Clean one-hot rows still train, batch after batch.
    ds = tf.data.Dataset.from_tensor_slices((x, rows)).batch(32)
    assert [int(v) for _, b in inputs.dataset(tiny_model, ds) for v in b] == list(y)


def test_a_later_batch_of_another_image_shape_is_refused_by_name(tiny_model, tiny_data):
    # A generator's spec may leave the image size open: a later batch of 6x6 images failed
    # inside the model with a raw shape error.
    x, y = tiny_data

    def batches():
        yield x[:32], y[:32]
        yield x[32:64, :6, :6], y[32:64]

    spec = (
        tf.TensorSpec((None, None, None, 1), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
    ds = ds.apply(tf.data.experimental.assert_cardinality(2))
    lrn = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1), verbose=0)
    with pytest.raises(
        errors.InvalidArgumentError,
        match=r"`x`: 'a later batch of images of another shape'\. "
        r"Accepted: images of shape \(N, 8, 8, 1\) for this model",
    ):
        lrn.fit(tiny_model, ds)


def test_a_later_batch_label_out_of_a_binary_models_range_names_the_binary_classifier():
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2), np.float32), [0, 1, 1, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(inputs.dataset(m, ds.batch(2)))
    said = str(inputs.batch_error(caught.value))
    assert "outside [0, 2)" in said and "a binary classifier with one output unit" in said


def test_unbuilt_and_subclassed_models_are_named_by_learners_and_export(tmp_path):
    # Raw Keras errors before: set_weights in copy_model, "has never been called" in the
    # export, "ValueError: Weights for model 'sequential' have not yet been created".
    from pocketflow_tf import tflite_verify
    from tests.tiny_models import SubclassedNet

    x = np.random.default_rng(0).random((200, 8, 8, 1)).astype("float32")
    y = np.arange(200) % 4
    unbuilt = keras.Sequential(
        [keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    sub = SubclassedNet()
    sub(x[:2])
    fit = learner.get_learner_class("full-prec")(training.TrainConfig(epochs=1)).fit
    for model, error, said in (
        (unbuilt, errors.InvalidArgumentError, "never built"),
        (sub, errors.UnsupportedModelError, "'SubclassedNet' is a subclassed"),
    ):
        with pytest.raises(error, match=said):
            fit(model, x, y)
        with pytest.raises(error, match=said):
            tflite_verify.export_tflite(model, tmp_path / "m.tflite", mode="float", x_verify=x)
    assert not os.listdir(tmp_path)
