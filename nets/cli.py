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

import sys

from absl import app, flags

from pocketflow_tf import errors
from pocketflow_tf.nets import runner

FLAGS = flags.FLAGS

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
flags.DEFINE_integer("resnet_size", 20, "ResNet depth for resnet_* recipes: 20, 32, 44 or 56")
flags.DEFINE_integer("mobilenet_version", 1, "MobileNet style for mobilenet_*: 1 or 2")
flags.DEFINE_float("mobilenet_width", 0.5, "MobileNet width multiplier")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_integer("batch_size", None, "override the recipe's batch size")
flags.DEFINE_float("lrn_rate_init", None, "override the recipe's peak learning rate")
flags.DEFINE_integer("nb_train_samples", None, "train on the first N samples (smoke runs)")
flags.DEFINE_integer("latency_runs", 200, "timed LiteRT invocations per latency figure")
flags.DEFINE_integer("verbose", 2, "0 silent, 1 progress bar, 2 one line per epoch")


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
        build_options=build_options(recipe_name),
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.lrn_rate_init,
        nb_train_samples=FLAGS.nb_train_samples,
        latency_runs=FLAGS.latency_runs,
        verbose=FLAGS.verbose,
    )


def main(recipe_name: str) -> None:
    """Parses the command line and runs the recipe; user errors exit with status 2.

    Example:
        >>> main("resnet_at_fmnist")  # doctest: +SKIP
    """

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        import pocketflow_tf.learners  # noqa: F401  (registers every learner)

        try:
            runner.run(options_from_flags(recipe_name), command=list(sys.argv))
        except errors.PocketFlowError as e:
            # A user error: the message names the flag and value; a traceback adds nothing.
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(_main)
