"""The user-style functional model (Concatenate, Add, depthwise, SE Multiply, softmax head):
its channel groups, physical pruning and float / int8 LiteRT export, on an untrained copy."""

import numpy as np
import pytest

from pocketflow_tf import channel_graph, heads, surgery, tflite_export, tflite_verify
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import recipe, userstyle
from tests.test_channel_graph import zero_channels

SHAPE = (32, 32, 1)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = recipe.get_recipe("userstyle_at_fmnist").build(SHAPE, 10)
    # Non-trivial BatchNorm statistics, so that slicing them wrongly would show.
    rng = np.random.default_rng(0)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
            )
    return m


def _x(n, seed=1):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def test_softmax_head_is_split_off_and_put_back(model):
    assert heads.output_kind(model) == "softmax"
    logits_model, head = heads.split(model)
    assert head == heads.Head("softmax", "predictions")
    assert heads.output_kind(logits_model) == "logits"
    x = _x(4)
    np.testing.assert_allclose(
        keras.activations.softmax(logits_model(x)).numpy(), model(x).numpy(), atol=1e-6
    )


def test_every_join_is_followed_and_every_inner_group_is_prunable(model):
    g = channel_graph.build(model)
    assert g.unsupported == {}
    got = {
        (tuple(grp.producers), grp.size): (grp.consumers, grp.members)
        for grp in g.prunable_groups()
    }
    # The residual Add couples res_conv2 to each half of the Concatenate: the concat's
    # 48 channels split into two 24-channel groups, each with two producers.
    assert got == {
        (("stem_conv",), 24): (["inc_1x1", "inc_3x3"], ["stem_bn"]),
        (("inc_1x1", "res_conv2"), 24): (
            ["res_conv1", "sep_pw"],
            ["inc_1x1_bn", "res_conv2_bn", "sep_dw", "sep_dw_bn"],
        ),
        (("inc_3x3", "res_conv2"), 24): (
            ["res_conv1", "sep_pw"],
            ["inc_3x3_bn", "res_conv2_bn", "sep_dw", "sep_dw_bn"],
        ),
        (("res_conv1",), 48): (["res_conv2"], ["res_conv1_bn"]),
        # The SE Multiply couples the gate's Dense to the features it scales; the
        # Reshape((1, 1, C)) keeps the channel axis, so nothing blocks it.
        (("sep_pw", "se_expand"), 96): (["se_reduce", "predictions"], ["sep_pw_bn"]),
        (("se_reduce",), 24): (["se_expand"], []),
    }
    # Only the model's own input and output are left alone.
    blocked = {grp.size: grp.blockers for grp in g.groups if not grp.prunable}
    assert blocked == {1: ["model input"], 10: ["model output"]}


def test_pruning_removes_channels_and_keeps_outputs(model):
    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    g = channel_graph.build(m)
    rng = np.random.default_rng(2)
    keep = {}
    for grp in g.prunable_groups():
        drop = np.sort(rng.choice(grp.size, size=grp.size // 2, replace=False))
        zero_channels(m, g, grp.id, list(drop))
        keep[grp.id] = np.setdiff1d(np.arange(grp.size), drop)
    x = _x(8)
    ref = m.predict(x, verbose=0)
    thin = surgery.prune(m, g, keep)
    np.testing.assert_allclose(thin.predict(x, verbose=0), ref, atol=1e-5)
    shapes = {
        name: thin.get_layer(name).get_weights()[0].shape
        for name in ("stem_conv", "inc_1x1", "inc_3x3", "res_conv1", "res_conv2", "sep_dw")
        + ("sep_pw", "se_reduce", "se_expand", "predictions")
    }
    assert shapes == {
        "stem_conv": (3, 3, 1, 12),
        "inc_1x1": (1, 1, 12, 12),
        "inc_3x3": (3, 3, 12, 12),
        "res_conv1": (3, 3, 24, 24),
        "res_conv2": (3, 3, 24, 24),
        "sep_dw": (3, 3, 24, 1),
        "sep_pw": (1, 1, 24, 48),
        "se_reduce": (48, 12),
        "se_expand": (12, 48),
        "predictions": (48, 10),
    }
    assert thin.get_layer("se_reshape").output_shape == (None, 1, 1, 48)
    assert heads.output_kind(thin) == "softmax"
    assert model.get_layer("sep_pw").kernel.shape.as_list() == [1, 1, 48, 96]  # untouched


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_tflite_export_verifies(model, mode):
    rep = _x(64, seed=4) if mode == "int8" else None
    content = tflite_export.convert(model, mode, representative_data=rep)
    report = tflite_verify.verify(model, content, _x(200, seed=3), mode=mode, check_child=False)
    assert report.passed, report.summary()
    if mode == "int8":
        assert tflite_export.int8_scale_problems(content) == []


def test_bad_width_is_named():
    with pytest.raises(Exception, match="width"):
        userstyle.build_userstyle(SHAPE, 10, width=2)
