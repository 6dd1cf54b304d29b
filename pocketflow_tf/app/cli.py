"""absl flags of the ``nets/*_run.py`` scripts, turned into :class:`runner.RunOptions`.

This is the only module that reads flags; it is imported by the run scripts alone, so the
library stays flag-free. Flag names follow PocketFlow's (``--learner``, ``--exec_mode``,
``--nb_epochs_rat``, ``--enbl_dst``, ``--loss_w_dst``, ``--tempr_dst``, ``--resnet_size``...).

Example:
    A run script is two lines::

        from pocketflow_tf.app import cli
        cli.main("resnet_at_fmnist")

    and is started as ``./run_local.sh nets/resnet_at_fmnist_run.py --nb_epochs_rat 1``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

from absl import app, flags, logging

import pocketflow_tf.learners  # noqa: F401  (registers every learner: their flags)
from pocketflow_tf import cli_errors, distributed, errors, options
from pocketflow_tf import learner as learner_lib
from pocketflow_tf.app import runner

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
    "export_modes",
    ["float", "int8"],
    "verified .tflite exports: float,dynamic,float16,int8 (each optionally -sparse), int4 "
    "(int4 kernels where a layer has <= 4 bits, int8 elsewhere); product-quant also "
    "pq-compact, non-uniform cluster-compact",
)
flags.DEFINE_integer("num_verify", 1000, "test samples each export is verified on (>= 200)")
flags.DEFINE_boolean(
    "strict_export",
    False,
    "abort when a quantized export fails verification (default: refuse it, write nothing, "
    "report it and go on)",
)
flags.DEFINE_boolean(
    "verify_arm64",
    False,
    "also run each export with the aarch64 LiteRT under qemu and record its agreement with "
    "x86 (needs the ARM64 lane: tools/arm64_lane.sh)",
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
    try:
        return learner_lib.get_learner_class(FLAGS.learner).name
    except errors.InvalidArgumentError:
        return None


# ---- learner options: one flag per Options field of the registered learners ----------------


def _option_fields() -> dict[str, list[tuple[str, type[options.Options], Any]]]:
    """``{option name: [(learner, its Options class, the field)]}`` over every registered
    learner; a name several learners declare (``cp_channel_round``...) is one flag."""
    owners: dict[str, list[tuple[str, type[options.Options], Any]]] = {}
    for name in learner_lib.available():
        opts_cls = learner_lib.get_learner_class(name).Options
        for field in dataclasses.fields(opts_cls):
            if field.metadata.get("cli", True):
                owners.setdefault(field.name, []).append((name, opts_cls, field))
    return owners


def _define_option_flags() -> None:
    """Defines an absl flag for every learner option, typed from its field.

    The flag's default is the option's default (for a name several learners share with
    different defaults, ``None``: each learner then applies its own). Only flags given on
    the command line reach the learner, so the ``Options`` defaults stay the one source.
    """
    for flag, owned in _option_fields().items():
        _, opts_cls, field = owned[0]
        defaults = [options.default_of(f) for _, _, f in owned]
        default = defaults[0] if all(d == defaults[0] for d in defaults) else None
        if default is options.REQUIRED:
            default = None
        field_type = options.field_type(opts_cls, field.name)
        help_text = (
            f"{', '.join(n for n, _, _ in owned)}: {field.metadata['help']} "
            f"({options.accepted(field, field_type)})"
        )
        tp, _ = options.unwrap_optional(field_type)
        md = field.metadata
        if md.get("parse") is not None:
            flags.DEFINE_string(flag, None, help_text)
        elif md.get("choices") is not None:
            choices = [c for c in md["choices"] if c is not None]
            flags.DEFINE_enum(flag, default, choices, help_text)
        elif tp is bool:
            flags.DEFINE_boolean(flag, default, help_text)
        elif tp is int:
            flags.DEFINE_integer(flag, default, help_text)
        elif tp is float:
            flags.DEFINE_float(flag, default, help_text)
        elif options.type_name(tp) == "list":
            flags.DEFINE_list(flag, list(default or ()), help_text)
        else:
            flags.DEFINE_string(flag, default, help_text)


def learner_options(
    learner_name: str | None = None, *, filled: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The selected learner's options from the flags given on the command line.

    Only given flags are passed (the learner's ``Options`` defaults apply to the rest); a
    learner option given to a learner that does not have it is an error, not silently
    ignored; a string the option cannot read names the flag. ``filled`` holds options the
    application took from flags of its own (``compress --target``): a given flag of the
    same name wins; they are validated with the rest.

    Example:
        >>> learner_options("full-prec")  # doctest: +SKIP
        {}
    """
    selected = learner_name or _selected_learner()
    if selected is None:
        return {}  # RunOptions reports the unknown learner
    mine = learner_lib.get_learner_class(selected).Options
    own = {f.name: f for f in dataclasses.fields(mine)}
    values: dict[str, Any] = dict(filled or {})
    for flag, owned in _option_fields().items():
        if not FLAGS[flag].present:
            continue
        if flag not in own:
            raise errors.InvalidArgumentError(
                "learner",
                FLAGS.learner,
                f"{' or '.join(n for n, _, _ in owned)} when --{flag} is given",
            )
        value = FLAGS[flag].value
        parse = own[flag].metadata.get("parse")
        if parse is not None and value is not None:
            try:
                value = parse(value)
            except ValueError as e:
                raise errors.InvalidArgumentError(
                    flag, value, own[flag].metadata.get("metavar") or str(e)
                ) from None
        values[flag] = value
    _check_early(mine, values)
    return values


def _check_early(options_cls: type[options.Options], values: dict[str, Any]) -> None:
    """Validates the options now, before any data is read; the flags given are named as
    flags (``--cp_amc_episodes``) in the error."""
    for field in dataclasses.fields(options_cls):
        if options.default_of(field) is options.REQUIRED and field.name not in values:
            accepted = options.accepted(field, options.field_type(options_cls, field.name))
            raise errors.InvalidArgumentError(field.name, None, f"--{field.name}: {accepted}")
    try:
        options_cls(**values)
    except errors.InvalidArgumentError as e:
        accepted = e.accepted
        for flag in values:
            accepted = re.sub(rf"(?<![-\w]){re.escape(flag)}\b", f"--{flag}", accepted)
        raise errors.InvalidArgumentError(e.name, e.value, accepted) from None


_define_option_flags()


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
        verify_arm64=FLAGS.verify_arm64,
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
        learner_options=learner_options(),
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

    if FLAGS.is_parsed():  # a second call in one process (tests) starts from the defaults
        FLAGS.unparse_flags()
    # User errors (the message names the flag and value) become one line and exit status 2.
    cli_errors.run(_main)
