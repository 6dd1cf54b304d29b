"""Flags of the learners whose options are not yet declared as ``Options`` dataclasses.

``weight-sparse``, ``uniform``, ``non-uniform`` and ``product-quant`` still validate their
keyword arguments in their constructors; until each declares its ``Options`` (then
:mod:`pocketflow_tf.app.cli` generates its flags like ``channel``'s), their flags are
defined here by hand. A learner-specific flag given to another learner is an error.

Example:
    >>> sorted(OWNERS)
    ['non-uniform', 'product-quant', 'uniform', 'weight-sparse']
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from pocketflow_tf import errors

FLAGS = flags.FLAGS


def _refuse_flags(owner: str, names: Sequence[str]) -> None:
    """Raises when any flag of ``names`` (which only ``owner`` reads) was given."""
    given = [f"--{name}" for name in names if FLAGS[name].present]
    if given:
        raise errors.InvalidArgumentError(
            "learner", FLAGS.learner, f"{owner} when {', '.join(given)} is given"
        )


# ---- weight-sparse learner (issue 4) -------------------------------------------------------
# PocketFlow's ws_* flags; passed to WeightSparseLearner only when --learner selects it. For
# sparse .tflite files add "-sparse" to an export mode: --export_modes float-sparse,int8-sparse
_WS_FLAGS = (
    "ws_prune_ratio",
    "ws_prune_ratio_prtl",
    "ws_prune_ratio_exp",
    "ws_iter_ratio_beg",
    "ws_iter_ratio_end",
    "ws_mask_update_step",
    "ws_skip_first_last",
    "ws_min_params",
    "ws_m_by_n",
    "ws_ratio_search",
    "ws_search_trials",
)
flags.DEFINE_float(
    "ws_prune_ratio", None, "WS: target sparsity in [0, 1) (default 0.75, or m/n with ws_m_by_n)"
)
flags.DEFINE_enum(
    "ws_prune_ratio_prtl",
    "uniform",
    ["uniform", "heurist", "optimal"],
    "WS: per-layer ratios: uniform, heurist (bigger layers pruned more) or optimal (searched)",
)
flags.DEFINE_float("ws_prune_ratio_exp", 3.0, "WS: exponent of the polynomial sparsity ramp")
flags.DEFINE_float(
    "ws_iter_ratio_beg", 0.1, "WS: fraction of the training steps where pruning begins"
)
flags.DEFINE_float("ws_iter_ratio_end", 0.5, "WS: fraction of the training steps where it ends")
flags.DEFINE_integer(
    "ws_mask_update_step", None, "WS: steps between mask updates (default: ~10 updates)"
)
flags.DEFINE_boolean("ws_skip_first_last", True, "WS: keep the first and last layers dense")
flags.DEFINE_integer("ws_min_params", 1000, "WS: layers with fewer weights stay dense")
flags.DEFINE_string("ws_m_by_n", None, "WS: structured sparsity 'm:n' (m zeros in n), e.g. 2:4")
flags.DEFINE_enum(
    "ws_ratio_search",
    "tpe",
    ["tpe", "gp", "random"],
    "WS optimal: the optimiser of the per-layer ratios (scored without training on held-out "
    "training images)",
)
flags.DEFINE_integer("ws_search_trials", 40, "WS optimal: per-layer ratio plans proposed")


def weight_sparse_options(selected: str | None) -> dict:
    """The weight-sparse learner's constructor options from the ``ws_*`` flags.

    Empty for any other learner; giving a ``ws_*`` flag to another learner is an error
    rather than silently ignored.

    Example:
        >>> weight_sparse_options("x")  # doctest: +SKIP
        {'ws_prune_ratio': 0.9, 'ws_prune_ratio_prtl': 'heurist', ...}
    """
    if selected != "weight-sparse":
        _refuse_flags("weight-sparse", _WS_FLAGS)
        return {}
    m_by_n = None
    if FLAGS.ws_m_by_n:
        parts = FLAGS.ws_m_by_n.replace(",", ":").split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise errors.InvalidArgumentError("ws_m_by_n", FLAGS.ws_m_by_n, "'m:n', e.g. '2:4'")
        m_by_n = (int(parts[0]), int(parts[1]))
    return {
        "ws_prune_ratio": FLAGS.ws_prune_ratio,
        "ws_prune_ratio_prtl": FLAGS.ws_prune_ratio_prtl,
        "ws_prune_ratio_exp": FLAGS.ws_prune_ratio_exp,
        "ws_iter_ratio_beg": FLAGS.ws_iter_ratio_beg,
        "ws_iter_ratio_end": FLAGS.ws_iter_ratio_end,
        "ws_mask_update_step": FLAGS.ws_mask_update_step,
        "ws_skip_first_last": FLAGS.ws_skip_first_last,
        "ws_min_params": FLAGS.ws_min_params,
        "ws_m_by_n": m_by_n,
        "ws_ratio_search": FLAGS.ws_ratio_search,
        "ws_search_trials": FLAGS.ws_search_trials,
    }


# ---- end of weight-sparse learner block ----------------------------------------------------
# ---- uniform quantization (issue 5) ---------------------------------------------------------
flags.DEFINE_integer("uql_weight_bits", 8, "uniform: weight bits of every quantized layer (2..8)")
flags.DEFINE_integer(
    "uql_activation_bits", 8, "uniform: activation bits (8: LiteRT computes in int8)"
)
flags.DEFINE_float(
    "uql_equivalent_bits",
    None,
    "uniform: mixed precision, per-layer weight bits averaging at most this (weighted by "
    "weights), allocated by measured sensitivity",
)
flags.DEFINE_integer("uql_w_bit_min", 2, "uniform: mixed precision, fewest bits of one layer")
flags.DEFINE_integer("uql_w_bit_max", 8, "uniform: mixed precision, most bits of one layer")
flags.DEFINE_integer(
    "uql_calib_samples", 1024, "uniform: mixed precision, training images for the sensitivities"
)
flags.DEFINE_enum(
    "uql_bits_search",
    "sensitivity",
    ["sensitivity", "tpe", "gp", "random"],
    "uniform: mixed precision, the summed per-layer sensitivities (solved exactly) or an "
    "optimiser scoring whole allocations from there",
)
flags.DEFINE_integer("uql_search_trials", 40, "uniform: mixed precision, allocations searched")
_UQL_FLAGS = (
    "uql_weight_bits",
    "uql_activation_bits",
    "uql_equivalent_bits",
    "uql_w_bit_min",
    "uql_w_bit_max",
    "uql_calib_samples",
    "uql_bits_search",
    "uql_search_trials",
)


def uniform_quant_options(selected: str | None) -> dict:
    """The uniform-quantization learner's options from the ``uql_*`` flags.

    Example:
        >>> uniform_quant_options("x")  # doctest: +SKIP
        {'uql_weight_bits': 8, 'uql_activation_bits': 8, 'uql_equivalent_bits': None, ...}
    """
    if selected != "uniform":
        _refuse_flags("uniform", _UQL_FLAGS)
        return {}
    return {name: FLAGS[name].value for name in _UQL_FLAGS}


# ---- end of uniform quantization block -----------------------------------------------------


# ---- non-uniform quantization: weight clustering (issue 5) ----------------------------------
flags.DEFINE_integer("nuql_weight_bits", 4, "non-uniform: 2**bits clusters per layer (1..8)")
flags.DEFINE_enum(
    "nuql_init_style",
    "kmeans_plus_plus",
    ["kmeans_plus_plus", "linear", "density", "random", "quantile", "uniform"],
    "non-uniform: centroid initialisation (quantile = density, uniform = linear)",
)
flags.DEFINE_boolean(
    "nuql_quantize_all_layers", False, "non-uniform: cluster the first and last layers too"
)
flags.DEFINE_boolean(
    "nuql_int8", False, "non-uniform: cluster-preserving int8 QAT after clustering (int8 export)"
)
flags.DEFINE_integer("nuql_int8_epochs", 1, "non-uniform: epochs of the int8 phase")
_NUQL_FLAGS = (
    "nuql_weight_bits",
    "nuql_init_style",
    "nuql_quantize_all_layers",
    "nuql_int8",
    "nuql_int8_epochs",
)


def non_uniform_options(selected: str | None) -> dict:
    """The non-uniform learner's options from the ``nuql_*`` flags.

    Example:
        >>> non_uniform_options("x")  # doctest: +SKIP
        {'nuql_weight_bits': 4, 'nuql_init_style': 'kmeans_plus_plus', ...}
    """
    if selected != "non-uniform":
        _refuse_flags("non-uniform", _NUQL_FLAGS)
        return {}
    return {name: FLAGS[name].value for name in _NUQL_FLAGS}


# ---- product quantization (issue 5) ---------------------------------------------------------
flags.DEFINE_integer("pq_codebook_size", 256, "product-quant: codewords per layer (power of 2)")
flags.DEFINE_integer(
    "pq_block_size_conv", None, "product-quant: sub-vector size of k x k convs (default k*k)"
)
flags.DEFINE_integer("pq_block_size_1x1", 4, "product-quant: sub-vector size of 1x1 convs/dense")
flags.DEFINE_float(
    "pq_target_ratio", None, "product-quant: pick the codebook size for this compression ratio"
)
flags.DEFINE_list("pq_exclude", [], "product-quant: layers kept in float32")
flags.DEFINE_integer("pq_nb_iters_em", 30, "product-quant: EM iterations per layer")
flags.DEFINE_integer("pq_nb_iters_layer", 50, "product-quant: codeword fine-tune steps per layer")
_PQ_FLAGS = (
    "pq_codebook_size",
    "pq_block_size_conv",
    "pq_block_size_1x1",
    "pq_target_ratio",
    "pq_exclude",
    "pq_nb_iters_em",
    "pq_nb_iters_layer",
)


def product_quant_options(selected: str | None) -> dict:
    """The product-quantization learner's options from the ``pq_*`` flags.

    Example:
        >>> product_quant_options("x")  # doctest: +SKIP
        {'pq_codebook_size': 256, 'pq_block_size_conv': None, ...}
    """
    if selected != "product-quant":
        _refuse_flags("product-quant", _PQ_FLAGS)
        return {}
    return {name: FLAGS[name].value for name in _PQ_FLAGS}


# ---- end of product quantization block ------------------------------------------------------


#: The learners whose flags this module defines, and their option readers.
OWNERS = {
    "weight-sparse": weight_sparse_options,
    "uniform": uniform_quant_options,
    "non-uniform": non_uniform_options,
    "product-quant": product_quant_options,
}


def learner_options(selected: str | None) -> dict:
    """The options of ``selected`` from these flags (empty for the other learners, whose
    use of one of these flags is refused).

    Example:
        >>> learner_options("channel")  # doctest: +SKIP
        {}
    """
    values: dict = {}
    for read in OWNERS.values():
        values.update(read(selected))
    return values
