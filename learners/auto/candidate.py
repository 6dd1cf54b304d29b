"""Building one candidate of a method chain, and writing its verified ``.tflite``.

The same code builds the cheap per-trial candidates (:mod:`proxy`: a few hundred fine-tuning
steps) and the final model (:mod:`learner`: the full fine-tuning budget), so what the search
ranked is what gets built, only trained longer:

1. ``prune`` chains: ``ChannelPrunedLearner`` with the ``auto`` per-group allocation for the
   trial's FLOPs keep ratio (its parameter keep ratio for byte-only targets) and criterion,
   on a fixed calibration subset of the training split, then a fine-tune distilled from the
   dense model at ``lr_factor`` times the configured learning rate;
2. ``sparse`` chains: weight sparsity by gradual magnitude pruning during the same distilled
   fine-tune (:mod:`sparse_build`), exported in TFLite's sparse storage;
3. ``int8`` chains: a full-integer int8 export (post-training quantization of the float
   candidate; the final build may also try quantization-aware training, :func:`qat_finetune`);
   ``int4`` chains the same with every CONV_2D / FULLY_CONNECTED kernel stored as int4
   (:mod:`pocketflow_tf.int4_export`; QAT at 4 bits).

Example:
    >>> SensitivityCache().size
    0
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketflow_tf import (
    atomic_io,
    distillation,
    int4_export,
    learner,
    tflite_export,
    tflite_verify,
    training,
)
from pocketflow_tf.compat import keras, tf
from pocketflow_tf.learners.auto import planner, splits
from pocketflow_tf.learners.channel import allocation
from pocketflow_tf.learners.channel.learner import ChannelPrunedLearner
from pocketflow_tf.learners.full_prec.learner import FullPrecLearner


class SensitivityCache:
    """Remembers the ``auto`` allocation's sensitivity scores across trials.

    ``ChannelPrunedLearner``'s ``auto`` option scores the dense model pruned group by group
    at every allowed count (its greedy allocation) -- the same scores whatever the trial's
    FLOPs keep ratio or criterion, since they only depend on the dense model and the fixed
    calibration subset. Plugged in as its ``ratio_search`` hook, this cache computes them
    once per process instead of once per trial.

    Example:
        >>> cache = SensitivityCache()
        >>> cache.size
        0
    """

    def __init__(self) -> None:
        self._scores: dict[tuple, float] = {}

    @property
    def size(self) -> int:
        """Number of distinct plans scored so far.

        Example:
            >>> SensitivityCache().size
            0
        """
        return len(self._scores)

    def __call__(self, problem: allocation.AllocationProblem) -> dict[str, int]:
        """The greedy sensitivity allocation of ``problem``, with memoised evaluations.

        Example:
            >>> from pocketflow_tf.compat import keras, tf
            >>> from pocketflow_tf import channel_graph
            >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, name="h"),
            ...                       keras.layers.Dense(2)])
            >>> g = channel_graph.build(m)
            >>> fm = allocation.FlopsModel.build(m, g)
            >>> problem = allocation.AllocationProblem(
            ...     fm, 0.5, 8, allocation.choices_for(g), lambda counts: -1.0 / counts["h"])
            >>> cache = SensitivityCache()
            >>> cache(problem), cache.size
            ({'h': 8}, 4)
        """
        evaluate = problem.evaluate

        def cached(counts: Mapping[str, int]) -> float:
            key = tuple(sorted((k, int(v)) for k, v in counts.items()))
            if key not in self._scores:
                self._scores[key] = float(evaluate(counts))
            return self._scores[key]

        return allocation.greedy_sensitivity(dataclasses.replace(problem, evaluate=cached))


@dataclasses.dataclass
class Candidate:
    """A built (float) candidate and what its pruning did.

    Attributes:
        chain: The chain it was built for.
        params: The trial's parameters.
        model: The float Keras model (pruned and fine-tuned, or a copy of the dense model).
        pruned: The pruned model before fine-tuning (``None`` when the chain does not prune).
        groups: Per prunable group: ``key``, ``size``, ``kept`` and ``layers``.
        flops_ratio: FLOPs of ``model`` / dense FLOPs (measured on the built model).
        params_ratio: Parameters of ``model`` / dense parameters.
        flops_keep_applied: The FLOPs keep ratio pruning was asked for (the trial's, raised
            to what the model can reach; 1.0 when it pruned by parameters).
        params_keep_applied: The parameter keep ratio pruning was asked for (``None``
            unless the trial searched ``params_keep``).
        history: Fine-tuning loss curves (``None`` without fine-tuning).
        sparsity: Weight sparsity of the kernels a sparse chain pruned, measured on
            ``model`` (``None`` for the other chains).

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> c = Candidate(planner.CHAINS["int8"], {"chain": "int8"}, m)
        >>> c.chain.prunes, c.pruned, c.flops_ratio, c.groups
        (False, None, 1.0, [])
    """

    chain: planner.Chain
    params: dict[str, Any]
    model: keras.Model
    pruned: keras.Model | None = None
    groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    flops_ratio: float = 1.0
    params_ratio: float = 1.0
    flops_keep_applied: float | None = None
    params_keep_applied: float | None = None
    history: dict[str, list[float]] | None = None
    sparsity: float | None = None


def build(
    dense: keras.Model,
    teacher: keras.Model,
    params: Mapping[str, Any],
    data: splits.SearchData,
    *,
    train_config: training.TrainConfig,
    facts: planner.ModelFacts,
    steps: int | None,
    calib_samples: int,
    eval_samples: int,
    channel_round: int = 8,
    distill: distillation.DistillationConfig | None = None,
    cache: SensitivityCache | None = None,
    prune_seed: int = 0,
    seed: int = 0,
    checkpoint_dir: str | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
) -> Candidate:
    """Builds the float candidate of ``params`` (see the module docstring).

    Args:
        dense: The dense model (never modified).
        teacher: The distillation teacher (a frozen copy of ``dense``).
        params: A point of the plan's space (``chain`` and, for pruning chains,
            ``flops_keep`` or ``params_keep``, ``criterion``, ``lr_factor``; for sparse chains
            ``sparsity``, ``lr_factor``).
        data: The search data (fine-tunes on ``x_train``, selects on ``x_calib``).
        train_config: The configured fine-tuning; its learning rate is scaled by
            ``lr_factor``.
        facts: The model's facts (the reachable FLOPs and parameter keep ratios).
        steps: Fine-tuning steps (the proxy; 0: none); ``None``: ``train_config.epochs``
            epochs over ``data.x_train``.
        calib_samples: Images channel selection samples (``cp_nb_samples``).
        eval_samples: Images the sensitivity analysis scores on (``cp_nb_eval``; keep it
            equal for every build sharing ``cache``).
        channel_round: Channel counts are rounded to this multiple.
        distill: Distillation of the fine-tune (``None``: plain cross-entropy).
        cache: Shared sensitivity scores.
        prune_seed: Seed of channel selection: the same for every build, so that equal
            params select equal channels and only fine-tuning depends on the trial seed.
        seed: Seed of the fine-tune.
        checkpoint_dir: Per-epoch backups of the fine-tune (makes the final build resumable).
        callbacks: Extra Keras callbacks of the fine-tune.
        verbose: Keras verbosity.

    Returns:
        The :class:`Candidate`.

    Example:
        >>> from pocketflow_tf import training
        >>> inp = keras.Input((8, 8, 1))
        >>> h = keras.layers.Conv2D(16, 3, name="c1")(inp)
        >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
        >>> dense = keras.Model(inp, keras.layers.Dense(2)(h))
        >>> x = np.random.default_rng(0).random((300, 8, 8, 1), dtype=np.float32)
        >>> data = splits.make_search_data(x, np.arange(300) % 2, holdout=0.1, seed=0)
        >>> cand = build(dense, dense, {"chain": "prune", "flops_keep": 0.5,
        ...              "criterion": "l1", "lr_factor": 0.3}, data,
        ...              train_config=training.TrainConfig(batch_size=32),
        ...              facts=planner.model_facts(dense), steps=2, calib_samples=64,
        ...              eval_samples=64)
        >>> cand.flops_ratio <= 0.51, [g["kept"] for g in cand.groups]
        (True, [8])
        >>> cand.pruned.get_layer("c1").filters, len(cand.history["loss"])
        (8, 1)
    """
    chain = planner.CHAINS[params["chain"]]
    if chain.sparse:
        from pocketflow_tf.learners.auto import sparse_build  # it builds on this module

        tune = {"distill": distill, "seed": seed, "checkpoint_dir": checkpoint_dir}
        tune.update(callbacks=callbacks, verbose=verbose)
        return sparse_build.build(
            params, dense, teacher, data, train_config=train_config, steps=steps, **tune
        )
    if not chain.prunes:
        return Candidate(chain, dict(params), learner.copy_model(dense))
    keep, params_keep = 1.0, None
    if "params_keep" in params:  # a byte-only target: FLOPs left free
        params_keep = min(1.0, max(float(params["params_keep"]), facts.min_params_keep * 1.0001))
    else:
        keep = max(float(params["flops_keep"]), facts.min_flops_keep * 1.0001)
    prune_cfg = train_config.replace(seed=int(prune_seed))
    pruner = ChannelPrunedLearner(
        prune_cfg,
        cp_prune_option="auto",
        cp_preserve_ratio=min(1.0, keep),
        cp_params_keep=params_keep,
        cp_criterion=params["criterion"],
        cp_channel_round=channel_round,
        cp_nb_samples=int(min(calib_samples, len(data.x_calib))),
        cp_nb_eval=int(min(eval_samples, len(data.x_calib))),
        ratio_search=cache if cache is not None else None,
        verbose=0,
    )
    # The whole fixed calibration subset goes in: the learner draws its selection and
    # evaluation samples from it with prune_seed, identically in every build.
    pruned = pruner.prune(dense, data.x_calib, data.y_calib)
    report = pruner.report
    # Fine-tuning then starts from statistics that match the thinner network.
    reestimate_batchnorm(pruned, data.x_calib)
    cfg = train_config.replace(
        learning_rate=train_config.learning_rate * float(params["lr_factor"]),
        seed=int(seed) % (2**31),
        warmup_epochs=0.0 if steps is not None else train_config.warmup_epochs,
    )
    tuner = FullPrecLearner(
        cfg, distillation=distill, teacher=teacher, checkpoint_dir=checkpoint_dir, verbose=verbose
    )
    if steps == 0:  # selection only (a proxy without fine-tuning)
        model = learner.copy_model(pruned)
    elif steps is not None:
        ds = full_batches(data.x_train, data.y_train, cfg).repeat().take(int(steps))
        model = tuner.fit(pruned, ds, epochs=1, callbacks=callbacks)
    else:
        model = tuner.fit(
            pruned, full_batches(data.x_train, data.y_train, cfg), callbacks=callbacks
        )
    if steps != 0:
        reestimate_batchnorm(model, data.x_calib)  # a short fine-tune leaves them stale
    history = None
    if tuner.history is not None:
        history = {k: [float(v) for v in vs] for k, vs in tuner.history.history.items()}
    return Candidate(
        chain,
        dict(params),
        model,
        pruned=pruned,
        groups=[{k: g[k] for k in ("key", "size", "kept", "layers")} for g in report["groups"]],
        flops_ratio=float(report["flops_ratio"]),
        params_ratio=float(report["params_ratio"]),
        flops_keep_applied=keep,
        params_keep_applied=params_keep,
        history=history,
    )


def full_batches(x: np.ndarray, y: np.ndarray, cfg: training.TrainConfig) -> tf.data.Dataset:
    """The training pipeline of ``cfg`` (shuffled, augmented) without a short last batch.

    Why: TensorFlow 2.21's oneDNN CPU kernels were seen to corrupt the heap (``free():
    invalid next size``, then a segfault) in the training step retraced for the short last
    batch of a channel-pruned ResNet-20 (batch 25 after 42 batches of 128); the same run
    passes with ``TF_ENABLE_ONEDNN_OPTS=0`` or without the short batch. Dropping fewer than
    one batch of a reshuffled epoch costs nothing measurable. The batch shrinks to the data
    when there is less than one batch.

    Example:
        >>> ds = full_batches(np.zeros((70, 2, 2, 1), "float32"), np.zeros(70, "int64"),
        ...                   training.TrainConfig(batch_size=32))
        >>> int(ds.cardinality()), [int(b[0].shape[0]) for b in ds]
        (2, [32, 32])
    """
    batch = max(1, min(int(cfg.batch_size), len(x)))
    ds = training.make_dataset(
        x, y, batch, training=True, augmentation=cfg.augmentation, seed=cfg.seed
    )
    # rebatch forgets the cardinality; the learners size their schedules from it.
    return ds.rebatch(batch, drop_remainder=True).apply(
        tf.data.experimental.assert_cardinality(len(x) // batch)
    )


def reestimate_batchnorm(
    model: keras.Model, x: np.ndarray, batch_size: int = 64, max_batches: int = 20
) -> int:
    """Sets every BatchNorm's moving mean and variance to their exact values on ``x``.

    Why: removing channels changes what a BatchNorm behind a consumer sees (L1 selection
    does not refit the consumer), and a few hundred fine-tuning steps move its exponential
    averages only part of the way (momentum 0.99: 200 steps keep 13 % of the stale value). A
    model that trains well then predicts badly in inference mode. The network runs in
    training mode, as fine-tuning did, and each BatchNorm's statistics become the mean and
    variance of its inputs over every batch (the approach of PyTorch's ``update_bn``).

    Args:
        model: Modified in place.
        x: Training images.
        batch_size: Images per batch.
        max_batches: Batches used at most.

    Returns:
        The number of BatchNorm layers updated.

    Example:
        >>> inp = keras.Input((3,))
        >>> m = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
        >>> x = np.random.default_rng(0).normal(2.0, 3.0, size=(64, 3)).astype("float32")
        >>> reestimate_batchnorm(m, x, batch_size=16)
        1
        >>> bool(np.allclose(m.get_layer("bn").moving_mean.numpy(), x.mean(0), atol=1e-4))
        True
    """
    bns = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and list(layer.axis) in ([len(layer.input_shape) - 1], [-1])
        and len(layer._inbound_nodes) == 1
    ]
    if not bns:
        return 0
    probe = keras.Model(model.inputs, [bn.input for bn in bns])
    sums = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    squares = [np.zeros_like(s) for s in sums]
    count = [0] * len(bns)
    # Full batches only (see full_batches); all of x when it is less than one batch.
    batch_size = max(1, min(batch_size, len(x)))
    for start in range(0, min(len(x) - batch_size + 1, batch_size * max_batches), batch_size):
        outs = probe(x[start : start + batch_size], training=True)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        for i, out in enumerate(outs):
            v = np.asarray(out, np.float64).reshape(-1, sums[i].shape[0])
            sums[i] += v.sum(axis=0)
            squares[i] += (v**2).sum(axis=0)
            count[i] += len(v)
    for bn, s, q, n in zip(bns, sums, squares, count, strict=True):
        mean = s / n
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(np.maximum(q / n - mean**2, 0.0).astype(np.float32))
    return len(bns)


def qat_finetune(
    model: keras.Model,
    teacher: keras.Model,
    data: splits.SearchData,
    *,
    train_config: training.TrainConfig,
    epochs: int,
    distill: distillation.DistillationConfig | None,
    verbose: int = 0,
    weight_bits: int = 8,
) -> keras.Model:
    """Quantization-aware fine-tune of a float candidate (``UniformQuantLearner``): int8, or
    ``weight_bits`` per kernel (4 for an ``int4`` chain) with int8 activations.

    QAT starts from trained weights, so it runs at a tenth of the fine-tuning rate.

    Returns:
        The QAT (fake-quantised) model; its deployable form is the ``"int8"`` export.

    Example:
        >>> q = qat_finetune(cand.model, teacher, data, train_config=cfg, epochs=1,
        ...                  distill=None)  # doctest: +SKIP
    """
    from pocketflow_tf.learners.uniform_quant.learner import UniformQuantLearner

    cfg = train_config.replace(
        epochs=int(epochs), learning_rate=train_config.learning_rate * 0.1, warmup_epochs=0.0
    )
    lrn = UniformQuantLearner(
        cfg,
        distillation=distill,
        teacher=teacher,
        verbose=verbose,
        uql_weight_bits=int(weight_bits),
        uql_report_tflite=False,  # the int4 / int8 export checks the levels itself
    )
    return lrn.fit(model, full_batches(data.x_train, data.y_train, cfg))


#: Verification thresholds of a *trial's* post-training int4 file of a float model. Putting a
#: float model's kernels on 15 levels per channel changes its predictions by design
#: (measured: a ResNet-20 pruned to 0.51x FLOPs after its 20-step proxy fine-tune, top-1
#: agreement 0.923 and 92.20 % -> 89.25 % held out), so the int8 thresholds would fail every
#: such trial and the search would never learn what int4 chains reach. A trial scores the
#: file's own accuracy, so the loss is counted, not hidden; these thresholds still refuse a
#: broken file. The final model's files (PTQ or 4-bit QAT) are verified at the int8 ones.
TRIAL_INT4_THRESHOLDS = {"min_agreement": 0.8, "max_acc_drop": 0.1}


def export(
    model: keras.Model,
    mode: str,
    path: str,
    data: splits.SearchData,
    *,
    child_check: bool,
    sparse: bool = False,
    thresholds: dict[str, float] | None = None,
) -> tflite_verify.ExportResult:
    """Converts, verifies and atomically writes ``model`` as a ``mode`` ``.tflite``.

    Args:
        model: The Keras model (float, or QAT for int8 / int4).
        mode: ``"float"``, ``"int8"`` or ``"int4"`` (:mod:`pocketflow_tf.int4_export`: a QAT
            model keeps its own bits and levels, a float one gets every kernel at 4 bits;
            verified at the int8 thresholds).
        path: Destination.
        data: Verification inputs (``x_verify``) and int8 calibration (``x_rep``).
        child_check: Also load the file in a fresh process
            (:func:`tflite_verify.export_tflite`); the per-trial proxy skips it -- LiteRT
            runs the file in-process anyway when measuring it -- and the final export does
            it.
        sparse: Store pruned weights in TFLite's sparse format (the sparse chains).
        thresholds: Overrides of the verification thresholds of ``mode`` (int8 ones for
            ``"int4"``), e.g. :data:`TRIAL_INT4_THRESHOLDS`.

    Raises:
        VerificationError: The export disagrees with the Keras model (nothing is written).

    Example:
        >>> export(cand.model, "int8", "/tmp/c.tflite", data, child_check=False)  # doctest: +SKIP
    """
    rep = data.x_rep if mode in ("int8", "int4") else None
    content = None
    if mode == "int4":
        content = int4_export.convert(model, int4_export.default_bits(model), rep).content
        mode = "int8"  # its verification thresholds: int8 activations
    if child_check:
        return tflite_verify.export_tflite(
            model,
            path,
            mode=mode,
            x_verify=data.x_verify,
            y_verify=data.y_verify,
            representative_data=rep,
            sparse=sparse,
            content=content,
            thresholds=thresholds,
        )
    if content is None:
        content = tflite_export.convert(model, mode, representative_data=rep, sparse=sparse)
    report = tflite_verify.verify(
        model,
        content,
        data.x_verify,
        data.y_verify,
        mode=mode,
        thresholds=thresholds,
        check_child=False,
    )
    atomic_io.write_with_sha256(path, content)
    raw, gz = tflite_export.tflite_size(content)
    digest = hashlib.sha256(content).hexdigest()
    return tflite_verify.ExportResult(os.fspath(path), digest, raw, gz, report)


def model_fingerprint(model: keras.Model) -> str:
    """sha256 of a model's architecture and weights: a resumed search checks it is the same model.

    Example:
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> len(model_fingerprint(m))
        64
    """
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


__all__ = [
    "Candidate",
    "full_batches",
    "reestimate_batchnorm",
    "SensitivityCache",
    "build",
    "export",
    "model_fingerprint",
    "qat_finetune",
]
