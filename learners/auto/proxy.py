"""The cheap per-trial evaluation the search maximises, and the measurements it shares with
the final model.

A trial builds its candidate with a short distilled fine-tune (:func:`candidate.build`),
writes the ``.tflite`` the target deploys (float or int8, verified against the Keras model),
and measures it against the dense model's float export (:class:`Reference`):

* accuracy of the ``.tflite`` on the held-out share of the *training* data;
* ``.tflite`` bytes (raw and gzip) and their ratio to the dense float file;
* latency ratio to the dense float file, measured interleaved in one run
  (:func:`pocketflow_tf.latency.interleaved_ratio`, one thread, batch 1);
* FLOPs and parameter ratios of the Keras model.

Candidates that fine-tune are also scored at a quarter, half and all of their steps
(:class:`recovery.LearningCurve`); the accuracy the final fine-tune should reach is
extrapolated from that curve (:func:`recovery.extrapolate`) to the final fine-tune's length,
planned from the trial's own measured seconds per step, and capped at the dense accuracy.
The search ranks by that ``acc_predicted``, so it does not pick a plan that looks good after
200 steps but cannot recover; ``acc`` stays the measured figure.

Scoring (:func:`score`): a trial meeting every resource goal scores its held-out accuracy,
in ``[0, 1]``; a trial missing one scores ``accuracy - 1 - shortfall`` (``shortfall``: sum
of the log-ratios by which it misses its goals), which is always below 0. So every trial
meeting the resource goals ranks above every trial missing one, and among the latter the
closest to the goals ranks first, accuracy breaking near-ties. The accuracy floor does not
enter the score (a more accurate trial is better anyway); it is judged on the final model.

Example:
    >>> from pocketflow_tf.learners.auto.target import Target
    >>> score(Target(flops_ratio=0.5), {"acc": 0.9, "flops_ratio": 0.45})
    0.9
    >>> round(score(Target(flops_ratio=0.5), {"acc": 0.9, "flops_ratio": 0.55}), 4)
    -0.1953
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pocketflow_tf import distillation, latency, tflite_verify, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import candidate, planner, recovery, splits
from pocketflow_tf.learners.auto.target import Target


@dataclasses.dataclass
class Reference:
    """The dense model's figures every candidate is compared with.

    Attributes:
        tflite_path: Its verified float ``.tflite``.
        bytes: That file's size.
        bytes_gzip: Gzipped size.
        acc: Held-out accuracy of that file.
        acc_keras: Held-out accuracy of the Keras model.
        flops: FLOPs of the Keras model.
        params: Parameters of the Keras model.

    Example:
        >>> Reference("d.tflite", 1000, 900, 0.9, 0.9, 10**6, 10**4).to_dict()["bytes"]
        1000
    """

    tflite_path: str
    bytes: int
    bytes_gzip: int
    acc: float
    acc_keras: float
    flops: int
    params: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form.

        Example:
            >>> Reference("d.tflite", 1000, 900, 0.9, 0.9, 10, 10).to_dict()["acc"]
            0.9
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ProxyConfig:
    """How cheap a trial is.

    Attributes:
        steps: Distilled fine-tuning steps per trial (0: none).
        calib_samples: Training images channel selection samples per trial.
        eval_samples: Training images the sensitivity analysis scores on (shared with the
            final build, so its cached scores stay valid).
        latency_rounds: Interleaved A/B rounds of the latency ratio.
        curve_samples: Held-out images the fine-tune's learning curve is scored on.
        keep_tflite: Keep each trial's ``.tflite`` in ``trials/seed-<trial seed>/``.

    Example:
        >>> ProxyConfig(steps=-1)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `proxy steps`: -1. Accepted: an integer >= 0.
    """

    steps: int = 200
    calib_samples: int = 256
    eval_samples: int = 512
    latency_rounds: int = 30
    curve_samples: int = 2000
    keep_tflite: bool = True

    def __post_init__(self):
        from pocketflow_tf import options

        options.check_integer("proxy steps", self.steps, low=0)
        options.check_integer("proxy calib_samples", self.calib_samples, low=1)
        options.check_integer("eval_samples", self.eval_samples, low=1)
        options.check_integer("latency_rounds", self.latency_rounds, low=1)
        options.check_integer("curve_samples", self.curve_samples, low=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form.

        Example:
            >>> ProxyConfig(steps=50).to_dict()["steps"]
            50
        """
        return dataclasses.asdict(self)


# The core scorer, re-exported: auto's learner and report call ``proxy.tflite_accuracy``.
tflite_accuracy = tflite_verify.tflite_accuracy


