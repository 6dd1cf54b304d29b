"""ChannelPrunedLearner: LASSO selection, least-squares refit, planning, errors, TFLite shapes."""

import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from pocketflow_tf import accounting, channel_graph, errors, tflite_export, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.channel import (
    ChannelPrunedLearner,
    allocation,
    amc_search,
    lasso,
    latency_table,
)
from tests.tiny_models import small_resnet


@pytest.fixture
def images():
    return np.random.default_rng(0).random((96, 12, 12, 1)).astype("float32")


def test_lasso_keeps_the_channels_the_consumer_uses(images):
    model = small_resnet()
    # Consumer "b" reads group "a"; make the odd input channels nearly irrelevant to it.
    w = model.get_layer("b").get_weights()
    w[0][:, :, 1::2, :] *= 0.01
    model.get_layer("b").set_weights(w)
    lrn = ChannelPrunedLearner(
        cp_prune_option="list", cp_prune_list={"a": 0.5}, cp_channel_round=1, cp_nb_samples=96
    )
    lrn.prune(model, images)
    g = channel_graph.build(model)
    kept = lrn.report["selection"]["a"]
    assert kept["kept"] == 8 and kept["how"] == "lasso"
    # Rebuild the selection to check which channels: the kept kernel rows of "b" are the even
    # ones, i.e. the thin "b" reproduces the dense "b" output on the even channels.
    thin = lrn.pruned_model
    assert thin.get_layer("a").filters == 8
    assert g.group_of("a").size == 16
    # Same check through the selection routine directly.
    samples = lasso.sample_consumers(
        model, model, ["b"], images, {"b": np.arange(16)}, {"b": 1}, 10, seed=0
    )
    assert lasso.select_channels(samples, [np.arange(16)], 8).tolist() == list(range(0, 16, 2))


def test_refit_reconstructs_better_than_slicing(images):
    model = small_resnet()
    errs = {}
    for refit in (False, True):
        lrn = ChannelPrunedLearner(
            cp_prune_option="list",
            cp_prune_list={"a": 0.25},
            cp_channel_round=1,
            cp_refit=refit,
            cp_nb_samples=96,
        )
        thin = lrn.prune(model, images)
        ref = keras.Model(model.input, model.get_layer("b").output).predict(images, verbose=0)
        out = keras.Model(thin.input, thin.get_layer("b").output).predict(images, verbose=0)
        errs[refit] = float(np.mean((out - ref) ** 2))
    assert errs[True] < 0.7 * errs[False]


def test_uniform_flops_target_is_met_and_rounded(images):
    model = small_resnet()
    lrn = ChannelPrunedLearner(cp_preserve_ratio=0.5, cp_nb_samples=64)
    thin = lrn.prune(model, images)
    ratio = accounting.count_flops(thin) / accounting.count_flops(model)
    assert ratio <= 0.5 and abs(ratio - lrn.report["flops_ratio"]) < 1e-9
    for name in ("stem", "a", "c"):
        assert thin.get_layer(name).filters % 8 == 0
    # Estimated FLOPs (no rebuild) equal the measured ones for these layer types.
    fm = allocation.FlopsModel.build(model)
    counts = {g["key"]: g["kept"] for g in lrn.report["groups"]}
    assert fm.flops(counts) == pytest.approx(accounting.count_flops(thin), rel=1e-9)


def test_fit_end_to_end_with_distillation_and_auto(tiny_data, tmp_path):
    x, y = tiny_data
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # 12x12
    model = small_resnet()
    keras.utils.set_random_seed(0)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    from pocketflow_tf import distillation

    lrn = ChannelPrunedLearner(
        training.TrainConfig(epochs=1, batch_size=32, learning_rate=0.01),
        cp_prune_option="auto",
        cp_preserve_ratio=0.6,
        cp_channel_round=4,
        cp_nb_samples=64,
        cp_nb_eval=128,
        distillation=distillation.DistillationConfig(1.0, 2.0),
        checkpoint_dir=str(tmp_path / "ckpt"),
        verbose=0,
    )
    out = lrn.fit(model, x, y)
    assert accounting.count_flops(out) <= 0.6 * accounting.count_flops(model)
    assert {g["kept"] % 4 for g in lrn.report["groups"]} == {0}
    assert out.output_shape == (None, 4)
    assert not os.path.exists(tmp_path / "ckpt")  # backups removed after success
    assert lrn.pruned_model is not None


