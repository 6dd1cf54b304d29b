"""ResNet-20/32/44/56 on Fashion-MNIST (28x28x1).

Full recipe: 30 epochs of Nesterov SGD, batch 128, peak LR 0.1 with one warm-up epoch and
cosine decay, weight decay 5e-4, random 2-pixel-shift crops and horizontal flips.

Example:
    >>> from pocketflow_tf.nets import resnet_at_fmnist
    >>> resnet_at_fmnist.RECIPE.build((28, 28, 1), 10, depth=20).name
    'resnet20'
"""

import functools

from pocketflow_tf import training
from pocketflow_tf.nets import recipe, resnet

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530

RECIPE = recipe.Recipe(
    name="resnet_at_fmnist",
    dataset="fmnist",
    build=functools.partial(resnet.build_resnet, mean=FMNIST_MEAN, std=FMNIST_STD),
    train=training.TrainConfig(
        epochs=30,
        batch_size=128,
        learning_rate=0.1,
        weight_decay=5e-4,
        lr_schedule="cosine",
        warmup_epochs=1.0,
        augmentation=training.Augmentation(pad=2, flip=True),
    ),
)
