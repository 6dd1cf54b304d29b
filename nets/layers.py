"""Small building blocks shared by the nets.

Example:
    >>> from pocketflow_tf.nets import layers
    >>> layers.normalize(0.5, 0.25).get_config()["scale"]
    4.0
"""

from __future__ import annotations

from collections.abc import Sequence

from pocketflow_tf.compat import keras


def normalize(mean: float | Sequence[float], std: float | Sequence[float]) -> keras.layers.Layer:
    """A ``Rescaling`` layer computing ``(x - mean) / std`` inside the model.

    Keeping normalisation in the model means the TFLite file takes the same ``[0, 1]`` images
    the data loaders produce: calibration and verification cannot use a different
    preprocessing from training.

    Example:
        >>> list(normalize([0.5, 0.5], [0.5, 0.25]).get_config()["offset"])
        [-1.0, -2.0]
    """
    if isinstance(mean, int | float):
        return keras.layers.Rescaling(1.0 / std, offset=-mean / std, name="normalize")
    scale = [1.0 / s for s in std]
    offset = [-m / s for m, s in zip(mean, std, strict=True)]
    return keras.layers.Rescaling(scale, offset=offset, name="normalize")


def conv_bn_relu(x, filters: int, kernel: int, strides: int, name: str, relu: bool = True):
    """Conv2D (no bias) -> BatchNorm -> optional ReLU, with names a pruner can report.

    Example:
        >>> inp = keras.Input((8, 8, 1))
        >>> conv_bn_relu(inp, 4, 3, 2, "c").shape.as_list()
        [None, 4, 4, 4]
    """
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x
