"""``WeightSparseLearner`` (``--learner weight-sparse``): gradual magnitude pruning via TFMOT.

The learner starts from the user's trained model (never re-initialised), wraps the layers
chosen by :mod:`.ratios` in TFMOT's ``PruneLowMagnitude`` with a per-layer
``PolynomialDecay`` built by :mod:`.schedule`, fine-tunes (optionally distilled, through the
base class) with TFMOT's ``UpdatePruningStep`` callback, and strips the wrappers at the end.

Why layer by layer: ``prune_low_magnitude(model)`` refuses a whole model containing any
layer its registry does not know -- e.g. the in-model ``Rescaling`` normalisation of every
net in :mod:`pocketflow_tf.nets` (TFMOT 0.8.1 registers ``Rescaling.__class__``, i.e.
``type``, by mistake). So the model is cloned with ``keras.models.clone_model`` and only
the chosen layers are wrapped.

Everything that can be wrong is checked before training starts: the knobs in the
constructor; the model (no prunable layer) and the schedule against the planned number of
steps (:func:`.schedule.plan_schedule`) in :meth:`WeightSparseLearner.prepare`, which
:meth:`~pocketflow_tf.learner.Learner.fit` calls before any file is written.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.weight_sparse import WeightSparseLearner
    >>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64),
    ...                       keras.layers.Dense(64), keras.layers.Dense(4)])
    >>> x, y = np.random.rand(64, 64).astype("float32"), np.arange(64) % 4
    >>> ws = WeightSparseLearner(training.TrainConfig(epochs=2, batch_size=16),
    ...                          ws_prune_ratio=0.5, ws_min_params=100, verbose=0)
    >>> out = ws.fit(m, x, y)
    >>> round(float(np.mean(out.layers[1].kernel.numpy() == 0)), 3)
    0.5
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import tensorflow_model_optimization as tfmot

from pocketflow_tf import errors, learner, options, sparsity, training
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.weight_sparse import optimal_search
from pocketflow_tf.learners.weight_sparse import ratios as ratios_lib
from pocketflow_tf.learners.weight_sparse import schedule as schedule_lib

#: PocketFlow's default target sparsity (``ws_prune_ratio``) for unstructured pruning.
DEFAULT_PRUNE_RATIO = 0.75
#: A pruned layer may end at most this far below its planned ratio before
#: :meth:`WeightSparseLearner.finalize` warns (0.5 pt, the issue's acceptance tolerance).
SPARSITY_TOLERANCE = 0.005


@dataclasses.dataclass
class SparsityPlan:
    """What the learner will do to a model: per-layer ratios and the schedule.

    Attributes:
        target: Parameter-weighted target sparsity of the pruned layers.
        protocol: Per-layer ratio protocol (``uniform``, ``heurist``, ``optimal``).
        layers: Every kernel layer, pruned or not, with its reason when left dense.
        ratios: ``{layer name: final sparsity}`` of the pruned layers.
        schedule: The gradual schedule in absolute steps.
        m_by_n: Structured ``(m, n)`` sparsity, or ``None``.

    Example:
        >>> plan = SparsityPlan(0.5, "uniform", [], {}, None, None)
        >>> plan.to_dict()["protocol"]
        'uniform'
    """

    target: float
    protocol: str
    layers: list[ratios_lib.LayerInfo]
    ratios: dict[str, float]
    schedule: schedule_lib.ScheduleSpec | None
    m_by_n: tuple[int, int] | None

    @property
    def pruned_params(self) -> int:
        """Prunable weights in the pruned layers.

        Example:
            >>> SparsityPlan(0.5, "uniform", [], {}, None, None).pruned_params
            0
        """
        return sum(i.params for i in self.layers if i.name in self.ratios)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for run records.

        Example:
            >>> SparsityPlan(0.5, "uniform", [], {}, None, None).to_dict()["schedule"] is None
            True
        """
        return {
            "target": self.target,
            "protocol": self.protocol,
            "m_by_n": None if self.m_by_n is None else list(self.m_by_n),
            "ratios": dict(self.ratios),
            "weighted_sparsity": ratios_lib.weighted_sparsity(self.layers, self.ratios),
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "layers": [i.to_dict() for i in self.layers],
        }


