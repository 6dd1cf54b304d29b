"""DisChnPrunedLearner (DCP): stages, exact counts and shapes, selection quality, errors."""

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import distillation, errors, learner, training
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.dcp import DisChnPrunedLearner, selection, stages

L = keras.layers
FAST = dict(dcp_nb_iters_aux=20, dcp_nb_iters_layer=3, dcp_nb_rounds=2, dcp_batch_size=64)


def resnet_like():
    """Stem, one residual block (Add couples stem and b1_b), a strided conv, GAP, logits."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="img")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="b1_a")(x)
    y = L.BatchNormalization(name="b1_a_bn")(y)
    y = L.ReLU(name="b1_a_relu")(y)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="b1_b")(y)
    y = L.BatchNormalization(name="b1_b_bn")(y)
    x = L.Add(name="b1_add")([x, y])
    x = L.ReLU(name="b1_relu")(x)
    x = L.Conv2D(24, 3, strides=2, padding="same", name="down")(x)
    x = L.BatchNormalization(name="down_bn")(x)
    x = L.ReLU(name="down_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="resnet_like")


def plain_stack():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="img"),
            L.Conv2D(16, 3, padding="same", name="c1"),
            L.ReLU(name="r1"),
            L.Conv2D(16, 3, padding="same", name="c2"),
            L.ReLU(name="r2"),
            L.Conv2D(32, 3, strides=2, padding="same", name="c3"),
            L.ReLU(name="r3"),
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(4, name="logits"),
        ],
        name="plain",
    )


PATTERNS = np.stack(
    [
        np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]]),  # class 0: horizontal stroke
        np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]]),  # class 1: vertical stroke
        np.eye(3),  # class 2: diagonal
        np.fliplr(np.eye(3)),  # class 3: anti-diagonal
    ]
).astype(np.float32)


def pattern_data(n=256):
    """Class = which 3x3 stroke is stamped somewhere on a noisy 8x8 image."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, n)
    x = rng.random((n, 8, 8, 1), dtype=np.float32) * 0.3
    for i, c in enumerate(y):
        r, col = rng.integers(0, 6, 2)
        x[i, r : r + 3, col : col + 3, 0] += PATTERNS[c]
    return x, y.astype(np.int64)


def informative_model():
    """16 channels: 0..3 are matched filters of the four strokes, 4..15 random textures.

    Each informative channel recognises one class only, so a pruned model that loses one of
    them loses that class; the noise channels have random zero-mean filters (mean
    activations about the detectors') and tiny classifier rows. Keeping 4 channels at random
    keeps about one detector.
    """
    rng = np.random.default_rng(3)
    inp = keras.Input((8, 8, 1), name="img")
    h = L.Conv2D(16, 3, padding="same", name="feat")(inp)
    h = L.ReLU(name="feat_relu")(h)
    h = L.MaxPooling2D(4, name="quad")(h)
    h = L.Flatten(name="flat")(h)  # 4 positions x 16 channels, channel innermost
    model = keras.Model(inp, L.Dense(4, name="logits")(h), name="informative")
    k = np.zeros((3, 3, 1, 16), np.float32)
    b = np.zeros(16, np.float32)
    k[..., 0, :4] = np.moveaxis(PATTERNS - PATTERNS.mean(axis=(1, 2), keepdims=True), 0, -1)
    b[:4] = -1.2  # fires on its own stroke (response 2) and not on the others' (<= 1)
    noise = rng.normal(0, 0.05, (3, 3, 1, 12))
    k[..., 4:] = noise - noise.mean(axis=(0, 1, 2))
    model.get_layer("feat").set_weights([k, b])
    w = rng.normal(0, 0.03, (64, 4)).astype(np.float32)
    for q in range(4):
        w[q * 16 : q * 16 + 4] = 0.0
        for c in range(4):
            w[q * 16 + c, c] = 3.0
    model.get_layer("logits").set_weights([w, np.zeros(4, np.float32)])
    return model


def test_registry_and_aliases():
    for name in ("dis-chn-pruned", "dcp", "DisChnPrunedLearner", "dis_chn_pruned"):
        assert learner.get_learner_class(name) is DisChnPrunedLearner
    assert "dis-chn-pruned" in learner.available()


