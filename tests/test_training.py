import numpy as np
import pytest

from pocketflow_tf import errors, training


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("optimizer", "lion"),
        ("lr_schedule", "poly"),
        ("weight_decay", 1.5),
        ("warmup_epochs", -1),
    ],
)
def test_bad_config_names_field_and_value(field, value):
    with pytest.raises(errors.InvalidArgumentError) as e:
        training.TrainConfig(**{field: value})
    assert f"`{field}`" in str(e.value) and repr(value) in str(e.value)


def test_cosine_schedule_with_warmup():
    sched = training._Schedule(0.1, total=100, warmup=10, kind="cosine")
    lrs = np.array([float(sched(s)) for s in range(100)])
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1) and lrs[-1] < 1e-3
    assert np.all(np.diff(lrs[10:]) <= 1e-9)


def test_step_schedule():
    sched = training._Schedule(1.0, total=100, warmup=0, kind="step")
    assert [round(float(sched(s)), 4) for s in (0, 49, 50, 74, 75, 99)] == [
        1,
        1,
        0.1,
        0.1,
        0.01,
        0.01,
    ]


def test_weight_decay_skips_bias_and_bn():
    from pocketflow_tf.compat import keras

    opt = training.build_optimizer(training.TrainConfig(weight_decay=1e-3), 10)
    m = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()]
    )
    opt.build(m.trainable_variables)
    decayed = [v.name for v in m.trainable_variables if opt._use_weight_decay(v)]
    assert len(decayed) == 1 and "kernel" in decayed[0]


def test_model_saved_while_compiled_loads_again(tmp_path):
    """The optimizer's LR schedule is serialisable: a compiled model round-trips."""
    from pocketflow_tf.compat import keras as k

    m = k.Sequential([k.Input((3,)), k.layers.Dense(2)])
    m.compile(optimizer=training.build_optimizer(training.TrainConfig(epochs=2), 10), loss="mse")
    m.fit(np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32"), verbose=0)
    m.save(tmp_path / "m.keras")
    loaded = k.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.get_weights()[0], m.get_weights()[0])
    assert (
        loaded.optimizer.get_config()["learning_rate"] == m.optimizer.get_config()["learning_rate"]
    )
