"""AMC (He et al., ECCV 2018): a DDPG agent that sets per-layer keep ratios, one layer per step.

One trial of the ask/tell contract is one AMC *episode*: the agent walks the layers in order,
reads each layer's state embedding (:func:`embedding`), proposes a keep ratio (actor output
plus truncated-normal exploration noise), and *bounds* it so that the resource budget is
always met: layer ``t`` gets at most the largest keep for which the whole plan still fits the
budget with every earlier layer as chosen and every later layer at its minimum keep. The last
layer therefore always lands inside the budget, so every proposal is feasible and the told
score only has to rank accuracy. Every step of an episode receives the episode's reward (as
in AMC): ``-error``, ``-error*log(FLOPs)`` or ``-error*log(#params)``.

``_observe`` rebuilds the episode's states from the told keep ratios (the walk is
deterministic given the actions), stores the transitions and trains the agent with a
generator seeded by ``(seed, episode number)``, so a study restored from its JSON state
replays the same updates and continues with exactly the same proposals.

:func:`amc_ratio_search` plugs the agent into ``ChannelPrunedLearner(ratio_search=...)``.

Example:
    >>> layers = [LayerSpec(f"l{i}", i, 8, 8, 3, 1, 64, flops=f, params=f)
    ...           for i, f in enumerate([1.0, 3.0, 2.0])]
    >>> total = sum(ly.flops for ly in layers)
    >>> def resource(keeps):
    ...     return sum(ly.flops * keeps[ly.key] for ly in layers) / total
    >>> opt = AMCSearch(keep_space(layers, 0.2), seed=0, layers=layers, budget=0.5,
    ...                 resource=resource, warmup=2, hidden=(16, 16))
    >>> for _ in range(4):
    ...     t = opt.ask()
    ...     keeps = {ly.key: t.params[f"keep:{ly.key}"] for ly in layers}
    ...     _ = opt.tell(t.number, 1.0 - sum((1 - k) ** 2 for k in keeps.values()))
    ...     assert resource(keeps) <= 0.5 + 1e-9
    >>> len(opt.history)
    4
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pocketflow_tf import errors, options
from pocketflow_tf.hp_optimizers import base, ddpg
from pocketflow_tf.hp_optimizers import space as space_lib

REWARDS = ("error", "error_log_flops", "error_log_params")
ERROR_FROM = ("auto", "accuracy", "loss")
#: Columns of :func:`embedding`, in order.
FEATURES = (
    "index",
    "c_in",
    "c_out",
    "kernel",
    "stride",
    "feature_size",
    "flops",
    "reduced",
    "remaining",
    "prev_action",
)
_N_STATIC = 7


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What the agent knows about one prunable layer (or channel group).

    Attributes:
        key: Name of the layer; the search parameter is ``f"keep:{key}"``.
        index: Position in the walk.
        c_in: Input channels.
        c_out: Output channels (what the keep ratio prunes).
        kernel: Kernel size (``k`` of a ``k x k`` kernel; 1 for Dense).
        stride: Stride.
        feature_size: Spatial size of the input feature map (``H * W``; 1 for Dense).
        flops: FLOPs of the layer (of every layer the group touches, for a group).
        params: Parameters of the layer (likewise).

    Example:
        >>> LayerSpec("conv1", 0, 3, 16, 3, 1, 256, flops=221184.0, params=448.0).c_out
        16
    """

    key: str
    index: int
    c_in: int
    c_out: int
    kernel: int
    stride: int
    feature_size: int
    flops: float
    params: float


def keep_space(layers: Sequence[LayerSpec], min_keep: float = 0.2) -> space_lib.SearchSpace:
    """The search space of an AMC episode: one ``keep:<key>`` in ``[min_keep, 1]`` per layer.

    Example:
        >>> keep_space([LayerSpec("a", 0, 3, 8, 3, 1, 64, 1.0, 1.0)], 0.25).names
        ['keep:a']
    """
    if not isinstance(min_keep, int | float) or not 0.0 < min_keep < 1.0:
        raise errors.InvalidArgumentError("min_keep", min_keep, "a number in (0, 1)")
    return space_lib.SearchSpace(
        [space_lib.Float(f"keep:{ly.key}", min_keep, 1.0) for ly in layers]
    )


