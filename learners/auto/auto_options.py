"""The ``auto_*`` options of :class:`~pocketflow_tf.learners.auto.learner.AutoLearner`.

Example:
    >>> AutoOptions(auto_target="2x faster", auto_holdout=0.7)
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.InvalidArgumentError: Invalid value for `auto_holdout`: 0.7. Accepted: a share in (0, 0.5].
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

from pocketflow_tf import errors, options
from pocketflow_tf.learners.auto.target import Target

#: ``auto_optimizer`` names -> the ``hp_optimizers`` module that registers each.
OPTIMIZERS = {"tpe": "tpe", "random": "random_search", "gp": "gp"}
INT8_FINAL = ("auto", "ptq", "qat")


@dataclasses.dataclass(frozen=True)
class AutoOptions(options.Options):
    """What ``auto`` reaches for and how it searches (see ``AutoLearner``'s arguments).

    ``auto_target`` is kept as a string :meth:`Target.parse` reads (a ``Target`` given is
    stored as its :meth:`Target.spec`), so records round-trip.

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> AutoOptions(auto_target=Target(speedup=2)).auto_target
        '2x faster, drop<=1'
    """

    prefix: ClassVar[str] = "auto_"

    auto_target: str = options.option(
        help="what to reach, e.g. '2x faster', 'int8,<=0.3x bytes', 'flops<=0.5', 'under 1 MB'",
        accepted="a target such as '2x faster' or 'int8,<=0.3x bytes'",
    )
    auto_dir: str | None = options.option(
        None,
        help="study and report folder; rerunning with it continues the search (default: "
        "<checkpoint_dir>.auto, or <output folder>/auto on the command line)",
        path="dir",
    )
    auto_optimizer: str = options.option(
        "tpe", choices=tuple(OPTIMIZERS), help="search optimiser: TPE (optuna), random or GP"
    )
    auto_optimizer_kwargs: dict[str, Any] = options.option(
        {}, cli=False, help="extra arguments of the optimiser, e.g. {'n_startup_trials': 4}"
    )
    auto_max_trials: int | None = options.option(
        20, help="trial budget, over every run of the study", low=1
    )
    auto_max_wall_s: float | None = options.option(
        3600.0,
        help="wall-clock budget in seconds of the search and the final build together, "
        "(the search's time counts over every run of the study; the final fine-tune plans its "
        "epochs to fit what is left)",
        low=0,
        low_open=True,
        accepted="seconds > 0 or None",
    )
    auto_search_share: float = options.option(
        0.5,
        help="share of auto_max_wall_s the search may use; the final build gets the rest",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
        accepted="a share in (0, 1)",
    )
    auto_max_consecutive_failures: int | None = options.option(
        5, help="stop after this many failed trials in a row", low=1
    )
    auto_trial_workers: int = options.option(
        1,
        help="processes running the search's trials side by side (1: this process only; N: "
        "N - 1 more worker processes on <auto_dir>/study/study.db, see hp_optimizers.parallel)",
        low=1,
    )
    auto_holdout: float = options.option(
        0.1,
        help="share of the training data held out to rank candidates",
        low=0,
        high=0.5,
        low_open=True,
        accepted="a share in (0, 0.5]",
    )
    auto_proxy_steps: int = options.option(
        200, help="distilled fine-tuning steps of each trial", low=0
    )
    auto_proxy_calib_samples: int = options.option(
        256, help="training images channel selection samples per trial", low=1
    )
    auto_final_calib_samples: int = options.option(
        1000, help="training images channel selection samples for the final build", low=1
    )
    auto_eval_samples: int = options.option(
        512, help="training images the per-layer sensitivity analysis scores on", low=1
    )
    auto_latency_rounds: int = options.option(
        30, help="interleaved latency rounds per trial", low=1
    )
    auto_final_latency_rounds: int = options.option(
        100, help="interleaved latency rounds of the final model", low=1
    )
    auto_channel_round: int = options.option(
        8, help="channel counts are rounded to this multiple (SIMD grain)", low=1
    )
    auto_int8_final: str = options.option(
        "auto",
        choices=INT8_FINAL,
        help="how an int8 chain's final model is made: post-training, quantization-aware "
        "fine-tune, or both with the more accurate on held-out data kept",
    )
    auto_qat_epochs: int = options.option(1, help="epochs of the final QAT fine-tune", low=1)
    auto_final_epochs: int | None = options.option(
        None,
        help="most epochs of the final distilled fine-tune (None: as many as the wall budget "
        "leaves, or 30 without auto_max_wall_s); it ends earlier once the held-out "
        "accuracy is back above the floor (plus auto_final_margin), after auto_final_patience "
        "epochs without gain, or when the wall budget runs out",
        low=1,
    )
    auto_final_patience: int | None = options.option(
        None,
        help="epochs without held-out gain before the final fine-tune stops (None: never; "
        "under the cosine schedule the late epochs gain most)",
        low=1,
    )
    auto_final_margin: float = options.option(
        0.25,
        help="points of held-out accuracy above the target's floor at which the final "
        "fine-tune stops (room for the int8 export and for noise)",
        low=0,
        high=100,
        accepted="points in [0, 100]",
    )
    auto_curve_samples: int = options.option(
        2000,
        help="held-out images each trial's learning curve is scored on (the search ranks "
        "trials by the accuracy extrapolated to the final fine-tune's length)",
        low=1,
    )
    auto_seed: int | None = options.option(
        None,
        cli=False,
        help="seed of the split, the study and the builds (default: the training seed)",
        low=0,
    )

    def check(self) -> None:
        if isinstance(self.auto_target, Target):
            self._set("auto_target", self.auto_target.spec())
        Target.parse(self.auto_target)  # an unreadable target fails here, before any work
        if self.auto_max_trials is None and self.auto_max_wall_s is None:
            raise errors.InvalidArgumentError(
                "auto_max_trials/auto_max_wall_s", (None, None), "at least one budget"
            )

    def validate(self) -> None:
        # A Target object is accepted for auto_target (stored as its spec in check()).
        target = self.auto_target
        if isinstance(target, Target):
            self._set("auto_target", target.spec())
        if isinstance(self.auto_dir, os.PathLike):
            self._set("auto_dir", os.fspath(self.auto_dir))
        super().validate()
