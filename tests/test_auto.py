"""Automated compression: target parsing, planning, scoring, reports, and tiny end-to-end runs.

The end-to-end runs share one trained 16x16 conv net (16-32-32 channels, so pruning has room)
and one work directory per target: the FLOPs-target run is made once per module and then
continued by the rerun test, which keeps the file inside its time budget (TFLite conversion
dominates every trial on this machine).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os

import numpy as np
import pytest

from pocketflow_tf import datasets, errors, tflite_verify
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import (
    AutoLearner,
    Target,
    candidate,
    compress,
    planner,
    proxy,
    report,
    splits,
)
from tests import tiny_models

SENTINEL = -1.0  # a pixel value no training image has: marks every test image


# -- data and model ---------------------------------------------------------------------------


#: 4 classes on 16x16x1 images: the class is the brightest quadrant.
quadrant_data = functools.partial(tiny_models.quadrant_data, size=16)


def conv_net():
    """Conv16 -> Conv32 -> pool -> Conv32 -> pool -> Dense(4), with BatchNorm, seeded."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((16, 16, 1))
    h = inp
    for i, (width, pool) in enumerate(((16, 1), (32, 2), (32, 4))):
        h = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = L.BatchNormalization(name=f"bn{i}")(h)
        h = L.ReLU()(h)
        if pool > 1:
            h = L.MaxPooling2D(pool)(h)
    return keras.Model(inp, L.Dense(4, name="logits")(L.Flatten()(h)))


@pytest.fixture(scope="module")
def trained():
    x, y = quadrant_data(440, seed=0)
    model = conv_net()
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["acc"],
    )
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    x_test, y_test = quadrant_data(120, seed=1)
    x_test[:, 0, 0, 0] = SENTINEL
    return model, datasets.DataSplits("quadrants", x, y, x_test, y_test, 4)


#: Small budgets: every trial prunes, fine-tunes 20 steps and converts one .tflite.
FAST = tiny_models.auto_budget(
    proxy_steps=20, samples=128, latency_rounds=10, final_latency_rounds=20, int8_final="ptq"
)


def _has_sentinel(a):
    return isinstance(a, np.ndarray) and a.dtype.kind == "f" and bool(np.any(a == SENTINEL))


@pytest.fixture(scope="module")
def flops_run(trained, tmp_path_factory):
    """compress(..., "flops<=0.5") with 3 trials, spying on every array the search reads."""
    model, data = trained
    directory = str(tmp_path_factory.mktemp("auto_flops"))
    seen = []  # (function, saw a test image) in call order
    mp = pytest.MonkeyPatch()
    acc_fn, build_fn = proxy.tflite_accuracy, candidate.build

    def spy_accuracy(path, x, y, *a, **k):
        seen.append(("accuracy", _has_sentinel(x)))
        return acc_fn(path, x, y, *a, **k)

    def spy_build(dense, teacher, params, data, **k):
        arrays = (data.x_train, data.x_hold, data.x_calib, data.x_rep, data.x_verify)
        seen.append(("build", any(_has_sentinel(a) for a in arrays)))
        return build_fn(dense, teacher, params, data, **k)

    mp.setattr(proxy, "tflite_accuracy", spy_accuracy)
    mp.setattr(candidate, "build", spy_build)
    try:
        result = compress(model, data, "flops<=0.5", directory, max_trials=3, seed=0, **FAST)
    finally:
        mp.undo()
    with open(os.path.join(directory, "study", "study.json")) as f:
        state = json.load(f)
    return result, directory, seen, state


# -- Target ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fields",
    [
        ("2x faster", {"speedup": 2.0}),
        ("speedup>=1.5", {"speedup": 1.5}),
        ("int8", {"int8": True}),
        ("under 1 MB", {"max_bytes": 1_000_000}),
        ("<= 300 KiB", {"max_bytes": 300 * 1024}),
        ("int8,<=0.3x bytes", {"int8": True, "bytes_ratio": 0.3}),
        ("flops<=0.5", {"flops_ratio": 0.5}),
        ("keep 40% of the FLOPs", {"flops_ratio": 0.4}),
        ("2x faster, drop<=0.5", {"speedup": 2.0, "max_acc_drop": 0.5}),
        ("4x smaller; int8 for Android", {"bytes_ratio": 0.25, "int8": True}),
    ],
)
def test_target_parse_accepts(text, fields):
    t = Target.parse(text)
    expected = {**Target(int8=True).to_dict(), "int8": False, **fields}
    assert t.to_dict() == expected


