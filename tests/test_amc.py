"""AMC's DDPG search: action bounding, state embedding, learning, resumption, channel adapter."""

import json

import numpy as np
import pytest

from pocketflow_tf import channel_graph, errors
from pocketflow_tf.compat import keras
from pocketflow_tf.hp_optimizers import amc, base, ddpg
from pocketflow_tf.learners.channel import allocation, amc_search


def _layers(flops, c=16):
    return [
        amc.LayerSpec(f"l{i}", i, c, c, 3, 1 + i % 2, 64 // (1 + i % 2), float(f), float(f) / 8)
        for i, f in enumerate(flops)
    ]


def _linear(layers):
    total = sum(ly.flops for ly in layers)
    return lambda keeps: sum(ly.flops * keeps[ly.key] for ly in layers) / total


def _chain(layers):
    """FLOPs of a plain chain: layer t scales with keep[t-1] * keep[t] (not linear)."""
    total = sum(ly.flops for ly in layers)

    def resource(keeps):
        cost, prev = 0.0, 1.0
        for ly in layers:
            cost += ly.flops * prev * keeps[ly.key]
            prev = keeps[ly.key]
        return cost / total

    return resource


def _keeps(layers, params):
    return {ly.key: params[f"keep:{ly.key}"] for ly in layers}


def _run(opt, layers, objective, episodes):
    proposals = []
    for _ in range(episodes):
        trial = opt.ask()
        proposals.append(trial.params)
        opt.tell(trial.number, objective(_keeps(layers, trial.params)))
    return proposals


# -- action bounding -------------------------------------------------------------------------


@pytest.mark.parametrize("make_resource", [_linear, _chain])
@pytest.mark.parametrize("discrete", [False, True])
def test_every_proposal_meets_the_budget(make_resource, discrete):
    rng = np.random.default_rng(0)
    for case in range(3):
        layers = _layers(rng.uniform(1.0, 10.0, 6))
        resource = make_resource(layers)
        choices = None
        if discrete:  # rounded channel counts: c/16 for c in multiples of 4
            choices = {ly.key: [c / 16 for c in (4, 8, 12, 16)] for ly in layers}
        budget = float(rng.uniform(0.2, 0.7))
        opt = amc.AMCSearch(
            amc.keep_space(layers, 0.25),
            seed=case,
            layers=layers,
            budget=budget,
            resource=resource,
            choices=choices,
            warmup=5,
            hidden=(16, 16),
            updates_per_episode=2,
        )
        # random, large actor weights: actions far outside [0, 1] before clipping
        for p in opt.agent.actor.params:
            p[:] = rng.normal(0.0, 3.0, p.shape)
        for number, params in enumerate(_run(opt, layers, lambda k: float(rng.random()), 40)):
            keeps = _keeps(layers, params)
            assert resource(keeps) <= budget + 1e-9, (case, number, keeps)
            if discrete:
                assert all(k in choices[key] for key, k in keeps.items())
        assert resource(_keeps(layers, opt.policy())) <= budget + 1e-9


def test_bounding_spends_the_budget_on_the_last_layer():
    layers = _layers([1.0, 1.0, 1.0])
    resource = _linear(layers)
    opt = amc.AMCSearch(
        amc.keep_space(layers, 0.2), layers=layers, budget=0.5, resource=resource, warmup=0
    )
    # the untrained actor wants about 0.6 everywhere: the last layer gets what is left
    keeps = _keeps(layers, opt.policy())
    assert keeps["l0"] == pytest.approx(0.6, abs=0.01) == keeps["l1"]
    assert keeps["l2"] == pytest.approx(1.5 - keeps["l0"] - keeps["l1"], abs=1e-9)
    assert keeps["l2"] < 0.35


def test_impossible_budget_fails_before_any_work():
    layers = _layers([1.0, 2.0, 3.0])
    calls = []

    def resource(keeps):
        calls.append(dict(keeps))
        return _linear(layers)(keeps)

    with pytest.raises(errors.InvalidArgumentError) as e:
        amc.AMCSearch(amc.keep_space(layers, 0.3), layers=layers, budget=0.2, resource=resource)
    assert e.value.name == "budget" and e.value.value == 0.2
    assert ">= 0.3 " in str(e.value)
    assert len(calls) == 1  # only the reachability check ran
    choices = {ly.key: [0.5, 1.0] for ly in layers}
    with pytest.raises(errors.InvalidArgumentError, match=r">= 0\.5 "):
        amc.AMCSearch(
            amc.keep_space(layers, 0.3),
            layers=layers,
            budget=0.4,
            resource=resource,
            choices=choices,
        )


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"reward": "accuracy"}, "reward", "accuracy"),
        ({"budget": 1.5}, "budget", 1.5),
        ({"warmup": -1}, "warmup", -1),
        ({"sigma_decay": 0.0}, "sigma_decay", 0.0),
        ({"error_from": "logits"}, "error_from", "logits"),
        ({"choices": {"l0": [0.1, 1.0]}}, "choices['l0']", [0.1, 1.0]),
        ({"choices": {"nope": [1.0]}}, "choices", "nope"),
        ({"hidden": (0,)}, "hidden", (0,)),
        ({"layers": []}, "layers", []),
    ],
)
def test_bad_arguments_echo_the_value(kwargs, name, value):
    layers = _layers([1.0, 2.0])
    args = {"layers": layers, "budget": 0.5, "resource": _linear(layers), **kwargs}
    with pytest.raises(errors.InvalidArgumentError) as e:
        amc.AMCSearch(amc.keep_space(layers, 0.2), **args)
    assert e.value.name == name and e.value.value == value
    assert repr(value) in str(e.value)


