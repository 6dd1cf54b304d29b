"""A functional model written the way a user writes one: branches, residuals, depthwise, SE.

It is the framework's test of "your own model": plain ``keras.layers`` wired with the
functional API (no helpers of ours but the input normalisation), ending in a softmax as the
Keras tutorials do. Its blocks are the joins the channel graph must follow: a two-branch
``Concatenate``, a residual ``Add``, a ``DepthwiseConv2D`` + pointwise pair and a
squeeze-and-excitation ``Multiply``.

Example:
    >>> from pocketflow_tf.nets import userstyle
    >>> m = userstyle.build_userstyle((32, 32, 1), 10)
    >>> m.output_shape, m.layers[-1].get_config()["activation"]
    ((None, 10), 'softmax')
"""

from __future__ import annotations

from collections.abc import Sequence

from pocketflow_tf import errors
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import layers as net_layers

L = keras.layers


def _bn_relu(x, name: str):
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def build_userstyle(
    input_shape: Sequence[int],
    num_classes: int,
    width: int = 24,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> keras.Model:
    """Builds the user-style classifier (probabilities out, ``softmax`` head).

    Layout (32x32 input): stem 3x3 conv -> max-pool -> inception block (1x1 and 3x3 branches,
    ``Concatenate``) -> max-pool -> residual block (two 3x3 convs, ``Add``) -> depthwise 3x3
    stride 2 + pointwise 1x1 -> squeeze-and-excitation (``GlobalAveragePooling2D`` ->
    ``Dense`` -> ``Dense(sigmoid)`` -> ``Reshape`` -> ``Multiply``) -> pooling -> ``Dense``
    softmax.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: Number of classes.
        width: Channels of the stem; the later blocks use multiples of it.
        mean: Normalisation mean.
        std: Normalisation std.

    Example:
        >>> build_userstyle((32, 32, 1), 10, width=0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `width`: 0. Accepted: an integer >= 4.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 4:
        raise errors.InvalidArgumentError("width", width, "an integer >= 4")
    w = width
    inputs = keras.Input(tuple(input_shape), name="image")
    x = net_layers.normalize(mean, std)(inputs)
    x = L.Conv2D(w, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn_relu(x, "stem")
    x = L.MaxPooling2D(name="stem_pool")(x)

    # Inception-like: a cheap 1x1 view and a 3x3 view of the same input, stacked.
    a = L.Conv2D(w, 1, use_bias=False, name="inc_1x1")(x)
    a = _bn_relu(a, "inc_1x1")
    b = L.Conv2D(w, 3, padding="same", use_bias=False, name="inc_3x3")(x)
    b = _bn_relu(b, "inc_3x3")
    x = L.Concatenate(name="inc_concat")([a, b])
    x = L.MaxPooling2D(name="inc_pool")(x)

    # Residual: the identity path ties the block's output channels to its input's.
    y = L.Conv2D(2 * w, 3, padding="same", use_bias=False, name="res_conv1")(x)
    y = _bn_relu(y, "res_conv1")
    y = L.Conv2D(2 * w, 3, padding="same", use_bias=False, name="res_conv2")(y)
    y = L.BatchNormalization(name="res_conv2_bn")(y)
    x = L.Add(name="res_add")([x, y])
    x = L.ReLU(name="res_relu")(x)

    # Depthwise-separable downsampling.
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="sep_dw")(x)
    x = _bn_relu(x, "sep_dw")
    x = L.Conv2D(4 * w, 1, use_bias=False, name="sep_pw")(x)
    x = _bn_relu(x, "sep_pw")

    # Squeeze-and-excitation: per-channel gates from the globally pooled features.
    s = L.GlobalAveragePooling2D(name="se_squeeze")(x)
    s = L.Dense(w, activation="relu", name="se_reduce")(s)
    s = L.Dense(4 * w, activation="sigmoid", name="se_expand")(s)
    s = L.Reshape((1, 1, 4 * w), name="se_reshape")(s)
    x = L.Multiply(name="se_scale")([x, s])

    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="userstyle")
