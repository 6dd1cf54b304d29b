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
