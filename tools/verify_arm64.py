"""Checks a ``.tflite`` file on the aarch64 LiteRT (under qemu) against the x86 LiteRT.

Runs the inputs through both runtimes (:func:`pocketflow_tf.arm64.verify_arm64`), prints the
top-1 agreement, the largest output difference and, for a quantized output, that difference
in quantization steps, and writes the JSON record beside the model (``MODEL.arm64.json``).
Needs the ARM64 lane, prepared once by ``tools/arm64_lane.sh`` (docs/arm64.md).

Usage:
    tools/verify_arm64.sh MODEL.tflite [--inputs X.npy] [--keras_model M.keras]
        [--cpu cortex-a76|cortex-a53] [--num 200] [--batch_size 1] [--output R.json]

Without ``--inputs``, ``--num`` seeded uniform ``[0, 1)`` images of the model's input shape
are used; pass real inputs (preprocessed as for the Keras model) for figures that matter.

Example:
    $ tools/verify_arm64.sh models/m/model.int8.tflite --inputs x_test.npy
    models/m/model.int8.tflite: ARM64 (ai-edge-litert 2.3.0, qemu cortex-a76) vs x86 on 200 samples: top-1 agreement 1.0000, max|diff| 0 = 0 quantization steps (of 0.0625)
"""

from __future__ import annotations

import numpy as np
from absl import flags

from pocketflow_tf import arm64, cli_errors, errors, options, tflite_verify

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the tool's flags (when it runs as a command only)."""
    flags.DEFINE_string("inputs", None, "A .npy array (N, ...) of inputs, as fed to the model.")
    flags.DEFINE_integer("num", 200, "Without --inputs: this many seeded uniform [0, 1) inputs.")
    flags.DEFINE_string("keras_model", None, "Also compare both runtimes with this Keras model.")
    flags.DEFINE_string("cpu", arm64.DEFAULT_CPU, "Emulated CPU: cortex-a76 or cortex-a53.")
    flags.DEFINE_integer("batch_size", 1, "Samples per invoke() on both runtimes.")
    flags.DEFINE_string("output", None, "JSON record path (default: MODEL.arm64.json).")
    flags.DEFINE_string("lane_dir", None, "The lane's folder (default: .venv-arm64).")
    cli_errors.define_debug_flag()


def load_inputs(model_path: str, path: str | None, num: int) -> np.ndarray:
    """The inputs of the check: the ``.npy`` at ``path``, else ``num`` seeded random images.

    Example:
        >>> load_inputs("m.tflite", "/nonexistent.npy", 200)  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `inputs`: ...
    """
    if path is not None:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise errors.InvalidArgumentError(
                "inputs", path, f"a readable .npy array (N, ...) of inputs ({e})"
            ) from None
    num = options.check_integer("num", num, low=1)
    shape = [int(d) for d in tflite_verify.TFLiteRunner(model_path).input_details["shape"][1:]]
    return np.random.default_rng(0).random((num, *shape), dtype=np.float32)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise errors.InvalidArgumentError(
            "MODEL", " ".join(argv[1:]) or None, "exactly one .tflite path"
        )
    model_path = argv[1]
    keras_model = None
    # The model and the lane before the Keras model is loaded (that imports TensorFlow).
    x = load_inputs(model_path, FLAGS.inputs, FLAGS.num)
    lane = arm64.Arm64Lane.find(FLAGS.lane_dir)
    if FLAGS.keras_model:
        from pocketflow_tf import model_io

        keras_model = model_io.load_model(FLAGS.keras_model)
    report = arm64.verify_arm64(
        model_path,
        x,
        keras_model=keras_model,
        cpu=FLAGS.cpu,
        batch_size=FLAGS.batch_size,
        lane=lane,
        record_path=FLAGS.output,
    )
    print(report.summary())
    if report.keras:
        for side, fig in report.keras.items():
            print(
                f"  {side} vs Keras: top-1 agreement {fig['top1_agreement']:.4f}, "
                f"max|diff| {fig['max_abs_diff']:.3g}"
            )
    print(f"wrote {FLAGS.output or model_path + arm64.RECORD_SUFFIX}")


if __name__ == "__main__":
    define_flags()
    cli_errors.run(main)  # one error line and exit status 2; tracebacks with --debug
