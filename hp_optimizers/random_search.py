"""Random search: every proposal is drawn independently and uniformly from the space.

Floats are uniform in ``[low, high]`` (log-uniform when ``log=True``), integers uniform on
their ``step`` grid, choices uniform over their values. It is the baseline every other
optimiser must beat, and the fallback of those that cannot propose anything better.

Example:
    >>> from pocketflow_tf.hp_optimizers import random_search, space as space_lib
    >>> space = space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)])
    >>> opt = random_search.RandomSearch(space, seed=0)
    >>> trial = opt.ask()
    >>> -1.0 <= trial.params["x"] <= 1.0
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pocketflow_tf.hp_optimizers import base
from pocketflow_tf.hp_optimizers import space as space_lib


def sample(space: space_lib.SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    """Draws one point of ``space`` uniformly (log-uniformly for ``Float(log=True)``).

    Args:
        space: The space to sample.
        rng: The generator to draw from; equal generator states give equal points.

    Returns:
        Plain Python values (``float``, ``int`` or the choice itself) in the space's order.

    Example:
        >>> import numpy as np
        >>> from pocketflow_tf.hp_optimizers import space as space_lib
        >>> s = space_lib.SearchSpace([space_lib.Int("n", 0, 8, step=4),
        ...                            space_lib.Choice("c", ["a", "b"])])
        >>> p = sample(s, np.random.default_rng(0))
        >>> p["n"] in (0, 4, 8), p["c"] in ("a", "b")
        (True, True)
    """
    out: dict[str, Any] = {}
    for p in space.params:
        if isinstance(p, space_lib.Float):
            if p.log:
                value = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
            else:
                value = rng.uniform(p.low, p.high)
            # exp(log(high)) can land one ulp above high: clip so the value stays valid.
            out[p.name] = min(max(float(value), p.low), p.high)
        elif isinstance(p, space_lib.Int):
            n_steps = (p.high - p.low) // p.step + 1
            out[p.name] = p.low + p.step * int(rng.integers(n_steps))
        else:
            # Index, not rng.choice(values): keeps the value's own type (str stays str,
            # bool stays bool) instead of a numpy scalar.
            out[p.name] = p.values[int(rng.integers(len(p.values)))]
    return out


@base.register
class RandomSearch(base.Optimizer):
    """Uniform random search (registered as ``"random"``).

    Each proposal depends only on ``(seed, trial number)``, so a restored search proposes
    exactly what the uninterrupted one would have.

    Args:
        space: What to search.
        seed: Seed of the draws.
        direction: ``"maximize"`` (default) or ``"minimize"``.

    Example:
        >>> from pocketflow_tf.hp_optimizers import base, space as space_lib
        >>> space = space_lib.SearchSpace([space_lib.Choice("opt", ["sgd", "adam"])])
        >>> opt = base.get("random")(space, seed=1)
        >>> opt.ask().params["opt"] in ("sgd", "adam")
        True
    """

    name = "random"

    def _propose(self, number: int, rng: np.random.Generator) -> dict[str, Any]:
        return sample(self.space, rng)
