"""A small DDPG agent (Lillicrap et al. 2016) in numpy, the learner inside AMC's search.

Why hand-written: no maintained DDPG library is in the pinned stack (tf-agents is not, and
would pull its own TensorFlow pins), while the networks AMC needs are tiny (a 10-number state,
one action, two hidden layers). In numpy every update is a handful of small matrix products,
the whole agent is plain arrays, and -- what the resumable search relies on -- replaying the
same transitions with the same seeded generators reproduces the same weights bit for bit, so
an optimiser restored from its JSON history ends up identical to the uninterrupted one.

Pieces: an actor ``mu(s) in [0, 1]^a`` and a critic ``Q(s, a)`` (ReLU MLPs; the critic reads
the concatenated state and action), target copies of both moved by soft updates (``tau``), a
ring replay buffer, Adam, and AMC's reward normalisation (a moving average of the sampled
batches' mean reward is subtracted from the rewards before the critic regresses them).

One departure from AMC: its actor ends in a sigmoid, which saturates when the first critic
estimates all point the same way; its gradient then vanishes and the actor never comes back
(on the ten-layer objective of tests/test_amc.py, 200 episodes, actor step 1e-3, one seed
in five ended at best 0.877 / greedy policy 0.826, the others at 0.93-0.95 / 0.89-0.93). Here
the actor's output is linear, clipped to [0, 1] when acting, and its action gradient is
*inverted* near the bounds (Hausknecht & Stone, ICLR 2016): steps towards a bound shrink as
the action approaches it and reverse beyond it (``invert_gradients=False`` restores the
sigmoid).

Example:
    >>> import numpy as np
    >>> agent = DDPG(state_dim=3, hidden=(16, 16), batch_size=4, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(8):
    ...     s = rng.random(3)
    ...     agent.remember(s, [0.5], 1.0, s, True)
    >>> stats = agent.update(np.random.default_rng(1))
    >>> sorted(stats), agent.act(np.zeros(3)).shape
    (['actor_q', 'critic_loss'], (1,))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pocketflow_tf import errors, options


class MLP:
    """A fully connected ReLU network with a ``"linear"`` or ``"sigmoid"`` output.

    Hidden layers start with AMC's fan-in uniform initialisation and the output layer with
    uniform(-3e-3, 3e-3), so the first outputs sit near 0 (0.5 after a sigmoid).

    Args:
        sizes: Widths from input to output, e.g. ``(10, 64, 64, 1)``.
        output: ``"linear"`` or ``"sigmoid"``.
        rng: Generator for the initial weights.

    Example:
        >>> net = MLP((3, 8, 1), "sigmoid", np.random.default_rng(0))
        >>> y, cache = net.forward(np.ones((2, 3)))
        >>> grads, gx = net.backward(cache, np.ones((2, 1)))
        >>> y.shape, [g.shape for g in grads], gx.shape
        ((2, 1), [(3, 8), (8,), (8, 1), (1,)], (2, 3))
    """

    def __init__(self, sizes: Sequence[int], output: str, rng: np.random.Generator):
        if output not in ("linear", "sigmoid"):
            raise errors.InvalidArgumentError("output", output, "'linear' or 'sigmoid'")
        self.output = output
        self.params: list[np.ndarray] = []
        n = len(sizes) - 1
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            bound = 3e-3 if i == n - 1 else 1.0 / np.sqrt(fan_in)
            self.params.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            self.params.append(rng.uniform(-bound, bound, fan_out))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Outputs for a batch ``x`` and the activations ``backward`` needs."""
        cache = [x]
        n = len(self.params) // 2
        for i in range(n):
            x = x @ self.params[2 * i] + self.params[2 * i + 1]
            if i < n - 1:
                x = np.maximum(x, 0.0)
            cache.append(x)
        if self.output == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
            cache[-1] = x
        return x, cache

    def backward(
        self, cache: list[np.ndarray], grad_out: np.ndarray, param_grads: bool = True
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Gradients of the parameters and of the input, given d(loss)/d(output).

        ``param_grads=False`` skips the parameter gradients (returned empty): the actor's
        step only needs the critic's gradient with respect to its action input.
        """
        n = len(self.params) // 2
        g = grad_out * cache[-1] * (1.0 - cache[-1]) if self.output == "sigmoid" else grad_out
        grads: list[np.ndarray] = [np.empty(0)] * len(self.params)
        for i in reversed(range(n)):
            if i < n - 1:
                g = g * (cache[i + 1] > 0.0)
            if param_grads:
                grads[2 * i] = cache[i].T @ g
                grads[2 * i + 1] = g.sum(axis=0)
            g = g @ self.params[2 * i].T
        return grads, g

    def copy(self) -> MLP:
        """An independent copy (for target networks)."""
        out = MLP.__new__(MLP)
        out.output = self.output
        out.params = [p.copy() for p in self.params]
        return out


class Adam:
    """Adam (Kingma & Ba 2015) over a list of arrays, updated in place.

    Example:
        >>> p = [np.array([1.0])]
        >>> opt = Adam(p, lr=0.1)
        >>> opt.step([np.array([2.0])]); round(float(p[0][0]), 3)
        0.9
    """

    def __init__(self, params: list[np.ndarray], lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        """One descent step along ``grads``."""
        self.t += 1
        b1, b2 = self.betas
        scale = self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= scale * m / (np.sqrt(v) + self.eps)


def truncated_normal(
    rng: np.random.Generator, mean: np.ndarray, sigma: float, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """Samples ``N(mean, sigma)`` truncated to ``[low, high]`` (AMC's exploration noise).

    Rejection sampling, elementwise; after 100 rounds a stubborn element is clipped (only
    reachable with a mean far outside the interval).

    Example:
        >>> x = truncated_normal(np.random.default_rng(0), np.full(1000, 0.9), 0.5)
        >>> bool(x.min() >= 0.0 and x.max() <= 1.0), bool(x.mean() < 0.9)
        (True, True)
    """
    mean = np.asarray(mean, dtype=float)
    if sigma <= 0:
        return np.clip(mean, low, high)
    out = rng.normal(mean, sigma)
    for _ in range(100):
        bad = (out < low) | (out > high)
        if not bad.any():
            break
        out = np.where(bad, rng.normal(mean, sigma), out)
    return np.clip(out, low, high)


class DDPG:
    """Actor-critic agent with target networks, replay buffer and reward normalisation.

    Args:
        state_dim: Length of a state vector.
        action_dim: Length of an action vector (actions lie in ``[0, 1]``).
        hidden: Hidden layer widths of both networks.
        lr_actor: Adam step of the actor (AMC: 1e-4).
        lr_critic: Adam step of the critic (AMC: 1e-3).
        tau: Soft-update rate of the target networks (AMC: 0.01).
        discount: Weight of the next state's target Q value.
        batch_size: Transitions per update.
        buffer_size: Capacity of the replay buffer (oldest transitions are overwritten).
        moving_alpha: Rate of the moving reward baseline (AMC: 0.5).
        invert_gradients: Linear actor output bounded by inverted gradients (default), or
            AMC's sigmoid output (``False``).
        seed: Seed of the initial weights.

    Example:
        >>> agent = DDPG(state_dim=2, hidden=(8, 8))
        >>> float(agent.act([0.0, 1.0])[0]) == float(agent.act([0.0, 1.0])[0])
        True
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int = 1,
        *,
        hidden: Sequence[int] = (64, 64),
        lr_actor: float = 1e-4,
        lr_critic: float = 1e-3,
        tau: float = 0.01,
        discount: float = 1.0,
        batch_size: int = 64,
        buffer_size: int = 10000,
        moving_alpha: float = 0.5,
        invert_gradients: bool = True,
        seed: int = 0,
    ):
        state_dim = options.check_integer("state_dim", state_dim, low=1)
        action_dim = options.check_integer("action_dim", action_dim, low=1)
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise errors.InvalidArgumentError("hidden", hidden, "a non-empty list of ints >= 1")
        for name, value in (("tau", tau), ("discount", discount), ("moving_alpha", moving_alpha)):
            if not 0.0 <= value <= 1.0:
                raise errors.InvalidArgumentError(name, value, "a number in [0, 1]")
        batch_size = options.check_integer("batch_size", batch_size, low=1)
        buffer_size = options.check_integer("buffer_size", buffer_size, low=1)
        self.state_dim, self.action_dim = state_dim, action_dim
        self.tau, self.discount, self.batch_size = tau, discount, batch_size
        self.moving_alpha = moving_alpha
        rng = np.random.default_rng([seed, 0x5EED])
        self.invert_gradients = invert_gradients
        self.actor = MLP(
            (state_dim, *hidden, action_dim), "linear" if invert_gradients else "sigmoid", rng
        )
        if invert_gradients:
            self.actor.params[-1][:] = 0.5  # start mid-range, as the sigmoid does
        self.actor_target = self.actor.copy()
        self.critic = MLP((state_dim + action_dim, *hidden, 1), "linear", rng)
        self.critic_target = self.critic.copy()
        self.actor_opt = Adam(self.actor.params, lr_actor)
        self.critic_opt = Adam(self.critic.params, lr_critic)
        self.baseline: float | None = None
        # Ring buffer as preallocated arrays: sampling is one fancy-indexing per field.
        self._s = np.zeros((buffer_size, state_dim))
        self._a = np.zeros((buffer_size, action_dim))
        self._r = np.zeros(buffer_size)
        self._s2 = np.zeros((buffer_size, state_dim))
        self._done = np.zeros(buffer_size)
        self._pos = 0
        self.size = 0

    def act(self, state: Sequence[float] | np.ndarray) -> np.ndarray:
        """The actor's deterministic action(s) for one state or a batch of states."""
        s = np.asarray(state, dtype=float)
        out = self.actor.forward(s[None] if s.ndim == 1 else s)[0]
        out = np.clip(out, 0.0, 1.0)
        return out[0] if s.ndim == 1 else out

    def remember(self, state, action, reward: float, next_state, done: bool) -> None:
        """Stores one transition in the replay buffer."""
        i = self._pos
        self._s[i], self._a[i], self._r[i] = state, action, reward
        self._s2[i], self._done[i] = next_state, float(done)
        self._pos = (i + 1) % len(self._r)
        self.size = min(self.size + 1, len(self._r))

    def update(self, rng: np.random.Generator) -> dict[str, float]:
        """One critic and one actor step on a minibatch drawn with ``rng``; soft target update.

        Returns:
            ``{"critic_loss": ..., "actor_q": ...}`` (mean squared TD error, mean Q of the
            actor's actions), or ``{}`` when the buffer is still empty.
        """
        if self.size == 0:
            return {}
        idx = rng.integers(0, self.size, size=self.batch_size)
        s, a, r, s2, done = self._s[idx], self._a[idx], self._r[idx], self._s2[idx], self._done[idx]
        # AMC's normalisation: rewards are centred on a moving average of batch means, so the
        # critic fits differences between episodes, not the (large, drifting) reward level.
        mean = float(r.mean())
        if self.baseline is None:
            self.baseline = mean
        else:
            self.baseline += self.moving_alpha * (mean - self.baseline)
        r = r - self.baseline
        n = len(idx)

        a2 = np.clip(self.actor_target.forward(s2)[0], 0.0, 1.0)
        q2 = self.critic_target.forward(np.concatenate([s2, a2], axis=1))[0][:, 0]
        y = r + self.discount * (1.0 - done) * q2
        q, cache = self.critic.forward(np.concatenate([s, a], axis=1))
        err = q[:, 0] - y
        grads, _ = self.critic.backward(cache, (2.0 / n) * err[:, None])
        self.critic_opt.step(grads)

        mu, cache_a = self.actor.forward(s)
        q_mu, cache_c = self.critic.forward(np.concatenate([s, mu], axis=1))
        _, grad_in = self.critic.backward(cache_c, np.full((n, 1), -1.0 / n), False)
        g_mu = grad_in[:, self.state_dim :]
        if self.invert_gradients:
            # Hausknecht & Stone (2016): a step towards a bound shrinks as the action nears it
            # and turns around beyond it, so the action stays in [0, 1] without a sigmoid
            # whose flat tails would stall the actor once it saturates.
            g_mu = np.where(g_mu < 0.0, g_mu * (1.0 - mu), g_mu * mu)
        grads_a, _ = self.actor.backward(cache_a, g_mu)
        self.actor_opt.step(grads_a)

        for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            for p, t in zip(net.params, target.params, strict=True):
                t *= 1.0 - self.tau
                t += self.tau * p
        return {"critic_loss": float(np.mean(err**2)), "actor_q": float(q_mu.mean())}
