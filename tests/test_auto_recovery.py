"""The budget-following final fine-tune and the learning-curve prediction of ``auto``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocketflow_tf import errors, latency
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import compress, recovery
from tests import tiny_models
from tests.test_auto import trained  # noqa: F401 (a fixture)

# -- planning the epochs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget_s, s_per_step, expected",
    [
        (None, 0.01, 30),  # no wall budget: the cap
        (1000.0, None, 30),  # speed unknown: the cap (the deadline guards the budget)
        (100.0, 0.01, 30),  # 100 s * 0.8 / (0.01 s * 50 steps) = 160 epochs > cap
        (10.0, 0.01, 16),  # 10 * 0.8 / 0.5 = 16
        (0.0, 0.01, 1),  # nothing left: still one epoch
    ],
)
def test_plan_epochs_fills_the_budget_within_the_cap(budget_s, s_per_step, expected):
    got = recovery.plan_epochs(
        budget_s=budget_s, s_per_step=s_per_step, steps_per_epoch=50, max_epochs=30
    )
    assert got == expected


@pytest.mark.parametrize(
    "budget_s, s_per_step, expected",
    [
        (None, 0.01, recovery.UNBUDGETED_EPOCHS),  # nothing bounds it: the default
        (1000.0, None, recovery.UNBUDGETED_EPOCHS),  # speed unknown (the deadline guards)
        (100.0, 0.01, 160),  # no cap: every epoch the budget leaves
        (3600.0, 0.05, 1152),  # 3600 * 0.8 / (0.05 * 50)
        (0.0, 0.01, 1),
    ],
)
def test_plan_epochs_without_a_cap_follows_the_budget(budget_s, s_per_step, expected):
    got = recovery.plan_epochs(
        budget_s=budget_s, s_per_step=s_per_step, steps_per_epoch=50, max_epochs=None
    )
    assert got == expected


# -- extrapolating a learning curve ------------------------------------------------------------


def test_extrapolate_recovers_the_model_it_assumes():
    def acc(t):
        return 0.93 - 0.6 / np.sqrt(t)

    points = [(s, acc(s)) for s in (50, 100, 200)]
    assert recovery.extrapolate(points, 5000) == pytest.approx(acc(5000), abs=1e-9)
    # capped at the ceiling, never below the last measured point
    assert recovery.extrapolate(points, 5000, ceiling=0.9) == 0.9
    assert recovery.extrapolate(points, 200) == pytest.approx(acc(200))


def test_extrapolate_does_not_invent_gains():
    assert recovery.extrapolate([(50, 0.8), (100, 0.8), (200, 0.79)], 10_000) == 0.79
    assert recovery.extrapolate([(200, 0.5)], 10_000) == 0.5
    with pytest.raises(errors.InvalidArgumentError, match="curve"):
        recovery.extrapolate([(0, 0.5)], 100)


# -- the stopping callback ---------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def _xy():
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    return x, (x[:, 0] > 0.5).astype("int64")


def _epoch(stop, m, weights, epoch, clock, seconds=10.0):
    m.set_weights(weights)
    clock.now += seconds
    stop.on_epoch_end(epoch)


def test_recovery_stop_keeps_the_best_epoch_and_stops_at_a_plateau():
    x, y = _xy()
    m, clock = _linear(), _Clock()
    # logit 1 - logit 0 = 10 * (x0 - 0.5): exactly the labels
    good = [np.array([[-5.0, 5.0]] + [[0.0, 0.0]] * 3, "float32"), np.array([2.5, -2.5], "f4")]
    bad = [-w for w in good]
    stop = recovery.RecoveryStop(x, y, floor=2.0, patience=2, deadline=None, clock=clock)
    stop.set_model(m)
    stop.on_train_begin()
    _epoch(stop, m, good, 0, clock)
    _epoch(stop, m, bad, 1, clock)
    assert not m.stop_training
    _epoch(stop, m, bad, 2, clock)
    assert m.stop_training and stop.reason == "plateau" and stop.best_epoch == 1
    stop.on_train_end()
    for got, want in zip(m.get_weights(), good, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [e for e, _, _ in stop.curve] == [1, 2, 3] and stop.curve[0][1] > stop.curve[1][1]


def test_recovery_stop_at_the_floor_and_at_the_deadline():
    x, y = _xy()
    m, clock = _linear(), _Clock()
    stop = recovery.RecoveryStop(x, y, floor=0.0, patience=None, deadline=None, clock=clock)
    stop.set_model(m)
    stop.on_train_begin()
    _epoch(stop, m, m.get_weights(), 0, clock)
    assert stop.reason == "recovered" and m.stop_training

    m, clock = _linear(), _Clock()
    stop = recovery.RecoveryStop(x, y, floor=2.0, patience=None, deadline=1035.0, clock=clock)
    stop.set_model(m)
    stop.on_train_begin()
    stop.on_train_batch_end(0)  # past no deadline, and the first epoch always runs
    clock.now = 2000.0
    stop.on_train_batch_end(1)
    assert not m.stop_training
    clock.now = 1000.0
    _epoch(stop, m, m.get_weights(), 0, clock, seconds=10.0)  # 10 s/epoch: 1020 < 1035
    _epoch(stop, m, m.get_weights(), 1, clock, seconds=10.0)  # the next would end at 1030
    assert not m.stop_training
    _epoch(stop, m, m.get_weights(), 2, clock, seconds=10.0)  # 1030 + 10 > 1035
    assert m.stop_training and stop.reason == "budget"


def test_recovery_stop_waits_for_min_epochs_before_stopping_or_choosing():
    x, y = _xy()
    m, clock = _linear(), _Clock()
    good = [np.array([[-5.0, 5.0]] + [[0.0, 0.0]] * 3, "float32"), np.array([2.5, -2.5], "f4")]
    bad = [-w for w in good]
    stop = recovery.RecoveryStop(
        x, y, floor=0.0, patience=1, deadline=900.0, min_epochs=3, clock=clock
    )
    stop.set_model(m)
    stop.on_train_begin()
    _epoch(stop, m, good, 0, clock)  # recovered, past the deadline: still not stopped
    stop.on_train_batch_end(0)
    _epoch(stop, m, bad, 1, clock)
    assert not m.stop_training and stop.best_epoch is None
    _epoch(stop, m, bad, 2, clock)
    assert m.stop_training and stop.reason == "recovered" and stop.best_epoch == 3
    stop.on_train_end()  # epoch 1 was better, but before the schedule ended: not restored
    for got, want in zip(m.get_weights(), bad, strict=True):
        np.testing.assert_array_equal(got, want)


def test_learning_curve_scores_with_fresh_batchnorm_and_restores_it():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    out = keras.layers.Dense(2)(keras.layers.BatchNormalization(name="bn")(inp))
    m = keras.Model(inp, out)
    m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _xy()
    curve = recovery.LearningCurve(x, y, x + 3.0, at=(1, 3, 6), warmup=2)
    before = m.get_layer("bn").moving_mean.numpy().copy()
    m.get_layer("bn").momentum = 1.0  # training leaves the moving statistics alone
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[curve], shuffle=False)
    assert [s for s, _ in curve.points] == [1, 3, 6]
    np.testing.assert_array_equal(m.get_layer("bn").moving_mean.numpy(), before)
    assert curve.s_per_step is not None and curve.s_per_step > 0


# -- end to end --------------------------------------------------------------------------------


def test_recovery_stop_state_survives_a_kill(tmp_path):
    x, y = _xy()
    m, clock = _linear(), _Clock()
    good = [np.array([[-5.0, 5.0]] + [[0.0, 0.0]] * 3, "float32"), np.array([2.5, -2.5], "f4")]
    bad = [-w for w in good]
    state = str(tmp_path / "recovery")
    first = recovery.RecoveryStop(
        x, y, floor=2.0, patience=None, deadline=None, clock=clock, state_dir=state
    )
    first.set_model(m)
    first.on_train_begin()
    _epoch(first, m, good, 0, clock)
    _epoch(first, m, bad, 1, clock)
    # killed here: no on_train_end, the in-memory copy of the best weights is lost
    assert sorted(p.name for p in (tmp_path / "recovery").iterdir()) == [
        "best-epoch-1.weights.h5",
        "recovery.json",
    ]
    lines = []
    again = recovery.RecoveryStop(
        x,
        y,
        floor=2.0,
        patience=None,
        deadline=None,
        clock=clock,
        state_dir=state,
        say=lines.append,
    )
    again.set_model(m)
    again.on_train_begin()
    assert again.best_epoch == 1 and [e for e, _, _ in again.curve] == [1, 2]
    assert "resumed after epoch 2 (best so far: epoch 1)" in lines[0]
    _epoch(again, m, bad, 1, clock)  # epoch 2 trained again (killed before its backup)
    _epoch(again, m, bad, 2, clock)
    assert [e for e, _, _ in again.curve] == [1, 2, 3]
    assert [t for _, _, t in again.curve] == [10.0, 30.0, 40.0]  # seconds go on counting
    again.on_train_end()  # the best epoch came before the kill: its weights from the file
    for got, want in zip(m.get_weights(), good, strict=True):
        np.testing.assert_array_equal(got, want)
    assert recovery.resume_epochs(state) is None  # planned epochs unknown to a bare callback


def test_a_damaged_best_weights_file_keeps_the_last_epoch(tmp_path):
    x, y = _xy()
    m, clock = _linear(), _Clock()
    good = [np.array([[-5.0, 5.0]] + [[0.0, 0.0]] * 3, "float32"), np.array([2.5, -2.5], "f4")]
    bad = [-w for w in good]
    state = tmp_path / "recovery"
    kw = dict(floor=2.0, patience=None, deadline=None, clock=clock, state_dir=str(state))
    first = recovery.RecoveryStop(x, y, **kw)
    first.set_model(m)
    first.on_train_begin()
    _epoch(first, m, good, 0, clock)
    _epoch(first, m, bad, 1, clock)
    (state / "best-epoch-1.weights.h5").write_bytes(b"not an h5 file")  # outside damage
    lines = []
    again = recovery.RecoveryStop(x, y, say=lines.append, **kw)
    again.set_model(m)
    again.on_train_begin()
    _epoch(again, m, bad, 2, clock)
    again.on_train_end()  # no exception: the last epoch's weights stay, and it says so
    for got, want in zip(m.get_weights(), bad, strict=True):
        np.testing.assert_array_equal(got, want)
    assert "could not load the best epoch's weights" in lines[-1]
    assert "best-epoch-1.weights.h5" in lines[-1]
    assert again.to_dict()["best_epoch"] == 3
    assert again.to_dict()["best_acc"] == again.curve[-1][1]


def test_a_stop_is_stored_so_a_resume_trains_no_further(tmp_path):
    x, y = _xy()
    m, clock = _linear(), _Clock()
    state = str(tmp_path / "recovery")
    stop = recovery.RecoveryStop(
        x, y, floor=0.0, patience=None, deadline=None, clock=clock, state_dir=state
    )
    stop.set_model(m)
    stop.on_train_begin()
    _epoch(stop, m, m.get_weights(), 0, clock)
    assert stop.reason == "recovered"
    assert recovery.resume_epochs(state) == 1  # recovered at epoch 1: no epoch more
    resumed = recovery.RecoveryStop(
        x, y, floor=0.0, patience=None, deadline=None, clock=clock, state_dir=state
    )
    resumed.set_model(m)
    resumed.on_train_begin()
    assert resumed.reason == "recovered" and resumed.to_dict()["best_epoch"] == 1


class _Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, no on_train_end runs."""


