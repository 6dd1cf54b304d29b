"""A 2-conv ConvNet on Fashion-MNIST: the fast model for smoke runs and multi-worker tests.

Full recipe: 15 epochs of Nesterov SGD, batch 128, peak LR 0.05, cosine decay, weight decay
5e-4, horizontal flips.

Example:
    >>> from pocketflow_tf.nets import convnet_at_fmnist
    >>> convnet_at_fmnist.RECIPE.train.epochs
    15
"""

import functools

from pocketflow_tf import training
from pocketflow_tf.nets import recipe, simple
from pocketflow_tf.nets.resnet_at_fmnist import FMNIST_MEAN, FMNIST_STD

RECIPE = recipe.Recipe(
    name="convnet_at_fmnist",
    dataset="fmnist",
    build=functools.partial(simple.build_convnet, mean=FMNIST_MEAN, std=FMNIST_STD),
    train=training.TrainConfig(
        epochs=15,
        batch_size=128,
        learning_rate=0.05,
        weight_decay=5e-4,
        lr_schedule="cosine",
        augmentation=training.Augmentation(flip=True),
    ),
)
