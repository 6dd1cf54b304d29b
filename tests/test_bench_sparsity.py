"""The sparsity benchmark's model cache: reused only when trained by the same code and weights."""

from __future__ import annotations

import json
import types

import numpy as np

from bench.benchmarks import sparsity
from pocketflow_tf.compat import keras


def _tiny():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", name="c0")(inp)
    h = keras.layers.Conv2D(40, 3, padding="same", name="c1")(keras.layers.ReLU()(h))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(h))


def test_a_cached_sparse_model_is_reused_only_with_the_same_code_key(tmp_path, monkeypatch):
    monkeypatch.setattr(sparsity, "CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    data = types.SimpleNamespace(
        x_train=rng.random((1280, 8, 8, 1), dtype=np.float32), y_train=np.arange(1280) % 10
    )
    dense = _tiny()
    settings = {"epochs": 1, "lr": 0.05, "prtl": "heurist"}
    trained = []
    real_fit = sparsity.WeightSparseLearner.fit
    monkeypatch.setattr(
        sparsity.WeightSparseLearner,
        "fit",
        lambda self, *a, **k: trained.append(1) or real_fit(self, *a, **k),
    )

    def load():
        return sparsity.prune_or_load(
            "resnet_at_fmnist", "weight-sparse", 0.5, dense, data, settings
        )

    _, meta = load()
    assert trained == [1] and meta["code_key"] == sparsity.code_key(dense)
    _, again = load()
    assert trained == [1] and again == meta  # the cache, same code and weights
    meta_path = tmp_path / f"{meta['tag']}.keras.json"
    stale = {**meta, "code_key": "0" * 64}
    meta_path.write_text(json.dumps(stale))
    _, retrained = load()
    assert trained == [1, 1] and retrained["code_key"] == meta["code_key"]
    # other dense weights: another key
    other = _tiny()
    other.get_layer("c1").kernel.assign(other.get_layer("c1").kernel * 2)
    assert sparsity.code_key(other) != sparsity.code_key(dense)
