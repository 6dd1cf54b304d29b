"""Channel allocation searched by TPE / GP / random: bounding, search contract, learner hook."""

import numpy as np
import pytest

from pocketflow_tf import accounting, errors
from pocketflow_tf.learners.channel import ChannelPrunedLearner, allocation, optimizer_search
from tests.tiny_models import small_resnet


@pytest.fixture
def images():
    return np.random.default_rng(0).random((96, 12, 12, 1)).astype("float32")


def _problem(keep=0.6, evaluate=None):
    fm = allocation.FlopsModel.build(small_resnet())
    choices = allocation.choices_for(fm.graph, 4)  # 4, 8, 12, 16 for each of stem, a, c
    return allocation.AllocationProblem(fm, keep, 4, choices, evaluate)


def _maximal(p, counts):
    """Within the target, and no single step up anywhere keeps it."""
    fm, target = p.flops_model, p.flops_keep * p.flops_model.dense_flops
    if fm.flops(counts) > target:
        return False
    for key, options in p.choices.items():
        i = options.index(counts[key])
        if i + 1 < len(options) and fm.flops({**counts, key: options[i + 1]}) <= target:
            return False
    return True


def test_fitting_meets_the_target_and_uses_the_budget():
    p = _problem()
    full = {k: c[-1] for k, c in p.choices.items()}
    smallest = {k: c[0] for k, c in p.choices.items()}
    for proposal in (full, smallest, {"stem": 8, "a": 16, "c": 8}, {"stem": 16, "a": 4, "c": 4}):
        fitted = optimizer_search.fit_to_flops(p, proposal)
        assert _maximal(p, fitted), (proposal, fitted)
    # Cuts go to the group keeping the largest fraction: 'a' (all of it) before 'stem'/'c'.
    fitted = optimizer_search.fit_to_flops(p, {"stem": 12, "a": 16, "c": 12})  # 0.73x FLOPs
    assert fitted["a"] < 16
    # A maximal plan is left alone.
    assert optimizer_search.fit_to_flops(p, fitted) == fitted
    with pytest.raises(errors.InvalidArgumentError, match="cp_preserve_ratio"):
        optimizer_search.fit_to_flops(_problem(keep=0.01), full)


@pytest.mark.parametrize("name", optimizer_search.OPTIMIZERS)
def test_each_optimiser_returns_its_best_feasible_plan(name):
    best = {"stem": 16, "a": 8, "c": 12}  # the known optimum of this score
    calls = []

    def evaluate(counts):
        calls.append(dict(counts))
        return -float(sum(abs(counts[k] - v) for k, v in best.items()))

    p = _problem(evaluate=evaluate)
    assert p.flops_model.flops(best) <= 0.6 * p.flops_model.dense_flops
    search = optimizer_search.optimizer_ratio_search(name, trials=25, seed=3)
    counts = search(p)
    assert len(search.history) == 25
    assert all(_maximal(p, h["counts"]) for h in search.history)
    top = max(h["score"] for h in search.history)
    assert evaluate(counts) == top == search.history[-1]["best"]
    curve = [h["best"] for h in search.history]
    assert curve == sorted(curve)  # the best-so-far curve never falls
    distinct = {tuple(sorted(h["counts"].items())) for h in search.history}
    assert len(calls) - 1 == len(distinct)  # repeats are scored once (+1: the check above)
    again = optimizer_search.optimizer_ratio_search(name, trials=25, seed=3)
    assert again(p) == counts  # seeded: the same search again


def test_through_the_learner(images):
    search = optimizer_search.optimizer_ratio_search("random", trials=6, seed=0)
    lrn = ChannelPrunedLearner(
        cp_prune_option="auto", cp_preserve_ratio=0.6, cp_channel_round=4, ratio_search=search
    )
    model = small_resnet()
    thin = lrn.prune(model, images, np.arange(len(images)) % 3)
    ratio = accounting.profile_model(thin).total_flops / accounting.profile_model(model).total_flops
    assert ratio <= 0.6 + 1e-9
    assert len(search.history) == 6
    kept = {g["key"]: g["kept"] for g in lrn.report["groups"]}
    assert kept == max(search.history, key=lambda h: h["score"])["counts"]


def test_allocation_problem_is_the_one_auto_searches(images):
    labels = small_resnet().predict(images, verbose=0).argmax(-1)  # the model's own answers
    lrn = ChannelPrunedLearner(cp_prune_option="auto", cp_preserve_ratio=0.6)
    p = lrn.allocation_problem(small_resnet(), images, labels)
    assert p.flops_keep == 0.6 and set(p.choices) == {"stem", "a", "c"}
    full = {k: c[-1] for k, c in p.choices.items()}
    assert p.evaluate(full) > p.evaluate({k: c[0] for k, c in p.choices.items()})
    with pytest.raises(errors.InvalidArgumentError, match="cp_prune_option"):
        ChannelPrunedLearner().allocation_problem(small_resnet(), images, labels)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"optimizer": "anneal"}, "cp_ratio_search"),
        ({"trials": 0}, "cp_search_trials"),
        ({"trials": True}, "cp_search_trials"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings_are_refused(kwargs, name):
    with pytest.raises(errors.InvalidArgumentError) as e:
        optimizer_search.optimizer_ratio_search(**kwargs)
    assert e.value.name == name
