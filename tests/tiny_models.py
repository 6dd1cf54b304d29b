"""Tiny seeded models shared by several test modules."""

from pocketflow_tf.compat import keras


def small_resnet(seed=0):
    """Stem -> one residual block -> GAP -> logits on 12x12x1: residual and plain groups."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input((12, 12, 1))
    x = L.Rescaling(2.0, offset=-1.0, name="normalize")(inp)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="a")(x)
    y = L.BatchNormalization(name="a_bn")(y)
    y = L.ReLU()(y)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="b")(y)
    y = L.BatchNormalization(name="b_bn")(y)
    x = L.ReLU()(L.Add(name="merge")([x, y]))
    x = L.Conv2D(16, 3, strides=2, padding="same", name="c")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x))
