"""What the user asks the automated compression for: a :class:`Target`, and whether a model meets it.

A target holds *resource goals* (a measured speed-up, a FLOPs keep ratio, a ``.tflite`` size
in bytes or relative to the dense float file, full-integer int8 deployment) and an
*accuracy floor* (the largest accuracy drop, in points, accepted against the dense model).
:meth:`Target.parse` reads the short strings a user types (``"2x faster"``,
``"int8,<=0.3x bytes"``, ``"under 1 MB"``); :meth:`Target.check` compares measured figures
with the goals and says which are missed and by how much.

Example:
    >>> t = Target.parse("2x faster, int8, drop<=0.5")
    >>> t.speedup, t.int8, t.max_acc_drop
    (2.0, True, 0.5)
    >>> t.describe()
    '2x faster, int8; accuracy drop <= 0.5 pt'
    >>> v = t.check({"latency_ratio": 0.8, "int8": True, "acc_drop": 0.2})
    >>> v.met, [m.goal for m in v.misses]
    (False, ['speedup'])
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from pocketflow_tf import errors

#: The resource goals (the accuracy floor is not one: a target needs at least one of these).
RESOURCE_GOALS = ("speedup", "flops_ratio", "max_bytes", "bytes_ratio", "int8")

#: What :meth:`Target.parse` accepts; echoed in every parse error.
ACCEPTED = (
    "comma-separated goals, at least one of speed, FLOPs, size or int8: "
    "'2x faster' (or 'speedup>=2': measured LiteRT latency vs the dense float .tflite), "
    "'flops<=0.5' (or '0.5x flops', 'keep 40% flops', '4x fewer flops'), "
    "'under 1 MB' (or '<=300 KB', 'size<=2 MiB': .tflite bytes, a unit is required), "
    "'<=0.3x bytes' (or 'bytes<=0.3', '4x smaller': vs the dense float .tflite), "
    "'int8' (full-integer deployment), and optionally 'drop<=0.5' (accuracy floor: at most "
    "0.5 points below the dense model; default 1); e.g. 'int8,<=0.3x bytes'"
)

_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


@dataclasses.dataclass(frozen=True)
class Target:
    """A compression target: resource goals plus an accuracy floor.

    Attributes:
        speedup: Measured LiteRT latency speed-up over the dense float ``.tflite`` (one
            thread, batch 1, interleaved runs), above 1, e.g. ``2.0``; ``None``: no speed
            goal.
        flops_ratio: Keep at most this share of the dense model's FLOPs, in (0, 1).
        max_bytes: Largest deployable ``.tflite`` file, in bytes.
        bytes_ratio: Largest ``.tflite`` size relative to the dense float ``.tflite``, in (0, 1).
        int8: Deploy as a full-integer int8 ``.tflite``.
        max_acc_drop: Accuracy floor: the largest accepted drop against the dense model, in
            percentage points (1.0 = one point), measured on held-out training data.

    Raises:
        InvalidArgumentError: A goal outside its range, or no resource goal at all.

    Example:
        >>> Target(flops_ratio=0.5).describe()
        'FLOPs <= 0.5x; accuracy drop <= 1 pt'
        >>> Target(max_acc_drop=0.5)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `target`: 'no resource goal; accuracy drop <= 0.5 pt'. Accepted: at least one resource goal: speedup, flops_ratio, max_bytes, bytes_ratio or int8.
    """

    speedup: float | None = None
    flops_ratio: float | None = None
    max_bytes: int | None = None
    bytes_ratio: float | None = None
    int8: bool = False
    max_acc_drop: float = 1.0

    def __post_init__(self):
        # Values are normalised (ints become floats) so that equal targets compare and
        # serialise equal whatever numeric type the caller used.
        # A goal of exactly 1x ("1x smaller", "flops<=1") asks for nothing: the model as it
        # is meets it, so the run would search for nothing and report success. Refused.
        self._check_number("speedup", 1.0, math.inf, low_open=True, high_open=False)
        for name in ("flops_ratio", "bytes_ratio"):
            self._check_number(name, 0.0, 1.0, low_open=True, high_open=True)
        if self.max_bytes is not None:
            if (
                isinstance(self.max_bytes, bool)
                or not isinstance(self.max_bytes, int | float)
                or not self.max_bytes >= 1
                or not math.isfinite(self.max_bytes)
            ):
                raise errors.InvalidArgumentError("max_bytes", self.max_bytes, "a byte count >= 1")
            object.__setattr__(self, "max_bytes", int(self.max_bytes))
        if not isinstance(self.int8, bool):
            raise errors.InvalidArgumentError("int8", self.int8, "True or False")
        drop = self.max_acc_drop
        if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop <= 100:
            raise errors.InvalidArgumentError(
                "max_acc_drop", drop, "accuracy points in [0, 100] (1.0 = one point)"
            )
        object.__setattr__(self, "max_acc_drop", float(drop))
        if not self.resource_goals():
            raise errors.InvalidArgumentError(
                "target",
                self.describe(),
                "at least one resource goal: speedup, flops_ratio, max_bytes, bytes_ratio or int8",
            )

    def _check_number(
        self, name: str, low: float, high: float, low_open: bool, high_open: bool
    ) -> None:
        value = getattr(self, name)
        if value is None:
            return
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not ok:
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            why = " (1 asks for no change: the model as it is meets it)" if 1 in (low, high) else ""
            raise errors.InvalidArgumentError(name, value, f"a number in {bounds}{why}")
        object.__setattr__(self, name, float(value))

    # -- reading and writing ---------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | Target) -> Target:
        """Reads a user's target string (a :class:`Target` is returned as it is).

        Goals are separated by commas, semicolons or ``and``; case and spaces do not matter.
        See :data:`ACCEPTED` for every form.

        Args:
            text: E.g. ``"2x faster"``, ``"int8"``, ``"under 1 MB"``,
                ``"int8,<=0.3x bytes"``, ``"flops<=0.5"``, ``"2x faster, drop<=0.5"``.

        Returns:
            The target.

        Raises:
            InvalidArgumentError: Naming ``target``, echoing ``text`` and saying what is
                accepted (and which part could not be read); also for a goal given twice.

        Example:
            >>> Target.parse("int8,<=0.3x bytes")
            Target(speedup=None, flops_ratio=None, max_bytes=None, bytes_ratio=0.3, int8=True, max_acc_drop=1.0)
            >>> Target.parse("under 1 MB").max_bytes, Target.parse("<= 2 KiB").max_bytes
            (1000000, 2048)
            >>> Target.parse("keep 40% flops").flops_ratio, Target.parse("4x smaller").bytes_ratio
            (0.4, 0.25)
            >>> Target.parse("make it good")
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `target`: 'make it good'. Accepted: ... could not read 'make it good'.
        """
        if isinstance(text, Target):
            return text
        if not isinstance(text, str) or not text.strip():
            raise errors.InvalidArgumentError("target", text, ACCEPTED)
        clauses = [c.strip() for c in re.split(r",|;|\band\b", text.lower())]
        if any(not c for c in clauses):
            raise errors.InvalidArgumentError(
                "target", text, ACCEPTED + "; found an empty goal between separators"
            )
        fields: dict[str, Any] = {}
        for clause in clauses:
            clause = re.sub(r"\s+", " ", clause)
            found = _read_clause(clause)
            if found is None:
                raise errors.InvalidArgumentError(
                    "target", text, f"{ACCEPTED}; could not read {clause!r}"
                )
            name, value = found
            if name in fields:
                raise errors.InvalidArgumentError(
                    "target", text, f"{ACCEPTED}; '{name}' is given twice"
                )
            fields[name] = value
        try:
            return cls(**fields)
        except errors.InvalidArgumentError as e:
            # Echo the user's text (what they typed), with the rule that was broken.
            broken = (
                e.accepted if e.name == "target" else f"{e.accepted} for {e.name} (got {e.value!r})"
            )
            raise errors.InvalidArgumentError("target", text, f"{broken}; {ACCEPTED}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON).

        Example:
            >>> Target(speedup=2).to_dict()["speedup"]
            2.0
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        """Inverse of :meth:`to_dict`.

        Example:
            >>> t = Target.parse("int8, under 300 KB")
            >>> Target.from_dict(t.to_dict()) == t
            True
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise errors.InvalidArgumentError("target", dict(data), f"keys among {sorted(names)}")
        return cls(**dict(data))

    def resource_goals(self) -> list[str]:
        """Names of the resource goals this target sets, in :data:`RESOURCE_GOALS` order.

        Example:
            >>> Target.parse("int8, 2x faster").resource_goals()
            ['speedup', 'int8']
        """
        return [
            g
            for g in RESOURCE_GOALS
            if (self.int8 if g == "int8" else getattr(self, g) is not None)
        ]

    def describe(self) -> str:
        """A short human description, e.g. ``'2x faster, int8; accuracy drop <= 1 pt'``.

        Example:
            >>> Target.parse("under 1.5 MB, <=0.3x bytes").describe()
            '.tflite <= 1.5 MB, .tflite <= 0.3x of dense float; accuracy drop <= 1 pt'
        """
        parts = self._goals(human=True)
        return (
            ", ".join(parts) or "no resource goal"
        ) + f"; accuracy drop <= {self.max_acc_drop:g} pt"

    def spec(self) -> str:
        """The target as a string :meth:`parse` reads back to an equal target (records).

        Example:
            >>> t = Target.parse("2x faster, under 1.5 MB, int8, drop<=0.5")
            >>> t.spec(), Target.parse(t.spec()) == t
            ('2x faster, size<=1500000 B, int8, drop<=0.5', True)
        """
        return ", ".join(self._goals(human=False) + [f"drop<={_exact(self.max_acc_drop)}"])

    def _goals(self, *, human: bool) -> list[str]:
        """The resource goals set, as :meth:`describe` (``human``) or :meth:`spec` says them."""
        parts = [
            (say if human else spec)(getattr(self, name))
            for name, say, spec in _GOAL_TEXTS
            if getattr(self, name) is not None
        ]
        return parts + ["int8"] if self.int8 else parts

    # -- checking ----------------------------------------------------------------------------

    def check(self, figures: Mapping[str, Any], *, accuracy: bool = True) -> Verdict:
        """Compares measured figures with the goals.

        Args:
            figures: Measured values: ``latency_ratio`` (candidate / dense float latency),
                ``flops_ratio``, ``bytes``, ``bytes_ratio``, ``int8`` (bool) and ``acc_drop``
                (points below the dense model). Missing figures count as missed goals.
            accuracy: Also check the accuracy floor.

        Returns:
            The :class:`Verdict`.

        Example:
            >>> v = Target(max_bytes=1000).check({"bytes": 1500, "acc_drop": 2.0})
            >>> [m.text for m in v.misses]
            ['.tflite is 1.5 kB, over the 1 kB limit by 1.5x', 'accuracy drop 2 pt > 1 pt allowed']
            >>> Target(max_bytes=1000).check({"bytes": 1500}, accuracy=False).resource_excess > 0
            True
        """
        misses: list[Miss] = []
        for goal in self.resource_goals():
            miss = _GOAL_CHECKS[goal](self, figures)
            if miss is not None:
                misses.append(miss)
        if accuracy:
            drop = figures.get("acc_drop")
            if not _is_number(drop):
                misses.append(
                    Miss("max_acc_drop", self.max_acc_drop, None, "accuracy not measured")
                )
            elif drop > self.max_acc_drop + 1e-9:
                misses.append(
                    Miss(
                        "max_acc_drop",
                        self.max_acc_drop,
                        float(drop),
                        f"accuracy drop {drop:.3g} pt > {self.max_acc_drop:g} pt allowed",
                    )
                )
        return Verdict(misses)


