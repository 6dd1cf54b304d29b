"""The keras.applications patterns through the channel graph, the surgery and the accounting.

Small functional models reproduce what the zoo needs (MobileNetV3's hard-swish as tf ops,
ConvNeXt's grouped depthwise conv + LayerNormalization + LayerScale, RegNet's grouped conv,
EfficientNet's SE with Reshape, Normalization, padding/cropping, Dropout with noise_shape);
one real MobileNetV3Small runs end to end. The whole zoo is ``slow`` (``bench.run zoo``).
"""

import importlib

import numpy as np
import pytest

from pocketflow_tf import accounting, channel_graph, layer_rules, surgery
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.channel import learner as channel_learner

L = keras.layers
# ConvNeXt's LayerScale lives in the tf-keras application module, not in keras.layers.
LayerScale = importlib.import_module(keras.applications.ConvNeXtTiny.__module__).LayerScale


def hard_swish_net():
    """MobileNetV3: hard-swish as tf ops with constants, SE gate (with EfficientNet's Reshape),
    ZeroPadding, Cropping, Dropout with noise_shape."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = L.Conv2D(16, 3, padding="same", name="stem")(x)
    x = L.BatchNormalization()(x)
    x = L.Multiply()([x, L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])  # hard-swish
    x = L.ZeroPadding2D(1)(x)
    x = L.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = L.BatchNormalization()(x)
    x = x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)  # the same with tf.nn.relu6
    se = L.GlobalAveragePooling2D()(x)
    se = L.Reshape((1, 1, 16), name="se_reshape")(se)  # EfficientNet's SE: resized by surgery
    se = L.Conv2D(8, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(16, 1, name="se_expand")(se)
    x = L.Multiply()([x, L.ReLU(6.0)(se + 3.0) * (1.0 / 6.0)])
    x = L.Conv2D(24, 1, name="project")(x)
    x = L.Cropping2D(1)(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Dropout(0.2, noise_shape=(None, 1, 1, 24))(x)
    x = L.Conv2D(10, 1, name="logits")(x)
    return keras.Model(inp, L.Flatten()(x))


def convnext_net():
    """ConvNeXt: Conv2D(groups=C) depthwise, LayerNormalization, LayerScale, x + y."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 4, strides=4, name="stem")(inp)
    x = L.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    for i in range(2):
        y = L.Conv2D(16, 7, padding="same", groups=16, name=f"b{i}_dw")(x)
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{i}_ln")(y)
        y = L.Dense(64, name=f"b{i}_pw1")(y)
        y = L.Activation("gelu")(y)
        y = L.Dense(16, name=f"b{i}_pw2")(y)
        y = LayerScale(0.5, 16, name=f"b{i}_scale")(y)
        x = x + y
    x = L.GlobalAveragePooling2D()(x)
    x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    return keras.Model(inp, L.Dense(10, name="head")(x))


