import json
import os

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401
from pocketflow_tf import distillation, errors, learner, training
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.full_prec import FullPrecLearner


def test_registry_names_and_aliases():
    assert learner.get_learner_class("full-prec") is FullPrecLearner
    assert learner.get_learner_class("full_prec") is FullPrecLearner
    assert {"channel", "full-prec", "weight-sparse"} <= set(learner.available())


def test_planned_learner_says_which_issue(monkeypatch):
    monkeypatch.setitem(learner.PLANNED, "future-method", "issue 99 (a future method)")
    with pytest.raises(errors.InvalidArgumentError, match="issue 99"):
        learner.get_learner_class("future-method")


def test_unknown_learner_lists_available():
    with pytest.raises(errors.InvalidArgumentError, match=r"'magic'.*full-prec"):
        learner.get_learner_class("magic")


def test_fit_trains_and_leaves_input_untouched(tiny_model, tiny_data):
    x, y = tiny_data
    before = [w.copy() for w in tiny_model.get_weights()]
    cfg = training.TrainConfig(epochs=4, batch_size=32, learning_rate=0.05)
    out = FullPrecLearner(cfg, verbose=0).fit(tiny_model, x, y)
    assert out is not tiny_model
    for a, b in zip(before, tiny_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert training.evaluate_accuracy(out, x, y) > 0.9


def test_fit_accepts_tf_data_and_distillation(tiny_model, tiny_data):
    x, y = tiny_data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    fp = FullPrecLearner(
        training.TrainConfig(epochs=1), distillation=distillation.DistillationConfig(), verbose=0
    )
    out = fp.fit(tiny_model, ds)
    assert "kd_loss" in fp.history.history
    assert out.output_shape == (None, 4)
    with pytest.raises(errors.InvalidArgumentError, match="`y`"):
        fp.fit(tiny_model, ds, y)


def test_a_learner_without_a_train_config_fine_tunes_at_a_fine_tuning_rate():
    from pocketflow_tf.learners.non_uniform import NonUniformQuantLearner

    # Not TrainConfig's from-scratch 0.1, which collapsed a trained ConvNet in one epoch.
    assert FullPrecLearner().train_config.learning_rate == training.FINE_TUNE_LEARNING_RATE
    assert NonUniformQuantLearner().train_config.learning_rate == pytest.approx(
        training.FINE_TUNE_LEARNING_RATE * NonUniformQuantLearner.finetune_lr_scale
    )
    assert NonUniformQuantLearner.finetune_lr_scale < 1
    given = training.TrainConfig(learning_rate=0.3)
    assert FullPrecLearner(given).train_config is given


def test_fit_rejects_non_model():
    with pytest.raises(errors.InvalidArgumentError, match="`model`"):
        FullPrecLearner().fit("model.keras", np.zeros((2, 2)), np.zeros(2))


class _Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated kill")


def test_interrupted_run_resumes_from_last_epoch(tiny_model, tiny_data, tmp_path):
    x, y = tiny_data
    cfg = training.TrainConfig(epochs=4, batch_size=64)
    with pytest.raises(KeyboardInterrupt):
        FullPrecLearner(cfg, checkpoint_dir=str(tmp_path), verbose=0).fit(
            tiny_model, x, y, callbacks=[_Crash(at_epoch=2)]
        )
    fp = FullPrecLearner(cfg, checkpoint_dir=str(tmp_path), verbose=0)
    fp.fit(tiny_model, x, y)
    # Epochs 0 and 1 were done before the crash: the rerun only trains epochs 2 and 3.
    assert len(fp.history.history["loss"]) == 2


def test_tensorboard_logs_written(tiny_model, tiny_data, tmp_path):
    x, y = tiny_data
    FullPrecLearner(training.TrainConfig(), log_dir=str(tmp_path / "tb"), verbose=0).fit(
        tiny_model, x, y
    )
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))


# -- divergence: a NaN fine-tune is an error, never a returned model --------------------------
#: Per-learner options that keep each run to a second or two on the 8x8 two-conv net.
_FAST_OPTIONS = {
    "full-prec": {},
    "channel": {"cp_preserve_ratio": 0.5, "cp_nb_samples": 32},
    "dis-chn-pruned": {
        "dcp_nb_iters_aux": 2,
        "dcp_nb_iters_layer": 1,
        "dcp_nb_rounds": 1,
        "dcp_batch_size": 32,
        "dcp_nb_stages": 1,
    },
    "weight-sparse": {},
    "uniform": {},
    "non-uniform": {"nuql_report_tflite": False},
    "product-quant": {
        "pq_codebook_size": 4,
        "pq_nb_samples": 32,
        "pq_nb_iters_layer": 1,
        "pq_bn_batches": 1,
    },
}


@pytest.mark.parametrize("name", sorted(_FAST_OPTIONS))
def test_a_diverged_fine_tune_raises_naming_the_learner_epoch_and_rate(name):
    from tests.tiny_models import quadrant_data, two_conv_net

    x, y = quadrant_data(96, seed=0)
    cfg = training.TrainConfig(epochs=1, batch_size=8, learning_rate=1e6, lr_schedule="constant")
    lrn = learner.get_learner_class(name)(cfg, verbose=0, **_FAST_OPTIONS[name])
    with pytest.raises(errors.TrainingDivergedError) as caught:
        lrn.fit(two_conv_net(), x, y)
    e = caught.value
    assert isinstance(e, ArithmeticError) and isinstance(e, errors.PocketFlowError)
    assert (e.learner, e.learning_rate, e.epoch) == (name, 1e6, 1)
    message = str(e)
    assert f"Learner '{name}' diverged" in message
    assert "at epoch 1" in message and "learning rate 1e+06" in message
    assert "TrainConfig(learning_rate=100000)" in message


