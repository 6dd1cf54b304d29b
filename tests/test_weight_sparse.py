"""The weight-sparse learner: schedule, ratios, errors, TFMOT wrapping, 2:4, sparse export."""

import os
import subprocess
import sys

import numpy as np
import pytest
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import distillation, errors, learner, sparsity, tflite_export, training
from pocketflow_tf.app import runner
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.weight_sparse import (
    WeightSparseLearner,
    optimal_search,
    pqat,
    ratios,
    schedule,
)
from tests.tiny_models import quadrant_data

# Pruned layers of `ws_model` with the default policy: c1 (72 weights) is first and small,
# logits (128) is last and small; c2 (1152) and c3 (4608) are pruned.
PRUNED = ("c2", "c3")


@pytest.fixture
def ws_data():
    """4 classes on 16x16x1 images (class = brightest quadrant); 256 samples, seeded."""
    return quadrant_data(256, seed=0, size=16)


@pytest.fixture
def ws_model(ws_data):
    """A small trained net with the in-model Rescaling every recipe has (TFMOT refuses it)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Rescaling(1 / 0.3, offset=-1.0, name="normalize")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(x))
    x_train, y_train = ws_data
    cfg = training.TrainConfig(epochs=3, batch_size=32, learning_rate=0.05)
    return learner.get_learner_class("full-prec")(cfg, verbose=0).fit(model, x_train, y_train)


def _cfg(epochs=2, lr=0.01):
    return training.TrainConfig(epochs=epochs, batch_size=32, learning_rate=lr)


def _kernel_sparsity(model, name):
    return float(np.mean(model.get_layer(name).kernel.numpy() == 0))


# -- registry --------------------------------------------------------------------------------
def test_registered_under_pocketflow_name_and_aliases():
    for name in ("weight-sparse", "weight_sparse", "ws", "WeightSparseLearner"):
        assert learner.get_learner_class(name) is WeightSparseLearner
    assert "weight-sparse" in learner.available()
    assert "weight-sparse" not in learner.PLANNED


# -- schedule --------------------------------------------------------------------------------
def test_schedule_maps_pocketflow_knobs_to_exact_steps():
    s = schedule.plan_schedule(
        1000, iter_ratio_beg=0.1, iter_ratio_end=0.5, mask_update_step=50, power=3
    )
    assert (s.begin_step, s.end_step, s.frequency, s.power) == (100, 500, 50, 3.0)
    # end_step is rounded down to the last mask update, so the target is really reached.
    s = schedule.plan_schedule(1000, iter_ratio_beg=0.1, iter_ratio_end=0.5, mask_update_step=30)
    assert (s.begin_step, s.end_step) == (100, 490) and s.mask_update_steps()[-1] == 490
    assert schedule.plan_schedule(1000).frequency == 40  # automatic: ~10 updates
    assert schedule.plan_schedule(100_000).frequency == 100  # ... at most every 100 steps
    assert schedule.plan_schedule(7, iter_ratio_beg=0.0, iter_ratio_end=1.0).frequency == 1

    # The TFMOT object carries exactly these values and computes the same ramp.
    s = schedule.plan_schedule(200, iter_ratio_beg=0.2, iter_ratio_end=0.7, mask_update_step=10)
    tf_sched = s.to_tfmot(0.8)
    assert tf_sched.get_config()["config"] == {
        "initial_sparsity": 0.0,
        "final_sparsity": 0.8,
        "power": 3.0,
        "begin_step": 40,
        "end_step": 140,
        "frequency": 10,
    }
    updates = []
    for step in range(0, 201):
        should, value = tf_sched(np.int64(step))
        assert float(value) == pytest.approx(s.sparsity_at(step, 0.8), abs=1e-6)
        if bool(should):
            updates.append(step)
    assert updates == s.mask_update_steps() == list(range(40, 141, 10))
    assert s.sparsity_at(140, 0.8) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"iter_ratio_end": 1.2}, "ws_iter_ratio_end"),  # would end after the last step
        ({"iter_ratio_beg": 0.5, "iter_ratio_end": 0.5}, "ws_iter_ratio_end"),
        ({"iter_ratio_beg": -0.1}, "ws_iter_ratio_beg"),
        ({"mask_update_step": 41}, "ws_mask_update_step"),  # window is 40 steps
        ({"mask_update_step": 0}, "ws_mask_update_step"),
        ({"power": 0.0}, "ws_prune_ratio_exp"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 1}, "ws_iter_ratio_end"),  # begins and ends at step 0: no window
    ],
)
def test_unreachable_or_bad_schedule_is_refused(kwargs, name):
    args = {"total_steps": 100, **kwargs}
    with pytest.raises(errors.InvalidArgumentError) as e:
        schedule.plan_schedule(args.pop("total_steps"), **args)
    assert e.value.name == name


# -- knobs and models refused before training --------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ws_prune_ratio": 1.0}, "ws_prune_ratio"),
        ({"ws_prune_ratio": -0.1}, "ws_prune_ratio"),
        ({"ws_prune_ratio": "0.5"}, "ws_prune_ratio"),
        ({"ws_prune_ratio": True}, "ws_prune_ratio"),
        ({"ws_prune_ratio_prtl": "magic"}, "ws_prune_ratio_prtl"),
        ({"ws_prune_ratio_prtl": "optimal", "ws_ratio_search": "anneal"}, "ws_ratio_search"),
        ({"ws_prune_ratio_prtl": "optimal", "ws_search_trials": 0}, "ws_search_trials"),
        ({"ws_m_by_n": (4, 2)}, "ws_m_by_n"),
        ({"ws_m_by_n": (2, 4), "ws_prune_ratio": 0.75}, "ws_prune_ratio"),
        ({"ws_m_by_n": (2, 4), "ws_prune_ratio_prtl": "heurist"}, "ws_prune_ratio_prtl"),
        ({"ws_iter_ratio_beg": 0.6}, "ws_iter_ratio_end"),
        ({"ws_min_params": -1}, "ws_min_params"),
    ],
)
def test_bad_knobs_fail_in_the_constructor(kwargs, name):
    with pytest.raises(errors.InvalidArgumentError) as e:
        WeightSparseLearner(**kwargs)
    assert e.value.name == name


def test_optimal_without_search_gets_the_proxy_search():
    lrn = WeightSparseLearner(ws_prune_ratio_prtl="optimal", ws_ratio_search="gp")
    assert isinstance(lrn.ratio_search, optimal_search.ProxyRatioSearch)
    assert lrn.ratio_search.optimizer == "gp" and lrn.ratio_search.trials == 40
    with pytest.raises(errors.InvalidArgumentError, match="ratio_search"):
        ratios.resolve_ratios("optimal", [], 0.5)  # the bare protocol never falls back


def test_unreachable_schedule_fails_before_training_and_writes_nothing(ws_model, ws_data, tmp_path):
    x, y = ws_data  # 8 steps per epoch, 2 epochs: pruning window of steps 1 to 8
    ws = WeightSparseLearner(
        _cfg(),
        ws_mask_update_step=9,
        checkpoint_dir=str(tmp_path / "ckpt"),
        log_dir=str(tmp_path / "logs"),
        verbose=0,
    )
    with pytest.raises(errors.InvalidArgumentError, match="pruning window") as e:
        ws.fit(ws_model, x, y)
    assert e.value.name == "ws_mask_update_step"
    assert ws.history is None
    assert os.listdir(tmp_path) == []


def test_model_without_prunable_layer_fails_before_training(ws_data, tmp_path):
    x, y = ws_data
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Rescaling(2.0)(inp)
    h = keras.layers.DepthwiseConv2D(3, name="dw")(h)  # TFMOT prunes no depthwise weight
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(h))
    ws = WeightSparseLearner(_cfg(), log_dir=str(tmp_path / "logs"), verbose=0)
    with pytest.raises(errors.InvalidArgumentError, match="no layer to prune") as e:
        ws.fit(model, x, y)
    assert e.value.name == "model"
    assert "dw (DepthwiseConv2D): TFMOT prunes no weight" in str(e.value)
    assert "logits (Dense)" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_dataset_of_unknown_length_is_refused(ws_model, ws_data):
    x, y = ws_data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).filter(lambda a, b: True)
    with pytest.raises(errors.InvalidArgumentError, match="cardinality"):
        WeightSparseLearner(_cfg(), verbose=0).fit(ws_model, ds)


# -- training --------------------------------------------------------------------------------
def test_fit_reaches_target_per_layer_and_strips_wrappers(ws_model, ws_data):
    x, y = ws_data
    before = [w.copy() for w in ws_model.get_weights()]
    ws = WeightSparseLearner(_cfg(lr=1e-7), ws_prune_ratio=0.7, verbose=0)
    out = ws.fit(ws_model, x, y)

    # The input model is untouched; the output has its structure and no TFMOT wrapper.
    for a, b in zip(before, ws_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [(type(la).__name__, la.name) for la in out.layers] == [
        (type(la).__name__, la.name) for la in ws_model.layers
    ]
    assert not any(isinstance(la, keras.layers.Wrapper) for la in out.layers)

    # Pruned layers sit at the target; first and last (small) layers stay dense.
    assert ws.total_steps == 16 and ws.plan.ratios == {"c2": 0.7, "c3": 0.7}
    for name in PRUNED:
        assert _kernel_sparsity(out, name) == pytest.approx(0.7, abs=0.005)
    assert _kernel_sparsity(out, "c1") == 0 and _kernel_sparsity(out, "logits") == 0
    reasons = {i.name: i.reason for i in ws.plan.layers}
    assert reasons["c1"] == "first prunable layer" and reasons["logits"] == "last prunable layer"

    # Started from the trained weights (lr ~ 0): the survivors are the largest-magnitude
    # trained weights, unchanged -- nothing was re-initialised.
    for name in PRUNED:
        trained = ws_model.get_layer(name).kernel.numpy()
        pruned = out.get_layer(name).kernel.numpy()
        kept = pruned != 0
        np.testing.assert_allclose(pruned[kept], trained[kept], atol=1e-5)
        assert np.abs(trained[kept]).min() >= np.abs(trained[~kept]).max() - 1e-6

    config = ws.get_config()
    assert config["learner"] == "weight-sparse"
    assert config["plan"]["schedule"]["end_step"] == 8
    assert ws.report.keras_sparsity > 0.6


def test_distillation_path_prunes_too(ws_model, ws_data):
    x, y = ws_data
    ws = WeightSparseLearner(
        _cfg(),
        ws_prune_ratio=0.5,
        distillation=distillation.DistillationConfig(),
        verbose=0,
    )
    out = ws.fit(ws_model, x, y)
    assert "kd_loss" in ws.history.history
    for name in PRUNED:
        assert _kernel_sparsity(out, name) == pytest.approx(0.5, abs=0.005)
    assert training.evaluate_accuracy(out, x, y) > 0.5


def test_heurist_ratios_meet_the_weighted_target():
    # The conv kernels of ResNet-20 (3x3, widths 16/32/64) and a clamp-active target.
    sizes = [2304] * 6 + [4608] + [9216] * 5 + [18432] + [36864] * 5
    infos = [ratios.LayerInfo(f"l{i}", "Conv2D", ((n,),), n, i, True) for i, n in enumerate(sizes)]
    for target in (0.5, 0.75, 0.9, 0.98):
        r = ratios.resolve_ratios("heurist", infos, target)
        assert ratios.weighted_sparsity(infos, r) == pytest.approx(target, abs=1e-9)
        assert max(r.values()) <= ratios.MAX_LAYER_RATIO
        by_size = [r[i.name] for i in sorted(infos, key=lambda i: i.params)]
        assert by_size == sorted(by_size)  # bigger layers are pruned more
    # At 0.98 the largest layers are clamped and the others carry the excess.
    r = ratios.resolve_ratios("heurist", infos, 0.98)
    assert r["l17"] == ratios.MAX_LAYER_RATIO and r["l0"] < ratios.MAX_LAYER_RATIO
    with pytest.raises(errors.InvalidArgumentError, match="0.99"):
        ratios.resolve_ratios("heurist", infos, 0.995)


def test_heurist_fit_reaches_the_weighted_target(ws_model, ws_data):
    x, y = ws_data
    ws = WeightSparseLearner(_cfg(), ws_prune_ratio=0.8, ws_prune_ratio_prtl="heurist", verbose=0)
    out = ws.fit(ws_model, x, y)
    r = ws.plan.ratios
    assert r["c3"] > 0.8 > r["c2"]
    zeros = sum(int(np.sum(out.get_layer(n).kernel.numpy() == 0)) for n in PRUNED)
    total = sum(out.get_layer(n).kernel.numpy().size for n in PRUNED)
    assert zeros / total == pytest.approx(0.8, abs=0.005)


def test_optimal_uses_the_search_hook_and_checks_its_answer(ws_model):
    seen = {}

    def search(infos, target):
        seen["names"], seen["target"] = [i.name for i in infos], target
        return {"c2": 0.5, "c3": 0.8}

    ws = WeightSparseLearner(ws_prune_ratio=0.7, ws_prune_ratio_prtl="optimal", ratio_search=search)
    plan = ws.make_plan(ws_model, 100)
    assert seen == {"names": ["c2", "c3"], "target": 0.7}
    assert plan.ratios == {"c2": 0.5, "c3": 0.8}
    for answer, match in [
        ({"c2": 0.9}, "exactly the prunable layers"),
        ({"c2": 0.5, "c3": 1.0}, r"ratios in \[0, 0.99\]"),
        ({"c2": 0.1, "c3": 0.1}, "meeting the target"),
    ]:
        bad = WeightSparseLearner(
            ws_prune_ratio=0.7,
            ws_prune_ratio_prtl="optimal",
            ratio_search=lambda infos, t, a=answer: a,
        )
        with pytest.raises(errors.InvalidArgumentError, match=match):
            bad.make_plan(ws_model, 100)


def test_two_by_four_pattern_holds_in_every_block(ws_model, ws_data):
    x, y = ws_data
    ws = WeightSparseLearner(_cfg(epochs=1), ws_m_by_n=(2, 4), verbose=0)
    out = ws.fit(ws_model, x, y)
    assert ws.plan.target == 0.5 and ws.plan.schedule is None
    for name in PRUNED:
        kernel = out.get_layer(name).kernel.numpy()
        # TFMOT's layout: blocks of 4 consecutive input channels per (out, h, w) position.
        blocks = kernel.transpose(3, 0, 1, 2).reshape(-1, 4)
        assert np.all(np.sum(blocks == 0, axis=1) >= 2), name
        assert pruning_utils.is_pruned_m_by_n(out.get_layer(name).kernel, (2, 4))
    # c1 sees one input channel: 2:4 cannot apply, and the plan says why (were it prunable).
    infos = ratios.layer_infos(ws_model, skip_first_last=False, min_params=0, m_by_n=(2, 4))
    assert "not a multiple of 4" in {i.name: i.reason for i in infos}["c1"]


def test_finalize_warns_when_training_fell_short_of_the_plan(ws_model, ws_data):
    x, y = ws_data
    ws = WeightSparseLearner(ws_prune_ratio=0.8, verbose=0)
    ws.total_steps = 1000  # planned, but only 8 steps are run below
    wrapped = ws.prepare(ws_model)
    wrapped.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped.fit(x, y, batch_size=32, epochs=1, callbacks=ws.callbacks(), verbose=0)
    with pytest.warns(UserWarning, match="below their planned sparsity"):
        ws.finalize(wrapped)


# -- export ----------------------------------------------------------------------------------
@pytest.fixture
def pruned(ws_model, ws_data):
    x, y = ws_data
    return WeightSparseLearner(_cfg(), ws_prune_ratio=0.75, verbose=0).fit(ws_model, x, y)


def test_sparse_tflite_keeps_every_pruned_kernel_at_target(pruned, ws_data, tmp_path):
    from pocketflow_tf import tflite_verify

    x, y = ws_data
    dense = tflite_export.convert(pruned, "float")
    sizes = {}
    for mode in ("float", "int8"):
        res = tflite_verify.export_tflite(
            pruned,
            str(tmp_path / f"m.{mode}-sparse.tflite"),
            mode=mode,
            x_verify=x,
            y_verify=y,
            representative_data=x[:64] if mode == "int8" else None,
            sparse=True,
        )  # verified against the Keras model, loaded in a child process
        report = sparsity.sparsity_report(pruned, res.path)
        assert (report.bytes, report.bytes_gzip) == (res.bytes, res.bytes_gzip)
        found = {c.keras.name: c.tflite for c in report.kernels}
        for name in PRUNED:
            t = found[f"{name}/kernel"]
            assert t.stored_sparse and t.dtype == ("float32" if mode == "float" else "int8")
            if mode == "float":
                assert t.sparsity == pytest.approx(0.75, abs=0.005)
            else:  # int8 rounding may zero a few more tiny weights, never fewer
                assert 0.745 <= t.sparsity <= 0.76
        assert found["c1/kernel"].sparsity == 0 and not found["c1/kernel"].stored_sparse
        sizes[mode] = res.bytes
    # The sparse float file is really smaller than the dense one.
    assert sizes["float"] < 0.8 * tflite_export.tflite_size(dense)[0]


def test_decoded_sparse_tensors_equal_the_dense_export(pruned, ws_data):
    x, _ = ws_data
    dense = sparsity.tflite_kernels(tflite_export.convert(pruned, "int8", representative_data=x))
    packed_file = tflite_export.convert(pruned, "int8", representative_data=x, sparse=True)
    packed = sparsity.tflite_kernels(packed_file)
    # Exactly the pruned kernels are stored sparse; the others (c1, logits) are stored whole.
    report = sparsity.sparsity_report(pruned, packed_file)
    stored_sparse = {c.keras.name for c in report.kernels if c.tflite.stored_sparse}
    assert stored_sparse == {f"{name}/kernel" for name in PRUNED}
    for a, b in zip(dense, packed, strict=True):
        np.testing.assert_array_equal(a.dense, b.dense)
        if b.stats.stored_sparse:  # a sparse tensor stores fewer values than it holds
            assert b.stats.stored_values < a.stats.size
        else:
            assert b.stats.stored_values == a.stats.size


def test_decode_sparse_tensor_with_blocks():
    # A 2x4 matrix in 1x2 blocks: blocks (0,0) and (1,1) are stored.
    sp = {
        "traversal_order": [0, 1, 2],
        "block_map": [1],
        "dim_metadata": [
            {"format": 0, "dense_size": 2},
            {"format": 1, "array_segments": [0, 1, 2], "array_indices": [0, 1]},
            {"format": 0, "dense_size": 2},
        ],
    }
    got = sparsity.decode_sparse_tensor(np.array([1, 2, 3, 4], np.int8), sp, (2, 4))
    np.testing.assert_array_equal(got, [[1, 2, 0, 0], [0, 0, 3, 4]])


def test_sparsity_survives_prune_preserving_qat(pruned, ws_data):
    x, y = ws_data
    qat = pqat.prune_preserving_qat_model(pruned)  # the Rescaling layer runs as a no-op
    qat.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qat.fit(x, y, batch_size=32, epochs=1, verbose=0)
    # A QAT model converts to int8 with Optimize.DEFAULT and no calibration ("dynamic" here).
    report = sparsity.sparsity_report(pruned, tflite_export.convert(qat, "dynamic", sparse=True))
    found = {c.keras.name: c.tflite for c in report.kernels}
    for name in PRUNED:
        assert found[f"{name}/kernel"].dtype == "int8"
        assert found[f"{name}/kernel"].sparsity >= 0.745


# -- run scripts -----------------------------------------------------------------------------
_CLI_CHECK = """
from pocketflow_tf import errors
from pocketflow_tf.learners.weight_sparse import WeightSparseLearner
from pocketflow_tf.app import cli

