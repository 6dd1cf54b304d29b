"""The ``Learner`` contract, checked for every registered learner.

Every name in :func:`learner.available` is built with its defaults, refuses an unknown
option by name, records a JSON config that :meth:`Learner.from_config` rebuilds, and is
trained the way the runner trains it (``pocketflow_tf.app.runner._train``): its
``default_options`` filled in, a trained model when it ``needs_trained_model``, arrays
(datasets only when it ``accepts_datasets``), then the declared hooks read back
(``get_config``, ``compression_report``, ``save_artifacts``, ``pruned_model``, ``deployed``).

Each learner runs with its smallest settings on an 8x8 four-class task, so that the
whole module stays within a few minutes on a loaded machine.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import pocketflow_tf.learners  # noqa: F401  (registers the learners)
from pocketflow_tf import errors, learner, options, training
from pocketflow_tf.compat import keras, tf
from tests.tiny_models import quadrant_data, two_conv_net

#: Options a learner cannot be built without (no default exists for them).
REQUIRED = {"auto": {"auto_target": "int8"}}

#: The smallest work each learner can do: a few samples, iterations and trials.
TINY = {
    "auto": {
        "auto_target": "int8",
        "auto_max_trials": 1,
        "auto_proxy_steps": 4,
        "auto_int8_final": "ptq",
        "auto_proxy_calib_samples": 64,
        "auto_final_calib_samples": 64,
        "auto_eval_samples": 64,
        "auto_latency_rounds": 3,
        "auto_final_latency_rounds": 3,
    },
    "channel": {"cp_preserve_ratio": 0.5, "cp_nb_samples": 64, "cp_channel_round": 4},
    "dis-chn-pruned": {
        "dcp_nb_iters_aux": 10,
        "dcp_nb_iters_layer": 2,
        "dcp_nb_rounds": 1,
        "dcp_batch_size": 32,
        "dcp_nb_samples": 64,
    },
    "full-prec": {},
    "non-uniform": {"nuql_weight_bits": 4, "nuql_report_tflite": False},
    "product-quant": {
        "pq_codebook_size": 8,
        "pq_nb_samples": 64,
        "pq_nb_iters_em": 5,
        "pq_nb_iters_layer": 2,
        "pq_bn_batches": 2,
    },
    "uniform": {"uql_calib_samples": 32, "uql_report_tflite": False},
    "weight-sparse": {"ws_prune_ratio": 0.5},
}

NAMES = learner.available()


def _cls(name):
    return learner.get_learner_class(name)


def _build(name, out_dir, **options):
    """The learner as the runner builds it: its ``default_options`` for ``out_dir``, then
    the given options on top."""
    cls = _cls(name)
    return cls(
        training.TrainConfig(epochs=1, batch_size=32),
        checkpoint_dir=os.path.join(out_dir, "model.keras.ckpt"),
        keep_backups=True,
        verbose=0,
        **{**cls.default_options(out_dir), **options},
    )


@pytest.fixture(scope="module")
def data():
    """(train, test) of the 8x8 quadrant task: 256 (auto verifies on 200) and 64 samples."""
    return quadrant_data(256, seed=0), quadrant_data(64, seed=1)


@pytest.fixture(scope="module")
def trained_weights(data):
    """Weights of ``two_conv_net`` trained on ``data`` (for learners that need a trained
    model), computed once per module."""
    (x, y), _ = data
    model = two_conv_net()
    model.compile(
        keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    return model.get_weights()


def test_every_learner_has_tiny_settings_here():
    """A newly registered learner fails here until this module knows how to run it small."""
    assert set(NAMES) == set(TINY)
    assert set(REQUIRED) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_constructs_with_its_defaults(name, tmp_path):
    cls = _cls(name)
    lrn = cls(**cls.default_options(str(tmp_path)), **REQUIRED.get(name, {}))
    assert isinstance(lrn, learner.Learner) and lrn.name == name
    assert issubclass(cls.Options, options.Options)
    assert isinstance(lrn.options, cls.Options)
    assert isinstance(cls.default_options(str(tmp_path)), dict)
    assert isinstance(cls.needs_trained_model, bool) and isinstance(cls.accepts_datasets, bool)
    assert lrn.deployed() is None  # nothing is exported before fit
    assert lrn.pruned_model is None
    assert isinstance(lrn.compression_report(), dict)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_refused_by_name(name, tmp_path):
    cls = _cls(name)
    with pytest.raises(errors.InvalidArgumentError) as e:
        cls(**cls.default_options(str(tmp_path)), **REQUIRED.get(name, {}), no_such_option=3)
    assert e.value.name == "no_such_option" and e.value.value == 3
    assert "no_such_option" in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_default_config_is_json_and_round_trips(name, tmp_path):
    lrn = _build(name, str(tmp_path), **REQUIRED.get(name, {}))
    config = lrn.get_config()
    assert config["learner"] == name
    assert json.loads(json.dumps(config)) == config
    assert type(lrn).from_config(config).get_config() == config


@pytest.mark.parametrize("name", NAMES)
def test_config_with_options_round_trips(name, tmp_path):
    lrn = _build(name, str(tmp_path), **TINY[name])
    config = lrn.get_config()
    assert json.loads(json.dumps(config)) == config
    again = type(lrn).from_config(config)
    assert again.get_config() == config
    assert set(type(lrn).Options.names()) <= set(config)


@pytest.mark.parametrize("name", NAMES)
def test_fits_like_the_runner_and_declares_what_it_made(name, data, trained_weights, tmp_path):
    cls = _cls(name)
    (x, y), (x_test, y_test) = data
    model = two_conv_net()
    if cls.needs_trained_model:
        model.set_weights(trained_weights)
    before = [w.copy() for w in model.get_weights()]
    lrn = _build(name, str(tmp_path), **TINY[name])

    out = lrn.fit(model, x, y, validation_data=(x_test, y_test))

    assert isinstance(out, keras.Model)
    assert out.output_shape == model.output_shape
    assert out.predict(x_test[:5], verbose=0).shape == (5, 4)
    # The user's model is never modified.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    # What the runner records after fit: all of it JSON-ready.
    config = lrn.get_config()
    assert json.loads(json.dumps(config)) == config
    report = lrn.compression_report()
    assert isinstance(report, dict)
    json.dumps(report)
    for path in lrn.save_artifacts(str(tmp_path / "model")).values():
        assert os.path.exists(path)
    # Every file mode it declares (pq-compact...) is written from those artifacts, verified.
    written = []
    for mode in cls.file_modes:
        if lrn.deploy_modes and mode not in lrn.deploy_modes:
            continue  # not a form of this run's result (e.g. clustering with int8 QAT)
        path = str(tmp_path / f"model.{mode}.tflite")
        res = cls.export_file(mode, out, path, prefix=str(tmp_path / "model"), x_verify=x)
        assert res.report.passed and os.path.exists(path)
        written.append(mode)
    if name in ("product-quant", "non-uniform"):  # both declare one for these options
        assert written == list(cls.file_modes)
    assert lrn.pruned_model is None or isinstance(lrn.pruned_model, keras.Model)
    deployed = lrn.deployed()
    assert deployed is None or isinstance(deployed, learner.Deployed)
    if deployed is not None:
        assert os.path.exists(deployed.path)
        assert all(os.path.exists(p) for p in deployed.artifacts.values())
        json.dumps(deployed.metrics)
    lrn.release_backups()  # as the runner does once its outputs are written
    assert not os.path.exists(tmp_path / "model.keras.ckpt")


@pytest.mark.parametrize("name", [n for n in NAMES if not _cls(n).accepts_datasets])
def test_refuses_a_dataset_when_it_says_so(name, data, tmp_path):
    (x, y), _ = data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    lrn = _build(name, str(tmp_path), **TINY[name])
    with pytest.raises(errors.InvalidArgumentError) as e:
        lrn.fit(two_conv_net(), ds)
    assert e.value.name == "x"
    assert os.listdir(tmp_path) == []  # refused before any work


@pytest.mark.parametrize("name", [n for n in NAMES if _cls(n).accepts_datasets])
def test_fits_a_dataset_when_it_says_so(name, data, trained_weights, tmp_path):
    cls = _cls(name)
    (x, y), _ = data
    model = two_conv_net()
    if cls.needs_trained_model:
        model.set_weights(trained_weights)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    out = _build(name, str(tmp_path), **TINY[name]).fit(model, ds)
    assert isinstance(out, keras.Model) and out.output_shape == model.output_shape