@pytest.mark.parametrize(
    "text",
    ["make it small", "drop<=0.5", "0.5x faster", "flops<=2", "int8,,2x faster", "int8, int8"],
)
def test_target_parse_rejects_and_echoes(text):
    with pytest.raises(errors.InvalidArgumentError) as e:
        Target.parse(text)
    assert e.value.name == "target" and e.value.value == text
    assert "2x faster" in e.value.accepted  # says what is accepted, with examples


@pytest.mark.parametrize(
    "text, goal",
    [
        ("1x faster", "speedup"),
        ("1x smaller", "bytes_ratio"),
        ("bytes<=1", "bytes_ratio"),
        ("flops<=1", "flops_ratio"),
        ("keep 100% flops, int8", "flops_ratio"),
    ],
)
def test_a_goal_of_one_x_asks_for_nothing_and_is_refused(text, goal):
    # The dense model meets it as it is: a run would compress nothing and call it a success.
    with pytest.raises(errors.InvalidArgumentError) as e:
        Target.parse(text)
    assert e.value.value == text and f"for {goal} (got 1" in e.value.accepted
    assert "no change" in e.value.accepted
    with pytest.raises(errors.InvalidArgumentError, match="no change"):
        Target(**{goal: 1.0})


def test_goals_just_short_of_one_x_are_accepted():
    t = Target.parse("1.01x faster, bytes<=0.99, keep 99% flops")
    assert (t.speedup, t.bytes_ratio, t.flops_ratio) == (1.01, 0.99, 0.99)


def test_target_check_and_score_rank_violations_last():
    t = Target(speedup=2.0, max_bytes=1000)
    ok = {"acc": 0.5, "latency_ratio": 0.5, "bytes": 900, "acc_drop": 0.2}
    slow = {"acc": 0.99, "latency_ratio": 0.6, "bytes": 900, "acc_drop": 0.0}
    slower = {"acc": 0.99, "latency_ratio": 0.9, "bytes": 900, "acc_drop": 0.0}
    assert t.check(ok).met and not t.check(slow).met
    assert [m.goal for m in t.check(slow).misses] == ["speedup"]
    assert proxy.score(t, ok) == 0.5 > 0 > proxy.score(t, slow) > proxy.score(t, slower)


# -- planner ---------------------------------------------------------------------------------


def test_planner_speed_target_plans_channel_pruning():
    p = planner.plan(Target.parse("4x faster"), planner.ModelFacts(True, 0.05))
    assert {"prune", "prune+int8"} <= set(p.chain_names)
    assert {"flops_keep", "criterion", "lr_factor"} <= set(p.space.names)
    assert p.space["criterion"].values == ("lasso", "l1")
    assert p.space["flops_keep"].high == 0.5  # 2/4: an int8 chain may share the speed-up
    assert p.space["lr_factor"].log


def test_planner_int8_target_ends_every_chain_in_int8():
    p = planner.plan(Target.parse("int8"), planner.ModelFacts(True, 0.05))
    assert p.chain_names == ["int8", "prune+int8", "sparse+int8"]
    assert all(c.export_mode == "int8" for c in p.chains)
    # a model with no channel to prune: int8 alone or with weight sparsity
    p = planner.plan(Target.parse("int8"), planner.ModelFacts(False, 1.0))
    assert p.chain_names == ["int8", "sparse+int8"]
    # ... and with a speed goal too (sparsity does not speed up): a one-point space
    p = planner.plan(Target.parse("int8, 2x faster"), planner.ModelFacts(False, 1.0))
    assert p.chain_names == ["int8"] and p.size == 1


