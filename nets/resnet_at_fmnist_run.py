"""Runs the resnet_at_fmnist recipe: `./run_local.sh nets/resnet_at_fmnist_run.py --help` lists the flags."""

from pocketflow_tf.nets import cli

if __name__ == "__main__":
    cli.main("resnet_at_fmnist")
