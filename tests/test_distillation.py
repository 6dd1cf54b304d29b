import numpy as np
import pytest

from pocketflow_tf import distillation, errors
from pocketflow_tf.compat import keras


def _np_kd(t, s, temp):
    def log_softmax(z):
        z = z / temp
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    p = np.exp(log_softmax(t))
    return float(np.mean((p * (log_softmax(t) - log_softmax(s))).sum(-1)) * temp**2)


@pytest.mark.parametrize("temp", [1.0, 2.0, 8.0])
def test_kd_loss_matches_numpy_with_t_squared(temp):
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    assert float(distillation.kd_loss(t, s, temp)) == pytest.approx(_np_kd(t, s, temp), rel=1e-5)


def test_kd_loss_zero_for_identical_logits():
    t = np.random.default_rng(1).normal(size=(3, 5))
    assert float(distillation.kd_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)


def test_bad_config_names_flag():
    with pytest.raises(errors.InvalidArgumentError, match="loss_w_dst"):
        distillation.DistillationConfig(weight=-1)
    with pytest.raises(errors.InvalidArgumentError, match="tempr_dst"):
        distillation.DistillationConfig(temperature=0)


def test_distillation_trains_student_towards_teacher_and_keeps_teacher(tiny_data):
    x, y = tiny_data
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    student = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    t_weights = [w.copy() for w in teacher.get_weights()]
    before = float(
        distillation.kd_loss(teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0)
    )
    cfg = distillation.DistillationConfig(weight=10.0, temperature=2.0)
    model = distillation.DistillationHelper(teacher, cfg).wrap(student)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    hist = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    after = float(
        distillation.kd_loss(teacher.predict(x, verbose=0), student.predict(x, verbose=0), 2.0)
    )
    assert after < 0.5 * before
    assert "kd_loss" in hist.history
    for a, b in zip(t_weights, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_incompatible_teacher_is_rejected_before_training():
    t = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    s = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    with pytest.raises(errors.InvalidArgumentError, match="input shape"):
        distillation.DistillationHelper(t).wrap(s)
    with pytest.raises(errors.InvalidArgumentError, match="teacher"):
        distillation.DistillationHelper("not a model")
