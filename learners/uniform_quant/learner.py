"""Uniform int8 quantization-aware training to a full-integer ``.tflite`` (``uniform``).

Starts from the given trained model (PocketFlow's uniform learner trained from scratch
unless told otherwise), wraps it for QAT with TFMOT's default 8-bit scheme
(:func:`pocketflow_tf.qat.quantize_model`: per-channel symmetric int8 weights, per-tensor
asymmetric int8 activations, BatchNorm folded into its convolution), fine-tunes it --
distilled from the float model when distillation is on -- and returns the QAT model. Its
deployable form is the ``"int8"`` export (:func:`pocketflow_tf.tflite_verify.export_tflite`),
which the run scripts make and verify; the fake-quantised Keras model predicts what that
file will compute. Post-training int8 (the same export of the float model, no training) is
the cheap baseline.

Only 8 bits are in this version: lower and mixed bit-widths (``uql_equivalent_bits``) are
planned for the same issue and are refused with a clear message until then.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(4, 3),
    ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> x, y = np.random.rand(32, 4, 4, 1).astype("float32"), np.arange(32) % 2
    >>> lrn = UniformQuantLearner(training.TrainConfig(epochs=1, batch_size=8), verbose=0)
    >>> type(lrn.fit(m, x, y).layers[1]).__name__
    'QuantizeWrapperV2'
"""

from __future__ import annotations

from typing import Any, ClassVar

from pocketflow_tf import errors, learner, model_io, qat
from pocketflow_tf.compat import keras

#: Bit-widths this version trains; the rest of 1..8 is planned (mixed precision).
SUPPORTED_BITS = (8,)


@learner.register("uniform", "uniform-quant", "UniformQuantLearner")
class UniformQuantLearner(learner.Learner):
    """Int8 quantization-aware fine-tuning of a trained model.

    Args:
        train_config: Fine-tuning settings (see :class:`learner.Learner`); QAT starts from
            trained weights, so a tenth of the from-scratch learning rate is typical.
        uql_weight_bits: Weight bit-width (8 in this version).
        uql_activation_bits: Activation bit-width (8 in this version).
        **kwargs: Passed to :class:`learner.Learner` (distillation, teacher, log_dir, ...).

    Attributes:
        deploy_modes: The ``.tflite`` modes that deploy what this learner trains.
        save_extension: QAT models are saved as ``.h5`` (see :mod:`pocketflow_tf.qat`).

    Example:
        >>> UniformQuantLearner(uql_weight_bits=12)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `uql_weight_bits`: 12. Accepted: an integer in 1..8.
    """

    name = "uniform"
    deploy_modes: ClassVar[tuple[str, ...]] = ("int8",)
    save_extension: ClassVar[str] = ".h5"

    def __init__(
        self,
        train_config=None,
        *,
        uql_weight_bits: int = 8,
        uql_activation_bits: int = 8,
        **kwargs: Any,
    ):
        super().__init__(train_config, **kwargs)
        for arg, bits in (
            ("uql_weight_bits", uql_weight_bits),
            ("uql_activation_bits", uql_activation_bits),
        ):
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
                raise errors.InvalidArgumentError(arg, bits, "an integer in 1..8")
            if bits not in SUPPORTED_BITS:
                raise errors.InvalidArgumentError(
                    arg,
                    bits,
                    f"one of {SUPPORTED_BITS} in this version (bit-widths below 8 and mixed "
                    "precision are planned: issue 5)",
                )
        self.uql_weight_bits = uql_weight_bits
        self.uql_activation_bits = uql_activation_bits

    def get_config(self) -> dict[str, Any]:
        """Settings for run records.

        Example:
            >>> UniformQuantLearner().get_config()["uql_weight_bits"]
            8
        """
        cfg = super().get_config()
        cfg.update(
            uql_weight_bits=self.uql_weight_bits, uql_activation_bits=self.uql_activation_bits
        )
        return cfg

    def object_scope(self):
        """TFMOT's quantization wrappers, for rebuilding the prepared model elsewhere."""
        return qat.quantize_scope()

    def prepare(self, model: keras.Model) -> keras.Model:
        """The QAT copy of ``model`` (same weights, fake-quantised).

        Example:
            >>> UniformQuantLearner().prepare.__name__
            'prepare'
        """
        model_io.require_graph(model, "quantization-aware training")
        return qat.quantize_model(model)