_SHARE = {"low": 0, "high": 1}
_M_BY_N = "None or a pair (m, n) of integers with 0 < m < n, e.g. (2, 4)"


@dataclasses.dataclass(frozen=True)
class WeightSparseOptions(options.Options):
    """The ``ws_*`` options of :class:`WeightSparseLearner` (see its arguments).

    Example:
        >>> WeightSparseOptions(ws_m_by_n=(2, 4)).ws_prune_ratio
        0.5
        >>> WeightSparseOptions(ws_m_by_n=(2, 4), ws_prune_ratio_prtl="heurist")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `ws_prune_ratio_prtl`: 'heurist'. Accepted: 'uniform' with ws_m_by_n=(2, 4) (every pruned layer is 2:4).
    """

    ws_prune_ratio: float | None = options.option(
        None,
        help=f"target sparsity (default {DEFAULT_PRUNE_RATIO}, or m/n with ws_m_by_n)",
        high_open=True,
        accepted="a number in [0, 1) (the share of weights set to zero)",
        **_SHARE,
    )
    ws_prune_ratio_prtl: str = options.option(
        "uniform",
        choices=ratios_lib.PROTOCOLS,
        help="per-layer ratios: uniform, heurist (bigger layers pruned more) or optimal (searched)",
    )
    ws_prune_ratio_exp: float = options.option(
        schedule_lib.DEFAULT_POWER,
        help="exponent of the polynomial sparsity ramp",
        low=0,
        low_open=True,
        accepted="a finite number > 0",
    )
    ws_iter_ratio_beg: float = options.option(
        schedule_lib.DEFAULT_ITER_RATIO_BEG,
        help="fraction of the training steps where pruning begins",
        **_SHARE,
    )
    ws_iter_ratio_end: float = options.option(
        schedule_lib.DEFAULT_ITER_RATIO_END,
        help="fraction of the training steps where the target is reached",
        **_SHARE,
    )
    ws_mask_update_step: int | None = options.option(
        None, help="steps between mask updates (default: ~10 updates)", low=1
    )
    ws_skip_first_last: bool = options.option(True, help="keep the first and last layers dense")
    ws_min_params: int = options.option(1000, help="layers with fewer weights stay dense", low=0)
    ws_m_by_n: tuple[int, int] | None = options.option(
        None,
        help="structured sparsity 'm:n' (m zeros in every n), e.g. 2:4",
        parse=options.parse_pair,
        metavar="'m:n', e.g. '2:4'",
        accepted=_M_BY_N,
    )
    ws_ratio_search: str = options.option(
        "tpe",
        choices=optimal_search.OPTIMIZERS,
        help="optimal: the optimiser of the per-layer ratios (scored without training on "
        "held-out training images)",
    )
    ws_search_trials: int = options.option(
        40, help="optimal: per-layer ratio plans proposed", low=1
    )
    ratio_search: ratios_lib.RatioSearch | None = options.hook(
        "(layer_infos, target) -> {layer: ratio}", help="replaces the optimal search"
    )

    def check(self) -> None:
        if self.ws_m_by_n is not None:
            m, n = self.ws_m_by_n
            if not 0 < m < n:
                raise errors.InvalidArgumentError("ws_m_by_n", self.ws_m_by_n, _M_BY_N)
            if self.ws_prune_ratio is None:
                self._set("ws_prune_ratio", m / n)
            elif abs(self.ws_prune_ratio - m / n) > 1e-9:
                raise errors.InvalidArgumentError(
                    "ws_prune_ratio",
                    self.ws_prune_ratio,
                    f"{m / n} (= {m}/{n}) or None with ws_m_by_n={self.ws_m_by_n}",
                )
            if self.ws_prune_ratio_prtl != "uniform":
                raise errors.InvalidArgumentError(
                    "ws_prune_ratio_prtl",
                    self.ws_prune_ratio_prtl,
                    f"'uniform' with ws_m_by_n={self.ws_m_by_n} (every pruned layer is {m}:{n})",
                )
        elif self.ws_prune_ratio is None:
            self._set("ws_prune_ratio", DEFAULT_PRUNE_RATIO)
        # The end after the beginning (the ranges above are checked per field).
        schedule_lib.check_schedule_args(
            self.ws_iter_ratio_beg,
            self.ws_iter_ratio_end,
            self.ws_mask_update_step,
            self.ws_prune_ratio_exp,
        )


