"""The Keras 3 <-> tf-keras bridge in memory: each architectural pattern, both ways."""

import numpy as np
import pytest

from pocketflow_tf import errors, model_io
from pocketflow_tf.compat import keras

keras3 = pytest.importorskip("keras")
if not keras3.__version__.startswith("3"):  # the TF 2.15 lane has Keras 2 as `keras`
    pytest.skip("Keras 3 is not installed", allow_module_level=True)

RNG = np.random.default_rng(0)


def _x(shape):
    return RNG.standard_normal((2, *shape)).astype(np.float32)


def _out(model, x):
    y = model(x, training=False)
    return np.asarray(y[0] if isinstance(y, list | tuple) else y)


def _round_trip(model3, x):
    """Keras 3 -> tf-keras -> Keras 3, outputs equal (1e-5) at each step."""
    ref = _out(model3, x)
    m2 = model_io.from_keras3(model3)
    assert isinstance(m2, keras.Model) and not model_io.is_keras3(m2)
    np.testing.assert_allclose(_out(m2, x), ref, atol=1e-5)
    back = model_io.to_keras3(m2)
    assert model_io.is_keras3(back)
    np.testing.assert_allclose(_out(back, x), ref, atol=1e-5)
    return m2, back


def _se_block_model():
    """Concatenate, Add with a projection, DepthwiseConv2D with an SE Multiply."""
    keras3.utils.set_random_seed(0)
    inp = keras3.Input((8, 8, 3))
    a = keras3.layers.Conv2D(4, 3, padding="same")(inp)
    b = keras3.layers.Conv2D(4, 1, name="projection")(inp)
    x = keras3.layers.Add()([a, b])
    d = keras3.layers.DepthwiseConv2D(3, padding="same")(x)
    se = keras3.layers.GlobalAveragePooling2D(keepdims=True)(d)
    se = keras3.layers.Conv2D(4, 1, activation="sigmoid")(se)
    x = keras3.layers.Multiply()([d, se])
    x = keras3.layers.Concatenate()([x, a])
    x = keras3.layers.GlobalAveragePooling2D()(x)
    return keras3.Model(inp, keras3.layers.Dense(3)(x))


def test_is_keras3():
    assert model_io.is_keras3(_se_block_model())
    assert not model_io.is_keras3(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    assert not model_io.is_keras3("model.keras")


def test_concat_add_projection_se_multiply_round_trip():
    m2, back = _round_trip(_se_block_model(), _x((8, 8, 3)))
    assert m2.get_layer("projection").kernel.shape == (1, 1, 3, 4)
    assert back.get_layer("projection").kernel.shape == (1, 1, 3, 4)


def test_sequential_round_trip():
    keras3.utils.set_random_seed(1)
    seq = keras3.Sequential(
        [keras3.Input((6,)), keras3.layers.Dense(4, activation="relu"), keras3.layers.Dense(2)]
    )
    _round_trip(seq, _x((6,)))


def test_wrong_keras_is_refused_with_the_value():
    m2 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(errors.InvalidArgumentError, match="'Sequential'"):
        model_io.from_keras3(m2)
    with pytest.raises(errors.InvalidArgumentError, match="Keras 3 already"):
        model_io.to_keras3(_se_block_model())


def test_subclassed_keras3_model_is_refused():
    class Net(keras3.Model):
        def call(self, x):
            return x

    with pytest.raises(errors.UnsupportedModelError, match="'Net' is a subclassed"):
        model_io.from_keras3(Net())


def test_custom_layer_named_with_remedy():
    class Scale(keras3.layers.Layer):
        def call(self, x):
            return x * 3.0

    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Dense(2)(Scale(name="my_scale")(inp)))
    with pytest.raises(errors.UnsupportedModelError) as e:
        model_io.from_keras3(model)
    msg = str(e.value)
    assert "'my_scale'" in msg and "'Scale'" in msg and "tf-keras" in msg and "replace" in msg


def test_lambda_needs_trust():
    inp = keras3.Input((4,))
    model = keras3.Model(inp, keras3.layers.Lambda(lambda t: t * 2.0, name="dbl")(inp))
    with pytest.raises(errors.UnsupportedModelError, match="'dbl' is a Lambda"):
        model_io.from_keras3(model)
    x = _x((4,))
    np.testing.assert_allclose(_out(model_io.from_keras3(model, trust_unsafe=True), x), 2 * x)