def measure(
    tflite_path: str,
    *,
    mode: str,
    reference: Reference,
    data: splits.SearchData,
    flops_ratio: float,
    params_ratio: float,
    bytes_gzip: int,
    latency_rounds: int,
) -> dict[str, Any]:
    """Measures a candidate's ``.tflite`` against the dense reference.

    Returns:
        ``acc``, ``acc_dense``, ``acc_drop`` (points), ``latency_ratio``, ``speedup``,
        ``candidate_ms``, ``reference_ms``, ``bytes``, ``bytes_gzip``, ``bytes_ratio``,
        ``flops_ratio``, ``params_ratio``, ``int8``, ``mode``.

    Example:
        >>> f = measure("c.tflite", mode="float", reference=ref, data=data, flops_ratio=0.5,
        ...             params_ratio=0.5, bytes_gzip=900, latency_rounds=30)  # doctest: +SKIP
        >>> sorted(f)[:3]  # doctest: +SKIP
        ['acc', 'acc_dense', 'acc_drop']
    """
    acc = tflite_accuracy(tflite_path, data.x_hold, data.y_hold)
    size = os.path.getsize(tflite_path)
    ratio = latency.interleaved_ratio(
        tflite_path, reference.tflite_path, rounds=int(latency_rounds), runs_per_round=10
    )
    return {
        "acc": acc,
        "acc_dense": reference.acc,
        "acc_drop": round(100.0 * (reference.acc - acc), 6),
        "latency_ratio": ratio.latency_ratio,
        "speedup": ratio.speedup,
        "candidate_ms": ratio.candidate_ms,
        "reference_ms": ratio.reference_ms,
        "bytes": int(size),
        "bytes_gzip": int(bytes_gzip),
        "bytes_ratio": size / reference.bytes,
        "flops_ratio": float(flops_ratio),
        "params_ratio": float(params_ratio),
        "int8": mode == "int8",
        "mode": mode,
    }


def score(target: Target, figures: Mapping[str, Any]) -> float:
    """The value a trial reports to the search (see the module docstring).

    Example:
        >>> score(Target(speedup=2.0), {"acc": 0.8, "latency_ratio": 0.4})
        0.8
        >>> score(Target(speedup=2.0), {"acc": 0.8, "latency_ratio": 1.0}) < 0
        True
        >>> score(Target(speedup=2.0), {"acc": 0.8, "acc_predicted": 0.9, "latency_ratio": 0.4})
        0.9
    """
    verdict = target.check(figures, accuracy=False)
    acc = float(figures.get("acc_predicted", figures["acc"]))
    if verdict.met:
        return acc
    return acc - 1.0 - verdict.resource_excess


