"""Automated compression's weight-sparsity chains: planning, one proxy trial, one tiny run.

The model is test_auto's trained 16x16 conv net: its first conv (144 weights) and logits
(512) stay dense, conv1 (4,608) and conv2 (9,216) are pruned.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from pocketflow_tf import errors, sparsity, tflite_export, tflite_verify
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import (
    Target,
    candidate,
    compress,
    planner,
    proxy,
    sparse_build,
    splits,
)
from tests import tiny_models
from tests.test_auto import FAST, trained  # noqa: F401  (the module-scoped fixture)
from tests.test_auto import conv_net as tiny_models_conv

SPARSE = {"sparse", "sparse+int8"}


def tiny_proxy(model, data_splits, target_text: str, folder):
    """The per-trial proxy of ``compress()`` on the tiny trained net (20 fine-tuning steps,
    128 calibration / evaluation samples, 3 latency rounds), and its search data."""
    data = splits.make_search_data(data_splits.x_train, data_splits.y_train, seed=0)
    target = Target.parse(target_text)
    facts = planner.model_facts(model)
    dense = candidate.export(model, "float", str(folder / "dense.tflite"), data, child_check=False)
    reference = proxy.Reference(dense.path, dense.bytes, dense.bytes_gzip, 0.9, 0.9, 1, 1)
    trial = proxy.Proxy(
        model,
        model,
        planner.plan(target, facts),
        facts,
        data,
        reference,
        target,
        str(folder),
        FAST["train_config"],
        proxy.ProxyConfig(steps=20, calib_samples=128, eval_samples=128, latency_rounds=3),
        distill=None,
        cache=candidate.SensitivityCache(),
        channel_round=8,
        prune_seed=0,
    )
    return trial, data


# -- planner ---------------------------------------------------------------------------------


def test_byte_goals_plan_sparse_chains_and_speed_goals_do_not():
    facts = planner.ModelFacts(True, 0.05, dense_bytes=1_000_000)
    for text in ("<=0.2x bytes", "under 200 KB"):
        p = planner.plan(Target.parse(text), facts)
        assert SPARSE <= set(p.chain_names), text
        assert "sparsity" in p.space.names
    for text in ("2x faster", "flops<=0.5", "2x faster, <=0.5x bytes"):
        p = planner.plan(Target.parse(text), facts)
        assert not SPARSE & set(p.chain_names), text
        assert "sparsity" not in p.space.names
    why = planner.RULES["speedup"][1]
    assert "densifies" in why
    # an int8 goal keeps only the sparse chain that ends in int8
    p = planner.plan(Target.parse("int8"), facts)
    assert SPARSE & set(p.chain_names) == {"sparse+int8"}
    p = planner.plan(Target.parse("int8, <=0.1x bytes"), facts)
    assert p.chain_names == ["prune+int8", "sparse+int8"]


def test_sparse_chains_export_sparse_and_list_their_parameters():
    chain = planner.CHAINS["sparse+int8"]
    assert chain.sparse and chain.int8 and not chain.prunes and chain.export_mode == "int8"
    assert not planner.CHAINS["prune+int8"].sparse
    params = {"chain": "sparse+int8", "flops_keep": 0.4, "criterion": "l1"}
    params.update(sparsity=0.9, lr_factor=0.3)
    assert planner.active_params(params) == {
        "chain": "sparse+int8",
        "sparsity": 0.9,
        "lr_factor": 0.3,
    }
    assert planner.active_params({**params, "chain": "prune"}) == {
        "chain": "prune",
        "flops_keep": 0.4,
        "criterion": "l1",
        "lr_factor": 0.3,
    }
    assert planner.active_params({**params, "chain": "int8"}) == {"chain": "int8"}


def test_sparsity_range_narrows_by_the_byte_goal_and_estimates_drop_what_cannot_reach_it():
    facts = planner.ModelFacts(True, 0.05, dense_bytes=1_000_000)
    p = planner.plan(Target.parse("<=0.5x bytes"), facts)
    assert p.sparsity_range == planner.DEFAULT_SPARSITY_RANGE
    assert (p.space["sparsity"].low, p.space["sparsity"].high) == (0.5, 0.97)
    # 0.1x: int8-sparse needs ~1 - 0.1 / (1.07 * 0.9) = 0.896 by the estimate
    p = planner.plan(Target.parse("<=0.1x bytes"), facts)
    low, high = p.sparsity_range
    assert 0.89 < low < 0.9 and high == 0.97
    assert any("weight sparsity searched from" in n for n in p.notes)
    # 200 KB of a 1 MB float file is the same goal as 0.2x
    same = planner.plan(Target.parse("<=0.2x bytes"), facts).sparsity_range
    assert planner.plan(Target.parse("under 200 KB"), facts).sparsity_range == same
    # 0.03x: float sparse storage reaches ~1.53 * 0.03 = 0.046x at best -> dropped, while
    # int8 sparse (~0.032x, inside the margin) stays and is searched just below the top
    p = planner.plan(Target.parse("<=0.03x bytes"), facts)
    assert "sparse" not in p.chain_names and "sparse+int8" in p.chain_names
    assert any("dropped sparse:" in n for n in p.notes)
    assert p.sparsity_range == (0.92, 0.97)


def test_a_chain_with_nothing_to_sparsify_is_dropped():
    target = Target.parse("<=0.2x bytes")
    only_dense = planner.ModelFacts(True, 0.05, 1_000_000, sparse_layers=("Dense",))
    p = planner.plan(target, only_dense)
    assert "sparse" in p.chain_names and "sparse+int8" not in p.chain_names
    assert any("int8 keeps dense" in n for n in p.notes)
    # neither channels nor weights to prune: int8 alone stays, even if it looks too big
    nothing = planner.ModelFacts(False, 1.0, 1_000_000, sparse_layers=())
    p = planner.plan(Target.parse("int8, <=0.2x bytes"), nothing)
    assert p.chain_names == ["int8"]
    assert not any("dropped int8" in n for n in p.notes)
    with pytest.raises(errors.InvalidArgumentError, match="FLOPs can only fall by pruning"):
        planner.plan(Target.parse("flops<=0.5"), nothing)
    assert planner.model_facts(tiny_models_conv()).sparse_layers == ("Conv2D", "Conv2D")


# -- one proxy trial ------------------------------------------------------------------------


def test_sparse_int8_trial_writes_a_verified_file_smaller_than_dense_int8(
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    model, splits_ = trained
    built = []
    build = candidate.build
    monkeypatch.setattr(
        candidate, "build", lambda *a, **k: built.append(build(*a, **k)) or built[-1]
    )
    trial, data = tiny_proxy(model, splits_, "<=0.2x bytes", tmp_path)
    out = trial({"chain": "sparse+int8", "sparsity": 0.8, "lr_factor": 0.3}, trial_seed=3)
    (cand,) = built
    assert out["mode"] == "int8" and out["flops_ratio"] == 1.0
    assert out["sparsity"] == pytest.approx(0.8, abs=0.005) == cand.sparsity
    assert out["params_ratio"] < 0.35  # 80 % of the 94 % of weights in conv1 and conv2 are 0
    # the file: verified against the Keras candidate, the pruned kernels stored sparse
    with open(out["tflite"], "rb") as f:
        content = f.read()
    check = tflite_verify.verify(cand.model, content, data.x_verify, mode="int8", check_child=False)
    assert check.passed
    kernels = sparsity.tflite_kernel_sparsity(content)
    stored = [k for k in kernels if k.stored_sparse]
    assert len(stored) == 2 and all(0.795 <= k.sparsity <= 0.81 for k in stored)
    plain = tflite_export.convert(cand.model, "int8", representative_data=data.x_rep)
    assert out["bytes"] < 0.8 * len(plain)


def test_sparse_int8_keeps_hidden_dense_layers_dense_so_the_file_loads(tmp_path):
    # XNNPACK refuses an int8 FULLY_CONNECTED stored sparse (test_weight_sparse): the
    # int8 chain leaves the hidden Dense layer dense and the float chain prunes it.
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((16, 16, 1))
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c0")(inp)
    h = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="c1")(h)
    h = L.Dense(48, activation="relu", name="fc")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, L.Dense(4, name="logits")(h))
    x, y = tiny_models.quadrant_data(300, seed=0, size=16)
    data = splits.make_search_data(x, y, seed=0)
    point = {"sparsity": 0.8, "lr_factor": 1.0}
    common = {"train_config": FAST["train_config"], "steps": 6}
    fp = sparse_build.build({"chain": "sparse", **point}, model, model, data, **common)
    assert {k.name: round(k.sparsity, 2) for k in sparsity.keras_kernel_sparsity(fp.model)}[
        "fc/kernel"
    ] == 0.8
    cand = sparse_build.build({"chain": "sparse+int8", **point}, model, model, data, **common)
    kernels = {k.name: k.sparsity for k in sparsity.keras_kernel_sparsity(cand.model)}
    assert kernels["fc/kernel"] == 0 and kernels["c1/kernel"] == pytest.approx(0.8, abs=0.005)
    res = candidate.export(
        cand.model, "int8", str(tmp_path / "m.tflite"), data, child_check=True, sparse=True
    )
    stored = {k.name for k in sparsity.tflite_kernel_sparsity(res.path) if k.stored_sparse}
    assert len(stored) == 1 and res.report.passed


# -- end to end -----------------------------------------------------------------------------


#: The byte goals' chains before the int4 ones (tests/test_auto_int4.py covers those): four
#: trials then reach a sparse chain.
NO_INT4 = (("int8", "prune", "prune+int8", "sparse", "sparse+int8"), "test")


def test_compress_to_a_fifth_of_the_bytes_searches_every_byte_chain(
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    model, data = trained
    monkeypatch.setitem(planner.RULES, "bytes_ratio", NO_INT4)
    result = compress(model, data, "<=0.2x bytes", str(tmp_path), max_trials=4, seed=0, **FAST)
    rep = json.load(open(result.report_path))
    assert rep["plan"]["space"][0]["values"] == ["prune", "prune+int8", "sparse", "sparse+int8"]
    # the pruning chains' file sizes were measured on a pruned model (storage_probe)
    storage = json.load(open(tmp_path / "dense.storage.json"))["storage"]
    assert set(storage["prune_bytes"]) == {"float", "int8"}
    assert any("channel-pruned int8 file is" in n for n in rep["plan"]["notes"])
    rows = [r for r in rep["trials"] if r["chain"] in SPARSE]
    assert rows, [r["params"] for r in rep["trials"]]
    for r in rows:
        assert r["status"] == "complete" and set(r["params"]) == {"chain", "sparsity", "lr_factor"}
        assert r["sparsity"] == pytest.approx(r["params"]["sparsity"], abs=0.005)
    assert os.path.exists(result.tflite_path)
    with open(result.tflite_path + ".sha256") as f:
        assert f.read().split()[0] == rep["final"]["sha256"]


def test_compress_builds_a_sparse_final_model(trained, tmp_path, monkeypatch):  # noqa: F811
    model, data = trained
    real = planner.model_facts
    # Channel pruning off: the byte goal is then left to the sparse chains (int8 alone,
    # ~0.28x, is dropped by the estimate), so the final build is a sparse one.
    monkeypatch.setattr(
        planner,
        "model_facts",
        lambda *a, **k: dataclasses.replace(real(*a, **k), prunable=False, blocked="test"),
    )
    monkeypatch.setitem(planner.RULES, "bytes_ratio", NO_INT4)
    result = compress(model, data, "<=0.2x bytes", str(tmp_path), max_trials=3, seed=0, **FAST)
    rep = json.load(open(result.report_path))
    assert rep["plan"]["space"][0]["values"] == ["sparse", "sparse+int8"]
    final = rep["final"]
    assert final["chain"] in SPARSE and final["int8_method"] in (None, "ptq")
    assert final["sparsity"] == pytest.approx(final["params"]["sparsity"], abs=0.005)
    # the deployable file stores the pruned kernels sparse and agrees with the final model
    with open(result.tflite_path, "rb") as f:
        content = f.read()
    assert sum(k.stored_sparse for k in sparsity.tflite_kernel_sparsity(content)) == 2
    mode = final["figures"]["mode"]
    x_check = data.x_train[:200]
    assert tflite_verify.verify(result.model, content, x_check, mode=mode, check_child=False).passed
    dense_file = tflite_export.convert(result.model, mode, representative_data=x_check)
    assert len(content) < 0.8 * len(dense_file)