class _PoisonAt(keras.callbacks.Callback):
    """Sets the classifier's kernel to NaN after one batch of ``epoch``: a divergence on cue
    (the logits, hence the loss, are NaN from the next batch on)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self._now = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self._now = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._now == self.epoch and batch == 0:
            kernel = self.model.layers[-1].kernel
            kernel.assign(tf.fill(kernel.shape, float("nan")))


def test_a_nan_loss_stops_in_its_epoch_and_the_backup_stays_finite(tiny_model, tiny_data, tmp_path):
    x, y = tiny_data
    cfg = training.TrainConfig(epochs=2, batch_size=64, learning_rate=0.01)
    lrn = FullPrecLearner(cfg, checkpoint_dir=str(tmp_path), verbose=0)
    # The loss is read every DivergenceGuard.EVERY batches (reading it waits for the step)
    # and at the epoch's end, whose mean loss is NaN once any batch's was.
    with pytest.raises(errors.TrainingDivergedError, match=r"loss became nan at epoch 2\b"):
        lrn.fit(tiny_model, x, y, callbacks=[_PoisonAt(epoch=1)])
    # The guard raised before the epoch's backup: a rerun resumes from epoch 1's finite
    # weights, trains epoch 2 alone and returns a finite model.
    again = FullPrecLearner(cfg, checkpoint_dir=str(tmp_path), verbose=0)
    out = again.fit(tiny_model, x, y)
    assert len(again.history.history["loss"]) == 1
    assert all(np.isfinite(w).all() for w in out.get_weights())


def test_a_model_with_nan_weights_is_refused_before_work(tiny_model, tiny_data):
    kernel = tiny_model.layers[1].kernel
    kernel.assign(tf.fill(kernel.shape, float("nan")))
    with pytest.raises(errors.InvalidArgumentError, match=r"`model`: 'a model with NaN or inf"):
        FullPrecLearner(verbose=0).fit(tiny_model, *tiny_data)


def test_distillation_true_distils_with_the_defaults_and_a_bad_value_is_named():
    assert FullPrecLearner(distillation=True).distillation == distillation.DistillationConfig()
    assert FullPrecLearner(distillation=False).distillation is None
    with pytest.raises(errors.InvalidArgumentError) as caught:
        FullPrecLearner(distillation="kd")
    assert (caught.value.name, caught.value.value) == ("distillation", "kd")
    assert "DistillationConfig, True" in str(caught.value)


@pytest.mark.parametrize("argument", ["checkpoint_dir", "log_dir"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_work(
    argument, tiny_model, tiny_data, tmp_path
):
    (tmp_path / "file").write_text("")
    where = str(tmp_path / "file" / "sub")
    lrn = FullPrecLearner(training.TrainConfig(epochs=1), verbose=0, **{argument: where})
    with pytest.raises(errors.InvalidArgumentError) as caught:
        lrn.fit(tiny_model, *tiny_data)
    assert (caught.value.name, caught.value.value) == (argument, where)
    assert "is a file, so no folder can be made below it" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_backup_is_resumed_only_by_its_own_run(tmp_path, tiny_model, tiny_data):
    """A backup left by an unfinished run was resumed by a rerun with other data: its epochs
    skipped, the old run's weights handed back, exit 0. Now its stamp must match."""
    x, y = tiny_data
    ckpt = str(tmp_path / "m.ckpt")

    def learner_(epochs=1):
        return learner.get_learner_class("full-prec")(
            training.TrainConfig(epochs=epochs, batch_size=64),
            checkpoint_dir=ckpt,
            keep_backups=True,  # as `learn` keeps them until the outputs are written
            verbose=0,
        )

    learner_().fit(tiny_model, x[:128], y[:128])
    assert json.load(open(os.path.join(ckpt, "backup", learner.RUN_STAMP))).keys() == {
        "model",
        "data",
        "options",
    }
    with pytest.raises(errors.InvalidArgumentError, match=r"`checkpoint_dir`.*different data"):
        learner_().fit(tiny_model, x[128:], y[128:])
    other = keras.models.clone_model(tiny_model)  # other (fresh) weights
    with pytest.raises(errors.InvalidArgumentError, match="different model"):
        learner_().fit(other, x[:128], y[:128])
    # The same run with more epochs continues from its backup.
    lrn = learner_(epochs=2)
    lrn.fit(tiny_model, x[:128], y[:128])
    assert len(lrn.history.epoch) == 1  # one epoch left to train
    # A backup with no stamp (another tool's, an older version's) is not resumed on trust.
    os.remove(os.path.join(ckpt, "backup", learner.RUN_STAMP))
    with pytest.raises(errors.InvalidArgumentError, match="no readable stamp"):
        learner_().fit(tiny_model, x[:128], y[:128])
