"""Runs the mobilenet_at_fmnist recipe: `./run_local.sh nets/mobilenet_at_fmnist_run.py --help` lists the flags."""

from pocketflow_tf.nets import cli

if __name__ == "__main__":
    cli.main("mobilenet_at_fmnist")
