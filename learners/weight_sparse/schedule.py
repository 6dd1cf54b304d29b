"""PocketFlow's gradual pruning schedule (Zhu & Gupta 2017) mapped onto TFMOT's.

PocketFlow describes the schedule by fractions of the planned training iterations
(``ws_iter_ratio_beg``, ``ws_iter_ratio_end``), an exponent (``ws_prune_ratio_exp``) and a
mask update interval (``ws_mask_update_step``). TFMOT's
:class:`tfmot.sparsity.keras.PolynomialDecay` wants absolute steps. :func:`plan_schedule`
converts one into the other *before* training and refuses a schedule that could not reach
its target within the planned steps.

Step numbering is TFMOT's: its ``UpdatePruningStep`` callback sets a wrapper's step to 0 when
training starts and every training batch increments it *before* the mask update of that
batch, so the k-th batch of the run (1-based) is step k and the last one is ``total_steps``.
A mask update happens at every step ``s`` with ``begin_step <= s <= end_step`` and
``(s - begin_step) % frequency == 0``; the target sparsity is therefore reached only if
``end_step - begin_step`` is a multiple of ``frequency`` -- the planner rounds ``end_step``
down to the last mask update so that it always is.

Example:
    >>> from pocketflow_tf.learners.weight_sparse import schedule
    >>> s = schedule.plan_schedule(1000, iter_ratio_beg=0.1, iter_ratio_end=0.5,
    ...                            mask_update_step=50, power=3)
    >>> s.begin_step, s.end_step, s.frequency
    (100, 500, 50)
    >>> round(s.sparsity_at(300, 0.8), 4)  # 0.8 * (1 - (1 - 200/400) ** 3)
    0.7
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from pocketflow_tf import errors, options

#: PocketFlow's defaults for the schedule knobs (``ws_mask_update_step`` is chosen from the
#: pruning window instead, see :func:`plan_schedule`).
DEFAULT_ITER_RATIO_BEG = 0.1
DEFAULT_ITER_RATIO_END = 0.5
DEFAULT_POWER = 3.0
#: Most mask updates an automatic ``ws_mask_update_step`` aims for within the window, and
#: the largest interval it picks (Zhu & Gupta prune every 100 to 1000 steps).
_AUTO_UPDATES = 10
_AUTO_MAX_FREQUENCY = 100


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """A gradual pruning schedule in absolute training steps.

    Attributes:
        begin_step: Step of the first mask update (sparsity 0 there).
        end_step: Step of the last mask update, where the target is reached.
        frequency: Steps between mask updates.
        power: Exponent of the polynomial ramp (PocketFlow's ``ws_prune_ratio_exp``).
        total_steps: Training steps the schedule was planned for.

    Example:
        >>> spec = ScheduleSpec(begin_step=10, end_step=50, frequency=10, power=3.0,
        ...                     total_steps=100)
        >>> spec.mask_update_steps()
        [10, 20, 30, 40, 50]
    """

    begin_step: int
    end_step: int
    frequency: int
    power: float
    total_steps: int

    def sparsity_at(self, step: int, final_sparsity: float, initial_sparsity: float = 0.0) -> float:
        """The sparsity TFMOT's ``PolynomialDecay`` targets at ``step`` (NumPy mirror).

        Example:
            >>> ScheduleSpec(0, 100, 10, 3.0, 100).sparsity_at(100, 0.9)
            0.9
        """
        span = self.end_step - self.begin_step
        p = min(1.0, max(0.0, (step - self.begin_step) / span))
        return float(final_sparsity + (initial_sparsity - final_sparsity) * (1 - p) ** self.power)

    def mask_update_steps(self) -> list[int]:
        """The steps at which TFMOT recomputes the masks.

        Example:
            >>> ScheduleSpec(0, 4, 2, 3.0, 10).mask_update_steps()
            [0, 2, 4]
        """
        return list(range(self.begin_step, self.end_step + 1, self.frequency))

    def to_tfmot(
        self, final_sparsity: float, initial_sparsity: float = 0.0
    ) -> tfmot.sparsity.keras.PolynomialDecay:
        """TFMOT's ``PolynomialDecay`` for one layer's final sparsity.

        Example:
            >>> spec = ScheduleSpec(10, 50, 10, 3.0, 100)
            >>> spec.to_tfmot(0.5).get_config()["config"]["end_step"]
            50
        """
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=float(initial_sparsity),
            final_sparsity=float(final_sparsity),
            begin_step=int(self.begin_step),
            end_step=int(self.end_step),
            power=float(self.power),
            frequency=int(self.frequency),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for records.

        Example:
            >>> ScheduleSpec(10, 50, 10, 3.0, 100).to_dict()["frequency"]
            10
        """
        return dataclasses.asdict(self)


def _check_ratio(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise errors.InvalidArgumentError(name, value, "a number in [0, 1]")
    if not 0.0 <= float(value) <= 1.0:
        raise errors.InvalidArgumentError(name, value, "a number in [0, 1]")
    return float(value)


def check_schedule_args(
    iter_ratio_beg: float = DEFAULT_ITER_RATIO_BEG,
    iter_ratio_end: float = DEFAULT_ITER_RATIO_END,
    mask_update_step: int | None = None,
    power: float = DEFAULT_POWER,
) -> None:
    """Validates the step-count-independent schedule knobs (done again by :func:`plan_schedule`).

    Example:
        >>> check_schedule_args(0.5, 0.4)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `ws_iter_ratio_end`: 0.4. Accepted: a number in (ws_iter_ratio_beg=0.5, 1].
    """
    beg = _check_ratio("ws_iter_ratio_beg", iter_ratio_beg)
    end = _check_ratio("ws_iter_ratio_end", iter_ratio_end)
    if not end > beg:
        raise errors.InvalidArgumentError(
            "ws_iter_ratio_end", iter_ratio_end, f"a number in (ws_iter_ratio_beg={beg}, 1]"
        )
    if mask_update_step is not None and (
        isinstance(mask_update_step, bool)
        or not isinstance(mask_update_step, int | np.integer)
        or mask_update_step < 1
    ):
        raise errors.InvalidArgumentError(
            "ws_mask_update_step", mask_update_step, "an integer >= 1, or None (automatic)"
        )
    if (
        isinstance(power, bool)
        or not isinstance(power, int | float | np.floating | np.integer)
        or not math.isfinite(power)
        or power <= 0
    ):
        raise errors.InvalidArgumentError("ws_prune_ratio_exp", power, "a finite number > 0")


def plan_schedule(
    total_steps: int,
    *,
    iter_ratio_beg: float = DEFAULT_ITER_RATIO_BEG,
    iter_ratio_end: float = DEFAULT_ITER_RATIO_END,
    mask_update_step: int | None = None,
    power: float = DEFAULT_POWER,
) -> ScheduleSpec:
    """Maps PocketFlow's schedule knobs onto absolute steps, or refuses an unreachable schedule.

    ``begin_step = floor(iter_ratio_beg * total_steps)`` and
    ``end_step = floor(iter_ratio_end * total_steps)`` as in PocketFlow; ``end_step`` is then
    rounded down to ``begin_step + k * frequency`` so that the last mask update lands on it
    and the target is reached exactly (rounding loses less than one ``frequency``).

    Args:
        total_steps: Planned training steps (batches per epoch x epochs).
        iter_ratio_beg: Fraction of the steps at which pruning begins (``ws_iter_ratio_beg``).
        iter_ratio_end: Fraction at which the target is reached (``ws_iter_ratio_end``); the
            remaining steps fine-tune with fixed masks.
        mask_update_step: Steps between mask updates (``ws_mask_update_step``). ``None``
            picks ``window // 10`` capped to 100 (and at least 1), i.e. about ten updates.
        power: Exponent of the polynomial ramp (``ws_prune_ratio_exp``).

    Returns:
        The :class:`ScheduleSpec`.

    Raises:
        InvalidArgumentError: On knobs out of range, or a schedule that cannot reach its
            target within ``total_steps``: an empty pruning window, or a ``mask_update_step``
            larger than the window (TFMOT would update the masks once, at sparsity 0).

    Example:
        >>> plan_schedule(100, iter_ratio_beg=0.0, iter_ratio_end=0.5, mask_update_step=60)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `ws_mask_update_step`: 60. Accepted: an integer <= 50, the pruning window (steps 0 to 50 of 100 planned steps).
    """
    check_schedule_args(iter_ratio_beg, iter_ratio_end, mask_update_step, power)
    total = options.check_integer("total_steps", total_steps, low=1)
    begin = int(math.floor(iter_ratio_beg * total))
    end = int(math.floor(iter_ratio_end * total))
    window = end - begin
    if window < 1:
        raise errors.InvalidArgumentError(
            "ws_iter_ratio_end",
            iter_ratio_end,
            f"a value leaving at least one step between ws_iter_ratio_beg={iter_ratio_beg} "
            f"(step {begin}) and ws_iter_ratio_end (step {end}) of {total} planned steps; "
            "train longer or widen the window",
        )
    if mask_update_step is None:
        frequency = max(1, min(_AUTO_MAX_FREQUENCY, window // _AUTO_UPDATES))
    else:
        frequency = int(mask_update_step)
        if frequency > window:
            raise errors.InvalidArgumentError(
                "ws_mask_update_step",
                mask_update_step,
                f"an integer <= {window}, the pruning window (steps {begin} to {end} of "
                f"{total} planned steps)",
            )
    end = begin + frequency * (window // frequency)
    return ScheduleSpec(begin, end, frequency, float(power), total)


__all__ = ["ScheduleSpec", "check_schedule_args", "plan_schedule"]