def test_space_must_match_the_layers():
    layers = _layers([1.0, 2.0])
    with pytest.raises(errors.InvalidArgumentError) as e:
        amc.AMCSearch(
            amc.keep_space(layers[::-1], 0.2),
            layers=layers,
            budget=0.5,
            resource=_linear(layers),
        )
    assert e.value.name == "space" and e.value.value == ["keep:l1", "keep:l0"]
    with pytest.raises(errors.InvalidArgumentError, match="min_keep"):
        amc.keep_space(layers, 0.0)


# -- state embedding -------------------------------------------------------------------------


def test_embedding_shape_range_and_dynamics():
    layers = _layers([4.0, 1.0, 3.0, 2.0, 5.0])
    resource = _linear(layers)
    keeps = {"l0": 0.5, "l1": 1.0, "l2": 0.3, "l3": 0.8, "l4": 0.6}
    emb = amc.embedding(layers, keeps, resource)
    assert emb.shape == (5, len(amc.FEATURES)) == (5, 10)
    assert emb.min() >= 0.0 and emb.max() <= 1.0
    col = {name: emb[:, i] for i, name in enumerate(amc.FEATURES)}
    assert col["index"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert col["flops"].tolist() == [0.75, 0.0, 0.5, 0.25, 1.0]
    # resource already removed: grows after every pruned layer, not after the unpruned l1
    np.testing.assert_allclose(col["reduced"], [0.0, 2 / 15, 2 / 15, 4.1 / 15, 4.5 / 15])
    # FLOPs still to be decided shrink as the walk goes on
    np.testing.assert_allclose(col["remaining"], [11 / 15, 10 / 15, 7 / 15, 5 / 15, 0.0])
    assert col["prev_action"].tolist() == [1.0, 0.5, 1.0, 0.3, 0.8]
    # a row only depends on earlier layers' actions
    other = amc.embedding(layers, {**keeps, "l3": 0.2, "l4": 0.2}, resource)
    np.testing.assert_array_equal(other[:4], emb[:4])
    assert other[4, -1] == 0.2


# -- learning ---------------------------------------------------------------------------------

# Ten layers with different FLOPs and sensitivities; pruning layer i costs s_i * (1 - keep_i)^2.
_F = np.array([1, 6, 2, 8, 3, 1, 5, 2, 7, 4], float)
_S = np.array([4, 0.4, 2, 0.2, 1.5, 3, 0.6, 2.5, 0.3, 1], float)


def _synthetic_score(keeps):
    loss = sum(s * (1 - keeps[f"l{i}"]) ** 2 for i, s in enumerate(_S))
    return 1.0 - loss / _S.sum()


def _synthetic_optimum(budget, low):
    """KKT: 2 s_i (1 - k_i) = lam f_i, clipped to [low, 1]; lam by bisection on the budget."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        lam = 0.5 * (lo + hi)
        k = np.clip(1 - lam * _F / (2 * _S), low, 1)
        lo, hi = (lam, hi) if (_F * k).sum() / _F.sum() > budget else (lo, lam)
    k = np.clip(1 - hi * _F / (2 * _S), low, 1)
    return _synthetic_score({f"l{i}": v for i, v in enumerate(k)})


def test_agent_learns_to_prune_cheap_to_lose_expensive_layers():
    layers = [amc.LayerSpec(f"l{i}", i, 16, 16, 3, 1, 64, f, f) for i, f in enumerate(_F)]
    resource = _linear(layers)
    opt = amc.AMCSearch(
        amc.keep_space(layers, 0.2),
        seed=0,
        layers=layers,
        budget=0.5,
        resource=resource,
        warmup=30,
    )
    _run(opt, layers, _synthetic_score, 200)
    uniform = _synthetic_score({ly.key: 0.5 for ly in layers})  # 0.75
    optimum = _synthetic_optimum(0.5, 0.2)  # 0.956
    best = opt.best().value
    policy = _synthetic_score(_keeps(layers, opt.policy()))
    # Untrained (the actor never updated), the same run reaches best 0.893 and its policy
    # 0.802: these bounds need learning, not the exploration noise alone.
    assert best >= uniform + 0.15
    assert best >= optimum - 0.045, (best, optimum)
    assert policy >= optimum - 0.05, (policy, optimum)
    # the learnt policy prunes the expensive, insensitive layers hardest
    keeps = _keeps(layers, opt.policy())
    assert keeps["l3"] < 0.4 and keeps["l8"] < 0.5 and keeps["l0"] > 0.8 and keeps["l5"] > 0.8


def test_rewards():
    layers = _layers([100.0, 100.0])
    opt = amc.AMCSearch(
        amc.keep_space(layers, 0.2),
        layers=layers,
        budget=0.9,
        resource=_linear(layers),
        reward="error_log_flops",
    )
    small, big = {"l0": 0.3, "l1": 0.3}, {"l0": 0.9, "l1": 0.9}
    # same accuracy: fewer FLOPs earn more; same FLOPs: higher accuracy earns more
    assert opt.episode_reward(small, 0.9) > opt.episode_reward(big, 0.9)
    assert opt.episode_reward(small, 0.95) > opt.episode_reward(small, 0.9)
    opt.reward = "error"
    assert opt.episode_reward(small, 0.9) == pytest.approx(-0.1)
    assert opt.episode_reward(small, -2.5) == -2.5  # a negated loss: error = the loss


# -- resumption -------------------------------------------------------------------------------


def test_json_round_trip_mid_run_continues_identically():
    layers = _layers([3.0, 1.0, 4.0, 1.0, 5.0])
    resource = _chain(layers)
    kwargs = {"warmup": 6, "hidden": (32, 32), "sigma_decay": 0.95}

    def make():
        return amc.AMCSearch(
            amc.keep_space(layers, 0.2),
            seed=3,
            layers=layers,
            budget=0.4,
            resource=resource,
            **kwargs,
        )

    def objective(keeps):
        return _synthetic_score({**{f"l{i}": 1.0 for i in range(10)}, **keeps})

    straight = make()
    expected = _run(straight, layers, objective, 25)
    pending = straight.ask()
    expected_after = [pending.params]
    straight.tell(pending.number, objective(_keeps(layers, pending.params)))
    expected_after += _run(straight, layers, objective, 10)

    first = make()
    assert _run(first, layers, objective, 25) == expected
    pending = first.ask()  # asked before the snapshot, told after the restore
    state = json.loads(json.dumps(first.get_state()))
    resumed = amc.AMCSearch.from_state(state, resource=resource)
    assert base.get("amc") is amc.AMCSearch
    assert resumed.layers == layers and resumed.warmup == 6
    for a, b in zip(
        first.agent.actor.params + first.agent.critic.params,
        resumed.agent.actor.params + resumed.agent.critic.params,
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    got = [resumed.pending[pending.number]]
    resumed.tell(pending.number, objective(_keeps(layers, pending.params)))
    got += _run(resumed, layers, objective, 10)
    assert got == expected_after
    for a, b in zip(straight.agent.actor.params, resumed.agent.actor.params, strict=True):
        np.testing.assert_array_equal(a, b)


# -- the channel-pruning adapter -------------------------------------------------------------


def _conv_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(24, 3, padding="same", name="c3")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x))


def test_amc_ratio_search_returns_allowed_counts_within_the_flops_target():
    model = _conv_model()
    graph = channel_graph.build(model)
    fm = allocation.FlopsModel.build(model, graph)
    choices = allocation.choices_for(graph, 4)
    sizes = {allocation.key_of(g): g.size for g in graph.prunable_groups()}
    weight = {"c1": 3.0, "c2": 0.5, "c3": 1.0}
    evaluated = []

    def proxy(counts):
        return 1.0 - sum(w * (1 - counts[k] / sizes[k]) ** 2 for k, w in weight.items())

    def evaluate(counts):
        evaluated.append(dict(counts))
        return proxy(counts)

    problem = allocation.AllocationProblem(fm, 0.45, 4, choices, evaluate)
    specs = {s.key: s for s in amc_search.layer_specs(problem)}
    assert list(specs) == ["c1", "c2", "c3"] == list(choices)
    assert (specs["c2"].c_in, specs["c2"].c_out, specs["c2"].kernel) == (16, 16, 3)
    assert (specs["c2"].stride, specs["c2"].feature_size, specs["c1"].c_in) == (2, 144, 3)
    assert specs["c2"].flops > fm.layer_costs["c2"].flops  # its BN and c3's input too

    search = amc_search.amc_ratio_search(episodes=24, seed=0, warmup=8, hidden=(16, 16))
    counts = search(problem)
    assert set(counts) == set(choices)
    assert all(counts[k] in choices[k] for k in counts)
    assert fm.flops(counts) <= 0.45 * fm.dense_flops
    assert all(fm.flops(c) <= 0.45 * fm.dense_flops for c in evaluated)
    assert proxy(counts) == max(proxy(c) for c in evaluated)
    # repeated plans are scored once
    assert len(evaluated) == len({tuple(sorted(c.items())) for c in evaluated}) <= 24
    assert len(search.optimizer.history) == 24
    with pytest.raises(errors.InvalidArgumentError, match="episodes"):
        amc_search.amc_ratio_search(episodes=0)


def test_ddpg_rejects_bad_settings():
    with pytest.raises(errors.InvalidArgumentError) as e:
        ddpg.DDPG(4, tau=2.0)
    assert e.value.name == "tau" and "2.0" in str(e.value)