def test_planner_bytes_target_plans_int8_pruning_and_sparsity():
    facts = planner.ModelFacts(True, 0.05, dense_bytes=100_000)
    assert planner.plan(Target.parse("<=0.5x bytes"), facts).chain_names == [
        "prune",
        "int8",
        "prune+int8",
        "int4",
        "prune+int4",
        "sparse",
        "sparse+int8",
    ]
    # int8 alone gives ~0.28x, int4 ~0.16x: a 0.1x goal needs pruning or sparsity too
    p = planner.plan(Target.parse("<=0.1x bytes"), facts)
    assert p.chain_names == ["prune", "prune+int8", "prune+int4", "sparse", "sparse+int8"]
    assert any("dropped int8" in n for n in p.notes)
    assert any("dropped int4" in n for n in p.notes)


def test_planner_refuses_flops_goal_without_prunable_channels_and_notes_unreachable():
    with pytest.raises(errors.InvalidArgumentError, match="FLOPs can only fall by pruning"):
        planner.plan(Target.parse("flops<=0.5"), planner.ModelFacts(False, 1.0))
    p = planner.plan(Target.parse("flops<=0.05"), planner.ModelFacts(True, 0.2))
    low, high = p.flops_keep_range
    assert low >= 0.2 and high > low
    assert any("reaches" in n for n in p.notes)


def test_model_facts_reads_the_conv_net():
    facts = planner.model_facts(conv_net())
    assert facts.prunable and 0.0 < facts.min_flops_keep < 0.3


# -- splits, learner arguments, report --------------------------------------------------------


def test_holdout_comes_from_training_data():
    x, y = quadrant_data(300, seed=3)
    d = splits.make_search_data(x, y, holdout=0.1, seed=0)
    assert len(d.x_train) + len(d.x_hold) == 300 and len(d.x_hold) == 30
    train_rows = {row.tobytes() for row in x}
    assert all(row.tobytes() in train_rows for row in d.x_hold)
    assert len(d.x_verify) == splits.MIN_VERIFY
    given = splits.make_search_data(x, y, x_val=x[:50], y_val=y[:50])
    assert len(given.x_train) == 300 and len(given.x_hold) == 50


def test_only_a_validation_split_the_model_never_saw_drops_the_caveat():
    x, y = quadrant_data(300, seed=3)
    carved = splits.make_search_data(x, y, holdout=0.1, seed=0)
    unseen = splits.make_search_data(x, y, x_val=x[:50], y_val=y[:50])
    # The caller's own validation share of the training data (pocketflow-tf compress
    # --validation_split, DataSplits.with_validation) is no less biased than the search's.
    theirs = splits.make_search_data(x, y, x_val=x[:50], y_val=y[:50], val_from_training=True)
    assert carved.caveat().startswith("carved from the data given for training")
    assert unseen.caveat() is None and unseen.holdout_unseen
    assert theirs.caveat() == carved.caveat() and not theirs.holdout_unseen
    assert theirs.describe()["holdout_source"] == (
        "given x_val (50 samples), carved from the training data"
    )
    with pytest.raises(errors.InvalidArgumentError, match="`val_from_training`: 'yes'"):
        splits.make_search_data(x, y, x_val=x[:50], y_val=y[:50], val_from_training="yes")


def test_compress_passes_where_the_validation_split_came_from():
    # The module, not the function of the same name the package exports.
    compress_module = importlib.import_module("pocketflow_tf.learners.auto.compress")

    x, y = quadrant_data(300, seed=3)
    d = datasets.from_arrays(x, y)
    carved = d.with_validation(0.1, seed=0)
    own = dataclasses.replace(d, x_val=x[:20], y_val=y[:20])
    assert compress_module._unpack(carved, None, None)[2][2] is True
    assert compress_module._unpack(own, None, None)[2][2] is False
    # An x_val given beside the data is the caller's unseen split, over the carved one.
    val = compress_module._unpack(carved, x[:10], y[:10])[2]
    assert len(val[0]) == 10 and val[2] is False
    assert compress_module._unpack((x, y), x[:10], y[:10])[2][2] is False