def test_groups_pruned_in_rounds_with_fine_tuning_between(tiny_data):
    x, y = tiny_data
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # 12x12
    cfg = training.TrainConfig(epochs=1, batch_size=32, learning_rate=0.01)
    opts = dict(cp_uniform_preserve_ratio=0.5, cp_nb_samples=64, cp_list_group=1, verbose=0)
    lrn = ChannelPrunedLearner(cfg, cp_nb_iters_ft=3, **opts)
    lrn.fit(small_resnet(), x, y)
    rounds = lrn.report["rounds"]
    assert [r["groups"] for r in rounds] == [["stem"], ["a"], ["c"]]
    assert [r.get("finetune_steps") for r in rounds] == [3, 3, None]
    assert all(np.isfinite(r["finetune_loss"]) for r in rounds[:2])
    thin = lrn.pruned_model
    assert [thin.get_layer(n).filters for n in ("stem", "a", "b", "c")] == [8, 8, 8, 8]

    # Without the steps between rounds the same plan gives other weights: the rounds trained.
    still = ChannelPrunedLearner(cfg, cp_nb_iters_ft=0, **opts)
    still.fit(small_resnet(), x, y)
    assert "finetune_steps" not in still.report["rounds"][0]
    a, b = thin.get_layer("c").get_weights()[0], still.pruned_model.get_layer("c").get_weights()[0]
    assert a.shape == b.shape and not np.allclose(a, b)

    # prune() has no training data: the rounds happen, the fine-tuning is reported as skipped.
    only = ChannelPrunedLearner(cfg, cp_nb_iters_ft=3, **opts)
    only.prune(small_resnet(), x[:64], y[:64])
    assert "skipped" in only.report["rounds"][0]["finetune"]


def test_latency_table_times_each_layer_at_the_planned_widths():
    model = small_resnet()
    table = latency_table.LatencyTable(model, channel_graph.build(model), runs=3)
    dense_keys = set(table._cache)
    table.model_ms({"stem": 8, "a": 8})
    new = set(table._cache) - dense_keys
    # stem/b (the residual group) and a at 8: every layer reading or writing them is re-timed.
    assert new == {
        ("stem", 1, 8),
        ("a", 8, 8),
        ("b", 8, 8),
        ("merge", 8, 8),
        ("c", 8, 16),
    }
    assert table.measured == len(table._cache)
    probe = latency_table._one_layer_model(model.get_layer("c"), 1, 8, 4)
    assert probe.input_shape == (None, 12, 12, 8) and probe.output_shape == (None, 6, 6, 4)
    assert probe.layers[-1].strides == (2, 2)


def test_latency_cost_steers_the_allocation():
    model = small_resnet()
    fm = allocation.FlopsModel.build(model)
    choices = allocation.choices_for(fm.graph, 4)

    def solve(latency_ms):
        problem = allocation.AllocationProblem(
            fm, 0.8, 4, choices, evaluate=lambda counts: 0.0, latency_ms=latency_ms
        )
        return allocation.greedy_sensitivity(problem)

    # With every step free of accuracy cost, a table in which only 'c' takes time makes the
    # allocation take everything it can from 'c' first; FLOPs alone start elsewhere.
    by_time = solve(lambda counts: float(counts.get("c", 16)))
    assert by_time["c"] == 4
    assert fm.flops(by_time) <= 0.8 * fm.dense_flops
    by_flops = solve(None)
    assert by_flops["c"] > 4, by_flops


