"""``ChannelPrunedLearner`` (``--learner channel``): channel pruning that removes channels.

He et al. 2017 ("Channel Pruning for Accelerating Very Deep Neural Networks") as PocketFlow's
``channel`` learner did it, but the result is a physically thinner model:

1. plan how many channels each coupled group keeps (``uniform`` channel ratio or FLOPs
   target, a per-layer ``list``, or ``auto``: per-group counts for a FLOPs keep ratio from a
   sensitivity analysis or a pluggable search), rounded to multiples of ``cp_channel_round``;
2. group by group, shallow to deep: sample the consumers' inputs on training images from
   the model pruned so far and their targets from the original model (which corrects the
   drift that pruning earlier layers causes), select channels by LASSO, refit the kept
   kernels by least squares, and cut the channels out with :mod:`pocketflow_tf.surgery`;
3. fine-tune (optionally distilled from the uncompressed model) with the base learner.

``cp_criterion="l1"`` or ``"bn_gamma"`` gives the cheap baselines (L1-norm filter pruning,
network slimming) with the same planning and surgery, so benchmarks compare like with like.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> inp = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(16, 3, name="c1")(inp)
    >>> x = keras.layers.ReLU()(x)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(x))
    >>> x_tr = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    >>> lrn = ChannelPrunedLearner(training.TrainConfig(epochs=1, batch_size=32), verbose=0,
    ...                            cp_uniform_preserve_ratio=0.5, cp_nb_samples=32)
    >>> lrn.fit(m, x_tr, np.arange(64) % 2).get_layer("c1").filters
    8
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import (
    accounting,
    batchnorm,
    calibration,
    channel_graph,
    distillation,
    errors,
    graph_rebuild,
    learner,
    options,
    surgery,
    training,
)
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.hp_optimizers import in_memory
from pocketflow_tf.learners.channel import (
    allocation,
    importance,
    lasso,
    latency_table,
    refit_proxy,
)

PRUNE_OPTIONS = ("uniform", "list", "auto")
CRITERIA = ("lasso", "l1", "bn_gamma")
COSTS = ("flops", "latency")
PROXIES = ("mask", "refit")
RATIO_SEARCHES = ("greedy", "amc", *in_memory.OPTIMIZERS)


_RATIO = {"low": 0, "high": 1, "low_open": True}


@dataclasses.dataclass(frozen=True)
class ChannelOptions(options.Options):
    """The ``cp_*`` options of :class:`ChannelPrunedLearner` (see its arguments).

    Example:
        >>> ChannelOptions(cp_prune_option="list")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `cp_prune_list`: None. Accepted: a {layer name: keep ratio} mapping for 'list'.
    """

    cp_prune_option: str = options.option(
        "uniform",
        choices=PRUNE_OPTIONS,
        help="one ratio everywhere, a per-layer list, or per-layer counts searched for "
        "cp_preserve_ratio",
    )
    cp_preserve_ratio: float = options.option(
        0.5, help="FLOPs keep ratio for 'uniform' and 'auto'", **_RATIO
    )
    cp_uniform_preserve_ratio: float | None = options.option(
        None, help="channel keep ratio for 'uniform' (overrides cp_preserve_ratio)", **_RATIO
    )
    cp_prune_list: Mapping[str, float] | None = options.option(
        None,
        help="'layer=ratio' pairs for cp_prune_option list",
        parse=options.parse_mapping,
        metavar="LAYER=RATIO,...",
    )
    cp_criterion: str = options.option(
        "lasso",
        choices=CRITERIA,
        help="LASSO + least squares (He et al.), or the L1-norm / BN-gamma baselines",
    )
    cp_channel_round: int = options.option(8, help="round kept counts to this multiple", low=1)
    cp_nb_samples: int = options.option(
        1000, help="training images sampled for selection and refitting", low=1
    )
    cp_nb_points: int = options.option(
        10, help="output positions sampled per image and consumer", low=1
    )
    cp_refit: bool = options.option(True, help="refit kept kernels by least squares (lasso)")
    cp_exclude: tuple[str, ...] = options.option((), help="layers whose channels must all stay")
    cp_nb_eval: int = options.option(
        2000, help="training images the auto sensitivity analysis scores on", low=1
    )
    cp_cost: str = options.option(
        "flops",
        choices=COSTS,
        help="auto: spend the FLOPs budget where it saves the most FLOPs, or the most LiteRT "
        "time (per-layer latencies measured on this machine)",
    )
    cp_latency_keep: float | None = options.option(
        None,
        help="auto with cp_cost latency: also prune until the predicted LiteRT latency is at "
        "most this fraction of the dense model's (0.5: 2x faster)",
        **_RATIO,
    )
    cp_params_keep: float | None = options.option(
        None,
        help="auto: also prune until the estimated parameters are at most this fraction of "
        "the dense model's, removing channels where they hold the most weights (byte goals)",
        **_RATIO,
    )
    cp_list_group: int = options.option(
        0,
        help="groups pruned per round, with cp_nb_iters_ft fine-tuning steps between rounds "
        "(0: all groups in one round)",
        low=0,
    )
    cp_nb_iters_ft: int = options.option(200, help="fine-tuning steps between rounds", low=0)
    cp_proxy_bn_batches: int = options.option(
        0,
        help="auto: batches on which each scored plan's BatchNorm statistics are re-estimated "
        "(0: off)",
        low=0,
    )
    cp_proxy: str = options.option(
        "refit",
        choices=PROXIES,
        help="auto: how a scored plan is built -- every reader of a pruned group refitted by "
        "least squares to the dense output (refit, AMC's proxy), or dropped channels only "
        "zeroed (mask)",
    )
    cp_ratio_search: str = options.option(
        "greedy",
        choices=RATIO_SEARCHES,
        help="auto: per-group allocation by greedy sensitivity, by the AMC DDPG agent (He et "
        "al. 2018) over cp_amc_episodes proxy evaluations, or by TPE / GP / random search "
        "over cp_search_trials",
    )
    cp_search_trials: int | None = options.option(
        None, help="auto with tpe/gp/random: plans proposed (default 100)", low=1
    )
    cp_amc_episodes: int | None = options.option(
        None, help="auto with amc: search episodes (default 300)", low=1
    )
    cp_amc_reward: str | None = options.option(
        None,
        choices=(None, "error", "error_log_flops", "error_log_params"),
        help="auto with amc: AMC's reward: -error (default), -error*log(FLOPs) or "
        "-error*log(params)",
    )
    ratio_search: allocation.RatioSearch | None = options.hook(
        "(problem) -> {group key: count}",
        help="replaces the auto allocation: called with an AllocationProblem",
    )

    def check(self) -> None:
        owners = {
            "cp_amc_episodes": ("amc",),
            "cp_amc_reward": ("amc",),
            "cp_search_trials": in_memory.OPTIMIZERS,
        }
        for name, searches in owners.items():
            if getattr(self, name) is not None and self.cp_ratio_search not in searches:
                raise errors.InvalidArgumentError(
                    "cp_ratio_search",
                    self.cp_ratio_search,
                    f"{'|'.join(searches)} when {name} is given",
                )
        if self.cp_cost != "flops" and self.cp_prune_option != "auto":
            raise errors.InvalidArgumentError(
                "cp_cost",
                self.cp_cost,
                "'flops' unless cp_prune_option='auto' (it plans the counts)",
            )
        searched = self.ratio_search is not None or self.cp_ratio_search != "greedy"
        if self.cp_latency_keep is not None:
            if self.cp_cost != "latency":
                raise errors.InvalidArgumentError(
                    "cp_latency_keep",
                    self.cp_latency_keep,
                    "None unless cp_cost='latency' (the latency table predicts it)",
                )
            if searched:
                raise errors.InvalidArgumentError(
                    "cp_latency_keep",
                    self.cp_latency_keep,
                    "None with a ratio_search (only the greedy allocation honours it)",
                )
        if self.cp_params_keep is not None:
            if self.cp_prune_option != "auto":
                raise errors.InvalidArgumentError(
                    "cp_params_keep",
                    self.cp_params_keep,
                    "None unless cp_prune_option='auto' (it plans the counts)",
                )
            if self.cp_cost != "flops":
                raise errors.InvalidArgumentError(
                    "cp_params_keep",
                    self.cp_params_keep,
                    "None with cp_cost='latency' (the greedy steps rank time or weights)",
                )
            if self.cp_ratio_search != "greedy":
                raise errors.InvalidArgumentError(
                    "cp_params_keep",
                    self.cp_params_keep,
                    f"None with cp_ratio_search={self.cp_ratio_search!r} (its bounds hold "
                    "FLOPs only; the greedy allocation honours a parameter target)",
                )
        if searched and self.cp_prune_option != "auto":
            raise errors.InvalidArgumentError(
                "ratio_search" if self.ratio_search is not None else "cp_ratio_search",
                self.ratio_search or self.cp_ratio_search,
                "None unless cp_prune_option='auto' (it plans the counts)",
            )
        if self.ratio_search is not None and self.cp_ratio_search != "greedy":
            raise errors.InvalidArgumentError(
                "cp_ratio_search", self.cp_ratio_search, "'greedy' when a ratio_search is given"
            )
        if self.cp_ratio_search != "greedy" and self.cp_cost != "flops":
            # A search's bounding enforces the FLOPs budget and its score ranks accuracy; the
            # latency table is used by the greedy allocation only.
            raise errors.InvalidArgumentError(
                "cp_cost", self.cp_cost, f"flops with cp_ratio_search={self.cp_ratio_search!r}"
            )
        if self.cp_prune_option == "list":
            if not self.cp_prune_list:
                raise errors.InvalidArgumentError(
                    "cp_prune_list",
                    self.cp_prune_list,
                    "a {layer name: keep ratio} mapping for 'list'",
                )
            for name, ratio in self.cp_prune_list.items():
                allocation._check_ratio(f"cp_prune_list[{name!r}]", ratio)


def _named_ratio_search(opts: ChannelOptions, seed: int) -> allocation.RatioSearch:
    """The search ``cp_ratio_search`` names, with its budget options."""
    if opts.cp_ratio_search == "amc":
        from pocketflow_tf.learners.channel import amc_search

        return amc_search.amc_ratio_search(
            episodes=opts.cp_amc_episodes or 300,
            seed=seed,
            reward=opts.cp_amc_reward or "error",
            verbose=True,
        )
    from pocketflow_tf.learners.channel import optimizer_search

    return optimizer_search.optimizer_ratio_search(
        opts.cp_ratio_search, trials=opts.cp_search_trials or 100, seed=seed, verbose=True
    )


@learner.register("channel", "channel-pruned", "ChannelPrunedLearner", "cp")
class ChannelPrunedLearner(learner.Learner):
    """Prunes whole channels (LASSO + least squares by default), then fine-tunes.

    Args:
        train_config: Fine-tuning settings (see :class:`learner.Learner`).
        cp_prune_option: ``"uniform"`` (one ratio everywhere), ``"list"`` (per-layer ratios
            in ``cp_prune_list``) or ``"auto"`` (per-group counts for ``cp_preserve_ratio``).
        cp_preserve_ratio: FLOPs keep ratio in (0, 1] for ``uniform`` (the largest uniform
            channel ratio meeting it) and ``auto``.
        cp_uniform_preserve_ratio: Channel keep ratio for ``uniform``; overrides the FLOPs
            target when given.
        cp_prune_list: ``{layer name: channel keep ratio}`` for ``list``; the layer may be any
            layer of the group (producer, BN, consumer... of its output channels).
        cp_criterion: ``"lasso"`` (He et al.), ``"l1"`` or ``"bn_gamma"``.
        cp_channel_round: Round kept counts to this multiple (1: no rounding).
        cp_nb_samples: Training images sampled for selection and refitting.
        cp_nb_points: Output positions sampled per image and consumer.
        cp_refit: Refit kept kernels by least squares (``lasso`` only).
        cp_exclude: Layers whose channels must all stay.
        cp_nb_eval: Training images the ``auto`` sensitivity analysis scores on.
        cp_cost: What ``auto`` saves with each channel it removes: ``"flops"``, or
            ``"latency"`` -- time on LiteRT, from per-layer latencies measured on this
            machine (:mod:`latency_table`; a minute or two for a ResNet-20). Either way
            the plan meets ``cp_preserve_ratio`` in FLOPs.
        cp_latency_keep: With ``cp_cost="latency"``: the allocation also goes on until the
            latency table predicts at most this fraction of the dense latency (0.5 for 2x
            faster), so the plan meets both targets. On an AVX-512 host, ResNet-20 at 0.4x
            FLOPs ran only 1.81-1.89x faster: an output channel count off the 16-wide SIMD
            tile saves no time. ``None``: the FLOPs target alone.
        cp_params_keep: With ``auto``: the allocation also goes on until the estimated
            parameters are at most this fraction of the dense model's, taking channels where
            they hold the most weights per unit of proxy loss (set ``cp_preserve_ratio=1`` to
            leave FLOPs free). For byte goals: on ResNet-20 a FLOPs-targeted plan reached
            0.1x of the float file only at 0.46x FLOPs, since stage-3 convolutions hold 16x
            the weights of stage-1 ones at equal FLOPs. A ``ratio_search`` hook receives it
            in the problem and its counts are checked against it.
        cp_list_group: Channel groups pruned per round; after every round but the last the
            thinner model is fine-tuned for ``cp_nb_iters_ft`` steps (distilled from the
            dense model when distillation is on) before the next groups are selected on it,
            so later selections see a recovered network (PocketFlow's ``cp_list_group``).
            0: every group in one round.
        cp_nb_iters_ft: Fine-tuning steps between rounds.
        cp_proxy_bn_batches: Batches of the ``auto`` calibration images on which each scored
            plan's BatchNorm statistics are re-estimated before scoring (0: off). Pruning
            many groups at once shifts every later BatchNorm's input; without this the
            proxy of such a plan is near chance and cannot rank plans (EagleEye's adaptive
            BN, Li et al. 2020). Costs one training-mode pass per batch per plan.
        cp_proxy: How ``auto`` builds a scored plan: ``"refit"`` (default) keeps channels by
            L1 norm and refits every reader of a pruned group by least squares to the dense
            model's output, from Gram matrices sampled once (:mod:`refit_proxy`, AMC's
            episode proxy); ``"mask"`` only zeroes the dropped channels. Measured on
            ResNet-20/Fashion-MNIST: masked plans that prune many groups at once score near
            chance, and the greedy plan at 0.4x FLOPs found with ``"refit"`` kept 87.5 %
            after LASSO pruning against 83.6 % with ``"mask"``.
        ratio_search: Replaces the ``auto`` sensitivity allocation: a callable taking an
            :class:`allocation.AllocationProblem` and returning counts per group key (the
            hook for the search optimisers).
        **kwargs: Passed to :class:`learner.Learner` (distillation, teacher, log_dir, ...).

    Example:
        >>> ChannelPrunedLearner(cp_preserve_ratio=1.5)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `cp_preserve_ratio`: 1.5. Accepted: a number in (0, 1].
    """

    name = "channel"
    Options = ChannelOptions
    # The channel selection (and an auto plan's search) runs once, on the chief.
    prepare_on_chief: ClassVar[bool] = True

    def __init__(self, train_config: training.TrainConfig | None = None, **kwargs: Any):
        super().__init__(train_config, **kwargs)
        if self.ratio_search is None and self.cp_ratio_search != "greedy":
            self.ratio_search = _named_ratio_search(self.options, self.train_config.seed)
        self._calib: tuple[np.ndarray, np.ndarray] | None = None
        self._latency: latency_table.LatencyTable | None = None

    # -- entry points ----------------------------------------------------------------
    def adapt(self, model, x, y) -> None:
        """Checks the plan against ``model`` and samples the calibration images (called by
        :meth:`~learner.Learner.fit` before any training).

        Everything that can be wrong with the request (ratios, layer names, blocked groups)
        is checked before any sampling or training starts.

        Example:
            A model with nothing to prune is refused before the data is looked at:

            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> ChannelPrunedLearner().fit(m, np.zeros((8, 4), "float32"))  # adapt() refuses
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `model`: 'sequential...'. Accepted: a model with at least one prunable channel group; this one has none:...
        """
        model = graph_rebuild.inline_nested(model)
        self.plan(model)  # validates before any work
        self._calib = calibration.sample(
            x, y, n=max(self.cp_nb_samples, self.cp_nb_eval), seed=self.train_config.seed
        )

    def prune(self, model: keras.Model, x: np.ndarray, y: np.ndarray | None = None) -> keras.Model:
        """Prunes ``model`` without fine-tuning (calibration images ``x``, labels for ``auto``).

        Example:
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> x = np.random.default_rng(0).random((32, 4)).astype("float32")
            >>> lrn = ChannelPrunedLearner(cp_uniform_preserve_ratio=0.5, cp_nb_samples=32,
            ...                            cp_nb_eval=32, verbose=0)
            >>> lrn.prune(m, x).get_layer("h").units, m.get_layer("h").units
            (8, 16)
        """
        self.adapt(model, x, y)
        return self.prepare(model)

    def prepare(self, model: keras.Model) -> keras.Model:
        """Plans the counts and prunes group by group; the model before fine-tuning."""
        if self._calib is None:
            raise errors.InvalidArgumentError(
                "x", None, "training images: call fit() or prune() with data"
            )
        start = time.time()
        model = graph_rebuild.inline_nested(model)  # prunes inside nested models too
        counts = self.plan(model, self._calib)
        pruned, selection, rounds = self._prune_in_rounds(model, counts)
        dense = accounting.profile_model(model)
        thin = accounting.profile_model(pruned)
        graph = channel_graph.build(model, self.cp_exclude)
        self.report = {
            "criterion": self.cp_criterion,
            "prune_option": self.cp_prune_option,
            "groups": [
                {
                    "key": allocation.key_of(g),
                    "size": g.size,
                    "kept": int(counts.get(allocation.key_of(g), g.size)),
                    "layers": g.producers,
                }
                for g in graph.prunable_groups()
            ],
            "blocked": {
                allocation.key_of(g): g.blockers
                for g in graph.groups
                if g.producers and not g.prunable
            },
            "flops_ratio": thin.total_flops / dense.total_flops,
            "params_ratio": thin.total_params / dense.total_params,
            "prune_wall_s": round(time.time() - start, 1),
            "selection": selection,
            "rounds": rounds,
        }
        if self._latency is not None:
            t = self._latency
            self.report["latency_table"] = {
                "predicted_latency_ratio": round(t.model_ms(counts) / t.dense_ms, 4),
                "layers_timed": t.measured,
                "wall_s": round(t.wall_s, 1),
            }
        if self.verbose:
            print(
                f"[channel] pruned {len(counts)} groups in {self.report['prune_wall_s']} s: "
                f"FLOPs x{self.report['flops_ratio']:.3f}, params x{self.report['params_ratio']:.3f}"
            )
        self.pruned_model = pruned
        return learner.copy_model(pruned)

    # -- planning --------------------------------------------------------------------
    def plan(
        self, model: keras.Model, calib: tuple[np.ndarray, np.ndarray] | None = None
    ) -> dict[str, int]:
        """Channel counts per group key (first producer name).

        Without ``calib`` the ``auto`` option only validates (its sensitivity analysis needs
        data) and returns ``{}``.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> ChannelPrunedLearner(cp_prune_option="list", cp_prune_list={"h": 0.25}).plan(m)
            {'h': 8}
        """
        graph = channel_graph.build(model, self.cp_exclude)
        groups = graph.require_prunable()
        if self.cp_criterion == "bn_gamma":
            for g in groups:
                importance.bn_gamma_scores(model, graph, g)  # raises if a group has no BN
        r = self.cp_channel_round
        if self.cp_prune_option == "list":
            counts = {}
            for name, ratio in self.cp_prune_list.items():
                group = _group_of_layer(graph, name)
                counts[allocation.key_of(group)] = allocation.round_count(
                    ratio * group.size, group.size, r
                )
            return counts
        fm = allocation.FlopsModel.build(model, graph)
        if self.cp_prune_option == "uniform":
            if self.cp_uniform_preserve_ratio is not None:
                return allocation.counts_for_ratio(graph, self.cp_uniform_preserve_ratio, r)
            return allocation.uniform_counts_for_flops(fm, self.cp_preserve_ratio, r)[0]
        # auto: check reachability now, search only once data is there
        smallest = {allocation.key_of(g): allocation.round_count(1, g.size, r) for g in groups}
        if fm.flops(smallest) > self.cp_preserve_ratio * fm.dense_flops:
            raise errors.InvalidArgumentError(
                "cp_preserve_ratio",
                self.cp_preserve_ratio,
                f"a FLOPs keep ratio >= {fm.flops(smallest) / fm.dense_flops:.3f}, the smallest "
                f"this model reaches with channel counts rounded to multiples of {r}",
            )
        if (
            self.cp_params_keep is not None
            and fm.params(smallest) > self.cp_params_keep * fm.dense_params
        ):
            raise errors.InvalidArgumentError(
                "cp_params_keep",
                self.cp_params_keep,
                f"a parameter keep ratio >= {fm.params(smallest) / fm.dense_params:.3f}, the "
                "smallest this model reaches by channel pruning (unprunable layers keep "
                f"theirs) with counts rounded to multiples of {r}",
            )
        if calib is None:
            return {}
        problem = self._problem(model, graph, fm, calib)
        search = self.ratio_search or (
            lambda p: allocation.greedy_sensitivity(p, verbose=self.verbose >= 2)
        )
        counts = search(problem)
        if self.cp_params_keep is not None:
            # A ratio_search hook may ignore the parameter target; a plan that misses it
            # would silently miss the byte goal it serves.
            got = fm.params(counts) / fm.dense_params
            if got > self.cp_params_keep + 1e-9:
                raise errors.InvalidArgumentError(
                    "ratio_search",
                    self.ratio_search,
                    f"counts meeting cp_params_keep={self.cp_params_keep} (they keep "
                    f"{got:.4f} of the parameters)",
                )
        return counts

    def allocation_problem(
        self, model: keras.Model, x: np.ndarray, y: np.ndarray
    ) -> allocation.AllocationProblem:
        """The problem ``auto`` hands to its search, for comparing searches on it.

        Args:
            model: The dense model.
            x: Training images (a calibration sample is drawn as in :meth:`prune`).
            y: Their labels.

        Raises:
            InvalidArgumentError: If ``cp_prune_option`` is not ``"auto"``, or the request
                is invalid for ``model`` (see :meth:`plan`).

        Example:
            >>> lrn = ChannelPrunedLearner(cp_prune_option="auto", cp_preserve_ratio=0.5)
            >>> problem = lrn.allocation_problem(model, x, y)  # doctest: +SKIP
            >>> problem.evaluate({k: c[-1] for k, c in problem.choices.items()})  # doctest: +SKIP
        """
        if self.cp_prune_option != "auto":
            raise errors.InvalidArgumentError(
                "cp_prune_option", self.cp_prune_option, "'auto' (only it searches counts)"
            )
        self.plan(model)  # validates
        graph = channel_graph.build(model, self.cp_exclude)
        calib = calibration.sample(
            x, y, n=max(self.cp_nb_samples, self.cp_nb_eval), seed=self.train_config.seed
        )
        return self._problem(model, graph, allocation.FlopsModel.build(model, graph), calib)

    def _problem(self, model, graph, fm, calib) -> allocation.AllocationProblem:
        self._latency = None
        if self.cp_cost == "latency":
            self._latency = latency_table.LatencyTable(model, graph, verbose=self.verbose)
        r = self.cp_channel_round
        return allocation.AllocationProblem(
            fm,
            self.cp_preserve_ratio,
            r,
            allocation.choices_for(graph, r),
            self._proxy_evaluator(model, graph, calib),
            latency_ms=None if self._latency is None else self._latency.model_ms,
            latency_keep=self.cp_latency_keep,
            params_keep=self.cp_params_keep,
        )

    def _proxy_evaluator(self, model, graph, calib):
        """Score of a plan: minus the cross-entropy of the L1-pruned model, no fine-tuning
        (readers refitted with ``cp_proxy="refit"``; BatchNorm statistics re-estimated first
        when ``cp_proxy_bn_batches`` > 0)."""
        x, y = calib
        if y is None:
            raise errors.InvalidArgumentError("y", None, "labels: the 'auto' option scores plans")
        x, y = x[: self.cp_nb_eval], y[: self.cp_nb_eval]
        scores = {g.id: importance.l1_scores(model, graph, g) for g in graph.prunable_groups()}
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        probe = learner.copy_model(model)
        base = model.get_weights()
        bn_data = tf.data.Dataset.from_tensor_slices(x).batch(128)
        refit = None
        if self.cp_proxy == "refit":
            # The Gram matrices come from the selection images, which overlap the scored
            # ones; with ~10 rows per fitted weight the fit cannot favour one plan by memorising.
            refit = refit_proxy.RefitProxy(
                model,
                graph,
                calib[0][: self.cp_nb_samples],
                points=self.cp_nb_points,
                seed=self.train_config.seed,
            )

        def evaluate(counts):
            keep = {}
            for g in graph.prunable_groups():
                k = counts.get(allocation.key_of(g), g.size)
                if k < g.size:
                    keep[g.id] = importance.top_k(scores[g.id], k)
            probe.set_weights(base)
            if refit is None:
                surgery.mask_consumers(probe, graph, keep)  # same outputs as the thin model
            else:
                refit.apply(probe, keep)
            if self.cp_proxy_bn_batches:
                batchnorm.reestimate(probe, bn_data, self.cp_proxy_bn_batches)
            logits = probe.predict(x, batch_size=500, verbose=0)
            return -float(loss_fn(y, logits))

        return evaluate

    # -- pruning ---------------------------------------------------------------------
    def _prune_in_rounds(self, model, counts):
        """Prunes ``cp_list_group`` groups at a time, fine-tuning briefly between rounds."""
        graph = channel_graph.build(model, self.cp_exclude)
        order = [
            allocation.key_of(g)
            for g in graph.prunable_groups()
            if counts.get(allocation.key_of(g), g.size) < g.size
        ]
        size = self.cp_list_group or max(1, len(order))
        chunks = [order[i : i + size] for i in range(0, len(order), size)] or [[]]
        current, selection, rounds = model, {}, []
        for r, keys in enumerate(chunks):
            # Group keys are producer names, which surgery keeps: counts still apply on the
            # thinner model, and groups pruned in earlier rounds are already at their count.
            current, sel = self._prune_groups(current, {k: counts[k] for k in keys})
            selection.update(sel)
            info = {"groups": keys}
            if r < len(chunks) - 1 and self.cp_nb_iters_ft:
                info.update(self._finetune_between_rounds(current, model, r))
            rounds.append(info)
        return current, selection, rounds

    def _finetune_between_rounds(self, student, dense, r) -> dict[str, Any]:
        """A short fine-tune of the partly pruned model (in place); its loss and time."""
        if self.train_data is None:  # prune() without fit(): there is nothing to train on
            return {"finetune": "skipped: no training data (prune() does not fine-tune)"}
        t0 = time.time()
        n = self.cp_nb_iters_ft
        cfg = self.train_config.replace(epochs=1, warmup_epochs=0.0)
        train_model = student
        if self.distillation is not None:
            teacher = self.teacher if self.teacher is not None else dense
            train_model = distillation.DistillationHelper(teacher, self.distillation).wrap(student)
        train_model.compile(
            optimizer=training.build_optimizer(cfg, n),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        guard = training.DivergenceGuard(
            self.name, cfg.learning_rate, phase=f"fine-tuning after pruning round {r + 1}"
        )
        hist = train_model.fit(
            self.train_data.repeat().take(n), epochs=1, verbose=0, callbacks=[guard]
        )
        loss = float(hist.history["loss"][-1])
        if self.verbose:
            print(f"[channel] round {r + 1}: fine-tuned {n} steps, loss {loss:.4f}")
        return {"finetune_steps": n, "finetune_loss": loss, "wall_s": round(time.time() - t0, 1)}

    def _prune_groups(self, model, counts):
        # Selection works on a full-size copy whose consumers ignore dropped channels
        # (surgery.mask_consumers): it computes what the thin model would, keeps every index
        # in the original coordinates, and the thin model is built once at the end.
        graph = channel_graph.build(model, self.cp_exclude)
        images = self._calib[0][: self.cp_nb_samples]
        masks = {g.id: np.ones(g.size, dtype=bool) for g in graph.groups}
        current = learner.copy_model(model)
        selection = {}
        for step, group in enumerate(graph.prunable_groups()):
            key = allocation.key_of(group)
            k = int(counts.get(key, group.size))
            if k >= group.size:
                continue
            t0 = time.time()
            how = self.cp_criterion
            samples = None
            consumers = group.consumers
            if (
                how == "lasso"
                and consumers
                and all(lasso.supports(current.get_layer(n)) for n in consumers)
            ):
                out_cols = {
                    n: np.flatnonzero(surgery.segment_mask(graph, masks, graph.layers[n].output))
                    for n in consumers
                }
                samples = lasso.sample_consumers(
                    current,
                    model,
                    consumers,
                    images,
                    out_cols,
                    {n: lasso.flat_repeat(graph, n) for n in consumers},
                    self.cp_nb_points,
                    seed=self.train_config.seed + step,
                )
                positions = [_group_positions(graph, n, group.id) for n in consumers]
                keep_idx = lasso.select_channels(samples, positions, k)
            elif how == "bn_gamma":
                keep_idx = importance.top_k(importance.bn_gamma_scores(current, graph, group), k)
            else:
                if how == "lasso":
                    how = "l1 (a consumer is not a Conv2D/Dense)"
                keep_idx = importance.top_k(importance.l1_scores(current, graph, group), k)
            masks[group.id] = np.zeros(group.size, dtype=bool)
            masks[group.id][keep_idx] = True
            surgery.mask_consumers(current, graph, {group.id: keep_idx})
            if samples is not None and self.cp_refit:
                for s, cols in zip(samples, out_cols.values(), strict=True):
                    self._write_refit(current, graph, masks, s, cols)
            selection[key] = {
                "kept": k,
                "of": int(group.size),
                "how": how,
                "wall_s": round(time.time() - t0, 2),
            }
            if self.verbose >= 2:
                print(
                    f"  [channel] {key}: kept {k}/{group.size} by {how} ({selection[key]['wall_s']} s)"
                )
        keep = {gid: m for gid, m in masks.items() if not m.all()}
        return surgery.prune(current, graph, keep), selection

    @staticmethod
    def _write_refit(current, graph, masks, sample, out_cols):
        layer = current.get_layer(sample.name)
        in_mask = lasso.consumer_in_mask(graph, masks, sample.name)
        repeat = lasso.flat_repeat(graph, sample.name)
        keep_pos = np.flatnonzero(in_mask)
        kernel3, bias = lasso.refit(sample, keep_pos)
        w = layer.get_weights()
        full = lasso._kernel3(layer, w[0], repeat).copy()
        full[:, ~in_mask, :] = 0
        full[np.ix_(np.arange(full.shape[0]), keep_pos, out_cols)] = kernel3
        w[0] = full.reshape(w[0].shape)
        if bias is not None:
            w[1][out_cols] = bias
        layer.set_weights(w)


def _group_of_layer(graph, name):
    if name not in graph.layers:
        raise errors.InvalidArgumentError(
            "cp_prune_list", name, f"names of layers of model '{graph.model.name}'"
        )
    for g in graph.groups:
        if name in g.producers or name in g.members:
            if not g.prunable:
                raise errors.InvalidArgumentError(
                    "cp_prune_list",
                    name,
                    f"a layer of a prunable group (its channels are blocked: {'; '.join(g.blockers)})",
                )
            return g
    raise errors.InvalidArgumentError(
        "cp_prune_list",
        name,
        "a layer that produces or carries prunable channels (Conv2D, Dense, BN...)",
    )


def _group_positions(graph, layer_name, gid) -> np.ndarray:
    """Where group ``gid``'s channels sit in ``layer_name``'s input channel axis."""
    segs = graph.layers[layer_name].inputs[0]
    if len(segs) == 1 and segs[0].repeat > 1:  # Flatten -> Dense: positions within a pixel
        return np.arange(segs[0].size)
    out, off = [], 0
    for s in segs:
        if graph.find(s.group) == gid:
            out.append(off + np.arange(s.size))
        off += s.width
    return np.concatenate(out)
