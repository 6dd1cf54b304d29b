"""Nested models: the transfer-learning idiom ``base(x, training=False)`` through every learner.

Every learner takes a nested tf-keras model flattened (``graph_rebuild.inline_nested``); a base
called with ``training=False`` keeps its BatchNormalization statistics and its dropout off in
every fine-tune, as tf-keras runs the original. Before, ``channel`` and ``uniform`` inlined it
without that call argument: the base's BN statistics were retrained on the fine-tune's batches.
"""

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import errors, graph_rebuild, learner, training
from pocketflow_tf.compat import keras

L = keras.layers

#: Options that fit the learners to the tiny net (its layers are below the size defaults).
OPTIONS = {"product-quant": {"pq_codebook_size": 4}, "weight-sparse": {"ws_min_params": 100}}
TRAINING_LEARNERS = [n for n in learner.available() if n != "auto"]
STATS = np.full(8, 0.3, np.float32)  # moving means no batch of the data would give


def _transfer_net(training_arg=False, base_trainable=True):
    """A pretrained-like base (conv, BN, dropout) called as a layer, then a new head."""
    keras.utils.set_random_seed(0)
    b_in = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="b_conv")(b_in)
    h = L.BatchNormalization(name="b_bn")(h)
    h = L.ReLU(name="b_relu")(h)
    h = L.Dropout(0.5, name="b_drop")(h)
    h = L.Conv2D(8, 3, padding="same", name="b_conv2")(h)
    h = L.BatchNormalization(name="b_bn2")(h)
    base = keras.Model(b_in, L.ReLU(name="b_relu2")(h), name="base")
    base.get_layer("b_bn").moving_mean.assign(STATS)
    base.trainable = base_trainable
    inp = keras.Input((8, 8, 1))
    x = base(inp, training=training_arg) if training_arg is not None else base(inp)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


def _moving_mean(model, layer="b_bn"):
    found = [w for w in model.weights if f"{layer}/moving_mean" in w.name]
    assert len(found) == 1, [w.name for w in model.weights]
    return np.asarray(found[0])


def _modes_differ(model, x) -> float:
    return float(np.abs(model(x, training=True) - model(x, training=False)).max())


def test_inline_nested_keeps_inference_mode_in_a_form_later_rebuilds_keep(tiny_data):
    x = tiny_data[0][:16]
    model = _transfer_net()
    assert _modes_differ(model, x) == 0.0  # tf-keras: the base runs in inference mode
    flat = graph_rebuild.inline_nested(model)
    names = [la.name for la in flat.layers]
    assert "base" not in names and "b_drop" not in names  # inlined; the dropout was an identity
    assert not flat.get_layer("b_bn").trainable and not flat.get_layer("b_bn2").trainable
    assert flat.get_layer("b_conv").trainable  # only the BN layers are frozen
    np.testing.assert_allclose(flat(x, training=False), model(x, training=False), atol=1e-6)
    assert _modes_differ(flat, x) == 0.0
    # A clone (what TFMOT and the surgery do, dropping call arguments) keeps the mode.
    clone = keras.models.clone_model(flat)
    clone.set_weights(flat.get_weights())
    assert _modes_differ(clone, x) == 0.0


def test_a_base_called_without_training_false_is_inlined_as_it_is(tiny_data):
    model = _transfer_net(training_arg=None)
    flat = graph_rebuild.inline_nested(model)
    assert "b_drop" in [la.name for la in flat.layers]
    assert flat.get_layer("b_bn").trainable
    x = tiny_data[0][:16]
    np.testing.assert_allclose(flat(x, training=False), model(x, training=False), atol=1e-6)
    assert _modes_differ(flat, x) > 0  # dropout and batch statistics in training mode


