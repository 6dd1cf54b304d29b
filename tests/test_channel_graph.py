"""Channel dependency graph and surgery: coupled groups, exact slicing, clear refusals."""

import numpy as np
import pytest

from pocketflow_tf import channel_graph, errors, surgery
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import mobilenet, resnet
from tests.tiny_models import SubclassedNet


def kitchen_sink():
    """Residual Add, depthwise, separable, Concatenate, BN over a concat, PReLU, SE Multiply,
    Flatten -> Dense: every coupling the graph knows, in one 12x12 model."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((12, 12, 3), name="img")
    x = L.Rescaling(1 / 255.0, name="scale")(inp)
    a = L.Conv2D(8, 3, padding="same", name="a")(x)
    a = L.BatchNormalization(name="a_bn")(a)
    a = L.ReLU(name="a_relu")(a)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    d = L.BatchNormalization(name="dw_bn")(d)
    b = L.Conv2D(8, 1, name="b")(d)
    s = L.Add(name="add")([a, b])
    sep = L.SeparableConv2D(12, 3, padding="same", name="sep")(s)
    c = L.Conv2D(6, 1, name="c")(a)
    cat = L.Concatenate(name="cat")([sep, c])
    cat = L.BatchNormalization(name="cat_bn")(cat)
    cat = L.PReLU(shared_axes=[1, 2], name="prelu")(cat)
    cat = L.MaxPooling2D(2, name="pool")(cat)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(cat)
    se = L.Dense(4, activation="relu", name="se_fc1")(se)
    se = L.Dense(18, activation="sigmoid", name="se_fc2")(se)
    y = L.Multiply(name="se_mul")([cat, se])
    y = L.Conv2D(5, 3, strides=2, name="tail")(y)
    y = L.Flatten(name="flat")(y)
    out = L.Dense(3, name="logits")(y)
    model = keras.Model(inp, out)
    # Non-trivial BN statistics so that slicing them wrongly would show.
    rng = np.random.default_rng(0)
    for name in ("a_bn", "dw_bn", "cat_bn"):
        layer = model.get_layer(name)
        layer.set_weights(
            [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
        )
    return model


def _positions(graph, segments, gid, chans):
    out, off = [], 0
    for s in segments:
        if graph.find(s.group) == gid:
            for r in range(s.repeat):
                out += [off + r * s.size + c for c in chans]
        off += s.width
    return out


def zero_channels(model, graph, gid, chans):
    """Makes channels ``chans`` of group ``gid`` exactly zero everywhere they appear."""
    group = graph.group(gid)
    for name in group.producers:
        layer = model.get_layer(name)
        pos = _positions(graph, graph.layers[name].output, gid, chans)
        w = layer.get_weights()
        k = 1 if type(layer).__name__.startswith("Separable") else 0
        w[k][..., pos] = 0
        if len(w) > k + 1:
            w[k + 1][pos] = 0
        layer.set_weights(w)
    for name in group.members:
        layer = model.get_layer(name)
        cls = type(layer).__name__
        pos = _positions(graph, graph.layers[name].inputs[0], gid, chans)
        w = layer.get_weights()
        if cls == "BatchNormalization":
            w[0][pos] = 0  # gamma
            w[1][pos] = 0  # beta
        elif cls == "DepthwiseConv2D" and len(w) > 1:
            w[1][pos] = 0  # bias (the input channel is already zero)
        layer.set_weights(w)


def test_kitchen_sink_groups():
    g = channel_graph.build(kitchen_sink())
    by_producers = {tuple(x.producers): x for x in g.groups}
    res = by_producers[("a", "b")]
    assert res.prunable and res.size == 8
    assert res.members == ["a_bn", "dw", "dw_bn", "sep"]
    assert set(res.consumers) == {"b", "sep", "c"}
    sep_group = by_producers[("sep", "se_fc2")]
    assert sep_group.size == 12 and sep_group.prunable
    assert set(sep_group.members) == {"cat_bn", "prelu"}
    assert set(sep_group.consumers) == {"se_fc1", "tail"}
    # The SE gate's 18 outputs are cut to match the concat of 12 + 6 it multiplies.
    assert by_producers[("c", "se_fc2")].size == 6
    assert by_producers[("se_fc1",)].consumers == ["se_fc2"]
    tail = by_producers[("tail",)]
    assert tail.consumers == ["logits"] and tail.prunable
    assert not g.group_of("logits").prunable
    assert g.group_of("logits").blockers == ["model output"]
    assert g.unsupported == {}


def test_pruning_zero_channels_keeps_outputs_exactly():
    model = kitchen_sink()
    g = channel_graph.build(model)
    rng = np.random.default_rng(2)
    keep = {}
    for grp in g.prunable_groups():
        drop = rng.choice(grp.size, size=grp.size // 2, replace=False)
        zero_channels(model, g, grp.id, sorted(drop))
        keep[grp.id] = np.setdiff1d(np.arange(grp.size), drop)
    x = rng.random((4, 12, 12, 3)).astype("float32") * 255
    ref = model.predict(x, verbose=0)
    thin = surgery.prune(model, g, keep)
    np.testing.assert_allclose(thin.predict(x, verbose=0), ref, atol=1e-5)
    assert thin.count_params() < model.count_params()
    # Exact structure: every kernel shrank to the kept counts.
    assert thin.get_layer("a").kernel.shape.as_list() == [3, 3, 3, 4]
    assert thin.get_layer("dw").depthwise_kernel.shape.as_list() == [3, 3, 4, 1]
    assert thin.get_layer("sep").depthwise_kernel.shape.as_list() == [3, 3, 4, 1]
    assert thin.get_layer("sep").pointwise_kernel.shape.as_list() == [1, 1, 4, 6]
    assert thin.get_layer("cat_bn").gamma.shape.as_list() == [9]
    assert thin.get_layer("prelu").alpha.shape.as_list() == [1, 1, 9]
    assert thin.get_layer("se_fc1").kernel.shape.as_list() == [9, 2]
    assert thin.get_layer("tail").kernel.shape.as_list() == [3, 3, 9, 3]
    assert thin.get_layer("logits").kernel.shape.as_list() == [2 * 2 * 3, 3]
    # The input model is untouched.
    assert model.get_layer("a").kernel.shape.as_list() == [3, 3, 3, 8]


def test_sequential_model():
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(5, name="h"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    g = channel_graph.build(m)
    assert [x.producers for x in g.prunable_groups()] == [["c1"], ["h"]]
    thin = surgery.prune(m, g, {g.group_of("c1").id: [0, 3], g.group_of("h").id: [1]})
    assert thin.get_layer("h").kernel.shape.as_list() == [16 * 2, 1]
    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype("float32")
    assert thin.predict(x, verbose=0).shape == (2, 2)


def test_resnet20_groups_and_exact_structure():
    m = resnet.build_resnet((28, 28, 1), 10, depth=20)
    g = channel_graph.build(m)
    groups = g.prunable_groups()
    # 3 residual groups (one per stage) + 9 inner block groups.
    assert len(groups) == 12
    residual = [x for x in groups if len(x.producers) > 1]
    assert [x.size for x in residual] == [16, 32, 64]
    assert residual[0].producers == ["stem_conv", "s1b1_b_conv", "s1b2_b_conv", "s1b3_b_conv"]
    assert "logits" in residual[2].consumers
    keep = {x.id: np.arange(x.size // 2) for x in groups}
    thin = surgery.prune(m, g, keep)
    assert thin.get_layer("stem_conv").kernel.shape.as_list() == [3, 3, 1, 8]
    assert thin.get_layer("s2b1_sc_conv").kernel.shape.as_list() == [1, 1, 8, 16]
    assert thin.get_layer("s3b3_b_conv").kernel.shape.as_list() == [3, 3, 32, 32]
    assert thin.get_layer("logits").kernel.shape.as_list() == [32, 10]


def test_mobilenet_v2_groups_are_prunable():
    m = mobilenet.build_mobilenet((28, 28, 1), 10, version=2)
    g = channel_graph.build(m)
    assert g.unsupported == {}
    assert len(g.prunable_groups()) >= 5
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    keep = {grp.id: np.arange(max(1, grp.size // 2)) for grp in g.prunable_groups()}
    assert surgery.prune(m, g, keep).predict(x, verbose=0).shape == (2, 10)


def test_unsupported_layer_blocks_its_groups_by_name():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.Reshape((16, 4), name="reshape")(x)
    x = keras.layers.Flatten()(x)
    m = keras.Model(inp, keras.layers.Dense(2)(x))
    g = channel_graph.build(m)
    assert "reshape" in g.unsupported
    grp = g.group_of("c1")
    assert not grp.prunable
    assert "unsupported layer 'reshape' (Reshape)" in grp.blockers
    with pytest.raises(errors.InvalidArgumentError, match="blocked") as e:
        surgery.prune(m, g, {grp.id: [0, 1]})
    assert "reshape" in str(e.value)


def test_exclude_blocks_group_and_unknown_name_is_refused():
    inp = keras.Input((4,))
    h = keras.layers.Dense(3, name="h")(inp)
    m = keras.Model(inp, keras.layers.Dense(2, name="o")(h))
    assert not channel_graph.build(m, exclude=["h"]).group_of("h").prunable
    with pytest.raises(errors.InvalidArgumentError, match="'nope'|nope"):
        channel_graph.build(m, exclude=["nope"])


def test_bad_keep_maps_are_refused():
    inp = keras.Input((4,))
    h = keras.layers.Dense(3, name="h")(inp)
    m = keras.Model(inp, keras.layers.Dense(2, name="o")(h))
    g = channel_graph.build(m)
    gid = g.group_of("h").id
    with pytest.raises(errors.InvalidArgumentError, match="at least one"):
        surgery.prune(m, g, {gid: []})
    with pytest.raises(errors.InvalidArgumentError, match=r"\[0, 3\)"):
        surgery.prune(m, g, {gid: [5]})
    with pytest.raises(errors.InvalidArgumentError, match="shape"):
        surgery.prune(m, g, {gid: np.ones(4, dtype=bool)})
    with pytest.raises(errors.InvalidArgumentError, match="ids of channel groups"):
        surgery.prune(m, g, {999: [0]})


def test_subclassed_and_shared_layers_are_refused():
    sub = SubclassedNet()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(errors.UnsupportedModelError, match="subclassed"):
        channel_graph.build(sub)
    inp = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    m = keras.Model(inp, shared(shared(inp)))
    with pytest.raises(errors.UnsupportedModelError, match="shared"):
        channel_graph.build(m)


def test_a_keras3_model_is_named_as_such_with_its_conversion():
    # The public entries bridge Keras 3 models; this internal walk says how, instead of
    # calling a Keras 3 Sequential "subclassed".
    import keras as keras3

    from pocketflow_tf import interop

    m3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(8), keras3.layers.Dense(2)])
    with pytest.raises(errors.UnsupportedModelError, match=r"Keras 3 Sequential.*to_framework"):
        channel_graph.build(m3)
    graph = channel_graph.build(interop.to_framework(m3)[0])
    assert [g.size for g in graph.prunable_groups()] == [8]


def test_masking_consumers_equals_surgery():
    model = kitchen_sink()
    g = channel_graph.build(model)
    rng = np.random.default_rng(3)
    keep = {
        grp.id: np.sort(rng.choice(grp.size, grp.size - grp.size // 3, replace=False))
        for grp in g.prunable_groups()
    }
    x = rng.random((3, 12, 12, 3)).astype("float32") * 255
    thin = surgery.prune(model, g, keep)
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    surgery.mask_consumers(masked, g, keep)
    np.testing.assert_allclose(masked.predict(x, verbose=0), thin.predict(x, verbose=0), atol=1e-5)