cli.FLAGS(["prog", "--learner=ws", "--ws_prune_ratio=0.5", "--ws_m_by_n=2:4"])
opts = cli.learner_options()
assert opts["ws_prune_ratio"] == 0.5 and opts["ws_m_by_n"] == (2, 4), opts
WeightSparseLearner(**opts)  # the flags form a valid learner configuration
cli.FLAGS.unparse_flags()
cli.FLAGS(["prog", "--learner=ws", "--ws_prune_ratio_prtl=optimal", "--ws_ratio_search=gp",
           "--ws_search_trials=7"])
lrn = WeightSparseLearner(**cli.learner_options())
assert (lrn.ratio_search.optimizer, lrn.ratio_search.trials) == ("gp", 7), lrn.ratio_search
cli.FLAGS.unparse_flags()
cli.FLAGS(["prog", "--learner=full-prec"])
assert cli.learner_options() == {}
cli.FLAGS.unparse_flags()
cli.FLAGS(["prog", "--learner=full-prec", "--ws_prune_ratio=0.5"])
try:
    cli.learner_options()
    raise SystemExit("no error for a ws flag given to another learner")
except errors.InvalidArgumentError as e:
    assert "--ws_prune_ratio" in str(e), e
print("CLI_OK")
"""


def test_cli_flags_reach_the_learner_only_when_selected():
    # In a child process: absl's global FLAGS may already hold other tools' flags here.
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_CHECK], capture_output=True, text=True, timeout=300
    )
    assert "CLI_OK" in proc.stdout, proc.stderr[-2000:]


def test_runner_accepts_sparse_export_modes(tmp_path):
    opts = runner.RunOptions(
        "convnet_at_fmnist",
        learner="ws",
        export_modes=("float-sparse", "int8-sparse"),
        save_path=str(tmp_path / "m.keras"),
    )
    assert runner.split_export_mode(opts.export_modes[1]) == ("int8", True)
    with pytest.raises(errors.InvalidArgumentError, match="-sparse"):
        runner.RunOptions("convnet_at_fmnist", export_modes=("int4-sparse",))


FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist")
def test_run_script_job_prunes_and_exports_sparse(tmp_path, fmnist_run):
    opts = fmnist_run(
        learner="weight-sparse",
        learner_options={"ws_prune_ratio": 0.9},
        nb_epochs_rat=0.07,
        nb_train_samples=1024,
        batch_size=64,
        export_modes=("float", "float-sparse"),
        num_verify=200,
        latency_runs=5,
    )
    rec = runner.run(opts)
    m = rec["metrics"]
    assert (
        m["tflite_float-sparse_sparsity"] > 0.85
    )  # c2_conv and fc1 at 90 %; c1_conv and logits dense
    assert m["tflite_float-sparse_bytes"] < 0.3 * m["tflite_float_bytes"]
    plan = rec["sections"]["learner"]["plan"]
    assert set(plan["ratios"]) == {"c2_conv", "fc1"}
    assert os.path.isdir(tmp_path / "logs" / "pruning")


def test_int8_sparse_dense_layer_never_leaves_a_broken_file(ws_data, tmp_path):
    """LiteRT's XNNPACK fails to prepare an int8 FULLY_CONNECTED stored sparse.

    With the pinned LiteRT (requirements.txt) the export is refused with a clear verification
    error, and no file is left behind.
    """
    from pocketflow_tf import tflite_verify

    x, _ = ws_data
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(32, name="fc")]
    )
    kernel = model.get_layer("fc").kernel
    kernel.assign(np.where(np.random.default_rng(0).random(kernel.shape) < 0.9, 0.0, kernel))
    path = tmp_path / "m.tflite"
    with pytest.raises(
        errors.VerificationError,
        match=r"the int8 TFLite model could not be loaded and run by LiteRT: .*FULLY_CONNECTED",
    ):
        tflite_verify.export_tflite(
            model, str(path), mode="int8", x_verify=x, representative_data=x, sparse=True
        )
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_nested_sub_model_layers_are_pruned(ws_data):
    x, y = ws_data
    keras.utils.set_random_seed(0)
    sub_in = keras.Input((8, 8, 16))
    sub_out = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="inner")(sub_in)
    block = keras.Model(sub_in, sub_out, name="block")
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Rescaling(2.0, name="normalize")(inp)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(h)
    h = keras.layers.GlobalAveragePooling2D()(block(h))
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(h))
    ws = WeightSparseLearner(_cfg(epochs=1), ws_prune_ratio=0.6, verbose=0)
    out = ws.fit(model, x, y)
    # Every learner takes a nested model inlined (graph_rebuild.inline_nested): the inner
    # layer is pruned under its own name and the result is flat.
    assert ws.plan.ratios == {"inner": 0.6}
    inner = out.get_layer("inner")
    assert float(np.mean(inner.kernel.numpy() == 0)) == pytest.approx(0.6, abs=0.005)
    assert "block" not in [la.name for la in out.layers]
    assert not any(isinstance(la, keras.layers.Wrapper) for la in out.layers)
