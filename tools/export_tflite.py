"""Exports a saved Keras model to a verified TFLite file (plus its ``.sha256``).

The model is checked against the TFLite export on test-split samples of its data set (and,
for int8 and int4, calibrated on training-split samples); the file is written only if it
passes. ``--mode int4`` stores the kernels as int4 (two weights a byte) through
:mod:`pocketflow_tf.int4_export`: a quantization-aware model with its own per-layer bits,
any other model at 4 bits everywhere; it is checked at the int8 thresholds.

Preprocessing: the framework's models carry their own normalisation (a Rescaling layer) and
:mod:`pocketflow_tf.datasets` yields float32 images in ``[0, 1]``, so "the same inputs as the
Keras model" are simply the data set arrays, as fed to ``model.predict``. Verification and
calibration use exactly those arrays.

Usage:
    python tools/export_tflite.py --model_path runs/convnet/model.keras \\
        --output exports/convnet_int8.tflite --mode int8 --int8_io --dataset fmnist

Example:
    $ python tools/export_tflite.py --model_path m.keras --output m.tflite --mode float
    float: PASSED on 1000 samples, max|diff|=9.5e-06, top-1 agreement=1.0000, ...
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from pocketflow_tf import (
    cli_errors,
    datasets,
    errors,
    int4_export,
    model_io,
    tflite_export,
    tflite_verify,
)

FLAGS = flags.FLAGS
#: The converter's modes, and int4 (written by LiteRT's quantizer, verified as int8).
MODES = (*tflite_export.MODES, "int4")


def define_flags() -> None:
    """Defines the tool's flags; called when it runs as a command only, so that importing it
    (for :func:`export_from_splits`) never clashes with the run scripts' flags of the same
    names in one process."""
    flags.DEFINE_string("model_path", None, "Saved Keras model (.keras / .h5 / SavedModel).")
    flags.DEFINE_string("output", None, "Destination .tflite path (<output>.sha256 is added).")
    flags.DEFINE_enum("mode", "float", list(MODES), "Conversion mode.")
    flags.DEFINE_bool(
        "int8_io", False, "int8 input/output tensors (mode=int8; an int4 file always has them)."
    )
    flags.DEFINE_enum("dataset", "fmnist", sorted(datasets.LOADERS), "Data set of the model.")
    flags.DEFINE_string("data_dir", None, "Data set folder (default: the loader's default).")
    flags.DEFINE_integer("num_verify", 1000, "Test samples to verify on (at least 200).")
    flags.DEFINE_integer("num_calibration", 256, "Training samples to calibrate int8/int4 on.")
    flags.DEFINE_bool("sparse", False, "Enable the converter's sparsity encoding.")
    flags.DEFINE_bool(
        "trust_model", False, "Allow unsafe deserialisation (e.g. Lambda layers) of the model file."
    )
    cli_errors.define_debug_flag()


def export_from_splits(
    model,
    data: datasets.DataSplits,
    output: str,
    *,
    mode: str = "float",
    int8_io: bool = False,
    num_verify: int = 1000,
    num_calibration: int = 256,
    sparse: bool = False,
) -> tflite_verify.ExportResult:
    """Exports ``model`` verified on the test split, calibrated on the training split.

    Both subsets are seeded random draws, not the first samples: user arrays may be sorted
    by class. Calibration never sees the verification samples.

    Example:
        >>> export_from_splits(model, datasets.load_dataset("fmnist"), "m.tflite",
        ...                    mode="int8")  # doctest: +SKIP
    """
    if mode not in MODES:
        raise errors.InvalidArgumentError("mode", mode, f"one of {MODES}")
    if mode == "int4" and sparse:
        # LiteRT's quantizer writes no sparse int4 tensors.
        raise errors.InvalidArgumentError("sparse", sparse, "False with mode int4")
    rng = np.random.default_rng(0)
    idx = np.sort(rng.permutation(len(data.x_test))[:num_verify])
    rep, content, checked_as = None, None, mode
    if mode in ("int8", "int4"):
        n = min(num_calibration, len(data.x_train))
        rep = data.x_train[np.sort(rng.choice(len(data.x_train), n, replace=False))]
    if mode == "int4":
        # The file's input and output are int8 already; its kernels are int4.
        bits = int4_export.default_bits(model)
        content = int4_export.convert(model, bits, rep, num_calibration=n).content
        checked_as = "int8"
    return tflite_verify.export_tflite(
        model,
        output,
        mode=checked_as,
        x_verify=data.x_test[idx],
        y_verify=data.y_test[idx],
        representative_data=rep,
        int8_io=int8_io,
        sparse=sparse,
        content=content,
    )


def check_arguments(model_path: str, output: str) -> None:
    """Refuses a missing or already-exported model and an unwritable output, before any work.

    Example:
        >>> check_arguments("m.tflite", "out.tflite")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model_path`: 'm.tflite'. Accepted: a saved Keras model (.keras, .h5 or a SavedModel folder); a .tflite file is already exported (time it with: tools/benchmark_tflite.py).
    """
    model_io.check_model_path("model_path", model_path, time_it="tools/benchmark_tflite.py")
    cli_errors.check_output_path("output", output, suffixes=(".tflite",))


def main(argv: list[str]) -> None:
    del argv
    # Imported here, not at the top, so that export_from_splits is usable (and testable)
    # without the model loader.
    from pocketflow_tf import model_io

    check_arguments(FLAGS.model_path, FLAGS.output)
    model = model_io.load_model(FLAGS.model_path, trust_unsafe=FLAGS.trust_model)
    data = datasets.load_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir)
    result = export_from_splits(
        model,
        data,
        FLAGS.output,
        mode=FLAGS.mode,
        int8_io=FLAGS.int8_io,
        num_verify=FLAGS.num_verify,
        num_calibration=FLAGS.num_calibration,
        sparse=FLAGS.sparse,
    )
    if FLAGS.mode != result.report.mode:
        print(f"{FLAGS.mode} file, verified at the {result.report.mode} thresholds:")
    print(result.report.summary())
    print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    print(f"wrote {result.path} ({result.bytes} bytes, {result.bytes_gzip} gzipped)")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["model_path", "output"])
    cli_errors.run(main)  # one error line and exit status 2; tracebacks with --debug