def test_latency_target_prunes_past_the_flops_target():
    model = small_resnet()
    fm = allocation.FlopsModel.build(model)
    choices = allocation.choices_for(fm.graph, 4)

    def latency_ms(counts):  # a table in which time is channels of 'a' plus 'c'
        return float(counts.get("a", 16) + counts.get("c", 16))

    def solve(latency_keep):
        problem = allocation.AllocationProblem(
            fm,
            0.95,
            4,
            choices,
            # 'c' costs accuracy, the more per channel the more it loses
            evaluate=lambda counts: -((16 - counts.get("c", 16)) ** 2),
            latency_ms=latency_ms,
            latency_keep=latency_keep,
        )
        return allocation.greedy_sensitivity(problem)

    flops_only = solve(None)
    assert fm.flops(flops_only) <= 0.95 * fm.dense_flops
    assert latency_ms(flops_only) > 0.5 * 32  # the FLOPs target alone stops early
    # ... after one step of the free group 'a': no jump past the FLOPs target.
    assert flops_only == {k: c[-1] for k, c in choices.items()} | {"a": 12}
    both = solve(0.5)
    assert latency_ms(both) <= 0.5 * 32
    # 'a' is free, so it goes first, to its smallest count, before 'c' pays the rest, one
    # step: a bigger move of 'c' costs more per millisecond.
    assert both == {**both, "a": 4, "c": 12}
    with pytest.raises(errors.InvalidArgumentError) as e:
        solve(0.1)  # even 4 + 4 channels is 0.25 of the dense time
    assert e.value.name == "cp_latency_keep" and "0.250" in str(e.value)
    # ... found before the sensitivity sweep: the score function is never called.
    scored = []
    unreachable = allocation.AllocationProblem(
        fm, 0.95, 4, choices, scored.append, latency_ms=latency_ms, latency_keep=0.1
    )
    with pytest.raises(errors.InvalidArgumentError, match="cp_latency_keep"):
        allocation.greedy_sensitivity(unreachable)
    assert scored == []
    with pytest.raises(errors.InvalidArgumentError, match="latency_keep"):
        allocation.greedy_sensitivity(
            allocation.AllocationProblem(fm, 0.9, 4, choices, lambda c: 0.0, latency_keep=0.5)
        )


def test_search_hook_is_used(images):
    seen = {}

    def search(problem):
        seen["choices"] = problem.choices
        return {k: c[0] for k, c in problem.choices.items()}

    lrn = ChannelPrunedLearner(
        cp_prune_option="auto", cp_preserve_ratio=0.9, ratio_search=search, cp_criterion="l1"
    )
    thin = lrn.prune(small_resnet(), images, np.zeros(len(images), dtype=int))
    assert set(seen["choices"]) == {"stem", "a", "c"}
    assert thin.get_layer("a").filters == 8


def test_proxy_bn_reestimation_changes_scores_and_restores_the_probe(images):
    labels = np.arange(len(images)) % 3
    scores = {}
    for batches in (0, 2):

        def search(problem, batches=batches):
            small = {k: c[0] for k, c in problem.choices.items()}
            first = problem.evaluate(small)
            problem.evaluate({k: c[-1] for k, c in problem.choices.items()})
            assert problem.evaluate(small) == first  # every plan starts from the dense weights
            scores[batches] = first
            return small

        ChannelPrunedLearner(
            cp_prune_option="auto",
            cp_preserve_ratio=0.9,
            ratio_search=search,
            cp_criterion="l1",
            cp_proxy_bn_batches=batches,
        ).prune(small_resnet(), images, labels)
    assert scores[0] != scores[2]


