"""From a :class:`~target.Target` to candidate method chains and the space the search explores.

The decisions are tables, read top to bottom:

* :data:`CHAINS` -- the method chains this version can build, each a short recipe
  (``prune``: channel pruning + distilled fine-tune, float ``.tflite``; ``int8``: full-integer
  export; ``prune+int8``: both; ``sparse``: weight sparsity by gradual magnitude pruning +
  distilled fine-tune, float ``.tflite`` in TFLite's sparse storage; ``sparse+int8``: the
  same, full-integer int8 sparse ``.tflite``);
* :data:`RULES` -- for every goal a target can set, the chains able to move it, with why.
  The candidates are the chains allowed by *every* goal the target sets. Weight sparsity
  serves byte goals only: LiteRT densifies the sparse storage when it loads the file, so it
  buys neither speed nor fewer FLOPs;
* :data:`ESTIMATES` -- cheap, conservative reasons to drop a candidate that cannot reach a
  goal on this model (e.g. int8 alone only shrinks a float file to ~0.28x), applied only while
  another candidate remains: the search measures, the estimates only save it trials.

===============  ===========  ===============  =============  ===============  ========
chain            ``speedup``  ``flops_ratio``  ``max_bytes``  ``bytes_ratio``  ``int8``
===============  ===========  ===============  =============  ===============  ========
``prune``        yes          yes              yes            yes              no
``int8``         yes          no               yes            yes              yes
``prune+int8``   yes          yes              yes            yes              yes
``sparse``       no           no               yes            yes              no
``sparse+int8``  no           no               yes            yes              yes
===============  ===========  ===============  =============  ===============  ========

The space (:mod:`pocketflow_tf.hp_optimizers.space`) then holds the chain and the
parameters of the candidate chains (each :class:`Chain` lists those it uses): when a chain
prunes, the FLOPs keep ratio -- the *parameter* keep ratio when every resource goal is about
bytes (:func:`keep_param`) -- (range narrowed by the goals and by what the model can reach)
and the channel-selection criterion; when a chain sparsifies, the target weight sparsity
(range narrowed by a byte goal); for both, the fine-tuning learning-rate factor.

Example:
    >>> from pocketflow_tf.learners.auto.target import Target
    >>> p = plan(Target.parse("flops<=0.5"), ModelFacts(prunable=True, min_flops_keep=0.1))
    >>> p.chain_names, p.space.names
    (['prune', 'prune+int8'], ['chain', 'flops_keep', 'criterion', 'lr_factor'])
    >>> p.space["flops_keep"].high
    0.5
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from pocketflow_tf import channel_graph, errors
from pocketflow_tf.compat import keras
from pocketflow_tf.hp_optimizers import space as space_lib
from pocketflow_tf.learners.auto.target import Target
from pocketflow_tf.learners.channel import allocation
from pocketflow_tf.learners.weight_sparse import ratios as ratios_lib

#: Size of a full-integer int8 ``.tflite`` relative to its float32 file: weights go from 4
#: bytes to 1 plus per-channel scales and the flatbuffer overhead (measured ~0.26-0.30 on
#: the nets here; small models have relatively more overhead).
INT8_BYTES_RATIO = 0.28

#: Size of an ``int4`` ``.tflite`` (:mod:`pocketflow_tf.int4_export`: CONV_2D and
#: FULLY_CONNECTED kernels as int4, the rest int8) relative to the float32 file. Measured on
#: the trained ResNet-20 / Fashion-MNIST: 172,976 B of 1,099,200 B (0.157x; 0.56x of its
#: int8 file). Models rich in depthwise convolutions (int8 only) shrink less.
INT4_BYTES_RATIO = 0.16

#: Channel-selection criteria searched (``bn_gamma`` needs a BatchNorm after every pruned
#: producer, which user models often lack; the learner falls back per group anyway).
CRITERIA = ("lasso", "l1")

#: Fine-tuning learning rate as a factor of the configured one, searched on a log scale:
#: a pruned model restarts from good weights, so rates well below the training rate help.
LR_FACTOR_RANGE = (0.1, 1.0)

#: Room on the FLOPs keep ratio a byte goal allows a pruning chain: weights and FLOPs do not
#: shrink alike (ResNet-20 pruned to 0.36x and 0.41x FLOPs gave int8 files of 0.093x and
#: 0.112x of the float file, about 0.27x of the FLOPs share), so the range stays loose.
PRUNE_BYTES_MARGIN = 1.3

#: Room on the byte goal a pruning chain's parameter keep range allows: the top of the range
#: is where the chain's line (:func:`prune_line`) reaches 1.1x the goal. Measured lines put
#: MobileNet-v1's and a user-style net's pruned int8 / int4 files at parameter keeps
#: 0.17-0.60 within 6 % of what they weighed (erring large), and the margin leaves room for
#: the rounding of channel counts.
PARAMS_BYTES_MARGIN = 1.1

#: The speed-up an int8 chain is assumed to bring when it was not measured. Hosts differ
#: widely (DESIGN.md: int8 was 0.8x of float on one host, 3.5x on another), so ``auto``
#: measures it (``ModelFacts.int8_speedup``) whenever a speed goal has an int8 candidate.
INT8_SPEEDUP_GUESS = 2.0

#: FLOPs keep ratios searched by default: below 0.1 a CNN rarely keeps its accuracy, above
#: 0.9 pruning barely pays for its fine-tuning.
DEFAULT_FLOPS_KEEP_RANGE = (0.1, 0.9)

#: Parameter keep ratios searched by default, for byte goals (the same reasoning).
DEFAULT_PARAMS_KEEP_RANGE = (0.1, 0.9)

#: Weight sparsities searched by default: below 0.5 sparse storage barely beats the dense
#: file (its indices cost more than half the saved values), and 0.97 stays below the 0.99
#: cap of one layer (:data:`~pocketflow_tf.learners.weight_sparse.ratios.MAX_LAYER_RATIO`)
#: with room for a short fine-tune to recover.
DEFAULT_SPARSITY_RANGE = (0.5, 0.97)

#: A sparse ``.tflite`` relative to the dense *float* file is about ``factor * (1 -
#: sparsity)``, per export mode: the stored values plus their indices, and the layers left
#: dense. Measured on ResNet-20 / Fashion-MNIST at weight sparsity 0.8957
#: (``bench/results/sparsity.json``, dense float file 1,099,200 B): float-sparse 175,880 B
#: (0.160x, factor 1.53), int8-sparse 122,128 B (0.111x, factor 1.07). One point of one
#: model: ``auto`` measures the line on the user's model instead when a byte goal makes it
#: matter (:attr:`ModelFacts.sparse_bytes`, :mod:`storage_probe`); on MobileNet-v1 and a
#: user-style net the files came out 0.17-0.24x at sparsities 0.90-0.93, about twice this.
SPARSE_BYTES_FACTOR = {"float": 1.53, "int8": 1.07}

#: Layers with fewer prunable weights stay dense in the sparse chains (the
#: ``WeightSparseLearner`` default ``ws_min_params``: little to gain, much to lose).
SPARSE_MIN_PARAMS = 1000


@dataclasses.dataclass(frozen=True)
class Chain:
    """A method chain the automated compression can build.

    Attributes:
        name: Its name in the search space and the reports.
        prunes: Channel pruning (``ChannelPrunedLearner``, ``auto`` per-group counts) then a
            distilled fine-tune.
        int8: Ends with a full-integer ``.tflite`` (int8 activations; PTQ in the per-trial
            proxy, PTQ or QAT for the final model), else a float ``.tflite``.
        summary: One line for people.
        sparse: Weight sparsity (``WeightSparseLearner``, gradual magnitude pruning) then a
            distilled fine-tune, exported in TFLite's sparse storage
            (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``).
        params: The search parameters the chain uses besides ``chain``
            (:func:`active_params`).
        weight_bits: Bits of every kernel of an integer chain: 8, or 4 for the ``int4``
            file (:mod:`pocketflow_tf.int4_export`; quantization-aware training at 4 bits
            for the final model's QAT option).

    Example:
        >>> CHAINS["prune+int8"].export_mode, CHAINS["prune+int4"].export_mode
        ('int8', 'int4')
    """

    name: str
    prunes: bool
    int8: bool
    summary: str
    sparse: bool = False
    params: tuple[str, ...] = ()
    weight_bits: int = 8

    @property
    def export_mode(self) -> str:
        """The ``.tflite`` mode this chain deploys (``"int4"``, ``"int8"`` or ``"float"``).

        Example:
            >>> CHAINS["prune"].export_mode
            'float'
        """
        if not self.int8:
            return "float"
        return "int4" if self.weight_bits <= 4 else "int8"

    @property
    def bytes_ratio(self) -> float:
        """The chain's file relative to the float file before any pruning or sparsity.

        Example:
            >>> CHAINS["prune"].bytes_ratio, CHAINS["int4"].bytes_ratio
            (1.0, 0.16)
        """
        if not self.int8:
            return 1.0
        return INT4_BYTES_RATIO if self.weight_bits <= 4 else INT8_BYTES_RATIO

    @property
    def fine_tunes(self) -> bool:
        """Whether the chain trains the model (channel pruning or weight sparsity).

        Example:
            >>> CHAINS["sparse"].fine_tunes, CHAINS["int8"].fine_tunes
            (True, False)
        """
        return self.prunes or self.sparse


# A plan's space holds one of the two keep ratios (``keep_param``).
_PRUNE_PARAMS = ("flops_keep", "params_keep", "criterion", "lr_factor")
_SPARSE_PARAMS = ("sparsity", "lr_factor")

#: Every chain this version builds, in the order they are listed to the search.
CHAINS: dict[str, Chain] = {
    c.name: c
    for c in (
        Chain(
            "prune",
            True,
            False,
            "channel pruning + distilled fine-tune, float .tflite",
            params=_PRUNE_PARAMS,
        ),
        Chain("int8", False, True, "full-integer int8 .tflite of the dense model"),
        Chain(
            "prune+int8",
            True,
            True,
            "channel pruning + distilled fine-tune, then full-integer int8 .tflite",
            params=_PRUNE_PARAMS,
        ),
        Chain(
            "int4",
            False,
            True,
            "int4 kernels (int8 activations) .tflite of the dense model",
            weight_bits=4,
        ),
        Chain(
            "prune+int4",
            True,
            True,
            "channel pruning + distilled fine-tune, then int4 kernels (int8 activations)",
            params=_PRUNE_PARAMS,
            weight_bits=4,
        ),
        Chain(
            "sparse",
            False,
            False,
            "weight sparsity (magnitude pruning) + distilled fine-tune, sparse float .tflite",
            sparse=True,
            params=_SPARSE_PARAMS,
        ),
        Chain(
            "sparse+int8",
            False,
            True,
            "weight sparsity (magnitude pruning) + distilled fine-tune, sparse int8 .tflite",
            sparse=True,
            params=_SPARSE_PARAMS,
        ),
    )
}

_BYTES_WHY = (
    f"int8 stores ~{INT8_BYTES_RATIO}x of the float bytes, int4 kernels "
    f"~{INT4_BYTES_RATIO}x; pruning removes weights; sparse "
    f"storage keeps ~{SPARSE_BYTES_FACTOR['float']:g}x (float) or "
    f"~{SPARSE_BYTES_FACTOR['int8']:g}x (int8) of (1 - sparsity) of the float bytes"
)

#: Goal -> (chains able to reach it, why). A target's candidates are the chains every one of
#: its goals allows.
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "speedup": (
        ("prune", "int8", "prune+int8"),
        "fewer channels and int8 kernels both cut LiteRT latency (measured, not assumed); "
        "not weight sparsity: LiteRT densifies sparse weights when it loads the file",
    ),
    "flops_ratio": (
        ("prune", "prune+int8"),
        "only removing channels removes FLOPs; int8 keeps every multiply-accumulate, and "
        "sparse weights are densified at load",
    ),
    "max_bytes": (
        ("int8", "prune", "prune+int8", "int4", "prune+int4", "sparse", "sparse+int8"),
        _BYTES_WHY,
    ),
    "bytes_ratio": (
        ("int8", "prune", "prune+int8", "int4", "prune+int4", "sparse", "sparse+int8"),
        _BYTES_WHY,
    ),
    "int8": (
        ("int8", "prune+int8", "sparse+int8"),
        "an int8 deployment: every chain must end in int8",
    ),
}


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about the dense model.

    Attributes:
        prunable: Whether the model has a prunable channel group.
        min_flops_keep: The smallest FLOPs keep ratio channel pruning reaches on it (every
            prunable group at its smallest rounded count).
        dense_bytes: Its float ``.tflite`` size (``None``: unknown; size estimates are skipped).
        blocked: Why groups are blocked, for the notes when nothing is prunable.
        int8_speedup: The dense model's int8 ``.tflite`` speed-up over its float file,
            measured on this host (``None``: not measured; :data:`INT8_SPEEDUP_GUESS`).
        sparse_layers: Class names of the layers weight sparsity would prune (the
            ``WeightSparseLearner`` rules with :data:`SPARSE_MIN_PARAMS`); ``None``: unknown.
        min_params_keep: The smallest parameter keep ratio channel pruning reaches (the
            layers it cannot prune keep theirs); 0: unknown.
        export_ratios: The dense model's ``.tflite`` size per integer export mode
            (``"int8"``, ``"int4"``) relative to its float file, measured on this model
            (:mod:`storage_probe`); ``None`` or a missing mode: the constants
            :data:`INT8_BYTES_RATIO` / :data:`INT4_BYTES_RATIO`.
        sparse_bytes: Per sparse export mode (``"float"``, ``"int8"``), the measured line
            ``(fixed, per_kept)``: the sparse file is ``fixed + per_kept * (1 - sparsity)``
            of the float file (:mod:`storage_probe`); ``None`` or a missing mode:
            :data:`SPARSE_BYTES_FACTOR`.
        prune_bytes: Per export mode of the pruning chains (``"float"``, ``"int8"``,
            ``"int4"``), the measured line ``(fixed, per_kept)``: a channel-pruned file is
            ``fixed + per_kept * params_keep`` of the float file (:mod:`storage_probe`,
            through the dense file and one pruned one); ``None`` or a missing mode: the
            dense file's ratio times the parameter keep ratio (:func:`prune_line`).

    Example:
        >>> ModelFacts(prunable=False, min_flops_keep=1.0).prunable
        False
    """

    prunable: bool
    min_flops_keep: float
    dense_bytes: int | None = None
    blocked: str = ""
    int8_speedup: float | None = None
    sparse_layers: tuple[str, ...] | None = None
    min_params_keep: float = 0.0
    export_ratios: Mapping[str, float] | None = None
    sparse_bytes: Mapping[str, tuple[float, float]] | None = None
    prune_bytes: Mapping[str, tuple[float, float]] | None = None


def model_facts(
    model: keras.Model, *, channel_round: int = 8, dense_bytes: int | None = None
) -> ModelFacts:
    """Reads :class:`ModelFacts` off a Keras model (no data, no training).

    Args:
        model: The dense model.
        channel_round: The channel rounding pruning will use.
        dense_bytes: Its float ``.tflite`` size, when already exported.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> inp = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(16, 3, name="c1")(inp)
        >>> x = keras.layers.GlobalAveragePooling2D()(x)
        >>> f = model_facts(keras.Model(inp, keras.layers.Dense(2)(x)))
        >>> f.prunable, round(f.min_flops_keep, 2), f.sparse_layers, round(f.min_params_keep, 2)
        (True, 0.5, (), 0.51)
    """
    infos = ratios_lib.layer_infos(model, min_params=SPARSE_MIN_PARAMS)
    sparse_layers = tuple(i.class_name for i in infos if i.prunable)
    graph = channel_graph.build(model)
    groups = graph.prunable_groups()
    if not groups:
        blocked = "; ".join(f"{g.producers or g.id}: {g.blockers}" for g in graph.groups)
        return ModelFacts(False, 1.0, dense_bytes, blocked, sparse_layers=sparse_layers)
    fm = allocation.FlopsModel.build(model, graph)
    smallest = {
        allocation.key_of(g): allocation.round_count(1, g.size, channel_round) for g in groups
    }
    keep = fm.flops(smallest) / fm.dense_flops
    return ModelFacts(
        True,
        keep,
        dense_bytes,
        sparse_layers=sparse_layers,
        min_params_keep=fm.params(smallest) / fm.dense_params,
    )


def export_ratio(chain: Chain, facts: ModelFacts) -> float:
    """``chain``'s file relative to the dense float file before any pruning or sparsity:
    measured on the model when ``facts`` has it (:attr:`ModelFacts.export_ratios`), else
    :attr:`Chain.bytes_ratio`.

    Example:
        >>> export_ratio(CHAINS["prune+int4"], ModelFacts(True, 0.1))
        0.16
        >>> export_ratio(CHAINS["prune+int4"], ModelFacts(True, 0.1, export_ratios={"int4": 0.3}))
        0.3
    """
    measured = facts.export_ratios or {}
    if chain.int8 and chain.export_mode in measured:
        return float(measured[chain.export_mode])
    return chain.bytes_ratio


def sparse_line(mode: str, facts: ModelFacts) -> tuple[float, float, bool]:
    """``(fixed, per_kept, measured)``: a ``mode`` sparse file is about ``fixed + per_kept *
    (1 - sparsity)`` of the dense float file, as measured on the model
    (:attr:`ModelFacts.sparse_bytes`) or else from :data:`SPARSE_BYTES_FACTOR`.

    Example:
        >>> sparse_line("int8", ModelFacts(True, 0.1))
        (0.0, 1.07, False)
        >>> sparse_line("int8", ModelFacts(True, 0.1, sparse_bytes={"int8": (0.05, 1.4)}))
        (0.05, 1.4, True)
    """
    line = (facts.sparse_bytes or {}).get(mode)
    if line is None:
        return 0.0, SPARSE_BYTES_FACTOR[mode], False
    return float(line[0]), float(line[1]), True


def prune_line(chain: Chain, facts: ModelFacts) -> tuple[float, float, bool]:
    """``(fixed, per_kept, measured)``: ``chain``'s channel-pruned file is about ``fixed +
    per_kept * params_keep`` of the dense float file, as measured on the model
    (:attr:`ModelFacts.prune_bytes`) or else :func:`export_ratio` times the parameter keep.

    The plain product is optimistic: per-channel scales, zero points and biases, and the
    layers pruning cannot touch, shrink less than the kernels (MobileNet-v1's prune+int4
    file at parameter keep 0.43 was 0.15x of the float file, the product said 0.113x).

    Example:
        >>> prune_line(CHAINS["prune+int8"], ModelFacts(True, 0.1))
        (0.0, 0.28, False)
        >>> prune_line(CHAINS["prune+int8"], ModelFacts(True, 0.1, prune_bytes={"int8": (0.04, 0.24)}))
        (0.04, 0.24, True)
    """
    line = (facts.prune_bytes or {}).get(chain.export_mode)
    if line is None:
        return 0.0, export_ratio(chain, facts), False
    return float(line[0]), float(line[1]), True


def params_keep_for(ratio: float, fixed: float, per_kept: float) -> float:
    """The largest parameter keep ratio whose pruned file stays within ``ratio`` of the float
    file on the line ``fixed + per_kept * keep`` (0 when even no weights would not fit).

    Example:
        >>> params_keep_for(0.1, 0.02, 0.2), params_keep_for(0.01, 0.02, 0.2)
        (0.4, 0.0)
    """
    if per_kept <= 0:
        return 1.0 if fixed <= ratio else 0.0
    return round(max(0.0, (ratio - fixed) / per_kept), 6)


def bytes_goal_ratio(target: Target, facts: ModelFacts) -> float | None:
    """The byte goals as one ratio to the dense float file (``None``: no usable byte goal).

    A ``max_bytes`` goal counts only when the dense file's size is known.

    Example:
        >>> bytes_goal_ratio(Target(max_bytes=200, bytes_ratio=0.5), ModelFacts(True, 0.1, 1000))
        0.2
    """
    ratios = [] if target.bytes_ratio is None else [target.bytes_ratio]
    if target.max_bytes is not None and facts.dense_bytes:
        ratios.append(target.max_bytes / facts.dense_bytes)
    return min(ratios) if ratios else None


def _too_big(what: str, best_ratio: float, target: Target, facts: ModelFacts) -> str | None:
    # ``what`` says whether the ratio was measured on the model or estimated.
    # 10 % of margin: the estimates only drop clear cases.
    goal = bytes_goal_ratio(target, facts)
    if goal is None or best_ratio * 0.9 <= goal:
        return None
    if target.bytes_ratio is not None and best_ratio * 0.9 > target.bytes_ratio:
        return f"{what} gives ~{best_ratio:.3g}x of the float bytes > {target.bytes_ratio:g}x"
    return f"{what} gives ~{best_ratio * facts.dense_bytes:.0f} B > {target.max_bytes} B"


def _alone_too_big(name: str) -> Callable[[Target, ModelFacts], str | None]:
    def check(target: Target, facts: ModelFacts) -> str | None:
        chain = CHAINS[name]
        return _too_big(
            f"{name} alone ({_how(chain, facts)})", export_ratio(chain, facts), target, facts
        )

    return check


def _pruned_too_big(name: str) -> Callable[[Target, ModelFacts], str | None]:
    # Only on a measured line: the plain product of the constants cannot tell a clear case.
    def check(target: Target, facts: ModelFacts) -> str | None:
        fixed, per_kept, measured = prune_line(CHAINS[name], facts)
        if not measured or not facts.min_params_keep:
            return None
        smallest = facts.min_params_keep
        what = f"{name} at its smallest (parameter keep {smallest:.3g}, measured)"
        return _too_big(what, fixed + per_kept * smallest, target, facts)

    return check


def _sparse_too_big(mode: str) -> Callable[[Target, ModelFacts], str | None]:
    top = DEFAULT_SPARSITY_RANGE[1]

    def check(target: Target, facts: ModelFacts) -> str | None:
        fixed, per_kept, measured = sparse_line(mode, facts)
        what = (
            f"{mode} sparse storage at sparsity {top:g} ({'measured' if measured else 'estimated'})"
        )
        return _too_big(what, fixed + per_kept * (1.0 - top), target, facts)

    return check


def _model_not_prunable(target: Target, facts: ModelFacts) -> str | None:
    if facts.prunable:
        return None
    return f"the model has no prunable channel group ({facts.blocked or 'none found'})"


def _nothing_to_sparsify(int8: bool) -> Callable[[Target, ModelFacts], str | None]:
    def check(target: Target, facts: ModelFacts) -> str | None:
        layers = facts.sparse_layers
        if layers is None or any(not (int8 and c == "Dense") for c in layers):
            return None
        if layers:  # only Dense layers: an int8 file must keep them dense (sparse_build)
            return "weight sparsity could only prune Dense layers, which int8 keeps dense"
        return (
            "weight sparsity has no layer to prune (first and last layers and layers under "
            f"{SPARSE_MIN_PARAMS} weights stay dense)"
        )

    _HARD.add(check)
    return check


#: Estimates that drop a chain even when it is the last: the chain cannot be built at all.
_HARD: set[Callable[[Target, ModelFacts], str | None]] = {_model_not_prunable}


#: Chain -> checks ``(target, facts) -> reason | None``; a reason drops the chain as long as
#: another candidate remains (a chain that cannot be built -- no prunable channel group, no
#: layer to sparsify -- is dropped unconditionally).
ESTIMATES: dict[str, tuple[Callable[[Target, ModelFacts], str | None], ...]] = {
    "prune": (_model_not_prunable, _pruned_too_big("prune")),
    "int8": (_alone_too_big("int8"),),
    "prune+int8": (_model_not_prunable, _pruned_too_big("prune+int8")),
    "int4": (_alone_too_big("int4"),),
    "prune+int4": (_model_not_prunable, _pruned_too_big("prune+int4")),
    "sparse": (_nothing_to_sparsify(False), _sparse_too_big("float")),
    "sparse+int8": (_nothing_to_sparsify(True), _sparse_too_big("int8")),
}


@dataclasses.dataclass
class Plan:
    """The candidate chains and the search space for one target and model.

    Attributes:
        target: The target planned for.
        chains: Candidate chains, in :data:`CHAINS` order.
        space: The search space (always holds ``chain``; pruning parameters when a chain
            prunes).
        flops_keep_range: The searched FLOPs keep range (``None`` when nothing prunes, or
            when pruning searches ``params_keep``).
        notes: Why each chain was kept or dropped, and how ranges were narrowed.
        sparsity_range: The searched weight sparsity range (``None`` when nothing
            sparsifies).
        params_keep_range: The searched parameter keep range (``None`` unless a byte-only
            target prunes: :func:`keep_param`).

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> p = plan(Target.parse("int8"), ModelFacts(True, 0.1))
        >>> p.chain_names, p.size
        (['int8', 'prune+int8', 'sparse+int8'], None)
    """

    target: Target
    chains: list[Chain]
    space: space_lib.SearchSpace
    flops_keep_range: tuple[float, float] | None
    notes: list[str]
    sparsity_range: tuple[float, float] | None = None
    params_keep_range: tuple[float, float] | None = None

    @property
    def chain_names(self) -> list[str]:
        """The candidate chains' names.

        Example:
            >>> from pocketflow_tf.learners.auto.target import Target
            >>> plan(Target(flops_ratio=0.5), ModelFacts(True, 0.1)).chain_names
            ['prune', 'prune+int8']
        """
        return [c.name for c in self.chains]

    @property
    def size(self) -> int | None:
        """Number of distinct points when every parameter is a choice, else ``None``.

        Example:
            >>> from pocketflow_tf.learners.auto.target import Target
            >>> plan(Target(int8=True, speedup=2.0), ModelFacts(False, 1.0)).size
            1
        """
        if not all(isinstance(p, space_lib.Choice) for p in self.space.params):
            return None
        return len(list(itertools.product(*(p.values for p in self.space.params))))

    def to_dict(self) -> dict[str, Any]:
        """JSON form for reports.

        Example:
            >>> from pocketflow_tf.learners.auto.target import Target
            >>> plan(Target(int8=True, speedup=2.0), ModelFacts(False, 1.0)).to_dict()["space"]
            [{'kind': 'choice', 'name': 'chain', 'values': ['int8']}]
        """
        return {
            "target": self.target.to_dict(),
            "chains": [dataclasses.asdict(c) for c in self.chains],
            "space": self.space.to_config(),
            "flops_keep_range": self.flops_keep_range,
            "sparsity_range": self.sparsity_range,
            "params_keep_range": self.params_keep_range,
            "notes": list(self.notes),
        }


def active_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a point's chain uses (its :attr:`Chain.params`, and ``chain``).

    The space is flat -- every trial carries every parameter -- so reports show only those
    that shaped the trial.

    Example:
        >>> active_params({"chain": "int8", "flops_keep": 0.3, "criterion": "l1"})
        {'chain': 'int8'}
        >>> active_params({"chain": "sparse", "flops_keep": 0.3, "sparsity": 0.9,
        ...                "lr_factor": 0.5})
        {'chain': 'sparse', 'sparsity': 0.9, 'lr_factor': 0.5}
    """
    chain = CHAINS[params["chain"]]
    return {k: v for k, v in params.items() if k == "chain" or k in chain.params}


def allowed_chains(target: Target) -> list[Chain]:
    """The chains every goal of ``target`` allows (:data:`RULES`), before any estimate.

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> [c.name for c in allowed_chains(Target.parse("int8, 10x smaller"))]
        ['int8', 'prune+int8', 'sparse+int8']
    """
    names = list(CHAINS)
    for goal in target.resource_goals():
        names = [n for n in names if n in RULES[goal][0]]
    return [CHAINS[n] for n in names]


def candidate_chains(target: Target, facts: ModelFacts) -> tuple[list[Chain], list[str]]:
    """The chains every goal of ``target`` allows, less those the estimates rule out.

    Raises:
        InvalidArgumentError: When no chain can serve the target on this model (e.g. a FLOPs
            goal for a model with nothing prunable).

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> chains, notes = candidate_chains(Target.parse("<=0.2x bytes"), ModelFacts(True, 0.1))
        >>> [c.name for c in chains]
        ['prune', 'prune+int8', 'int4', 'prune+int4', 'sparse', 'sparse+int8']
    """
    names = [c.name for c in allowed_chains(target)]
    notes = []
    for goal in target.resource_goals():
        allowed, why = RULES[goal]
        notes.append(f"{goal}: {', '.join(allowed)} ({why})")
    # Chains that cannot be built go first: a size estimate must not drop the one chain that
    # would have remained after them.
    for hard in (True, False):
        for name in list(names):
            for estimate in ESTIMATES[name]:
                reason = (estimate in _HARD) == hard and estimate(target, facts)
                if reason and (hard or len(names) > 1):
                    names.remove(name)
                    notes.append(f"dropped {name}: {reason}")
                    break
    if not names:
        raise errors.InvalidArgumentError(
            "target",
            target.describe(),
            "a target some chain can serve on this model: "
            + (
                f"channel pruning is impossible ({facts.blocked or 'no prunable group'}) and "
                "FLOPs can only fall by pruning"
                if not facts.prunable
                else "see the planner's RULES"
            ),
        )
    return [CHAINS[n] for n in names], notes


def flops_keep_range(
    target: Target, facts: ModelFacts, chains: list[Chain]
) -> tuple[tuple[float, float], list[str]]:
    """The FLOPs keep ratios worth searching, and why.

    * the top is at most the FLOPs goal (keeping more cannot meet it);
    * for a speed goal, pruning alone must cut FLOPs at least as much as latency (measured
      speed-ups trail FLOPs cuts, DESIGN.md section 4), so the top is ``1/speedup``; when
      an int8 chain is a candidate it shares the work and the top is
      ``int8_speedup/speedup`` (the dense model's measured int8 speed-up, else
      :data:`INT8_SPEEDUP_GUESS`);
    * for a byte goal, a pruned file keeps about the FLOPs keep ratio of its weights (times
      :data:`INT8_BYTES_RATIO` when a pruning chain ends in int8), so the top is the bytes
      ratio over that, with :data:`PRUNE_BYTES_MARGIN` of room (weights and FLOPs do not
      shrink alike);
    * the bottom is what the model can reach (rounded channel counts).

    An unreachable goal (top below the bottom) keeps a small range at the bottom: those
    trials then measure how close the model gets, for the report.

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> flops_keep_range(Target(speedup=4), ModelFacts(True, 0.05), [CHAINS["prune"]])[0]
        (0.1, 0.25)
        >>> facts = ModelFacts(True, 0.05, int8_speedup=3.2)
        >>> flops_keep_range(Target(speedup=4), facts, [CHAINS["prune+int8"]])[0]
        (0.1, 0.8)
        >>> flops_keep_range(Target(bytes_ratio=0.1), facts, [CHAINS["prune+int8"]])[0]
        (0.1, 0.464286)
    """
    low, high = DEFAULT_FLOPS_KEEP_RANGE
    notes = []
    if target.flops_ratio is not None:
        high = min(high, target.flops_ratio)
    if target.speedup is not None:
        share = 1.0
        if any(c.int8 for c in chains):
            share = max(1.0, facts.int8_speedup or INT8_SPEEDUP_GUESS)
        high = min(high, share / target.speedup)
        measured = " measured" if facts.int8_speedup else " assumed"
        notes.append(
            f"speed-up {target.speedup:g}x: FLOPs keep searched up to {share:.3g}/"
            f"{target.speedup:g}"
            + (f" (an int8 chain shares the speed-up:{measured} {share:.3g}x)" if share > 1 else "")
        )
    ratio = target.bytes_ratio
    if target.max_bytes is not None and facts.dense_bytes:
        ratio = min(ratio or 1.0, target.max_bytes / facts.dense_bytes)
    pruning = [c for c in chains if c.prunes]
    if ratio is not None and pruning:
        # The most compact pruning chain sets the top: the others then miss the goal at
        # the highest ratios, which their trials measure.
        best = min(pruning, key=lambda c: export_ratio(c, facts))
        factor = export_ratio(best, facts)
        top = ratio * PRUNE_BYTES_MARGIN / factor
        if top < high:
            high = top
            notes.append(
                f"bytes <= {ratio:.3g}x: FLOPs keep searched up to {top:.3g} (a pruned file "
                f"keeps about its FLOPs share of the weights"
                + _mode_factor_text(best, facts)
                + f"; {PRUNE_BYTES_MARGIN}x margin)"
            )
    # The planner's rounding must not go below what the model reaches.
    floor = facts.min_flops_keep * 1.001
    return _range_above(low, high, floor, "FLOPs keep", "channel counts rounded", notes)


def _mode_factor_text(chain: Chain, facts: ModelFacts) -> str:
    """``", x0.28 in int8 (estimated)"`` for the notes; empty for a float chain."""
    factor = export_ratio(chain, facts)
    if factor >= 1:
        return ""
    return f", x{factor:.3g} in {chain.export_mode} ({_how(chain, facts)})"


def _how(chain: Chain, facts: ModelFacts) -> str:
    """Whether :func:`export_ratio` of ``chain`` was measured on the model, for the notes."""
    return "measured" if chain.export_mode in (facts.export_ratios or {}) else "estimated"


def _range_above(
    low: float, high: float, floor: float, what: str, why: str, notes: list[str]
) -> tuple[tuple[float, float], list[str]]:
    """``(low, high)`` with ``low`` raised to ``floor``; a goal below the floor keeps a small
    range just above it (those trials measure how close the model gets)."""
    low = max(min(low, high * 0.5), floor)
    if high <= low:
        notes.append(
            f"the goals need {what} <= {high:.3g}, but this model reaches {floor:.3g} at best "
            f"({why}): searching just above what it reaches"
        )
        high = min(1.0, max(low * 1.5, low + 0.05))
    return (round(low, 6), round(high, 6)), notes


def keep_param(target: Target) -> str:
    """Which keep ratio the pruning chains search: ``"params_keep"`` or ``"flops_keep"``.

    A target whose only resource goals are about bytes (``max_bytes``, ``bytes_ratio``,
    ``int8``) prunes by *weights*: channels are removed where they hold the most parameters
    (``ChannelPrunedLearner(cp_params_keep=...)``), FLOPs left free. A FLOPs or speed goal
    keeps the FLOPs keep ratio (it needs the FLOPs gone, wherever the weights are).

    Example:
        >>> keep_param(Target.parse("10x smaller")), keep_param(Target.parse("5x faster"))
        ('params_keep', 'flops_keep')
        >>> keep_param(Target.parse("int8, <=0.2x bytes, 2x faster"))
        'flops_keep'
    """
    goals = set(target.resource_goals())
    if goals & {"max_bytes", "bytes_ratio"} and not goals & {"speedup", "flops_ratio"}:
        return "params_keep"
    return "flops_keep"


def params_keep_range(
    target: Target, facts: ModelFacts, chains: list[Chain]
) -> tuple[tuple[float, float], list[str]]:
    """The parameter keep ratios worth searching for a byte-only target, and why.

    The top is the largest keep whose file the most compact pruning chain's line
    (:func:`prune_line`: measured on a pruned model, or else the dense ratio times the keep)
    puts within the byte goal, with :data:`PARAMS_BYTES_MARGIN`; the bottom is what the
    model reaches (its unprunable layers keep their weights). An
    unreachable goal keeps a small range at the bottom, as :func:`flops_keep_range` does.

    Example:
        >>> facts = ModelFacts(True, 0.05, dense_bytes=1000, min_params_keep=0.02)
        >>> params_keep_range(Target(bytes_ratio=0.1), facts, [CHAINS["prune+int4"]])[0]
        (0.1, 0.6875)
    """
    low, high = DEFAULT_PARAMS_KEEP_RANGE
    notes = []
    goal = bytes_goal_ratio(target, facts)
    pruning = [c for c in chains if c.prunes]
    if goal is not None and pruning:
        # The most compact pruning chain sets the top (the others miss the goal at the
        # highest ratios, which their trials measure).
        def top_of(c: Chain) -> float:
            return params_keep_for(goal * PARAMS_BYTES_MARGIN, *prune_line(c, facts)[:2])

        best = max(pruning, key=top_of)
        top = top_of(best)
        if top < high:
            high = top
            fixed, per_kept, measured = prune_line(best, facts)
            if measured:
                how = (
                    f"a pruned {best.export_mode} file is {fixed:.3g} + {per_kept:.3g} x its "
                    "parameter keep of the float bytes (measured)"
                )
            else:
                how = "a pruned file keeps about its parameter share of the bytes" + (
                    _mode_factor_text(best, facts)
                )
            notes.append(
                f"bytes <= {goal:.3g}x: parameter keep searched up to {top:.3g} (pruning "
                f"takes channels where they hold the most weights; {how}; "
                f"{PARAMS_BYTES_MARGIN}x margin)"
            )
    floor = facts.min_params_keep * 1.001
    why = "its unprunable layers keep their weights"
    return _range_above(low, high, floor, "parameter keep", why, notes)


def sparsity_range(
    target: Target, facts: ModelFacts, chains: list[Chain]
) -> tuple[tuple[float, float], list[str]]:
    """The weight sparsities worth searching, and why.

    Without a byte goal: :data:`DEFAULT_SPARSITY_RANGE`. With one, the bottom rises to the
    sparsity at which the most compact sparse candidate's file is estimated to meet it
    (:data:`SPARSE_BYTES_FACTOR`, with a 10 % margin towards lower sparsities: the estimate
    comes from one measured point and small models carry relatively more dense layers),
    keeping at least 0.05 below the top. A goal beyond the top keeps that small range at the
    top: those trials measure how close the model gets.

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> sparsity_range(Target(bytes_ratio=0.2), ModelFacts(True, 0.1), [CHAINS["sparse"]])[0]
        (0.8548, 0.97)
        >>> sparsity_range(Target(int8=True), ModelFacts(True, 0.1), [CHAINS["sparse+int8"]])[0]
        (0.5, 0.97)
    """
    low, high = DEFAULT_SPARSITY_RANGE
    notes = []
    goal = bytes_goal_ratio(target, facts)
    if goal is not None:
        # The most compact sparse candidate sets the bottom (the least sparsity needed).
        needed, line = min(
            (_sparsity_needed(goal, *sparse_line(c.export_mode, facts)[:2]), c.export_mode)
            for c in chains
            if c.sparse
        )
        fixed, per_kept, measured = sparse_line(line, facts)
        how = (
            f"{line} sparse file {fixed:.3g} + {per_kept:.3g} x (1 - sparsity) of the float "
            f"bytes, {'measured on this model' if measured else 'estimated'}"
        )
        if needed >= high:
            notes.append(
                f"bytes <= {goal:.3g}x needs weight sparsity >= {needed:.3g} ({how}), above "
                f"the searched top {high:g}: searching just below the top"
            )
        elif needed > low:
            notes.append(
                f"bytes <= {goal:.3g}x: weight sparsity searched from "
                f"{min(needed, high - 0.05):.4g} ({how}; 10 % margin)"
            )
        # At least 0.05 wide: the estimate is rough, and the search needs room.
        low = max(low, min(needed, high - 0.05))
    return (round(low, 4), high), notes


def _sparsity_needed(goal: float, fixed: float, per_kept: float) -> float:
    """The sparsity at which ``fixed + per_kept * (1 - sparsity)`` is within 10 % of
    ``goal`` (the margin leans towards lower sparsities; above 1 when out of reach)."""
    return 1.0 - (goal / 0.9 - fixed) / per_kept


def plan(target: Target, facts: ModelFacts) -> Plan:
    """Turns a target into candidate chains and a search space.

    Args:
        target: The target.
        facts: What the model allows (:func:`model_facts`).

    Returns:
        The :class:`Plan`.

    Raises:
        InvalidArgumentError: When no chain can serve the target on this model.

    Example:
        >>> from pocketflow_tf.learners.auto.target import Target
        >>> p = plan(Target.parse("2x faster"), ModelFacts(True, 0.05))
        >>> p.chain_names
        ['prune', 'int8', 'prune+int8']
        >>> p.space["flops_keep"].low, p.space["flops_keep"].high
        (0.1, 0.9)
    """
    chains, notes = candidate_chains(target, facts)
    params: list[Any] = [space_lib.Choice("chain", [c.name for c in chains])]
    keep = sparse = params_keep = None
    if any(c.prunes for c in chains):
        if keep_param(target) == "params_keep":
            params_keep, range_notes = params_keep_range(target, facts, chains)
            params.append(space_lib.Float("params_keep", *params_keep))
        else:
            keep, range_notes = flops_keep_range(target, facts, chains)
            params.append(space_lib.Float("flops_keep", *keep))
        notes += range_notes
        params.append(space_lib.Choice("criterion", CRITERIA))
    if any(c.sparse for c in chains):
        sparse, range_notes = sparsity_range(target, facts, chains)
        notes += range_notes
        params.append(space_lib.Float("sparsity", *sparse))
    if any("lr_factor" in c.params for c in chains):
        params.append(space_lib.Float("lr_factor", *LR_FACTOR_RANGE, log=True))
    return Plan(target, chains, space_lib.SearchSpace(params), keep, notes, sparse, params_keep)


__all__ = [
    "CHAINS",
    "CRITERIA",
    "DEFAULT_SPARSITY_RANGE",
    "ESTIMATES",
    "INT4_BYTES_RATIO",
    "INT8_BYTES_RATIO",
    "INT8_SPEEDUP_GUESS",
    "PARAMS_BYTES_MARGIN",
    "PRUNE_BYTES_MARGIN",
    "RULES",
    "SPARSE_BYTES_FACTOR",
    "SPARSE_MIN_PARAMS",
    "Chain",
    "active_params",
    "bytes_goal_ratio",
    "ModelFacts",
    "Plan",
    "allowed_chains",
    "candidate_chains",
    "export_ratio",
    "flops_keep_range",
    "keep_param",
    "model_facts",
    "params_keep_range",
    "params_keep_for",
    "plan",
    "prune_line",
    "sparse_line",
    "sparsity_range",
]
