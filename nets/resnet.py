"""ResNet-20/32/44/56 for small images (He et al. 2016, CIFAR variant, option-B shortcuts).

Example:
    >>> from pocketflow_tf.nets import resnet
    >>> m = resnet.build_resnet((28, 28, 1), 10, depth=20)
    >>> m.count_params()
    273754
"""

from __future__ import annotations

from collections.abc import Sequence

from pocketflow_tf import errors
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import layers

#: Depths of the CIFAR-style ResNets (6n + 2).
DEPTHS = (20, 32, 44, 56)


def build_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int = 20,
    width: int = 16,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> keras.Model:
    """Builds a CIFAR-style ResNet with three stages of ``width``, ``2*width``, ``4*width``.

    Shortcuts that change shape are 1x1 conv + BN (option B), so every channel group is an
    ordinary, prunable layer.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: Number of logits.
        depth: One of 20, 32, 44, 56.
        width: Channels of the first stage (16 in the paper).
        mean: Per-image-channel mean used by the in-model normalisation.
        std: Per-image-channel std.

    Returns:
        A functional model producing logits.

    Example:
        >>> build_resnet((32, 32, 3), 10, depth=21)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `resnet_size`: 21. Accepted: one of (20, 32, 44, 56).
    """
    if depth not in DEPTHS:
        raise errors.InvalidArgumentError("resnet_size", depth, f"one of {DEPTHS}")
    blocks = (depth - 2) // 6
    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.normalize(mean, std)(inputs)
    x = layers.conv_bn_relu(x, width, 3, 1, "stem")
    for stage in range(3):
        filters = width * 2**stage
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage + 1}b{block + 1}"
            shortcut = x
            y = layers.conv_bn_relu(x, filters, 3, strides, f"{name}_a")
            y = layers.conv_bn_relu(y, filters, 3, 1, f"{name}_b", relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.conv_bn_relu(x, filters, 1, strides, f"{name}_sc", relu=False)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")