def test_amc_search_plans_the_pruning_within_the_flops_target(images):
    # AMC (DDPG over the groups) through the learner's hook: every plan is bounded, so the
    # pruned model meets the FLOPs target; the agent's episodes are recorded.
    search = amc_search.amc_ratio_search(episodes=12, seed=0, warmup=4, hidden=(16, 16))
    lrn = ChannelPrunedLearner(
        cp_prune_option="auto", cp_preserve_ratio=0.6, ratio_search=search, cp_criterion="l1"
    )
    model = small_resnet()
    labels = np.arange(len(images)) % 3
    thin = lrn.prune(model, images, labels)
    ratio = accounting.profile_model(thin).total_flops / accounting.profile_model(model).total_flops
    assert ratio <= 0.6 + 1e-9
    assert len(search.optimizer.history) == 12
    assert lrn.report["flops_ratio"] == pytest.approx(ratio, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ratio_search": lambda p: {}}, "ratio_search"),  # only 'auto' plans counts
        ({"cp_preserve_ratio": 0.0}, "cp_preserve_ratio"),
        ({"cp_preserve_ratio": 1.2}, "cp_preserve_ratio"),
        ({"cp_uniform_preserve_ratio": -1}, "cp_uniform_preserve_ratio"),
        ({"cp_prune_option": "magic"}, "cp_prune_option"),
        ({"cp_criterion": "random"}, "cp_criterion"),
        ({"cp_prune_option": "list"}, "cp_prune_list"),
        ({"cp_channel_round": 0}, "cp_channel_round"),
        ({"cp_list_group": -1}, "cp_list_group"),
        ({"cp_nb_iters_ft": 1.5}, "cp_nb_iters_ft"),
        ({"cp_proxy_bn_batches": -1}, "cp_proxy_bn_batches"),
        ({"cp_cost": "energy", "cp_prune_option": "auto"}, "cp_cost"),
        ({"cp_cost": "latency"}, "cp_cost"),  # only 'auto' plans counts
        ({"cp_prune_option": "auto", "cp_latency_keep": 0.5}, "cp_latency_keep"),  # flops cost
        (
            {"cp_prune_option": "auto", "cp_cost": "latency", "cp_latency_keep": 0.0},
            "cp_latency_keep",
        ),
        (
            {
                "cp_prune_option": "auto",
                "cp_cost": "latency",
                "cp_latency_keep": 0.5,
                "ratio_search": lambda p: {},
            },
            "cp_latency_keep",
        ),
        ({"cp_params_keep": 0.5}, "cp_params_keep"),  # only 'auto' plans counts
        ({"cp_prune_option": "auto", "cp_params_keep": 0.0}, "cp_params_keep"),
        ({"cp_prune_option": "auto", "cp_params_keep": 2}, "cp_params_keep"),
        ({"cp_prune_option": "auto", "cp_params_keep": "half"}, "cp_params_keep"),
        (
            {"cp_prune_option": "auto", "cp_cost": "latency", "cp_params_keep": 0.5},
            "cp_params_keep",
        ),
        (
            {"cp_prune_option": "auto", "cp_ratio_search": "tpe", "cp_params_keep": 0.5},
            "cp_params_keep",
        ),
    ],
)
def test_bad_options_are_refused_at_construction(kwargs, name):
    with pytest.raises(errors.InvalidArgumentError) as e:
        ChannelPrunedLearner(**kwargs)
    assert e.value.name == name