@learner.register("weight-sparse", "weight_sparse", "ws", "WeightSparseLearner")
class WeightSparseLearner(learner.Learner):
    """Gradual magnitude pruning (Zhu & Gupta 2017) of a trained model through TFMOT.

    Args:
        train_config: Fine-tuning settings (the base class's).
        ws_prune_ratio: Target sparsity in ``[0, 1)``: the parameter-weighted share of zero
            weights in the pruned layers. Default 0.75 (PocketFlow's), or ``m / n`` with
            ``ws_m_by_n``.
        ws_prune_ratio_prtl: Per-layer protocol: ``"uniform"``, ``"heurist"`` (bigger layers
            pruned more) or ``"optimal"`` (searched under the target: ``ratio_search``, by
            default a :class:`~.optimal_search.ProxyRatioSearch` bound to the model and
            training data at :meth:`fit`). See
            :mod:`~pocketflow_tf.learners.weight_sparse.ratios`.
        ws_prune_ratio_exp: Exponent of the polynomial ramp (PocketFlow's default 3).
        ws_iter_ratio_beg: Fraction of the planned steps at which pruning begins.
        ws_iter_ratio_end: Fraction at which the target is reached; the rest fine-tunes with
            fixed masks.
        ws_mask_update_step: Steps between mask updates; ``None`` picks about ten updates
            over the window (at most every 100 steps).
        ws_skip_first_last: Keep the first and last prunable layers dense.
        ws_min_params: Layers with fewer prunable weights than this stay dense.
        ws_m_by_n: Structured sparsity ``(m, n)``: ``m`` zeros in every ``n`` consecutive
            input-channel weights, e.g. ``(2, 4)``. TFMOT applies it in one shot at the first
            training step (the gradual schedule does not apply) and only to layers whose
            input dimension is a multiple of ``n``; the protocol must be ``uniform``.
        ws_ratio_search: Optimiser of the default ``optimal`` search: ``"tpe"``, ``"gp"``
            or ``"random"``.
        ws_search_trials: Plans it proposes (each scored without training, on held-out
            training images).
        ratio_search: ``ratio_search(layer_infos, target) -> {layer name: ratio}``, the
            per-layer search used by ``"optimal"`` (overrides the two options above).
        **kwargs: The base :class:`~pocketflow_tf.learner.Learner` arguments (distillation,
            teacher, log_dir, checkpoint_dir, verbose).

    Attributes:
        plan: The :class:`SparsityPlan` of the last :meth:`prepare` (``None`` before).
        report: Per-kernel :class:`~pocketflow_tf.sparsity.SparsityReport` of the last
            finalised model (``None`` before).

    Raises:
        InvalidArgumentError: On any knob out of range, before anything else happens.

    Example:
        >>> WeightSparseLearner(ws_prune_ratio=1.0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `ws_prune_ratio`: 1.0. Accepted: a number in [0, 1) (the share of weights set to zero).
    """

    name = "weight-sparse"
    Options = WeightSparseOptions

    def __init__(self, train_config: training.TrainConfig | None = None, **kwargs: Any):
        super().__init__(train_config, **kwargs)
        if self.ratio_search is None and self.ws_prune_ratio_prtl == "optimal":
            self.ratio_search = optimal_search.ProxyRatioSearch(
                self.ws_ratio_search,
                self.ws_search_trials,
                seed=self.train_config.seed,
                verbose=bool(self.verbose),
            )
        self.plan: SparsityPlan | None = None
        self.report: sparsity.SparsityReport | None = None

    # -- planning ----------------------------------------------------------------------
    def make_plan(self, model: keras.Model, total_steps: int) -> SparsityPlan:
        """Decides per-layer ratios and the schedule for ``model``; trains nothing.

        Args:
            model: The trained model to prune.
            total_steps: Planned training steps (batches per epoch x epochs).

        Returns:
            The :class:`SparsityPlan`.

        Raises:
            InvalidArgumentError: If the model has no layer to prune, or the schedule
                cannot reach its target within ``total_steps``.
            UnsupportedModelError: For a subclassed model (no layer graph to clone).

        Example:
            >>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="a"),
            ...                       keras.layers.Dense(64, name="b"),
            ...                       keras.layers.Dense(4, name="c")])
            >>> plan = WeightSparseLearner(ws_min_params=100).make_plan(m, 100)
            >>> plan.ratios, plan.schedule.begin_step, plan.schedule.end_step
            ({'b': 0.75}, 10, 50)
        """
        if not isinstance(model, keras.Model):
            raise errors.InvalidArgumentError(
                "model", type(model).__name__, "a keras.Model of the framework's Keras (tf-keras)"
            )
        if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
            raise errors.UnsupportedModelError(
                f"model {model.name!r} is a subclassed model; weight-sparse needs a functional "
                "or Sequential model (its layers are cloned and wrapped one by one)"
            )
        infos = ratios_lib.layer_infos(
            model,
            min_params=self.ws_min_params,
            skip_first_last=self.ws_skip_first_last,
            m_by_n=self.ws_m_by_n,
        )
        if not any(i.prunable for i in infos):
            found = "; ".join(f"{i.name} ({i.class_name}): {i.reason}" for i in infos)
            raise errors.InvalidArgumentError(
                "model",
                f"{model.name} with no layer to prune ({found or 'no kernel layer at all'})",
                "a model with at least one Conv/Dense layer that TFMOT can prune and the "
                "first/last and size rules leave prunable (see ws_skip_first_last, "
                "ws_min_params)",
            )
        spec = None
        if self.ws_m_by_n is None:
            spec = schedule_lib.plan_schedule(
                total_steps,
                iter_ratio_beg=self.ws_iter_ratio_beg,
                iter_ratio_end=self.ws_iter_ratio_end,
                mask_update_step=self.ws_mask_update_step,
                power=self.ws_prune_ratio_exp,
            )
        ratios = ratios_lib.resolve_ratios(
            self.ws_prune_ratio_prtl, infos, self.ws_prune_ratio, ratio_search=self.ratio_search
        )
        return SparsityPlan(
            self.ws_prune_ratio, self.ws_prune_ratio_prtl, infos, ratios, spec, self.ws_m_by_n
        )

    # -- the Learner contract ----------------------------------------------------------
    def adapt(self, model: keras.Model, x, y) -> None:
        """Refuses a dataset of unknown length and binds the ``optimal`` search to the
        training data (called by :meth:`~pocketflow_tf.learner.Learner.fit` first).

        Raises:
            InvalidArgumentError: For a ``tf.data.Dataset`` of unknown length, since the
                schedule is planned in steps (use ``dataset.apply(
                tf.data.experimental.assert_cardinality(n))``).

        Example:
            >>> ds = tf.data.Dataset.range(4).repeat()
            >>> WeightSparseLearner().adapt(None, ds, None)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x`: 'a tf.data.Dataset of unknown or infinite length'. Accepted: arrays, or a finite dataset of known length (apply tf.data.experimental.assert_cardinality(n)): the pruning schedule is planned in training steps.
        """
        if isinstance(x, tf.data.Dataset) and int(x.cardinality()) < 1:
            raise errors.InvalidArgumentError(
                "x",
                "a tf.data.Dataset of unknown or infinite length",
                "arrays, or a finite dataset of known length (apply "
                "tf.data.experimental.assert_cardinality(n)): the pruning schedule is "
                "planned in training steps",
            )
        if isinstance(self.ratio_search, optimal_search.ProxyRatioSearch):
            # The proxy prunes this model's kernels (and restores them) on training images.
            self.ratio_search.bind(model, x, y)

    def prepare(self, model: keras.Model) -> keras.Model:
        """Plans, then wraps the chosen layers of a copy of ``model`` for pruning.

        Needs the planned number of steps, which :meth:`fit` sets (``self.total_steps``).

        Example:
            >>> ws = WeightSparseLearner(ws_min_params=100)
            >>> ws.total_steps = 100
            >>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64),
            ...                       keras.layers.Dense(64), keras.layers.Dense(4)])
            >>> [type(l).__name__ for l in ws.prepare(m).layers]
            ['Dense', 'PruneLowMagnitude', 'Dense']
        """
        if self.total_steps is None:
            raise errors.InvalidArgumentError(
                "total_steps",
                None,
                "the planned number of training steps: call fit(), or set learner.total_steps "
                "before prepare()",
            )
        plan = self.make_plan(model, self.total_steps)
        self.plan = plan
        # A copy first: the wrappers below adopt the copy's layers (and so its trained
        # weights) as TFMOT's prune_low_magnitude does, and the user's model stays untouched.
        work = learner.copy_model(model)

        def wrap(layer, prefix=""):
            if isinstance(layer, keras.Model):
                return keras.models.clone_model(
                    layer, clone_function=lambda inner: wrap(inner, prefix + layer.name + "/")
                )
            ratio = plan.ratios.get(prefix + layer.name)
            if not ratio:
                return layer
            kwargs = {"sparsity_m_by_n": plan.m_by_n} if plan.m_by_n else {}
            # With m_by_n, TFMOT ignores the schedule (one-shot mask at step 1) but still
            # needs one; a constant-0 schedule documents that nothing gradual happens.
            sched = (
                tfmot.sparsity.keras.ConstantSparsity(0.0, 0)
                if plan.m_by_n
                else plan.schedule.to_tfmot(ratio)
            )
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched, **kwargs)

        return keras.models.clone_model(work, clone_function=wrap)

    def object_scope(self):
        """TFMOT's pruning wrappers, for rebuilding the prepared model elsewhere."""
        return tfmot.sparsity.keras.prune_scope()

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """TFMOT's ``UpdatePruningStep`` (required), plus ``PruningSummaries`` with a log_dir.

        Example:
            >>> [type(c).__name__ for c in WeightSparseLearner().callbacks()]
            ['UpdatePruningStep']
        """
        cbs: list[keras.callbacks.Callback] = [tfmot.sparsity.keras.UpdatePruningStep()]
        if self.log_dir:
            # A sub-folder: the base class's TensorBoard callback owns log_dir/train.
            cbs.append(tfmot.sparsity.keras.PruningSummaries(os.path.join(self.log_dir, "pruning")))
        return cbs

    def finalize(self, model: keras.Model) -> keras.Model:
        """Strips the pruning wrappers and records the per-kernel sparsity reached.

        Warns when a pruned layer ended more than 0.5 pt below its planned ratio (e.g. a
        run that trained fewer steps than planned).

        Example:
            >>> ws.finalize(wrapped_model)  # doctest: +SKIP
        """
        stripped = tfmot.sparsity.keras.strip_pruning(model)
        self.report = sparsity.sparsity_report(stripped)
        if self.plan is not None:
            # Layer path -> its pruned kernel (a separable conv's depthwise kernel is not).
            reached = {
                c.keras.name.rsplit("/", 1)[0]: c.keras
                for c in self.report.kernels
                if not c.keras.name.endswith("/depthwise_kernel")
            }
            short = [
                f"{name}: {reached[name].sparsity:.4f} < {ratio:.4f}"
                for name, ratio in self.plan.ratios.items()
                if name in reached and reached[name].sparsity < ratio - SPARSITY_TOLERANCE
            ]
            if short:
                warnings.warn(
                    "weight-sparse: layers below their planned sparsity (did training run "
                    f"fewer steps than planned?): {'; '.join(short)}",
                    stacklevel=2,
                )
        return stripped

    def get_config(self) -> dict[str, Any]:
        """Settings (and, after :meth:`prepare`, the plan) for run records.

        Example:
            >>> WeightSparseLearner(ws_prune_ratio=0.9).get_config()["ws_prune_ratio"]
            0.9
        """
        config = super().get_config()
        if self.plan is not None:
            config["plan"] = self.plan.to_dict()
        if self.report is not None:
            config["sparsity"] = self.report.to_dict()
        return config


__all__ = ["DEFAULT_PRUNE_RATIO", "SparsityPlan", "WeightSparseLearner"]
