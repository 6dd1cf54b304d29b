"""absl flags of the ``nets/*_run.py`` scripts, turned into :class:`runner.RunOptions`.

This is the only module that reads flags; it is imported by the run scripts alone, so the
library stays flag-free. Flag names follow PocketFlow's (``--learner``, ``--exec_mode``,
``--nb_epochs_rat``, ``--enbl_dst``, ``--loss_w_dst``, ``--tempr_dst``, ``--resnet_size``...).

Example:
    A run script is two lines::

        from pocketflow_tf.nets import cli
        cli.main("resnet_at_fmnist")

    and is started as ``./run_local.sh nets/resnet_at_fmnist_run.py --nb_epochs_rat 1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from pocketflow_tf import cli_errors, distributed, errors
from pocketflow_tf.nets import runner

FLAGS = flags.FLAGS

cli_errors.define_debug_flag()  # --debug: full tracebacks instead of one error line

flags.DEFINE_string("learner", "full-prec", "learner name or PocketFlow alias (e.g. full-prec)")
flags.DEFINE_enum("exec_mode", "train", list(runner.EXEC_MODES), "train (and export) or eval")
flags.DEFINE_float(
    "nb_epochs_rat",
    0.05,
    "share of the recipe's full epoch count to train; 1.0 is the full recipe (the default "
    "finishes in minutes on 2 cores)",
)
flags.DEFINE_string("data_dir", None, "data folder (default: Debian's Fashion-MNIST path)")
flags.DEFINE_string("save_path", None, "output .keras path (default models/<recipe>/<learner>/)")
# --log_dir (TensorBoard folder; default logs/<recipe>/<learner>) is absl.logging's own flag,
# reused rather than redefined: absl writes no log files unless asked to.
flags.DEFINE_string("model_path", None, "start from (train) or evaluate (eval) this model")
flags.DEFINE_boolean(
    "trust_model", False, "allow loading model files that contain Python code (Lambda layers)"
)
flags.DEFINE_string("teacher_path", None, "distillation teacher (default: --model_path)")
flags.DEFINE_boolean("enbl_dst", False, "enable knowledge distillation")
flags.DEFINE_float("loss_w_dst", 4.0, "distillation loss weight")
flags.DEFINE_float("tempr_dst", 2.0, "distillation temperature")
flags.DEFINE_list(
    "export_modes", ["float", "int8"], "verified .tflite exports: float,dynamic,float16,int8"
)
flags.DEFINE_integer("num_verify", 1000, "test samples each export is verified on (>= 200)")
flags.DEFINE_boolean(
    "strict_export",
    False,
    "abort when a quantized export fails verification (default: refuse it, write nothing, "
    "report it and go on)",
)
flags.DEFINE_integer("resnet_size", 20, "ResNet depth for resnet_* recipes: 20, 32, 44 or 56")
flags.DEFINE_integer("mobilenet_version", 1, "MobileNet style for mobilenet_*: 1 or 2")
flags.DEFINE_float("mobilenet_width", 0.5, "MobileNet width multiplier")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_integer("batch_size", None, "override the recipe's batch size")
flags.DEFINE_float("lrn_rate_init", None, "override the recipe's peak learning rate")
flags.DEFINE_integer("nb_train_samples", None, "train on the first N samples (smoke runs)")
flags.DEFINE_integer("latency_runs", 200, "timed LiteRT invocations per latency figure")
flags.DEFINE_integer("verbose", 2, "0 silent, 1 progress bar, 2 one line per epoch")
flags.DEFINE_integer(
    "ecq_bits",
    0,
    "with run_local.sh -n 2 or more: exchange gradients quantized to 2, 4 or 8 bits with "
    "error feedback (ECQ-SGD); 0 exchanges float32",
)
flags.DEFINE_integer("ecq_bucket_size", 512, "ECQ-SGD: gradient values sharing one scale")
flags.DEFINE_string(
    "baseline_path",
    None,
    "--learner auto without --model_path: the trained baseline to compress, reused when a "
    "finished run left it there, else trained first (default "
    "models/<recipe>/full-prec/model.keras)",
)


def _selected_learner() -> str | None:
    """The registered name of ``--learner`` (``None`` when unknown: RunOptions reports it)."""
    import pocketflow_tf.learners  # noqa: F401  (registers every learner)
    from pocketflow_tf import learner as learner_lib

    try:
        return learner_lib.get_learner_class(FLAGS.learner).name
    except errors.InvalidArgumentError:
        return None


def _refuse_flags(owner: str, names: Sequence[str]) -> None:
    """Raises when any flag of ``names`` (which only ``owner`` reads) was given."""
    given = [f"--{name}" for name in names if FLAGS[name].present]
    if given:
        raise errors.InvalidArgumentError(
            "learner", FLAGS.learner, f"{owner} when {', '.join(given)} is given"
        )


def _selected_owns(owner: str, names: Sequence[str]) -> bool:
    """True when ``owner`` is the selected learner; otherwise its flags must be absent:
    a learner-specific flag given to another learner is an error, not silently ignored."""
    selected = _selected_learner()
    if selected == owner:
        return True
    if selected is not None:
        _refuse_flags(owner, names)
    return False


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


def weight_sparse_options() -> dict:
    """The weight-sparse learner's constructor options from the ``ws_*`` flags.

    Empty for any other learner; giving a ``ws_*`` flag to another learner is an error
    rather than silently ignored.

    Example:
        >>> weight_sparse_options()  # doctest: +SKIP
        {'ws_prune_ratio': 0.9, 'ws_prune_ratio_prtl': 'heurist', ...}
    """
    if not _selected_owns("weight-sparse", _WS_FLAGS):
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


# ---- channel-pruning learners (issue 3) ----------------------------------------------------
flags.DEFINE_enum(
    "cp_prune_option",
    "uniform",
    ["uniform", "list", "auto"],
    "channel: one ratio everywhere, a per-layer list, or per-layer counts searched "
    "for --cp_preserve_ratio",
)
flags.DEFINE_float("cp_preserve_ratio", 0.5, "channel: FLOPs keep ratio in (0, 1]")
flags.DEFINE_float(
    "cp_uniform_preserve_ratio",
    None,
    "channel: channel keep ratio for 'uniform' (overrides --cp_preserve_ratio)",
)
flags.DEFINE_list("cp_prune_list", None, "channel: 'layer=ratio' pairs for --cp_prune_option list")
flags.DEFINE_enum(
    "cp_criterion",
    "lasso",
    ["lasso", "l1", "bn_gamma"],
    "channel: LASSO + least squares (He et al.), or L1-norm / BN-gamma baselines",
)
flags.DEFINE_integer("cp_channel_round", 8, "channel: round kept counts to this multiple")
flags.DEFINE_integer("cp_nb_samples", 1000, "channel: training images sampled for selection")
flags.DEFINE_list("cp_exclude", [], "channel: layers whose channels must all stay")
flags.DEFINE_enum(
    "cp_cost",
    "flops",
    ["flops", "latency"],
    "channel auto: spend the FLOPs budget where it saves the most FLOPs, or the most LiteRT "
    "time (per-layer latencies measured on this machine)",
)
flags.DEFINE_float(
    "cp_latency_keep",
    None,
    "channel auto with --cp_cost latency: also prune until the predicted LiteRT latency is "
    "at most this fraction of the dense model's (0.5: 2x faster)",
)
flags.DEFINE_integer(
    "cp_list_group",
    0,
    "channel: groups pruned per round, with --cp_nb_iters_ft fine-tuning steps between "
    "rounds (0: all groups in one round)",
)
flags.DEFINE_integer("cp_nb_iters_ft", 200, "channel: fine-tuning steps between rounds")
flags.DEFINE_enum(
    "cp_ratio_search",
    "greedy",
    ["greedy", "amc", "tpe", "gp", "random"],
    "channel auto: per-group allocation by greedy sensitivity, by the AMC DDPG agent "
    "(He et al. 2018) over --cp_amc_episodes proxy evaluations, or by TPE / GP / random "
    "search over --cp_search_trials",
)
flags.DEFINE_integer(
    "cp_search_trials", 100, "channel auto with tpe/gp/random: plans proposed (proxy scores)"
)
flags.DEFINE_integer("cp_amc_episodes", 300, "channel auto with amc: search episodes")
flags.DEFINE_enum(
    "cp_amc_reward",
    "error",
    ["error", "error_log_flops", "error_log_params"],
    "channel auto with amc: AMC's reward (-error, -error*log(FLOPs), -error*log(params))",
)
flags.DEFINE_integer(
    "cp_proxy_bn_batches",
    0,
    "channel auto: batches on which each scored plan's BatchNorm statistics are re-estimated "
    "(0: off)",
)
flags.DEFINE_enum(
    "cp_proxy",
    "refit",
    ["mask", "refit"],
    "channel auto: how a scored plan is built -- every reader of a pruned group refitted by "
    "least squares to the dense output (refit, AMC's proxy), or dropped channels only zeroed "
    "(mask)",
)
_CP_FLAGS = (
    "cp_prune_option",
    "cp_preserve_ratio",
    "cp_uniform_preserve_ratio",
    "cp_prune_list",
    "cp_criterion",
    "cp_channel_round",
    "cp_nb_samples",
    "cp_exclude",
    "cp_cost",
    "cp_latency_keep",
    "cp_list_group",
    "cp_nb_iters_ft",
    "cp_ratio_search",
    "cp_amc_episodes",
    "cp_amc_reward",
    "cp_search_trials",
    "cp_proxy_bn_batches",
    "cp_proxy",
)
#: The cp_* flags that dis-chn-pruned uses too; the others belong to channel only.
_CP_SHARED_WITH_DCP = ("cp_preserve_ratio", "cp_prune_list", "cp_channel_round", "cp_exclude")


def _prune_list() -> dict[str, float]:
    prune_list = {}
    for item in FLAGS.cp_prune_list or []:
        name, _, ratio = item.partition("=")
        try:
            prune_list[name.strip()] = float(ratio)
        except ValueError:
            raise errors.InvalidArgumentError(
                "cp_prune_list", item, "'layer=ratio' pairs, e.g. s1b1_a_conv=0.5"
            ) from None
    return prune_list


def channel_options() -> dict:
    """The channel learner's constructor options from the ``cp_*`` flags.

    ``cp_*`` flags given with another learner are an error, not silently ignored.

    Example:
        >>> channel_options()  # doctest: +SKIP
        {'cp_prune_option': 'uniform', 'cp_preserve_ratio': 0.5, ...}
    """
    if _selected_learner() == "dis-chn-pruned":
        return {}  # dcp_options() passes the shared cp_* flags
    if not _selected_owns("channel", _CP_FLAGS):
        return {}
    prune_list = _prune_list()
    return {
        "cp_prune_option": FLAGS.cp_prune_option,
        "cp_preserve_ratio": FLAGS.cp_preserve_ratio,
        "cp_uniform_preserve_ratio": FLAGS.cp_uniform_preserve_ratio,
        "cp_prune_list": prune_list or None,
        "cp_criterion": FLAGS.cp_criterion,
        "cp_channel_round": FLAGS.cp_channel_round,
        "cp_nb_samples": FLAGS.cp_nb_samples,
        "cp_exclude": FLAGS.cp_exclude,
        "cp_cost": FLAGS.cp_cost,
        "cp_latency_keep": FLAGS.cp_latency_keep,
        "cp_list_group": FLAGS.cp_list_group,
        "cp_nb_iters_ft": FLAGS.cp_nb_iters_ft,
        "cp_proxy_bn_batches": FLAGS.cp_proxy_bn_batches,
        "cp_proxy": FLAGS.cp_proxy,
        "ratio_search": _ratio_search(),
    }


def _ratio_search():
    """The ``ratio_search`` of ``--cp_ratio_search`` (None: the learner's greedy default)."""
    how = FLAGS.cp_ratio_search
    owners = {"cp_amc_episodes": "amc", "cp_amc_reward": "amc", "cp_search_trials": "tpe|gp|random"}
    for name, owner in owners.items():
        if FLAGS[name].present and how not in owner.split("|"):
            raise errors.InvalidArgumentError(
                "cp_ratio_search", how, f"{owner} when --{name} is given"
            )
    if how == "greedy":
        return None
    if FLAGS.cp_cost != "flops":
        # A search's bounding enforces the FLOPs budget and its score ranks accuracy; the
        # latency table is used by the greedy allocation only.
        raise errors.InvalidArgumentError(
            "cp_cost", FLAGS.cp_cost, f"flops with --cp_ratio_search {how}"
        )
    if how == "amc":
        from pocketflow_tf.learners.channel import amc_search

        return amc_search.amc_ratio_search(
            episodes=FLAGS.cp_amc_episodes,
            seed=FLAGS.seed,
            reward=FLAGS.cp_amc_reward,
            verbose=True,
        )
    from pocketflow_tf.learners.channel import optimizer_search

    return optimizer_search.optimizer_ratio_search(
        how, trials=FLAGS.cp_search_trials, seed=FLAGS.seed, verbose=True
    )


# ---- end of channel-pruning block ----------------------------------------------------------


# ---- discrimination-aware channel pruning (issue 3) ----------------------------------------
flags.DEFINE_float("dcp_prune_ratio", None, "dis-chn-pruned: share of channels removed per group")
flags.DEFINE_integer("dcp_nb_stages", 3, "dis-chn-pruned: stages with an auxiliary classifier")
flags.DEFINE_float("dcp_loss_w_aux", 1.0, "dis-chn-pruned: weight of the auxiliary loss")
_DCP_FLAGS = ("dcp_prune_ratio", "dcp_nb_stages", "dcp_loss_w_aux")


def dcp_options() -> dict:
    """The DCP learner's options; it shares ``--cp_preserve_ratio``, ``--cp_prune_list``,
    ``--cp_channel_round`` and ``--cp_exclude`` with ``channel``.

    Only the count target the user actually gave is passed (the learner accepts one).

    Example:
        >>> dcp_options()  # doctest: +SKIP
        {'dcp_nb_stages': 3, 'dcp_loss_w_aux': 1.0, 'cp_channel_round': 8, 'cp_exclude': []}
    """
    if not _selected_owns("dis-chn-pruned", _DCP_FLAGS):
        return {}
    _refuse_flags("channel", [n for n in _CP_FLAGS if n not in _CP_SHARED_WITH_DCP])
    opts = {
        "dcp_nb_stages": FLAGS.dcp_nb_stages,
        "dcp_loss_w_aux": FLAGS.dcp_loss_w_aux,
        "cp_channel_round": FLAGS.cp_channel_round,
        "cp_exclude": FLAGS.cp_exclude,
    }
    if FLAGS.dcp_prune_ratio is not None:
        opts["dcp_prune_ratio"] = FLAGS.dcp_prune_ratio
    elif FLAGS.cp_prune_list:
        opts["cp_prune_list"] = _prune_list()
    else:
        opts["cp_preserve_ratio"] = FLAGS.cp_preserve_ratio
    return opts


# ---- end of DCP block -----------------------------------------------------------------------


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


def uniform_quant_options() -> dict:
    """The uniform-quantization learner's options from the ``uql_*`` flags.

    Example:
        >>> uniform_quant_options()  # doctest: +SKIP
        {'uql_weight_bits': 8, 'uql_activation_bits': 8, 'uql_equivalent_bits': None, ...}
    """
    if not _selected_owns("uniform", _UQL_FLAGS):
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


def non_uniform_options() -> dict:
    """The non-uniform learner's options from the ``nuql_*`` flags.

    Example:
        >>> non_uniform_options()  # doctest: +SKIP
        {'nuql_weight_bits': 4, 'nuql_init_style': 'kmeans_plus_plus', ...}
    """
    if not _selected_owns("non-uniform", _NUQL_FLAGS):
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


def product_quant_options() -> dict:
    """The product-quantization learner's options from the ``pq_*`` flags.

    Example:
        >>> product_quant_options()  # doctest: +SKIP
        {'pq_codebook_size': 256, 'pq_block_size_conv': None, ...}
    """
    if not _selected_owns("product-quant", _PQ_FLAGS):
        return {}
    return {name: FLAGS[name].value for name in _PQ_FLAGS}


# ---- end of product quantization block ------------------------------------------------------


# ---- automated compression (issue 6) --------------------------------------------------------
flags.DEFINE_string(
    "auto_target", None, "auto: what to reach, e.g. '2x faster', 'int8,<=0.3x bytes', 'flops<=0.5'"
)
flags.DEFINE_string("auto_dir", None, "auto: study + report folder (default: <save dir>/auto)")
flags.DEFINE_enum("auto_optimizer", "tpe", ["tpe", "gp", "random"], "auto: search optimiser")
flags.DEFINE_integer("auto_max_trials", 20, "auto: trials of the search")
flags.DEFINE_float("auto_max_wall_s", None, "auto: wall-time budget of the search (seconds)")
flags.DEFINE_float("auto_holdout", 0.1, "auto: share of the training data held out for scoring")
flags.DEFINE_integer("auto_proxy_steps", 200, "auto: fine-tuning steps of each trial")
flags.DEFINE_enum(
    "auto_int8_final", "auto", ["auto", "ptq", "qat"], "auto: how the final int8 model is made"
)
_AUTO_FLAGS = (
    "auto_target",
    "auto_dir",
    "auto_optimizer",
    "auto_max_trials",
    "auto_max_wall_s",
    "auto_holdout",
    "auto_proxy_steps",
    "auto_int8_final",
)


def auto_options(recipe_name: str) -> dict:
    """The auto learner's options from the ``auto_*`` flags.

    Example:
        >>> auto_options("resnet_at_fmnist")  # doctest: +SKIP
        {'auto_target': '2x faster', 'auto_dir': 'models/resnet_at_fmnist/auto/auto', ...}
    """
    if not _selected_owns("auto", _AUTO_FLAGS):
        return {}
    if not FLAGS.auto_target:
        raise errors.InvalidArgumentError(
            "auto_target", FLAGS.auto_target, "a target, e.g. '2x faster' or 'int8,<=0.3x bytes'"
        )
    opts = {name: FLAGS[name].value for name in _AUTO_FLAGS}
    if opts["auto_dir"] is None:
        # Beside the saved model (default models/<recipe>/<learner>/): its study, report
        # and final .tflite are what the run hands back.
        out_dir = (
            os.path.dirname(os.path.abspath(FLAGS.save_path))
            if FLAGS.save_path
            else os.path.join("models", recipe_name, FLAGS.learner)
        )
        opts["auto_dir"] = os.path.join(out_dir, "auto")
    opts["auto_seed"] = FLAGS.seed
    return opts


# ---- end of automated compression block -----------------------------------------------------


def build_options(recipe_name: str) -> dict:
    """The builder keyword arguments that the architecture flags select for a recipe.

    Example:
        >>> build_options("lenet_at_cifar10")  # doctest: +SKIP
        {}
    """
    if recipe_name.startswith("resnet_"):
        return {"depth": FLAGS.resnet_size}
    if recipe_name.startswith("mobilenet_"):
        return {"version": FLAGS.mobilenet_version, "width_multiplier": FLAGS.mobilenet_width}
    return {}


def options_from_flags(recipe_name: str) -> runner.RunOptions:
    """Reads the parsed flags into validated run options.

    Example:
        >>> options_from_flags("convnet_at_fmnist")  # doctest: +SKIP
    """
    return runner.RunOptions(
        recipe=recipe_name,
        learner=FLAGS.learner,
        exec_mode=FLAGS.exec_mode,
        nb_epochs_rat=FLAGS.nb_epochs_rat,
        data_dir=FLAGS.data_dir,
        save_path=FLAGS.save_path,
        log_dir=FLAGS.log_dir or None,
        model_path=FLAGS.model_path,
        trust_model=FLAGS.trust_model,
        teacher_path=FLAGS.teacher_path,
        enbl_dst=FLAGS.enbl_dst,
        loss_w_dst=FLAGS.loss_w_dst,
        tempr_dst=FLAGS.tempr_dst,
        export_modes=tuple(FLAGS.export_modes),
        num_verify=FLAGS.num_verify,
        strict_export=FLAGS.strict_export,
        build_options=build_options(recipe_name),
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.lrn_rate_init,
        nb_train_samples=FLAGS.nb_train_samples,
        latency_runs=FLAGS.latency_runs,
        verbose=FLAGS.verbose,
        ecq_bits=FLAGS.ecq_bits,
        ecq_bucket_size=FLAGS.ecq_bucket_size,
        baseline_path=FLAGS.baseline_path,
        learner_options={
            **weight_sparse_options(),
            **channel_options(),
            **dcp_options(),
            **uniform_quant_options(),
            **non_uniform_options(),
            **product_quant_options(),
            **auto_options(recipe_name),
        },
    )


def main(recipe_name: str) -> None:
    """Parses the command line and runs the recipe.

    A user error prints one line and exits with status 2 (a traceback only with
    ``--debug``); a ``--learner auto`` run that does not meet its target exits with 3.

    Example:
        >>> main("resnet_at_fmnist")  # doctest: +SKIP
    """

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        import pocketflow_tf.learners  # noqa: F401  (registers every learner)

        # absl's default INFO level prints TensorFlow's internal chatter (collectives,
        # savers) line by line; warnings and errors still show.
        logging.set_verbosity(logging.WARNING)
        # First: tf.distribute configures its collectives before TF runs anything.
        backend = distributed.from_environment()
        result = runner.run(
            options_from_flags(recipe_name), command=list(sys.argv), backend=backend
        )
        if runner.target_missed(result):
            # The summary (printed at every verbosity) says which goal was missed; the exit
            # status lets scripts tell a finished-but-unmet search from success.
            sys.exit(cli_errors.EXIT_TARGET_NOT_MET)

    # User errors (the message names the flag and value) become one line and exit status 2.
    cli_errors.run(_main)
