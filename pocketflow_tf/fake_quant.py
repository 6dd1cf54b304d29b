"""``FakeQuant``: a quantize-dequantize step with fixed, learned ranges, in both Keras.

A trained quantization-aware (QAT) model computes its inference outputs with TFMOT's
wrappers, which exist in tf-keras only. :mod:`pocketflow_tf.qat_freeze` rewrites such a model
into standard layers plus this layer, one per quantized tensor, holding the ranges the QAT
model learned; that form has a Keras 3 twin (same class name, same config), which is how a
QAT result reaches a Keras 3 caller. Both classes are registered for saving under the
package ``pocketflow_tf`` (import this module before loading a file that holds them).

The computation is TensorFlow's own fake-quant kernel (the one TFMOT calls at inference),
so the outputs are the QAT model's exactly; the Keras 3 twin therefore needs Keras 3's
TensorFlow backend, the one this project runs on.

Example:
    >>> import numpy as np
    >>> fq = FakeQuant(minimum=0.0, maximum=2.55, num_bits=8)
    >>> out = fq(np.array([[0.004, 1.0, 9.0]], np.float32)).numpy()
    >>> [round(float(v), 4) for v in out[0]]  # on the grid of step 0.01, clipped to the range
    [0.0, 1.0, 2.55]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from pocketflow_tf import errors, model_io
from pocketflow_tf.compat import keras


class _FakeQuantMixin:
    """The computation and config shared by the tf-keras and Keras 3 classes."""

    def __init__(
        self,
        minimum: float | Sequence[float],
        maximum: float | Sequence[float],
        num_bits: int = 8,
        narrow_range: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        per_channel = isinstance(minimum, Sequence)
        if per_channel != isinstance(maximum, Sequence) or (
            per_channel and len(minimum) != len(maximum)
        ):
            raise errors.InvalidArgumentError(
                "minimum/maximum", (minimum, maximum), "two floats, or two lists of one length"
            )
        if isinstance(num_bits, bool) or num_bits not in range(2, 17):
            raise errors.InvalidArgumentError("num_bits", num_bits, "an integer in 2..16")
        self.minimum = [float(v) for v in minimum] if per_channel else float(minimum)
        self.maximum = [float(v) for v in maximum] if per_channel else float(maximum)
        self.num_bits = int(num_bits)
        self.narrow_range = bool(narrow_range)

    def call(self, inputs):
        fake_quant = (
            tf.quantization.fake_quant_with_min_max_vars_per_channel  # per last-axis channel
            if isinstance(self.minimum, list)
            else tf.quantization.fake_quant_with_min_max_vars
        )
        return fake_quant(
            inputs,
            tf.constant(self.minimum, tf.float32),
            tf.constant(self.maximum, tf.float32),
            num_bits=self.num_bits,
            narrow_range=self.narrow_range,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "minimum": self.minimum,
            "maximum": self.maximum,
            "num_bits": self.num_bits,
            "narrow_range": self.narrow_range,
        }


@keras.utils.register_keras_serializable(package="pocketflow_tf")
class FakeQuant(_FakeQuantMixin, keras.layers.Layer):
    """Quantizes and dequantizes its input on a fixed range (tf-keras).

    Args:
        minimum: The range's lower end, or one per channel (last axis).
        maximum: The range's upper end, or one per channel.
        num_bits: Levels ``2**num_bits`` (2..16).
        narrow_range: Leave the lowest level out (TFMOT's symmetric weights).
        **kwargs: Layer arguments (``name``...).

    Example:
        >>> FakeQuant(-1.0, 1.0, 4, name="fq").get_config()["num_bits"]
        4
    """


def _keras3() -> Any:
    """Keras 3, or ``None`` where it is absent (the Horovod lane's TF 2.15 stack)."""
    try:
        import keras
    except ImportError:
        return None
    return keras if keras.__version__.startswith("3.") else None


keras3 = _keras3()
#: The Keras 3 twin: same class name and config, so each side rebuilds the other's layer
#: (``None`` without Keras 3).
FakeQuant3 = (
    keras3.saving.register_keras_serializable(package="pocketflow_tf", name="FakeQuant")(
        type(
            "FakeQuant",
            (_FakeQuantMixin, keras3.layers.Layer),
            {"__doc__": "Keras 3 twin of :class:`FakeQuant`.", "__module__": __name__},
        )
    )
    if keras3 is not None
    else None
)

_ARGS = ("minimum", "maximum", "num_bits", "narrow_range")


def _bridge(layer: Any, dst: Any) -> Any:
    config = layer.get_config()
    cls = FakeQuant if dst is keras else FakeQuant3
    return cls(**{k: config[k] for k in _ARGS}, name=layer.name)


model_io.register_bridge("FakeQuant", _bridge)

__all__ = ["FakeQuant", "FakeQuant3"]
