"""The installed ``pocketflow-tf`` command: compress, train and export your own model on your data.

``pip install .`` puts it on the PATH (``setup.py``'s console entry point). Four subcommands::

    pocketflow-tf compress MODEL --data DATA --target "2x faster" --out DIR [--input_scale S]
    pocketflow-tf learn    MODEL --data DATA --learner channel --out DIR [learner flags]
    pocketflow-tf export   MODEL --data DATA --out DIR [--export_modes float,int8]
    pocketflow-tf latency  MODEL.tflite [REFERENCE.tflite] [--latency_runs 200]

``MODEL`` is a trained Keras classifier (``.keras`` of tf-keras or Keras 3, ``.h5``, or a
SavedModel folder). ``DATA`` is one of:

* an image folder ``DIR/<class>/<image>`` (read by keras's ``image_dataset_from_directory``,
  resized to the model's input size, streamed; ``compress`` materialises it as arrays under
  ``--max_data_mb``);
* ``FILE.npz`` with ``x_train, y_train[, x_test, y_test]`` (no pickles);
* ``fmnist`` (Debian's Fashion-MNIST) or ``cifar10`` (with ``--data_dir``); write ``./fmnist``
  for a folder of that name.

``--input_scale 0..1|0..255|-1..1`` states the value range the model expects its pixels in;
it is required for image folders and ``uint8`` arrays (never guessed); the named data sets
are in 0..1 unless it says otherwise. ``--validation_split`` (0.1) holds out a share of the
training data: the held-out split of a search, and the evaluation split when there is no
``--test_data``. A model trained on those images scores high there, so ``--val_data``
(an image folder or ``.npz`` the model never saw) takes its place when you have one: the
search ranks on it and judges the target there without that bias.

The flags are the run scripts' (``--learner``, the ``cp_*``/``ws_*``/``uql_*``/``auto_*``
learner flags, ``--enbl_dst``, ``--export_modes``, ``--seed``, ``--batch_size``,
``--lrn_rate_init``, ``--verbose``, ``--debug``...); flags that only a recipe has
(``--nb_epochs_rat``, ``--resnet_size``, ``--save_path``...) are refused. A user error prints
one line and exits with status 2 (``--debug`` for the traceback); ``compress`` exits with 3
when the target is not met (the model, the ``.tflite`` and the report are still written).

Example:
    $ pocketflow-tf compress user.keras --data photos/ --input_scale 0..1 \\
        --target "2x faster" --out runs/user
    ...
    target           met: ...
    tflite           runs/user/final/model.int8.tflite
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import flags

from pocketflow_tf import cli_errors, errors

# The run scripts' flags (learner, learner options, distillation, export, seed...) are the
# command's too: one definition, one meaning.
from pocketflow_tf.app import cli

FLAGS = flags.FLAGS

SUBCOMMANDS = ("compress", "learn", "export", "latency")
#: Data sets named instead of given as a path.
NAMED_DATA = ("fmnist", "cifar10")

flags.DEFINE_string(
    "data",
    None,
    "compress/learn/export: an image folder (one sub-folder per class), FILE.npz "
    "(x_train, y_train[, x_test, y_test]), fmnist or cifar10",
)
flags.DEFINE_string(
    "test_data", None, "compress/learn/export: test data (image folder or .npz), never searched on"
)
flags.DEFINE_string(
    "input_scale",
    None,
    "the value range the model expects its input pixels in: 0..1, 0..255 or -1..1 (required "
    "for image folders and uint8 .npz arrays)",
)
flags.DEFINE_float(
    "validation_split",
    0.1,
    "share of the training data held out (the search's scoring split; the evaluation split "
    "without --test_data); unused with --val_data",
)
flags.DEFINE_string(
    "val_data",
    None,
    "compress/learn/export: validation data the model was never trained on (image folder, or "
    ".npz with x_train, y_train): the held-out split instead of --validation_split's share "
    "of --data",
)
flags.DEFINE_string("out", None, "output folder (model, .tflite files, reports)")
flags.DEFINE_string(
    "target", None, "compress: what to reach, e.g. '2x faster', 'int8,<=0.3x bytes'"
)
flags.DEFINE_integer(
    "epochs",
    1,
    "learn: epochs of the fine-tune on the training data; compress: when given, the most "
    "epochs of the final fine-tune (default: --auto_final_epochs, else what the "
    "--auto_max_wall_s budget leaves; it ends earlier once the accuracy has recovered)",
)
flags.DEFINE_integer(
    "max_data_mb",
    4096,
    "compress: largest image folder (as float32 arrays, in MB) materialised in memory; the "
    "automated search indexes samples directly and takes arrays only",
)
flags.DEFINE_enum(
    "check_images",
    "full",
    ["full", "header", "none"],
    "image folders: decode every image once before any work (full), read each file's header "
    "only, or skip the check",
)

#: Run-script flags that describe a recipe or a run layout the command does not have.
_RECIPE_ONLY = {
    "exec_mode": "the subcommand",
    "nb_epochs_rat": "--epochs",
    "save_path": "--out",
    "model_path": "the MODEL argument",
    "resnet_size": "your own model",
    "mobilenet_version": "your own model",
    "mobilenet_width": "your own model",
    "baseline_path": "the MODEL argument",
    "nb_train_samples": "a smaller --data",
    "ecq_bits": "run_local.sh -n N with a run script",
    "ecq_bucket_size": "run_local.sh -n N with a run script",
    "auto_holdout": "--validation_split",
    "auto_dir": "--out",
}
#: The command's own flags and the subcommands reading them.
_OWN_FLAGS = {
    "data": ("compress", "learn", "export"),
    "test_data": ("compress", "learn", "export"),
    "val_data": ("compress", "learn", "export"),
    "input_scale": ("compress", "learn", "export"),
    "validation_split": ("compress", "learn", "export"),
    "out": ("compress", "learn", "export"),
    "target": ("compress",),
    "epochs": ("compress", "learn"),
    "max_data_mb": ("compress", "learn", "export"),
    "check_images": ("compress", "learn", "export"),
}
_DEFAULT_BATCH = 64
_DEFAULT_LR = 1e-3
#: Training images an int8 export is calibrated on.
_CALIB_SAMPLES = 512
#: Images an export is verified on at least (tflite_verify's minimum).
_MIN_VERIFY = 200


def _say(msg: str) -> None:
    print(f"[pocketflow-tf] {msg}", flush=True)


# ---- data -------------------------------------------------------------------------------


@dataclasses.dataclass
class UserData:
    """The data of one command, checked against the model.

    Attributes:
        description: What was loaded, for the log and the record.
        num_classes: Classes the data states (an image folder's class folders; a named set's).
        train: ``(x, y)`` arrays, or a batched ``tf.data.Dataset`` (a streamed folder).
        val: The held-out split (a dataset or arrays; ``--val_data`` is always arrays), or
            ``None``.
        val_from_training: True when ``val`` was carved from the training data
            (``--validation_split``), False for ``--val_data``.
        x_eval: Images the model is evaluated and its exports verified on (``--test_data``,
            else the held-out split, else the training data).
        y_eval: Their labels.
        eval_from: Where ``x_eval`` came from (said in the summary).
        x_calib: Training images for int8 calibration.
        x_test: The ``--test_data`` images (or the .npz file's), or ``None``.
        y_test: Their labels.
        y_calib: The labels of ``x_calib``.

    Example:
        >>> d = UserData("toy", 2, (np.zeros((4, 2)), np.arange(4) % 2), None,
        ...              np.zeros((2, 2)), np.arange(2), "train", np.zeros((2, 2)))
        >>> d.streamed
        False
    """

    description: str
    num_classes: int | None
    train: Any
    val: Any
    x_eval: np.ndarray
    y_eval: np.ndarray
    eval_from: str
    x_calib: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    y_calib: np.ndarray | None = None
    val_from_training: bool = True

    @property
    def streamed(self) -> bool:
        """True when the training data is a ``tf.data.Dataset`` (an image folder)."""
        return not isinstance(self.train, tuple)

    def splits(self):
        """The arrays as a :class:`~pocketflow_tf.datasets.DataSplits` (``compress``'s form).

        Example:
            >>> d = UserData("toy", 2, (np.zeros((4, 2)), np.arange(4) % 2), None,
            ...              np.zeros((2, 2)), np.arange(2), "train", np.zeros((2, 2)))
            >>> d.splits().x_val is None
            True
        """
        from pocketflow_tf import datasets

        x, y = self.train
        x_val, y_val = self.val if self.val is not None else (None, None)
        x_test = self.x_test if self.x_test is not None else x[:0]
        y_test = self.y_test if self.y_test is not None else y[:0]
        return datasets.DataSplits(
            self.description,
            x,
            y,
            x_test,
            y_test,
            self.num_classes or 0,
            x_val,
            y_val,
            val_from_training=self.val_from_training and x_val is not None,
        )

    def check_for_export(self) -> None:
        """Refuses, before any work, data too small to verify an export on.

        Example:
            >>> data.check_for_export()  # doctest: +SKIP
        """
        have = len(self.y_eval) + (0 if self.y_calib is None else len(self.y_calib))
        if have < _MIN_VERIFY:
            raise errors.InvalidArgumentError(
                "data",
                f"{have} images to verify exports on ({len(self.y_eval)} of {self.eval_from}, "
                f"{0 if self.y_calib is None else len(self.y_calib)} training images)",
                f"at least {_MIN_VERIFY} images: each .tflite is checked against the Keras "
                "model on them (more images, or --export_modes '' to write no .tflite)",
            )

    def for_export(self) -> _ExportData:
        """The samples the run scripts' export helpers read (``runner.export_all``).

        An export is verified on at least :data:`_MIN_VERIFY` images (parity with the Keras
        model, not an accuracy claim): a small evaluation split is topped up with training
        images.
        """
        x, y = self.x_eval, self.y_eval
        if len(y) < _MIN_VERIFY and self.y_calib is not None:
            more = _MIN_VERIFY - len(y)
            _say(
                f"verifying exports on {len(y)} images of {self.eval_from} and "
                f"{min(more, len(self.y_calib))} training images (at least {_MIN_VERIFY})"
            )
            x = np.concatenate([x, self.x_calib[:more]])
            y = np.concatenate([y, self.y_calib[:more]])
        return _ExportData(x, y, self.x_calib)


@dataclasses.dataclass
class _ExportData:
    """The arrays ``runner.export_all`` / ``record_deployed`` read: verification
    (``x_test``, ``y_test``) and calibration (``x_train``) samples."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray


def _is_named(data: str) -> bool:
    return data in NAMED_DATA


def _check_data_arg(flag: str, value: str | None, *, required: bool) -> None:
    if value is None:
        if required:
            raise errors.InvalidArgumentError(
                flag,
                None,
                "an image folder (one sub-folder per class), FILE.npz, " + " or ".join(NAMED_DATA),
            )
        return
    if _is_named(value) and flag == "data":
        return
    if value.lower().endswith(".npz"):
        if not os.path.isfile(value):
            raise errors.InvalidArgumentError(flag, value, "an existing .npz file")
    elif not os.path.isdir(value):
        named = f", or one of {', '.join(NAMED_DATA)}" if flag == "data" else ""
        raise errors.InvalidArgumentError(
            flag,
            value,
            f"an existing image folder (one sub-folder per class) or FILE.npz{named}",
        )


def model_image_shape(model, model_path: str) -> tuple[int, int, int]:
    """The ``(H, W, C)`` an image folder is resized to: the model's input, which must be fixed.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> m = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Flatten()])
        >>> model_image_shape(m, "m.keras")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `MODEL`: 'm.keras'. Accepted: a model with a fixed image input (height, width, channels), channels 1, 3 or 4 (it takes (None, None, 3)): image folders are resized to it.
    """
    from pocketflow_tf import inputs

    shape = inputs.model_input_shape(model)
    if shape is None or len(shape) != 3 or None in shape or shape[-1] not in (1, 3, 4):
        raise errors.InvalidArgumentError(
            "MODEL",
            model_path,
            "a model with a fixed image input (height, width, channels), channels 1, 3 or 4 "
            f"(it takes {shape}): image folders are resized to it",
        )
    return shape  # type: ignore[return-value]


def _take(ds, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` samples of a batched dataset, as arrays."""
    xs, ys, got = [], [], 0
    for xb, yb in ds:
        xs.append(xb.numpy())
        ys.append(yb.numpy())
        got += len(xs[-1])
        if got >= n:
            break
    return np.concatenate(xs)[:n].astype(np.float32), np.concatenate(ys)[:n].astype(np.int64)


def _folder(path: str, model, model_path: str, *, split: float, flag: str):
    from pocketflow_tf import inputs, user_data

    if FLAGS.input_scale is None:
        raise errors.InvalidArgumentError(
            "input_scale",
            None,
            f"one of {', '.join(user_data.INPUT_SCALES)}: --{flag} is an image folder, and the "
            "value range your model expects its pixels in must be stated, not guessed",
        )
    h, w, c = model_image_shape(model, model_path)
    _say(f"checking the image folder {path} ({FLAGS.check_images} check)")
    folder = user_data.scan_image_folder(path, check=FLAGS.check_images, name=flag, channels=c)
    # Before any work: a model with 5 outputs cannot learn 3 class folders.
    inputs.model_classes(model, num_classes=folder.num_classes)
    _say(
        f"  {len(folder.files)} images in {folder.num_classes} classes {folder.class_names}, "
        f"resized to {h}x{w}x{c}, pixels mapped to {FLAGS.input_scale}"
    )
    return user_data.from_image_folder(
        path,
        image_size=(h, w),
        channels=c,
        input_scale=FLAGS.input_scale,
        validation_split=split,
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size or _DEFAULT_BATCH,
        folder=folder,
    )


def _arrays(path: str, model, *, flag: str):
    """A named data set or an .npz file as DataSplits in the stated scale."""
    from pocketflow_tf import datasets, inputs, user_data

    if _is_named(path) and flag == "data":
        splits = datasets.load_dataset(path, FLAGS.data_dir)
        inputs.model_classes(model, num_classes=splits.num_classes)
        if FLAGS.input_scale and FLAGS.input_scale != "0..1":
            # The loaders give [0, 1]; the stated scale maps the same pixels onto it.
            lo, hi = user_data.input_scale_range(FLAGS.input_scale)
            scale = np.float32(hi - lo)
            splits = dataclasses.replace(
                splits,
                x_train=splits.x_train * scale + np.float32(lo),
                x_test=splits.x_test * scale + np.float32(lo),
            )
        return splits
    splits = user_data.from_npz(path, input_scale=FLAGS.input_scale, name=flag)
    inputs.model_classes(model)
    return splits


def _split_arrays(flag: str, model, model_path: str, max_bytes: int, class_names=None):
    """The arrays of ``--test_data`` or ``--val_data``: an image folder (with the class
    folders of ``--data`` when that is a folder: ``class_names``), or an .npz (the test
    data's ``x_test, y_test`` when it has them, else its ``x_train, y_train``)."""
    from pocketflow_tf import inputs, user_data

    path = getattr(FLAGS, flag)
    if path.lower().endswith(".npz"):
        t = user_data.from_npz(path, input_scale=FLAGS.input_scale, name=flag)
        if len(t.x_test) and flag == "val_data":
            # A file with both splits is most likely the whole data set given by mistake.
            raise errors.InvalidArgumentError(
                flag,
                path,
                "an .npz of validation images as x_train, y_train only (it holds "
                "x_test, y_test too: give the validation images alone)",
            )
        x, y = (t.x_test, t.y_test) if len(t.x_test) else (t.x_train, t.y_train)
    else:
        fd = _folder(path, model, model_path, split=0.0, flag=flag)
        if class_names is not None and fd.class_names != class_names:
            # Label i is the i-th class folder by name: other names would mislabel silently.
            raise errors.InvalidArgumentError(
                flag,
                path,
                f"an image folder with the class folders of --data {class_names} (it has "
                f"{fd.class_names})",
            )
        x, y = fd.to_arrays("train", max_bytes=max_bytes)
    return inputs.arrays(model, x, y, names=(flag, flag))


def _check_val_data(split: float) -> None:
    """``--val_data`` replaces ``--validation_split`` and must be data of its own."""
    if FLAGS["validation_split"].present and split > 0:
        raise errors.InvalidArgumentError(
            "validation_split",
            split,
            "0 or unset with --val_data (the validation data is --val_data, not a share of --data)",
        )
    val_path = os.path.realpath(FLAGS.val_data)
    why = {
        "data": "images the model was trained on would bias every choice",
        "test_data": "the test data is never searched on",
    }
    for flag, reason in why.items():
        other = getattr(FLAGS, flag)
        if other and os.path.exists(other) and os.path.realpath(other) == val_path:
            raise errors.InvalidArgumentError(
                "val_data", FLAGS.val_data, f"validation data other than --{flag} ({reason})"
            )


def load_data(model, model_path: str, *, stream: bool) -> UserData:
    """Loads and checks ``--data`` / ``--val_data`` / ``--test_data`` for ``model`` before
    any work.

    The held-out split is ``--val_data`` when given (images the model never saw), else
    ``--validation_split`` of ``--data`` (marked as carved from the training data).

    Args:
        model: The loaded model (its input size and output count are checked).
        model_path: Its path (echoed in errors).
        stream: Keep an image folder streamed (else materialise it under ``--max_data_mb``).

    Example:
        >>> load_data(model, "user.keras", stream=True)  # doctest: +SKIP
    """
    from pocketflow_tf import inputs

    split = FLAGS.validation_split
    if not 0.0 <= split < 1.0:
        raise errors.InvalidArgumentError("validation_split", split, "a share in [0, 1)")
    given_val = None
    if FLAGS.val_data:
        _check_val_data(split)
        split = 0.0
    max_bytes = FLAGS.max_data_mb * 2**20
    data_arg = FLAGS.data
    fd = None
    if not _is_named(data_arg) and os.path.isdir(data_arg):
        fd = _folder(data_arg, model, model_path, split=split, flag="data")
    names = None if fd is None else fd.class_names
    x_test = y_test = None
    if FLAGS.test_data:
        x_test, y_test = _split_arrays("test_data", model, model_path, max_bytes, names)
    if FLAGS.val_data:
        given_val = _split_arrays("val_data", model, model_path, max_bytes, names)

    if fd is not None:
        if given_val is not None:
            train: Any = fd.train if stream else fd.to_arrays("train", max_bytes=max_bytes)
            val: Any = given_val
            x_val_arr = given_val
        elif stream:
            train = fd.train
            val = fd.val
            x_val_arr = fd.to_arrays("val", max_bytes=max_bytes) if fd.val is not None else None
        else:
            train = fd.to_arrays("train", max_bytes=max_bytes)
            x_val_arr = fd.to_arrays("val", max_bytes=max_bytes) if fd.val is not None else None
            val = x_val_arr
        return _with_eval_split(
            f"image folder {data_arg} ({fd.num_classes} classes)",
            fd.num_classes,
            train,
            val,
            test=(x_test, y_test, "--test_data"),
            held_out=x_val_arr,
            given_val=given_val is not None,
            calib=_take(fd.train, _CALIB_SAMPLES),
            fallback=lambda: (
                *_take(fd.train, FLAGS.num_verify),
                "the training data (no --test_data, --validation_split 0)",
            ),
        )

    splits = _arrays(data_arg, model, flag="data")
    if len(splits.x_test) and x_test is not None:
        raise errors.InvalidArgumentError(
            "test_data", FLAGS.test_data, f"unset: {data_arg} holds its own x_test, y_test"
        )
    if x_test is None and len(splits.x_test):
        x_test, y_test = splits.x_test, splits.y_test
    x, y = inputs.arrays(model, splits.x_train, splits.y_train, names=("data", "data"))
    named = _is_named(data_arg)
    val = given_val
    if split > 0:
        held = splits.with_validation(split, seed=FLAGS.seed)
        x, y = held.x_train, held.y_train
        val = (held.x_val, held.y_val)
    rng = np.random.default_rng(FLAGS.seed)
    pick = np.sort(rng.choice(len(x), min(_CALIB_SAMPLES, len(x)), replace=False))
    return _with_eval_split(
        f"{data_arg} ({len(x)} training images)",
        splits.num_classes if named else None,
        (x, y),
        val,
        test=(x_test, y_test, "the test split"),
        held_out=val,
        given_val=given_val is not None,
        calib=(x[pick], y[pick]),
        fallback=lambda: (x, y, "the training data (no test split, --validation_split 0)"),
    )


def _with_eval_split(
    description, num_classes, train, val, *, test, held_out, given_val, calib, fallback
) -> UserData:
    """The :class:`UserData` with the split its model is evaluated on: the test data
    (``test`` is ``(x, y, where)``), else the held-out arrays (``--val_data`` when
    ``given_val``), else ``fallback()``."""
    x_test, y_test, test_from = test
    if x_test is not None:
        x_eval, y_eval, eval_from = x_test, y_test, test_from
    elif held_out is not None:
        (x_eval, y_eval) = held_out
        eval_from = "--val_data" if given_val else "the held-out split of --data"
    else:
        x_eval, y_eval, eval_from = fallback()
    return UserData(
        description,
        num_classes,
        train,
        val,
        x_eval,
        y_eval,
        eval_from,
        calib[0],
        x_test,
        y_test,
        calib[1],
        val_from_training=not given_val,
    )


# ---- the subcommands -----------------------------------------------------------------------


def _load_model(path: str):
    from pocketflow_tf import model_io

    _say(f"loading model {path}")
    loaded = model_io.load_model_with_info(path, trust_unsafe=FLAGS.trust_model)
    return loaded.model, loaded.saved_by_keras3


def _check_model_arg(path: str) -> None:
    from pocketflow_tf import model_io

    model_io.check_model_path("MODEL", path, time_it="pocketflow-tf latency MODEL.tflite")


def _check_out() -> str:
    if not FLAGS.out:
        raise errors.InvalidArgumentError("out", FLAGS.out, "the output folder (--out DIR)")
    return cli_errors.check_output_path("out", FLAGS.out, is_dir=True)


def _train_config():
    from pocketflow_tf import training

    return training.TrainConfig(
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size or _DEFAULT_BATCH,
        learning_rate=FLAGS.lrn_rate_init or _DEFAULT_LR,
        optimizer="adam",
        weight_decay=0.0,
        seed=FLAGS.seed,
    )


def _save(model, out: str, came_as_keras3: bool) -> dict[str, str]:
    from pocketflow_tf import model_io, qat

    quantized = qat.is_quantized(model)
    path = os.path.join(out, "model.h5" if quantized else "model.keras")
    # The caller's Keras is the answer's: a Keras 3 file in, a Keras 3 copy out (QAT
    # wrappers exist only in Keras 2).
    return model_io.save_model(model, path, keras3_copy=came_as_keras3 and not quantized)


def _compress_keywords(target: str) -> dict[str, Any]:
    """``compress``'s keywords from the ``--auto_*`` flags given on the command line (every
    ``AutoOptions`` field it takes; the others keep their defaults), with
    ``--validation_split`` as ``holdout``; validated before any data is read."""
    from pocketflow_tf.learners.auto.compress import keywords

    filled = {"auto_target": target, "auto_holdout": FLAGS.validation_split or 0.1}
    if FLAGS["epochs"].present:  # --epochs given: the final fine-tune's cap
        filled["auto_final_epochs"] = FLAGS.epochs
    given = cli.learner_options("auto", filled=filled)
    return {kw: given[name] for kw, name in keywords().items() if name in given}


def compress_command(model_path: str, command: Sequence[str]) -> int:
    """``pocketflow-tf compress``: automated compression to a target; returns the exit status.

    Example:
        >>> compress_command("user.keras", ["pocketflow-tf", "compress", ...])  # doctest: +SKIP
        0
    """
    # The package exports the function under the module's name.
    from pocketflow_tf.learners.auto import compress as compress_to_target

    target = FLAGS.target or FLAGS.auto_target
    if FLAGS.target and FLAGS.auto_target and FLAGS.target != FLAGS.auto_target:
        raise errors.InvalidArgumentError(
            "auto_target", FLAGS.auto_target, f"unset, or equal to --target {FLAGS.target!r}"
        )
    if not target:
        raise errors.InvalidArgumentError(
            "target", None, "what to reach, e.g. '2x faster', 'int8,<=0.3x bytes', 'flops<=0.5'"
        )
    from pocketflow_tf.learners.auto.target import Target

    Target.parse(target)  # a bad target fails now, before the data is read
    if FLAGS["learner"].present and FLAGS.learner != "auto":
        raise errors.InvalidArgumentError(
            "learner", FLAGS.learner, "unset (compress is --learner auto); or use: learn"
        )
    keywords = _compress_keywords(target)
    _check_model_arg(model_path)
    _check_data_arg("data", FLAGS.data, required=True)
    _check_data_arg("test_data", FLAGS.test_data, required=False)
    _check_data_arg("val_data", FLAGS.val_data, required=False)
    out = _check_out()
    model, came_as_keras3 = _load_model(model_path)
    data = load_data(model, model_path, stream=False)
    _say(f"compressing for '{target}' on {data.description}; work folder {out}")
    res = compress_to_target(
        model,
        data.splits(),
        target,
        out,
        train_config=_train_config(),
        seed=FLAGS.seed,
        verbose=min(FLAGS.verbose, 2),
        **keywords,
    )
    saved = _save(res.model, out, came_as_keras3) if res.model is not None else {}
    lines = ["", f"== pocketflow-tf compress {model_path} ({target}) =="]
    lines.append(f"target           {'met' if res.met else 'NOT MET'}: {res.summary}".rstrip(": "))
    for kind, path in saved.items():
        lines.append(f"model ({kind})".ljust(17) + path)
    if res.tflite_path:
        lines.append(
            f"tflite           {res.tflite_path} ({os.path.getsize(res.tflite_path):,} bytes)"
        )
    lines += [f"report           {res.html_path}", f"report (json)    {res.report_path}", ""]
    print("\n".join(lines), flush=True)
    return 0 if res.met else cli_errors.EXIT_TARGET_NOT_MET


def _learner_options(cls, out: str) -> dict[str, Any]:
    """The learner's options from its flags, its defaults for the ``--out`` folder, and
    ``--validation_split`` as the share a learner holds out (``auto_holdout``)."""
    opts = {**cls.default_options(out), **cli.learner_options(cls.name)}
    if "auto_holdout" in cls.Options.names():
        opts["auto_holdout"] = FLAGS.validation_split or 0.1
    return opts


@dataclasses.dataclass
class _RunView:
    """What the run scripts' export, latency and summary helpers read of ``RunOptions``."""

    recipe: str
    learner: str
    exec_mode: str
    export_modes: tuple[str, ...]
    num_verify: int
    strict_export: bool
    seed: int
    latency_runs: int
    verify_arm64: bool = False


def _export_modes(deploy: tuple[str, ...] | None, own: tuple[str, ...] = ()) -> tuple[str, ...]:
    # `own`: the learner's file_modes (files it writes itself, e.g. pq-compact).
    from pocketflow_tf.app import runner

    modes = tuple(runner.check_export_mode(m, own) for m in FLAGS.export_modes if m)
    if deploy:
        if not FLAGS["export_modes"].present:
            return tuple(deploy)
        if any(runner.split_export_mode(m)[0] not in deploy for m in modes):
            raise errors.InvalidArgumentError(
                "export_modes", ",".join(modes), f"modes among {deploy} for this learner"
            )
    return modes


def _finish(view: _RunView, model, lrn, data: UserData, record, out: str, saved) -> dict:
    """Evaluates, exports (verified), times and reports, as a run script does."""
    from pocketflow_tf.app import runner

    split = f"{data.eval_from} ({len(data.y_eval)} images)"
    runner.record_evaluation(
        model, data.x_eval, data.y_eval, record, split, eval_split=data.eval_from
    )
    for kind, path in saved.items():
        record.add_artifact(f"model_{kind}", path)
    deployed = None if lrn is None else lrn.deployed()
    view = runner.deploy_and_time(view, deployed, model, data.for_export(), out, "model", record)
    return runner.conclude(view, record, out, "model", lrn)


def learn_command(model_path: str, command: Sequence[str]) -> int:
    """``pocketflow-tf learn``: one learner (``--learner``) on your model and data.

    Example:
        >>> learn_command("user.keras", ["pocketflow-tf", "learn", ...])  # doctest: +SKIP
        0
    """
    import pocketflow_tf.learners  # noqa: F401  (registers every learner)
    from pocketflow_tf import distillation, learner, model_io, records
    from pocketflow_tf.app import runner

    cls = learner.get_learner_class(FLAGS.learner)
    _check_model_arg(model_path)
    _check_data_arg("data", FLAGS.data, required=True)
    _check_data_arg("test_data", FLAGS.test_data, required=False)
    _check_data_arg("val_data", FLAGS.val_data, required=False)
    out = _check_out()
    options = _learner_options(cls, out)
    deploy, ext = cls.deployment(**options)
    view = _RunView(
        "user",
        cls.name,
        "learn",
        _export_modes(deploy, cls.file_modes),
        FLAGS.num_verify,
        FLAGS.strict_export,
        FLAGS.seed,
        FLAGS.latency_runs,
        FLAGS.verify_arm64,
    )
    if view.verify_arm64:
        from pocketflow_tf import arm64

        arm64.Arm64Lane.find()  # a missing lane is refused now, not after the work
    dst = None
    if FLAGS.enbl_dst:
        dst = distillation.DistillationConfig(FLAGS.loss_w_dst, FLAGS.tempr_dst)
    if FLAGS.teacher_path and not os.path.exists(FLAGS.teacher_path):
        raise errors.InvalidArgumentError("teacher_path", FLAGS.teacher_path, "an existing model")
    model, came_as_keras3 = _load_model(model_path)
    # A learner that indexes samples (auto: held-out scoring, calibration) takes arrays.
    data = load_data(model, model_path, stream=cls.accepts_datasets)
    if view.export_modes:
        data.check_for_export()  # not after the training
    teacher = None
    if dst is not None and FLAGS.teacher_path:
        teacher = model_io.load_model(FLAGS.teacher_path, trust_unsafe=FLAGS.trust_model)
    save_path = os.path.join(out, "model" + ext)
    cfg = _train_config()
    lrn = cls(
        cfg,
        distillation=dst,
        teacher=teacher,
        log_dir=os.path.join(out, "logs"),
        checkpoint_dir=save_path + ".ckpt",
        keep_backups=True,  # released once the model, exports and record are written
        verbose=FLAGS.verbose,
        **options,
    )
    record = records.RunRecord(f"learn:{cls.name}", {"flags": _flag_values()}, command=command)
    record.add_section("learner", lrn.get_config())
    _say(f"training with learner '{cls.name}' for {cfg.epochs} epoch(s) on {data.description}")
    if cls.takes_held_out and not data.streamed:
        # The held-out split is what it chooses on; the test data only what it reports.
        xv, yv = data.val if data.val is not None else (None, None)
        trained = lrn.fit(
            model,
            *data.train,
            x_val=xv,
            y_val=yv,
            val_from_training=data.val_from_training,
            validation_data=None if data.x_test is None else (data.x_test, data.y_test),
        )
    elif data.streamed:
        trained = lrn.fit(model, data.train, validation_data=data.val)
    else:
        trained = lrn.fit(model, *data.train, validation_data=data.val)
    report = lrn.compression_report()
    if report:
        record.add_section("compression", report)
    for kind, path in lrn.save_artifacts(os.path.splitext(save_path)[0]).items():
        record.add_artifact(kind, path)
    if lrn.deployed() is not None:
        save_path = os.path.splitext(save_path)[0] + lrn.save_extension
    from pocketflow_tf import qat

    saved = model_io.save_model(
        trained, save_path, keras3_copy=came_as_keras3 and not qat.is_quantized(trained)
    )
    result = _finish(view, trained, lrn, data, record, out, saved)
    return cli_errors.EXIT_TARGET_NOT_MET if runner.target_missed(result) else 0


def export_command(model_path: str, command: Sequence[str]) -> int:
    """``pocketflow-tf export``: verified ``.tflite`` files of a trained model.

    Example:
        >>> export_command("user.keras", ["pocketflow-tf", "export", ...])  # doctest: +SKIP
        0
    """
    from pocketflow_tf import records

    _check_model_arg(model_path)
    _check_data_arg("data", FLAGS.data, required=True)
    _check_data_arg("test_data", FLAGS.test_data, required=False)
    _check_data_arg("val_data", FLAGS.val_data, required=False)
    if FLAGS.val_data and FLAGS.test_data:
        # export evaluates on one split: --val_data would be read and never used.
        raise errors.InvalidArgumentError(
            "val_data", FLAGS.val_data, "unset with export --test_data (it evaluates on that)"
        )
    out = _check_out()
    view = _RunView(
        "user",
        "export",
        "export",
        _export_modes(None),
        FLAGS.num_verify,
        FLAGS.strict_export,
        FLAGS.seed,
        FLAGS.latency_runs,
        FLAGS.verify_arm64,
    )
    if view.verify_arm64:
        from pocketflow_tf import arm64

        arm64.Arm64Lane.find()  # a missing lane is refused now, not after the work
    if not view.export_modes:
        raise errors.InvalidArgumentError("export_modes", "", "at least one mode, e.g. float,int8")
    model, _ = _load_model(model_path)
    data = load_data(model, model_path, stream=True)
    data.check_for_export()
    record = records.RunRecord("export", {"flags": _flag_values()}, command=command)
    record.add_metrics(source_model=model_path)
    _finish(view, model, None, data, record, out, {})
    return 0


def latency_command(paths: Sequence[str]) -> int:
    """``pocketflow-tf latency A.tflite [B.tflite]``: LiteRT latency, and A's speed-up over B.

    Example:
        >>> latency_command(["m.keras"])
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `MODEL`: 'm.keras'. Accepted: a .tflite file (export a Keras model first: pocketflow-tf export).
    """
    from pocketflow_tf import latency, tflite_load

    if not 1 <= len(paths) <= 2:
        raise errors.InvalidArgumentError(
            "arguments", list(paths), "MODEL.tflite and optionally REFERENCE.tflite"
        )
    for path in paths:
        if not path.lower().endswith(".tflite"):
            raise errors.InvalidArgumentError(
                "MODEL", path, "a .tflite file (export a Keras model first: pocketflow-tf export)"
            )
        tflite_load.open_interpreter(path)  # a bad second file fails before the first's timing
    runs = FLAGS.latency_runs
    for path in paths:
        s = latency.measure_latency(path, runs=runs)
        print(
            f"{path}: median {s.median_ms:.3f} ms (p10 {s.p10_ms:.3f}, p90 {s.p90_ms:.3f}) over "
            f"{s.runs} runs, batch 1, 1 thread",
            flush=True,
        )
    if len(paths) == 2:
        ratio = latency.interleaved_ratio(paths[0], paths[1], rounds=max(5, runs // 10))
        print(
            f"{paths[0]} vs {paths[1]}: {ratio.speedup:.2f}x faster (interleaved, "
            f"{ratio.rounds} rounds)",
            flush=True,
        )
    return 0


def _flag_values() -> dict[str, Any]:
    """The flags given on the command line (for the record)."""
    return {name: FLAGS[name].value for name in sorted(FLAGS) if FLAGS[name].present}


def _refuse_foreign_flags(sub: str) -> None:
    for name, instead in _RECIPE_ONLY.items():
        if name in FLAGS and FLAGS[name].present:
            raise errors.InvalidArgumentError(
                name, FLAGS[name].value, f"unset with pocketflow-tf {sub} (use {instead})"
            )
    for name, subs in _OWN_FLAGS.items():
        if FLAGS[name].present and sub not in subs:
            raise errors.InvalidArgumentError(
                name,
                FLAGS[name].value,
                f"unset with pocketflow-tf {sub} (it is for {', '.join(subs)})",
            )


def dispatch(args: Sequence[str], command: Sequence[str]) -> int:
    """Runs the subcommand named by ``args[0]`` (flags already parsed); returns the exit status.

    Example:
        >>> dispatch(["shrink", "m.keras"], [])
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `command`: 'shrink'. Accepted: one of compress, learn, export, latency (pocketflow-tf --help lists the flags).
    """
    if not args or args[0] not in SUBCOMMANDS:
        raise errors.InvalidArgumentError(
            "command",
            args[0] if args else None,
            f"one of {', '.join(SUBCOMMANDS)} (pocketflow-tf --help lists the flags)",
        )
    sub, rest = args[0], list(args[1:])
    _refuse_foreign_flags(sub)
    if FLAGS.input_scale is not None:
        from pocketflow_tf import user_data

        user_data.input_scale_range(FLAGS.input_scale)
    if sub == "latency":
        return latency_command(rest)
    if len(rest) != 1:
        raise errors.InvalidArgumentError(
            "arguments", rest, f"exactly one MODEL: pocketflow-tf {sub} MODEL [flags]"
        )
    run = {"compress": compress_command, "learn": learn_command, "export": export_command}[sub]
    return run(rest[0], list(command))


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point: ``pocketflow-tf SUBCOMMAND ARGS [--flags]``.

    Exits with 0 on success, 2 after a user error (one line; ``--debug`` for the
    traceback), 3 when ``compress`` (or ``learn --learner auto``) missed its target.

    Example:
        >>> main(["pocketflow-tf", "compress", "m.keras", "--input_scale", "0-1"])  # doctest: +SKIP
        error: Invalid value for `input_scale`: '0-1'. Accepted: one of 0..1, 0..255, -1..1 ...
    """
    argv = list(sys.argv if argv is None else argv)
    main_module = sys.modules.get("__main__")
    if main_module is not None and not main_module.__doc__:
        # absl's --help prints the __main__ module's docstring: the console script has none.
        main_module.__doc__ = __doc__
    if FLAGS.is_parsed():  # a second call in one process (tests) starts from the defaults
        FLAGS.unparse_flags()

    def _main(args: list[str]) -> None:
        from absl import logging

        logging.set_verbosity(logging.WARNING)
        status = dispatch(args[1:], argv)
        if status:
            sys.exit(status)

    cli_errors.run(_main, argv)


if __name__ == "__main__":
    main()

__all__ = ["SUBCOMMANDS", "UserData", "dispatch", "load_data", "main", "model_image_shape"]
