"""Small plain CNNs: a 2-conv ConvNet and LeNet-5.

Example:
    >>> from pocketflow_tf.nets import simple
    >>> simple.build_convnet((28, 28, 1), 10).output_shape
    (None, 10)
"""

from __future__ import annotations

from collections.abc import Sequence

from pocketflow_tf.compat import keras
from pocketflow_tf.nets import layers


def build_convnet(
    input_shape: Sequence[int],
    num_classes: int,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> keras.Model:
    """Two conv-BN-ReLU-pool stages and a 128-unit hidden layer (about 0.4 M parameters).

    Example:
        >>> build_convnet((28, 28, 1), 10).count_params() > 0
        True
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.normalize(mean, std)(inputs)
    x = layers.conv_bn_relu(x, 32, 3, 1, "c1")
    x = keras.layers.MaxPooling2D(2, name="c1_pool")(x)
    x = layers.conv_bn_relu(x, 64, 3, 1, "c2")
    x = keras.layers.MaxPooling2D(2, name="c2_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="convnet")


def build_lenet(
    input_shape: Sequence[int],
    num_classes: int,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> keras.Model:
    """LeNet-5 with ReLU and max pooling (as in PocketFlow's ``lenet_at_cifar10``).

    Example:
        >>> build_lenet((32, 32, 3), 10).output_shape
        (None, 10)
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.normalize(mean, std)(inputs)
    x = keras.layers.Conv2D(6, 5, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 5, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(84, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet")