def test_auto_learner_checks_arguments_before_work(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="auto_optimizer"):
        AutoLearner(auto_target="2x faster", auto_dir=str(tmp_path), auto_optimizer="amc")
    with pytest.raises(errors.InvalidArgumentError, match="auto_dir"):
        AutoLearner(auto_target="2x faster")
    with pytest.raises(errors.InvalidArgumentError, match="auto_holdout"):
        AutoLearner(auto_target="int8", auto_dir=str(tmp_path), auto_holdout=0.9)
    lrn = AutoLearner(auto_target="2x faster", auto_dir=str(tmp_path), verbose=0)
    x, y = quadrant_data(100, seed=0)
    with pytest.raises(errors.InvalidArgumentError, match="at least 200"):
        lrn.fit(conv_net(), x, y)
    assert os.listdir(tmp_path) == []  # nothing was written


def test_report_html_is_self_contained(tmp_path):
    rows = [
        {
            "number": i,
            "status": "complete",
            "value": v,
            "acc": a,
            "latency_ratio": lr,
            "speedup": 1 / lr,
            "bytes": b,
            "meets_resources": v >= 0,
            "chain": "prune",
            "params": {"chain": "prune", "flops_keep": 0.4},
        }
        for i, (v, a, lr, b) in enumerate([(0.9, 0.9, 0.4, 900), (-0.3, 0.95, 0.8, 1500)])
    ]
    rows.append({"number": 2, "status": "failed", "value": None, "error": "ValueError: boom"})
    rep = {
        "target_text": "2x faster; accuracy drop <= 1 pt",
        "target": {"speedup": 2.0},
        "answer": {"met": True, "summary": "Target met", "misses": []},
        "trials": rows,
        "pareto": [0, 1],
        "chosen": {"trial": 0},
        "dense": {"acc": 0.96, "bytes": 3000, "flops": 1000, "params": 100},
        "final": {
            "groups": [{"key": "conv0", "size": 16, "kept": 8, "layers": ["conv0"]}],
            "figures": {
                "acc": 0.9,
                "acc_dense": 0.96,
                "acc_drop": 6.0,
                "bytes": 900,
                "bytes_ratio": 0.3,
                "latency_ratio": 0.4,
                "speedup": 2.5,
                "flops_ratio": 0.4,
                "params_ratio": 0.4,
                "mode": "float",
            },
        },
    }
    json_path, html_path = report.write(rep, tmp_path)
    page = open(html_path).read()
    assert page.count("data:image/png;base64,") == 3  # search curve, Pareto, channels
    assert "ValueError: boom" in page and "All trials" in page
    assert "http://" not in page and "https://" not in page
    assert json.load(open(json_path))["pareto"] == [0, 1]


# -- end to end ------------------------------------------------------------------------------


def test_compress_end_to_end(flops_run):
    result, directory, _, state = flops_run
    assert [t["number"] for t in state["trials"]] == [0, 1, 2]
    assert {t["status"] for t in state["trials"]} <= {"complete", "failed"}
    rep = json.load(open(result.report_path))
    assert len(rep["trials"]) == 3 and rep["chosen"]["chain"] in ("prune", "prune+int8")
    page = open(result.html_path).read()
    assert page.count("data:image/png;base64,") >= 3
    assert "All trials" in page and all(f">{n}" in page for n in (0, 1, 2))
    # the deployable file exists, matches its sha256 and agrees with the returned model
    assert os.path.exists(result.tflite_path)
    with open(result.tflite_path + ".sha256") as f:
        assert f.read().split()[0] == rep["final"]["sha256"]
    mode = rep["final"]["figures"]["mode"]
    x_check = quadrant_data(200, seed=5)[0]
    with open(result.tflite_path, "rb") as f:
        check = tflite_verify.verify(result.model, f.read(), x_check, mode=mode, check_child=False)
    assert check.passed
    assert result.pareto and {r["number"] for r in result.pareto} <= {0, 1, 2}


