"""The installed ``pocketflow-tf`` command and the user-data loaders behind it.

One real run of the console script (``.venv/bin/pocketflow-tf compress`` on a generated image
folder and a small trained ``.keras`` model) in a subprocess; the clear errors in-process
(``command.main``), each raised before any work: nothing is written to ``--out``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pocketflow_tf import errors, model_io, tflite_verify, user_data
from pocketflow_tf.app import command
from pocketflow_tf.compat import keras, tf

_COLORS = [(220, 40, 40), (40, 220, 40), (40, 40, 220)]
#: Images per class: compress verifies its exports on >= 200 held-out + training images.
_PER_CLASS = 80


def _write_folder(root: str, classes: int = 3, per_class: int = _PER_CLASS) -> str:
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = os.path.join(root, f"class_{c}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            img = np.clip(rng.normal(_COLORS[c % 3], 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            tf.io.write_file(os.path.join(d, f"{i}.png"), tf.io.encode_png(img))
    return root


def _model(outputs: int = 3, train: bool = True) -> keras.Model:
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(outputs),
        ]
    )
    if train:
        rng = np.random.default_rng(1)
        x = np.concatenate([rng.normal(c, 30, (40, 16, 16, 3)) for c in _COLORS]) / 255.0
        y = np.repeat(np.arange(3), 40)
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x.astype("float32"), y, epochs=5, verbose=0)
    return m


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("command")
    folder = _write_folder(str(root / "imgs"))
    model_path = str(root / "user.keras")
    model_io.save_model(_model(), model_path)
    return {"root": str(root), "folder": folder, "model": model_path}


def _run_main(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        command.main(["pocketflow-tf", *argv])
    return exc.value.code, capsys.readouterr().err


def _console_script() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "pocketflow-tf")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not installed (pip install -e . installs it)")
    return path


def test_compress_command_writes_a_verified_tflite_and_the_report(work, tmp_path):
    out = str(tmp_path / "out")
    argv = [
        _console_script(),
        "compress",
        work["model"],
        "--data",
        work["folder"],
        "--input_scale",
        "0..1",
        "--target",
        "2x faster",
        "--out",
        out,
        "--auto_max_trials",
        "2",
        "--auto_proxy_steps",
        "5",
        "--verbose",
        "0",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    # 3 = finished without meeting the target: the model, the .tflite and the report are
    # still written (a tiny model may fall just short of 2x).
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    verdict = "met" if proc.returncode == 0 else "NOT MET"
    assert f"target           {verdict}" in proc.stdout
    tflite = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("tflite"))
    assert os.path.exists(tflite) and os.path.exists(tflite + ".sha256")
    with open(os.path.join(out, "auto_report.json")) as f:
        report = json.load(f)
    assert report["answer"]["summary"]
    assert os.path.exists(os.path.join(out, "auto_report.html"))
    assert os.path.exists(os.path.join(out, "model.keras"))
    # The .tflite classifies the folder's images like the trained model did.
    data = user_data.from_image_folder(
        work["folder"], image_size=(16, 16), channels=3, input_scale="0..1", check="none"
    )
    x, y = data.to_arrays("train")
    pred = tflite_verify.TFLiteRunner(tflite).predict(x[:64])
    assert np.mean(np.argmax(pred, -1) == y[:64]) > 0.9


def test_the_console_script_reports_a_user_error_in_one_line(work, tmp_path):
    proc = subprocess.run(
        [_console_script(), "compress", work["model"], "--data", work["folder"]]
        + ["--input_scale", "0-1", "--target", "2x faster", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: Invalid value for `input_scale`: '0-1'")
    )
    assert "Traceback" not in proc.stderr


def _compress_args(work, out, **over):
    args = {
        "data": work["folder"],
        "input_scale": "0..1",
        "target": "2x faster",
        "out": out,
    }
    args.update(over)
    model = args.pop("model", work["model"])
    flat = ["compress", model]
    for k, v in args.items():
        if v is not None:
            flat += [f"--{k}", v]
    return flat


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"input_scale": "0-255"}, "Invalid value for `input_scale`: '0-255'"),
        ({"input_scale": None}, "Invalid value for `input_scale`: None"),
        ({"model": "/no/such/model.keras"}, "Invalid value for `MODEL`: '/no/such/model.keras'"),
        ({"data": "/no/such/folder"}, "Invalid value for `data`: '/no/such/folder'"),
        ({"target": "3x smaller-ish"}, "3x smaller-ish"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(work, tmp_path, capsys, over, expected):
    out = str(tmp_path / "out")
    code, err = _run_main(_compress_args(work, out, **over), capsys)
    assert code == 2
    assert expected in err
    assert not os.path.exists(out)


def test_an_output_folder_that_cannot_be_written_is_refused(work, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _run_main(_compress_args(work, str(blocker / "out")), capsys)
    assert code == 2 and "Invalid value for `out`" in err and "is a file" in err


def test_an_image_folder_with_one_class_is_refused(work, tmp_path, capsys):
    one = _write_folder(str(tmp_path / "one"), classes=1, per_class=2)
    code, err = _run_main(_compress_args(work, str(tmp_path / "out"), data=one), capsys)
    assert code == 2
    assert "at least 2 classes (found 1: ['class_0'])" in err


def test_unreadable_images_are_named(work, tmp_path, capsys):
    folder = _write_folder(str(tmp_path / "bad"), per_class=2)
    bogus = os.path.join(folder, "class_1", "zz_notes.png")
    with open(bogus, "w") as f:
        f.write("not an image")
    code, err = _run_main(_compress_args(work, str(tmp_path / "out"), data=folder), capsys)
    assert code == 2 and bogus in err and "not a PNG, JPEG, GIF or BMP" in err

    # A PNG cut short passes the header check but not the full decode.
    os.remove(bogus)
    good = os.path.join(folder, "class_2", "0.png")
    with open(good, "rb") as f:
        raw = f.read()
    with open(good, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(errors.DataError, match="0.png"):
        user_data.scan_image_folder(folder, check="full", stream=None)
    assert user_data.scan_image_folder(folder, check="header").num_classes == 3


def _keras_count(folder: str) -> int:
    ds = user_data.from_image_folder(
        folder, image_size=(16, 16), channels=3, input_scale="0..1", validation_split=None,
        check="none", stream=None,
    ).train  # fmt: skip
    return sum(len(y) for _, y in ds)


def test_a_hidden_folder_is_not_a_class(tmp_path):
    # Jupyter leaves .ipynb_checkpoints in every folder it opens; keras skips hidden folders.
    # Empty, it was refused as a class without images; holding a copy of an image, it ended
    # in keras's raw "class_names passed did not match" ValueError.
    folder = _write_folder(str(tmp_path / "f"), per_class=2)
    os.makedirs(os.path.join(folder, ".ipynb_checkpoints"))
    assert user_data.scan_image_folder(folder, stream=None).class_names == [
        "class_0", "class_1", "class_2",
    ]  # fmt: skip
    hidden = os.path.join(folder, ".ipynb_checkpoints", "0.png")
    with open(os.path.join(folder, "class_0", "0.png"), "rb") as f, open(hidden, "wb") as g:
        g.write(f.read())
    data = user_data.from_image_folder(
        folder, image_size=(16, 16), channels=3, input_scale="0..1", stream=None,
        validation_split=0.2,
    )  # fmt: skip
    assert data.num_classes == 3 and (data.num_train, data.num_val) == (5, 1)


def test_a_validation_split_that_holds_no_image_is_refused_by_name(tmp_path):
    # 0.1 of 6 images is none: keras then sliced its training files with [:-0] and failed
    # with "No training images found in directory".
    folder = _write_folder(str(tmp_path / "f"), per_class=2)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        user_data.from_image_folder(
            folder, image_size=(16, 16), channels=3, input_scale="0..1", stream=None,
            validation_split=0.1,
        )  # fmt: skip
    assert caught.value.name == "validation_split" and caught.value.value == 0.1
    assert "at least one of the 6 images (>= 0.167)" in caught.value.accepted
    # The share said is one that works (1/3 printed as 0.333 would hold no image of 3).
    three = _write_folder(str(tmp_path / "three"), classes=3, per_class=1)
    with pytest.raises(errors.InvalidArgumentError, match=r">= 0\.334\)"):
        user_data.from_image_folder(
            three, image_size=(16, 16), channels=3, input_scale="0..1", stream=None,
            validation_split=0.333,
        )  # fmt: skip
    data = user_data.from_image_folder(
        three, image_size=(16, 16), channels=3, input_scale="0..1", stream=None,
        validation_split=0.334,
    )  # fmt: skip
    assert data.num_val == 1


def test_the_scan_lists_the_files_keras_reads_through_linked_folders(tmp_path):
    # keras follows a symbolic link to a folder inside a class; the scan did not, so the
    # counts (and the shards, and the check of every image) left those images out.
    folder = _write_folder(str(tmp_path / "f"), per_class=2)
    extra = _write_folder(str(tmp_path / "extra"), classes=1, per_class=3)
    os.symlink(os.path.join(extra, "class_0"), os.path.join(folder, "class_1", "more"))
    scan = user_data.scan_image_folder(folder, stream=None)
    assert scan.counts == {"class_0": 2, "class_1": 5, "class_2": 2}
    assert len(scan.files) == _keras_count(folder) == 9
    # A link back to a folder above it: keras would walk it forever; refused by name.
    loop = os.path.join(folder, "class_2", "again")
    os.symlink(os.path.join(folder, "class_2"), loop)
    with pytest.raises(errors.InvalidArgumentError, match="symbolic-link loops; '.*again' leads"):
        user_data.scan_image_folder(folder, stream=None)


def test_a_model_whose_outputs_do_not_match_the_classes_is_refused(work, tmp_path, capsys):
    path = str(tmp_path / "five.keras")
    model_io.save_model(_model(outputs=5, train=False), path)
    code, err = _run_main(_compress_args(work, str(tmp_path / "out"), model=path), capsys)
    assert code == 2
    assert "'a model with 5 outputs'" in err and "3 classes in the data" in err


def test_unknown_subcommand_and_recipe_flags_are_refused(work, tmp_path, capsys):
    code, err = _run_main(["shrink", work["model"]], capsys)
    assert code == 2 and "Invalid value for `command`: 'shrink'" in err
    code, err = _run_main(
        [*_compress_args(work, str(tmp_path / "o")), "--nb_epochs_rat", "0.5"], capsys
    )
    assert code == 2 and "use --epochs" in err
    code, err = _run_main(["latency", work["model"]], capsys)
    assert code == 2 and "a .tflite file" in err


def test_image_folder_streams_in_the_stated_scale(work):
    data = user_data.from_image_folder(
        work["folder"],
        image_size=(16, 16),
        channels=3,
        input_scale="-1..1",
        validation_split=0.25,
        check="header",
    )
    assert (data.num_train, data.num_val) == (180, 60)
    assert isinstance(data.train, tf.data.Dataset)
    x, y = next(iter(data.train))
    assert (
        x.dtype == tf.float32 and -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    )
    assert float(tf.reduce_min(x)) < -0.5  # pixels near 0 map near -1, not to 0
    xv, yv = data.to_arrays("val")
    assert xv.shape == (60, 16, 16, 3) and set(yv) <= {0, 1, 2}


def test_npz_files(tmp_path):
    path = str(tmp_path / "d.npz")
    x = np.full((6, 4, 4, 1), 255, np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(6) % 2, x_test=x[:2], y_test=[0, 1])
    d = user_data.from_npz(path, input_scale="0..255")
    assert float(d.x_train.max()) == 255.0 and len(d.x_test) == 2
    with pytest.raises(errors.InvalidArgumentError, match="uint8 pixels"):
        user_data.from_npz(path)
    floats = str(tmp_path / "f.npz")
    np.savez(floats, x_train=np.full((4, 4, 4, 1), 200.0, np.float32), y_train=[0, 1, 0, 1])
    with pytest.raises(errors.InvalidArgumentError, match="spans 200..200"):
        user_data.from_npz(floats, input_scale="0..1")
    pickled = str(tmp_path / "p.npz")
    np.savez(pickled, x_train=np.array([{"a": 1}], dtype=object), y_train=[0])
    with pytest.raises(errors.DataError, match="Python objects"):
        user_data.from_npz(pickled, input_scale="0..1")
    other = str(tmp_path / "o.npz")
    np.savez(other, images=x)
    with pytest.raises(errors.InvalidArgumentError, match=r"arrays \['images'\]"):
        user_data.from_npz(other)


def test_learn_streams_an_image_folder_through_a_learner(work, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["learn", work["model"], "--data", work["folder"], "--input_scale", "0..1"]
    argv += ["--learner", "channel", "--cp_preserve_ratio", "0.5", "--out", out]
    argv += ["--verbose", "0", "--latency_runs", "20"]
    with pytest.raises(SystemExit) as exc:
        command.main(["pocketflow-tf", *argv])
    printed = capsys.readouterr()
    assert exc.value.code in (0, None), printed.err[-2000:]
    assert "== user / channel (learn) ==" in printed.out
    for name in ("model.keras", "model.float.tflite", "model.int8.tflite"):
        assert os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "model.learn.record.json")) as f:
        record = json.load(f)
    assert record["metrics"]["eval_split"] == "the held-out split of --data"
    assert record["metrics"]["flops"] < 0.7 * command_flops(work["model"])
    # A ws_* flag given to another learner is refused, as by the run scripts.
    code, err = _run_main([*argv[:-6], "--ws_prune_ratio", "0.5", "--out", out + "2"], capsys)
    assert code == 2 and "ws_prune_ratio" in err


def test_val_data_is_the_held_out_split_the_model_never_saw(work, tmp_path, capsys):
    val = _write_folder(str(tmp_path / "val"), per_class=70)
    out = str(tmp_path / "out")
    argv = ["export", work["model"], "--data", work["folder"], "--val_data", val]
    argv += ["--input_scale", "0..1", "--export_modes", "float", "--out", out]
    argv += ["--verbose", "0", "--latency_runs", "5"]
    with pytest.raises(SystemExit) as exc:
        command.main(["pocketflow-tf", *argv])
    printed = capsys.readouterr()
    assert exc.value.code in (0, None), printed.err[-2000:]
    with open(os.path.join(out, "model.export.record.json")) as f:
        metrics = json.load(f)["metrics"]
    # No --test_data: the model is evaluated on --val_data, all 210 images of it.
    assert metrics["eval_split"] == "--val_data"
    assert "evaluating on --val_data (210 images)" in printed.out


def test_val_data_splits_carry_their_provenance(work, tmp_path):
    model = model_io.load_model(work["model"])
    val = _write_folder(str(tmp_path / "val"), per_class=70)
    base = ["pocketflow-tf", "--data", work["folder"], "--input_scale", "0..1"]
    try:
        command.FLAGS.unparse_flags()
        command.FLAGS([*base, "--val_data", val])
        given = command.load_data(model, work["model"], stream=False).splits()
        command.FLAGS.unparse_flags()
        command.FLAGS([*base, "--validation_split", "0.25"])
        carved = command.load_data(model, work["model"], stream=False).splits()
    finally:
        command.FLAGS.unparse_flags()
    # --val_data: all of --data trains, the folder is the unseen validation split.
    assert (len(given.x_train), len(given.x_val), given.val_from_training) == (240, 210, False)
    assert (len(carved.x_train), len(carved.x_val), carved.val_from_training) == (180, 60, True)


def test_learn_auto_chooses_on_val_data_and_reports_on_test_data(work, tmp_path, capsys):
    val = _write_folder(str(tmp_path / "val"), per_class=70)
    test = _write_folder(str(tmp_path / "test"), per_class=30)
    out = str(tmp_path / "out")
    argv = ["learn", work["model"], "--data", work["folder"], "--val_data", val]
    argv += ["--test_data", test, "--input_scale", "0..1", "--learner", "auto"]
    argv += ["--auto_target", "2x faster", "--auto_max_trials", "1", "--auto_proxy_steps", "5"]
    argv += ["--out", out, "--verbose", "0", "--latency_runs", "5"]
    with pytest.raises(SystemExit) as exc:
        command.main(["pocketflow-tf", *argv])
    printed = capsys.readouterr()
    assert exc.value.code in (0, 3, None), printed.err[-2000:]
    (path,) = [
        os.path.join(d, "auto_report.json") for d, _, f in os.walk(out) if "auto_report.json" in f
    ]
    with open(path) as f:
        report = json.load(f)
    # Chosen on --val_data (unseen: no caveat), all of --data trained, --test_data reported.
    assert report["data"]["holdout_source"] == "given x_val (210 samples)"
    assert report["data"]["holdout_caveat"] is None
    assert report["data"]["n_train"] == 240
    assert report["validation"]["n"] == 90


def test_bad_val_data_and_test_data_are_refused_before_any_work(work, tmp_path, capsys):
    both = str(tmp_path / "both.npz")
    x = np.zeros((4, 16, 16, 3), np.float32)
    np.savez(both, x_train=x, y_train=[0, 1, 2, 0], x_test=x, y_test=[0, 1, 2, 0])
    val = _write_folder(str(tmp_path / "val"), per_class=2)
    other = _write_folder(str(tmp_path / "other"), per_class=2)
    for c in range(3):
        os.rename(os.path.join(other, f"class_{c}"), os.path.join(other, f"kind_{c}"))
    renamed = "class folders of --data ['class_0', 'class_1', 'class_2'] (it has ['kind_0'"
    cases = [
        # Label i is the i-th class folder by name: other names would mislabel every image.
        ({"val_data": other}, "Invalid value for `val_data`: '" + other),
        ({"val_data": other}, renamed),
        ({"test_data": other}, "Invalid value for `test_data`: '" + other),
        ({"test_data": other}, renamed),
        ({"val_data": "/no/such/val"}, "Invalid value for `val_data`: '/no/such/val'"),
        ({"val_data": work["folder"]}, "validation data other than --data"),
        (
            {"val_data": val, "test_data": val},
            "validation data other than --test_data (the test data is never searched on)",
        ),
        ({"val_data": val, "validation_split": "0.2"}, "`validation_split`: 0.2"),
        ({"val_data": both}, "x_train, y_train only"),
    ]
    for over, expected in cases:
        out = str(tmp_path / "out")
        code, err = _run_main(_compress_args(work, out, **over), capsys)
        assert code == 2 and expected in err, (over, err)
        assert not os.path.exists(out)
    # export evaluates on one split: --val_data beside --test_data would go unused.
    argv = ["export", work["model"], "--data", work["folder"], "--input_scale", "0..1"]
    argv += ["--val_data", val, "--test_data", str(tmp_path / "other"), "--out", out]
    code, err = _run_main(argv, capsys)
    assert code == 2 and f"Invalid value for `val_data`: '{val}'" in err and "unset with" in err
    assert not os.path.exists(out)


def command_flops(path: str) -> int:
    from pocketflow_tf import accounting

    return accounting.profile_model(model_io.load_model(path)).total_flops


def test_an_image_the_models_channel_count_cannot_read_is_named_by_the_check(tmp_path):
    # A CMYK JPEG decodes as 4 channels but not as grayscale: the check decoded it in its own
    # mode and passed, then keras's reader failed mid-run with a raw TensorFlow error.
    from PIL import Image

    folder = _write_folder(str(tmp_path / "imgs"), classes=2, per_class=3)
    bad = os.path.join(folder, "class_1", "cmyk.jpg")
    Image.new("CMYK", (16, 16), (0, 128, 255, 0)).save(bad)
    assert user_data.scan_image_folder(folder, stream=None).num_classes == 2  # as it reads
    with pytest.raises(errors.DataError, match=r"cmyk\.jpg' with 1 channel\(s\).*remove it"):
        user_data.scan_image_folder(folder, stream=None, channels=1)


def test_data_too_small_to_verify_an_export_is_refused_before_training(work, tmp_path, capsys):
    # 6 images: `learn` trained first, then failed at the export's 200-image floor and left
    # model.keras and its backup in --out (which a rerun then resumed).
    folder = _write_folder(str(tmp_path / "few"), classes=3, per_class=2)
    out = str(tmp_path / "out")
    argv = ["learn", work["model"], "--data", folder, "--input_scale", "0..1"]
    argv += ["--validation_split", "0", "--learner", "full-prec", "--out", out]
    code, err = _run_main(argv, capsys)
    assert code == 2 and "`data`" in err and "at least 200 images" in err, err[-1000:]
    assert not os.path.exists(out) or not os.listdir(out)
    code, err = _run_main(
        [
            "export",
            work["model"],
            "--data",
            folder,
            "--input_scale",
            "0..1",
            "--validation_split",
            "0",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 2 and "at least 200 images" in err, err[-1000:]
