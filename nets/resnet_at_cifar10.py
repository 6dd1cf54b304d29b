"""ResNet-20/32/44/56 on CIFAR-10 (32x32x3) from a user-given folder.

Full recipe (He et al. 2016, cosine instead of steps): 160 epochs of Nesterov SGD, batch 128,
peak LR 0.1, weight decay 5e-4, 4-pixel-shift crops and horizontal flips.

Example:
    >>> from pocketflow_tf.nets import resnet_at_cifar10
    >>> resnet_at_cifar10.RECIPE.dataset
    'cifar10'
"""

import functools

from pocketflow_tf import training
from pocketflow_tf.nets import recipe, resnet

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

RECIPE = recipe.Recipe(
    name="resnet_at_cifar10",
    dataset="cifar10",
    build=functools.partial(resnet.build_resnet, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    train=training.TrainConfig(
        epochs=160,
        batch_size=128,
        learning_rate=0.1,
        weight_decay=5e-4,
        lr_schedule="cosine",
        warmup_epochs=1.0,
        augmentation=training.Augmentation(pad=4, flip=True),
    ),
)