def test_a_frozen_base_stays_frozen_and_models_without_nesting_are_untouched():
    flat = graph_rebuild.inline_nested(_transfer_net(training_arg=None, base_trainable=False))
    assert not any(flat.get_layer(n).trainable for n in ("b_conv", "b_bn", "b_conv2"))
    assert flat.get_layer("head").trainable
    plain = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert graph_rebuild.inline_nested(plain) is plain


@pytest.mark.parametrize("name", TRAINING_LEARNERS)
def test_every_learner_keeps_a_base_called_with_training_false_in_inference_mode(name, tiny_data):
    x, y = tiny_data[0][:128], tiny_data[1][:128]
    lrn = learner.get_learner_class(name)(
        training.TrainConfig(epochs=1, batch_size=32, seed=1), verbose=0, **OPTIONS.get(name, {})
    )
    result = lrn.fit(_transfer_net(), x, y)
    # The base's BN statistics were not retrained on the fine-tune's batches (channel
    # pruning keeps some of them: each kept one is still 0.3). product-quant re-estimates
    # every BN's statistics for its decoded weights on purpose (pq_bn_batches).
    if name != "product-quant":
        np.testing.assert_allclose(_moving_mean(result), 0.3, atol=1e-6)
    # ...and the result computes the same in both modes (no dropout, no batch statistics).
    assert _modes_differ(result, x[:16]) <= 1e-5


def test_uniform_counts_the_layers_inside_a_nested_model(tiny_data):
    x, y = tiny_data[0][:64], tiny_data[1][:64]
    lrn = learner.get_learner_class("uniform")(training.TrainConfig(epochs=1), verbose=0)
    lrn.fit(_transfer_net(), x, y)
    bits = lrn.weight_bits
    assert set(bits) == {"b_conv", "b_conv2", "head"}, bits


def _open_size_net():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


@pytest.mark.parametrize("name", ["full-prec", "channel", "uniform"])
def test_a_model_of_open_image_size_is_taken_at_the_datas_size(name, tiny_data, tmp_path):
    # Input((None, None, C)): uniform failed after its whole fine-tune (a None in the QAT
    # check's probe shape), and the .tflite export with "Dimension mismatch. Got 8 but
    # expected 1".
    from pocketflow_tf import tflite_verify

    x, y = tiny_data[0][:128], tiny_data[1][:128]
    model = _open_size_net()
    lrn = learner.get_learner_class(name)(
        training.TrainConfig(epochs=1, batch_size=32), verbose=0, **OPTIONS.get(name, {})
    )
    result = lrn.fit(model, x, y)
    assert tuple(result.inputs[0].shape) == (None, 8, 8, 1)
    for mode in ("float", "int8"):
        out = tflite_verify.export_tflite(
            model,
            tmp_path / f"m.{mode}.tflite",
            mode=mode,
            x_verify=tiny_data[0],
            representative_data=x,
        )
        assert out.report.passed
    assert graph_rebuild.at_input_shape(model, (8, 8, 1)).count_params() == model.count_params()


def test_channel_pruning_leaves_frozen_layers_whole(tiny_data):
    # A frozen layer pruned could not be fine-tuned back (a frozen MobileNetV2 base lost
    # 0.683 -> 0.527 and nothing recovered it): its channel groups are blocked, by name.
    x, y = tiny_data[0][:128], tiny_data[1][:128]
    lrn = learner.get_learner_class("channel")(
        training.TrainConfig(epochs=1, batch_size=32), verbose=0, cp_uniform_preserve_ratio=0.5
    )
    model = _transfer_net(training_arg=None)
    model.get_layer("base").get_layer("b_conv").trainable = False
    result = lrn.fit(model, x, y)
    assert result.get_layer("b_conv").filters == 8 and not result.get_layer("b_conv").trainable
    assert result.get_layer("b_conv2").filters < 8
    with pytest.raises(errors.InvalidArgumentError, match="(?s)prunable channel group.*is frozen"):
        lrn.fit(_transfer_net(training_arg=None, base_trainable=False), x, y)