@dataclasses.dataclass
class Miss:
    """One goal a model misses.

    Attributes:
        goal: The :class:`Target` field, e.g. ``"speedup"`` or ``"max_acc_drop"``.
        required: The goal's value.
        measured: What was measured (``None``: not measured).
        text: A sentence for people, with both numbers and the shortfall.

    Example:
        >>> round(Miss("speedup", 2.0, 1.5, "1.5x faster, short of 2x").excess, 4)
        0.2877
    """

    goal: str
    required: float
    measured: float | None
    text: str

    @property
    def excess(self) -> float:
        """How far off, as a log ratio (> 0; ``inf`` when not measured).

        A log ratio puts a 2x-too-big file and a 2x-too-slow model on one scale, whatever
        the units; scoring (:mod:`proxy`) ranks infeasible trials by it.

        Example:
            >>> round(Miss("max_bytes", 1000, 2000, "2x too big").excess, 4)
            0.6931
        """
        if self.measured is None:
            return math.inf
        if self.goal == "speedup":  # bigger is better: measured is a speed-up
            return max(0.0, math.log(self.required / max(self.measured, 1e-12)))
        if self.goal == "int8":  # a format, not a quantity: missing it is one full unit off
            return 1.0
        if self.goal == "max_acc_drop":  # points, not a ratio: one point = 0.01
            return max(0.0, (self.measured - self.required) / 100.0)
        return max(0.0, math.log(max(self.measured, 1e-12) / self.required))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (with ``excess``).

        Example:
            >>> Miss("int8", 1.0, 0.0, "not int8").to_dict()["excess"]
            1.0
        """
        return {**dataclasses.asdict(self), "excess": _finite_or_none(self.excess)}


@dataclasses.dataclass
class Verdict:
    """Whether figures meet a target, and the goals they miss.

    Example:
        >>> Verdict([]).met, Verdict([]).explain()
        (True, 'every goal is met')
    """

    misses: list[Miss]

    @property
    def met(self) -> bool:
        """No goal is missed.

        Example:
            >>> Verdict([Miss("int8", 1.0, 0.0, "not int8")]).met
            False
        """
        return not self.misses

    @property
    def resource_misses(self) -> list[Miss]:
        """The misses other than the accuracy floor.

        Example:
            >>> v = Target(int8=True).check({"int8": True, "acc_drop": 5.0})
            >>> [m.goal for m in v.misses], v.resource_misses
            (['max_acc_drop'], [])
        """
        return [m for m in self.misses if m.goal != "max_acc_drop"]

    @property
    def resource_excess(self) -> float:
        """Sum of the resource misses' log-ratio shortfalls (0 when every resource goal is met).

        Example:
            >>> round(Target(max_bytes=100).check({"bytes": 400}).resource_excess, 4)
            1.3863
        """
        return float(sum(m.excess for m in self.resource_misses))

    def explain(self) -> str:
        """The misses as one sentence.

        Example:
            >>> Target(flops_ratio=0.5).check({"flops_ratio": 0.6, "acc_drop": 0.0}).explain()
            'FLOPs 0.6x of dense, over the 0.5x limit by 1.20x'
        """
        return "every goal is met" if self.met else "; ".join(m.text for m in self.misses)

    def to_dict(self) -> dict[str, Any]:
        """JSON form.

        Example:
            >>> Verdict([]).to_dict()
            {'met': True, 'misses': []}
        """
        return {"met": self.met, "misses": [m.to_dict() for m in self.misses]}


def _exact(value: float) -> str:
    """A number as the shortest string that reads back to it (``2.0`` as ``'2'``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


#: Each resource goal of a :class:`Target`: its field, how :meth:`Target.describe` says it
#: and how :meth:`Target.spec` writes it for :meth:`Target.parse`.
_GOAL_TEXTS = (
    ("speedup", lambda v: f"{v:g}x faster", lambda v: f"{_exact(v)}x faster"),
    ("flops_ratio", lambda v: f"FLOPs <= {v:g}x", lambda v: f"flops<={_exact(v)}"),
    ("max_bytes", lambda v: f".tflite <= {human_bytes(v)}", lambda v: f"size<={v} B"),
    (
        "bytes_ratio",
        lambda v: f".tflite <= {v:g}x of dense float",
        lambda v: f"<={_exact(v)}x bytes",
    ),
)


def human_bytes(n: float) -> str:
    """A byte count in SI units (kB = 1000 B), as :meth:`Target.parse` reads them.

    Example:
        >>> human_bytes(1_500_000), human_bytes(999), human_bytes(20480)
        ('1.5 MB', '999 B', '20.5 kB')
    """
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


# -- the parse rules: (pattern, field, how to turn the matched number into the field) ----------

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_LE = r"(?:<=|<|=|:|≤|under|below|at most|max(?:imum)?|up to)?"


def _ratio(number: str, percent: str | None) -> float:
    value = float(number)
    return value / 100.0 if percent else value


def _size(number: str, unit: str) -> int:
    return int(round(float(number) * _UNITS[unit]))


#: Each rule: a full-match regex over one normalised clause, the Target field it sets and a
#: function of the match giving the value. Order matters only where forms overlap (an
#: absolute size, which needs a unit, is tried before a relative one).
_RULES: list[tuple[str, str, Callable[[re.Match], Any]]] = [
    # speed: "2x faster", "2 x speedup", "speedup>=2", "speed-up of 2x", "faster 2x"
    (rf"{_NUM} ?x (?:faster|speed-?up|speed)", "speedup", lambda m: float(m[1])),
    (
        rf"(?:speed-?up|speed|faster) ?(?:>=|>|=|:|≥|of|at least)? ?{_NUM} ?x?",
        "speedup",
        lambda m: float(m[1]),
    ),
    # FLOPs: "flops<=0.5", "flops <= 50%", "0.5x flops", "keep 40% (of the) flops", "4x fewer flops"
    (rf"flops ?{_LE} ?{_NUM} ?(%)? ?x?", "flops_ratio", lambda m: _ratio(m[1], m[2])),
    (
        rf"(?:<=|<|≤)? ?{_NUM} ?(%|x) (?:of )?(?:the )?flops",
        "flops_ratio",
        lambda m: _ratio(m[1], m[2] == "%" or None),
    ),
    (
        rf"keep (?:at most )?{_NUM} ?(%)? ?x? (?:of )?(?:the )?flops",
        "flops_ratio",
        lambda m: _ratio(m[1], m[2]),
    ),
    (
        rf"{_NUM} ?x (?:fewer|less) flops",
        "flops_ratio",
        lambda m: 1.0 / float(m[1]) if float(m[1]) else -1.0,
    ),
    # absolute size (a unit is required): "under 1 MB", "<= 300kb", "size<=2 MiB", "max 1mb"
    (
        rf"(?:size|bytes|file|\.?tflite)? ?{_LE} ?{_NUM} ?(b|kb|mb|gb|kib|mib|gib)",
        "max_bytes",
        lambda m: _size(m[1], m[2]),
    ),
    # relative size: "<=0.3x bytes", "bytes<=0.3", "size<=30%", "0.3x size", "4x smaller"
    (rf"(?:bytes|size) ?{_LE} ?{_NUM} ?(%)? ?x?", "bytes_ratio", lambda m: _ratio(m[1], m[2])),
    (
        rf"(?:<=|<|≤)? ?{_NUM} ?(%|x) (?:of )?(?:the )?(?:bytes|size)",
        "bytes_ratio",
        lambda m: _ratio(m[1], m[2] == "%" or None),
    ),
    (rf"{_NUM} ?x smaller", "bytes_ratio", lambda m: 1.0 / float(m[1]) if float(m[1]) else -1.0),
    # int8 deployment: "int8", "full-int8", "int8 for android", "full integer"
    (
        r"(?:full[- ]?)?int-?8(?: (?:for|on) [a-z ]+)?|full[- ]integer(?: int8)?",
        "int8",
        lambda m: True,
    ),
    # accuracy floor: "drop<=0.5", "acc drop <= 0.5%", "accuracy drop 0.5 pt", "max drop 1"
    (
        rf"(?:max )?(?:acc(?:uracy)? )?drop ?{_LE} ?{_NUM} ?(?:%|pts?|points?)?",
        "max_acc_drop",
        lambda m: float(m[1]),
    ),
]
_COMPILED = [(re.compile(p), f, fn) for p, f, fn in _RULES]


def _read_clause(clause: str) -> tuple[str, Any] | None:
    for pattern, name, value in _COMPILED:
        m = pattern.fullmatch(clause)
        if m:
            return name, value(m)
    return None


# -- per-goal checks: (target, figures) -> Miss | None --------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _check_speedup(t: Target, f: Mapping[str, Any]) -> Miss | None:
    ratio = f.get("latency_ratio")
    if not _is_number(ratio) or ratio <= 0:
        return Miss("speedup", t.speedup, None, "latency not measured")
    measured = 1.0 / ratio
    if measured >= t.speedup:
        return None
    return Miss(
        "speedup",
        t.speedup,
        measured,
        f"{measured:.2f}x faster, short of {t.speedup:g}x (latency must fall a further "
        f"{t.speedup / measured:.2f}x)",
    )


def _check_ratio(goal: str, figure: str, label: str) -> Callable[[Target, Mapping], Miss | None]:
    def check(t: Target, f: Mapping[str, Any]) -> Miss | None:
        limit, value = getattr(t, goal), f.get(figure)
        if not _is_number(value):
            return Miss(goal, limit, None, f"{label} not measured")
        if value <= limit + 1e-9:
            return None
        return Miss(
            goal,
            limit,
            float(value),
            f"{label} {value:.3g}x of dense, over the {limit:g}x limit by {value / limit:.2f}x",
        )

    return check


def _check_max_bytes(t: Target, f: Mapping[str, Any]) -> Miss | None:
    value = f.get("bytes")
    if not _is_number(value):
        return Miss("max_bytes", t.max_bytes, None, ".tflite size not measured")
    if value <= t.max_bytes:
        return None
    return Miss(
        "max_bytes",
        t.max_bytes,
        float(value),
        f".tflite is {human_bytes(value)}, over the {human_bytes(t.max_bytes)} limit by "
        f"{value / t.max_bytes:.3g}x",
    )


def _check_int8(t: Target, f: Mapping[str, Any]) -> Miss | None:
    if f.get("int8") is True:
        return None
    return Miss("int8", 1.0, 0.0, "the .tflite is not full-integer int8")


_GOAL_CHECKS: dict[str, Callable[[Target, Mapping[str, Any]], Miss | None]] = {
    "speedup": _check_speedup,
    "flops_ratio": _check_ratio("flops_ratio", "flops_ratio", "FLOPs"),
    "max_bytes": _check_max_bytes,
    "bytes_ratio": _check_ratio("bytes_ratio", "bytes_ratio", ".tflite size"),
    "int8": _check_int8,
}


__all__ = ["ACCEPTED", "RESOURCE_GOALS", "Miss", "Target", "Verdict", "human_bytes"]
