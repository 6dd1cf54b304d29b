"""Building a candidate of a weight-sparsity chain (``sparse``, ``sparse+int8``).

``WeightSparseLearner`` prunes the dense model's kernels by magnitude, gradually, while a
fine-tune distilled from the dense model recovers the accuracy -- the same budget as the
channel-pruning chains (:func:`candidate.build`): ``steps`` proxy steps, or the configured
epochs for the final build. Its schedule is planned in the steps of that very fine-tune, so
the target sparsity is reached at half of it (the learner's default ``ws_iter_ratio_end``)
and the rest trains with fixed masks.

Which kernels: the learner's default rules (the first and last layers and layers under
1,000 weights stay dense), at one uniform sparsity -- except that an int8 chain also keeps
``Dense`` layers dense: LiteRT's XNNPACK delegate fails to prepare an int8
``FULLY_CONNECTED`` whose weights are stored sparse (see
:func:`pocketflow_tf.tflite_export.convert`), so such a file would never pass verification.
The default last-layer rule already covers a classifier whose only ``Dense`` layer is the
logits (ResNet, MobileNet); this one covers user models with hidden ``Dense`` layers.

Example:
    >>> from pocketflow_tf.compat import keras
    >>> m = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(8, 3, name="c1"),
    ...                       keras.layers.Conv2D(64, 3, name="c2"), keras.layers.Flatten(),
    ...                       keras.layers.Dense(64, name="fc"), keras.layers.Dense(2)])
    >>> layer_ratios(m, planner.CHAINS["sparse+int8"], 0.9)
    {'c2': 0.9, 'fc': 0.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pocketflow_tf import distillation, errors, learner, sparsity, training
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import candidate, planner, splits
from pocketflow_tf.learners.weight_sparse import ratios as ratios_lib
from pocketflow_tf.learners.weight_sparse.learner import WeightSparseLearner

#: Share of the fine-tune after which the gradual schedule has reached the target sparsity;
#: the rest recovers at the target (the final build never stops before it).
SCHEDULE_END = 0.5


def layer_ratios(model: keras.Model, chain: planner.Chain, target: float) -> dict[str, float]:
    """Per-layer sparsity of every layer the learner may prune (see the module docstring).

    Args:
        model: The dense model.
        chain: A sparse chain.
        target: The trial's weight sparsity.

    Returns:
        ``{layer path: ratio}``; 0 keeps a layer dense.

    Example:
        >>> m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="a"),
        ...                       keras.layers.Dense(64, name="b"), keras.layers.Dense(4)])
        >>> layer_ratios(m, planner.CHAINS["sparse"], 0.8)
        {'b': 0.8}
    """
    infos = ratios_lib.layer_infos(model, min_params=planner.SPARSE_MIN_PARAMS)
    keep_dense = ("Dense",) if chain.int8 else ()
    return {
        i.name: 0.0 if i.class_name in keep_dense else float(target) for i in infos if i.prunable
    }


def build(
    params: Mapping[str, Any],
    dense: keras.Model,
    teacher: keras.Model,
    data: splits.SearchData,
    *,
    train_config: training.TrainConfig,
    steps: int | None,
    distill: distillation.DistillationConfig | None = None,
    seed: int = 0,
    checkpoint_dir: str | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
) -> candidate.Candidate:
    """Builds the float candidate of a sparse chain's ``params`` (``sparsity``, ``lr_factor``).

    The arguments are :func:`candidate.build`'s (``params`` first: the point decides the
    chain); ``steps`` must be at least 2 (the gradual schedule needs a pruning window) or
    ``None``.

    Returns:
        The :class:`candidate.Candidate`, with ``sparsity`` measured on the pruned kernels
        and ``params_ratio`` the share of non-zero parameters.

    Raises:
        InvalidArgumentError: ``steps`` of 0 or 1, or a model with no layer to prune.

    Example:
        >>> import numpy as np
        >>> inp = keras.Input((8, 8, 1))
        >>> h = keras.layers.Conv2D(8, 3, name="c1")(inp)
        >>> h = keras.layers.Conv2D(32, 3, name="c2")(keras.layers.ReLU()(h))
        >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
        >>> dense = keras.Model(inp, keras.layers.Dense(2)(h))
        >>> x = np.random.default_rng(0).random((300, 8, 8, 1), dtype=np.float32)
        >>> data = splits.make_search_data(x, np.arange(300) % 2, holdout=0.1, seed=0)
        >>> cand = build({"chain": "sparse", "sparsity": 0.8, "lr_factor": 0.3}, dense, dense,
        ...              data, train_config=training.TrainConfig(batch_size=32), steps=10)
        >>> round(cand.sparsity, 2), cand.flops_ratio, len(cand.history["loss"])
        (0.8, 1.0, 1)
    """
    chain = planner.CHAINS[params["chain"]]
    if steps is not None and steps < 2:
        raise errors.InvalidArgumentError(
            "proxy steps",
            steps,
            f"at least 2 for the {chain.name} chain (weight sparsity is reached while training)",
        )
    ratios = layer_ratios(dense, chain, float(params["sparsity"]))
    infos = ratios_lib.layer_infos(dense, min_params=planner.SPARSE_MIN_PARAMS)
    cfg = train_config.replace(
        learning_rate=train_config.learning_rate * float(params["lr_factor"]),
        seed=int(seed) % (2**31),
        warmup_epochs=0.0 if steps is not None else train_config.warmup_epochs,
    )
    # The per-layer ratios go in through the learner's ratio_search hook ("optimal" is the
    # protocol that takes one); its target is their weighted sparsity, so they pass as is.
    tuner = WeightSparseLearner(
        cfg,
        ws_prune_ratio=ratios_lib.weighted_sparsity(infos, ratios),
        ws_prune_ratio_prtl="optimal",
        ratio_search=lambda _infos, _target: ratios,
        ws_min_params=planner.SPARSE_MIN_PARAMS,
        ws_iter_ratio_end=SCHEDULE_END,
        distillation=distill,
        teacher=teacher,
        checkpoint_dir=checkpoint_dir,
        verbose=verbose,
    )
    batches = candidate.full_batches(data.x_train, data.y_train, cfg)
    if steps is not None:
        batches = batches.repeat().take(int(steps))
    model = tuner.fit(dense, batches, epochs=1 if steps is not None else None, callbacks=callbacks)
    # A fresh copy: the wrap-and-strip clones leave every layer with several inbound nodes,
    # and reestimate_batchnorm only rewrites a BatchNorm that has one. It is needed: the
    # zeroed weights shift the statistics after each pruned layer (a one-shot 80 % prune of
    # the test net reads 49 % held out with its old statistics, 100 % re-estimated).
    model = learner.copy_model(model)
    candidate.reestimate_batchnorm(model, data.x_calib)
    pruned = [
        k
        for k in sparsity.keras_kernel_sparsity(model)
        if ratios.get(k.name.rsplit("/", 1)[0]) and not k.name.endswith("/depthwise_kernel")
    ]
    total = model.count_params()
    return candidate.Candidate(
        chain,
        dict(params),
        model,
        params_ratio=(total - sum(k.zeros for k in pruned)) / total,
        history={k: [float(v) for v in vs] for k, vs in tuner.history.history.items()},
        sparsity=sparsity.overall_sparsity(pruned),
    )


__all__ = ["build", "layer_ratios"]