def _static_features(layers: Sequence[LayerSpec]) -> np.ndarray:
    """The first seven columns of the embedding, each min-max scaled over the layers."""
    raw = np.array(
        [
            [ly.index, ly.c_in, ly.c_out, ly.kernel, ly.stride, ly.feature_size, ly.flops]
            for ly in layers
        ],
        dtype=float,
    )
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)  # a constant column (all strides 1) becomes 0
    return (raw - lo) / span


def _remaining(layers: Sequence[LayerSpec]) -> np.ndarray:
    """Share of the total FLOPs held by the layers after each one."""
    flops = np.array([ly.flops for ly in layers], dtype=float)
    total = flops.sum()
    after = total - np.cumsum(flops)
    return after / total if total > 0 else np.zeros(len(layers))


def _state(
    static: np.ndarray,
    remaining: np.ndarray,
    layers: Sequence[LayerSpec],
    t: int,
    keeps: Mapping[str, float],
    resource: Callable[[dict[str, float]], float],
) -> np.ndarray:
    """Row ``t`` of the embedding, given the keeps of layers ``0..t-1`` (``keeps``)."""
    full = {ly.key: float(keeps[ly.key]) if i < t else 1.0 for i, ly in enumerate(layers)}
    reduced = min(max(1.0 - float(resource(full)), 0.0), 1.0)
    prev = full[layers[t - 1].key] if t > 0 else 1.0
    return np.concatenate([static[t], [reduced, remaining[t], prev]])


def embedding(
    layers: Sequence[LayerSpec],
    keeps: Mapping[str, float],
    resource: Callable[[dict[str, float]], float],
) -> np.ndarray:
    """AMC's layer-wise state: row ``t`` is what the agent sees before choosing layer ``t``.

    Columns (:data:`FEATURES`): index, c_in, c_out, kernel, stride, feature size and layer
    FLOPs, each min-max scaled to [0, 1] over the layers; the share of the resource already
    removed by layers ``0..t-1`` (later layers counted as unpruned); the share of the FLOPs
    in layers after ``t``; the keep ratio of layer ``t-1`` (1 for the first layer).

    Args:
        layers: The layers, in walk order.
        keeps: Keep ratio per layer key (layer ``t``'s row only reads layers before it).
        resource: Resource keep ratio of a full ``{key: keep}`` assignment.

    Example:
        >>> layers = [LayerSpec(k, i, 8, 8, 3, 1, 64, f, f)
        ...           for i, (k, f) in enumerate([("a", 1.0), ("b", 3.0)])]
        >>> res = lambda k: (k["a"] + 3 * k["b"]) / 4
        >>> embedding(layers, {"a": 0.5, "b": 1.0}, res).round(3).tolist()
        [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.75, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.125, 0.0, 0.5]]
    """
    static, remaining = _static_features(layers), _remaining(layers)
    return np.stack(
        [_state(static, remaining, layers, t, keeps, resource) for t in range(len(layers))]
    )