def regnet_se_net():
    """RegNetY / EfficientNet: grouped conv, SE as tf.math.multiply, Reshape, Normalization."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 3))
    norm = L.Normalization(axis=-1)
    norm.adapt(np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32"))
    x = norm(inp)
    x = L.Conv2D(16, 3, padding="same", name="stem")(x)
    y = L.Conv2D(16, 1, name="conv_1x1_a")(x)
    y = L.ReLU()(y)
    y = L.Conv2D(16, 3, padding="same", groups=2, name="grouped")(y)
    y = L.ReLU()(y)
    se = L.GlobalAveragePooling2D()(y)
    se = L.Reshape((1, 1, 16))(se)
    se = L.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    y = y * se
    y = L.Conv2D(16, 1, name="conv_1x1_c")(y)
    x = L.ReLU()(x + y)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, name="head")(x))


def _prune_half(model, flops_keep=0.5):
    x = np.random.default_rng(0).random((16, *model.input_shape[1:])).astype("float32")
    lrn = channel_learner.ChannelPrunedLearner(
        cp_prune_option="uniform",
        cp_preserve_ratio=flops_keep,
        cp_criterion="l1",
        cp_channel_round=1,
        verbose=0,
    )
    thin = lrn.prune(model, x)
    ratio = accounting.count_flops(thin) / accounting.count_flops(model)
    y = thin.predict(x[:2], verbose=0)
    assert y.shape == (2, 10)
    return thin, ratio


def _fully_understood_graph(model):
    """The channel graph of ``model``, after checking that every layer has a channel rule
    and a cost (nothing unsupported, nothing uncounted)."""
    g = channel_graph.build(model)
    assert g.unsupported == {}
    assert accounting.profile_model(model).unknown_layers == []
    return g


def _dead_channels_ok(model):
    g = channel_graph.build(model)
    x = np.random.default_rng(1).random((3, *model.input_shape[1:])).astype("float32")
    err, n = surgery.dead_channel_error(model, g, x)
    assert n > 0
    assert err < 1e-4


def test_hard_swish_tf_ops_are_per_channel():
    m = hard_swish_net()
    g = _fully_understood_graph(m)
    # The stem's channels flow through x + 3, ReLU6, * (1/6), the depthwise conv and the SE
    # gate: one group, produced by the stem and se_expand, read by se_reduce and project.
    grp = g.group_of("stem")
    assert grp.prunable and grp.producers == ["stem", "se_expand"]
    assert "dw" in grp.members and set(grp.consumers) == {"se_reduce", "project"}
    thin, ratio = _prune_half(m)
    assert ratio <= 0.55
    assert thin.get_layer("stem").filters < 16
    kept = thin.get_layer("stem").filters
    assert thin.get_layer("dw").depthwise_kernel.shape[2] == kept
    assert tuple(thin.get_layer("se_reshape").target_shape) == (1, 1, kept)
    _dead_channels_ok(m)


def test_convnext_grouped_depthwise_layer_norm_and_layer_scale():
    m = convnext_net()
    g = _fully_understood_graph(m)
    stream = g.group_of("stem")
    assert stream.prunable
    assert {"b0_dw", "b0_ln", "b0_scale", "head_ln"} <= set(stream.members)
    assert not stream.exact and "LayerNormalization" in stream.notes[0]
    assert g.group_of("b0_pw1").exact
    thin, ratio = _prune_half(m)
    assert ratio <= 0.55
    dw = thin.get_layer("b0_dw")
    assert dw.groups == dw.filters == thin.get_layer("stem").filters < 16
    assert thin.get_layer("b0_scale").gamma.shape[0] == dw.filters
    _dead_channels_ok(m)  # only the exact (hidden) groups are cut


def test_grouped_conv_blocks_its_groups_by_name_and_se_reshape_passes():
    m = regnet_se_net()
    g = channel_graph.build(m)
    assert set(g.unsupported) == {"grouped"}
    assert "groups=2" in g.unsupported["grouped"]
    assert not g.group_of("conv_1x1_a").prunable
    assert any("'grouped'" in b for b in g.group_of("conv_1x1_a").blockers)
    # The residual stream and the SE bottleneck stay prunable.
    assert g.group_of("stem").prunable and g.group_of("se_reduce").prunable
    assert "normalization" in g.group(g.layers["stem"].inputs[0][0].group).members
    assert accounting.profile_model(m).unknown_layers == []
    thin, ratio = _prune_half(m, 0.7)  # the grouped conv's groups keep their channels
    assert ratio <= 0.75 and thin.get_layer("grouped").filters == 16
    _dead_channels_ok(m)


def test_unknown_layer_blocks_only_its_groups_and_user_rules_extend_the_table():
    class Gate(L.Layer):
        def call(self, x):
            return x * tf.sigmoid(x)

    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, name="a")(inp)
    a = Gate(name="gate")(a)
    b = L.Conv2D(8, 3, name="b")(a)
    m = keras.Model(inp, L.Conv2D(2, 1, name="out")(L.ReLU()(b)))
    g = channel_graph.build(m)
    assert "no channel rule" in g.unsupported["gate"]
    assert not g.group_of("a").prunable and g.group_of("b").prunable
    layer_rules.register(
        Gate, layer_rules.LayerRule(lambda layer, call: layer_rules.Coupling("pass"))
    )
    try:
        assert channel_graph.build(m).group_of("a").prunable
        with pytest.raises(ValueError, match="Gate"):
            layer_rules.register(Gate, layer_rules.LayerRule(lambda layer, call: None))
    finally:
        layer_rules._RULES.pop("Gate")


def test_mobilenet_v3_small_prunes_end_to_end():
    m = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    _fully_understood_graph(m)
    _, ratio = _prune_half(m)
    assert ratio <= 0.55
    _dead_channels_ok(m)


ZOO = [
    ("MobileNet", 32),
    ("MobileNetV2", 32),
    ("MobileNetV3Large", 32),
    ("EfficientNetB0", 32),
    ("EfficientNetV2B0", 32),
    ("ResNet50", 32),
    ("ResNet50V2", 32),
    ("DenseNet121", 32),
    ("NASNetMobile", 32),
    ("Xception", 71),
    ("InceptionV3", 75),
    ("ConvNeXtTiny", 32),
    ("RegNetX002", 32),
    ("RegNetY002", 32),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", ZOO)
def test_zoo_graph_and_dead_channel_surgery(name, size):
    m = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None
    )
    g = channel_graph.build(m)
    assert g.prunable_groups()
    assert accounting.profile_model(m).unknown_layers == []
    _dead_channels_ok(m)
