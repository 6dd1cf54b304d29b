"""Discrimination-aware channel pruning (``--learner dis-chn-pruned``, Zhuang et al. 2018).

The learner (1) plans how many channels each coupled group keeps (a uniform channel ratio,
a FLOPs keep ratio, or explicit counts, rounded to SIMD-friendly multiples), (2) picks *which*
channels by DCP's discrimination-aware greedy selection on a calibration sample of the
training data (:mod:`selection`), (3) cuts them out physically with :func:`surgery.prune`,
keeping the refined weights, and (4) fine-tunes the thinner model with the shared
:meth:`Learner.fit` machinery, optionally distilled from the uncompressed model. The
auxiliary classifiers only exist during selection: the returned model has the original
inputs, outputs and layer names, with fewer channels.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> L = keras.layers
    >>> keras.utils.set_random_seed(0)
    >>> m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, name="c1"), L.ReLU(),
    ...     L.Conv2D(8, 3, name="c2"), L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(4)])
    >>> x, y = np.random.rand(64, 8, 8, 1).astype("float32"), np.arange(64) % 4
    >>> lrn = DisChnPrunedLearner(training.TrainConfig(batch_size=32), dcp_prune_ratio=0.5,
    ...     dcp_nb_iters_aux=5, dcp_nb_iters_layer=2, dcp_batch_size=32, verbose=0)
    >>> out = lrn.fit(m, x, y)
    >>> out.get_layer("c2").kernel.shape.as_list(), lrn.report["kept"]
    ([3, 3, 4, 4], {'c1': 4, 'c2': 4})
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from pocketflow_tf import (
    accounting,
    calibration,
    channel_graph,
    errors,
    graph_rebuild,
    learner,
    options,
    training,
)
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.channel import allocation
from pocketflow_tf.learners.dcp import selection

_TARGETS = ("dcp_prune_ratio", "cp_preserve_ratio", "cp_prune_list", "dcp_counts")


@dataclasses.dataclass(frozen=True)
class DCPOptions(options.Options):
    """The options of :class:`DisChnPrunedLearner` (see its arguments).

    At most one of ``dcp_prune_ratio``, ``cp_preserve_ratio``, ``cp_prune_list`` and
    ``dcp_counts`` sets the counts; with none, ``dcp_prune_ratio`` is 0.5 (PocketFlow's).

    Example:
        >>> DCPOptions().dcp_prune_ratio
        0.5
        >>> DCPOptions(dcp_prune_ratio=0.3, cp_preserve_ratio=0.5)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `cp_preserve_ratio`: 'given together with dcp_prune_ratio'. Accepted: at most one of dcp_prune_ratio, cp_preserve_ratio, cp_prune_list, dcp_counts.
    """

    dcp_prune_ratio: float | None = options.option(
        None,
        help="share of channels removed from every prunable group (default 0.5 when no other "
        "count target is given)",
        low=0,
        high=1,
        high_open=True,
        accepted="a fraction of channels to remove in [0, 1)",
    )
    cp_preserve_ratio: float | None = options.option(
        None,
        help="FLOPs keep ratio: the largest uniform channel ratio whose rounded counts meet it",
        low=0,
        high=1,
        low_open=True,
        accepted="a FLOPs keep ratio in (0, 1]",
    )
    cp_prune_list: Mapping[str, float] | None = options.option(
        None,
        help="'layer=ratio' channel keep ratios per group (groups not named keep every channel)",
        parse=options.parse_mapping,
        metavar="LAYER=RATIO,...",
    )
    dcp_counts: Mapping[str, int] | None = options.option(
        None, cli=False, help="{layer name: exact channels to keep} (not rounded)"
    )
    cp_channel_round: int = options.option(
        8, help="round kept counts to this multiple (1: no rounding)", low=1
    )
    cp_exclude: tuple[str, ...] = options.option((), help="layers whose channels must all stay")
    dcp_nb_stages: int = options.option(3, help="stages with an auxiliary classifier", low=1)
    dcp_nb_iters_aux: int = options.option(
        200, help="Adam steps training each auxiliary classifier", low=0
    )
    dcp_nb_rounds: int = options.option(
        4, help="channel-addition rounds per group (each adds ~ kept / rounds)", low=1
    )
    dcp_nb_iters_layer: int = options.option(
        10, help="Adam steps refining the kept weights after each round", low=0
    )
    dcp_lrn_rate_adam: float = options.option(
        1e-2, help="learning rate of that refinement", low=0, low_open=True
    )
    dcp_lrn_rate_aux: float = options.option(
        1e-2, help="learning rate of the auxiliary classifiers", low=0, low_open=True
    )
    dcp_loss_w_aux: float = options.option(
        1.0, help="weight of the auxiliary cross-entropy in the selection loss", low=0
    )
    dcp_nb_samples: int = options.option(
        512, help="training images used for selection (seeded sample)", low=1
    )
    dcp_batch_size: int = options.option(64, help="mini-batch of the selection passes", low=1)
    dcp_criterion: str = options.option(
        "gradient",
        choices=selection.CRITERIA,
        help="gradient (DCP) or random channels (a baseline with the same pipeline)",
    )

    def check(self) -> None:
        given = [name for name in _TARGETS if getattr(self, name) is not None]
        if len(given) > 1:
            raise errors.InvalidArgumentError(
                given[1], f"given together with {given[0]}", "at most one of " + ", ".join(_TARGETS)
            )
        for arg, ok, accepted in (
            (
                "cp_prune_list",
                lambda v: options.is_number(v) and 0 < v <= 1,
                "a keep ratio in (0, 1]",
            ),
            ("dcp_counts", lambda v: options.is_integer(v) and v >= 1, "an integer >= 1"),
        ):
            for key, value in (getattr(self, arg) or {}).items():
                if not ok(value):
                    raise errors.InvalidArgumentError(f"{arg}[{key!r}]", value, accepted)
        if not given:
            self._set("dcp_prune_ratio", 0.5)  # PocketFlow's default


@learner.register(
    "dis-chn-pruned", "dis_chn_pruned", "dcp", "DisChnPrunedLearner", "dis-chn-pruned-learner"
)
class DisChnPrunedLearner(learner.Learner):
    """Prunes channels by DCP, removes them physically, then fine-tunes.

    How many channels each group keeps comes from at most one of ``dcp_prune_ratio``,
    ``cp_preserve_ratio``, ``cp_prune_list`` and ``dcp_counts`` (default:
    ``dcp_prune_ratio=0.5``, PocketFlow's default).

    Args:
        train_config: Fine-tuning settings; its ``seed`` also seeds the selection.
        dcp_prune_ratio: Fraction of the channels removed from every prunable group, in
            ``[0, 1)`` (PocketFlow's default 0.5 when no other target is given); counts are
            rounded.
        cp_preserve_ratio: FLOPs keep ratio in ``(0, 1]``: the largest uniform channel
            ratio whose rounded counts meet it.
        cp_prune_list: ``{layer name: channel keep ratio in (0, 1]}``; the layer may be any
            producer or per-channel member (BN, depthwise) of the group. Groups not named
            keep every channel.
        dcp_counts: ``{layer name: exact channels to keep}`` (not rounded), same naming.
        cp_channel_round: Counts are rounded to multiples of this, which keeps LiteRT's SIMD
            kernels busy; groups narrower than twice it round to 1 (1: no rounding).
        cp_exclude: Layers whose channels must all stay.
        dcp_nb_stages: Stages with an auxiliary classifier (>= 1).
        dcp_nb_iters_aux: Adam steps training each auxiliary classifier.
        dcp_nb_rounds: Channel-addition rounds per group (each adds ~ kept / rounds).
        dcp_nb_iters_layer: Adam steps refining the kept weights after each round.
        dcp_lrn_rate_adam: Learning rate of that refinement.
        dcp_lrn_rate_aux: Learning rate of the auxiliary classifiers.
        dcp_loss_w_aux: Weight of the auxiliary cross-entropy in the selection loss.
        dcp_nb_samples: Training images used for selection (a seeded sample of array data;
            the first ones of a dataset, so shuffle it).
        dcp_batch_size: Mini-batch of the selection passes.
        dcp_criterion: ``"gradient"`` (DCP) or ``"random"`` (same pipeline with random
            channels; a baseline for benchmarks).
        **kwargs: Passed to :class:`learner.Learner` (distillation, teacher, log_dir,
            checkpoint_dir, verbose).

    Attributes:
        pruned_model: The pruned model before fine-tuning (set by :meth:`prune` / :meth:`fit`).
        report: Kept counts per group, FLOPs/params ratios, stage boundaries, auxiliary
            accuracies, per-group losses and wall times.

    Example:
        >>> DisChnPrunedLearner(cp_preserve_ratio=1.5)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `cp_preserve_ratio`: 1.5. Accepted: a FLOPs keep ratio in (0, 1].
    """

    Options = DCPOptions
    single_worker_reason: ClassVar[str | None] = (
        "its auxiliary-classifier training and greedy channel selection run their own loops, "
        "not yet shared between workers"
    )

    def __init__(self, train_config: training.TrainConfig | None = None, **kwargs: Any):
        super().__init__(train_config, **kwargs)
        o = self.options
        self.selection_config = selection.SelectionConfig(
            nb_stages=o.dcp_nb_stages,
            nb_iters_aux=o.dcp_nb_iters_aux,
            nb_rounds=o.dcp_nb_rounds,
            nb_iters_layer=o.dcp_nb_iters_layer,
            lrn_rate_adam=o.dcp_lrn_rate_adam,
            lrn_rate_aux=o.dcp_lrn_rate_aux,
            loss_w_aux=o.dcp_loss_w_aux,
            batch_size=o.dcp_batch_size,
            criterion=o.dcp_criterion,
            seed=self.train_config.seed,
        )

    # -- planning --------------------------------------------------------------------
    def plan(self, model: keras.Model) -> dict[str, int]:
        """Channels each prunable group keeps, by group key (first producer's name).

        Checks everything that can be checked without data, so that a bad setting fails
        before any work.

        Raises:
            InvalidArgumentError: Not a tf-keras model, several inputs or outputs, an
                unknown or unprunable layer in ``cp_exclude`` / ``cp_prune_list`` /
                ``dcp_counts``, a FLOPs target that rounding cannot reach, or a model
                without a prunable channel group.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, name="h"),
            ...     keras.layers.Dense(2)])
            >>> DisChnPrunedLearner(dcp_prune_ratio=0.75).plan(m)
            {'h': 8}
        """
        if not isinstance(model, keras.Model):
            raise errors.InvalidArgumentError(
                "model", type(model).__name__, "a keras.Model of the framework's Keras (tf-keras)"
            )
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise errors.InvalidArgumentError(
                "model",
                f"{len(model.inputs)} inputs and {len(model.outputs)} outputs",
                "a classifier with one input and one logits output",
            )
        graph = channel_graph.build(model, self.cp_exclude)
        graph.require_prunable()
        for arg, table in (("cp_prune_list", self.cp_prune_list), ("dcp_counts", self.dcp_counts)):
            if table is None:
                continue
            plan = {}
            for name, value in table.items():
                group = _group_of_layer(graph, name, arg)
                if arg == "cp_prune_list":
                    count = allocation.round_count(
                        value * group.size, group.size, self.cp_channel_round
                    )
                elif value > group.size:
                    raise errors.InvalidArgumentError(
                        f"dcp_counts[{name!r}]", value, f"an integer in [1, {group.size}]"
                    )
                else:
                    count = int(value)
                plan[allocation.key_of(group)] = count
            return plan
        if self.cp_preserve_ratio is not None:
            fm = allocation.FlopsModel.build(model, graph)
            counts, _ = allocation.uniform_counts_for_flops(
                fm, float(self.cp_preserve_ratio), self.cp_channel_round
            )
            return counts
        return allocation.counts_for_ratio(
            graph, 1.0 - float(self.dcp_prune_ratio), self.cp_channel_round
        )

    # -- selection -------------------------------------------------------------------
    def prune(
        self,
        model: keras.Model,
        x: np.ndarray | tf.data.Dataset,
        y: np.ndarray | None = None,
    ) -> keras.Model:
        """Selects channels by DCP and returns the pruned model, before any fine-tuning.

        Also sets :attr:`pruned_model` and :attr:`report`.

        Args:
            model: The trained model (not modified).
            x: Training images (array) or a batched ``tf.data.Dataset`` of ``(x, y)``.
            y: Integer labels when ``x`` is an array.

        Returns:
            The thinner model with DCP's refined weights.

        Example:
            Dense layers are pruned like convolutions (units for filters):

            >>> keras.utils.set_random_seed(0)
            >>> m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, name="h"),
            ...                       keras.layers.ReLU(), keras.layers.Dense(3)])
            >>> x, y = np.random.rand(48, 6).astype("float32"), np.arange(48) % 3
            >>> lrn = DisChnPrunedLearner(training.TrainConfig(batch_size=16), dcp_prune_ratio=0.5,
            ...     dcp_nb_iters_aux=5, dcp_nb_iters_layer=2, dcp_batch_size=16, verbose=0)
            >>> pruned = lrn.prune(m, x, y)
            >>> pruned is lrn.pruned_model, pruned.get_layer("h").units, lrn.report["kept"]
            (True, 8, {'h': 8})
        """
        t0 = time.perf_counter()
        model = graph_rebuild.inline_nested(model)  # prunes inside nested models too
        plan = self.plan(model)
        cx, cy = self._calibration(x, y)
        keras.utils.set_random_seed(self.train_config.seed)  # the auxiliary heads' init
        log = print if self.verbose else None
        result = selection.select_channels(
            model, cx, cy, plan, self.selection_config, self.cp_exclude, log
        )
        pruned = result.pruned
        before, after = accounting.profile_model(model), accounting.profile_model(pruned)
        graph = channel_graph.build(model, self.cp_exclude)
        fm = allocation.FlopsModel.build(model, graph)
        kept = {allocation.key_of(g): g.size for g in graph.prunable_groups()}
        kept.update({k: int(v.size) for k, v in result.keep.items()})
        self.report = {
            "criterion": self.selection_config.criterion,
            "kept": kept,
            "sizes": {allocation.key_of(g): g.size for g in graph.prunable_groups()},
            "keep_indices": {k: v.tolist() for k, v in result.keep.items()},
            "flops_ratio_estimate": fm.flops(kept) / max(fm.dense_flops, 1),
            "flops_ratio": after.total_flops / max(before.total_flops, 1),
            "params_ratio": after.total_params / max(before.total_params, 1),
            "blocked": {
                allocation.key_of(g): g.blockers
                for g in graph.groups
                if g.producers and not g.prunable
            },
            "prune_wall_s": time.perf_counter() - t0,
            **result.report,
        }
        self.pruned_model = pruned
        if self.verbose:
            print(
                f"DCP: FLOPs x{self.report['flops_ratio']:.3f}, params "
                f"x{self.report['params_ratio']:.3f}, selection {self.report['prune_wall_s']:.1f} s"
            )
        return pruned

    def _calibration(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        return calibration.sample(
            x,
            y,
            n=self.dcp_nb_samples,
            seed=self.train_config.seed,
            labels=True,
            in_order=True,
            purpose="DCP needs labels",
        )

    # -- the Learner contract --------------------------------------------------------
    def adapt(self, model: keras.Model, x, y) -> None:
        """Prunes ``model`` by DCP (:meth:`prune`) on the training data, before the
        fine-tune of :meth:`~learner.Learner.fit`, which returns the fine-tuned thinner model
        (no auxiliary heads); :attr:`pruned_model` holds the one before fine-tuning.

        Example:
            DCP's auxiliary heads are trained on labels, so images alone are refused:

            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
            ...                       keras.layers.Dense(2)])
            >>> DisChnPrunedLearner(dcp_prune_ratio=0.5).fit(m)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `x`: None. Accepted: arrays x and y (DCP needs labels), or a tf.data.Dataset of (x, y).
        """
        self.prune(model, x, y)

    def prepare(self, model: keras.Model) -> keras.Model:
        """Returns a copy of the pruned model to fine-tune (call :meth:`prune` first).

        Example:
            >>> DisChnPrunedLearner().prepare(None)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `pruned_model`: None. Accepted: a model pruned by DisChnPrunedLearner.prune() first.
        """
        if self.pruned_model is None:
            raise errors.InvalidArgumentError(
                "pruned_model", None, "a model pruned by DisChnPrunedLearner.prune() first"
            )
        return learner.copy_model(self.pruned_model)


def _group_of_layer(graph: channel_graph.ChannelGraph, name: str, arg: str):
    """The prunable group whose channels layer ``name`` produces or carries."""
    if name not in graph.layers:
        raise errors.InvalidArgumentError(
            arg, name, f"names of layers of model '{graph.model.name}'"
        )
    for g in graph.groups:
        if name in g.producers or name in g.members:
            if not g.prunable:
                raise errors.InvalidArgumentError(
                    arg,
                    name,
                    f"a layer of a prunable group (its channels are blocked: {'; '.join(g.blockers)})",
                )
            return g
    raise errors.InvalidArgumentError(
        arg, name, "a layer that produces or carries prunable channels (Conv2D, Dense, BN...)"
    )