def test_final_fine_tune_resumes_after_a_kill(trained, tmp_path, monkeypatch):  # noqa: F811
    model, data = trained
    opts = tiny_models.auto_budget(
        proxy_steps=8,
        samples=128,
        int8_final="ptq",
        final_epochs=3,
        max_trials=1,
        final_margin=100.0,  # an unreachable floor: all three epochs run
    )
    original = recovery.RecoveryStop.on_epoch_end

    def killed_after_epoch_1(self, epoch, logs=None):
        if epoch == 1:  # epoch 2 trained, neither scored nor backed up
            raise _Killed()
        return original(self, epoch, logs)

    monkeypatch.setattr(recovery.RecoveryStop, "on_epoch_end", killed_after_epoch_1)
    with pytest.raises(_Killed):
        compress(model, data, "flops<=0.6", str(tmp_path), **opts)
    final = tmp_path / "final"
    assert (final / "ckpt" / "backup").is_dir()
    stored = json.load(open(final / "recovery" / "recovery.json"))
    assert [p[0] for p in stored["curve"]] == [1] and stored["epochs"] == 3
    monkeypatch.setattr(recovery.RecoveryStop, "on_epoch_end", original)
    trained_epochs = []
    monkeypatch.setattr(
        recovery.RecoveryStop,
        "on_epoch_begin",
        lambda self, epoch, logs=None: trained_epochs.append(epoch + 1),
    )
    result = compress(model, data, "flops<=0.6", str(tmp_path), **opts)
    ft = result.report["final"]["fine_tune"]
    assert trained_epochs == [2, 3]  # resumed from the backup of epoch 1
    assert [p[0] for p in ft["curve"]] == [1, 2, 3] and ft["reason"] == "epochs"
    assert ft["best_epoch"] in (1, 2, 3)
    assert not (final / "recovery").exists() and not (final / "ckpt").exists()