def test_bad_requests_fail_before_any_work(images, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    y = np.zeros(len(images), dtype=int)
    cases = [
        ({"cp_prune_option": "list", "cp_prune_list": {"nope": 0.5}}, "nope"),
        ({"cp_prune_option": "list", "cp_prune_list": {"logits": 0.5}}, "logits"),
        ({"cp_preserve_ratio": 0.01}, "smallest"),
    ]
    for kwargs, text in cases:
        lrn = ChannelPrunedLearner(checkpoint_dir=ckpt, verbose=0, **kwargs)
        with pytest.raises(errors.InvalidArgumentError, match=text):
            lrn.fit(small_resnet(), images, y)
    # A coupled group through an unsupported layer: named in the error.
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, name="c1")(inp)
    h = keras.layers.Reshape((4, 4, 4), name="reshape")(h)
    h = keras.layers.Flatten()(h)
    m = keras.Model(inp, keras.layers.Dense(2)(h))
    lrn = ChannelPrunedLearner(
        cp_prune_option="list", cp_prune_list={"c1": 0.5}, checkpoint_dir=ckpt
    )
    with pytest.raises(errors.InvalidArgumentError, match="reshape"):
        lrn.fit(m, np.zeros((8, 6, 6, 1), "float32"), np.zeros(8, int))
    with pytest.raises(errors.InvalidArgumentError, match="prunable"):
        ChannelPrunedLearner(checkpoint_dir=ckpt).fit(
            m, np.zeros((8, 6, 6, 1), "float32"), np.zeros(8, int)
        )
    no_bn = ChannelPrunedLearner(cp_criterion="bn_gamma", checkpoint_dir=ckpt)
    with pytest.raises(errors.InvalidArgumentError, match="BatchNorm"):
        no_bn.fit(small_resnet(), images, y)  # group of "c" has no BN
    assert os.listdir(tmp_path) == []


def _conv_filters(content: bytes) -> list[np.ndarray]:
    interp = Interpreter(model_content=content)
    interp.allocate_tensors()
    out = []
    for op in interp._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            out.append(np.asarray(interp.get_tensor(int(op["inputs"][1]))))
    return out


def test_exported_tflite_has_only_smaller_kernels(images):
    model = small_resnet()
    thin = ChannelPrunedLearner(cp_preserve_ratio=0.5, cp_criterion="l1").prune(model, images)
    dense_f = _conv_filters(tflite_export.convert(model, "float"))
    thin_f = _conv_filters(tflite_export.convert(thin, "float"))
    # Same number of convolutions (no selector 1x1 convs), each with fewer weights.
    assert len(thin_f) == len(dense_f) == 4
    for d, t in zip(dense_f, thin_f, strict=True):
        assert t.size < d.size
    # TFLite filters are (O, kh, kw, I): match the thin Keras kernels exactly, and no output
    # channel is all zero.
    keras_shapes = sorted(
        (k.shape[3], k.shape[0], k.shape[1], k.shape[2])
        for k in (thin.get_layer(n).get_weights()[0] for n in ("stem", "a", "b", "c"))
    )
    assert sorted(f.shape for f in thin_f) == keras_shapes
    for f in thin_f:
        assert np.all(np.abs(f).reshape(f.shape[0], -1).sum(axis=1) > 0)


# -- parameter targets (byte goals) -------------------------------------------------------


def _two_stage_net():
    """Stage 1 at 16x16 (FLOPs-heavy), stage 2 at 4x4 and 4x wider (weight-heavy)."""
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="s1a")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="s1b")(h)
    h = keras.layers.MaxPooling2D(4)(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="s2a")(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="s2b")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(10, name="head")(h))


def test_params_estimate_is_exact_on_pruned_models(images):
    model = small_resnet()
    fm = allocation.FlopsModel.build(model)
    choices = allocation.choices_for(fm.graph, 4)
    rng = np.random.default_rng(3)
    for _ in range(3):
        counts = {k: int(rng.choice(c)) for k, c in choices.items()}
        lrn = ChannelPrunedLearner(
            cp_prune_option="auto",
            cp_channel_round=4,
            cp_nb_samples=96,
            cp_nb_eval=96,
            ratio_search=lambda p, counts=counts: counts,
            verbose=0,
        )
        thin = lrn.prune(model, images, np.zeros(len(images), int))
        assert fm.params(counts) == thin.count_params(), counts
    assert fm.params({}) == fm.dense_params == model.count_params()


