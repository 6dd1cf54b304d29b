"""``AutoLearner`` (``--learner auto``): given a target, search the method chain and its
hyper-parameters, then build, verify and report the final model.

``fit(model, x, y)``:

1. checks every argument, the target, the optimiser and (on a rerun) that the work directory
   holds a study of the same target, model, data and settings -- before any work;
2. carves the held-out split from the training data (:mod:`splits`) and exports the dense
   model's float ``.tflite``, the reference of every speed and size figure;
3. plans the candidate chains and the search space (:mod:`planner`);
4. runs a resumable :class:`~pocketflow_tf.hp_optimizers.search.Study` of cheap trials
   (:mod:`proxy`) in ``<auto_dir>/study`` -- rerunning continues it;
5. takes the best trial meeting the target, or, when none does, the closest trade-off (and
   says what was missed and by how much);
6. rebuilds that trial with the full fine-tuning budget (or reuses the build of an earlier
   run for the same trial and settings), exports and verifies the deployable ``.tflite``,
   re-measures it on the held-out data, and writes ``auto_report.json`` and
   ``auto_report.html`` (:mod:`report`).

The work directory holds ``auto_config.json`` (what a rerun must match), ``dense.float.tflite``
(the reference), ``study/`` (the resumable search state), ``trials/seed-<n>/`` (each trial's
``.tflite``), ``final/`` (the final Keras model, its verified ``.tflite`` and ``final.json``)
and the two reports.

Example:
    >>> from pocketflow_tf.learners.auto.learner import AutoLearner
    >>> AutoLearner(auto_target="2x faster", auto_dir="/tmp/auto").target.speedup
    2.0
    >>> AutoLearner(auto_target="2x faster", auto_dir="/tmp/auto",
    ...             auto_optimizer="amc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pocketflow_tf.errors.InvalidArgumentError: Invalid value for `auto_optimizer`: 'amc'. ...
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import (
    accounting,
    atomic_io,
    distillation,
    errors,
    heads,
    latency,
    learner,
    model_io,
    options,
    training,
)
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.hp_optimizers import base, search
from pocketflow_tf.learners.auto import (
    auto_options,
    candidate,
    planner,
    proxy,
    recovery,
    report,
    sparse_build,
    splits,
    storage_probe,
    trial_worker,
)
from pocketflow_tf.learners.auto.target import Target, Verdict, human_bytes

#: Optimisers of the chain-level search and the modules registering them. AMC is left out on
#: purpose: it searches per-layer keep ratios inside one pruning (``ChannelPrunedLearner``'s
#: ``ratio_search`` hook), not chains and their hyper-parameters.
OPTIMIZERS = auto_options.OPTIMIZERS
INT8_FINAL = auto_options.INT8_FINAL
CONFIG_FILE = "auto_config.json"
#: 2: trials are ranked by the accuracy extrapolated to the final fine-tune (acc_predicted).
CONFIG_FORMAT = 2
FINAL_FILE = "final.json"
#: The key of the final build whose backup and recovery state ``final/`` holds.
FINAL_BUILD_FILE = "build.json"
#: The Pareto front's objectives: held-out accuracy, latency and file size.
PARETO = (("acc", "max"), ("latency_ratio", "min"), ("bytes", "min"))
#: Default distillation of every fine-tune (the dense model teaches its compressed copy).
DEFAULT_DISTILLATION = distillation.DistillationConfig()
_UNSET: Any = object()
#: ``auto_int8_final`` -> the int8 methods the final build tries (the more accurate wins).
INT8_METHODS = {"auto": ("ptq", "qat"), "ptq": ("ptq",), "qat": ("qat",)}
#: What TFMOT and TensorFlow raise when QAT cannot quantize a model: the final build then
#: keeps its PTQ file instead of failing.
_QAT_LIBRARY_ERRORS = (ValueError, RuntimeError, TypeError, tf.errors.OpError)
#: Why a sparse chain's int8 file is made by PTQ only, whatever ``auto_int8_final`` says.
SPARSE_NO_QAT = (
    "not tried on a sparse chain (plain QAT moves the pruned zeros; "
    "learners/weight_sparse/pqat.py keeps them, auto does not use it yet)"
)


@dataclasses.dataclass
class _Run:
    """What one :meth:`AutoLearner.fit` works on, filled in step by step."""

    model: keras.Model
    data: splits.SearchData
    cfg: training.TrainConfig
    facts: planner.ModelFacts
    validation_data: tuple[np.ndarray, np.ndarray] | None
    t_start: float
    #: The most epochs of the final fine-tune (``None``: what the wall budget leaves).
    final_epochs: int | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    teacher: keras.Model | None = None
    reference: proxy.Reference | None = None
    plan: planner.Plan | None = None
    cache: candidate.SensitivityCache = dataclasses.field(
        default_factory=candidate.SensitivityCache
    )
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: When the whole wall budget ends (``None``: no wall budget); set when the search starts.
    deadline: float | None = None


@learner.register("auto", "auto-compress", "AutoLearner")
class AutoLearner(learner.Learner):
    """Automated compression for a target (see the module docstring).

    Args:
        train_config: The fine-tunes' batch size, optimiser and base learning rate (scaled
            by the searched ``lr_factor``); trials run ``auto_proxy_steps`` steps, the final
            build up to ``auto_final_epochs`` epochs (its ``epochs`` is not used).
        auto_target: A :class:`~target.Target` or a string such as ``"2x faster"``,
            ``"int8,<=0.3x bytes"``, ``"under 1 MB"``, ``"flops<=0.5, drop<=0.5"``.
        auto_dir: Work directory (study state, trial files, final model, reports); rerunning
            with the same directory continues the search. Default: ``<checkpoint_dir>.auto``
            when a ``checkpoint_dir`` is given.
        auto_optimizer: ``"tpe"`` (optuna, default), ``"random"`` or ``"gp"`` (keras-tuner).
        auto_optimizer_kwargs: Extra arguments of the optimiser (e.g.
            ``{"n_startup_trials": 4}`` for TPE).
        auto_max_trials: Trial budget, counted over every run of the study.
        auto_max_wall_s: Wall-clock budget in seconds of the search and the final build
            together (``None``: none; default one hour). The search's time counts over
            every run of the study; the final build gets what is left.
        auto_search_share: Share of ``auto_max_wall_s`` the search may use; the final build
            plans its fine-tune to fit what is left.
        auto_max_consecutive_failures: Stop after this many failed trials in a row.
        auto_trial_workers: Processes running trials side by side: ``N > 1`` starts ``N - 1``
            worker processes sharing ``<auto_dir>/study/study.db`` (they rebuild the trial
            objective from ``<auto_dir>/study/objective``, see :mod:`trial_worker`).
        auto_holdout: Share of the training data held out to rank candidates (stratified,
            seeded); ignored when ``fit`` gets ``x_val``.
        auto_proxy_steps: Distilled fine-tuning steps per trial.
        auto_proxy_calib_samples: Training images channel selection samples per trial.
        auto_final_calib_samples: The same for the final build.
        auto_eval_samples: Training images the per-layer sensitivity analysis scores on.
        auto_latency_rounds: Interleaved latency rounds per trial.
        auto_final_latency_rounds: Interleaved latency rounds of the final model.
        auto_channel_round: Channel counts are rounded to this multiple (SIMD grain).
        auto_int8_final: How an int8 chain's final model is quantized: ``"ptq"``
            (post-training), ``"qat"`` (quantization-aware fine-tune) or ``"auto"`` (both;
            the one more accurate on the held-out data wins).
        auto_qat_epochs: Epochs of the final QAT fine-tune.
        auto_final_epochs: Most epochs of the final distilled fine-tune (``fit(epochs=)``
            overrides it; default ``None``: as many as the wall budget leaves at the chosen
            trial's measured speed, or 30 without ``auto_max_wall_s``). It ends earlier once
            the held-out accuracy is back above the target's floor plus
            ``auto_final_margin`` points, after ``auto_final_patience`` epochs without gain,
            or when the wall budget runs out; the best epoch is kept.
        auto_final_patience: Epochs without held-out gain before the final fine-tune stops
            (default ``None``: never; the cosine schedule's late epochs gain most).
        auto_final_margin: Points above the floor at which it stops.
        auto_curve_samples: Held-out images each trial's learning curve is scored on.
        auto_seed: Seed of the split, the study and the builds (default:
            ``train_config.seed``).
        distillation: Distillation of every fine-tune (default: on, weight 4, T 2;
            ``None`` turns it off).
        teacher: Teacher model (default: a frozen copy of the input model).
        **kwargs: ``log_dir``, ``checkpoint_dir``, ``verbose`` (see :class:`learner.Learner`).

    Attributes:
        report: What was searched, chosen and built (also in ``auto_report.json``).
        tflite_path: The verified deployable ``.tflite`` of the final model.
        report_path: ``auto_report.json``.
        html_path: ``auto_report.html``.
        met: Whether the final model meets the target.
        pareto: The Pareto-optimal trials (accuracy x latency x bytes), as report rows.
        pruned_model: The final model after pruning, before fine-tuning (``None`` when the
            chosen chain does not prune).
        deploy_mode: ``"float"``, ``"int8"`` or ``"int4"``: the mode of ``tflite_path``.
        save_extension: ``".h5"`` when the returned model is a QAT model, else ``".keras"``.

    Example:
        >>> AutoLearner(auto_target="faster please", auto_dir="/tmp/a")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `target`: 'faster please'. ...
    """

    name = "auto"
    Options = auto_options.AutoOptions
    needs_trained_model: ClassVar[bool] = True
    accepts_datasets: ClassVar[bool] = False  # it carves a held-out split from arrays
    takes_held_out: ClassVar[bool] = True
    single_worker_reason: ClassVar[str | None] = (
        "its search trains and records many trials in one study folder"
    )
    save_extension: ClassVar[str] = ".keras"
    epochs_note: ClassVar[str | None] = (
        "epochs: the search's trials take auto_proxy_steps steps each; the final fine-tune "
        "takes what the budget leaves (at most auto_final_epochs when given), fewer once "
        "recovered"
    )

    def __init__(
        self,
        train_config: training.TrainConfig | None = None,
        *,
        distillation: distillation.DistillationConfig | None = _UNSET,
        **kwargs: Any,
    ):
        dst = DEFAULT_DISTILLATION if distillation is _UNSET else distillation
        super().__init__(train_config, distillation=dst, **kwargs)
        o = self.options
        self.target = Target.parse(o.auto_target)
        _import_optimizer(o.auto_optimizer)
        auto_dir = o.auto_dir
        if auto_dir is None and self.checkpoint_dir:
            auto_dir = os.fspath(self.checkpoint_dir).rstrip(os.sep) + ".auto"
        if auto_dir is None:
            raise errors.InvalidArgumentError(
                "auto_dir", None, "a work directory (it holds the resumable study)"
            )
        self.auto_dir = auto_dir
        self.optimizer = o.auto_optimizer
        self.optimizer_kwargs = dict(o.auto_optimizer_kwargs)
        self.max_trials = o.auto_max_trials
        self.max_wall_s = o.auto_max_wall_s
        self.max_consecutive_failures = o.auto_max_consecutive_failures
        self.trial_workers = o.auto_trial_workers
        self.holdout = o.auto_holdout
        self.proxy_config = proxy.ProxyConfig(
            steps=o.auto_proxy_steps,
            calib_samples=o.auto_proxy_calib_samples,
            eval_samples=o.auto_eval_samples,
            latency_rounds=o.auto_latency_rounds,
            curve_samples=o.auto_curve_samples,
        )
        self.search_share = o.auto_search_share
        self.final_epochs = o.auto_final_epochs
        self.final_patience = o.auto_final_patience
        self.final_margin = o.auto_final_margin
        self.final_calib_samples = o.auto_final_calib_samples
        self.final_latency_rounds = o.auto_final_latency_rounds
        self.channel_round = o.auto_channel_round
        self.int8_final = o.auto_int8_final
        self.qat_epochs = o.auto_qat_epochs
        self.seed = self.train_config.seed if o.auto_seed is None else o.auto_seed
        if not options.is_integer(self.seed) or self.seed < 0:
            raise errors.InvalidArgumentError("auto_seed", self.seed, "an integer >= 0")
        self.tflite_path: str | None = None
        self.report_path: str | None = None
        self.html_path: str | None = None
        self.met: bool | None = None
        self.pareto: list[dict[str, Any]] = []
        self.deploy_mode: str | None = None

    @classmethod
    def default_options(cls, out_dir: str) -> dict[str, Any]:
        """The study and report folder beside the saved model, ``<out_dir>/auto``.

        Example:
            >>> AutoLearner.default_options("models/m")
            {'auto_dir': 'models/m/auto'}
        """
        return {"auto_dir": os.path.join(out_dir, "auto")}

    def output_dirs(self) -> dict[str, str | None]:
        """The learner's folders and the work directory, checked before :meth:`fit` works.

        Example:
            >>> AutoLearner(auto_target="int8", auto_dir="/tmp/a").output_dirs()["auto_dir"]
            '/tmp/a'
        """
        return {**super().output_dirs(), "auto_dir": self.auto_dir}

    def deployed(self) -> learner.Deployed | None:
        """The verified ``.tflite`` of the final model, its reports and whether the target
        was met (``None`` before :meth:`fit` built it).

        Example:
            >>> AutoLearner(auto_target="int8", auto_dir="/tmp/a").deployed() is None
            True
        """
        if not self.tflite_path:
            return None
        artifacts = {
            kind: path
            for kind, path in (
                ("auto_report_html", self.html_path),
                ("auto_report_json", self.report_path),
            )
            if path
        }
        metrics: dict[str, Any] = {}
        if self.met is not None:
            metrics["target_met"] = bool(self.met)
        speedup = self.report.get("final", {}).get("figures", {}).get("speedup")
        if speedup:
            # Measured against the dense model's float export (interleaved).
            metrics[f"speedup_{self.deploy_mode}_vs_float"] = speedup
        return learner.Deployed(self.deploy_mode, self.tflite_path, artifacts, metrics)

    def get_config(self) -> dict[str, Any]:
        """Settings for run records: the options, with the target also in words.

        Example:
            >>> cfg = AutoLearner(auto_target="int8", auto_dir="/tmp/a").get_config()
            >>> cfg["auto_target"], cfg["auto_target_description"]
            ('int8', 'int8; accuracy drop <= 1 pt')
        """
        return {
            **super().get_config(),
            "auto_dir": self.auto_dir,
            "auto_seed": self.seed,
            "auto_target_description": self.target.describe(),
        }

    # -- the search ------------------------------------------------------------------------

    def fit(
        self,
        model: keras.Model,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        *,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        val_from_training: bool = False,
        epochs: int | None = None,
        batch_size: int | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> keras.Model:
        """Searches, builds and verifies the compressed model (see the module docstring).

        Args:
            model: The trained dense model (never modified).
            x: Training images (arrays; the held-out split is carved from them).
            y: Integer labels.
            x_val: Optional held-out images from the *training* distribution to rank
                candidates on (default: ``auto_holdout`` of ``x``). Never pass the test set.
            y_val: Their labels.
            val_from_training: True when ``x_val`` was carved from the images the model was
                trained on (e.g. a validation share of the same data set): the report then
                keeps the caveat that held-out figures run high. False (the default) means
                ``x_val`` is a split the model never saw, and its figures are unbiased.
            epochs: Overrides ``auto_final_epochs`` (the most epochs of the final fine-tune).
            batch_size: Overrides ``train_config.batch_size``.
            validation_data: ``(x, y)`` evaluated *after* the final model is built, for the
                report only: it never influences any choice (run scripts pass the test
                split here).
            callbacks: Extra Keras callbacks of the final fine-tune.

        Returns:
            The final Keras model (float; a QAT model when QAT won the int8 final, see
            ``save_extension``). Its deployable file is :attr:`tflite_path`.

        Raises:
            InvalidArgumentError: Bad arguments, a target no chain serves on this model,
                or a work directory holding another study -- all before any work.
            PocketFlowError: When every trial failed (the report says why).

        Example:
            >>> lrn = AutoLearner(training.TrainConfig(epochs=2), auto_target="2x faster",
            ...                   auto_dir="runs/auto", auto_max_trials=12)  # doctest: +SKIP
            >>> small = lrn.fit(model, x_train, y_train)  # doctest: +SKIP
            >>> lrn.met, lrn.tflite_path  # doctest: +SKIP
            (True, 'runs/auto/final/model.float.tflite')
        """
        run = self._check_run(
            model, x, y, (x_val, y_val, val_from_training), epochs, batch_size, validation_data
        )
        # -- work starts here -------------------------------------------------------------
        self._start(run)
        result = self._search(run)
        best = self._report_search(run, result)
        final_model, figures, final_info = self._final(run, best, callbacks)
        self._conclude(run, best, figures, final_info)
        return final_model

    # -- steps ---------------------------------------------------------------------------

    def _check_run(self, model, x, y, val, epochs, batch_size, validation_data) -> _Run:
        """Every check that needs no work: the arguments, the data split, a plan serving
        the target, the optimiser's arguments and the stored study's settings."""
        t_start = time.time()
        if not isinstance(model, keras.Model):
            raise errors.InvalidArgumentError(
                "model", type(model).__name__, "a keras.Model of the framework's Keras (tf-keras)"
            )
        model_io.require_graph(model, "automated compression")
        if isinstance(x, tf.data.Dataset):
            raise errors.InvalidArgumentError(
                "x",
                "a tf.data.Dataset",
                "arrays x and y (the auto learner carves its held-out split from them)",
            )
        cfg = self.train_config
        if batch_size is not None:
            cfg = cfg.replace(batch_size=options.check_integer("batch_size", batch_size, low=1))
        final_epochs = self.final_epochs
        if epochs is not None:
            final_epochs = options.check_integer("epochs", epochs, low=1)
        calib = max(
            self.final_calib_samples,
            self.proxy_config.calib_samples,
            self.proxy_config.eval_samples,
        )
        x_val, y_val, val_from_training = val
        data = splits.make_search_data(
            x,
            y,
            x_val=x_val,
            y_val=y_val,
            holdout=self.holdout,
            seed=self.seed,
            calib_samples=calib,
            val_from_training=val_from_training,
        )
        if validation_data is not None:
            validation_data = tuple(np.asarray(a) for a in validation_data)
        facts = planner.model_facts(model, channel_round=self.channel_round)
        early = planner.plan(self.target, facts)  # raises now if no chain serves the target
        try:  # the optimiser's own checks (e.g. its kwargs), before any work
            base.get(self.optimizer)(early.space, seed=self.seed, **self.optimizer_kwargs)
        except TypeError as e:
            raise errors.InvalidArgumentError(
                "auto_optimizer_kwargs",
                self.optimizer_kwargs,
                f"arguments {self.optimizer!r} takes ({e})",
            ) from None
        run = _Run(model, data, cfg, facts, validation_data, t_start, final_epochs)
        run.config = self._study_config(model, data, cfg)
        self._check_stored_config(run.config)
        # A study of this directory run with(out) trial workers continues the same way.
        search.check_mode(os.path.join(self.auto_dir, "study"), self.trial_workers)
        return run

    def _start(self, run: _Run) -> None:
        """Writes the study's settings, measures the dense reference and plans the chains."""
        # Seeded like Learner.fit: the builds' shuffles and initialisations then do not
        # depend on what ran before in the process.
        keras.utils.set_random_seed(self.seed)
        os.makedirs(self.auto_dir, exist_ok=True)
        atomic_io.write_json(os.path.join(self.auto_dir, CONFIG_FILE), run.config)
        run.teacher = self.teacher if self.teacher is not None else learner.copy_model(run.model)
        run.reference = self._reference(run.model, run.data)
        run.facts = dataclasses.replace(run.facts, dense_bytes=run.reference.bytes)
        chains, _ = planner.candidate_chains(self.target, run.facts)
        if self.target.speedup is not None and any(c.int8 for c in chains):
            speedup = self._int8_speedup(run.model, run.data, run.reference)
            run.facts = dataclasses.replace(run.facts, int8_speedup=speedup)
        if planner.bytes_goal_ratio(self.target, run.facts) is not None:
            # Every chain the goals allow, before the estimates drop any: the measured
            # ratios may keep a chain the constants would have dropped.
            storage = self._storage(
                run.model, run.data, run.reference, lambda keep: self._pruned_probe(run, keep)
            )
            run.facts = dataclasses.replace(
                run.facts,
                export_ratios=storage.export_ratios,
                sparse_bytes=storage.sparse_bytes,
                prune_bytes=storage.prune_bytes,
            )
            storage_notes = storage_probe.describe(storage)
        else:
            storage_notes = []
        run.plan = planner.plan(self.target, run.facts)
        run.plan.notes[:0] = storage_notes  # the report says what the ranges stand on
        baseline = run.data.baseline_note(run.reference.acc_keras)
        if baseline:
            run.plan.notes.insert(0, f"WARNING: {baseline}")
        self._say(f"target: {self.target.describe()}; chains {run.plan.chain_names}")
        for note in run.plan.notes:
            self._say(f"  plan: {note}")

    def _search(self, run: _Run) -> search.StudyResult:
        """Runs (or continues) the study: one proxy-scored candidate per trial."""
        t_search = time.time()
        objective = proxy.Proxy(
            run.model,
            run.teacher,
            run.plan,
            run.facts,
            run.data,
            run.reference,
            self.target,
            self.auto_dir,
            run.cfg,
            self.proxy_config,
            distill=self.distillation,
            cache=run.cache,
            channel_round=self.channel_round,
            prune_seed=self.seed,
            final_steps=lambda s_per_step: self._final_steps(run, s_per_step, self._final_share()),
        )
        if self.trial_workers > 1:  # the worker processes rebuild the objective from files
            objective.objective_spec = trial_worker.write_bundle(
                os.path.join(self.auto_dir, "study", "objective"),
                objective,
                final_steps=(
                    self._steps_per_epoch(run),
                    run.final_epochs,
                    self._final_share(),
                ),
            )
        max_trials = self.max_trials
        if run.plan.size is not None:  # a finite space: no point asking twice for one point
            max_trials = min(max_trials or run.plan.size, run.plan.size)
        result = search.Study(
            os.path.join(self.auto_dir, "study"),
            run.plan.space,
            objective,
            optimizer=self.optimizer,
            optimizer_kwargs=self.optimizer_kwargs,
            seed=self.seed,
            max_trials=max_trials,
            max_wall_s=None if self.max_wall_s is None else self.max_wall_s * self.search_share,
            max_consecutive_failures=self.max_consecutive_failures,
            verbose=self.verbose > 0,
            workers=self.trial_workers,
        ).run()
        if self.max_wall_s is not None:
            # The final build gets what the search (over every run) and this run's setup
            # left of the budget.
            setup_s = t_search - run.t_start
            left = self.max_wall_s - result.elapsed_s - setup_s
            run.deadline = time.time() + max(0.0, left)
        return result

    def _final_share(self) -> float | None:
        """The wall budget the final build plans for while the search runs."""
        return None if self.max_wall_s is None else self.max_wall_s * (1 - self.search_share)

    def _steps_per_epoch(self, run: _Run) -> int:
        return max(1, len(run.data.x_train) // int(run.cfg.batch_size))

    def _final_steps(self, run: _Run, s_per_step: float | None, budget_s: float | None) -> int:
        """The final fine-tune's step count for a training speed and a time budget."""
        epochs = recovery.plan_epochs(
            budget_s=budget_s,
            s_per_step=s_per_step,
            steps_per_epoch=self._steps_per_epoch(run),
            max_epochs=run.final_epochs,
        )
        return epochs * self._steps_per_epoch(run)

    def _final_fine_tune(
        self, run: _Run, chain: planner.Chain, s_per_step: float | None
    ) -> tuple[int, recovery.RecoveryStop]:
        """The final fine-tune's planned epochs and the callback that may end it earlier.

        The epochs fill the time left (less room for the QAT fine-tune and the export, at the
        trial's measured speed); the callback stops at the target's floor plus the margin,
        at a plateau, or at the deadline.
        """
        left = None if run.deadline is None else max(0.0, run.deadline - time.time())
        epoch_s = None if not s_per_step else s_per_step * self._steps_per_epoch(run)
        reserve_s = 0.0
        if left is not None:
            # QAT runs about twice as slow as float training; one epoch's time is kept for
            # the exports, verification and the latency measurement.
            qat = 2 * self.qat_epochs if self._tries_qat(chain) else 0
            reserve_s = (1 + qat) * epoch_s if epoch_s else 0.1 * left
            reserve_s = min(reserve_s, 0.5 * left)
        budget = None if left is None else left - reserve_s
        epochs = self._final_steps(run, s_per_step, budget) // self._steps_per_epoch(run)
        floor = run.reference.acc + (self.final_margin - self.target.max_acc_drop) / 100.0
        state = self._final_paths()[1]
        resumed = recovery.resume_epochs(state)
        if resumed is not None:
            # A resumed fine-tune keeps its schedules (or, had it ended, trains no further).
            epochs = resumed
        # A sparse chain's schedule must reach its target sparsity before anything may stop
        # it or pick an earlier epoch.
        first = math.ceil(epochs * sparse_build.SCHEDULE_END) if chain.sparse else 1
        stop = recovery.RecoveryStop(
            run.data.x_hold,
            run.data.y_hold,
            floor=floor,
            patience=self.final_patience,
            deadline=None if budget is None else time.time() + budget,
            min_epochs=first,
            say=self._say,
            state_dir=state,
        )
        self._say(
            f"final fine-tune: up to {epochs} epoch(s)"
            + ("" if budget is None else f" in {budget:.0f} s")
            + f", stopping at held-out accuracy {floor:.4f}"
            + (f" once its {first} sparsity-schedule epoch(s) are done" if first > 1 else "")
        )
        return epochs, stop

    def _report_search(self, run: _Run, result: search.StudyResult) -> search.StudyTrial:
        """Starts the report with the search and returns the chosen trial (raises, with the
        report written, when every trial failed)."""
        rows = run.rows = [_trial_row(t) for t in result.trials]
        front = [t.number for t in result.pareto_front(PARETO)]
        self.pareto = [r for r in rows if r["number"] in front]
        self.report = {
            "format": 1,
            "target": self.target.to_dict(),
            "target_text": self.target.describe(),
            "plan": run.plan.to_dict(),
            "data": run.data.describe(),
            "dense": run.reference.to_dict(),
            "search": {
                "optimizer": self.optimizer,
                "seed": self.seed,
                "stop_reason": result.stop_reason,
                "trials": len(rows),
                "complete": sum(r["status"] == "complete" for r in rows),
                "failed": sum(r["status"] == "failed" for r in rows),
                "meeting_resources": sum(bool(r.get("meets_resources")) for r in rows),
                "proxy": self.proxy_config.to_dict(),
                "sensitivity_evaluations": run.cache.size,
                "directory": result.directory,
            },
            "trials": rows,
            "pareto": front,
            "settings": self.get_config(),
        }
        best = choose(result.trials)
        if best is None:
            errs = "; ".join(f"trial {r['number']}: {r['error']}" for r in rows if r["error"])
            self._finish_report(
                met=False,
                summary=f"No trial completed, so there is no model to build. {errs}",
                misses=[],
                wall=time.time() - run.t_start,
            )
            raise errors.PocketFlowError(
                f"automated compression: every trial failed ({errs}); see {self.report_path}"
            )
        chosen = _trial_row(best)
        active = planner.active_params(best.params)
        self.report["chosen"] = {
            "trial": best.number,
            "chain": best.params["chain"],
            "summary": planner.CHAINS[best.params["chain"]].summary,
            "params": active,
            "met_resources_in_search": bool(chosen.get("meets_resources")),
            "proxy": chosen,
        }
        self._say(
            f"chosen: trial {best.number} ({_params_text(active)}), proxy acc "
            f"{chosen['acc']:.4f}, {'meets' if chosen['meets_resources'] else 'MISSES'} the "
            "resource goals; building the final model"
        )
        return best

    def _final(self, run: _Run, best: search.StudyTrial, callbacks) -> tuple:
        """``(model, figures, info)`` of the chosen trial's final build: reused when a
        previous run built it with the same settings, else built and recorded."""
        key = self._final_key(best.params, run.cfg, run.final_epochs)
        try:
            reused = self._load_final(key)
            if reused is not None:
                self._say(f"reusing the final model of trial {best.number} ({reused[2]['tflite']})")
                return reused
            self._claim_final_folder(key)
            final_model, figures, final_info = self._build_final(
                run, best.params, callbacks, best.metrics.get("s_per_step")
            )
            final_info["trial"] = best.number
            atomic_io.write_json(
                os.path.join(self.auto_dir, "final", FINAL_FILE),
                {"key": key, "figures": figures, "info": final_info},
            )
            return final_model, figures, final_info
        except errors.PocketFlowError as e:
            self._finish_report(
                met=False,
                summary=f"The final build of trial {best.number} failed: {e}",
                misses=[],
                wall=time.time() - run.t_start,
            )
            raise

    def _conclude(self, run: _Run, best, figures: dict, final_info: dict) -> None:
        """Checks the final figures against the target and finishes the report."""
        verdict = self.target.check(figures)
        self.met = verdict.met
        self.report["final"] = {**final_info, "figures": figures, "verdict": verdict.to_dict()}
        if run.validation_data is not None:
            self.report["validation"] = self._validation_figures(
                run.model, run.reference, run.validation_data
            )
        self._finish_report(
            met=verdict.met,
            summary=self._summary(verdict, figures, best, run.rows),
            misses=[m.to_dict() for m in verdict.misses],
            wall=time.time() - run.t_start,
        )
        self._say(self.report["answer"]["summary"])
        self._say(f"report: {self.html_path}")

    def _study_config(
        self, model: keras.Model, data: splits.SearchData, cfg: training.TrainConfig
    ) -> dict[str, Any]:
        """What must not change for a rerun to continue the stored study (budgets may)."""
        return json.loads(
            json.dumps(
                {
                    "format": CONFIG_FORMAT,
                    "target": self.target.to_dict(),
                    "model_sha256": candidate.model_fingerprint(model),
                    "data_sha256": splits.fingerprint(
                        data.x_train, data.y_train, data.x_hold, data.y_hold
                    ),
                    "seed": self.seed,
                    "optimizer": self.optimizer,
                    "proxy": {
                        k: v for k, v in self.proxy_config.to_dict().items() if k != "keep_tflite"
                    },
                    "channel_round": self.channel_round,
                    "fine_tune": {
                        k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "seed")
                    },
                    "distillation": None
                    if self.distillation is None
                    else dataclasses.asdict(self.distillation),
                },
                default=str,
            )
        )

    def _check_stored_config(self, config: dict[str, Any]) -> None:
        path = os.path.join(self.auto_dir, CONFIG_FILE)
        try:
            with open(path) as f:
                stored = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise errors.PocketFlowError(f"cannot read {path}: {e}") from e
        for key, value in config.items():
            if stored.get(key) != value:
                shown = {
                    "model_sha256": "the same model (weights and architecture)",
                    "data_sha256": "the same training data and held-out split",
                }
                raise errors.InvalidArgumentError(
                    key,
                    value if key not in shown else f"sha256 {value[:12]}...",
                    f"{shown.get(key, repr(stored.get(key)))}, as stored in {path}: a rerun "
                    "continues the study it holds; use another auto_dir for a new search",
                )

    def _reference(self, model: keras.Model, data: splits.SearchData) -> proxy.Reference:
        """Exports (or reuses) the dense float ``.tflite`` and measures the dense model."""
        path = os.path.join(self.auto_dir, "dense.float.tflite")
        info_path = os.path.join(self.auto_dir, "dense.json")
        if os.path.exists(path) and os.path.exists(info_path):
            with open(info_path) as f:
                info = json.load(f)
            if info.get("sha256") == atomic_io.sha256_file(path):
                return proxy.Reference(**{**info["reference"], "tflite_path": path})
        self._say("exporting the dense model's float .tflite (the reference)")
        exported = candidate.export(model, "float", path, data, child_check=True)
        prof = accounting.profile_model(model)
        ref = proxy.Reference(
            tflite_path=path,
            bytes=exported.bytes,
            bytes_gzip=exported.bytes_gzip,
            acc=proxy.tflite_accuracy(path, data.x_hold, data.y_hold),
            acc_keras=training.evaluate_accuracy(model, data.x_hold, data.y_hold),
            flops=int(prof.total_flops),
            params=int(prof.total_params),
        )
        atomic_io.write_json(info_path, {"sha256": exported.sha256, "reference": ref.to_dict()})
        return ref

    def _int8_methods(self, chain: planner.Chain) -> tuple[str, ...]:
        """How the final build makes an int8 chain's file (``auto_int8_final``; PTQ only for
        a sparse chain)."""
        return ("ptq",) if chain.sparse else INT8_METHODS[self.int8_final]

    def _tries_qat(self, chain: planner.Chain) -> bool:
        return chain.int8 and "qat" in self._int8_methods(chain)

    def _int8_speedup(
        self, model: keras.Model, data: splits.SearchData, reference: proxy.Reference
    ) -> float | None:
        """The dense model's int8 speed-up over its float file on this host (measured once
        per work directory, so a rerun plans the same search space), ``None`` when its int8
        export is refused."""
        info_path = os.path.join(self.auto_dir, "dense.int8.json")
        float_sha = atomic_io.sha256_file(reference.tflite_path)
        try:
            with open(info_path) as f:
                info = json.load(f)
            if info.get("float_sha256") == float_sha:
                return info["speedup"]
        except (OSError, ValueError, KeyError):
            pass
        self._say("measuring the dense model's int8 speed-up (it sets the pruning range)")
        path = os.path.join(self.auto_dir, "dense.int8.tflite")
        try:
            candidate.export(model, "int8", path, data, child_check=False)
        except errors.PocketFlowError as e:
            self._say(f"  int8 export of the dense model refused ({e}): speed-up assumed")
            return None
        ratio = latency.interleaved_ratio(
            path, reference.tflite_path, rounds=self.proxy_config.latency_rounds
        )
        atomic_io.write_json(info_path, {"float_sha256": float_sha, "speedup": ratio.speedup})
        self._say(f"  int8 is {ratio.speedup:.2f}x faster than float here")
        return ratio.speedup

    def _storage(
        self,
        model: keras.Model,
        data: splits.SearchData,
        reference: proxy.Reference,
        prune: Callable[[float], tuple[keras.Model, float]] | None = None,
    ) -> storage_probe.StorageFacts:
        """The file-size ratios a byte goal plans with, measured on the dense model (once per
        work directory and target, so a rerun plans the same search space). ``prune(keep)``
        builds the pruned probe model (:meth:`_pruned_probe`) when a chain prunes."""
        info_path = os.path.join(self.auto_dir, "dense.storage.json")
        chains = planner.allowed_chains(self.target)
        keep = None
        if prune is not None and any(c.prunes for c in chains):
            facts = planner.model_facts(model, channel_round=self.channel_round)
            if facts.prunable:
                keep = storage_probe.probe_params_keep(facts.min_params_keep)
        key = {
            "float_sha256": atomic_io.sha256_file(reference.tflite_path),
            "chains": [c.name for c in chains],
            # A file measured before the pruned probe existed lacks its line: measured again.
            "pruned_probe_keep": keep,
        }
        try:
            with open(info_path) as f:
                info = json.load(f)
            if info.get("key") == key:
                return storage_probe.StorageFacts.from_dict(info["storage"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._say("measuring what this model's files weigh (it sets the byte goal's ranges)")
        pruned = None
        if keep is not None:
            t0 = time.time()
            pruned = prune(keep)
            self._say(
                f"  pruned probe: parameter keep {pruned[1]:.3g} (asked {keep:g}), "
                f"{time.time() - t0:.0f} s"
            )
        storage = storage_probe.measure(model, chains, data.x_rep, reference.bytes, pruned=pruned)
        atomic_io.write_json(info_path, {"key": key, "storage": storage.to_dict()})
        return storage

    def _pruned_probe(self, run: _Run, keep: float) -> tuple[keras.Model, float]:
        """The dense model channel-pruned to parameter keep ``keep`` as the pruning chains'
        trials prune it (same allocation, cache and seed; no fine-tune: a file's size depends
        on the channels kept, not on the weights' values), and its parameter ratio."""
        params = {"chain": "prune", "params_keep": keep, "criterion": "l1", "lr_factor": 1.0}
        cand = candidate.build(
            run.model,
            run.teacher,
            params,
            run.data,
            train_config=run.cfg,
            facts=run.facts,
            steps=0,
            calib_samples=self.proxy_config.calib_samples,
            eval_samples=self.proxy_config.eval_samples,
            channel_round=self.channel_round,
            distill=self.distillation,
            # The sensitivity scores it computes are the ones the trials would: shared.
            cache=run.cache,
            prune_seed=self.seed,
            seed=self.seed,
        )
        return cand.pruned, float(cand.params_ratio)

    def _build_final(
        self, run: _Run, params: dict[str, Any], callbacks, s_per_step: float | None
    ) -> tuple:
        """The chosen trial rebuilt with the full budget, exported, verified and measured."""
        model, teacher, data, cfg = run.model, run.teacher, run.data, run.cfg
        reference, facts, cache = run.reference, run.facts, run.cache
        t0 = time.time()
        chain = planner.CHAINS[params["chain"]]
        stop = None
        if chain.fine_tunes:
            epochs, stop = self._final_fine_tune(run, chain, s_per_step)
            cfg = cfg.replace(epochs=epochs)
            callbacks = [*(callbacks or []), stop]
        folder = os.path.join(self.auto_dir, "final")
        os.makedirs(folder, exist_ok=True)
        cand = candidate.build(
            model,
            teacher,
            params,
            data,
            train_config=cfg,
            facts=facts,
            steps=None,
            calib_samples=self.final_calib_samples,
            eval_samples=self.proxy_config.eval_samples,
            channel_round=self.channel_round,
            distill=self.distillation,
            cache=cache,
            prune_seed=self.seed,
            seed=self.seed,
            checkpoint_dir=os.path.join(folder, "ckpt") if chain.fine_tunes else None,
            callbacks=callbacks,
            verbose=self._keras_verbose,
        )
        # The fit released its backup; the state that went with it goes too.
        shutil.rmtree(self._final_paths()[1], ignore_errors=True)
        self.pruned_model = cand.pruned
        if cand.history is not None:
            self.history = keras.callbacks.History()
            self.history.history = cand.history
            # A History as Keras leaves it: `epoch` lists the epochs trained (run records
            # count them).
            self.history.epoch = list(range(len(next(iter(cand.history.values()), []))))
        options = []  # (name, keras model, export result); the best held-out accuracy wins
        failures = []
        if chain.int8:
            plans = self._int8_methods(chain)
            if plans != INT8_METHODS[self.int8_final]:
                failures.append(f"qat: {SPARSE_NO_QAT}")
                self._say(f"int8 by PTQ only: {SPARSE_NO_QAT}")
            for how in plans:
                try:
                    keras_model = cand.model
                    if how == "qat":
                        self._say(f"quantization-aware fine-tune ({self.qat_epochs} epoch(s))")
                        keras_model = candidate.qat_finetune(
                            cand.model,
                            teacher,
                            data,
                            train_config=cfg.replace(
                                learning_rate=cfg.learning_rate
                                * planner.active_params(params).get("lr_factor", 1.0)
                            ),
                            epochs=self.qat_epochs,
                            distill=self.distillation,
                            verbose=self._keras_verbose,
                            weight_bits=chain.weight_bits,
                        )
                    path = os.path.join(folder, f"model.{how}.{chain.export_mode}.tflite")
                    # The deployable keeps the user's output contract (probabilities stay
                    # probabilities); training and the search ran on logits.
                    keras_model = heads.attach(keras_model, self.output_head)
                    res = candidate.export(
                        keras_model,
                        chain.export_mode,
                        path,
                        data,
                        child_check=True,
                        sparse=chain.sparse,
                    )
                    acc = proxy.tflite_accuracy(path, data.x_hold, data.y_hold)
                    options.append((how, keras_model, res, acc))
                    self._say(f"{chain.export_mode} by {how.upper()}: held-out accuracy {acc:.4f}")
                except (errors.PocketFlowError, *_QAT_LIBRARY_ERRORS) as e:
                    if isinstance(e, tf.errors.ResourceExhaustedError):
                        raise  # out of memory: the machine, not the model
                    if isinstance(e, errors.PocketFlowError):
                        why = str(e)
                    elif how == "qat":
                        # TFMOT and TensorFlow refuse a layer they cannot quantize with their
                        # own errors, at quantize or fit time; that ends QAT only: PTQ's file
                        # (tried first, under auto_int8_final="auto") still stands. TensorFlow's messages carry the traced
                        # code: their first line says what failed.
                        first = next((s for s in str(e).splitlines() if s.strip()), "")
                        why = f"TFMOT could not quantize the model ({type(e).__name__}: {first})"
                    else:  # from PTQ such an error is a bug: raised as it is
                        raise
                    failures.append(f"{how}: {why}")
                    self._say(f"{chain.export_mode} by {how.upper()} refused: {why}")
            if not options:
                raise errors.VerificationError(
                    f"no {chain.export_mode} export of the final model passed verification: "
                    + "; ".join(failures)
                )
            # max keeps the first of equals: PTQ (listed first) wins ties -- the simpler model
            how, final_model, exported, _ = max(options, key=lambda o: o[3])
        else:
            how = "float"
            final_model = heads.attach(cand.model, self.output_head)
            path = os.path.join(folder, "model.float.tflite")
            exported = candidate.export(
                final_model, "float", path, data, child_check=True, sparse=chain.sparse
            )
        is_qat = how == "qat"
        self.save_extension = ".h5" if is_qat else ".keras"
        model_path = os.path.join(folder, "model" + self.save_extension)
        model_io.save_model(final_model, model_path)
        self.tflite_path, self.deploy_mode = exported.path, chain.export_mode
        self._say(f"measuring the final .tflite ({self.final_latency_rounds} latency rounds)")
        figures = proxy.measure(
            exported.path,
            mode=chain.export_mode,
            reference=reference,
            data=data,
            flops_ratio=cand.flops_ratio,
            params_ratio=cand.params_ratio,
            bytes_gzip=exported.bytes_gzip,
            latency_rounds=self.final_latency_rounds,
        )
        figures["acc_keras"] = training.evaluate_accuracy(final_model, data.x_hold, data.y_hold)
        info = {
            "trial": None,
            "chain": chain.name,
            "params": planner.active_params(params),
            "int8_method": how if chain.int8 else None,
            "int8_options": {o[0]: o[3] for o in options},
            "int8_refused": failures,
            "tflite": exported.path,
            "sha256": exported.sha256,
            "verification": exported.report.to_dict(),
            "model_path": model_path,
            "groups": cand.groups,
            "sparsity": cand.sparsity,
            "flops_keep_applied": cand.flops_keep_applied,
            "params_keep_applied": cand.params_keep_applied,
            "epochs": cfg.epochs if chain.fine_tunes else None,
            "fine_tune": None if stop is None else {"planned_epochs": cfg.epochs, **stop.to_dict()},
            "wall_s": round(time.time() - t0, 1),
        }
        return final_model, figures, info

    def _final_key(
        self, params: dict[str, Any], cfg: training.TrainConfig, final_epochs: int | None
    ) -> dict[str, Any]:
        """Everything the final build depends on beyond the study's own configuration."""
        return json.loads(
            json.dumps(
                {
                    "params": params,
                    "train": cfg.to_dict(),
                    "final_epochs": final_epochs,
                    "final_patience": self.final_patience,
                    "final_margin": self.final_margin,
                    "int8_final": self.int8_final,
                    "qat_epochs": self.qat_epochs,
                    "final_calib_samples": self.final_calib_samples,
                    "eval_samples": self.proxy_config.eval_samples,
                    "final_latency_rounds": self.final_latency_rounds,
                    "config": self._stored_config_sha(),
                },
                default=str,
            )
        )

    def _stored_config_sha(self) -> str:
        return atomic_io.sha256_file(os.path.join(self.auto_dir, CONFIG_FILE))

    def _final_paths(self) -> tuple[str, str]:
        """``(backup folder of the final fine-tune, its RecoveryStop state folder)``."""
        folder = os.path.join(self.auto_dir, "final")
        return os.path.join(folder, "ckpt"), os.path.join(folder, "recovery")

    def _claim_final_folder(self, key: dict[str, Any]) -> None:
        """Keeps what a killed final build left in ``final/`` only when it is this build's.

        A rerun with a larger ``--auto_max_trials`` may choose another trial: its backup
        holds another architecture's weights and must not be restored into this one. A
        recovery state whose backup is gone (removed after its fit, before ``final.json``)
        describes a fine-tune that will run again from the start.
        """
        ckpt, state = self._final_paths()
        path = os.path.join(self.auto_dir, "final", FINAL_BUILD_FILE)
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, ValueError):
            stored = None
        if stored != key and os.path.exists(ckpt):
            self._say("a previous final build of other settings left a backup: starting afresh")
            shutil.rmtree(ckpt)
        if not os.path.isdir(os.path.join(ckpt, "backup")):
            shutil.rmtree(state, ignore_errors=True)
        if stored != key:
            atomic_io.write_json(path, key)

    def _load_final(self, key: dict[str, Any]):
        """The final model a previous run built for the same trial and settings, if intact.

        A rerun of a finished search (same budgets, or more trials that found nothing
        better) then costs no fine-tuning; any doubt (other key, missing or changed file)
        means a rebuild.
        """
        path = os.path.join(self.auto_dir, "final", FINAL_FILE)
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, ValueError):
            return None
        info = stored.get("info") or {}
        if stored.get("key") != key or not os.path.exists(info.get("tflite", "")):
            return None
        if atomic_io.sha256_file(info["tflite"]) != info.get("sha256"):
            return None
        try:
            final_model = model_io.load_model(info["model_path"])
        except (errors.PocketFlowError, OSError, ValueError):
            return None
        self.tflite_path = info["tflite"]
        self.deploy_mode = stored["figures"]["mode"]
        self.save_extension = os.path.splitext(info["model_path"])[1]
        self.pruned_model = None
        return final_model, stored["figures"], info

    def _validation_figures(self, model, reference, validation_data) -> dict[str, Any]:
        """Reporting-only accuracy on ``validation_data`` (chosen already; changes nothing)."""
        xv, yv = validation_data
        if yv.ndim == 2:
            yv = yv.argmax(axis=1)
        return {
            "note": "evaluated after every choice was made; never used by the search",
            "n": len(yv),
            "acc_dense": proxy.tflite_accuracy(reference.tflite_path, xv, yv),
            "acc_final": proxy.tflite_accuracy(self.tflite_path, xv, yv),
        }

    def _summary(self, verdict: Verdict, f: dict, best, rows: list[dict]) -> str:
        figures = (
            f"{1 / f['latency_ratio']:.2f}x faster, FLOPs {f['flops_ratio']:.2f}x, "
            f"{human_bytes(f['bytes'])} ({f['bytes_ratio']:.2f}x of dense float, "
            f"{f['mode']}), held-out accuracy {f['acc']:.4f} vs {f['acc_dense']:.4f} dense "
            f"({f['acc_drop']:+.2f} pt drop)"
        )
        val = self.report.get("validation")
        if val:
            figures += (
                f"; on the test data (validation_data, after every choice) "
                f"{val['acc_final']:.4f} vs {val['acc_dense']:.4f} dense "
                f"({100.0 * (val['acc_dense'] - val['acc_final']):+.2f} pt drop)"
            )
        # A warning of the plan (a dense model near guessing) also ends the answer: "target
        # met" alone would read as a good result.
        for note in (self.report.get("plan") or {}).get("notes", []):
            if note.startswith("WARNING: "):
                figures += f". {note}"
        if verdict.met:
            return f"Target met ({self.target.describe()}): {figures}."
        text = f"Target NOT met ({self.target.describe()}): {verdict.explain()}. Final model: {figures}."
        complete = [r for r in rows if r["status"] == "complete"]
        if not any(r.get("meets_resources") for r in complete):
            text += (
                f" No trial of {len(rows)} met the resource goals; trial {best.number} came "
                f"closest ({best.metrics.get('missed') or 'see its row'})."
            )
        elif verdict.resource_misses:
            text += (
                f" Trial {best.number} met the resource goals in the search but the final "
                "model, measured again, did not (a measurement near the limit: latency is "
                "noisy; rerun with more trials or a margin)."
            )
        else:
            text += (
                " The resource goals are met; the accuracy floor is not: more fine-tuning "
                "epochs, a larger max_acc_drop or a less aggressive target may get there."
            )
        if self.pareto:
            text += " Best trade-offs (Pareto front of accuracy x latency x bytes): " + "; ".join(
                f"#{r['number']} {r['chain']}: acc {r['acc']:.3f}, {r['speedup']:.2f}x faster, "
                f"{human_bytes(r['bytes'])}"
                for r in self.pareto
            )
        return text

    def _finish_report(self, *, met: bool, summary: str, misses: list, wall: float) -> None:
        self.met = met
        self.report["answer"] = {"met": met, "summary": summary, "misses": misses}
        self.report["wall_s"] = round(wall, 1)
        self.report_path, self.html_path = report.write(self.report, self.auto_dir)
        self.report["files"] = {"json": self.report_path, "html": self.html_path}

    @property
    def _keras_verbose(self) -> int:
        # 1 is "progress lines" here: Keras's progress bar would flood logs; 2+ shows epochs.
        return 2 if self.verbose >= 2 else 0

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[auto] {msg}", flush=True)


def choose(trials: list[search.StudyTrial]) -> search.StudyTrial | None:
    """The trial to build: the highest score (see :func:`proxy.score`), so a trial meeting
    the resource goals whenever one does; among equal scores the faster, then the smaller,
    then the earlier one.

    Example:
        >>> t = [search.StudyTrial(0, {}, 0, "complete", 0.9, {"latency_ratio": 0.6}),
        ...      search.StudyTrial(1, {}, 0, "complete", 0.9, {"latency_ratio": 0.4}),
        ...      search.StudyTrial(2, {}, 0, "failed")]
        >>> choose(t).number
        1
    """

    def key(t: search.StudyTrial) -> tuple:
        lat = t.metrics.get("latency_ratio")
        size = t.metrics.get("bytes")
        return (
            t.value,
            -(lat if isinstance(lat, int | float) else np.inf),
            -(size if isinstance(size, int | float) else np.inf),
            -t.number,
        )

    done = [t for t in trials if t.status == "complete" and t.value is not None]
    return max(done, key=key, default=None)


def _import_optimizer(name: str) -> None:
    module = f"pocketflow_tf.hp_optimizers.{OPTIMIZERS[name]}"
    try:
        importlib.import_module(module)  # registers the optimiser
    except ImportError as e:
        raise errors.InvalidArgumentError(
            "auto_optimizer", name, f"an optimiser whose module imports ({module}: {e})"
        ) from e


def _trial_row(t: search.StudyTrial) -> dict[str, Any]:
    """One flat row of the per-trial table."""
    m = t.metrics
    row = {
        "number": t.number,
        "status": t.status,
        "value": t.value,
        "chain": t.params.get("chain"),
        "params": planner.active_params(t.params),
        "wall_s": None if t.wall_s is None else round(t.wall_s, 1),
        "error": t.error,
    }
    for key in (
        "acc",
        "acc_predicted",
        "acc_drop",
        "latency_ratio",
        "speedup",
        "bytes",
        "bytes_ratio",
        "flops_ratio",
        "params_ratio",
        "mode",
        "meets_resources",
        "meets_target",
        "missed",
        "counts",
        "sparsity",
        "tflite",
    ):
        row[key] = m.get(key)
    return row


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


__all__ = ["INT8_FINAL", "OPTIMIZERS", "PARETO", "AutoLearner", "choose"]
