"""LeNet-5 on CIFAR-10 (32x32x3) from a user-given folder.

Full recipe: 60 epochs of Nesterov SGD, batch 128, peak LR 0.05, cosine decay, weight decay
5e-4, horizontal flips.

Example:
    >>> from pocketflow_tf.nets import lenet_at_cifar10
    >>> lenet_at_cifar10.RECIPE.train.epochs
    60
"""

import functools

from pocketflow_tf import training
from pocketflow_tf.nets import recipe, simple
from pocketflow_tf.nets.resnet_at_cifar10 import CIFAR10_MEAN, CIFAR10_STD

RECIPE = recipe.Recipe(
    name="lenet_at_cifar10",
    dataset="cifar10",
    build=functools.partial(simple.build_lenet, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    train=training.TrainConfig(
        epochs=60,
        batch_size=128,
        learning_rate=0.05,
        weight_decay=5e-4,
        lr_schedule="cosine",
        augmentation=training.Augmentation(flip=True),
    ),
)