def test_stage_boundaries_are_cuts_at_block_ends():
    m = resnet_like()
    b = stages.choose_boundaries(m, 3)
    assert b[-1] == "logits"
    # Inside the residual block only the block's ReLU is a cut: no boundary splits the Add.
    assert set(b[:-1]) <= {"stem_relu", "b1_relu", "down_relu", "stem_bn", "down_bn", "pool"}
    assert "b1_a_relu" not in stages.LayerGraph.of(m).cuts()
    assert stages.choose_boundaries(m, 1) == ["logits"]
    with pytest.raises(errors.InvalidArgumentError, match="dcp_nb_stages.*0"):
        stages.choose_boundaries(m, 0)


def test_exact_counts_shapes_and_no_aux_outputs(tiny_data):
    x, y = tiny_data
    m = resnet_like()
    names = [layer.name for layer in m.layers]
    lrn = DisChnPrunedLearner(
        training.TrainConfig(epochs=1, batch_size=32),
        dcp_counts={"b1_b": 5, "b1_a": 3, "down": 10},  # b1_b names the residual group
        dcp_nb_stages=2,
        verbose=0,
        **FAST,
    )
    out = lrn.fit(m, x, y)
    for model in (lrn.pruned_model, out):
        assert model.get_layer("stem").kernel.shape.as_list() == [3, 3, 1, 5]
        assert model.get_layer("b1_a").kernel.shape.as_list() == [3, 3, 5, 3]
        assert model.get_layer("b1_b").kernel.shape.as_list() == [3, 3, 3, 5]
        assert model.get_layer("down").kernel.shape.as_list() == [3, 3, 5, 10]
        assert model.get_layer("logits").kernel.shape.as_list() == [10, 4]
        assert model.get_layer("b1_b_bn").gamma.shape.as_list() == [5]
        # The auxiliary heads are gone: same inputs, outputs and layer names as the input.
        assert [layer.name for layer in model.layers] == names
        assert len(model.outputs) == 1 and model.output_shape == (None, 4)
        assert not any("dcp_aux" in layer.name for layer in model.layers)
    assert lrn.report["kept"] == {"stem": 5, "b1_a": 3, "down": 10}
    assert len(lrn.report["boundaries"]) == 2
    # Masked selection network == physically pruned network.
    assert lrn.report["surgery_max_abs_diff"] < 1e-4
    assert 0 < lrn.report["flops_ratio"] < 0.5
    assert lrn.report["selection_time_s"] > 0
    assert m.get_layer("stem").kernel.shape.as_list() == [3, 3, 1, 16]  # input untouched


def test_preserve_ratio_rounds_and_meets_flops(tiny_data):
    x, y = tiny_data
    m = plain_stack()
    lrn = DisChnPrunedLearner(cp_preserve_ratio=0.5, dcp_nb_stages=2, verbose=0, **FAST)
    pruned = lrn.prune(m, x, y)
    kept = lrn.report["kept"]
    assert all(v % 8 == 0 for v in kept.values()) and kept["c3"] < 32
    assert lrn.report["flops_ratio_estimate"] <= 0.5
    assert lrn.report["flops_ratio"] <= 0.55
    assert pruned.get_layer("c3").kernel.shape.as_list() == [3, 3, kept["c2"], kept["c3"]]
    assert pruned.get_layer("logits").kernel.shape.as_list() == [kept["c3"], 4]


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def test_selection_beats_random_before_fine_tuning():
    x, y = pattern_data()
    m = informative_model()
    assert _accuracy(m, x, y) > 0.97
    kw = dict(dcp_counts={"feat": 4}, dcp_nb_stages=1, verbose=0, **FAST)
    dcp = DisChnPrunedLearner(**kw)
    pruned = dcp.prune(m, x, y)
    assert sorted(dcp.report["keep_indices"]["feat"]) == [0, 1, 2, 3]
    acc_dcp, rec_dcp = _accuracy(pruned, x, y), dcp.report["groups"][0]["recon"]
    accs, recs = [], []
    for seed in range(3):
        rnd = DisChnPrunedLearner(training.TrainConfig(seed=seed), dcp_criterion="random", **kw)
        accs.append(_accuracy(rnd.prune(m, x, y), x, y))
        recs.append(rnd.report["groups"][0]["recon"])
    assert acc_dcp > 0.95
    assert acc_dcp > np.mean(accs) + 0.2, (acc_dcp, accs)
    assert rec_dcp < 0.5 * np.min(recs), (rec_dcp, recs)