@base.register
class AMCSearch(base.Optimizer):
    """AMC's DDPG agent as an ask/tell optimiser: one trial is one episode over the layers.

    Args:
        space: One ``Float(f"keep:{key}", low, 1.0)`` per layer, in layer order
            (see :func:`keep_space`); ``low`` is the layer's minimum keep.
        seed: Seed of every random choice (weights, noise, minibatches).
        direction: Whether the told values are maximised (accuracy) or minimised (loss).
        layers: The layers, in walk order.
        budget: Resource keep ratio every proposal must meet, e.g. 0.5 of the FLOPs.
        resource: Resource keep ratio (0..1) of a full ``{key: keep}`` assignment;
            non-decreasing in every keep.
        reward: ``"error"`` (``-error``), ``"error_log_flops"`` (``-error*log(FLOPs)``) or
            ``"error_log_params"`` (``-error*log(#params)``); FLOPs and parameters are
            estimated from the layers as a chain (layer ``t`` reads layer ``t-1``).
        error_from: How the error follows from the score (the told value, negated when
            minimising): ``"accuracy"`` (``1 - score``), ``"loss"`` (``-score``), or
            ``"auto"``: an accuracy when the score lies in [0, 1], otherwise a loss.
        choices: Optional allowed keep ratios per layer key (ascending, inside the layer's
            range); those layers only ever get one of them.
        warmup: Episodes of uniformly random actions before the actor acts (AMC: 100).
        sigma: Initial width of the truncated-normal exploration noise (AMC: 0.5).
        sigma_decay: Noise decay per episode after the warm-up (0.99 here; AMC: 0.95-0.99).
        hidden: Hidden widths of the actor and the critic.
        lr_actor: Actor step size (AMC: 1e-4 for 300-unit nets over 400+ episodes; 1e-3
            learns more in a few hundred episodes here, and the inverted-gradient bound of
            :mod:`ddpg` keeps the faster actor from saturating).
        lr_critic: Critic step size.
        tau: Target network soft-update rate.
        discount: Discount of the next step's value (AMC: 1).
        batch_size: Minibatch size.
        buffer_episodes: Replay capacity, in episodes.
        updates_per_episode: Agent updates after each episode (default: one per layer, as AMC
            updates once per step).

    Raises:
        InvalidArgumentError: A bad argument, or a budget that even every layer at its
            minimum keep exceeds (raised before any search work).

    Example:
        >>> layers = [LayerSpec("a", 0, 3, 8, 3, 1, 64, 1.0, 1.0),
        ...           LayerSpec("b", 1, 8, 8, 3, 1, 64, 1.0, 1.0)]
        >>> AMCSearch(keep_space(layers, 0.5), layers=layers, budget=0.25,
        ...           resource=lambda k: (k["a"] + k["b"]) / 2)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `budget`: 0.25. Accepted: a keep ratio >= 0.5 (the smallest reachable, every layer at its minimum keep).
    """

    name = "amc"

    def __init__(
        self,
        space: space_lib.SearchSpace,
        seed: int = 0,
        direction: str = "maximize",
        *,
        layers: Sequence[LayerSpec],
        budget: float,
        resource: Callable[[dict[str, float]], float],
        reward: str = "error",
        error_from: str = "auto",
        choices: Mapping[str, Sequence[float]] | None = None,
        warmup: int = 100,
        sigma: float = 0.5,
        sigma_decay: float = 0.99,
        hidden: Sequence[int] = (64, 64),
        lr_actor: float = 1e-3,
        lr_critic: float = 1e-3,
        tau: float = 0.01,
        discount: float = 1.0,
        batch_size: int = 64,
        buffer_episodes: int = 100,
        updates_per_episode: int | None = None,
    ):
        super().__init__(space, seed, direction)
        self.layers = self._check_layers(layers, space)
        self.lows = [space[f"keep:{ly.key}"].low for ly in self.layers]
        self.choices = self._check_choices(choices)
        if not isinstance(budget, int | float) or not 0.0 < budget <= 1.0:
            raise errors.InvalidArgumentError("budget", budget, "a resource keep ratio in (0, 1]")
        if not callable(resource):
            raise errors.InvalidArgumentError("resource", resource, "a callable keeps -> ratio")
        if reward not in REWARDS:
            raise errors.InvalidArgumentError("reward", reward, f"one of {REWARDS}")
        if error_from not in ERROR_FROM:
            raise errors.InvalidArgumentError("error_from", error_from, f"one of {ERROR_FROM}")
        warmup = options.check_integer("warmup", warmup, low=0)
        if not isinstance(sigma, int | float) or sigma < 0:
            raise errors.InvalidArgumentError("sigma", sigma, "a number >= 0")
        if not isinstance(sigma_decay, int | float) or not 0.0 < sigma_decay <= 1.0:
            raise errors.InvalidArgumentError("sigma_decay", sigma_decay, "a number in (0, 1]")
        options.check_integer("buffer_episodes", buffer_episodes, low=1)
        if updates_per_episode is not None:
            options.check_integer("updates_per_episode", updates_per_episode, low=0)
        self.budget, self.resource, self.reward = float(budget), resource, reward
        self.error_from, self.warmup = error_from, warmup
        self.sigma, self.sigma_decay = float(sigma), float(sigma_decay)
        self.updates_per_episode = (
            len(self.layers) if updates_per_episode is None else updates_per_episode
        )
        # The floor every later layer is assumed at while bounding an earlier one.
        self.floors = [
            self.choices[ly.key][0] if ly.key in self.choices else low
            for ly, low in zip(self.layers, self.lows, strict=True)
        ]
        smallest = float(
            resource({ly.key: f for ly, f in zip(self.layers, self.floors, strict=True)})
        )
        if smallest > self.budget:
            raise errors.InvalidArgumentError(
                "budget",
                budget,
                f"a keep ratio >= {math.ceil(smallest * 1e6) / 1e6:g} (the smallest "
                "reachable, every layer at its minimum keep)",
            )
        self._config = {
            "layers": [dataclasses.asdict(ly) for ly in self.layers],
            "budget": self.budget,
            "reward": reward,
            "error_from": error_from,
            "choices": {k: list(v) for k, v in self.choices.items()},
            "warmup": warmup,
            "sigma": self.sigma,
            "sigma_decay": self.sigma_decay,
            "hidden": list(hidden),
            "lr_actor": lr_actor,
            "lr_critic": lr_critic,
            "tau": tau,
            "discount": discount,
            "batch_size": batch_size,
            "buffer_episodes": buffer_episodes,
            "updates_per_episode": updates_per_episode,
        }
        self._static = _static_features(self.layers)
        self._remaining = _remaining(self.layers)
        self.agent = ddpg.DDPG(
            len(FEATURES),
            1,
            hidden=tuple(hidden),
            lr_actor=lr_actor,
            lr_critic=lr_critic,
            tau=tau,
            discount=discount,
            batch_size=batch_size,
            buffer_size=buffer_episodes * len(self.layers),
            seed=seed,
        )

    # -- validation ----------------------------------------------------------------------

    @staticmethod
    def _check_layers(layers, space) -> list[LayerSpec]:
        layers = list(layers)
        if not layers or not all(isinstance(ly, LayerSpec) for ly in layers):
            raise errors.InvalidArgumentError("layers", layers, "a non-empty list of LayerSpec")
        expected = [f"keep:{ly.key}" for ly in layers]
        if space.names != expected:
            raise errors.InvalidArgumentError(
                "space", space.names, f"one keep parameter per layer, in order: {expected}"
            )
        for p in space.params:
            if not isinstance(p, space_lib.Float) or p.high != 1.0 or p.low <= 0.0 or p.log:
                raise errors.InvalidArgumentError(
                    p.name, p, "a linear Float(name, low, 1.0) with low > 0"
                )
        return layers

    def _check_choices(self, choices) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for key, values in (choices or {}).items():
            if key not in {ly.key for ly in self.layers}:
                raise errors.InvalidArgumentError("choices", key, "keys of the layers")
            low = self.space[f"keep:{key}"].low
            vals = [float(v) for v in values]
            if not vals or vals != sorted(set(vals)) or vals[0] < low or vals[-1] > 1.0:
                raise errors.InvalidArgumentError(
                    f"choices[{key!r}]", list(values), f"ascending distinct keeps in [{low}, 1]"
                )
            out[key] = vals
        return out

    # -- the episode walk ----------------------------------------------------------------

    def exploration_sigma(self, episode: int) -> float:
        """Width of the exploration noise in ``episode`` (decays after the warm-up)."""
        return self.sigma * self.sigma_decay ** max(0, episode - self.warmup)

    def _fits(self, t: int, keeps: Mapping[str, float], keep: float) -> bool:
        """Does the plan fit with layer ``t`` at ``keep`` and every later layer at its floor?"""
        full = dict(keeps)
        full[self.layers[t].key] = keep
        for layer, floor in zip(self.layers[t + 1 :], self.floors[t + 1 :], strict=True):
            full[layer.key] = floor
        return float(self.resource(full)) <= self.budget

    def _bound(self, t: int, keeps: Mapping[str, float], keep: float) -> float:
        """The largest allowed keep <= ``keep`` for layer ``t`` that keeps the plan feasible.

        The floor itself always fits: the earlier layers were bounded against it.
        """
        key = self.layers[t].key
        if key in self.choices:
            opts = self.choices[key]
            hi = int(np.argmin([abs(o - keep) for o in opts]))  # the nearest allowed keep
            if self._fits(t, keeps, opts[hi]):
                return opts[hi]
            lo = 0  # fits; opts[hi] does not: binary search (resource is monotone)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if self._fits(t, keeps, opts[mid]) else (lo, mid)
            return opts[lo]
        if self._fits(t, keeps, keep):
            return keep
        lo, hi = self.floors[t], keep
        while hi - lo > 1e-12:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self._fits(t, keeps, mid) else (lo, mid)
        return lo

    def _state(self, t: int, keeps: Mapping[str, float]) -> np.ndarray:
        return _state(self._static, self._remaining, self.layers, t, keeps, self.resource)

    def policy(self) -> dict[str, float]:
        """The actor's own plan: one episode without noise (bounded, so within budget).

        Example:
            >>> layers = [LayerSpec("a", 0, 3, 8, 3, 1, 64, 1.0, 1.0)]
            >>> opt = AMCSearch(keep_space(layers, 0.2), layers=layers, budget=0.5,
            ...                 resource=lambda k: k["a"])
            >>> round(opt.policy()["keep:a"], 9)  # the untrained actor wants 0.6: bounded
            0.5
        """
        return self._walk(None, 0.0)

    def _propose(self, number: int, rng: np.random.Generator) -> dict[str, Any]:
        if number < self.warmup:
            return self._walk(rng, None)
        return self._walk(rng, self.exploration_sigma(number))

    def _walk(self, rng: np.random.Generator | None, sigma: float | None) -> dict[str, float]:
        """One episode: uniform actions (``sigma=None``) or the actor's plus noise."""
        keeps: dict[str, float] = {}
        for t, layer in enumerate(self.layers):
            if sigma is None:
                action = float(rng.uniform())
            else:
                mu = self.agent.act(self._state(t, keeps))
                action = float(mu[0] if rng is None else ddpg.truncated_normal(rng, mu, sigma)[0])
            low = self.lows[t]
            keep = min(1.0, max(low, low + action * (1.0 - low)))
            keeps[layer.key] = float(self._bound(t, keeps, keep))
        return {f"keep:{k}": v for k, v in keeps.items()}

    # -- learning ------------------------------------------------------------------------

    def episode_reward(self, keeps: Mapping[str, float], value: float) -> float:
        """AMC's reward of an episode with these keeps and this told value."""
        s = self.score(value)
        if self.error_from == "accuracy" or (self.error_from == "auto" and 0.0 <= s <= 1.0):
            error = 1.0 - s
        else:
            error = max(-s, 0.0)
        if self.reward == "error":
            return -error
        attr = "flops" if self.reward == "error_log_flops" else "params"
        cost, prev = 0.0, 1.0
        for layer in self.layers:  # chain estimate: a layer's cost scales with k_in * k_out
            k = keeps[layer.key]
            cost += getattr(layer, attr) * k * prev
            prev = k
        return -error * math.log(max(cost, 1.0))

    def _observe(self, record: base.Record) -> None:
        keeps = {ly.key: float(record.params[f"keep:{ly.key}"]) for ly in self.layers}
        reward = self.episode_reward(keeps, record.value)
        # The same rows _propose saw: row t only reads the keeps of layers before t.
        states = [self._state(t, keeps) for t in range(len(self.layers))]
        for t, low in enumerate(self.lows):
            action = (keeps[self.layers[t].key] - low) / (1.0 - low)
            last = t == len(states) - 1
            nxt = states[t] if last else states[t + 1]  # unused when done: no bootstrap
            self.agent.remember(states[t], [action], reward, nxt, last)
        if record.number >= self.warmup - 1:
            # Seeded by the episode: a replay from the JSON history redoes the same updates.
            rng = np.random.default_rng([self.seed, record.number, 1])
            for _ in range(self.updates_per_episode):
                self.agent.update(rng)

    # -- state ---------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The base state plus the AMC settings (the agent is rebuilt by replay)."""
        return {**super().get_state(), "amc": self._config}

    @classmethod
    def from_state(cls, state: dict[str, Any], **kwargs: Any) -> AMCSearch:
        """Rebuilds the search; pass ``resource=`` again (callables are not data).

        The stored settings (layers, budget, hyper-parameters) are the defaults; ``kwargs``
        override them. Replaying the history retrains the agent exactly.
        """
        cfg = dict(state.get("amc", {}))
        cfg["layers"] = [LayerSpec(**ly) for ly in cfg.get("layers", [])]
        return super().from_state(state, **{**cfg, **kwargs})
