"""The ask/tell interface every optimiser implements, and the registry of optimisers.

An optimiser proposes parameter values (``ask``), is told the score they reached (``tell``),
and can write everything it knows as JSON (``get_state``) and be rebuilt from it
(``from_state``), so that a search interrupted at any point continues where it stopped.

Scores are maximised by default (``direction="minimize"`` flips them). A trial told ``None``
or a non-finite value failed: it is recorded and never chosen as the best, and the
optimiser does not learn from it.

Subclasses implement ``_propose(number, rng)`` and, when they learn from results,
``_observe(record)``. The base class keeps the history, the pending trials and the random
generator; its ``get_state`` holds them all, and its ``from_state`` replays the history
through ``_observe``. Optimisers with more state (e.g. network weights) extend both.

Example:
    >>> from pocketflow_tf.hp_optimizers import base, space as space_lib
    >>> class Grid(base.Optimizer):
    ...     name = "grid-doc"
    ...     def _propose(self, number, rng):
    ...         return {"x": [-1.0, 0.0, 1.0][number % 3]}
    >>> opt = Grid(space_lib.SearchSpace([space_lib.Float("x", -1.0, 1.0)]), seed=0)
    >>> for _ in range(3):
    ...     t = opt.ask()
    ...     _ = opt.tell(t.number, 1.0 - t.params["x"] ** 2)
    >>> opt.best().params
    {'x': 0.0}
    >>> Grid.from_state(opt.get_state()).best().value
    1.0
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import errors, options
from pocketflow_tf.hp_optimizers import space as space_lib

DIRECTIONS = ("maximize", "minimize")


@dataclasses.dataclass
class Trial:
    """One proposal: its number in the study and the parameter values to try.

    Example:
        >>> Trial(0, {"x": 0.5})
        Trial(number=0, params={'x': 0.5})
    """

    number: int
    params: dict[str, Any]


@dataclasses.dataclass
class Record:
    """A finished trial: its proposal and score (``None`` when it failed).

    Example:
        >>> Record(0, {"x": 0.5}, None).failed
        True
    """

    number: int
    params: dict[str, Any]
    value: float | None

    @property
    def failed(self) -> bool:
        return self.value is None


class Optimizer(abc.ABC):
    """Base of the ask/tell optimisers (see the module docstring for the contract).

    Args:
        space: What to search.
        seed: Seed of every random choice; equal seeds and equal results give equal
            proposals.
        direction: ``"maximize"`` (default) or ``"minimize"`` the told values.

    Example:
        A subclass only proposes; asking, telling and the best result come from the base:

        >>> class Sweep(Optimizer):
        ...     name = "sweep-doc"
        ...     def _propose(self, number, rng):
        ...         return {"x": number / 4}
        >>> opt = Sweep(space_lib.SearchSpace([space_lib.Float("x", 0.0, 1.0)]), seed=0,
        ...             direction="minimize")
        >>> for _ in range(4):
        ...     t = opt.ask()
        ...     _ = opt.tell(t.number, (t.params["x"] - 0.5) ** 2)
        >>> opt.best().number, opt.best().params, opt.best().value
        (2, {'x': 0.5}, 0.0)
    """

    name: ClassVar[str] = ""
    #: Constructor keywords kept as attributes of the same name and stored in the state, so
    #: that ``from_state`` needs them not again (callables, which are not data, are not here).
    SETTINGS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, space: space_lib.SearchSpace, seed: int = 0, direction: str = "maximize"):
        if not isinstance(space, space_lib.SearchSpace):
            raise errors.InvalidArgumentError("space", space, "a SearchSpace")
        if direction not in DIRECTIONS:
            raise errors.InvalidArgumentError("direction", direction, f"one of {DIRECTIONS}")
        self.space = space
        self.seed = options.check_integer("seed", seed, low=0)
        self.direction = direction
        self.history: list[Record] = []
        self.pending: dict[int, dict[str, Any]] = {}
        self._next_number = 0

    # -- the interface -------------------------------------------------------------------

    def ask(self) -> Trial:
        """Proposes the next trial (its params are inside the space)."""
        number = self._next_number
        # One generator per trial, derived from (seed, number): a proposal does not depend
        # on how many random draws earlier proposals made, so replays stay exact.
        rng = np.random.default_rng([self.seed, number])
        params = self.space.validate(self._propose(number, rng))
        self.pending[number] = params
        self._next_number = number + 1
        return Trial(number, dict(params))

    def tell(self, number: int, value: float | None) -> Record:
        """Records the score of an asked trial; ``None``/NaN/inf marks it failed."""
        if number not in self.pending:
            raise errors.InvalidArgumentError(
                "number", number, f"a pending trial number (pending: {sorted(self.pending)})"
            )
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                value = None
        rec = Record(number, self.pending.pop(number), value)
        self.history.append(rec)
        if not rec.failed:
            self._observe(rec)
        return rec

    def best(self) -> Record | None:
        """The best finished trial so far (``None`` when none succeeded)."""
        ok = [r for r in self.history if not r.failed]
        if not ok:
            return None
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(ok, key=lambda r: (sign * r.value, -r.number))

    def score(self, value: float) -> float:
        """``value`` turned into "higher is better" (what subclasses learn from)."""
        return value if self.direction == "maximize" else -value

    # -- for subclasses ------------------------------------------------------------------

    @abc.abstractmethod
    def _propose(self, number: int, rng: np.random.Generator) -> dict[str, Any]:
        """Returns the params of trial ``number``; ``rng`` is seeded by (seed, number)."""

    def _observe(self, record: Record) -> None:  # noqa: B027  (optional hook)
        """Learns from a successful trial (default: nothing to learn)."""

    # -- state ---------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue, as JSON-serialisable data."""
        return {
            "optimizer": self.name,
            "space": self.space.to_config(),
            "seed": self.seed,
            "direction": self.direction,
            "next_number": self._next_number,
            "history": [dataclasses.asdict(r) for r in self.history],
            "pending": [{"number": n, "params": p} for n, p in sorted(self.pending.items())],
            **{key: getattr(self, key) for key in self.SETTINGS},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], **kwargs: Any) -> Optimizer:
        """Rebuilds an optimiser from ``get_state()``; ``kwargs`` go to the constructor
        (for what is not data, e.g. a callable) and override the stored ``SETTINGS``."""
        if state.get("optimizer") != cls.name:
            raise errors.InvalidArgumentError(
                "state['optimizer']", state.get("optimizer"), f"{cls.name!r}"
            )
        kwargs = {**{key: state[key] for key in cls.SETTINGS if key in state}, **kwargs}
        opt = cls(
            space_lib.SearchSpace.from_config(state["space"]),
            seed=state["seed"],
            direction=state["direction"],
            **kwargs,
        )
        for item in state["history"]:
            rec = Record(item["number"], dict(item["params"]), item["value"])
            opt.history.append(rec)
            if not rec.failed:
                opt._observe(rec)
        opt.pending = {p["number"]: dict(p["params"]) for p in state["pending"]}
        opt._next_number = state["next_number"]
        return opt


_REGISTRY: dict[str, type[Optimizer]] = {}


def register(cls: type[Optimizer]) -> type[Optimizer]:
    """Class decorator: makes ``cls`` available as ``get(cls.name)``.

    Example:
        >>> @register
        ... class Fixed(Optimizer):
        ...     name = "fixed-doc"
        ...     def _propose(self, number, rng):
        ...         return {"x": 0.5}
        >>> get("fixed-doc") is Fixed
        True
    """
    if not cls.name:
        raise errors.InvalidArgumentError("name", cls.name, "a non-empty optimiser name")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Optimizer]:
    """The optimiser class registered under ``name``.

    Example:
        >>> import pocketflow_tf.hp_optimizers
        >>> get("nope")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: ...
    """
    if name not in _REGISTRY:
        raise errors.InvalidArgumentError("optimizer", name, f"one of {available()}")
    return _REGISTRY[name]


def available() -> list[str]:
    """Names of the registered optimisers, sorted."""
    return sorted(_REGISTRY)
