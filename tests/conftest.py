"""Shared fixtures: seeded tiny models and data, and quieter TensorFlow logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from pocketflow_tf.compat import keras  # noqa: E402  (selects tf-keras before TF loads)
from tests.tiny_models import quadrant_data  # noqa: E402


@pytest.fixture
def tiny_data():
    """A separable 4-class problem on 8x8x1 images (class = brightest quadrant), 256 samples."""
    return quadrant_data(256, seed=0)


@pytest.fixture
def tiny_model():
    """Conv-BN-ReLU -> 4x4 max-pool -> Dense(4) logits, seeded."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)  # one value per quadrant: the task is learnable
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


@pytest.fixture
def fmnist_run(tmp_path):
    """Builds the ``RunOptions`` of a quiet ``convnet_at_fmnist`` run writing into
    ``tmp_path`` (model ``m/model.keras``, TensorBoard logs ``logs/``); keywords add to or
    override these."""
    from pocketflow_tf.app import runner

    def build(**options):
        where = {
            "save_path": str(tmp_path / "m" / "model.keras"),
            "log_dir": str(tmp_path / "logs"),
            "verbose": 0,
        }
        return runner.RunOptions("convnet_at_fmnist", **{**where, **options})

    return build