def test_a_backup_of_another_final_build_is_not_restored(trained, tmp_path):  # noqa: F811
    model, data = trained
    opts = tiny_models.auto_budget(proxy_steps=8, samples=128, int8_final="ptq", max_trials=1)
    final = tmp_path / "final"
    (final / "ckpt" / "backup").mkdir(parents=True)
    (final / "ckpt" / "backup" / "latest.weights.h5").write_bytes(b"another model's weights")
    (final / "recovery").mkdir()
    (final / "recovery" / "recovery.json").write_text('{"curve": [[7, 0.5, 1.0]]}')
    (final / "build.json").write_text('{"params": "another trial"}')
    result = compress(model, data, "flops<=0.6, drop<=100", str(tmp_path), **opts)
    assert [p[0] for p in result.report["final"]["fine_tune"]["curve"]] == [1]
    assert (
        json.load(open(final / "build.json"))["params"]["chain"] == result.report["chosen"]["chain"]
    )


def test_final_fine_tune_stops_once_recovered_and_reports_why(trained, tmp_path):  # noqa: F811
    model, data = trained
    opts = tiny_models.auto_budget(
        proxy_steps=8, samples=128, int8_final="ptq", final_epochs=4, max_trials=2
    )
    # drop<=100: the floor is 0, so the first epoch already recovers
    result = compress(model, data, "flops<=0.6, drop<=100", str(tmp_path), **opts)
    ft = result.report["final"]["fine_tune"]
    assert ft["planned_epochs"] == 4 and ft["reason"] == "recovered"
    assert len(ft["curve"]) == 1 and ft["best_epoch"] == 1
    rows = [r for r in result.report["trials"] if r["status"] == "complete"]
    assert rows and all(r["acc_predicted"] >= r["acc"] for r in rows if r["chain"] != "int8")
    stored = json.load(open(result.report_path))
    assert stored["data"]["holdout_caveat"].startswith("carved from the data given")
    assert "on the test data" in stored["answer"]["summary"]
    page = open(result.html_path).read()
    assert "Final fine-tune: 1 epoch(s) of at most 4" in page and "test accuracy" in page


