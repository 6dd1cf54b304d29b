import json

import pytest
import tensorflow_model_optimization as tfmot

from pocketflow_tf import accounting, errors
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import resnet


def _tiny_branchy_model():
    """Conv(+bias) -> Depthwise -> Separable, Add branch, BN -> ReLU -> MaxPool -> GAP -> Dense."""
    inp = keras.Input((6, 6, 2))
    c1 = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(
        3, padding="same", depth_multiplier=2, use_bias=False, name="dw"
    )(c1)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", use_bias=True, name="sep")(x)
    x = keras.layers.Add(name="add")([c1, x])
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="fc")(x))


def test_tiny_model_matches_hand_arithmetic():
    p = accounting.profile_model(_tiny_branchy_model())
    by = {r.name: r for r in p.layers}
    # conv: 6x6 out * 4 ch * (3*3 taps * 2 in) = 2592 MACs; FLOPs 2*2592 + 144 bias adds;
    #       params 3*3*2*4 + 4 = 76.
    assert (by["conv"].macs, by["conv"].flops, by["conv"].params) == (2592, 5328, 76)
    # dw (mult 2): 6x6 out * 4 in * 2 mult * 9 taps = 2592 MACs; no bias; params 3*3*4*2 = 72.
    assert (by["dw"].macs, by["dw"].flops, by["dw"].params) == (2592, 5184, 72)
    assert by["dw"].output_shape == (6, 6, 8)
    # sep: depthwise 36 * 8 * 9 = 2592 + pointwise 36 * 8 * 4 = 1152 -> 3744 MACs;
    #      FLOPs 2*3744 + 144 bias; params 3*3*8 + 8*4 + 4 = 108.
    assert (by["sep"].macs, by["sep"].flops, by["sep"].params) == (3744, 7632, 108)
    # add: (2 inputs - 1) * 144 elements; bn: 2 * 144, params 4 * 4 (gamma, beta, mean, var).
    assert (by["add"].flops, by["bn"].flops, by["bn"].params) == (144, 288, 16)
    assert by["bn"].trainable_params == 8
    # relu: 144; pool 2x2 -> (3, 3, 4): 36 outputs * 4 taps = 144; gap: 36 input elements.
    assert (by["relu"].flops, by["pool"].flops, by["gap"].flops) == (144, 144, 36)
    assert by["pool"].output_shape == (3, 3, 4)
    # fc: 4 * 3 = 12 MACs; FLOPs 24 + 3 bias; params 15.
    assert (by["fc"].macs, by["fc"].flops, by["fc"].params) == (12, 27, 15)
    assert p.total_macs == 2592 + 2592 + 3744 + 12 == 8940
    assert p.total_flops == 5328 + 5184 + 7632 + 144 + 288 + 144 + 144 + 36 + 27 == 18927
    assert p.total_params == 76 + 72 + 108 + 16 + 15 == 287
    assert p.trainable_params == 287 - 8 and p.non_trainable_params == 8
    assert p.unknown_layers == []


def test_transposed_conv_and_dense_on_sequences():
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", use_bias=False, name="up")(
        inp
    )
    seq = keras.Input((7, 4))
    y = keras.layers.Dense(5, activation="softmax", name="fc")(seq)
    p = accounting.profile_model(keras.Model([inp, seq], [x, y]))
    by = {r.name: r for r in p.layers}
    # Transposed conv: every one of 4*4 input pixels * 3 channels scatters 3*3 taps * 2 outputs.
    assert by["up"].macs == 16 * 3 * 9 * 2 == 864
    assert by["up"].output_shape == (8, 8, 2)
    # Dense over 7 steps: 7 * 4 * 5 MACs; FLOPs 2*140 + 35 bias + 35 * 3 softmax.
    assert (by["fc"].macs, by["fc"].flops) == (140, 420)
    assert p.input_shapes == [(4, 4, 3), (7, 4)]


@pytest.fixture(scope="module")
def resnet20():
    return resnet.build_resnet((28, 28, 1), 10, depth=20)


def test_resnet20_params_and_macs(resnet20):
    p = accounting.profile_model(resnet20)
    assert p.total_params == resnet20.count_params() == 273_754
    assert p.trainable_params == sum(
        int(w.shape.num_elements()) for w in resnet20.trainable_weights
    )
    # Hand count at 28x28x1 (3x3 convs unless noted):
    #   stem        28*28*16 * 9*1                        =    112,896
    #   stage 1     6 convs * 28*28*16 * 9*16              = 10,838,016
    #   stage 2     14*14*32*9*16 + 5 * 14*14*32*9*32      =  9,934,848
    #               + 1x1 shortcut 14*14*32*16             =    100,352
    #   stage 3     7*7*64*9*32 + 5 * 7*7*64*9*64          =  9,934,848
    #               + 1x1 shortcut 7*7*64*32               =    100,352
    #   logits      64 * 10                                =        640
    assert p.total_macs == 31_021_952
    # FLOPs = 2 * MACs + 10 bias + BN 2 * 153,664 conv outputs + 144,256 ReLU + 65,856 Add
    #         + 1,568 Rescaling + 3,136 GAP.
    assert p.total_flops == 2 * 31_021_952 + 10 + 307_328 + 144_256 + 65_856 + 1_568 + 3_136
    assert p.total_flops == accounting.count_flops(resnet20) == 62_566_058
    # Literature: ~41 M MACs for ResNet-20 on 32x32x3 (option A, parameter-free shortcuts).
    # Scaled to 28x28 that is 41e6 * (28/32)**2 = 31,390,625, plus the two option-B 1x1
    # shortcut convs (200,704) = 31,591,329; ours is 1.8 % lower (the stem sees 1 channel).
    reference = 41e6 * (28 / 32) ** 2 + 100_352 + 100_352
    assert abs(p.total_macs - reference) / reference < 0.10
    assert p.unknown_layers == []


