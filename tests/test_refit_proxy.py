"""RefitProxy: AMC's least-squares episode proxy for channel plans."""

import numpy as np
import pytest

from pocketflow_tf import channel_graph, errors, surgery
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.channel import ChannelPrunedLearner, refit_proxy
from tests.tiny_models import small_resnet


def _redundant_model(flatten: bool):
    """conv "a" (6 filters, the last two copies of filters 0 and 1) -> ReLU -> reader "b"."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    inp = keras.Input((8, 8, 2))
    h = L.ReLU()(L.Conv2D(6, 3, padding="same", name="a")(inp))
    if flatten:
        out = L.Dense(3, name="b")(L.Flatten()(h))
    else:
        out = L.Conv2D(3, 3, padding="same", name="b")(h)
    model = keras.Model(inp, out)
    w = model.get_layer("a").get_weights()
    w[0][..., 4:6] = w[0][..., 0:2]
    w[1][4:6] = w[1][0:2]
    model.get_layer("a").set_weights(w)
    return model


@pytest.mark.parametrize("flatten", [False, True])
def test_refit_recovers_the_output_when_dropped_channels_are_copies(flatten):
    # Channels 4 and 5 duplicate 0 and 1, so a reader refitted on channels 0..3 can give
    # exactly the dense output; merely zeroing them (the "mask" proxy) cannot.
    model = _redundant_model(flatten)
    graph = channel_graph.build(model)
    (group,) = graph.prunable_groups()
    x = np.random.default_rng(0).random((64, 8, 8, 2)).astype("float32")
    # A negligible ridge: the kept channels are independent, so the fit is exact.
    proxy = refit_proxy.RefitProxy(model, graph, x, points=16, ridge=1e-10)
    assert list(proxy.consumers) == ["b"]
    keep = {group.id: np.arange(4)}
    dense_out = model.predict(x, verbose=0)
    refit = keras.models.clone_model(model)
    refit.set_weights(model.get_weights())
    proxy.apply(refit, keep)
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    surgery.mask_consumers(masked, graph, keep)
    scale = np.abs(dense_out).max()
    assert np.abs(refit.predict(x, verbose=0) - dense_out).max() < 1e-4 * scale
    assert np.abs(masked.predict(x, verbose=0) - dense_out).max() > 0.05 * scale
    # The dropped channels' rows are zero: the probe computes what the thin model would.
    b = refit.get_layer("b").get_weights()[0]
    rows = b.reshape(-1, 6, 3) if flatten else b
    assert not np.any(rows[..., 4:6, :])


def test_proxy_option_scores_plans_with_the_refit():
    # Through the learner: the refit proxy scores a plan at least as well as the mask proxy
    # (the refit is the best linear fix of what masking breaks), and the dense plan alike.
    images = np.random.default_rng(0).random((96, 12, 12, 1)).astype("float32")
    labels = small_resnet().predict(images, verbose=0).argmax(-1)
    scores = {}
    for proxy in ("mask", "refit"):

        def search(problem, proxy=proxy):
            small = {k: c[0] for k, c in problem.choices.items()}
            full = {k: c[-1] for k, c in problem.choices.items()}
            scores[proxy] = (problem.evaluate(small), problem.evaluate(full))
            return small

        ChannelPrunedLearner(
            cp_prune_option="auto",
            cp_preserve_ratio=0.9,
            cp_criterion="l1",
            cp_proxy=proxy,
            ratio_search=search,
            verbose=0,
        ).prune(small_resnet(), images, labels)
    assert scores["refit"][1] == pytest.approx(scores["mask"][1], abs=1e-4)
    assert scores["refit"][0] > scores["mask"][0]


def test_bad_arguments_are_refused():
    model = _redundant_model(False)
    graph = channel_graph.build(model)
    with pytest.raises(errors.InvalidArgumentError, match="points"):
        refit_proxy.RefitProxy(model, graph, np.zeros((2, 8, 8, 2)), points=0)
    with pytest.raises(errors.InvalidArgumentError, match="images"):
        refit_proxy.RefitProxy(model, graph, np.zeros((0, 8, 8, 2)))
    with pytest.raises(errors.InvalidArgumentError, match="cp_proxy"):
        ChannelPrunedLearner(cp_proxy="lasso")
