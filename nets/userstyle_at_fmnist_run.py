"""Runs the userstyle_at_fmnist recipe: `./run_local.sh nets/userstyle_at_fmnist_run.py --help` lists the flags."""

from absl import flags

from pocketflow_tf.app import cli

flags.adopt_module_key_flags(cli)  # so that --help lists the run flags

if __name__ == "__main__":
    cli.main("userstyle_at_fmnist")