def test_resnet20_table_and_dict(resnet20):
    p = accounting.profile_model(resnet20)
    text = p.table(top=3)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["Layer", "Type", "Output"]
    assert sum("Conv2D" in line for line in lines) == 3
    assert "more calls" in text and "31,021,952" in text and "273,754" in text
    full = p.table()
    assert "s3b3_b_conv" in full and "Total" in full.splitlines()[-2]
    d = json.loads(json.dumps(p.to_dict()))
    assert d["total_macs"] == p.total_macs and len(d["layers"]) == len(p.layers)
    assert d["layers"][0]["output_shape"] == [28, 28, 1]
    with pytest.raises(errors.InvalidArgumentError, match="`top`: 0"):
        p.table(top=0)


def _plain():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="r")(x)
    x = keras.layers.Flatten(name="f")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="fc")(x))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: tfmot.sparsity.keras.prune_low_magnitude(m),
        lambda m: tfmot.clustering.keras.cluster_weights(
            m,
            number_of_clusters=2,
            cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.LINEAR,
        ),
        lambda m: tfmot.quantization.keras.quantize_model(m),
    ],
    ids=["prune", "cluster", "quantize"],
)
def test_tfmot_wrappers_cost_like_the_plain_model(wrap):
    plain = accounting.profile_model(_plain())
    wrapped_model = wrap(_plain())
    wrapped = accounting.profile_model(wrapped_model)
    # The wrappers add masks / centroids / quantiser ranges: Keras counts them, we do not.
    assert wrapped_model.count_params() > plain.total_params
    assert (wrapped.total_macs, wrapped.total_flops) == (plain.total_macs, plain.total_flops)
    assert (wrapped.total_params, wrapped.trainable_params) == (
        plain.total_params,
        plain.trainable_params,
    )
    conv = next(r for r in wrapped.layers if r.class_name == "Conv2D")
    assert conv.wrappers and conv.params == 3 * 3 * 3 * 4 + 4
    assert wrapped.unknown_layers == []


def test_pruned_resnet20_costs_like_resnet20(resnet20):
    # Whole-model wrapping refuses the in-model Rescaling, so wrap the convs and the logits
    # layer only, as a pruning learner would.
    def wrap(layer):
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            return tfmot.sparsity.keras.prune_low_magnitude(layer)
        return layer.__class__.from_config(layer.get_config())

    pruned = keras.models.clone_model(resnet20, clone_function=wrap)
    assert sum(type(lay).__name__ == "PruneLowMagnitude" for lay in pruned.layers) == 20 + 2
    p = accounting.profile_model(pruned)
    assert (p.total_params, p.total_macs) == (273_754, 31_021_952)


def test_nested_submodel_and_shared_layers_count_each_call():
    inp = keras.Input((4,), name="x")
    sub = keras.Sequential([keras.layers.Dense(5, name="d5"), keras.layers.ReLU(name="r")], "sub")
    shared = keras.layers.Dense(4, name="shared")
    h = shared(shared(inp))  # two calls, one set of weights
    a = sub(h)
    b = sub(inp)  # the sub-model runs twice too
    out = keras.layers.Concatenate(name="cat")([a, b])
    model = keras.Model(inp, out)
    p = accounting.profile_model(model)
    assert [r.name for r in p.layers] == [
        "x",
        "shared",
        "shared#2",
        "sub/d5",
        "sub/r",
        "sub#2/d5",
        "sub#2/r",
        "cat",
    ]
    by = {r.name: r for r in p.layers}
    # shared: 2 calls * 4*4 MACs; sub: 2 calls * 4*5 MACs.
    assert p.total_macs == 2 * 16 + 2 * 20
    # FLOPs: shared 2 * (32 + 4); d5 2 * (40 + 5); relu 2 * 5.
    assert p.total_flops == 2 * 36 + 2 * 45 + 2 * 5
    assert by["shared#2"].params == 0 and by["sub#2/d5"].params == 0
    assert p.total_params == model.count_params() == 20 + 25


def test_unknown_layers_are_listed_not_hidden():
    inp = keras.Input((3,))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    p = accounting.profile_model(keras.Model(inp, keras.layers.Dense(2, name="fc")(x)))
    assert p.unknown_layers == ["double"]
    row = next(r for r in p.layers if r.name == "double")
    assert (row.class_name, row.known, row.flops) == ("Lambda", False, 0)
    assert "Lambda ?" in p.table() and "Unknown layer types" in p.table()


def test_unsupported_models_are_named():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(errors.UnsupportedModelError, match="no layer graph"):
        accounting.profile_model(Sub(name="mine"))
    with pytest.raises(errors.InvalidArgumentError, match="`model`: 'resnet'"):
        accounting.profile_model("resnet")
    inp = keras.Input((None, None, 3))
    free = keras.Model(inp, keras.layers.Conv2D(2, 3, name="c")(inp))
    with pytest.raises(errors.UnsupportedModelError, match=r"'c'.*\(None, None, \d\)"):
        accounting.profile_model(free)
