"""MobileNet-style nets for small images: v1 (depthwise-separable) and v2 (inverted residual).

Example:
    >>> from pocketflow_tf.nets import mobilenet
    >>> mobilenet.build_mobilenet((28, 28, 1), 10, version=2).output_shape
    (None, 10)
"""

from __future__ import annotations

from collections.abc import Sequence

from pocketflow_tf import errors
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import layers

# (out_channels, stride) per block; sized for 28x28 / 32x32 inputs (three downsamplings).
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (512, 2))
# (expansion, out_channels, repeats, first stride).
_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))


def _dw_bn_relu(x, strides: int, name: str, relu: bool = True):
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_dw_bn")(x)
    if relu:
        x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return x


def build_mobilenet(
    input_shape: Sequence[int],
    num_classes: int,
    version: int = 1,
    width_multiplier: float = 0.5,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> keras.Model:
    """Builds a MobileNet v1- or v2-style classifier producing logits.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: Number of logits.
        version: 1 (depthwise-separable stack) or 2 (inverted residuals with linear
            bottlenecks and residual Adds).
        width_multiplier: Scales every channel count (rounded to a multiple of 8, which keeps
            the counts on the SIMD grain of XNNPACK).
        mean: Normalisation mean.
        std: Normalisation std.

    Example:
        >>> build_mobilenet((28, 28, 1), 10, version=3)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `mobilenet_version`: 3. Accepted: 1 or 2.
    """
    if version not in (1, 2):
        raise errors.InvalidArgumentError("mobilenet_version", version, "1 or 2")
    if not width_multiplier > 0:
        raise errors.InvalidArgumentError("width_multiplier", width_multiplier, "a number > 0")

    def ch(c):
        return max(8, int(c * width_multiplier + 4) // 8 * 8)

    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.normalize(mean, std)(inputs)
    x = layers.conv_bn_relu(x, ch(32), 3, 1, "stem")
    if version == 1:
        for i, (out, stride) in enumerate(_V1_BLOCKS):
            x = _dw_bn_relu(x, stride, f"b{i + 1}")
            x = layers.conv_bn_relu(x, ch(out), 1, 1, f"b{i + 1}_pw")
    else:
        idx = 0
        for expansion, out, repeats, first_stride in _V2_BLOCKS:
            for r in range(repeats):
                idx += 1
                stride = first_stride if r == 0 else 1
                name = f"b{idx}"
                y = x
                if expansion != 1:
                    y = layers.conv_bn_relu(y, ch(x.shape[-1] * expansion), 1, 1, f"{name}_exp")
                y = _dw_bn_relu(y, stride, name)
                y = layers.conv_bn_relu(y, ch(out), 1, 1, f"{name}_proj", relu=False)
                if stride == 1 and x.shape[-1] == y.shape[-1]:
                    y = keras.layers.Add(name=f"{name}_add")([x, y])
                x = y
        x = layers.conv_bn_relu(x, ch(640), 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_v{version}")
