"""The ``optimal`` per-layer sparsity search (``learners/weight_sparse/optimal_search.py``)."""

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import errors, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.weight_sparse import WeightSparseLearner, optimal_search, ratios


def test_fit_to_target_meets_the_target_and_respects_the_clamp():
    params = np.array([100.0, 400.0, 1600.0])
    for density in ([1.0, 1.0, 1.0], [4.0, 0.25, 1.0], [0.25, 0.25, 4.0]):
        r = optimal_search.fit_to_target(params, np.array(density), 0.8)
        assert (params * r).sum() / params.sum() == pytest.approx(0.8, abs=1e-9)
        assert r.min() >= 0.0 and r.max() <= ratios.MAX_LAYER_RATIO + 1e-12
    # uniform densities: the uniform plan
    np.testing.assert_allclose(optimal_search.fit_to_target(params, np.ones(3), 0.6), 0.6)
    # a layer asking for 4x the density of the others is clamped dense, the rest pays
    r = optimal_search.fit_to_target(np.array([100.0, 100.0]), np.array([4.0, 1.0]), 0.2)
    np.testing.assert_allclose(r, [0.0, 0.4], atol=1e-9)


@pytest.fixture(scope="module")
def trained():
    """A tiny MLP with a known better-than-uniform allocation.

    Layer 'wide' is trained under a strong L1 penalty, so most of its weights are near zero
    and cost nothing to prune; 'narrow' is trained freely. At 80 % overall a good search
    prunes 'wide' more than 'narrow'.
    """
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1200, 2)).astype("float32")
    x = np.concatenate([np.repeat(base, 12, axis=1), rng.normal(size=(1200, 2))], axis=1)
    x = x.astype("float32")
    y = (base[:, 0] + base[:, 1] > 0).astype("int64") + (base[:, 0] > 0.5)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((26,))
    h = keras.layers.Dense(
        64, activation="relu", name="wide", kernel_regularizer=keras.regularizers.L1(2e-2)
    )(inputs)
    h = keras.layers.Dense(16, activation="relu", name="narrow")(h)
    out = keras.layers.Dense(3, name="head")(h)  # logits, as the nets of the framework
    model = keras.Model(inputs, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    return model, x, y


def _infos(model):
    return [
        i for i in ratios.layer_infos(model, min_params=100, skip_first_last=False) if i.prunable
    ]


def test_search_meets_target_beats_closed_forms_and_restores_weights(trained):
    model, x, y = trained
    before = [w.copy() for w in model.get_weights()]
    infos = _infos(model)
    search = optimal_search.ProxyRatioSearch("tpe", trials=12, seed=3, holdout=400)
    found = search.bind(model, x, y)(infos, 0.8)
    assert set(found) == {i.name for i in infos} == {"wide", "narrow"}
    assert ratios.weighted_sparsity(infos, found) >= 0.8 - 1e-6
    scores = {h["trial"]: h["score"] for h in search.history}
    assert len(search.history) == 14  # uniform, heurist, 12 proposals
    assert search.score(infos, found) == pytest.approx(max(scores.values()))
    # better than both closed forms on the proxy, by pruning the L1-trained layer more
    assert search.score(infos, found) > max(scores["uniform"], scores["heurist"])
    assert found["wide"] > 0.8 > found["narrow"]
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # seeded: the same answer twice
    again = optimal_search.ProxyRatioSearch("tpe", trials=12, seed=3, holdout=400)
    assert again.bind(model, x, y)(infos, 0.8) == found


def test_proxy_score_is_the_pruned_models_cross_entropy(trained):
    model, x, y = trained
    infos = _infos(model)
    search = optimal_search.ProxyRatioSearch(holdout=300, seed=1).bind(model, x, y)
    _, xs, ys, _ = search._bound
    dense = search.score(infos, {"wide": 0.0, "narrow": 0.0})
    logits = model.predict(xs, verbose=0)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert dense == pytest.approx(np.mean(np.log(probs[np.arange(len(ys)), ys])), abs=1e-6)
    # pruning everything it may costs more than pruning a little
    assert search.score(infos, {"wide": 0.99, "narrow": 0.99}) < search.score(
        infos, {"wide": 0.3, "narrow": 0.3}
    )


def test_batchnorm_statistics_are_reestimated_for_the_score_and_restored():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, use_bias=False, name="conv_a")(inputs)
    h = keras.layers.BatchNormalization(name="bn_a")(h)
    h = keras.layers.Conv2D(32, 3, use_bias=False, name="conv_b")(keras.layers.ReLU()(h))
    h = keras.layers.BatchNormalization(name="bn_b")(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(2).normal(size=(400, 8, 8, 1)).astype("float32")
    y = np.arange(400) % 3
    model(x[:64], training=True)  # give the BatchNorms non-trivial statistics
    before = [w.copy() for w in model.get_weights()]
    infos = [
        i for i in ratios.layer_infos(model, min_params=100, skip_first_last=False) if i.prunable
    ]
    plan = {i.name: 0.7 for i in infos}
    with_bn = optimal_search.ProxyRatioSearch(holdout=100, calibration=256).bind(model, x, y)
    without = optimal_search.ProxyRatioSearch(holdout=100, calibration=0).bind(model, x, y)
    assert with_bn.score(infos, plan) != pytest.approx(without.score(infos, plan), abs=1e-4)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_learner_optimal_binds_the_search_and_reaches_the_plan(trained):
    model, x, y = trained
    lrn = WeightSparseLearner(
        training.TrainConfig(epochs=2, batch_size=64),
        ws_prune_ratio=0.75,
        ws_prune_ratio_prtl="optimal",
        ws_search_trials=4,
        ws_min_params=100,
        ws_skip_first_last=False,
        verbose=0,
    )
    out = lrn.fit(model, x, y)
    best = max(lrn.ratio_search.history, key=lambda h: h["score"])["ratios"]
    assert lrn.plan.ratios == pytest.approx(best)
    for name, ratio in lrn.plan.ratios.items():
        kernel = out.get_layer(name).kernel.numpy()
        assert np.mean(kernel == 0) == pytest.approx(ratio, abs=0.02)


def test_bad_input_is_refused_before_any_work(trained):
    model, x, y = trained
    with pytest.raises(errors.InvalidArgumentError) as e:
        optimal_search.ProxyRatioSearch("anneal")
    assert e.value.name == "ws_ratio_search"
    with pytest.raises(errors.InvalidArgumentError) as e:
        optimal_search.ProxyRatioSearch(trials=0)
    assert e.value.name == "ws_search_trials"
    with pytest.raises(errors.InvalidArgumentError) as e:
        optimal_search.ProxyRatioSearch(calibration=-1)
    assert e.value.name == "calibration"
    with pytest.raises(errors.InvalidArgumentError) as e:
        optimal_search.ProxyRatioSearch()(_infos(model), 0.5)  # never bound
    assert e.value.name == "ratio_search"
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    lrn = WeightSparseLearner(ws_prune_ratio_prtl="optimal", verbose=0)
    with pytest.raises(errors.InvalidArgumentError) as e:
        lrn.fit(model, ds)
    assert e.value.name == "x"
