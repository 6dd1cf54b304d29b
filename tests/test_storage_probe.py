"""The storage probe: file-size ratios measured on the user's model, and the planner using them.

The model is test_auto's 16x16 conv net (untrained: a file's size depends on which weights
are zero, not on their values): conv0 (144 weights) and the logits stay dense in the sparse
chains, conv1 (4,608) and conv2 (9,216) are pruned.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocketflow_tf import errors, int4_export, sparsity, tflite_export
from pocketflow_tf.learners.auto import (
    AutoLearner,
    Target,
    planner,
    proxy,
    sparse_build,
    storage_probe,
)
from tests.test_auto import conv_net


@pytest.fixture(scope="module")
def probed():
    model = conv_net()
    x = np.random.default_rng(0).random((16, 16, 16, 1), dtype=np.float32)
    dense = tflite_export.tflite_size(tflite_export.convert(model))[0]
    facts = storage_probe.measure(
        model, planner.allowed_chains(Target.parse("10x smaller")), x, dense
    )
    return model, x, dense, facts


@pytest.mark.parametrize("chain", ["sparse", "sparse+int8"])
def test_the_measured_line_predicts_a_sparse_file_between_its_points(probed, chain):
    model, x, dense, facts = probed
    c = planner.CHAINS[chain]
    pruned = storage_probe.magnitude_pruned(model, sparse_build.layer_ratios(model, c, 0.85))
    kernels = {k.name: k.sparsity for k in sparsity.keras_kernel_sparsity(pruned)}
    assert kernels["conv1/kernel"] == pytest.approx(0.85, abs=1e-3)
    assert kernels["conv2/kernel"] == pytest.approx(0.85, abs=1e-3)
    assert kernels["conv0/kernel"] == 0 and kernels["logits/kernel"] == 0
    content = tflite_export.convert(pruned, c.export_mode, representative_data=x, sparse=True)
    actual = tflite_export.tflite_size(content)[0] / dense
    fixed, per_kept, measured = planner.sparse_line(
        c.export_mode, planner.ModelFacts(True, 0.1, sparse_bytes=facts.sparse_bytes)
    )
    assert measured
    assert fixed + per_kept * 0.15 == pytest.approx(actual, rel=0.05)
    # the ResNet-20 constant, which the probe replaces, is far off on this net
    assert planner.SPARSE_BYTES_FACTOR[c.export_mode] * 0.15 != pytest.approx(actual, rel=0.2)


def test_export_ratios_are_the_dense_files(probed):
    model, x, dense, facts = probed
    assert set(facts.export_ratios) == {"int8", "int4"}
    int8 = tflite_export.convert(model, "int8", representative_data=x)
    int4 = int4_export.convert(model, 4, x).content
    assert facts.export_ratios["int8"] == pytest.approx(len(int8) / dense, rel=1e-3)
    assert facts.export_ratios["int4"] == pytest.approx(len(int4) / dense, rel=1e-3)
    assert facts.export_ratios["int4"] < facts.export_ratios["int8"] < 1
    assert storage_probe.StorageFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    lines = storage_probe.describe(facts)
    assert len(lines) == 4 and all(line.startswith("measured: ") for line in lines)


def test_a_refused_probe_export_keeps_the_constant_with_a_note(probed, monkeypatch):
    model, x, dense, _ = probed

    def refuse(*a, **k):
        raise RuntimeError("converter says no")

    monkeypatch.setattr(int4_export, "convert", refuse)
    facts = storage_probe.measure(model, [planner.CHAINS["int4"], planner.CHAINS["int8"]], x, dense)
    assert set(facts.export_ratios) == {"int8"} and not facts.sparse_bytes
    assert len(facts.notes) == 1 and "int4 probe export failed" in facts.notes[0]
    assert "converter says no" in facts.notes[0]
    assert (
        planner.export_ratio(
            planner.CHAINS["int4"], planner.ModelFacts(True, 0.1, export_ratios=facts.export_ratios)
        )
        == planner.INT4_BYTES_RATIO
    )


@pytest.mark.parametrize("bad", [(0.9,), (0.9, 0.9), (0.5, 1.0), (-0.1, 0.5)])
def test_probe_sparsities_are_checked(probed, bad):
    model, x, dense, _ = probed
    with pytest.raises(errors.InvalidArgumentError, match="sparsities") as e:
        storage_probe.measure(model, [planner.CHAINS["sparse"]], x, dense, sparsities=bad)
    assert repr(bad) in str(e.value) or str(bad) in str(e.value)


def test_a_keras3_model_is_refused_with_its_conversion(probed):
    import keras as keras3

    _, x, dense, _ = probed
    m3 = keras3.Sequential([keras3.Input((16, 16, 1)), keras3.layers.Conv2D(4, 3)])
    with pytest.raises(errors.InvalidArgumentError, match="model.*Sequential.*to_framework"):
        storage_probe.measure(m3, [planner.CHAINS["sparse"]], x, dense)


def test_fit_line_recovers_a_line_and_never_goes_negative():
    assert storage_probe.fit_line([(0.5, 0.6), (0.7, 0.44), (0.9, 0.28)]) == pytest.approx(
        (0.2, 0.8)
    )
    assert storage_probe.fit_line([(0.5, 0.3), (0.9, 0.31)]) == (pytest.approx(0.305), 0.0)


# -- the planner with measured ratios -------------------------------------------------------


def test_measured_sparse_line_drops_chains_the_constant_would_search():
    goal = Target.parse("10x smaller")
    guessed = planner.ModelFacts(True, 0.05, dense_bytes=100_000)
    assert {"sparse", "sparse+int8"} <= set(planner.plan(goal, guessed).chain_names)
    # MobileNet-v1's measured lines: 0.175x / 0.21x at the top sparsity 0.97
    measured = planner.ModelFacts(
        True,
        0.05,
        dense_bytes=100_000,
        sparse_bytes={"float": (0.143, 1.09), "int8": (0.197, 0.435)},
    )
    p = planner.plan(goal, measured)
    assert "sparse" not in p.chain_names and "sparse+int8" not in p.chain_names
    assert any("dropped sparse: float sparse storage" in n and "(measured)" in n for n in p.notes)


def test_measured_sparse_line_sets_the_sparsity_range():
    facts = planner.ModelFacts(
        True, 0.05, dense_bytes=100_000, sparse_bytes={"float": (0.05, 1.0), "int8": (0.06, 0.5)}
    )
    (low, high), notes = planner.sparsity_range(
        Target(bytes_ratio=0.2), facts, [planner.CHAINS["sparse"], planner.CHAINS["sparse+int8"]]
    )
    # int8: 0.9 * (0.06 + 0.5 (1 - s)) <= 0.2  <=>  s >= 1 - (0.2 / 0.9 - 0.06) / 0.5
    assert low == pytest.approx(1 - (0.2 / 0.9 - 0.06) / 0.5, abs=1e-4) and high == 0.97
    assert "measured on this model" in notes[0] and "int8 sparse file" in notes[0]


def test_measured_int4_ratio_sets_the_parameter_keep_top():
    goal = Target.parse("10x smaller")
    chains = [planner.CHAINS["prune+int8"], planner.CHAINS["prune+int4"]]
    guessed = planner.ModelFacts(True, 0.05, dense_bytes=1000, min_params_keep=0.02)
    measured = planner.ModelFacts(
        True,
        0.05,
        dense_bytes=1000,
        min_params_keep=0.02,
        export_ratios={"int8": 0.377, "int4": 0.263},
    )
    assert planner.params_keep_range(goal, guessed, chains)[0][1] == pytest.approx(0.1 * 1.1 / 0.16)
    (_, top), notes = planner.params_keep_range(goal, measured, chains)
    assert top == pytest.approx(0.1 * 1.1 / 0.263, abs=1e-5)
    assert "x0.263 in int4 (measured)" in notes[0]
    dropped = planner.plan(goal, measured).notes
    assert any("int8 alone (measured) gives ~0.377x" in n for n in dropped)


# -- the learner ----------------------------------------------------------------------------


def test_learner_measures_once_per_work_directory(probed, tmp_path, monkeypatch):
    model, x, dense, _ = probed
    path = tmp_path / "dense.tflite"
    path.write_bytes(tflite_export.convert(model))
    reference = proxy.Reference(str(path), dense, dense, 0.9, 0.9, 1, 1)
    data = type("Data", (), {"x_rep": x})()
    calls = []
    real = storage_probe.measure
    monkeypatch.setattr(storage_probe, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    learner = AutoLearner(auto_target="10x smaller", auto_dir=str(tmp_path))
    first = learner._storage(model, data, reference)
    again = AutoLearner(auto_target="10x smaller", auto_dir=str(tmp_path))._storage(
        model, data, reference
    )
    assert calls == [1] and again == first
    assert json.load(open(tmp_path / "dense.storage.json"))["key"]["chains"] == [
        c.name for c in planner.allowed_chains(Target.parse("10x smaller"))
    ]
    # another target's chains: measured again
    AutoLearner(auto_target="int8, 4x smaller", auto_dir=str(tmp_path))._storage(
        model, data, reference
    )
    assert calls == [1, 1]