def test_deterministic_with_a_seed(tiny_data):
    x, y = tiny_data
    runs = []
    for _ in range(2):
        # The residual group: its consumers span the block and the strided conv.
        lrn = DisChnPrunedLearner(dcp_counts={"stem": 6}, verbose=0, **FAST)
        pruned = lrn.prune(resnet_like(), x, y)
        runs.append((lrn.report["keep_indices"], pruned.get_weights()))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fit_on_dataset_with_distillation(tiny_data):
    x, y = tiny_data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=0).batch(32)
    lrn = DisChnPrunedLearner(
        training.TrainConfig(epochs=1),
        dcp_counts={"c2": 8},
        dcp_nb_samples=128,
        distillation=distillation.DistillationConfig(),
        verbose=0,
        **FAST,
    )
    out = lrn.fit(plain_stack(), ds)
    assert "kd_loss" in lrn.history.history
    assert out.get_layer("c2").filters == 8 and out.output_shape == (None, 4)
    assert out.get_layer("c3").kernel.shape.as_list() == [3, 3, 8, 32]
    assert lrn.report["calibration_samples"] == 128
    assert lrn.get_config()["dcp_counts"] == {"c2": 8}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cp_preserve_ratio=0.0), "cp_preserve_ratio`: 0.0"),
        (dict(cp_preserve_ratio=1.2), "cp_preserve_ratio`: 1.2"),
        (dict(dcp_prune_ratio=1.0), "dcp_prune_ratio`: 1.0"),
        (dict(dcp_prune_ratio=-0.1), "dcp_prune_ratio`: -0.1"),
        (dict(cp_prune_list={"c1": 0}), r"cp_prune_list\['c1'\]`: 0"),
        (dict(dcp_nb_stages=0), "dcp_nb_stages`: 0"),
        (dict(dcp_nb_rounds=0), "dcp_nb_rounds`: 0"),
        (dict(dcp_criterion="magic"), "dcp_criterion`: 'magic'"),
        (dict(dcp_prune_ratio=0.5, cp_preserve_ratio=0.5), "at most one of"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, match):
    with pytest.raises(errors.InvalidArgumentError, match=match):
        DisChnPrunedLearner(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cp_exclude=["nope"]), "exclude`: 'nope'"),
        (dict(dcp_counts={"nope": 4}), "dcp_counts`: 'nope'"),
        (dict(cp_prune_list={"logits": 0.5}), "cp_prune_list`: 'logits'"),
        (dict(dcp_counts={"c1": 99}), r"dcp_counts\['c1'\]`: 99"),
        (dict(cp_preserve_ratio=0.001), "cp_preserve_ratio`: 0.001"),
    ],
)
def test_bad_requests_fail_before_any_work(monkeypatch, tiny_data, kwargs, match):
    def no_work(*args, **kw):
        raise AssertionError("selection started before the request was validated")

    monkeypatch.setattr(selection, "select_channels", no_work)
    x, y = tiny_data
    with pytest.raises(errors.InvalidArgumentError, match=match):
        DisChnPrunedLearner(verbose=0, **kwargs).fit(plain_stack(), x, y)


def test_model_without_prunable_group_and_missing_labels(tiny_data):
    x, y = tiny_data
    flat = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(4, name="logits")])
    with pytest.raises(errors.InvalidArgumentError, match="prunable channel group"):
        DisChnPrunedLearner(verbose=0).fit(flat, x, y)
    with pytest.raises(errors.InvalidArgumentError, match="DCP needs labels"):
        DisChnPrunedLearner(verbose=0).fit(plain_stack(), x)
    with pytest.raises(errors.InvalidArgumentError, match="`model`"):
        DisChnPrunedLearner(verbose=0).fit("model.keras", x, y)


def test_diverging_refinement_is_undone():
    x, y = pattern_data()
    m = informative_model()
    kw = dict(FAST, dcp_nb_iters_layer=6, dcp_lrn_rate_adam=10.0)
    lrn = DisChnPrunedLearner(dcp_counts={"feat": 4}, dcp_nb_stages=1, verbose=0, **kw)
    pruned = lrn.prune(m, x, y)
    assert any(r["backoff"] for r in lrn.report["groups"][0]["rounds"])
    assert _accuracy(pruned, x, y) > 0.9