def test_search_never_sees_the_test_split(flops_run, trained):
    result, _, seen, _ = flops_run
    assert seen and not any(saw for fn, saw in seen if fn == "build")
    sentinel_calls = [i for i, (fn, saw) in enumerate(seen) if saw]
    # only the last two accuracy calls (dense and final on validation_data, after every
    # choice was made, for the report) read test images
    assert sentinel_calls == [len(seen) - 2, len(seen) - 1]
    assert result.report["validation"]["n"] == 120
    y_train = trained[1].y_train  # 10 % of each class of the training images, rounded
    assert result.report["data"]["n_holdout"] == sum(
        round(0.1 * np.sum(y_train == c)) for c in range(4)
    )


def test_met_flag_matches_measured_figures(flops_run):
    result, *_ = flops_run
    f = result.report["final"]["figures"]
    by_hand = f["flops_ratio"] <= 0.5 and f["acc_drop"] <= 1.0
    assert result.met == by_hand == Target.parse("flops<=0.5").check(f).met
    assert result.report["answer"]["met"] == result.met


def test_rerun_continues_the_study(flops_run, trained):
    result, directory, _, before = flops_run
    model, data = trained
    with pytest.raises(errors.InvalidArgumentError, match="target"):  # another target: refused
        compress(model, data, "flops<=0.4", directory, max_trials=4, **FAST)
    again = compress(model, data, "flops<=0.5", directory, max_trials=4, **FAST)
    after = json.load(open(os.path.join(directory, "study", "study.json")))
    assert [t["number"] for t in after["trials"]] == [0, 1, 2, 3]
    for old, new in zip(before["trials"], after["trials"][:3], strict=True):
        assert (old["params"], old["value"], new["attempts"]) == (new["params"], new["value"], 1)
    assert len(again.report["trials"]) == 4
    # a third run with the budget spent runs no trial and reuses the final build
    mp = pytest.MonkeyPatch()
    mp.setattr(candidate, "build", lambda *a, **k: pytest.fail("rebuilt the final model"))
    try:
        third = compress(model, data, "flops<=0.5", directory, max_trials=4, **FAST)
    finally:
        mp.undo()
    assert third.tflite_path == again.tflite_path and len(third.report["trials"]) == 4


def test_impossible_target_ends_with_explanation(trained, tmp_path):
    model, data = trained
    fast = {**FAST, "proxy_steps": 5}
    result = compress(model, data, "100x faster", str(tmp_path), max_trials=2, **fast)
    assert result.met is False
    summary = result.summary
    assert "NOT met" in summary and "100x" in summary and "short of" in summary
    assert "Pareto" in summary and result.pareto
    assert [m["goal"] for m in result.report["answer"]["misses"]][:1] == ["speedup"]
    assert os.path.exists(result.html_path) and os.path.exists(result.tflite_path)


def test_every_trial_failing_is_reported_not_hidden(trained, tmp_path, monkeypatch):
    model, data = trained

    def broken(*args, **kwargs):
        raise ValueError("boom: this candidate cannot be built")

    monkeypatch.setattr(candidate, "build", broken)
    with pytest.raises(errors.PocketFlowError, match="every trial failed"):
        compress(model, data, "flops<=0.5", str(tmp_path), max_trials=2, **FAST)
    rep = json.load(open(tmp_path / "auto_report.json"))
    assert rep["answer"]["met"] is False and "boom" in rep["answer"]["summary"]
    assert [t["status"] for t in rep["trials"]] == ["failed", "failed"]


def test_registered_as_auto():
    from pocketflow_tf import learner

    assert learner.get_learner_class("auto") is AutoLearner


@pytest.mark.slow
def test_int8_target_with_qat_final(trained, tmp_path):
    model, data = trained
    opts = {**FAST, "int8_final": "auto"}
    result = compress(model, data, "int8", str(tmp_path), max_trials=3, **opts)
    final = result.report["final"]
    assert final["figures"]["mode"] == "int8" and final["int8_method"] in ("ptq", "qat")
    assert set(final["int8_options"]) == {"ptq", "qat"}


