import numpy as np
import pytest

from pocketflow_tf import errors, heads
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import mobilenet, recipe, resnet

SHAPES = {"fmnist": (28, 28, 1), "cifar10": (32, 32, 3)}


@pytest.mark.parametrize("name", recipe.RECIPES)
def test_every_recipe_builds_a_classifier(name):
    r = recipe.get_recipe(name)
    model = r.build(SHAPES[r.dataset], 10)
    assert model.output_shape == (None, 10)
    # Our nets output logits; the user-style one ends in a softmax as users' models do.
    expected = "softmax" if name == "userstyle_at_fmnist" else "logits"
    assert heads.output_kind(model) == expected
    out = model(np.random.default_rng(0).random((2, *SHAPES[r.dataset]), dtype=np.float32))
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("depth", resnet.DEPTHS)
def test_resnet_depths_count_conv_layers(depth):
    m = resnet.build_resnet((28, 28, 1), 10, depth=depth)
    convs = [
        lay
        for lay in m.layers
        if isinstance(lay, keras.layers.Conv2D) and lay.kernel_size == (3, 3)
    ]
    denses = [lay for lay in m.layers if isinstance(lay, keras.layers.Dense)]
    assert len(convs) + len(denses) == depth
    assert m.get_layer("s3b1_b_conv").filters == 64


def test_bad_sizes_are_named():
    with pytest.raises(errors.InvalidArgumentError, match="resnet_size"):
        resnet.build_resnet((28, 28, 1), 10, depth=18)
    with pytest.raises(errors.InvalidArgumentError, match="mobilenet_version"):
        mobilenet.build_mobilenet((28, 28, 1), 10, version=4)
    with pytest.raises(errors.InvalidArgumentError, match="nb_epochs_rat"):
        recipe.get_recipe("convnet_at_fmnist").train_config(0)


def test_normalisation_is_inside_the_model():
    m = recipe.get_recipe("resnet_at_fmnist").build((28, 28, 1), 10)
    norm = m.get_layer("normalize")
    out = norm(np.full((1, 2, 2, 1), 0.2860, np.float32)).numpy()
    np.testing.assert_allclose(out, 0.0, atol=1e-5)


def test_mobilenet_v2_has_residual_adds_and_channels_on_grain_of_8():
    m = mobilenet.build_mobilenet((28, 28, 1), 10, version=2)
    assert any(isinstance(lay, keras.layers.Add) for lay in m.layers)
    for lay in m.layers:
        if isinstance(lay, keras.layers.Conv2D) and not isinstance(
            lay, keras.layers.DepthwiseConv2D
        ):
            assert lay.filters % 8 == 0, lay.name


def test_epoch_scaling():
    r = recipe.get_recipe("resnet_at_fmnist")
    assert r.train_config(1.0).epochs == r.train.epochs
    assert r.train_config(0.01).epochs == 1