def test_params_target_prunes_where_the_weights_are():
    fm = allocation.FlopsModel.build(_two_stage_net())
    choices = allocation.choices_for(fm.graph)

    def score(counts):  # every removed channel costs the same
        return -sum(choices[k][-1] - c for k, c in counts.items()) / 1000.0

    by_flops = allocation.greedy_sensitivity(
        allocation.AllocationProblem(fm, 0.5, 8, choices, score)
    )
    by_params = allocation.greedy_sensitivity(
        allocation.AllocationProblem(fm, 1.0, 8, choices, score, params_keep=0.5)
    )
    flops = {k: fm.flops(c) / fm.dense_flops for k, c in (("f", by_flops), ("p", by_params))}
    params = {k: fm.params(c) / fm.dense_params for k, c in (("f", by_flops), ("p", by_params))}
    assert params["p"] <= 0.5 < params["f"]  # the FLOPs plan keeps 0.66 of the weights
    assert flops["f"] <= 0.5 < flops["p"]  # ... and the weights plan keeps more FLOPs
    # The weights plan takes its channels from the wide low-resolution stage.
    assert by_params["s2a"] < by_flops["s2a"] and by_params["s1a"] > by_flops["s1a"]
    with pytest.raises(errors.InvalidArgumentError, match="cp_params_keep.*0.0[0-9]"):
        allocation.greedy_sensitivity(
            allocation.AllocationProblem(fm, 1.0, 8, choices, score, params_keep=0.01)
        )
    with pytest.raises(errors.InvalidArgumentError, match="params_keep"):
        allocation.AllocationProblem(fm, 1.0, 8, choices, score, params_keep=1.5)
    with pytest.raises(errors.InvalidArgumentError, match="latency_ms"):
        allocation.AllocationProblem(
            fm, 1.0, 8, choices, score, latency_ms=lambda c: 1.0, params_keep=0.5
        )


def test_learner_meets_a_params_target_and_refuses_unreachable_ones(images):
    model = small_resnet()
    y = np.arange(len(images)) % 3
    kw = {"cp_prune_option": "auto", "cp_channel_round": 4, "cp_nb_samples": 96}
    lrn = ChannelPrunedLearner(cp_preserve_ratio=1.0, cp_params_keep=0.6, cp_nb_eval=96, **kw)
    lrn.verbose = 0
    thin = lrn.prune(model, images, y)
    assert thin.count_params() <= 0.6 * model.count_params()
    assert lrn.report["params_ratio"] == pytest.approx(thin.count_params() / model.count_params())
    with pytest.raises(errors.InvalidArgumentError) as e:
        ChannelPrunedLearner(cp_params_keep=0.01, **kw).prune(model, images, y)
    assert e.value.name == "cp_params_keep" and "smallest" in str(e.value)
    # A ratio_search hook that ignores the target is caught: the byte goal would be missed.
    ignore = ChannelPrunedLearner(cp_params_keep=0.6, ratio_search=lambda p: {}, **kw)
    with pytest.raises(errors.InvalidArgumentError) as e:
        ignore.prune(model, images, y)
    assert e.value.name == "ratio_search" and "cp_params_keep=0.6" in str(e.value)


def test_a_nested_tf_keras_block_is_inlined_and_pruned_inside(images):
    keras.utils.set_random_seed(0)
    block = keras.Sequential(
        [
            keras.layers.Conv2D(16, 3, padding="same", name="c1"),
            keras.layers.ReLU(name="r1"),
            keras.layers.Conv2D(16, 3, padding="same", name="c2"),
        ],
        name="block",
    )
    inp = keras.Input((12, 12, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(block(inp)))
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(x))
    lrn = ChannelPrunedLearner(
        cp_prune_option="list", cp_prune_list={"c1": 0.5}, cp_channel_round=1, cp_nb_samples=64
    )
    thin = lrn.prune(model, images)
    assert thin.get_layer("c1").filters == 8 and thin.get_layer("c2").filters == 16
    assert not any(isinstance(lay, keras.Model) for lay in thin.layers)
    assert isinstance(model.get_layer("block"), keras.Model)  # the user's model is untouched