def test_a_dense_model_near_guessing_is_warned_about_in_the_answer(tmp_path):
    # An untrained model: every "accuracy kept" after it would be true and worthless.
    x, y = quadrant_data(300, seed=0)
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(4, name="logits")]
    )
    result = compress(model, (x, y), "int8", str(tmp_path), max_trials=1, seed=0, **FAST)
    notes = result.report["plan"]["notes"]
    assert notes[0].startswith("WARNING: the dense model scores ")
    assert "no better than always answering its commonest class" in notes[0]
    assert notes[0] in result.summary
    # A trained model gets no such warning.
    data = splits.make_search_data(x, y)
    assert data.baseline_note(0.9) is None and data.baseline_note(0.3) is not None


# -- compress's own arguments, refused (or accepted) before any work ---------------------------
def test_compress_takes_distill_true_as_the_default_distillation(tmp_path):
    x, y = quadrant_data(240, seed=0)
    # A directory holding another study stops compress at its settings check, the first
    # step past reading `distill` (which raised a TypeError from dataclasses.asdict).
    (tmp_path / "auto_config.json").write_text(json.dumps({"format": -1}))
    with pytest.raises(errors.InvalidArgumentError, match=r"`format`: 2\. .*as stored in"):
        compress(conv_net(), (x, y), "int8", str(tmp_path), distill=True, verbose=0)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        compress(conv_net(), (x, y), "int8", str(tmp_path), distill="yes", verbose=0)
    assert (caught.value.name, caught.value.value) == ("distill", "yes")
    assert "DistillationConfig, True (distil with the default settings)" in str(caught.value)
    assert os.listdir(tmp_path) == ["auto_config.json"]  # nothing was written


def test_compress_refuses_a_directory_that_cannot_be_made(tmp_path):
    x, y = quadrant_data(240, seed=0)
    (tmp_path / "file").write_text("")
    for where in (str(tmp_path / "file" / "auto"), "/proc/pocketflow-auto"):
        with pytest.raises(errors.InvalidArgumentError) as caught:
            compress(conv_net(), (x, y), "int8", where, verbose=0)
        assert (caught.value.name, caught.value.value) == ("directory", where)
    assert sorted(os.listdir(tmp_path)) == ["file"]
    # Through the learner, the same check names its own argument.
    lrn = AutoLearner(auto_target="int8", auto_dir=str(tmp_path / "file" / "a"), verbose=0)
    with pytest.raises(errors.InvalidArgumentError, match=r"`auto_dir`.*is a file"):
        lrn.fit(conv_net(), x, y)


def test_int8_keeps_the_ptq_file_when_tfmot_cannot_quantize_the_model(tmp_path, monkeypatch):
    # A TFMOT refusal qat.py does not foresee (here: TFMOT's own ValueError for an
    # Activation("elu"), with qat's table of TFMOT's activations made to list elu) ended the
    # whole run although PTQ had made a verified int8 file.
    from pocketflow_tf import qat

    monkeypatch.setattr(
        qat, "_ACTIVATION_LAYER_FUNCTIONS", {*qat._ACTIVATION_LAYER_FUNCTIONS, "elu"}
    )
    x, y = quadrant_data(240, seed=0)
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((16, 16, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c")(inp)
    h = L.Activation("elu", name="act")(L.BatchNormalization(name="bn")(h))
    model = keras.Model(inp, L.Dense(4, name="logits")(L.Flatten()(L.MaxPooling2D(8)(h))))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    opts = {**FAST, "int8_final": "auto"}
    result = compress(model, (x, y), "int8", str(tmp_path), max_trials=1, seed=0, **opts)
    final = result.report["final"]
    assert final["int8_method"] == "ptq" and set(final["int8_options"]) == {"ptq"}
    assert final["figures"]["mode"] == "int8" and os.path.exists(result.tflite_path)
    [refused] = final["int8_refused"]
    assert refused.startswith("qat: TFMOT could not quantize the model (ValueError: Activation")
    assert "elu" in refused and "\n" not in refused