class Proxy:
    """The search objective: ``proxy(params, trial_seed) -> {"value": ..., metrics...}``.

    Args:
        dense: The dense model.
        teacher: A frozen copy of it (the distillation teacher).
        plan: The plan (chains and space).
        facts: The model's facts.
        data: The search data.
        reference: The dense reference figures.
        target: The target (for scoring and the met flags).
        work_dir: Trials write ``trials/seed-<trial seed>/`` here.
        train_config: The configured fine-tuning (batch size, optimiser, base rate).
        config: Trial cost settings.
        distill: Distillation of the short fine-tune.
        cache: Shared sensitivity scores.
        channel_round: Channel rounding.
        prune_seed: Seed of channel selection (the same for every trial).
        final_steps: The final fine-tune's step count for a measured training time per step
            (``None``: unknown, the predicted accuracy is then the measured one).

    Example:
        >>> inp = keras.Input((8, 8, 1))
        >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 3, name="c1")(inp))
        >>> dense = keras.Model(inp, keras.layers.Dense(2)(h))
        >>> facts = planner.model_facts(dense)
        >>> x = np.random.default_rng(0).random((300, 8, 8, 1), dtype=np.float32)
        >>> proxy = Proxy(dense, dense, planner.plan(Target(flops_ratio=0.6), facts), facts,
        ...               splits.make_search_data(x, np.arange(300) % 2, seed=0),
        ...               Reference("runs/dense.tflite", 1000, 900, 0.9, 0.9, 10**6, 10**4),
        ...               Target(flops_ratio=0.6), "runs/auto", training.TrainConfig(),
        ...               ProxyConfig(steps=10), distill=None,
        ...               cache=candidate.SensitivityCache(), channel_round=8, prune_seed=0)
        >>> [c.name for c in proxy.plan.chains], proxy.trial_dir(1234)
        (['prune', 'prune+int8'], 'runs/auto/trials/seed-1234')
    """

    def __init__(
        self,
        dense: keras.Model,
        teacher: keras.Model,
        plan: planner.Plan,
        facts: planner.ModelFacts,
        data: splits.SearchData,
        reference: Reference,
        target: Target,
        work_dir: str,
        train_config: training.TrainConfig,
        config: ProxyConfig,
        *,
        distill: distillation.DistillationConfig | None,
        cache: candidate.SensitivityCache,
        channel_round: int,
        prune_seed: int,
        final_steps: Callable[[float | None], int] | None = None,
    ):
        self.dense, self.teacher, self.plan, self.facts = dense, teacher, plan, facts
        self.data, self.reference, self.target = data, reference, target
        self.work_dir, self.train_config, self.config = work_dir, train_config, config
        self.distill, self.cache = distill, cache
        self.channel_round, self.prune_seed = channel_round, prune_seed
        self.final_steps = final_steps
        n = min(config.curve_samples, len(data.x_hold))
        # A fixed, seeded subset: every trial's curve is scored on the same images.
        pick = np.sort(np.random.default_rng(prune_seed).choice(len(data.x_hold), n, replace=False))
        self.x_curve, self.y_curve = data.x_hold[pick], data.y_hold[pick]

    def trial_dir(self, trial_seed: int) -> str:
        """Where a trial writes: named by its seed, which the study derives from the trial
        number alone, so a rerun of an interrupted trial overwrites its own folder.

        Example:
            >>> proxy.trial_dir(1234)  # doctest: +SKIP
            'runs/auto/trials/seed-1234'
        """
        return os.path.join(self.work_dir, "trials", f"seed-{trial_seed}")

    def __call__(self, params: dict[str, Any], trial_seed: int) -> dict[str, Any]:
        """Builds, exports and measures one trial; returns its value and metrics.

        Example:
            >>> out = proxy({"chain": "prune", "flops_keep": 0.4, "criterion": "lasso",
            ...              "lr_factor": 0.3}, trial_seed=7)  # doctest: +SKIP
            >>> out["value"], out["flops_ratio"] <= 0.4  # doctest: +SKIP
            (0.91, True)
        """
        t0 = time.perf_counter()
        chain = planner.CHAINS[params["chain"]]
        steps = self.config.steps
        curve = recovery.LearningCurve(
            self.x_curve, self.y_curve, self.data.x_calib, at=(steps // 4, steps // 2, steps)
        )
        cand = candidate.build(
            self.dense,
            self.teacher,
            params,
            self.data,
            train_config=self.train_config,
            facts=self.facts,
            steps=self.config.steps,
            calib_samples=self.config.calib_samples,
            eval_samples=self.config.eval_samples,
            channel_round=self.channel_round,
            distill=self.distill,
            cache=self.cache,
            prune_seed=self.prune_seed,
            seed=trial_seed,
            callbacks=[curve],
        )
        t_build = time.perf_counter() - t0
        folder = self.trial_dir(trial_seed)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"model.{chain.export_mode}.tflite")
        exported = candidate.export(
            cand.model,
            chain.export_mode,
            path,
            self.data,
            child_check=False,
            sparse=chain.sparse,
            thresholds=candidate.TRIAL_INT4_THRESHOLDS if chain.export_mode == "int4" else None,
        )
        figures = measure(
            path,
            mode=chain.export_mode,
            reference=self.reference,
            data=self.data,
            flops_ratio=cand.flops_ratio,
            params_ratio=cand.params_ratio,
            bytes_gzip=exported.bytes_gzip,
            latency_rounds=self.config.latency_rounds,
        )
        figures.update(self._prediction(curve, figures["acc"]))
        resources = self.target.check(figures, accuracy=False)
        full = self.target.check(figures)
        if not self.config.keep_tflite:
            shutil.rmtree(folder, ignore_errors=True)
        return {
            "value": score(self.target, figures),
            **figures,
            "meets_resources": resources.met,
            "meets_target": full.met,
            "missed": full.explain() if not full.met else "",
            "flops_keep_applied": cand.flops_keep_applied,
            "params_keep_applied": cand.params_keep_applied,
            "counts": {g["key"]: g["kept"] for g in cand.groups},
            "sparsity": cand.sparsity,
            "tflite": path if self.config.keep_tflite else None,
            "verify_agreement": exported.report.top1_agreement,
            "build_s": round(t_build, 2),
        }

    def _prediction(self, curve: recovery.LearningCurve, acc: float) -> dict[str, Any]:
        """``acc_predicted`` (and the curve behind it): ``acc`` plus the gain the curve
        extrapolates to the final fine-tune's length, at most the dense accuracy."""
        if not curve.points or self.final_steps is None:
            return {"acc_predicted": acc, "curve": None}
        final_steps = int(self.final_steps(curve.s_per_step))
        gain = recovery.extrapolate(curve.points, final_steps) - curve.points[-1][1]
        return {
            "acc_predicted": min(acc + gain, max(acc, self.reference.acc)),
            "curve": [[s, round(a, 5)] for s, a in curve.points],
            "s_per_step": curve.s_per_step,
            "final_steps": final_steps,
        }


__all__ = ["Proxy", "ProxyConfig", "Reference", "measure", "score", "tflite_accuracy"]
