"""Automated compression's int4 chains: planning, one proxy trial, one tiny final build.

The model is test_auto's trained 16x16 conv net (three Conv2D and a Dense: every kernel can
be stored as int4).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from pocketflow_tf import int4_export, tflite_export, tflite_verify
from pocketflow_tf.learners.auto import Target, candidate, compress, planner
from tests.test_auto import FAST, trained  # noqa: F401  (the module-scoped fixture)
from tests.test_auto_sparse import tiny_proxy

INT4 = {"int4", "prune+int4"}


def test_byte_goals_plan_int4_chains_and_speed_and_int8_goals_do_not():
    facts = planner.ModelFacts(True, 0.05, dense_bytes=1_000_000)
    p = planner.plan(Target.parse("<=0.2x bytes"), facts)
    assert INT4 <= set(p.chain_names)
    # int4 alone (~0.16x) cannot reach 0.1x: the estimate drops it, pruning + int4 stays.
    p = planner.plan(Target.parse("<=0.1x bytes"), facts)
    assert "prune+int4" in p.chain_names and "int4" not in p.chain_names
    assert any("dropped int4: int4 alone" in n for n in p.notes)
    for text in ("2x faster", "flops<=0.5", "int8", "int8, <=0.1x bytes"):
        assert not INT4 & set(planner.plan(Target.parse(text), facts).chain_names), text
    chain = planner.CHAINS["prune+int4"]
    assert chain.int8 and chain.prunes and chain.weight_bits == 4
    assert chain.export_mode == "int4" and chain.bytes_ratio == planner.INT4_BYTES_RATIO
    # A byte goal's FLOPs keep top follows the most compact pruning chain (int4 here).
    (low, high), notes = planner.flops_keep_range(
        Target(bytes_ratio=0.1), facts, [planner.CHAINS["prune+int8"], chain]
    )
    assert high == pytest.approx(0.1 * planner.PRUNE_BYTES_MARGIN / 0.16)
    assert "x0.16 in int4" in notes[-1]


@pytest.mark.parametrize(
    "text, keep",
    [
        ("10x smaller", "params_keep"),
        ("under 300 kB", "params_keep"),
        ("int8, <=0.2x bytes", "params_keep"),
        ("5x faster", "flops_keep"),
        ("flops<=0.5, <=0.2x bytes", "flops_keep"),
        ("2x faster, <=0.2x bytes", "flops_keep"),
    ],
)
def test_byte_only_targets_prune_by_weights(text, keep):
    facts = planner.ModelFacts(True, 0.05, dense_bytes=1_000_000, min_params_keep=0.04)
    p = planner.plan(Target.parse(text), facts)
    other = {"params_keep", "flops_keep"} - {keep}
    assert keep in p.space.names and not other & set(p.space.names)
    assert (p.params_keep_range is None) == (keep == "flops_keep")
    assert (p.flops_keep_range is None) == (keep == "params_keep")
    if text == "10x smaller":
        # The top follows the most compact pruning chain (int4) with the margin.
        assert p.params_keep_range[1] == pytest.approx(0.1 * planner.PARAMS_BYTES_MARGIN / 0.16)
        assert any("parameter keep searched up to" in n for n in p.notes)
        assert planner.active_params(
            {"chain": "prune+int4", "params_keep": 0.6, "criterion": "l1", "lr_factor": 0.5}
        ) == {"chain": "prune+int4", "params_keep": 0.6, "criterion": "l1", "lr_factor": 0.5}
    # A goal below what pruning reaches keeps a small range just above it.
    low, high = planner.params_keep_range(
        Target(bytes_ratio=0.001), facts, [planner.CHAINS["prune+int4"]]
    )[0]
    assert low == pytest.approx(0.04 * 1.001) and high > low


def test_prune_int4_trial_writes_a_verified_int4_file(trained, tmp_path, monkeypatch):  # noqa: F811
    model, splits_ = trained
    checks = []  # the thresholds each verification ran with
    verify = tflite_verify.verify
    monkeypatch.setattr(
        tflite_verify,
        "verify",
        lambda *a, **k: checks.append(k.get("thresholds")) or verify(*a, **k),
    )
    trial, data = tiny_proxy(model, splits_, "<=0.2x bytes", tmp_path)
    # A byte-only target prunes by weights (the planner's space holds params_keep).
    assert "params_keep" in trial.plan.space.names
    params = {"chain": "prune+int4", "params_keep": 0.5, "criterion": "l1", "lr_factor": 0.3}
    out = trial(params, trial_seed=3)
    assert out["mode"] == "int4" and out["params_ratio"] <= 0.5
    assert out["params_keep_applied"] == 0.5 and out["flops_keep_applied"] == 1.0
    with open(out["tflite"], "rb") as f:
        content = f.read()
    stored = [t for _, _, t, _ in int4_export.kernel_types(content)]
    assert stored == ["INT4"] * 4
    assert all(n <= 15 for n in int4_export.kernel_levels(content))
    assert out["verify_agreement"] >= 0.95
    # A trial's post-training int4 file is checked at the trial thresholds (it may lose
    # accuracy by design; its own accuracy is what the trial scores).
    assert checks[1:] == [candidate.TRIAL_INT4_THRESHOLDS]  # [0]: the dense float file


def test_compress_builds_an_int4_final_model_by_ptq_or_4_bit_qat(
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    model, data = trained
    real = planner.model_facts
    # Only int4 chains: channel pruning off and the byte goal's other chains left out.
    monkeypatch.setattr(
        planner,
        "model_facts",
        lambda *a, **k: dataclasses.replace(real(*a, **k), prunable=False, blocked="test"),
    )
    monkeypatch.setitem(planner.RULES, "bytes_ratio", (("int4", "prune+int4"), "test"))
    budget = {**FAST, "int8_final": "auto", "qat_epochs": 1}
    result = compress(model, data, "<=0.3x bytes", str(tmp_path), max_trials=1, seed=0, **budget)
    rep = json.load(open(result.report_path))
    final = rep["final"]
    assert final["chain"] == "int4" and set(final["int8_options"]) == {"ptq", "qat"}
    assert final["figures"]["mode"] == "int4" and result.tflite_path.endswith(".int4.tflite")
    with open(result.tflite_path, "rb") as f:
        content = f.read()
    assert [t for _, _, t, _ in int4_export.kernel_types(content)] == ["INT4"] * 4
    # Verified against the model it returns (the QAT model when 4-bit QAT won).
    x_check = data.x_train[:200]
    assert tflite_verify.verify(
        result.model, content, x_check, mode="int8", check_child=False
    ).passed
    int8_file = tflite_export.convert(model, "int8", representative_data=x_check)
    assert len(content) < 0.75 * len(int8_file)