def test_final_fine_tune_without_a_cap_plans_what_the_budget_leaves(trained, tmp_path):  # noqa: F811
    model, data = trained
    opts = tiny_models.auto_budget(
        proxy_steps=8, samples=128, int8_final="ptq", final_epochs=None, max_trials=1
    )
    # drop<=100: recovered after the first epoch, whatever the plan
    result = compress(model, data, "flops<=0.6, drop<=100", str(tmp_path), **opts)
    ft = result.report["final"]["fine_tune"]
    # the default budget (3600 s, half for the final build) holds far more than the 30
    # epochs of the old cap at this net's measured speed (~0.1 s per epoch of 12 steps)
    assert ft["planned_epochs"] > 100 and ft["reason"] == "recovered"
    assert len(ft["curve"]) == 1
    assert result.report["settings"]["auto_final_epochs"] is None


def test_final_fine_tune_follows_a_spent_wall_budget(trained, tmp_path):  # noqa: F811
    model, data = trained
    opts = tiny_models.auto_budget(
        proxy_steps=8,
        samples=128,
        int8_final="ptq",
        final_epochs=4,
        max_trials=3,
        max_wall_s=0.5,  # one trial alone takes longer: nothing is left for the final build
        final_margin=100.0,  # an unreachable floor: only the budget can end the fine-tune
    )
    result = compress(model, data, "flops<=0.6", str(tmp_path), **opts)
    assert result.report["search"]["stop_reason"] == "max_wall_s"
    assert len(result.report["trials"]) == 1
    ft = result.report["final"]["fine_tune"]
    # at least one epoch always runs; the planned count shrank to what fits (1)
    assert ft["planned_epochs"] == 1 and len(ft["curve"]) == 1 and ft["reason"] == "budget"


# -- the measured int8 speed-up sets the pruning range -----------------------------------------


def test_speed_target_measures_int8_once_and_plans_the_range_from_it(
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    model, data = trained
    opts = tiny_models.auto_budget(proxy_steps=4, samples=128, int8_final="ptq", max_trials=1)
    result = compress(model, data, "2x faster", str(tmp_path), **opts)
    speedup = json.load(open(tmp_path / "dense.int8.json"))["speedup"]
    assert speedup > 0
    high = result.report["plan"]["flops_keep_range"][1]
    assert high == pytest.approx(min(0.9, max(1.0, speedup) / 2.0), abs=1e-6)
    assert any("measured" in n for n in result.report["plan"]["notes"])

    # a rerun (study finished, final build reused) plans the same space from the stored
    # figure: nothing is timed again
    def refuse(*a, **k):
        raise AssertionError("timed again")

    monkeypatch.setattr(latency, "interleaved_ratio", refuse)
    again = compress(model, data, "2x faster", str(tmp_path), **opts)
    assert again.report["plan"]["flops_keep_range"][1] == high
