"""Search spaces: named parameters an optimiser proposes values for.

A space is a small ordered list of parameters (``Float``, ``Int``, ``Choice``). It is plain
data: ``to_config``/``from_config`` round-trip it through JSON, so a study's state file can
hold it and a resumed study can check it is searching the same space.

Example:
    >>> space = SearchSpace([Float("lr", 1e-4, 1e-1, log=True), Int("epochs", 1, 8),
    ...                      Choice("criterion", ["lasso", "l1"])])
    >>> space.names
    ['lr', 'epochs', 'criterion']
    >>> SearchSpace.from_config(space.to_config()) == space
    True
    >>> space.validate({"lr": 0.01, "epochs": 3, "criterion": "l1"})
    {'lr': 0.01, 'epochs': 3, 'criterion': 'l1'}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pocketflow_tf import errors


@dataclasses.dataclass(frozen=True)
class Float:
    """A real parameter in ``[low, high]``, optionally searched on a log scale.

    Example:
        >>> Float("lr", 1e-3, 1e-1, log=True).contains(0.01)
        True
    """

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise errors.InvalidArgumentError(
                f"{self.name}.low/high", (self.low, self.high), "finite numbers with low < high"
            )
        if self.log and self.low <= 0:
            raise errors.InvalidArgumentError(f"{self.name}.low", self.low, "> 0 when log=True")

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= float(value) <= self.high
        )


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer parameter in ``[low, high]`` (both included) on a grid of ``step``.

    Example:
        >>> Int("epochs", 1, 9, step=2).contains(4)
        False
    """

    name: str
    low: int
    high: int
    step: int = 1

    def __post_init__(self):
        if self.low > self.high or self.step < 1:
            raise errors.InvalidArgumentError(
                f"{self.name}.low/high/step",
                (self.low, self.high, self.step),
                "integers with low <= high and step >= 1",
            )

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a fixed list of JSON scalars (str, int, float, bool).

    Example:
        >>> Choice("criterion", ["lasso", "l1"]).contains("l1")
        True
    """

    name: str
    values: tuple

    def __init__(self, name: str, values: Sequence[Any]):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "values", tuple(values))
        if not self.values or len(set(self.values)) != len(self.values):
            raise errors.InvalidArgumentError(
                f"{name}.values", list(values), "a non-empty list of distinct values"
            )

    def contains(self, value: Any) -> bool:
        return value in self.values


Param = Float | Int | Choice
_KINDS = {"float": Float, "int": Int, "choice": Choice}


class SearchSpace:
    """An ordered list of uniquely named parameters.

    Args:
        params: The parameters, in the order optimisers see them.

    Example:
        >>> SearchSpace([Float("x", -1.0, 1.0)]).to_config()
        [{'kind': 'float', 'name': 'x', 'low': -1.0, 'high': 1.0, 'log': False}]
    """

    def __init__(self, params: Sequence[Param]):
        self.params = list(params)
        names = [p.name for p in self.params]
        if not names or len(set(names)) != len(names):
            raise errors.InvalidArgumentError(
                "params", names, "a non-empty list of uniquely named parameters"
            )

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.params == other.params

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Checks that ``params`` names every parameter once with a value inside its range.

        Returns:
            The values as a plain dict in the space's order.

        Raises:
            InvalidArgumentError: naming the first missing, extra or out-of-range value.
        """
        extra = sorted(set(params) - set(self.names))
        if extra:
            raise errors.InvalidArgumentError("params", extra, f"only names of {self.names}")
        out = {}
        for p in self.params:
            if p.name not in params or not p.contains(params[p.name]):
                raise errors.InvalidArgumentError(
                    p.name, params.get(p.name, "<missing>"), f"a value inside {p!r}"
                )
            out[p.name] = params[p.name]
        return out

    def to_config(self) -> list[dict[str, Any]]:
        """JSON-serialisable description (see ``from_config``)."""
        out = []
        for p in self.params:
            kind = next(k for k, cls in _KINDS.items() if isinstance(p, cls))
            cfg = dataclasses.asdict(p)
            if kind == "choice":
                cfg["values"] = list(p.values)
            out.append({"kind": kind, **cfg})
        return out

    @classmethod
    def from_config(cls, config: Sequence[Mapping[str, Any]]) -> SearchSpace:
        """Rebuilds a space written by ``to_config``."""
        params = []
        for item in config:
            item = dict(item)
            kind = item.pop("kind", None)
            if kind not in _KINDS:
                raise errors.InvalidArgumentError("kind", kind, f"one of {sorted(_KINDS)}")
            params.append(_KINDS[kind](**item))
        return cls(params)
